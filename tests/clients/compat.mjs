// node-redis (`redis` on npm) at its default settings against one endpoint: a fixed sequence of
// commands, one JSON line per step, {"step": name, "result": value}, for tests/clients_compat.rs
// to compare between a direct redis-server and keyhop.
//
// Usage: node compat.mjs PORT [PREFIX]   (host 127.0.0.1; keys start with PREFIX, default "compat")
// node-redis is loaded from $COMPAT_NODE_DIR (default <repo>/target/test-clients/node, where
// scripts/install-test-clients.sh puts it).
//
// node-redis 5+ defaults to RESP3: every connection opens with `HELLO 3` (then SELECT for
// `database: 1`, then CLIENT SETINFO). Values are normalized with their JS type names
// ("string:v", "number:2.5", {"Object": [[k, v], ...]}, {"Set": [...]} sorted), so a RESP3 map,
// set or double that came back as something else shows up as a difference. Nothing printed
// depends on time, randomness, client ids or server uptime. A step that throws prints
// "error:<Class>:<message>" and the sequence goes on.

import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const nodeDir =
  process.env.COMPAT_NODE_DIR || path.join(here, '..', '..', 'target', 'test-clients', 'node');
const require = createRequire(path.join(nodeDir, 'package.json'));
const { createClient, defineScript, RESP_TYPES } = require('redis');

function typeName(v) {
  if (v === null) return 'null';
  if (typeof v !== 'object') return typeof v;
  const proto = Object.getPrototypeOf(v);
  if (proto === null) return 'Object';
  return proto.constructor?.name ?? 'Object';
}

const sorted = (a) => (Array.isArray(a) ? [...a].sort() : a);
const byJson = (a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1);

/** A JSON-able, deterministic rendering of a reply that keeps JS type names. */
function norm(v) {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (v instanceof Error) {
    const out = `error:${typeName(v)}:${v.message}`;
    // A failed pipeline carries the replies it did get.
    return Array.isArray(v.replies) ? { [out]: v.replies.map(norm) } : out;
  }
  if (Buffer.isBuffer(v)) return `Buffer:${v.toString('utf8')}`;
  switch (typeof v) {
    case 'string':
    case 'number':
    case 'boolean':
    case 'bigint':
      return `${typeof v}:${String(v)}`;
    case 'object':
      break;
    default:
      return `${typeof v}`;
  }
  const name = typeName(v);
  if (Array.isArray(v)) return { [name]: v.map(norm) };
  if (v instanceof Set) return { [name]: [...v].map(norm).sort(byJson) };
  if (v instanceof Map) return { [name]: [...v].map(([k, x]) => [norm(k), norm(x)]).sort(byJson) };
  return { [name]: Object.entries(v).map(([k, x]) => [norm(k), norm(x)]).sort(byJson) };
}

const emit = (step, result) => process.stdout.write(`${JSON.stringify({ step, result })}\n`);

async function step(name, fn) {
  let result;
  try {
    result = norm(await fn());
  } catch (e) {
    result = norm(e);
  }
  emit(name, result);
}

