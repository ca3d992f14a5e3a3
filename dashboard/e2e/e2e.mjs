// The dashboard end to end, in headless Chromium (Debian's /usr/bin/chromium, driven by the
// pinned playwright-core; no browser is downloaded). Starts its own `chronos api`, `chronos
// worker` and `chronos dashboard` on free ports against a fresh Postgres database and Redis
// namespace, runs the operator's scenarios, saves a screenshot of every page, and stops what it
// started. scripts/test runs it; alone:
//
//   CHRONOS_BIN=target/debug/chronos NODE_PATH=<dir with node_modules> node dashboard/e2e/e2e.mjs
//
// Prints one line per scenario and a closing "N passed, N failed" line; exits non-zero on a failure.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(join(process.env.CHRONOS_E2E_MODULES || process.cwd(), 'noop.js'));
const { chromium } = require('playwright-core');

const bin = resolve(process.env.CHRONOS_BIN || 'target/debug/chronos');
const shots = resolve(process.env.CHRONOS_SCREENSHOTS || 'target/screenshots');
const pgAdmin = process.env.CHRONOS_E2E_PG || 'postgres://postgres@127.0.0.1:5432/postgres';
const suffix = Math.random().toString(16).slice(2, 10);
const db = `chronos_e2e_${suffix}`;
const databaseUrl = pgAdmin.replace(/\/[^/]*$/, `/${db}`);
const adminKey = `chk_e2e_admin_${suffix}_0123456789`;
const children = new Set();

function freePort() {
  return new Promise((ok) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => ok(p)); });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, fn, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try { if ((last = await fn())) return last; } catch (e) { last = e; }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
}

const [apiPort, dashPort] = [await freePort(), await freePort()];
const api = `http://127.0.0.1:${apiPort}`;
const dash = `http://127.0.0.1:${dashPort}`;
const env = {
  ...process.env,
  DATABASE_URL: databaseUrl,
  CHRONOS_NAMESPACE: `e2e${suffix}`,
  CHRONOS_DLQ_QUEUE: `chronos-dlq-e2e${suffix}`,
  CHRONOS_ADMIN_KEY: adminKey,
  CHRONOS_API_ADDR: `127.0.0.1:${apiPort}`,
  CHRONOS_DASHBOARD_ADDR: `127.0.0.1:${dashPort}`,
  CHRONOS_QUEUES: 'default',
  CHRONOS_CONCURRENCY: '64',
  CHRONOS_LOG: process.env.CHRONOS_LOG || 'warn',
};

function start(cmd) {
  const c = spawn(bin, [cmd], { env, stdio: ['ignore', 'ignore', process.env.CHRONOS_TEST_LOGS ? 'inherit' : 'ignore'] });
  children.add(c);
  c.on('exit', () => children.delete(c));
  return c;
}

async function stop(c) {
  if (c.exitCode !== null) return;
  const gone = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  await Promise.race([gone, sleep(10000).then(() => c.kill('SIGKILL'))]);
  await gone;
}

async function http(method, path, body, key = adminKey) {
  const r = await fetch(`${api}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
const enqueue = (t) => http('POST', '/v1/tasks', t);
const status = async (id) => (await http('GET', `/v1/tasks/${id}`)).status;

const results = [];
async function scenario(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push([name, true]);
    console.log(`ok     ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    results.push([name, false]);
    console.log(`FAILED ${name}: ${e.stack || e}`);
  }
}

