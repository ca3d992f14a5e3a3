// The BullMQ side of scripts/bench: the same scenarios as tests/examples/bench.rs, against the
// peer, on the same Redis. A benchmark, not a test: it prints figures and asserts nothing.
//
//   node bench.mjs [--json FILE] [--tasks N] [--concurrency 1,10,100,200]
//
// scripts/bench installs the pinned bullmq (package.json beside this file) outside the clone and
// names that directory in BENCH_BULLMQ_DIR; without it, node_modules beside this file is used.
// Redis comes from REDIS_URL. Each scenario uses a fresh key prefix and deletes its keys
// afterwards. Jobs are added with removeOnComplete, the setting that matches Chronos (a
// completed task leaves Redis).
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// Resolve the packages from the install directory (ES modules ignore NODE_PATH).
const installDir = process.env.BENCH_BULLMQ_DIR || path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(installDir, 'package.json'));
const { Queue, Worker } = require('bullmq');
const { Redis } = require('ioredis');
const bullmqVersion = require('bullmq/package.json').version;

const QUEUE = 'bench';
const BATCH = 1000;
const DELAYED_TASKS = 200;
const PICKUP_TASKS = 200;
const PICKUP_EVERY_MS = 10;
const MEMORY_TASKS = 10000;
const PAYLOAD_BYTES = 200;
const DRAIN_LIMIT_MS = 120000;
const JOB_OPTS = { removeOnComplete: true };

function parseArgs(argv) {
  const o = { json: null, tasks: 20000, concurrency: [1, 10, 100, 200] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') o.json = argv[++i];
    else if (a === '--tasks') o.tasks = Number(argv[++i]);
    else if (a === '--concurrency') o.concurrency = argv[++i].split(',').map(Number);
    else throw new Error(`unknown argument ${JSON.stringify(a)}`);
  }
  if (!(o.tasks >= BATCH) || o.concurrency.some(c => !(c >= 1))) {
    throw new Error(`--tasks must be at least ${BATCH} and every concurrency at least 1`);
  }
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const url = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  db: Number(url.pathname.slice(1) || 0),
  maxRetriesPerRequest: null,
};
const admin = new Redis(connection);

const metrics = [];
const notes = [];
const sleep = ms => new Promise(r => setTimeout(r, ms));
const wallMs = () => performance.timeOrigin + performance.now();
const fmt = v =>
  v == null || Number.isNaN(v) ? 'n/a' : Math.abs(v) >= 1000 ? v.toFixed(0) : Math.abs(v) >= 100 ? v.toFixed(1) : Math.abs(v) >= 1 || v === 0 ? v.toFixed(2) : v.toFixed(3);

function add(key, label, value, unit, better) {
  console.error(`  ${label.padEnd(52)} ${fmt(value)} ${unit}`);
  metrics.push({ key, label, value: Number.isFinite(value) ? value : null, unit, better });
}
function note(n) {
  console.error(`  note: ${n}`);
  notes.push(n);
}

function pct(sorted, q) {
  if (!sorted.length) return NaN;
  const rank = Math.min(Math.max(Math.ceil(q * sorted.length), 1), sorted.length);
  return sorted[rank - 1];
}

// Same recipe as the Chronos side: exactly PAYLOAD_BYTES of serialized JSON.
function payload200(i) {
  const v = { to: `user-${String(i).padStart(6, '0')}@example.com`, template: 'welcome', locale: 'en-GB', pad: '' };
  v.pad = 'x'.repeat(Math.max(0, PAYLOAD_BYTES - JSON.stringify(v).length));
  return v;
}

function freshPrefix() {
  return `bench-bullmq-${Math.random().toString(16).slice(2, 14)}`;
}

async function dropPrefix(prefix) {
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await admin.unlink(...keys);
  } while (cursor !== '0');
}

// Server-wide Redis counters and this process's CPU time, to turn into per-task costs.
async function probe() {
  const stats = await admin.info('commandstats');
  const cpu = await admin.info('cpu');
  const p = { calls: 0, scripts: 0, redisCpuS: 0, clientCpuS: 0 };
  const u = process.cpuUsage();
  p.clientCpuS = (u.user + u.system) / 1e6;
  for (const line of stats.split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (!m) continue;
    const calls = Number(m[2]);
    p.calls += calls;
    if (['evalsha', 'eval', 'evalsha_ro', 'eval_ro', 'fcall', 'fcall_ro'].includes(m[1])) p.scripts += calls;
  }
  for (const line of cpu.split('\n')) {
    const [k, v] = line.trim().split(':');
    if (k === 'used_cpu_sys' || k === 'used_cpu_user') p.redisCpuS += Number(v);
  }
  return p;
}

