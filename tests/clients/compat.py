#!/usr/bin/env python3
"""redis-py at its default settings against one endpoint: a fixed sequence of commands, one JSON
line per step, `{"step": name, "result": value}`, for tests/clients_compat.rs to compare between a
direct redis-server and keyhop.

Usage: compat.py PORT [PREFIX]   (host is 127.0.0.1; keys start with PREFIX, default "compat")

redis-py 8 defaults to protocol 3: every connection opens with `HELLO 3` (then CLIENT SETINFO,
and SELECT for db=1). Values are normalized with their Python type names ("bytes:v", "float:1.5",
{"dict": [[k, v], ...]}, {"set": [...]} sorted), so a RESP3 map, set or double that came back as
something else shows up as a difference. Nothing printed depends on time, randomness, client ids
or server uptime. A step that raises prints "error:<Class>:<message>" and the sequence goes on.
"""

import json
import os
import sys

import redis


def norm(v):
    """A JSON-able, deterministic rendering of a reply that keeps Python type names."""
    if v is None:
        return "NoneType"
    if isinstance(v, bool):
        return f"bool:{v}"
    if isinstance(v, int):
        return f"int:{v}"
    if isinstance(v, float):
        return f"float:{v!r}"
    if isinstance(v, bytes):
        return "bytes:" + v.decode("utf-8", "backslashreplace")
    if isinstance(v, str):
        return "str:" + v
    if isinstance(v, (set, frozenset)):
        return {type(v).__name__: sorted((norm(x) for x in v), key=json.dumps)}
    if isinstance(v, dict):
        items = [[norm(k), norm(x)] for k, x in v.items()]
        return {type(v).__name__: sorted(items, key=json.dumps)}
    if isinstance(v, (list, tuple)):
        return {type(v).__name__: [norm(x) for x in v]}
    if isinstance(v, BaseException):
        return f"error:{type(v).__name__}:{v}"
    return f"{type(v).__name__}:{v!r}"


def emit(step, result):
    print(json.dumps({"step": step, "result": result}), flush=True)


