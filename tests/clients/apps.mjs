// Real Node applications at their default settings against one endpoint (keyhop or a direct
// redis-server), for tests/apps.rs: a BullMQ queue whose worker processes jobs (BullMQ runs on
// ioredis: Lua scripts, MULTI, BZPOPMIN on its marker key), node-redis pub/sub and MULTI/EXEC, and
// ioredis pub/sub.
//
// Usage: node apps.mjs PORT PREFIX WHAT   (WHAT: bullmq | noderedis | ioredis; host 127.0.0.1)
// Packages are loaded from $COMPAT_NODE_DIR (scripts/install-test-clients.sh puts them there).
// Keys are hash-tagged with PREFIX so that multi-key operations stay in one group through keyhop.
// Prints one JSON line per step, {"step": name, "result": value}; a failing step prints
// "error:<Class>:<message>".

import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const nodeDir =
  process.env.COMPAT_NODE_DIR || path.join(here, '..', '..', 'target', 'test-clients', 'node');
const require = createRequire(path.join(nodeDir, 'package.json'));

const [port, prefix, what] = [Number(process.argv[2]), process.argv[3], process.argv[4]];
const emit = (step, result) => console.log(JSON.stringify({ step, result }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function step(name, fn) {
  try {
    emit(name, await fn());
  } catch (e) {
    emit(name, `error:${e?.constructor?.name}:${e?.message}`);
  }
}

/** Resolves when `cond()` holds, or rejects after `ms`. */
async function until(cond, ms, what) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function bullmq() {
  const { Queue, Worker, QueueEvents } = require('bullmq');
  // BullMQ's documented way to keep a queue's keys in one Redis Cluster slot: a {hash tag} prefix.
  const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
  const opts = { connection, prefix: `{${prefix}}` };
  const queue = new Queue('jobs', opts);
  const done = [];
  const worker = new Worker('jobs', async (job) => job.data.a + job.data.b, opts);
  worker.on('completed', (job, result) => done.push([job.name, result]));
  await step('enqueue', async () => {
    for (let i = 0; i < 3; i++) await queue.add(`add${i}`, { a: i, b: 100 });
    return 'ok';
  });
  await step('processed', async () => {
    await until(() => done.length >= 3, 30000, 'three completed jobs');
    return done.sort();
  });
  // A delayed job: BullMQ's worker wakes from its blocking wait when the delay is over.
  await step('delayed', async () => {
    await queue.add('later', { a: 1, b: 1 }, { delay: 300 });
    await until(() => done.length >= 4, 30000, 'the delayed job');
    return done.find((d) => d[0] === 'later');
  });
  await step('counts', async () => queue.getJobCounts('completed', 'failed', 'waiting', 'active'));
  await worker.close();
  await queue.close();
}

async function noderedis() {
  const { createClient } = require('redis');
  const url = `redis://127.0.0.1:${port}`;
  const client = createClient({ url });
  await client.connect();
  const sub = client.duplicate();
  await sub.connect();
  const got = [];
  await step('subscribe', async () => {
    await sub.subscribe(`{${prefix}}:ch`, (msg, ch) => got.push(['message', ch, msg]));
    await sub.pSubscribe(`{${prefix}}:c*`, (msg, ch) => got.push(['pmessage', ch, msg]));
    return 'ok';
  });
  await step('publish', async () => {
    const n = await client.publish(`{${prefix}}:ch`, 'hello');
    await until(() => got.length >= 2, 10000, 'both messages');
    return [n, got.sort()];
  });
  await step('multi', async () =>
    client
      .multi()
      .set(`{${prefix}}:a`, '1')
      .incr(`{${prefix}}:a`)
      .get(`{${prefix}}:a`)
      .exec(),
  );
  await step('unsubscribe_then_command', async () => {
    // By name: node-redis 5 (the newest for Debian 12's Node 18) never resolves a bare
    // unsubscribe() while patterns are still subscribed, even against Redis itself.
    await sub.unsubscribe(`{${prefix}}:ch`);
    await sub.pUnsubscribe(`{${prefix}}:c*`);
    return sub.ping();
  });
  await sub.quit();
  await client.quit();
}

async function ioredis() {
  const Redis = require('ioredis');
  const client = new Redis({ host: '127.0.0.1', port });
  const sub = new Redis({ host: '127.0.0.1', port });
  const got = [];
  sub.on('message', (ch, msg) => got.push(['message', ch, msg]));
  sub.on('pmessage', (p, ch, msg) => got.push(['pmessage', p, ch, msg]));
  await step('subscribe', async () => [
    await sub.subscribe(`{${prefix}}:a`, `{${prefix}}:b`),
    await sub.psubscribe(`{${prefix}}:*`),
  ]);
  await step('publish', async () => {
    const n = await client.publish(`{${prefix}}:a`, 'one');
    await client.publish(`{${prefix}}:b`, 'two');
    await until(() => got.length >= 4, 10000, 'four messages');
    return [n, got.sort()];
  });
  await step('multi', async () =>
    client.multi().set(`{${prefix}}:k`, 'v').get(`{${prefix}}:k`).exec(),
  );
  sub.disconnect();
  client.disconnect();
}

const apps = { bullmq, noderedis, ioredis };
if (!apps[what]) {
  console.error(`unknown WHAT ${what}`);
  process.exit(2);
}
await apps[what]();
process.exit(0);
