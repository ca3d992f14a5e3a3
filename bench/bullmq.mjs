// The BullMQ side of scripts/bench: the same scenarios as tests/examples/bench/, against the
// peer, on the same Redis. A benchmark, not a test: it prints figures and asserts nothing.
//
//   node bench/bullmq.mjs [--quick] [--json FILE] [--tasks N] [--concurrency 1,10,100,200]
//                         [--procs 1,2] [--only drain,pickup,...]
//   node bench/bullmq.mjs worker    (a worker process; the drain and crash scenarios fork it)
//
// scripts/bench installs the pinned bullmq (package.json and package-lock.json beside this
// file, `npm ci`) outside the clone and names that directory in BENCH_BULLMQ_DIR; without it,
// node_modules beside this file is used. Redis comes from REDIS_URL and must hold no keys at
// start. Each scenario uses a fresh key prefix and deletes its keys afterwards. Jobs are added
// with removeOnComplete, which matches Chronos (a completed task leaves Redis).
import { createRequire } from 'node:module';
import { fork } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
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
const PAYLOAD_BYTES = 200;
const DRAIN_LIMIT_MS = 120000;
const POLL_MS = 2;
const JOB_OPTS = { removeOnComplete: true };
const SCENARIOS = ['enqueue', 'drain', 'pickup', 'delayed', 'retry', 'memory', 'crash'];

const url = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  db: Number(url.pathname.slice(1) || 0),
  maxRetriesPerRequest: null,
};
const sleep = ms => new Promise(r => setTimeout(r, ms));
const wallMs = () => performance.timeOrigin + performance.now();

// ---- worker process mode: started paused, runs on 'go', exits on SIGTERM ----
if (process.argv[2] === 'worker') {
  const cfg = JSON.parse(process.env.BENCH_WORKER);
  const processor = cfg.hold ? () => sleep(600000) : async () => {};
  const worker = new Worker(QUEUE, processor, {
    connection,
    prefix: cfg.prefix,
    concurrency: cfg.concurrency,
    autorun: false,
    ...(cfg.lockMs ? { lockDuration: cfg.lockMs, stalledInterval: cfg.lockMs } : {}),
  });
  worker.on('error', e => console.error(`worker error: ${e.message}`));
  await worker.waitUntilReady();
  process.on('message', m => {
    if (m === 'go') worker.run().catch(e => console.error(`worker.run: ${e.message}`));
  });
  process.on('SIGTERM', async () => {
    await worker.close();
    process.exit(0);
  });
  process.send('ready');
} else {
  await main();
}