def main():
    port = int(sys.argv[1])
    p = sys.argv[2] if len(sys.argv) > 2 else "compat"

    # Defaults only: protocol, timeouts, decoding and retries are redis-py's own.
    # COMPAT_RESP=2 is a manual-investigation switch only (RESP2 through a proxy without RESP3);
    # the tests never set it.
    extra = {"protocol": int(os.environ["COMPAT_RESP"])} if os.environ.get("COMPAT_RESP") else {}
    hello_proto = extra.get("protocol", 3)
    r = redis.Redis(host="127.0.0.1", port=port, **extra)
    r1 = redis.Redis(host="127.0.0.1", port=port, db=1, **extra)

    # Plain keys: their slots scatter over both groups (the Rust test checks that they do).
    spread = [f"{p}:s:{i}" for i in range(8)]
    # Hash-tagged keys: one slot, so one group, whatever the prefix.
    tagged = [f"{{{p}}}:t:{i}" for i in range(4)]
    counter, hkey, skey, zkey, lkey = (f"{p}:ctr", f"{p}:h", f"{p}:set", f"{p}:z", f"{p}:l")
    ekey, dbkey, fkey = f"{p}:exp", f"{p}:db", f"{p}:float"
    every = spread + tagged + [counter, hkey, skey, zkey, lkey, ekey, dbkey, fkey]

    def step(name, fn):
        try:
            result = norm(fn())
        except Exception as e:  # the error itself is the result to compare
            result = norm(e)
        emit(name, result)

    emit("keys", {"spread": spread, "tagged": tagged})

    def cleanup():
        return [r.delete(k) for k in every] + [r1.delete(dbkey)]

    # Not compared for content: a rerun on the same servers may find leftovers.
    try:
        cleanup()
        emit("cleanup", "done")
    except Exception as e:
        emit("cleanup", norm(e))

    def connection_protocol():
        conn = r.connection_pool.get_connection()
        try:
            return {"protocol": conn.protocol}
        finally:
            r.connection_pool.release(conn)

    step("connection", connection_protocol)

    def hello():
        h = r.execute_command("HELLO", hello_proto)
        want = [b"server", b"version", b"proto", b"mode", b"role", b"modules"]
        return {"type": type(h).__name__, "fields": {k: h.get(k) for k in want}}

    step("hello", hello)
    step("ping", lambda: r.ping())

    # Strings.
    step("set", lambda: [r.set(k, f"v{i}") for i, k in enumerate(spread)])
    step("get", lambda: [r.get(k) for k in spread] + [r.get(f"{p}:missing")])
    step("incr", lambda: [r.incr(counter), r.incr(counter), r.incrby(counter, 40), r.decr(counter)])
    step("incrbyfloat", lambda: [r.incrbyfloat(fkey, 0.5), r.incrbyfloat(fkey, 2), r.get(fkey)])
    step("mset", lambda: r.mset({k: f"m{i}" for i, k in enumerate(spread)}))
    step("mget", lambda: r.mget([f"{p}:missing"] + spread[::-1]))
    step("mset_tagged", lambda: r.mset({k: f"t{i}" for i, k in enumerate(tagged)}))
    step("mget_tagged", lambda: r.mget(tagged))
    step("strlen_append", lambda: [r.append(spread[0], "+x"), r.strlen(spread[0]), r.get(spread[0])])
    step("set_options", lambda: [
        r.set(spread[1], "nx", nx=True),
        r.set(spread[1], "xx", xx=True),
        r.set(spread[1], "old?", get=True),
        r.getdel(spread[1]),
        r.setnx(spread[1], "again"),
    ])

    # Hashes: HGETALL is a RESP3 map.
    step("hset", lambda: r.hset(hkey, mapping={"f1": "a", "f2": "b", "n": "10"}))
    step("hget", lambda: [r.hget(hkey, "f1"), r.hget(hkey, "nope"), r.hmget(hkey, ["f2", "x"])])
    step("hgetall", lambda: r.hgetall(hkey))
    step("hincrby", lambda: [r.hincrby(hkey, "n", 5), r.hincrbyfloat(hkey, "n", 0.25)])
    step("hkeys_hlen", lambda: [sorted(r.hkeys(hkey)), r.hlen(hkey), r.hexists(hkey, "f1")])
    step("hgetall_missing", lambda: r.hgetall(f"{p}:missing"))

    # Sets: SMEMBERS is a RESP3 set.
    step("sadd", lambda: [r.sadd(skey, "a", "b", "c"), r.sadd(skey, "c", "d")])
    step("smembers", lambda: r.smembers(skey))
    step("sismember", lambda: [r.sismember(skey, "a"), r.sismember(skey, "zz"), r.scard(skey)])
    step("smismember", lambda: r.smismember(skey, ["a", "zz", "d"]))
    step("srem", lambda: [r.srem(skey, "d"), r.smembers(skey)])

    # Sorted sets: ZSCORE is a RESP3 double.
    step("zadd", lambda: r.zadd(zkey, {"one": 1, "two": 2.5, "three": 3}))
    step("zscore", lambda: [r.zscore(zkey, "two"), r.zscore(zkey, "nope")])
    step("zrange_withscores", lambda: r.zrange(zkey, 0, -1, withscores=True))
    step("zrange", lambda: r.zrange(zkey, 0, 1))
    step("zincrby", lambda: [r.zincrby(zkey, 1.5, "one"), r.zrank(zkey, "one"), r.zcard(zkey)])
    step("zrevrange_withscores", lambda: r.zrevrange(zkey, 0, -1, withscores=True))
    step("zmscore", lambda: r.zmscore(zkey, ["one", "nope"]))

    # Lists.
    step("lists", lambda: [
        r.rpush(lkey, "a", "b", "c"),
        r.lpush(lkey, "z"),
        r.lrange(lkey, 0, -1),
        r.lpop(lkey),
        r.rpop(lkey, 2),
        r.llen(lkey),
        r.lindex(lkey, 0),
    ])

    # Expiry: only bounds of TTL, which may tick between the calls.
    def expiry():
        r.set(ekey, "e")
        out = [r.expire(ekey, 100)]
        ttl = r.ttl(ekey)
        out.append(["ttl_in_range", 90 <= ttl <= 100])
        pttl = r.pttl(ekey)
        out.append(["pttl_in_range", 90_000 <= pttl <= 100_000])
        out += [r.persist(ekey), r.ttl(ekey), r.ttl(f"{p}:missing"), r.expire(f"{p}:missing", 5)]
        return out

    step("expire_ttl", expiry)

    # EXISTS and DEL over keys of both groups (repeats count in EXISTS).
    step("exists", lambda: r.exists(*(spread + tagged + [spread[0], f"{p}:missing"])))
    step("del", lambda: [r.delete(*(spread[:4] + [f"{p}:missing"])), r.exists(*spread)])
    step("type", lambda: [r.type(hkey), r.type(skey), r.type(zkey), r.type(f"{p}:missing")])

    # A non-transactional pipeline over keys of every group (a transaction needs its keys in one
    # group; tests/apps.rs runs redis-py's default, transactional pipeline()).
    def pipeline():
        pipe = r.pipeline(transaction=False)
        for i, k in enumerate(spread):
            pipe.set(k, f"p{i}")
        pipe.get(spread[5])
        pipe.incr(counter)
        pipe.hgetall(hkey)
        pipe.smembers(skey)
        pipe.zscore(zkey, "three")
        pipe.mget(spread)
        pipe.get(f"{p}:missing")
        pipe.exists(*spread)
        return pipe.execute()

    step("pipeline", pipeline)

    def pipeline_error():
        pipe = r.pipeline(transaction=False)
        pipe.set(f"{p}:missing", "x")
        pipe.incr(hkey)  # WRONGTYPE
        pipe.delete(f"{p}:missing")
        return pipe.execute(raise_on_error=False)

    step("pipeline_error", pipeline_error)

    # Lua: EVAL with keys, register_script (EVALSHA, falling back to SCRIPT LOAD on NOSCRIPT),
    # SCRIPT LOAD + EVALSHA, SCRIPT EXISTS.
    get_lua = "return redis.call('GET', KEYS[1])"
    step("eval", lambda: [
        r.eval(get_lua, 1, spread[6]),
        r.eval("return {KEYS[1], ARGV[1], 7}", 1, spread[7], "arg"),
        r.eval("return redis.call('MGET', KEYS[1], KEYS[2])", 2, tagged[0], tagged[1]),
        r.eval("return 'no keys'", 0),
    ])
    add_lua = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    script = r.register_script(add_lua)
    step("register_script", lambda: [script.sha, script(keys=[counter], args=[10]),
                                     script(keys=[counter], args=[1])])

    def script_load():
        sha = r.script_load("return {KEYS[1], tonumber(ARGV[1]) * 2}")
        return [sha, r.evalsha(sha, 1, spread[2], "21"), r.script_exists(sha, "0" * 40)]

    step("script_load", script_load)
    step("eval_error", lambda: r.eval("return redis.call('INCR', KEYS[1])", 1, hkey))

    # SELECT through db=1: written there, not visible in db 0.
    step("select_db1", lambda: [
        r1.set(dbkey, "in-db1"),
        r1.get(dbkey),
        r.get(dbkey),
        r.exists(dbkey),
        r1.exists(dbkey),
        r1.incr(f"{dbkey}:n"),
        r1.delete(dbkey, f"{dbkey}:n"),
        r1.get(dbkey),
    ])

    # Server errors relayed as exceptions.
    step("errors", lambda: [
        _err(lambda: r.incr(hkey)),
        _err(lambda: r.hget(counter, "x")),
        _err(lambda: r.execute_command("NOSUCHCOMMAND", "x")),
        _err(lambda: r.execute_command("GET")),
    ])

    def raw_type(*args):
        """The type of a reply as parsed off the wire, without redis-py's per-command callbacks
        (RESP2 would give list, list and bytes where RESP3 gives dict, set and float)."""
        conn = r.connection_pool.get_connection()
        try:
            conn.send_command(*args)
            return type(conn.read_response()).__name__
        finally:
            r.connection_pool.release(conn)

    # The Python types of RESP3 replies, spelled out.
    step("types", lambda: {
        "raw_hgetall": raw_type("HGETALL", hkey),
        "raw_smembers": raw_type("SMEMBERS", skey),
        "raw_zscore": raw_type("ZSCORE", zkey, "two"),
        "hgetall": type(r.hgetall(hkey)).__name__,
        "smembers": type(r.smembers(skey)).__name__,
        "zscore": type(r.zscore(zkey, "two")).__name__,
        "zrange_withscores": [type(x).__name__ for x in r.zrange(zkey, 0, 0, withscores=True)[0]],
        "incr": type(r.incr(counter)).__name__,
        "get_missing": type(r.get(f"{p}:missing")).__name__,
        "hello": type(r.execute_command("HELLO", hello_proto)).__name__,
    })

    step("cleanup_end", lambda: sum(r.delete(k) for k in every) + r1.delete(dbkey))
    r.close()
    r1.close()


def _err(fn):
    try:
        return ["no error", fn()]
    except Exception as e:
        return e


if __name__ == "__main__":
    main()
