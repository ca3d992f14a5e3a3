// Side by side: the runs of tests/examples/bench (Chronos) and bench/bullmq.mjs (BullMQ) from
// one scripts/bench invocation → medians of the runs with min–max, ratios Chronos / BullMQ, the
// targets we hold ourselves to, as a markdown table (stdout and --md FILE) and JSON (--out FILE).
//
//   node bench/report.mjs --meta META.json [--out results.json] [--md results.md] RUN.json...
//
// RUN files say which side they are ("system": "chronos" | "bullmq"). No dependencies.
import { readFileSync, writeFileSync } from 'node:fs';

const args = process.argv.slice(2);
let metaFile = null;
let out = null;
let md = null;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--meta') metaFile = args[++i];
  else if (args[i] === '--out') out = args[++i];
  else if (args[i] === '--md') md = args[++i];
  else files.push(args[i]);
}
const meta = metaFile ? JSON.parse(readFileSync(metaFile, 'utf8')) : {};
const runs = files.map(f => JSON.parse(readFileSync(f, 'utf8')));
const sides = { chronos: runs.filter(r => r.system === 'chronos'), bullmq: runs.filter(r => r.system === 'bullmq') };

function stats(side, key) {
  if (!key) return null;
  const values = sides[side].map(r => r.metrics.find(m => m.key === key)).filter(m => m && m.value != null).map(m => m.value);
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  // The median of the runs (the lower middle one for an even count, as a nearest-rank p50).
  return { median: s[Math.ceil(s.length / 2) - 1], min: s[0], max: s[s.length - 1], values };
}

const params = (sides.chronos[0] || sides.bullmq[0] || { params: {} }).params;
const conc = params.concurrency || [];
const procs = params.procs || [];
const n = v => v.toLocaleString('en-US');