/** Connects, or gives up after `ms` (node-redis would otherwise retry forever) and closes. */
async function connect(client, ms) {
  let last = 'none';
  client.on('error', (e) => {
    last = `${typeName(e)}: ${e.message}`;
  });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no connection within ${ms} ms (last error: ${last})`)),
      ms,
    );
  });
  try {
    await Promise.race([client.connect(), timeout]);
  } catch (e) {
    // Stop the reconnection loop: later commands then fail at once instead of waiting in the
    // offline queue.
    try {
      client.destroy();
    } catch {
      // not open
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

const errorOf = async (fn) => {
  try {
    return ['no error', await fn()];
  } catch (e) {
    return e;
  }
};

async function main() {
  const port = Number(process.argv[2]);
  const p = process.argv[3] || 'compat';
  const url = `redis://127.0.0.1:${port}`;

  // Defaults only (RESP, timeouts, type mapping are node-redis's own), plus `database: 1` for
  // the SELECT client and a script definition for the one that runs it.
  // COMPAT_RESP=2 is a manual-investigation switch only (RESP2 through a proxy without RESP3);
  // the tests never set it.
  const base = process.env.COMPAT_RESP ? { url, RESP: Number(process.env.COMPAT_RESP) } : { url };
  const helloProto = Number(process.env.COMPAT_RESP || 3);
  const r = createClient({ ...base });
  const r1 = createClient({ ...base, database: 1 });
  const addLua = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
  const rs = createClient({
    ...base,
    scripts: {
      add: defineScript({
        SCRIPT: addLua,
        NUMBER_OF_KEYS: 1,
        parseCommand(parser, key, n) {
          parser.pushKey(key);
          parser.push(String(n));
        },
        transformReply(reply) {
          return reply;
        },
      }),
    },
  });

  // Plain keys: their slots scatter over both groups (the Rust test checks that they do).
  const spread = [...Array(8).keys()].map((i) => `${p}:s:${i}`);
  // Hash-tagged keys: one slot, so one group, whatever the prefix.
  const tagged = [...Array(4).keys()].map((i) => `{${p}}:t:${i}`);
  const [counter, hkey, skey, zkey, lkey] = ['ctr', 'h', 'set', 'z', 'l'].map((s) => `${p}:${s}`);
  const [ekey, dbkey, fkey, missing] = ['exp', 'db', 'float', 'missing'].map((s) => `${p}:${s}`);
  const every = [...spread, ...tagged, counter, hkey, skey, zkey, lkey, ekey, dbkey, fkey];

  emit('keys', { spread, tagged });

  // In parallel: a handshake that keeps failing (node-redis then reconnects forever) costs the
  // timeout once, not three times.
  const connected = [r, r1, rs].map((c) =>
    connect(c, 5000).then(
      () => 'connected',
      (e) => e,
    ),
  );
  for (const [i, name] of ['connect', 'connect_db1', 'connect_scripts'].entries()) {
    await step(name, async () => {
      const res = await connected[i];
      if (res instanceof Error) throw res;
      return res;
    });
  }

  // Not compared for content: a rerun on the same servers may find leftovers.
  try {
    for (const k of every) await r.del(k);
    await r1.del(dbkey);
    emit('cleanup', 'done');
  } catch (e) {
    emit('cleanup', norm(e));
  }

  await step('hello', async () => {
    const h = await r.hello(helloProto);
    const want = ['server', 'version', 'proto', 'mode', 'role', 'modules'];
    return { type: typeName(h), fields: Object.fromEntries(want.map((k) => [k, h[k]])) };
  });
  await step('ping', () => r.ping());

  // Strings.
  await step('set', () => Promise.all(spread.map((k, i) => r.set(k, `v${i}`))));
  await step('get', async () => [...(await Promise.all(spread.map((k) => r.get(k)))), await r.get(missing)]);
  await step('incr', async () => [
    await r.incr(counter),
    await r.incr(counter),
    await r.incrBy(counter, 40),
    await r.decr(counter),
  ]);
  await step('incrbyfloat', async () => [
    await r.incrByFloat(fkey, 0.5),
    await r.incrByFloat(fkey, 2),
    await r.get(fkey),
  ]);
  await step('mset', () => r.mSet(spread.map((k, i) => [k, `m${i}`])));
  await step('mget', () => r.mGet([missing, ...[...spread].reverse()]));
  await step('mset_tagged', () => r.mSet(tagged.map((k, i) => [k, `t${i}`])));
  await step('mget_tagged', () => r.mGet(tagged));
  await step('strlen_append', async () => [
    await r.append(spread[0], '+x'),
    await r.strLen(spread[0]),
    await r.get(spread[0]),
  ]);
  await step('set_options', async () => [
    await r.set(spread[1], 'nx', { NX: true }),
    await r.set(spread[1], 'xx', { XX: true }),
    await r.set(spread[1], 'old?', { GET: true }),
    await r.getDel(spread[1]),
    await r.setNX(spread[1], 'again'),
  ]);

  // Hashes: HGETALL is a RESP3 map.
  await step('hset', () => r.hSet(hkey, { f1: 'a', f2: 'b', n: '10' }));
  await step('hget', async () => [
    await r.hGet(hkey, 'f1'),
    await r.hGet(hkey, 'nope'),
    await r.hmGet(hkey, ['f2', 'x']),
  ]);
  await step('hgetall', () => r.hGetAll(hkey));
  await step('hincrby', async () => [await r.hIncrBy(hkey, 'n', 5), await r.hIncrByFloat(hkey, 'n', 0.25)]);
  await step('hkeys_hlen', async () => [
    (await r.hKeys(hkey)).sort(),
    await r.hLen(hkey),
    await r.hExists(hkey, 'f1'),
  ]);
  await step('hgetall_missing', () => r.hGetAll(missing));

  // Sets: SMEMBERS is a RESP3 set (node-redis maps it to an Array by default; sorted here).
  await step('sadd', async () => [await r.sAdd(skey, ['a', 'b', 'c']), await r.sAdd(skey, ['c', 'd'])]);
  await step('smembers', async () => sorted(await r.sMembers(skey)));
  await step('sismember', async () => [
    await r.sIsMember(skey, 'a'),
    await r.sIsMember(skey, 'zz'),
    await r.sCard(skey),
  ]);
  await step('smismember', () => r.smIsMember(skey, ['a', 'zz', 'd']));
  await step('srem', async () => [await r.sRem(skey, 'd'), sorted(await r.sMembers(skey))]);

  // Sorted sets: ZSCORE is a RESP3 double.
  await step('zadd', () =>
    r.zAdd(zkey, [
      { score: 1, value: 'one' },
      { score: 2.5, value: 'two' },
      { score: 3, value: 'three' },
    ]),
  );
  await step('zscore', async () => [await r.zScore(zkey, 'two'), await r.zScore(zkey, 'nope')]);
  await step('zrange_withscores', () => r.zRangeWithScores(zkey, 0, -1));
  await step('zrange', () => r.zRange(zkey, 0, 1));
  await step('zincrby', async () => [
    await r.zIncrBy(zkey, 1.5, 'one'),
    await r.zRank(zkey, 'one'),
    await r.zCard(zkey),
  ]);
  await step('zrevrange_withscores', () => r.zRangeWithScores(zkey, 0, -1, { REV: true }));
  await step('zmscore', () => r.zmScore(zkey, ['one', 'nope']));

  // Lists.
  await step('lists', async () => [
    await r.rPush(lkey, ['a', 'b', 'c']),
    await r.lPush(lkey, 'z'),
    await r.lRange(lkey, 0, -1),
    await r.lPop(lkey),
    await r.rPopCount(lkey, 2),
    await r.lLen(lkey),
    await r.lIndex(lkey, 0),
  ]);

  // Expiry: only bounds of TTL, which may tick between the calls.
  await step('expire_ttl', async () => {
    await r.set(ekey, 'e');
    const out = [await r.expire(ekey, 100)];
    const ttl = await r.ttl(ekey);
    out.push(['ttl_in_range', ttl >= 90 && ttl <= 100]);
    const pttl = await r.pTTL(ekey);
    out.push(['pttl_in_range', pttl >= 90000 && pttl <= 100000]);
    out.push(await r.persist(ekey), await r.ttl(ekey), await r.ttl(missing), await r.expire(missing, 5));
    return out;
  });

  // EXISTS and DEL over keys of both groups (repeats count in EXISTS).
  await step('exists', () => r.exists([...spread, ...tagged, spread[0], missing]));
  await step('del', async () => [await r.del([...spread.slice(0, 4), missing]), await r.exists(spread)]);
  await step('type', async () => [await r.type(hkey), await r.type(skey), await r.type(zkey), await r.type(missing)]);

  // A non-transactional pipeline over keys of every group: execAsPipeline() sends the commands
  // without MULTI/EXEC (a transaction needs its keys in one group; tests/apps.rs runs
  // multi().exec()).
  await step('pipeline', async () => {
    const m = r.multi();
    spread.forEach((k, i) => m.set(k, `p${i}`));
    return m
      .get(spread[5])
      .incr(counter)
      .hGetAll(hkey)
      .sMembers(skey)
      .zScore(zkey, 'three')
      .mGet(spread)
      .get(missing)
      .exists(spread)
      .execAsPipeline()
      .then((replies) => replies.map((x, i) => (i === spread.length + 3 ? sorted(x) : x)));
  });
  // node-redis also pipelines commands issued without awaiting each one.
  await step('pipeline_concurrent', () =>
    Promise.all([
      r.incr(counter),
      r.get(spread[6]),
      r.hGet(hkey, 'f2'),
      r.zScore(zkey, 'two'),
      r.mGet([spread[7], spread[0], missing]),
      r.incr(counter),
    ]),
  );
  await step('pipeline_error', () =>
    Promise.allSettled([r.set(missing, 'x'), r.incr(hkey), r.del(missing)]).then((all) =>
      all.map((s) => (s.status === 'fulfilled' ? s.value : s.reason)),
    ),
  );

  // Lua: EVAL with keys, a defined script (EVALSHA, falling back to EVAL on NOSCRIPT),
  // SCRIPT LOAD + EVALSHA, SCRIPT EXISTS.
  await step('eval', async () => [
    await r.eval("return redis.call('GET', KEYS[1])", { keys: [spread[6]] }),
    await r.eval('return {KEYS[1], ARGV[1], 7}', { keys: [spread[7]], arguments: ['arg'] }),
    await r.eval("return redis.call('MGET', KEYS[1], KEYS[2])", { keys: [tagged[0], tagged[1]] }),
    await r.eval("return 'no keys'"),
  ]);
  await step('defined_script', async () => [await rs.add(counter, 10), await rs.add(counter, 1)]);
  await step('script_load', async () => {
    const sha = await r.scriptLoad('return {KEYS[1], tonumber(ARGV[1]) * 2}');
    return [
      sha,
      await r.evalSha(sha, { keys: [spread[2]], arguments: ['21'] }),
      await r.scriptExists([sha, '0'.repeat(40)]),
    ];
  });
  await step('eval_error', () => r.eval("return redis.call('INCR', KEYS[1])", { keys: [hkey] }));

  // SELECT through `database: 1`: written there, not visible in db 0.
  await step('select_db1', async () => [
    await r1.set(dbkey, 'in-db1'),
    await r1.get(dbkey),
    await r.get(dbkey),
    await r.exists(dbkey),
    await r1.exists(dbkey),
    await r1.incr(`${dbkey}:n`),
    await r1.del([dbkey, `${dbkey}:n`]),
    await r1.get(dbkey),
  ]);

  // Server errors.
  await step('errors', async () => [
    await errorOf(() => r.incr(hkey)),
    await errorOf(() => r.hGet(counter, 'x')),
    await errorOf(() => r.sendCommand(['NOSUCHCOMMAND', 'x'])),
    await errorOf(() => r.sendCommand(['GET'])),
  ]);

  // The JS types of RESP3 replies, spelled out (typeof / constructor name).
  await step('types', async () => {
    const zr = await r.zRangeWithScores(zkey, 0, 0);
    return {
      hgetall: typeName(await r.hGetAll(hkey)),
      smembers: typeName(await r.sMembers(skey)),
      zscore: typeName(await r.zScore(zkey, 'two')),
      zrange_withscores: [typeName(zr[0]), typeName(zr[0].value), typeName(zr[0].score)],
      incr: typeName(await r.incr(counter)),
      get_missing: typeName(await r.get(missing)),
      hello: typeName(await r.hello(helloProto)),
      raw_hgetall: typeName(await r.sendCommand(['HGETALL', hkey])),
      raw_smembers: typeName(await r.sendCommand(['SMEMBERS', skey])),
      raw_zscore: typeName(await r.sendCommand(['ZSCORE', zkey, 'two'])),
      // With a type mapping for the RESP3 types (RESP2 has no set, map or double on the wire).
      mapped_smembers: typeName(await r.withTypeMapping({ [RESP_TYPES.SET]: Set }).sMembers(skey)),
      mapped_hgetall: typeName(await r.withTypeMapping({ [RESP_TYPES.MAP]: Map }).hGetAll(hkey)),
      mapped_zscore: typeName(
        await r.withTypeMapping({ [RESP_TYPES.DOUBLE]: String }).sendCommand(['ZSCORE', zkey, 'two']),
      ),
    };
  });

  await step('cleanup_end', async () => (await r.del(every)) + (await r1.del(dbkey)));
  for (const c of [r, r1, rs]) {
    try {
      c.destroy();
    } catch {
      // already closed
    }
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    emit('fatal', norm(e));
    process.exit(1);
  },
);