function reportCost(before, after, key, label, n) {
  add(`${key}_redis_calls_per_task`, `${label}: Redis commands / task`, (after.calls - before.calls) / n, 'calls', 'lower');
  add(`${key}_scripts_per_task`, `${label}: script calls / task`, (after.scripts - before.scripts) / n, 'calls', 'lower');
  add(`${key}_redis_cpu_us_per_task`, `${label}: Redis CPU / task`, ((after.redisCpuS - before.redisCpuS) * 1e6) / n, 'µs', 'lower');
  add(`${key}_client_cpu_us_per_task`, `${label}: client CPU / task`, ((after.clientCpuS - before.clientCpuS) * 1e6) / n, 'µs', 'lower');
}

const noopJobs = n => Array.from({ length: n }, () => ({ name: 'noop', data: {}, opts: JOB_OPTS }));

async function benchEnqueue() {
  console.error(`enqueue: ${opts.tasks} noop jobs in addBulk batches of ${BATCH}`);
  const prefix = freshPrefix();
  const q = new Queue(QUEUE, { connection, prefix });
  await q.waitUntilReady();
  await q.addBulk(noopJobs(1)); // warm-up: scripts, connection
  const n = Math.floor(opts.tasks / BATCH) * BATCH;
  const before = await probe();
  const t = performance.now();
  for (let b = 0; b < n / BATCH; b++) await q.addBulk(noopJobs(BATCH));
  const secs = (performance.now() - t) / 1000;
  const after = await probe();
  add('enqueue_bulk_per_s', 'enqueue, addBulk × 1,000', n / secs, 'tasks/s', 'higher');
  reportCost(before, after, 'enqueue', 'enqueue', n);
  await q.close();
  await dropPrefix(prefix);
}

async function benchDrain(concurrency) {
  console.error(`drain: ${opts.tasks} noop jobs, concurrency ${concurrency}`);
  const prefix = freshPrefix();
  const q = new Queue(QUEUE, { connection, prefix });
  const n = Math.floor(opts.tasks / BATCH) * BATCH;
  for (let b = 0; b < n / BATCH; b++) await q.addBulk(noopJobs(BATCH));
  const before = await probe();
  const t = performance.now();
  let completed = 0;
  const worker = new Worker(QUEUE, async () => {}, { connection, prefix, concurrency });
  worker.on('completed', () => completed++);
  worker.on('error', e => note(`worker error: ${e.message}`));
  // Watch the worker's own events first (no Redis traffic), then confirm with the queue counts.
  while (completed < n && performance.now() - t < DRAIN_LIMIT_MS) await sleep(1);
  const left = async () => {
    const c = await q.getJobCounts('wait', 'active', 'delayed', 'prioritized', 'paused');
    return Object.values(c).reduce((a, b) => a + b, 0);
  };
  let remaining = await left();
  while (remaining > 0 && performance.now() - t < DRAIN_LIMIT_MS) {
    await sleep(1);
    remaining = await left();
  }
  const secs = (performance.now() - t) / 1000;
  const after = await probe();
  const label = `drain, concurrency ${concurrency}`;
  if (remaining > 0) note(`${label}: ${remaining} of ${n} jobs left after ${DRAIN_LIMIT_MS / 1000} s`);
  add(`drain_c${concurrency}_per_s`, label, (n - remaining) / secs, 'tasks/s', 'higher');
  reportCost(before, after, `drain_c${concurrency}`, label, n);
  await worker.close();
  await q.close();
  await dropPrefix(prefix);
}

async function startRecorder(prefix, starts) {
  const worker = new Worker(
    QUEUE,
    async job => {
      starts.set(job.id, wallMs());
    },
    { connection, prefix, concurrency: 50 },
  );
  await worker.waitUntilReady();
  return worker;
}

async function benchDelayed() {
  console.error(`delayed: ${DELAYED_TASKS} jobs due 1–5 s ahead`);
  const prefix = freshPrefix();
  const q = new Queue(QUEUE, { connection, prefix });
  const starts = new Map();
  const worker = await startRecorder(prefix, starts);
  await sleep(300);
  const now = Date.now();
  const due = [];
  const jobs = [];
  for (let i = 0; i < DELAYED_TASKS; i++) {
    const at = now + 1000 + Math.floor((i * 4000) / (DELAYED_TASKS - 1));
    due.push(at);
    // An explicit timestamp makes the due time exactly timestamp + delay.
    jobs.push({ name: 'record', data: {}, opts: { ...JOB_OPTS, timestamp: now, delay: at - now } });
  }
  const added = await q.addBulk(jobs);
  const dueById = new Map(added.map((j, i) => [j.id, due[i]]));
  const t = performance.now();
  while (starts.size < DELAYED_TASKS && performance.now() - t < 15000) await sleep(20);
  const late = [...starts].filter(([id]) => dueById.has(id)).map(([id, s]) => s - dueById.get(id));
  late.sort((a, b) => a - b);
  if (late.length < DELAYED_TASKS) note(`delayed: only ${late.length} of ${DELAYED_TASKS} jobs started within 15 s`);
  add('delayed_p50_ms', 'delayed lateness p50', pct(late, 0.5), 'ms', 'lower');
  add('delayed_p99_ms', 'delayed lateness p99', pct(late, 0.99), 'ms', 'lower');
  add('delayed_max_ms', 'delayed lateness max', late.length ? late[late.length - 1] : NaN, 'ms', 'lower');
  add('delayed_early', 'delayed tasks started before due', late.filter(l => l < 0).length, 'tasks', 'lower');
  await worker.close();
  await q.close();
  await dropPrefix(prefix);
}

