#!/usr/bin/env python3
"""Real Python applications at their default settings against one endpoint (keyhop or a direct
redis-server), for tests/apps.rs: redis-py's pipeline() (a MULTI/EXEC transaction by default),
transaction() with WATCH, Lock, pub/sub, and an RQ job enqueued and run by a worker.

Usage: apps.py PORT PREFIX WHAT   (WHAT: redispy | rq; host 127.0.0.1)

Keys are hash-tagged with PREFIX ({PREFIX}:...) so that every multi-key transaction stays in one
group through keyhop. Prints one JSON line per step: {"step": name, "result": value}; a step that
raises prints "error:<Class>:<message>" and the script goes on. Exit status 0 when it finished.
"""

import json
import os
import sys
import threading
import time

import redis

PORT = int(sys.argv[1])
PREFIX = sys.argv[2]
WHAT = sys.argv[3]
DEADLINE = 30.0


def emit(name, value):
    print(json.dumps({"step": name, "result": value}), flush=True)


def step(name, fn):
    try:
        emit(name, fn())
    except Exception as e:  # noqa: BLE001 - every failure is reported as a step result
        emit(name, f"error:{type(e).__name__}:{e}")


def text(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, (list, tuple)):
        return [text(x) for x in v]
    return v


def redispy():
    r = redis.Redis(host="127.0.0.1", port=PORT)
    k = lambda name: f"{{{PREFIX}}}:{name}"  # noqa: E731

    def pipeline():
        p = r.pipeline()  # transaction=True: MULTI ... EXEC
        p.set(k("a"), "1").incr(k("a")).incrby(k("b"), 5).get(k("a")).lpush(k("l"), "x", "y")
        p.lrange(k("l"), 0, -1).ping().echo("hi")
        return text(p.execute())

    step("pipeline", pipeline)

    def pipeline_error():
        # A command failing at EXEC time: redis-py raises after EXEC; the others ran.
        p = r.pipeline()
        p.set(k("s"), "str").lpush(k("s"), "x").get(k("s"))
        try:
            p.execute()
            return "no error"
        except redis.ResponseError as e:
            return ["raised", str(e).split(" ")[0], text(r.get(k("s")))]

    step("pipeline_error", pipeline_error)

    def transaction():
        r.set(k("counter"), 10)

        def incr(pipe):
            v = int(pipe.get(k("counter")))
            pipe.multi()
            pipe.set(k("counter"), v + 1)

        r.transaction(incr, k("counter"))
        return text(r.get(k("counter")))

    step("transaction_watch", transaction)

    def watch_conflict():
        r.set(k("w"), 1)
        other = redis.Redis(host="127.0.0.1", port=PORT)
        with r.pipeline() as p:
            p.watch(k("w"))
            other.set(k("w"), 2)  # another client changes the watched key
            p.multi()
            p.set(k("w"), 3)
            try:
                p.execute()
                return "executed"
            except redis.WatchError:
                return ["WatchError", text(r.get(k("w")))]

    step("watch_conflict", watch_conflict)

    def lock():
        got = []
        lk = r.lock(k("lock"), timeout=5, blocking_timeout=5)
        with lk:
            got.append(bool(r.exists(k("lock"))))
            other = r.lock(k("lock"), timeout=5, blocking_timeout=0.2)
            got.append(other.acquire())  # held: False after 0.2 s
        got.append(bool(r.exists(k("lock"))))
        return got

    step("lock", lock)

    def pubsub():
        ps = r.pubsub()
        ps.subscribe(k("news"))
        ps.psubscribe(k("ne*"))
        got = []
        # Subscribe confirmations first (counts are the client's own totals).
        end = time.time() + 5
        while len(got) < 2 and time.time() < end:
            m = ps.get_message(timeout=0.5)
            if m:
                got.append([m["type"], text(m["channel"]), m["data"]])
        n = r.publish(k("news"), "hello")
        end = time.time() + 5
        msgs = []
        while len(msgs) < 2 and time.time() < end:
            m = ps.get_message(timeout=0.5)
            if m:
                msgs.append([m["type"], text(m["channel"]), text(m["data"])])
        ps.unsubscribe()
        ps.punsubscribe()
        ps.close()
        return [got, n, sorted(msgs)]

    step("pubsub", pubsub)

    def blpop():
        def push():
            time.sleep(0.3)
            redis.Redis(host="127.0.0.1", port=PORT).rpush(k("queue"), "job1")

        t = threading.Thread(target=push)
        t.start()
        v = r.blpop([k("queue")], timeout=10)
        t.join()
        return text(list(v)) if v else None

    step("blpop", blpop)


def rq_app():
    # The job function lives in a module the worker imports (tests/clients/rq_jobs.py).
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import rq
    import rq_jobs

    r = redis.Redis(host="127.0.0.1", port=PORT)
    q = rq.Queue(f"{PREFIX}", connection=r)
    jobs = [q.enqueue(rq_jobs.add, i, 100) for i in range(3)]
    emit("enqueued", len(q))
    # A real worker (no fork), taking jobs with BLPOP until it has run three.
    w = rq.SimpleWorker([q], connection=r)
    w.work(max_jobs=3, with_scheduler=False, logging_level="WARNING")
    results = []
    end = time.time() + DEADLINE
    for j in jobs:
        while j.get_status(refresh=True) != "finished" and time.time() < end:
            time.sleep(0.05)
        results.append([j.get_status(), j.return_value()])
    emit("results", results)
    emit("queue_left", len(q))


if WHAT == "redispy":
    redispy()
elif WHAT == "rq":
    step("rq", lambda: rq_app() or "done")
else:
    sys.exit(f"unknown WHAT {WHAT!r}")
