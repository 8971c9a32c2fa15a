// Drives the admin dashboard (GET / on admin_listen) in headless Chromium for tests/dashboard.rs.
// It reads only what the page/test contract promises (body.dataset.polls, [data-group] with
// [data-role=master] and [data-field=ops], #timeline li[data-kind]), so the test sees what a
// person looking at the page would see, after the page's own JavaScript ran.
//
//   node dashboard.mjs URL SCREENSHOT_PATH     (KEYHOP_CHROMIUM: the browser binary)
//
// stdout: one JSON line per event: {"phase":"ready",...} once the page has polled twice, then a
// {"phase":"change",...} line whenever the groups or the timeline change (sampled every 100 ms).
// stdin commands, one a line: `snapshot`, `screenshot`, `wait-master NAME ADDR MS`, `quit`.
// Every wait is bounded; any failure prints a message on stderr and exits non-zero.
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(
  path.join(here, "..", "..", "target", "test-clients", "node", "package.json"),
);

const READY_MS = 15000;
const SAMPLE_MS = 100;
// Nothing the test asks for takes this long; a driver left behind must not live on.
const LIFETIME_MS = 180000;

function fail(msg) {
  process.stderr.write(`dashboard.mjs: ${msg}\n`);
  process.exit(1);
}

const [url, shotPath] = process.argv.slice(2);
if (!url || !shotPath) fail("usage: dashboard.mjs URL SCREENSHOT_PATH");
const executablePath = process.env.KEYHOP_CHROMIUM;
if (!executablePath) fail("KEYHOP_CHROMIUM (the chromium binary) is not set");

let puppeteer;
try {
  puppeteer = require("puppeteer-core");
} catch (e) {
  fail(`puppeteer-core is not installed (bash scripts/setup.sh clients): ${e.message}`);
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// Runs in the page: the contract's view of the DOM.
function readState() {
  const groups = {};
  for (const el of document.querySelectorAll("[data-group]")) {
    const master = el.querySelector('[data-role="master"]');
    const ops = el.querySelector('[data-field="ops"]');
    const opsText = ops ? ops.textContent.trim() : null;
    groups[el.dataset.group] = {
      master: master ? master.textContent.trim() : null,
      ops: opsText !== null && /^\d+(\.\d+)?$/.test(opsText) ? Number(opsText) : opsText,
    };
  }
  const timeline = [...document.querySelectorAll("#timeline li")].map((li) => ({
    kind: li.dataset.kind ?? null,
    text: li.textContent.trim(),
  }));
  return {
    polls: Number(document.body.dataset.polls ?? "0"),
    groups,
    timeline,
    slotmap: document.querySelector("#slotmap") !== null,
  };
}

const browser = await puppeteer
  .launch({
    executablePath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    protocolTimeout: 20000,
    timeout: 20000,
  })
  .catch((e) => fail(`launching ${executablePath}: ${e.message}`));
const lifetime = setTimeout(async () => {
  process.stderr.write(`dashboard.mjs: still running after ${LIFETIME_MS} ms, quitting\n`);
  await browser.close().catch(() => {});
  process.exit(2);
}, LIFETIME_MS);

async function finish(code, msg) {
  if (msg) process.stderr.write(`dashboard.mjs: ${msg}\n`);
  clearTimeout(lifetime);
  await browser.close().catch(() => {});
  process.exit(code);
}

const page = await browser.newPage();
await page.setViewport({ width: 1280, height: 900 });
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e.message ?? e)));
try {
  const resp = await page.goto(url, { waitUntil: "load", timeout: 10000 });
  if (!resp || !resp.ok()) await finish(1, `GET ${url}: status ${resp ? resp.status() : "none"}`);
  await page.waitForFunction(() => Number(document.body.dataset.polls ?? "0") >= 2, {
    timeout: READY_MS,
    polling: 50,
  });
} catch (e) {
  await finish(1, `page never polled twice within ${READY_MS} ms: ${e.message}; page errors: ${JSON.stringify(pageErrors)}`);
}

let state = await page.evaluate(readState);
out({ phase: "ready", ...state });
const key = (s) => JSON.stringify([s.groups, s.timeline]);
let last = key(state);

// Sampling and commands share the page; one at a time keeps their outputs in order.
let busy = Promise.resolve();
const serial = (f) => (busy = busy.then(f, f));

const sampler = setInterval(() => {
  serial(async () => {
    try {
      state = await page.evaluate(readState);
    } catch (e) {
      await finish(1, `reading the page: ${e.message}`);
    }
    const k = key(state);
    if (k !== last) {
      last = k;
      out({ phase: "change", ...state });
    }
  });
}, SAMPLE_MS);

async function waitMaster(name, addr, ms) {
  const started = Date.now();
  let ok = false;
  try {
    await page.waitForFunction(
      (name, addr) => {
        const g = document.querySelector(`[data-group="${CSS.escape(name)}"]`);
        const m = g && g.querySelector('[data-role="master"]');
        if (!m || m.textContent.trim() !== addr) return false;
        return [...document.querySelectorAll('#timeline li[data-kind="failover"]')].some(
          (li) => li.textContent.includes(name) && li.textContent.includes(addr),
        );
      },
      { timeout: ms, polling: 50 },
      name,
      addr,
    );
    ok = true;
  } catch (e) {
    if (e.name !== "TimeoutError") await finish(1, `wait-master: ${e.message}`);
  }
  const now = await page.evaluate(readState);
  out({ phase: "master", ok, after_ms: Date.now() - started, group: name, addr, ...now });
}

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const [cmd, ...args] = line.trim().split(/\s+/);
  serial(async () => {
    switch (cmd) {
      case "snapshot":
        out({ phase: "snapshot", ...(await page.evaluate(readState)) });
        break;
      case "screenshot":
        await page.screenshot({ path: shotPath, fullPage: true });
        out({ phase: "screenshot", path: shotPath });
        break;
      case "wait-master": {
        const ms = Number(args[2]);
        if (args.length !== 3 || !Number.isFinite(ms) || ms < 0 || ms > 60000)
          await finish(1, `usage: wait-master NAME ADDR MS (MS at most 60000), got: ${line}`);
        await waitMaster(args[0], args[1], ms);
        break;
      }
      case "quit":
        clearInterval(sampler);
        await finish(0);
        break;
      case "":
      case undefined:
        break;
      default:
        await finish(1, `unknown command: ${line}`);
    }
  });
});
// The test going away (stdin closed) ends the driver too.
rl.on("close", () => serial(() => finish(0)));