// [section, label, unit, better, chronos key, bullmq key]
const rows = [];
const row = (section, label, unit, better, ck, bk) => rows.push({ section, label, unit, better, ck, bk });
const T = 'Throughput (tasks/s)';
row(T, 'enqueue, batches of 1,000: Rust client `enqueue_batch` (Postgres + Redis) / `addBulk`', '/s', 'higher', 'enqueue_client_per_s', 'enqueue_bulk_per_s');
row(T, 'enqueue, batches of 1,000: HTTP `POST /v1/tasks/batch` / `addBulk`', '/s', 'higher', 'enqueue_api_per_s', 'enqueue_bulk_per_s');
row(T, 'enqueue, batches of 1,000: `Engine::enqueue` (Redis only) / `addBulk`', '/s', 'higher', 'enqueue_redis_per_s', 'enqueue_bulk_per_s');
for (const p of procs) {
  for (const c of conc) row(T, `drain, ${p} worker process${p > 1 ? 'es' : ''} × concurrency ${c}: processed`, '/s', 'higher', `drain_p${p}_c${c}_per_s`, `drain_p${p}_c${c}_per_s`);
  for (const c of conc) row(T, `drain, ${p} worker process${p > 1 ? 'es' : ''} × concurrency ${c}: audited (completed in Postgres)`, '/s', 'higher', `drain_p${p}_c${c}_audited_per_s`, null);
}
const O = `Observability cost (Chronos only; drain, 1 process × concurrency ${conc.includes(100) ? 100 : Math.max(...conc)})`;
{
  const oc = conc.includes(100) ? 100 : Math.max(...conc);
  for (const [tag, what] of [['off', 'metrics and traces off (the default)'], ['metrics', 'metrics on (`CHRONOS_METRICS_ADDR`)'], ['traces', 'metrics and traces on (OTLP/HTTP)']]) {
    row(O, `${what}: processed`, '/s', 'higher', `observability_${tag}_c${oc}_per_s`, null);
    row(O, `${what}: worker process CPU / task`, 'µs', 'lower', `observability_${tag}_c${oc}_worker_cpu_us_per_task`, null);
  }
}
const L = 'Latency';
for (const q of ['p50', 'p99', 'max']) row(L, `pickup, enqueue in Redis → handler start, ${q}`, 'ms', 'lower', `pickup_${q}_ms`, `pickup_${q}_ms`);
for (const q of ['p50', 'p99', 'max']) row(L, `pickup, \`Chronos::enqueue\` (Postgres + Redis) → handler start, ${q} (BullMQ: \`add\`)`, 'ms', 'lower', `pickup_client_${q}_ms`, `pickup_${q}_ms`);
for (const q of ['p50', 'p99', 'max']) row(L, `delayed lateness (start − due), ${q}`, 'ms', 'lower', `delayed_${q}_ms`, `delayed_${q}_ms`);
row(L, 'delayed tasks started early', 'tasks', 'lower', 'delayed_early', 'delayed_early');
for (const i of [1, 2, 3]) row(L, `retry gap ${i} (policy: ${100 << (i - 1)} ms), median`, 'ms', 'info', `retry_gap${i}_ms`, `retry_gap${i}_ms`);
for (const q of ['p50', 'max']) row(L, `SIGKILL → re-delivery, ${q} (lease / lock ${params.crash_lease_ms ?? 5000} ms)`, 'ms', 'lower', `crash_redelivery_${q}_ms`, `crash_redelivery_${q}_ms`);
const F = 'Footprint';
row(F, 'worker RSS, idle', 'MB', 'lower', 'worker_rss_idle_mb', 'worker_rss_idle_mb');
row(F, 'worker RSS, peak under load (1 process × concurrency 100)', 'MB', 'lower', 'worker_rss_load_mb', 'worker_rss_load_mb');
row(F, 'Redis memory per waiting task (200-byte payload)', 'B', 'lower', 'redis_bytes_per_task', 'redis_bytes_per_task');
const A = `API: \`POST /v1/tasks\`, ${64} connections (wrk)`;
row(A, 'requests/s (2xx)', '/s', 'higher', 'api_rps', null);
row(A, 'latency p50', 'ms', 'lower', 'api_p50_ms', null);
row(A, 'latency p99', 'ms', 'lower', 'api_p99_ms', null);
row(A, 'latency max', 'ms', 'lower', 'api_max_ms', null);
row(A, '2xx responses', 'count', 'info', 'api_2xx', null);
row(A, 'task rows in Postgres afterwards', 'count', 'info', 'api_rows', null);
row(A, 'non-2xx responses + socket errors', 'count', 'lower', 'api_non2xx', null);
const C = 'Cost per task (what bounds throughput here)';
const fc = conc.includes(100) ? 100 : Math.max(...conc);
const dk = `drain_p${procs[0] ?? 1}_c${fc}`;
row(C, `drain ${procs[0] ?? 1} × ${fc}: Redis commands / task`, 'calls', 'lower', `${dk}_redis_calls_per_task`, `${dk}_redis_calls_per_task`);
row(C, `drain ${procs[0] ?? 1} × ${fc}: script calls / task`, 'calls', 'lower', `${dk}_scripts_per_task`, `${dk}_scripts_per_task`);
row(C, `drain ${procs[0] ?? 1} × ${fc}: Redis CPU / task`, 'µs', 'lower', `${dk}_redis_cpu_us_per_task`, `${dk}_redis_cpu_us_per_task`);
row(C, `drain ${procs[0] ?? 1} × ${fc}: worker process CPU / task`, 'µs', 'lower', `${dk}_worker_cpu_us_per_task`, `${dk}_worker_cpu_us_per_task`);
row(C, `drain ${procs[0] ?? 1} × ${fc}: Postgres CPU / task (audit writer's writes)`, 'µs', 'lower', `${dk}_pg_cpu_us_per_task`, null);
row(C, `drain ${procs[0] ?? 1} × ${fc}: machine busy, of ${meta.cores ?? 2} cores`, 'cores', 'info', `${dk}_busy_cores`, `${dk}_busy_cores`);
row(C, 'enqueue (client / addBulk): Redis CPU / task', 'µs', 'lower', 'enqueue_client_redis_cpu_us_per_task', 'enqueue_bulk_redis_cpu_us_per_task');
row(C, 'enqueue (client / addBulk): Postgres CPU / task', 'µs', 'lower', 'enqueue_client_pg_cpu_us_per_task', null);
row(C, 'API: API process CPU / request', 'µs', 'lower', 'api_cpu_api_us_per_req', null);
row(C, 'API: Redis CPU / request', 'µs', 'lower', 'api_cpu_redis_us_per_req', null);
row(C, 'API: Postgres CPU / request', 'µs', 'lower', 'api_cpu_pg_us_per_req', null);
row(C, 'API: other CPU (wrk, kernel) / request', 'µs', 'lower', 'api_cpu_rest_us_per_req', null);