let browserCtx, userData, dashboard;
async function main() {
  execFileSync('psql', [pgAdmin, '-qc', `CREATE DATABASE ${db}`]);
  execFileSync(bin, ['migrate'], { env, stdio: 'ignore' });
  start('api');
  start('worker');
  dashboard = start('dashboard');
  await until('the API', async () => (await fetch(`${api}/healthz`)).ok);
  await until('the dashboard', async () => (await fetch(`${dash}/healthz`)).ok);
  mkdirSync(shots, { recursive: true });

  userData = mkdtempSync(join(tmpdir(), 'chronos-e2e-chromium-'));
  browserCtx = await chromium.launchPersistentContext(userData, {
    executablePath: process.env.CHRONOS_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    viewport: { width: 1440, height: 900 },
    deviceScaleFactor: 1,
  });
  const page = browserCtx.pages()[0] || await browserCtx.newPage();
  page.on('dialog', (d) => d.accept());
  page.setDefaultTimeout(20000);
  const live = () => page.waitForSelector('#live[data-state=on]', { timeout: 20000 });
  // A value that survives only while the page is not reloaded.
  const mark = () => page.evaluate(() => { window.__notReloaded = true; });
  const stillSamePage = async () => {
    if (!(await page.evaluate(() => window.__notReloaded === true))) throw new Error('the page was reloaded');
  };
  const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

  // Data for the pages: a schedule, a few dead tasks in two error groups.
  await http('POST', '/v1/schedules', {
    name: 'nightly-report', cron: '30 2 * * *', timezone: 'Europe/Berlin', task: { name: 'noop', payload: { report: 'daily' } },
  });
  await http('POST', '/v1/schedules', { name: 'heartbeat', cron: '*/10 * * * * *', task: { name: 'noop' } });
  await http('POST', '/v1/schedules', { name: 'weekday-digest', cron: '0 9 * * MON-FRI', timezone: 'America/New_York', task: { name: 'noop' }, overlap: 'skip' });
  for (let i = 0; i < 3; i++) {
    await enqueue({ name: 'fail', payload: { times: 9, message: 'smtp: 421 4.7.0 try again later' }, max_attempts: 1 });
  }

  await scenario('signing in with an API key', async () => {
    await page.goto(`${dash}/tasks`);
    if (!page.url().includes('/login')) throw new Error(`not sent to /login: ${page.url()}`);
    await shot('login');
    await page.fill('input[name=key]', 'chk_wrong');
    await page.click('button[type=submit]');
    await page.waitForSelector('.flash.err');
    await page.fill('input[name=key]', adminKey);
    await page.click('button[type=submit]');
    await page.waitForURL(`${dash}/tasks`);
    await live();
  });

  await scenario('a task enqueued through the API appears and turns completed without a reload', async () => {
    await page.goto(`${dash}/tasks`);
    await live();
    await mark();
    const t = await enqueue({ name: 'sleep', payload: { ms: 1200 } });
    await page.waitForSelector(`tr[data-task="${t.id}"]`);
    await page.waitForSelector(`tr[data-task="${t.id}"] .badge.s-completed`);
    await stillSamePage();
  });

  await scenario('the overview counters follow a burst of 200 tasks live', async () => {
    await page.goto(`${dash}/`);
    await live();
    await mark();
    const read = async () => Number((await page.textContent('.stat [data-total=completed]')).replace(/,/g, ''));
    const before = await read();
    await http('POST', '/v1/tasks/batch', { tasks: Array.from({ length: 200 }, (_, i) => ({ name: 'noop', payload: { i } })) });
    await until('completed to grow by 200', async () => (await read()) >= before + 200, 30000);
    await stillSamePage();
    await sleep(1500);
    await shot('overview');
  });

  let deadId;
  await scenario('search finds a dead task by a word of its error, and its page shows the stack trace', async () => {
    deadId = (await enqueue({ name: 'fail', payload: { times: 3, message: 'upstream quokka gateway timed out' }, max_attempts: 1 })).id;
    await until('the task to die', async () => (await status(deadId)) === 'dead');
    await page.goto(`${dash}/tasks?q=quokka`);
    await page.waitForSelector(`tr[data-task="${deadId}"]`);
    if ((await page.$$('tbody tr[data-task]')).length !== 1) throw new Error('the search found other tasks too');
    await shot('tasks-search');
    await page.click(`tr[data-task="${deadId}"] td.name a`);
    await page.waitForURL(`${dash}/tasks/${deadId}`);
    await page.waitForSelector('details.trace pre');
    const trace = await page.textContent('details.trace pre');
    if (!trace.includes('diag::Fail::handle')) throw new Error(`no stack trace: ${trace}`);
    await shot('task-dead');
  });

  await scenario('Retry now on a dead fail {times: 1} task turns it completed', async () => {
    const t = await enqueue({ name: 'fail', payload: { times: 1, message: 'flaky downstream' }, max_attempts: 1 });
    await until('the task to die', async () => (await status(t.id)) === 'dead');
    await page.goto(`${dash}/tasks/${t.id}`);
    await live();
    await page.click('button[data-action=retry]');
    await page.waitForSelector('.flash.ok');
    try { await page.waitForSelector('.pagehead .badge.s-completed'); } catch (e) {
      throw new Error(`page says ${await page.textContent('.pagehead .badge')}, API says ${await status(t.id)}, live ${await page.getAttribute('#live', 'data-state')}, since ${await page.getAttribute('body', 'data-since')}`);
    }
    if ((await status(t.id)) !== 'completed') throw new Error('the API does not say completed');
    await shot('task-retried');
  });

  await scenario('Cancel stops a running sleep', async () => {
    const t = await enqueue({ name: 'sleep', payload: { ms: 60000 } });
    await until('the task to run', async () => (await status(t.id)) === 'running');
    await page.goto(`${dash}/tasks/${t.id}`);
    await live();
    await page.click('button[data-action=cancel]');
    await page.waitForSelector('.flash.ok');
    await page.waitForSelector('.pagehead .badge.s-cancelled', { timeout: 20000 });
    if ((await status(t.id)) !== 'cancelled') throw new Error('the API does not say cancelled');
  });

  await scenario('an operator sets a queue\'s limits from the overview, and they apply', async () => {
    await http('PATCH', '/v1/queues/reports', { group_concurrency: 2 });
    await page.goto(`${dash}/`);
    const row = 'tr[data-queue=reports]';
    await page.waitForSelector(`${row} td.limits .chip`);
    await page.click(`${row} details.limits-edit summary`);
    await page.fill(`${row} input[name=concurrency]`, '4');
    await page.fill(`${row} input[name=rate_limit]`, '50');
    await page.fill(`${row} input[name=rate_period_ms]`, '1000');
    await sleep(200);
    await shot('overview-limits');
    await page.click(`${row} .limits-form button[type=submit]`);
    await page.waitForSelector('.flash.ok');
    const chips = await page.textContent(`${row} td.limits`);
    for (const want of ['≤ 4 running', '50 / 1 s', '≤ 2 per group']) {
      if (!chips.includes(want)) throw new Error(`the limits cell says ${chips}, not ${want}`);
    }
    const q = (await http('GET', '/v1/queues')).queues.find((x) => x.name === 'reports');
    const want = { concurrency: 4, rate: { limit: 50, period_ms: 1000 }, group_concurrency: 2, group_rate: null };
    if (JSON.stringify(q.limits) !== JSON.stringify(want)) throw new Error(`the API says ${JSON.stringify(q.limits)}`);
    // A wrong value names its field and changes nothing.
    await page.click(`${row} details.limits-edit summary`);
    await page.fill(`${row} input[name=rate_period_ms]`, '');
    await page.click(`${row} .limits-form button[type=submit]`);
    await page.waitForSelector('.flash.err');
    const err = await page.textContent('.flash.err');
    if (!err.includes('rate')) throw new Error(`the refusal says ${err}`);
    if ((await http('GET', '/v1/queues')).queues.find((x) => x.name === 'reports').limits.rate?.limit !== 50) throw new Error('a refused change changed the limits');
  });

  await scenario('a redrive from the dead-letter page runs as a job whose progress arrives live', async () => {
    // The page is open before the tasks die: their group appears on it without a reload.
    await page.goto(`${dash}/dlq`);
    await live();
    const ids = [];
    for (let i = 0; i < 3; i++) {
      ids.push((await enqueue({ name: 'fail', payload: { times: 1, message: 'e2e: partner API refused' }, max_attempts: 1 })).id);
    }
    await until('the group is dead', async () => (await Promise.all(ids.map(status))).every((s) => s === 'dead'), 20000);
    const group = 'form:has(input[name=error][value="e2e: partner API refused"])';
    await page.waitForFunction((sel) => { const f = document.querySelector(sel); return f && /Redrive 3\b/.test(f.textContent); }, group, { timeout: 20000 });
    await page.click(`${group} button`);
    await page.waitForSelector('.flash.ok');
    // The job row is on the page the redirect shows; it turns completed without a reload.
    await page.waitForSelector('.job[data-state=completed]', { timeout: 30000 });
    await until('the redriven tasks completed', async () => (await Promise.all(ids.map(status))).every((s) => s === 'completed'), 20000);
    const text = await page.textContent('.job[data-state=completed]');
    if (!text.includes('3 / 3')) throw new Error(`the job row says ${text}`);
    await page.goto(`${dash}/jobs`);
    await page.waitForSelector('.jobcard .job[data-state=completed]');
    await shot('jobs');
  });

  await scenario('the other pages render: tasks, dead letters, schedules, dark theme', async () => {
    await page.goto(`${dash}/tasks`);
    await shot('tasks');
    await page.goto(`${dash}/dlq`);
    await page.waitForSelector('#groups tbody tr');
    await shot('dlq');
    await page.goto(`${dash}/schedules`);
    await page.waitForSelector('tr[data-schedule]');
    await shot('schedules');
    await page.goto(`${dash}/`);
    await page.click('#theme');
    await page.waitForSelector('html[data-theme=dark]');
    await sleep(300);
    await shot('overview-dark');
    await page.goto(`${dash}/tasks/${deadId}`);
    await shot('task-dead-dark');
    await page.click('#theme');
  });

  await scenario('the event stream survives a dashboard restart, with the session intact', async () => {
    await page.goto(`${dash}/tasks`);
    await live();
    await mark();
    await stop(dashboard);
    await page.waitForSelector('#live[data-state=off]');
    dashboard = start('dashboard');
    await until('the dashboard again', async () => (await fetch(`${dash}/healthz`)).ok);
    await live();
    const t = await enqueue({ name: 'noop', payload: { after: 'restart' } });
    await page.waitForSelector(`tr[data-task="${t.id}"] .badge.s-completed`);
    await stillSamePage();
    if (!page.url().endsWith('/tasks')) throw new Error(`left the page: ${page.url()}`);
  });

  await scenario('a viewer has no buttons and a forged POST is refused', async () => {
    const viewer = (await http('POST', '/v1/keys', { name: 'e2e viewer', role: 'viewer' })).secret;
    await page.goto(`${dash}/`);
    await page.click('form.logout button');
    await page.waitForURL(/\/login/);
    await page.fill('input[name=key]', viewer);
    await page.click('button[type=submit]');
    await page.waitForURL(`${dash}/`);
    for (const path of ['/', `/tasks/${deadId}`, '/dlq', '/schedules']) {
      await page.goto(`${dash}${path}`);
      const buttons = await page.$$('main form[method=post] button, button[data-action]');
      if (buttons.length) throw new Error(`${path} shows ${buttons.length} action buttons to a viewer`);
    }
    await page.goto(`${dash}/tasks/${deadId}`);
    await shot('task-viewer');
    const forged = await page.evaluate(async (id) => {
      const csrf = document.querySelector('input[name=csrf]').value;
      const r = await fetch(`/tasks/${id}/retry`, { method: 'POST', body: new URLSearchParams({ csrf }), redirect: 'manual' });
      return { status: r.status, text: await r.text() };
    }, deadId);
    if (forged.status !== 403 || !forged.text.includes('viewer role may not')) throw new Error(`forged POST: ${forged.status}`);
    if ((await status(deadId)) !== 'dead') throw new Error('the forged retry ran');
  });
}

let failedToRun = null;
try {
  await main();
} catch (e) {
  failedToRun = e;
  console.log(`FAILED set-up: ${e.stack || e}`);
} finally {
  if (browserCtx) await browserCtx.close().catch(() => {});
  if (userData) rmSync(userData, { recursive: true, force: true });
  for (const c of [...children]) await stop(c);
  try { execFileSync('psql', [pgAdmin, '-qc', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`]); } catch { /* best effort */ }
  try {
    execFileSync('sh', ['-c', `redis-cli -u "$REDIS_URL" --scan --pattern 'e2e${suffix}:*' | xargs -r redis-cli -u "$REDIS_URL" del`],
      { env: { ...process.env, REDIS_URL: process.env.REDIS_URL || 'redis://127.0.0.1:6379' }, stdio: 'ignore' });
  } catch { /* best effort */ }
}
const passed = results.filter((r) => r[1]).length;
const failed = results.length - passed + (failedToRun ? 1 : 0);
console.log(`dashboard e2e: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