async function benchPickup() {
  console.error(`pickup: ${PICKUP_TASKS} jobs ${PICKUP_EVERY_MS} ms apart`);
  const prefix = freshPrefix();
  const q = new Queue(QUEUE, { connection, prefix });
  const starts = new Map();
  const worker = await startRecorder(prefix, starts);
  await q.add('noop', {}, JOB_OPTS); // warm-up, then let the worker go idle
  await sleep(300);
  const sent = new Map();
  let next = performance.now();
  for (let i = 0; i < PICKUP_TASKS; i++) {
    next += PICKUP_EVERY_MS;
    const wait = next - performance.now();
    if (wait > 0) await sleep(wait);
    const at = wallMs();
    const job = await q.add('record', {}, JOB_OPTS);
    sent.set(job.id, at);
  }
  const t = performance.now();
  while ([...sent.keys()].filter(id => starts.has(id)).length < PICKUP_TASKS && performance.now() - t < 10000) await sleep(10);
  const lat = [...sent].filter(([id]) => starts.has(id)).map(([id, at]) => starts.get(id) - at);
  lat.sort((a, b) => a - b);
  if (lat.length < PICKUP_TASKS) note(`pickup: only ${lat.length} of ${PICKUP_TASKS} jobs started within 10 s`);
  add('pickup_p50_ms', 'pickup p50', pct(lat, 0.5), 'ms', 'lower');
  add('pickup_p99_ms', 'pickup p99', pct(lat, 0.99), 'ms', 'lower');
  add('pickup_max_ms', 'pickup max', lat.length ? lat[lat.length - 1] : NaN, 'ms', 'lower');
  await worker.close();
  await q.close();
  await dropPrefix(prefix);
}

async function usedMemory() {
  const m = /used_memory:(\d+)/.exec(await admin.info('memory'));
  return Number(m[1]);
}

async function benchMemory() {
  console.error(`memory: ${MEMORY_TASKS} waiting jobs with a ${PAYLOAD_BYTES}-byte JSON payload`);
  const prefix = freshPrefix();
  const q = new Queue(QUEUE, { connection, prefix });
  await q.waitUntilReady();
  const warm = new Queue('warmup', { connection, prefix });
  await warm.add('noop', {}, JOB_OPTS);
  const before = await usedMemory();
  for (let b = 0; b < MEMORY_TASKS / BATCH; b++) {
    await q.addBulk(Array.from({ length: BATCH }, (_, i) => ({ name: 'noop', data: payload200(b * BATCH + i), opts: JOB_OPTS })));
  }
  const after = await usedMemory();
  add('memory_used_bytes_per_task', 'Redis used_memory growth / waiting task', (after - before) / MEMORY_TASKS, 'B', 'lower');
  // The queue's keys alone (job hashes, wait list, events stream, ...).
  let total = 0;
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}:${QUEUE}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) {
      const pipe = admin.pipeline();
      for (const k of keys) pipe.call('MEMORY', 'USAGE', k, 'SAMPLES', '0');
      for (const [err, size] of await pipe.exec()) if (!err && size != null) total += Number(size);
    }
  } while (cursor !== '0');
  add('memory_keys_bytes_per_task', "the queue's keys (MEMORY USAGE) / waiting task", total / MEMORY_TASKS, 'B', 'lower');
  await warm.close();
  await q.close();
  await dropPrefix(prefix);
}

const started = performance.now();
try {
  await benchEnqueue();
  for (const c of opts.concurrency) await benchDrain(c);
  await benchDelayed();
  await benchPickup();
  await benchMemory();
} finally {
  admin.disconnect();
}

console.log(`\nBullMQ ${bullmqVersion} (jobs with removeOnComplete)`);
console.log(`${'figure'.padEnd(62)} ${'value'.padStart(12)}  unit`);
console.log('-'.repeat(84));
for (const m of metrics) console.log(`${m.label.padEnd(62)} ${fmt(m.value).padStart(12)}  ${m.unit}`);
for (const n of notes) console.log(`note: ${n}`);
console.log(`(BullMQ side took ${((performance.now() - started) / 1000).toFixed(0)} s)`);

if (opts.json) {
  const doc = { system: 'bullmq', version: bullmqVersion, tasks: opts.tasks, batch: BATCH, concurrency: opts.concurrency, metrics, notes };
  writeFileSync(opts.json, JSON.stringify(doc, null, 2));
}