// The cost curve (`--only curve`, Chronos only): one table per shape, one row per figure and size.
{
  const sizesOf = prefix => [...new Set(sides.chronos.flatMap(r => r.metrics.map(m => m.key)).filter(k => k.startsWith(prefix) && k.endsWith('_per_s')).map(k => Number(k.slice(prefix.length).split('_')[0])))].sort((a, b) => a - b);
  const figures = [['per_s', 'drain (1 process × 100, audited)', '/s', 'higher'], ['claim_us', 'claim round trip, median', 'µs', 'lower'], ['redis_cpu_us_per_task', 'Redis CPU / task', 'µs', 'lower'], ['redis_mb', 'Redis memory before the drain', 'MB', 'lower'], ['pg_rows', 'task rows in Postgres', 'rows', 'info'], ['pg_mb', 'Postgres database size', 'MB', 'lower']];
  for (const [shape, title, what] of [['backlog', 'Cost curve: tasks waiting (10,000 drained from the head)', w => `${n(w)} waiting`], ['queues', 'Cost curve: queues served by one `*` worker (10,000 tasks dealt over them)', q => `${n(q)} queue${q > 1 ? 's' : ''}`], ['delayed', 'Cost curve: tasks due in an hour beside 10,000 ready', d => `${n(d)} in the future`], ['schedules', 'Cost curve: every-minute schedules of another queue planned by a running tick, beside 10,000 ready', c => `${n(c)} schedules`]]) {
    for (const size of sizesOf(`curve_${shape}_`)) {
      for (const [f, label, unit, better] of figures) row(title, `${what(size)}: ${label}`, unit, better, `curve_${shape}_${size}_${f}`, null);
      row(title, `${what(size)}: one tick over them (chronos tick --once)`, 's', 'lower', `curve_${shape}_${size}_tick_s`, null);
    }
  }
  const burst = [['enqueue_per_s', 'accepted (4 clients, 1,000 per request)', '/s', 'higher'], ['audited_s', 'first request → every task completed in Postgres', 's', 'lower'], ['per_s', 'audited over that time', '/s', 'higher'], ['peak_redis_mb', 'peak Redis memory above the start', 'MB', 'lower'], ['peak_outbox', 'peak outbox length', 'entries', 'lower'], ['lost', 'accepted but not completed (must be 0)', 'tasks', 'lower']];
  for (const size of sizesOf('curve_burst_')) {
    for (const [f, label, unit, better] of burst) row('Cost curve: a burst through POST /v1/tasks/batch, drained by one worker (1 × 100) meanwhile', `${n(size)} tasks: ${label}`, unit, better, `curve_burst_${size}_${f}`, null);
  }
}

const fmt = v => {
  if (v == null || Number.isNaN(v)) return '—';
  const a = Math.abs(v);
  if (a >= 1000) return n(Math.round(v));
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1 || v === 0) return v.toFixed(2);
  return v.toFixed(3);
};
const cell = s => (s == null ? '—' : s.values.length > 1 ? `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})` : fmt(s.median));
const built = rows
  .map(r => {
    const c = stats('chronos', r.ck);
    const b = stats('bullmq', r.bk);
    const ratio = c && b && b.median !== 0 ? c.median / b.median : null;
    return { ...r, chronos: c, bullmq: b, ratio };
  })
  .filter(r => r.chronos || r.bullmq);

// The targets of the issue, checked on the medians.
const get = (side, key) => stats(side, key)?.median;
const targets = [];
const target = (what, value, met, detail) => targets.push({ target: what, value, met: value == null ? null : met, detail });
{
  const cp = get('chronos', 'drain_p1_c100_per_s');
  const ca = get('chronos', 'drain_p1_c100_audited_per_s');
  const bp = get('bullmq', 'drain_p1_c100_per_s');
  const r1 = cp && bp ? cp / bp : null;
  const r2 = ca && bp ? ca / bp : null;
  target('drain, 1 process × 100: processed/s ≥ 4× BullMQ processed/s', r1, r1 >= 4, `${fmt(cp)} vs ${fmt(bp)} /s = ${fmt(r1)}×`);
  target('drain, 1 process × 100: audited/s ≥ 2× BullMQ processed/s', r2, r2 >= 2, `${fmt(ca)} vs ${fmt(bp)} /s = ${fmt(r2)}×`);
  for (const [k, label] of [['pickup', 'enqueue in Redis'], ['pickup_client', 'Chronos::enqueue']]) {
    const c = get('chronos', `${k}_p99_ms`);
    const b = get('bullmq', 'pickup_p99_ms');
    target(`pickup p99 (${label}) ≤ 2 ms and ≤ BullMQ's`, c, c <= 2 && (b == null || c <= b), `${fmt(c)} ms vs BullMQ ${fmt(b)} ms`);
  }
  const d = get('chronos', 'delayed_p99_ms');
  const db = get('bullmq', 'delayed_p99_ms');
  target("delayed lateness p99 ≤ 5 ms and ≤ BullMQ's", d, d <= 5 && (db == null || d <= db), `${fmt(d)} ms vs BullMQ ${fmt(db)} ms`);
  const rss = get('chronos', 'worker_rss_idle_mb');
  target('worker RSS idle ≤ 15 MB', rss, rss <= 15, `${fmt(rss)} MB (BullMQ ${fmt(get('bullmq', 'worker_rss_idle_mb'))} MB)`);
  const m = get('chronos', 'redis_bytes_per_task');
  const mb = get('bullmq', 'redis_bytes_per_task');
  target("Redis bytes per waiting task ≤ half of BullMQ's", m && mb ? m / mb : null, m <= mb / 2, `${fmt(m)} B vs ${fmt(mb)} B = ${fmt(m / mb)}×`);
  const rps = get('chronos', 'api_rps');
  const p99 = get('chronos', 'api_p99_ms');
  target('POST /v1/tasks ≥ 5,000 requests/s', rps, rps >= 5000, `${fmt(rps)} /s`);
  target('POST /v1/tasks p99 ≤ 20 ms', p99, p99 <= 20, `${fmt(p99)} ms`);
  const durable = sides.chronos.every(r => {
    const ok = r.metrics.find(x => x.key === 'api_2xx');
    const rows = r.metrics.find(x => x.key === 'api_rows');
    return !ok || (rows && rows.value >= ok.value);
  });
  const anyApi = sides.chronos.some(r => r.metrics.some(x => x.key === 'api_2xx'));
  target('every accepted task (2xx) durable in Postgres, in every run', anyApi ? (durable ? 1 : 0) : null, durable, durable ? 'rows ≥ 2xx in every run' : 'fewer rows than 2xx in some run');
}