function parseArgs(argv) {
  const quick = argv.includes('--quick');
  const o = {
    quick,
    json: null,
    only: SCENARIOS,
    tasks: quick ? 10000 : 100000,
    concurrency: quick ? [100] : [1, 10, 100, 200],
    procs: quick ? [1] : [1, 2],
    pickupTasks: quick ? 200 : 1000,
    pickupEveryMs: 5,
    delayedTasks: quick ? 200 : 2000,
    retryTasks: quick ? 5 : 10,
    memoryTasks: quick ? 10000 : 100000,
    crashLeaseMs: 5000,
  };
  const list = (v, what) => {
    const l = String(v).split(',').map(Number);
    if (!l.length || l.some(x => !(x >= 1))) throw new Error(`${what}: give numbers of at least 1`);
    return l;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') continue;
    else if (a === '--json') o.json = argv[++i];
    else if (a === '--tasks') o.tasks = Number(argv[++i]);
    else if (a === '--concurrency') o.concurrency = list(argv[++i], a);
    else if (a === '--procs') o.procs = list(argv[++i], a);
    else if (a === '--only') o.only = argv[++i].split(',').filter(s => SCENARIOS.includes(s));
    else throw new Error(`unknown argument ${JSON.stringify(a)}`);
  }
  if (!(o.tasks >= BATCH)) throw new Error(`--tasks must be at least ${BATCH}`);
  return o;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const admin = new Redis(connection);
  const metrics = [];
  const notes = [];
  const fmt = v =>
    v == null || Number.isNaN(v) ? 'n/a' : Math.abs(v) >= 1000 ? v.toFixed(0) : Math.abs(v) >= 100 ? v.toFixed(1) : Math.abs(v) >= 1 || v === 0 ? v.toFixed(2) : v.toFixed(3);
  const add = (key, label, value, unit) => {
    console.error(`  ${label.padEnd(60)} ${fmt(value)} ${unit}`);
    metrics.push({ key, label, value: Number.isFinite(value) ? value : null, unit });
  };
  const note = n => {
    console.error(`  note: ${n}`);
    notes.push(n);
  };
  const pct = (sorted, q) => (sorted.length ? sorted[Math.min(Math.max(Math.ceil(q * sorted.length), 1), sorted.length) - 1] : NaN);
  const distribution = (key, label, values) => {
    values.sort((a, b) => a - b);
    add(`${key}_p50_ms`, `${label} p50`, pct(values, 0.5), 'ms');
    add(`${key}_p99_ms`, `${label} p99`, pct(values, 0.99), 'ms');
    add(`${key}_max_ms`, `${label} max`, values.length ? values[values.length - 1] : NaN, 'ms');
  };

  // Refuse a Redis holding data this bench did not create.
  const keys = await admin.dbsize();
  if (keys > 0) {
    admin.disconnect();
    throw new Error(`the Redis at ${url.href} holds ${keys} keys this bench did not create; refusing to run`);
  }

  const freshPrefix = () => `bbq${Math.random().toString(16).slice(2, 10)}`;
  const dropPrefix = async prefix => {
    let cursor = '0';
    do {
      const [next, found] = await admin.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (found.length) await admin.unlink(...found);
    } while (cursor !== '0');
  };

  // ---- costs: Redis counters, process CPU (/proc), machine CPU ----
  const procStat = pid => {
    try {
      const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(') ') + 2).split(' ');
      return (Number(f[11]) + Number(f[12])) / 100;
    } catch {
      return 0;
    }
  };
  const rss = pid => {
    try {
      const s = readFileSync(`/proc/${pid}/status`, 'utf8');
      const kb = name => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(s)[1]);
      return { now: kb('VmRSS') * 1024, peak: kb('VmHWM') * 1024 };
    } catch {
      return { now: NaN, peak: NaN };
    }
  };
  const machineBusy = () => {
    const v = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
    return (v.reduce((a, b) => a + b, 0) - v[3] - v[4]) / 100;
  };
  async function probe(pids) {
    const stats = await admin.info('commandstats');
    const cpu = await admin.info('cpu');
    const u = process.cpuUsage();
    const p = { calls: 0, scripts: 0, redisCpuS: 0, procsCpuS: pids.reduce((a, pid) => a + procStat(pid), 0), selfCpuS: (u.user + u.system) / 1e6, busyS: machineBusy() };
    for (const line of stats.split('\n')) {
      const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
      if (!m) continue;
      p.calls += Number(m[2]);
      if (['evalsha', 'eval', 'evalsha_ro', 'eval_ro', 'fcall', 'fcall_ro'].includes(m[1])) p.scripts += Number(m[2]);
    }
    for (const line of cpu.split('\n')) {
      const [k, v] = line.trim().split(':');
      if (k === 'used_cpu_sys' || k === 'used_cpu_user') p.redisCpuS += Number(v);
    }
    return p;
  }
  function reportCost(b, a, key, label, n, who, procsCpuS, secs) {
    add(`${key}_redis_calls_per_task`, `${label}: Redis commands / task`, (a.calls - b.calls) / n, 'calls');
    add(`${key}_scripts_per_task`, `${label}: script calls / task`, (a.scripts - b.scripts) / n, 'calls');
    add(`${key}_redis_cpu_us_per_task`, `${label}: Redis CPU / task`, ((a.redisCpuS - b.redisCpuS) * 1e6) / n, 'µs');
    add(`${key}_${who}_cpu_us_per_task`, `${label}: ${who} CPU / task`, (procsCpuS * 1e6) / n, 'µs');
    if (secs > 0) add(`${key}_busy_cores`, `${label}: machine busy (cores)`, (a.busyS - b.busyS) / secs, 'cores');
  }

  const noopJobs = n => Array.from({ length: n }, () => ({ name: 'noop', data: {}, opts: JOB_OPTS }));
  const total = Math.floor(opts.tasks / BATCH) * BATCH;

  // Worker processes, started with autorun off; `go` starts them all at once.
  async function startWorkers(prefix, procs, cfg) {
    const children = [];
    for (let i = 0; i < procs; i++) {
      const child = fork(fileURLToPath(import.meta.url), ['worker'], {
        env: { ...process.env, BENCH_WORKER: JSON.stringify({ prefix, ...cfg }) },
        stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      });
      await new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('BullMQ worker process not ready within 60 s')), 60000);
        child.once('message', () => (clearTimeout(t), resolve()));
        child.once('exit', code => reject(new Error(`BullMQ worker process exited (${code}) during start-up`)));
      });
      children.push(child);
    }
    return children;
  }
  async function stopWorkers(children) {
    for (const c of children) {
      if (c.exitCode != null || c.signalCode != null) continue;
      const gone = new Promise(r => c.once('exit', r));
      c.kill('SIGTERM');
      const timer = setTimeout(() => c.kill('SIGKILL'), 30000);
      await gone;
      clearTimeout(timer);
    }
  }

  async function benchEnqueue() {
    console.error(`enqueue: ${total} noop jobs in addBulk batches of ${BATCH}`);
    const prefix = freshPrefix();
    const q = new Queue(QUEUE, { connection, prefix });
    await q.waitUntilReady();
    await q.addBulk(noopJobs(1)); // warm-up: scripts, connection
    const before = await probe([]);
    const t = performance.now();
    for (let b = 0; b < total / BATCH; b++) await q.addBulk(noopJobs(BATCH));
    const secs = (performance.now() - t) / 1000;
    const after = await probe([]);
    add('enqueue_bulk_per_s', 'enqueue, addBulk × 1,000', total / secs, 'tasks/s');
    reportCost(before, after, 'enqueue_bulk', 'enqueue', total, 'client', after.selfCpuS - before.selfCpuS, secs);
    await q.close();
    await dropPrefix(prefix);
  }

  async function benchDrain(concurrency, procs, footprint) {
    console.error(`drain: ${total} noop jobs, ${procs} worker process(es) × concurrency ${concurrency}`);
    const prefix = freshPrefix();
    const q = new Queue(QUEUE, { connection, prefix });
    for (let b = 0; b < total / BATCH; b++) await q.addBulk(noopJobs(BATCH));
    const children = await startWorkers(prefix, procs, { concurrency });
    const pids = children.map(c => c.pid);
    if (footprint) {
      await sleep(500);
      add('worker_rss_idle_mb', 'worker RSS, idle (Node worker process)', Math.max(...pids.map(p => rss(p).now)) / 1e6, 'MB');
    }
    const before = await probe(pids);
    const t = performance.now();
    for (const c of children) c.send('go');
    const k = name => `${prefix}:${QUEUE}:${name}`;
    let left = total;
    while (performance.now() - t < DRAIN_LIMIT_MS) {
      const r = await admin.pipeline().llen(k('wait')).llen(k('active')).zcard(k('prioritized')).exec();
      left = r.reduce((a, [, v]) => a + Number(v), 0);
      if (left === 0) break;
      await sleep(POLL_MS);
    }
    const secs = (performance.now() - t) / 1000;
    const after = await probe(pids);
    const key = `drain_p${procs}_c${concurrency}`;
    const label = `drain, ${procs} proc × concurrency ${concurrency}`;
    if (left > 0) note(`${label}: ${left} of ${total} jobs left after ${DRAIN_LIMIT_MS / 1000} s`);
    add(`${key}_per_s`, `${label}: processed`, (total - left) / secs, 'tasks/s');
    reportCost(before, after, key, label, total, 'worker', after.procsCpuS - before.procsCpuS, secs);
    if (footprint) add('worker_rss_load_mb', `worker RSS, peak under load (${label})`, Math.max(...pids.map(p => rss(p).peak)) / 1e6, 'MB');
    await stopWorkers(children);
    await q.close();
    await dropPrefix(prefix);
  }

  async function recorder(prefix, starts, extra = {}, fail = () => false) {
    const worker = new Worker(
      QUEUE,
      async job => {
        const at = wallMs();
        if (!starts.has(job.id)) starts.set(job.id, []);
        starts.get(job.id).push(at);
        if (fail(job)) throw new Error('failing on purpose');
      },
      { connection, prefix, concurrency: 50, ...extra },
    );
    await worker.waitUntilReady();
    return worker;
  }
  const waitFor = async (cond, limitMs) => {
    const t = performance.now();
    while (!cond() && performance.now() - t < limitMs) await sleep(10);
  };

  async function benchPickup() {
    const n = opts.pickupTasks;
    console.error(`pickup: ${n} jobs ${opts.pickupEveryMs} ms apart`);
    const prefix = freshPrefix();
    const q = new Queue(QUEUE, { connection, prefix });
    const starts = new Map();
    const worker = await recorder(prefix, starts);
    await q.add('noop', {}, JOB_OPTS); // warm-up, then let the worker go idle
    await sleep(300);
    const sent = new Map();
    let next = performance.now();
    for (let i = 0; i < n; i++) {
      next += opts.pickupEveryMs;
      const wait = next - performance.now();
      if (wait > 0) await sleep(wait);
      const at = wallMs();
      const job = await q.add('record', {}, JOB_OPTS);
      sent.set(job.id, at);
    }
    await waitFor(() => [...sent.keys()].every(id => starts.has(id)), 10000);
    const lat = [...sent].filter(([id]) => starts.has(id)).map(([id, at]) => starts.get(id)[0] - at);
    if (lat.length < n) note(`pickup: only ${lat.length} of ${n} jobs started within 10 s`);
    distribution('pickup', 'pickup via Queue.add', lat);
    await worker.close();
    await q.close();
    await dropPrefix(prefix);
  }

  async function benchDelayed() {
    const n = opts.delayedTasks;
    console.error(`delayed: ${n} jobs due 1–5 s ahead`);
    const prefix = freshPrefix();
    const q = new Queue(QUEUE, { connection, prefix });
    const starts = new Map();
    const worker = await recorder(prefix, starts);
    await sleep(300);
    const now = Date.now();
    const dueById = new Map();
    for (let c = 0; c < n; c += BATCH) {
      const jobs = [];
      const due = [];
      for (let i = c; i < Math.min(n, c + BATCH); i++) {
        const at = now + 1000 + Math.floor((i * 4000) / Math.max(n - 1, 1));
        due.push(at);
        // An explicit timestamp makes the due time exactly timestamp + delay.
        jobs.push({ name: 'record', data: {}, opts: { ...JOB_OPTS, timestamp: now, delay: at - now } });
      }
      const added = await q.addBulk(jobs);
      added.forEach((j, i) => dueById.set(j.id, due[i]));
    }
    await waitFor(() => starts.size >= n, 15000);
    const late = [...starts].filter(([id]) => dueById.has(id)).map(([id, s]) => s[0] - dueById.get(id));
    if (late.length < n) note(`delayed: only ${late.length} of ${n} jobs started within 15 s`);
    add('delayed_early', 'delayed tasks started before due', late.filter(l => l < 0).length, 'tasks');
    distribution('delayed', 'delayed lateness', late);
    await worker.close();
    await q.close();
    await dropPrefix(prefix);
  }

  async function benchRetry() {
    const n = opts.retryTasks;
    console.error(`retry: ${n} jobs failing 3 times, exponential backoff from 100 ms`);
    const prefix = freshPrefix();
    const q = new Queue(QUEUE, { connection, prefix });
    const starts = new Map();
    const worker = await recorder(prefix, starts, {}, job => job.attemptsMade < 3);
    await sleep(300);
    await q.addBulk(Array.from({ length: n }, () => ({ name: 'flaky', data: {}, opts: { ...JOB_OPTS, attempts: 4, backoff: { type: 'exponential', delay: 100 } } })));
    await waitFor(() => [...starts.values()].reduce((a, s) => a + s.length, 0) >= n * 4, 15000);
    const gaps = [[], [], []];
    for (const s of starts.values()) for (let i = 0; i < 3 && i + 1 < s.length; i++) gaps[i].push(s[i + 1] - s[i]);
    if (gaps[2].length < n) note(`retry: only ${gaps[2].length} of ${n} jobs reached their 4th attempt within 15 s`);
    gaps.forEach((g, i) => {
      g.sort((a, b) => a - b);
      add(`retry_gap${i + 1}_ms`, `retry gap ${i + 1} (expected ${100 << i} ms), median`, pct(g, 0.5), 'ms');
    });
    await worker.close();
    await q.close();
    await dropPrefix(prefix);
  }

  async function benchMemory() {
    const n = Math.floor(opts.memoryTasks / BATCH) * BATCH;
    console.error(`memory: ${n} waiting jobs with a ${PAYLOAD_BYTES}-byte JSON payload`);
    const payload = i => {
      const v = { to: `user-${String(i).padStart(6, '0')}@example.com`, template: 'welcome', locale: 'en-GB', pad: '' };
      v.pad = 'x'.repeat(Math.max(0, PAYLOAD_BYTES - JSON.stringify(v).length));
      return v;
    };
    const prefix = freshPrefix();
    const q = new Queue(QUEUE, { connection, prefix });
    await q.waitUntilReady();
    const warm = new Queue('warmup', { connection, prefix });
    await warm.add('noop', {}, JOB_OPTS);
    await q.add('noop', {}, JOB_OPTS); // the queue's fixed keys (meta, id counter, events)
    const used = async () => Number(/used_memory:(\d+)/.exec(await admin.info('memory'))[1]);
    const before = await used();
    for (let b = 0; b < n / BATCH; b++) {
      await q.addBulk(Array.from({ length: BATCH }, (_, i) => ({ name: 'noop', data: payload(b * BATCH + i), opts: JOB_OPTS })));
    }
    const after = await used();
    add('redis_bytes_per_task', 'Redis used_memory growth / waiting job (200-byte payload)', (after - before) / n, 'B');
    await warm.close();
    await q.close();
    await dropPrefix(prefix);
  }

  async function benchCrash() {
    const n = 10;
    const lockMs = opts.crashLeaseMs;
    console.error(`crash: a worker holding ${n} jobs is SIGKILLed; lockDuration = stalledInterval = ${lockMs} ms`);
    const prefix = freshPrefix();
    const q = new Queue(QUEUE, { connection, prefix });
    const [victim] = await startWorkers(prefix, 1, { concurrency: n, hold: true, lockMs });
    victim.send('go');
    const added = await q.addBulk(Array.from({ length: n }, () => ({ name: 'hold', data: {}, opts: JOB_OPTS })));
    const ids = new Set(added.map(j => j.id));
    const t = performance.now();
    while ((await admin.llen(`${prefix}:${QUEUE}:active`)) < n && performance.now() - t < 20000) await sleep(10);
    const starts = new Map();
    const survivor = await recorder(prefix, starts, { lockDuration: lockMs, stalledInterval: lockMs });
    await sleep(300);
    const exited = new Promise(r => victim.once('exit', r));
    const killed = wallMs();
    victim.kill('SIGKILL');
    await exited;
    await waitFor(() => [...ids].every(id => starts.has(id)), lockMs * 4 + 10000);
    const lat = [...ids].filter(id => starts.has(id)).map(id => starts.get(id)[0] - killed);
    if (lat.length < n) note(`crash: only ${lat.length} of ${n} jobs were re-delivered`);
    distribution('crash_redelivery', 'SIGKILL → re-delivery', lat);
    await survivor.close();
    await q.close();
    await dropPrefix(prefix);
  }

  const started = performance.now();
  const on = s => opts.only.includes(s);
  try {
    if (on('enqueue')) await benchEnqueue();
    if (on('drain')) {
      const fc = opts.concurrency.includes(100) ? 100 : Math.max(...opts.concurrency);
      for (const p of opts.procs) for (const c of opts.concurrency) await benchDrain(c, p, p === opts.procs[0] && c === fc);
    }
    if (on('pickup')) await benchPickup();
    if (on('delayed')) await benchDelayed();
    if (on('retry')) await benchRetry();
    if (on('memory')) await benchMemory();
    if (on('crash')) await benchCrash();
  } finally {
    admin.disconnect();
  }
  const seconds = (performance.now() - started) / 1000;
  console.error(`(BullMQ side took ${seconds.toFixed(0)} s)`);
  if (opts.json) {
    const params = { quick: opts.quick, tasks: opts.tasks, batch: BATCH, concurrency: opts.concurrency, procs: opts.procs, pickup_tasks: opts.pickupTasks, delayed_tasks: opts.delayedTasks, memory_tasks: opts.memoryTasks, crash_lease_ms: opts.crashLeaseMs };
    writeFileSync(opts.json, JSON.stringify({ system: 'bullmq', version: bullmqVersion, node: process.version, params, seconds, metrics, notes }, null, 2));
  }
}
