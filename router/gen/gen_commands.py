#!/usr/bin/env python3
"""Generates router/src/command/generated.rs from a live redis-server's `COMMAND` reply.

Usage:
    python3 router/gen/gen_commands.py                 # starts its own redis-server
    python3 router/gen/gen_commands.py --port 6379     # uses a server already running
    python3 router/gen/gen_commands.py --server /usr/bin/redis-server --out PATH

The output is checked in; CI never regenerates it. mod.rs declares the module `#[rustfmt::skip]`
so `cargo fmt` leaves it as generated. After regenerating, run `cargo test -p keyhop-router`: a
command without an entry in policy.rs fails to compile, on purpose.

Only the standard library is used (no redis-py): RESP is spoken over a raw socket.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time

# Command flags keyhop models; an unknown flag stops the generator so a new server version forces a
# decision instead of being silently dropped. Names must match router/src/command/mod.rs `flags`.
COMMAND_FLAGS = {
    "write": "WRITE",
    "readonly": "READONLY",
    "admin": "ADMIN",
    "pubsub": "PUBSUB",
    "blocking": "BLOCKING",
    "movablekeys": "MOVABLEKEYS",
    "fast": "FAST",
    "denyoom": "DENYOOM",
    "noscript": "NOSCRIPT",
    "loading": "LOADING",
    "stale": "STALE",
    "no_auth": "NO_AUTH",
    "skip_monitor": "SKIP_MONITOR",
    "skip_slowlog": "SKIP_SLOWLOG",
    "asking": "ASKING",
    "no_multi": "NO_MULTI",
    "no_mandatory_keys": "NO_MANDATORY_KEYS",
    "allow_busy": "ALLOW_BUSY",
    "no_async_loading": "NO_ASYNC_LOADING",
    "may_replicate": "MAY_REPLICATE",
    "module": "MODULE",
}

# Key-spec flags; names must match router/src/command/mod.rs `key_flags`.
KEY_FLAGS = {
    "RO": "RO",
    "RW": "RW",
    "OW": "OW",
    "RM": "RM",
    "access": "ACCESS",
    "update": "UPDATE",
    "insert": "INSERT",
    "delete": "DELETE",
    "not_key": "NOT_KEY",
    "incomplete": "INCOMPLETE",
    "variable_flags": "VARIABLE_FLAGS",
}

# Perfect hash parameters; must match `hash_name` / `lookup` in router/src/command/mod.rs.
SEED0 = 0x243F6A8885A308D3
SEED1 = 0x13198A2E03707344
SEED2 = 0xA4093822299F31D0
MIX = 0x9E3779B97F4A7C15
DISP_BITS = 6
SLOT_BITS = 9
M64 = (1 << 64) - 1


def _le(b: bytes) -> int:
    return int.from_bytes(b, "little")


def _fold(a: int, b: int) -> int:
    """64x64->128 multiply, high and low halves xor-ed."""
    r = (a & M64) * (b & M64)
    return (r & M64) ^ (r >> 64)


def hash_name(name: bytes) -> int:
    # Whole-word reads, with every byte `| 0x20` (lower-cases ASCII letters; lookup compares the
    # candidate afterwards, so other bytes only need to hash consistently). Short names read
    # overlapping words, as fast string hashes do, so no byte is copied.
    n = len(name)
    w = bytes(c | 0x20 for c in name)
    if n >= 8:
        a, b = _le(w[0:8]), _le(w[n - 8:n])
    elif n >= 4:
        a, b = _le(w[0:4]), _le(w[n - 4:n])
    elif n > 0:
        a, b = w[0] | (w[n // 2] << 8) | (w[n - 1] << 16), 0
    else:
        a, b = 0, 0
    c = _le(w[8:16]) if n > 16 else 0
    return _fold(a ^ SEED0, b ^ SEED1 ^ n) ^ _fold(c ^ SEED2, MIX)


def slot_of(h: int, d: int) -> int:
    return (((h ^ d) * MIX) & M64) >> (64 - SLOT_BITS)


def perfect_hash(names):
    """Per-bucket displacements so that every name lands in its own slot."""
    buckets = [[] for _ in range(1 << DISP_BITS)]
    for i, n in enumerate(names):
        h = hash_name(n.encode())
        buckets[h >> (64 - DISP_BITS)].append((i, h))
    disp = [0] * (1 << DISP_BITS)
    slots = [None] * (1 << SLOT_BITS)
    for b in sorted(range(len(buckets)), key=lambda b: -len(buckets[b])):
        if not buckets[b]:
            continue
        for d in range(1 << 16):
            wanted = [slot_of(h, d) for _, h in buckets[b]]
            if len(set(wanted)) == len(wanted) and all(slots[s] is None for s in wanted):
                for (i, _), s in zip(buckets[b], wanted):
                    slots[s] = i
                disp[b] = d
                break
        else:
            sys.exit("perfect hash: no displacement found; raise SLOT_BITS")
    return disp, slots


class Resp:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self.read()

    def read(self):
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise IOError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            return data[:-2].decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError("unexpected RESP line %r" % line)


def pairs(flat):
    """A RESP2 flat map (k1, v1, k2, v2 ...) as a dict."""
    return dict(zip(flat[0::2], flat[1::2]))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary):
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "no", "--logfile", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if Resp(port).call("PING") == "PONG":
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start on port %d" % port)


def rust_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def flag_expr(names, table, what, cmd):
    out = []
    for n in names:
        if n not in table:
            sys.exit("%s: unknown %s flag %r: add it to the generator and mod.rs" % (cmd, what, n))
        out.append(table[n])
    return " | ".join(out) if out else "0"


def key_spec(cmd, raw):
    spec = pairs(raw)
    bs = pairs(spec["begin_search"])
    fk = pairs(spec["find_keys"])
    bss = pairs(bs["spec"]) if bs["spec"] else {}
    fks = pairs(fk["spec"]) if fk["spec"] else {}
    if bs["type"] == "index":
        begin = "BeginSearch::Index(%d)" % bss["index"]
    elif bs["type"] == "keyword":
        begin = "BeginSearch::Keyword { keyword: %s, startfrom: %d }" % (
            rust_str(bss["keyword"]), bss["startfrom"])
    elif bs["type"] == "unknown":
        begin = "BeginSearch::Unknown"
    else:
        sys.exit("%s: unknown begin_search type %r" % (cmd, bs["type"]))
    if fk["type"] == "range":
        find = "FindKeys::Range { lastkey: %d, step: %d, limit: %d }" % (
            fks["lastkey"], fks["keystep"], fks["limit"])
    elif fk["type"] == "keynum":
        find = "FindKeys::Keynum { keynumidx: %d, firstkey: %d, step: %d }" % (
            fks["keynumidx"], fks["firstkey"], fks["keystep"])
    elif fk["type"] == "unknown":
        find = "FindKeys::Unknown"
    else:
        sys.exit("%s: unknown find_keys type %r" % (cmd, fk["type"]))
    flags = flag_expr(spec["flags"], KEY_FLAGS, "key-spec", cmd)
    return "KeySpec { begin: %s, find: %s, flags: %s }" % (begin, find, flags)


def command(entry, indent):
    name, arity, flags, first, last, step = entry[:6]
    specs = entry[8] if len(entry) > 8 else []
    subs = sorted(entry[9] if len(entry) > 9 else [], key=lambda e: e[0])
    pad = " " * indent
    lines = [pad + "CommandSpec {"]
    lines.append(pad + "    name: %s," % rust_str(name))
    lines.append(pad + "    arity: %d," % arity)
    lines.append(pad + "    flags: %s," % flag_expr(flags, COMMAND_FLAGS, "command", name))
    lines.append(pad + "    first_key: %d," % first)
    lines.append(pad + "    last_key: %d," % last)
    lines.append(pad + "    key_step: %d," % step)
    if specs:
        lines.append(pad + "    key_specs: &[")
        for s in specs:
            lines.append(pad + "        %s," % key_spec(name, s))
        lines.append(pad + "    ],")
    else:
        lines.append(pad + "    key_specs: &[],")
    if subs:
        lines.append(pad + "    subcommands: &[")
        for s in subs:
            lines.extend(command(s, indent + 8))
        lines.append(pad + "    ],")
    else:
        lines.append(pad + "    subcommands: &[],")
    lines.append(pad + "    policy: policy::of(%s)," % rust_str(name))
    lines.append(pad + "    keys_proc: KeysProc::of(%s)," % rust_str(name))
    lines.append(pad + "},")
    return lines


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, help="use a redis-server already listening on 127.0.0.1:PORT")
    ap.add_argument("--server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    ap.add_argument("--out", default=os.path.join(here, "..", "src", "command", "generated.rs"))
    opts = ap.parse_args()

    proc = None
    port = opts.port
    if port is None:
        proc, port = start_server(opts.server)
    try:
        conn = Resp(port)
        version = pairs_from_info(conn.call("INFO", "server")).get("redis_version", "?")
        entries = sorted(conn.call("COMMAND"), key=lambda e: e[0])
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()

    names = [e[0] for e in entries]
    disp, slots = perfect_hash(names)
    max_len = max(len(n) for n in names)
    total = len(entries) + sum(len(e[9]) for e in entries)

    out = []
    out.append("// @generated by router/gen/gen_commands.py from redis-server %s `COMMAND`." % version)
    out.append("// Do not edit: regenerate with `python3 router/gen/gen_commands.py` (starts its own")
    out.append("// redis-server; `--port P` uses a running one). Policies live in policy.rs, key logic that")
    out.append("// the key specs cannot express in keys.rs.")
    out.append("")
    out.append("use super::flags::*;")
    out.append("use super::key_flags::*;")
    out.append("use super::keys::KeysProc;")
    out.append("use super::policy;")
    out.append("use super::{BeginSearch, CommandSpec, FindKeys, KeySpec};")
    out.append("")
    out.append("/// Version of the redis-server the table was generated from.")
    out.append("pub const REDIS_VERSION: &str = %s;" % rust_str(version))
    out.append("")
    out.append("/// Number of commands plus subcommands in the table.")
    out.append("pub const TOTAL_COMMANDS: usize = %d;" % total)
    out.append("")
    out.append("/// Longest top-level command name, in bytes.")
    out.append("pub const MAX_NAME_LEN: usize = %d;" % max_len)
    out.append("")
    out.append("/// Bits of the hash that pick a displacement bucket.")
    out.append("pub const DISP_BITS: u32 = %d;" % DISP_BITS)
    out.append("")
    out.append("/// Bits of the mixed hash that pick a slot.")
    out.append("pub const SLOT_BITS: u32 = %d;" % SLOT_BITS)
    out.append("")
    out.append("/// Per-bucket displacement of the perfect hash.")
    out.append("pub static DISP: [u16; %d] = [" % len(disp))
    for i in range(0, len(disp), 16):
        out.append("    " + ", ".join(str(d) for d in disp[i:i + 16]) + ",")
    out.append("];")
    out.append("")
    out.append("/// Slot -> index into [`COMMANDS`] (`u16::MAX`: empty).")
    out.append("pub static SLOTS: [u16; %d] = [" % len(slots))
    for i in range(0, len(slots), 16):
        out.append("    " + ", ".join(str(65535 if s is None else s) for s in slots[i:i + 16]) + ",")
    out.append("];")
    out.append("")
    out.append("/// Every top-level command, sorted by name.")
    # An array, not a slice reference: its address is a constant, one load fewer per lookup.
    out.append("pub static COMMANDS: [CommandSpec; %d] = [" % len(entries))
    for e in entries:
        out.extend(command(e, 4))
    out.append("];")
    text = "\n".join(out) + "\n"
    with open(opts.out, "w") as f:
        f.write(text)
    print("wrote %s: %d commands, %d with subcommands (redis %s)" % (opts.out, len(entries), total, version))


def pairs_from_info(text):
    out = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k] = v.strip()
    return out


if __name__ == "__main__":
    main()
