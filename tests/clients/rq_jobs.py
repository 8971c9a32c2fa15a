"""The job an RQ worker runs in tests/clients/apps.py (a worker imports jobs by module path)."""


def add(a, b):
    return a + b