// Markdown.
const lines = [];
const c0 = sides.chronos[0];
const b0 = sides.bullmq[0];
lines.push(`| figure | Chronos ${c0?.version ?? ''} | BullMQ ${b0?.version ?? ''} | Chronos / BullMQ |`);
lines.push('|---|---|---|---|');
let section = null;
for (const r of built) {
  if (r.section !== section) {
    section = r.section;
    lines.push(`| **${section}** | | | |`);
  }
  const unit = r.unit === '/s' ? '' : ` (${r.unit})`;
  lines.push(`| ${r.label}${unit} | ${cell(r.chronos)} | ${cell(r.bullmq)} | ${r.ratio == null ? '—' : r.ratio.toFixed(2)} |`);
}
lines.push('');
lines.push('| target | measured | |');
lines.push('|---|---|---|');
for (const t of targets) lines.push(`| ${t.target} | ${t.detail} | ${t.met == null ? 'not measured' : t.met ? 'met' : '**missed**'} |`);
const runsN = Math.max(sides.chronos.length, sides.bullmq.length);
const notes = [...new Set([...sides.chronos.flatMap(r => r.notes.map(x => `Chronos: ${x}`)), ...sides.bullmq.flatMap(r => r.notes.map(x => `BullMQ: ${x}`))])];
const text = [
  `- ${meta.date ?? ''}: ${runsN} run${runsN > 1 ? 's' : ''} of each side, median (min–max); N = ${n(params.tasks ?? 0)} tasks per drain and enqueue.`,
  `- Machine: ${meta.cpu ?? '?'}, ${meta.cores ?? '?'} cores, ${meta.mem ?? '?'}; load average (1, 5, 15 min) before each run: ${(meta.runs ?? []).map(r => r.loadavg).join(' / ') || '?'} (busy cores just before: ${(meta.runs ?? []).map(r => r.busy_cores_before).join(' / ') || '?'}).`,
  `- Redis ${meta.redis ?? '?'} (private, port ${meta.redis_port ?? '?'}, no persistence, hz ${meta.redis_hz ?? '?'}), Postgres ${meta.postgres ?? '?'}, Node ${meta.node ?? '?'}, Chronos ${meta.chronos ?? '?'}.`,
  `- Command: \`${meta.command ?? 'scripts/bench'}\``,
  '',
  ...lines,
  '',
  'Ratio = Chronos / BullMQ: above 1 favours Chronos for throughput, below 1 for latency, memory and costs. "—": the peer has no such figure (BullMQ has no audit trail and no HTTP API). Drains start the worker processes on a paused queue and time from resume until the queue is empty; Chronos workers are `chronos worker` (release build, audit writer on); BullMQ workers are Node processes; jobs use `removeOnComplete`. Redis and Postgres CPU are server-wide deltas; everything shares the same cores.',
  ...notes.map(x => `- note: ${x}`),
];
const markdown = text.join('\n');
console.log(markdown);
if (md) writeFileSync(md, markdown + '\n');
if (out) {
  const doc = {
    meta,
    runs: runsN,
    params,
    rows: built.map(r => ({ section: r.section, figure: r.label, unit: r.unit, better: r.better, chronos_key: r.ck, bullmq_key: r.bk, chronos: r.chronos, bullmq: r.bullmq, ratio: r.ratio })),
    targets,
    notes,
    raw: runs,
  };
  writeFileSync(out, JSON.stringify(doc, null, 2) + '\n');
}
