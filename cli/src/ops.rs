//! The operator's commands: read and act on tasks, queues, dead letters, schedules and keys.
//! Each is parse → one `Chronos` (or `Scheduler`) call → view. The views are the API's
//! (`chronos_api::views`), so `--json` prints exactly what the matching endpoint answers and the
//! human tables use the same field names.
//!
//! Refusals are [`Refusal`]s: a sentence on stderr and an exit code by kind ([`Refusal::code`]).

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Result;
use chronos_api::views::{AttemptView, KeyList, KeyView, QueueList, QueueView, ScheduleRunView, ScheduleView, TaskPage, TaskView};
use chronos_core::access::{Caller, Role};
use chronos_core::schedule::{ChangeError, Scheduler};
use chronos_core::store::TaskFilter;
use chronos_core::{Chronos, TaskId};
use serde::Serialize;

/// Exit codes by kind, documented in `chronos --help` and the README.
pub const EXIT_CODES: &str = "Exit codes: 0 done; 1 unexpected failure; 2 bad input or settings (the message names the \
flag or variable); 3 not found; 4 refused: the task's or schedule's state does not allow it (the message says why); 5 a \
store (Redis, Postgres, SQS) cannot be reached: nothing was changed, retry later.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Invalid,
    NotFound,
    Refused,
    Unavailable,
}

/// A request Chronos refused, with the sentence that says why.
#[derive(Debug)]
pub struct Refusal {
    pub kind: Kind,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            Kind::Invalid => write!(f, "{}", self.message),
            Kind::NotFound => write!(f, "not found: {}", self.message),
            Kind::Refused => write!(f, "refused: {}", self.message),
            Kind::Unavailable => write!(f, "{}; nothing was changed, retry later", self.message),
        }
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    pub fn new(kind: Kind, message: impl Into<String>) -> Refusal {
        Refusal { kind, message: message.into() }
    }

    pub fn code(&self) -> u8 {
        match self.kind {
            Kind::Invalid => 2,
            Kind::NotFound => 3,
            Kind::Refused => 4,
            Kind::Unavailable => 5,
        }
    }
}

/// A library error as the operator should read it; internal errors stay errors (exit 1).
pub fn refusal(e: chronos_core::Error) -> anyhow::Error {
    use chronos_core::Error as E;
    match e {
        E::Invalid { field, message } => Refusal::new(Kind::Invalid, format!("{}: {message}", flag_of(field))).into(),
        E::NotFound(m) => Refusal::new(Kind::NotFound, m).into(),
        E::Conflict(m) => Refusal::new(Kind::Refused, m).into(),
        E::Redis(_) => Refusal::new(Kind::Unavailable, format!("the queue store (Redis, REDIS_URL) is unavailable: {e}")).into(),
        E::Postgres(_) => Refusal::new(Kind::Unavailable, format!("the audit store (Postgres, DATABASE_URL) is unavailable: {e}")).into(),
        E::Sqs(_) => Refusal::new(Kind::Unavailable, format!("the dead-letter queue (SQS) is unavailable: {e}")).into(),
        other => other.into(),
    }
}

/// A request field as the flag that sets it (`timezone` → `--tz`, `task.max_attempts` →
/// `--max-attempts`).
fn flag_of(field: &str) -> String {
    let flag = match field {
        "timezone" => "tz".to_owned(),
        "task.name" => "task-name".to_owned(),
        f => f.strip_prefix("task.").unwrap_or(f).replace('_', "-"),
    };
    format!("--{flag}")
}

/// An API-side validation (the CLI takes the API's filters) as a refusal naming the flag.
fn api_refusal(e: chronos_api::error::ApiError) -> anyhow::Error {
    let kind = match e.status.as_u16() {
        404 => Kind::NotFound,
        409 => Kind::Refused,
        503 => Kind::Unavailable,
        _ => Kind::Invalid,
    };
    let message = match &e.field {
        Some(f) => {
            let detail = e.detail.strip_prefix(&format!("{f}: ")).unwrap_or(&e.detail);
            format!("{}: {detail}", flag_of(f))
        }
        None => e.detail.clone(),
    };
    Refusal::new(kind, message).into()
}

fn change_refusal(e: ChangeError, id: uuid::Uuid) -> anyhow::Error {
    match e {
        ChangeError::NotFound => Refusal::new(Kind::NotFound, format!("no schedule {id}")).into(),
        ChangeError::NameTaken(n) => Refusal::new(Kind::Refused, format!("a schedule named {n:?} exists already")).into(),
        ChangeError::Other(e) => refusal(e),
    }
}

/// Writes to stdout; a reader that went away (`chronos tasks | head`) ends the command quietly.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(ClosedStdout.into()),
        r => Ok(r?),
    }
}

/// Stdout was closed by its reader: not an error worth a message.
#[derive(Debug)]
pub struct ClosedStdout;

impl std::fmt::Display for ClosedStdout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout closed")
    }
}

impl std::error::Error for ClosedStdout {}

pub fn emit_json<T: Serialize>(v: &T) -> Result<()> {
    emit(&format!("{}\n", serde_json::to_string_pretty(v)?))
}

/// The operator at the terminal: the CLI talks to the stores directly, with an admin's rights,
/// and is recorded as `cli` in the manual-action log.
pub fn cli_caller() -> Caller {
    Caller { key_id: "cli".into(), role: Role::Admin }
}

/// Columns, padded to their widest cell.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(c);
            } else {
                let _ = write!(out, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in &rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn short(s: Option<&str>, max: usize) -> String {
    let s = s.unwrap_or("").replace('\n', " ");
    if s.chars().count() <= max { s } else { format!("{}…", s.chars().take(max - 1).collect::<String>()) }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

pub fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `chronos task <id>`: the task, then its attempts.
pub async fn task(c: &Chronos, id: TaskId, json: bool) -> Result<()> {
    let t: TaskView = c.task(&cli_caller(), id).await.map_err(refusal)?.into();
    let attempts: Vec<AttemptView> = c.attempts(&cli_caller(), id).await.map_err(refusal)?.into_iter().map(AttemptView::from).collect();
    if json {
        return emit_json(&serde_json::json!({ "task": t, "attempts": attempts }));
    }
    let mut out = String::new();
    let fields: [(&str, String); 14] = [
        ("id", t.id.to_string()),
        ("name", t.name.clone()),
        ("queue", t.queue.clone()),
        ("status", if t.cancel_requested { format!("{} (cancel requested)", t.status) } else { t.status.clone() }),
        ("priority", t.priority.to_string()),
        ("attempts", format!("{} of {}", t.attempts, t.max_attempts)),
        ("run_at", time(t.run_at)),
        ("created_at", time(t.created_at)),
        ("updated_at", time(t.updated_at)),
        ("finished_at", opt(t.finished_at.map(time))),
        ("timeout_ms", t.timeout_ms.to_string()),
        ("idempotency_key", opt(t.idempotency_key.as_deref())),
        ("last_error", opt(t.last_error.as_deref())),
        ("payload", t.payload.to_string()),
    ];
    for (k, v) in fields {
        let _ = writeln!(out, "{k:<16} {v}");
    }
    if let Some(s) = t.schedule_id {
        let _ = writeln!(out, "{:<16} {s} (fire_at {})", "schedule_id", opt(t.fire_at.map(time)));
    }
    if attempts.is_empty() {
        out.push_str("\nno attempts yet\n");
    } else {
        out.push('\n');
        let rows = attempts
            .iter()
            .map(|a| {
                vec![
                    a.attempt.to_string(),
                    opt(a.outcome.as_deref()),
                    opt(a.started_at.map(time)),
                    opt(a.duration_ms),
                    opt(a.worker.as_deref()),
                    short(a.error.as_deref(), 80),
                ]
            })
            .collect();
        out.push_str(&table(&["attempt", "outcome", "started_at", "duration_ms", "worker", "error"], rows));
    }
    emit(&out)
}

fn task_rows(tasks: &[TaskView]) -> String {
    let rows = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.status.clone(),
                t.queue.clone(),
                t.name.clone(),
                format!("{}/{}", t.attempts, t.max_attempts),
                time(t.created_at),
                short(t.last_error.as_deref(), 60),
            ]
        })
        .collect();
    table(&["id", "status", "queue", "name", "attempts", "created_at", "last_error"], rows)
}

fn emit_page(page: TaskPage, json: bool, what: &str) -> Result<()> {
    if json {
        return emit_json(&page);
    }
    if page.tasks.is_empty() {
        eprintln!("no {what}");
        return Ok(());
    }
    emit(&task_rows(&page.tasks))?;
    if let Some(c) = page.next_cursor {
        eprintln!("more: add --cursor {c}");
    }
    Ok(())
}

/// The filters of `GET /v1/tasks`, as flags.
#[derive(clap::Args)]
pub struct TaskFilterArgs {
    /// pending, scheduled, queued, running, retrying, completed, dead or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub queue: Option<String>,
    /// Handler kind, e.g. http.
    #[arg(long)]
    pub name: Option<String>,
    /// RFC 3339; tasks created at or after.
    #[arg(long)]
    pub created_after: Option<String>,
    /// RFC 3339; tasks created before.
    #[arg(long)]
    pub created_before: Option<String>,
    /// Full-text search over name, payload text and error messages (web-search syntax).
    #[arg(long)]
    pub q: Option<String>,
    /// 1–500.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// The cursor a previous page printed.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `chronos tasks`: list and search, newest first, with the API's filters and their checks.
pub async fn tasks(c: &Chronos, a: TaskFilterArgs, json: bool) -> Result<()> {
    let filter = chronos_api::routes::tasks::build_filter(chronos_api::routes::tasks::ListParams {
        status: a.status,
        queue: a.queue,
        name: a.name,
        created_after: a.created_after,
        created_before: a.created_before,
        q: a.q,
        limit: Some(a.limit),
        cursor: a.cursor,
    })
    .map_err(api_refusal)?;
    emit_page(c.task_page(&cli_caller(), filter).await.map_err(refusal)?.into(), json, "tasks match")
}

/// `chronos cancel` / `chronos retry`: the task after the action.
pub async fn act(c: &Chronos, id: TaskId, cancel: bool, json: bool) -> Result<()> {
    let t: TaskView =
        if cancel { c.cancel(&cli_caller(), id).await } else { c.retry_now(&cli_caller(), id).await }.map_err(refusal)?.into();
    if json {
        return emit_json(&t);
    }
    let what = match (cancel, t.cancel_requested) {
        (true, true) => "is running: cancel requested, its handler has been told".to_owned(),
        (true, false) => "cancelled".to_owned(),
        (false, _) => format!("queued to run now (attempt {} of {})", t.attempts + 1, t.max_attempts),
    };
    emit(&format!("task {} {what}\n", t.id))
}

/// `chronos queues`: the same view as `GET /v1/queues`.
pub async fn queues(c: &Chronos, json: bool) -> Result<()> {
    let queues: Vec<QueueView> = c.queues().await.map_err(refusal)?.into_iter().map(QueueView::from).collect();
    if json {
        return emit_json(&QueueList { queues });
    }
    let rows = queues
        .iter()
        .map(|q| {
            vec![
                q.name.clone(),
                q.waiting.to_string(),
                q.scheduled.to_string(),
                q.running.to_string(),
                q.retrying.to_string(),
                q.completed.to_string(),
                q.dead.to_string(),
                q.cancelled.to_string(),
                q.paused.to_string(),
                opt(q.oldest_waiting_age_s.map(|s| format!("{s:.1}"))),
                q.workers.to_string(),
                q.unserved.to_string(),
                limits_summary(&q.limits),
            ]
        })
        .collect();
    emit(&table(
        &[
            "name",
            "waiting",
            "scheduled",
            "running",
            "retrying",
            "completed",
            "dead",
            "cancelled",
            "paused",
            "oldest_waiting_age_s",
            "workers",
            "unserved",
            "limits",
        ],
        rows,
    ))
}

/// `chronos queues pause|resume <queue>`.
/// `concurrency=3 rate=20/1000ms group_concurrency=1`, or `-` for none.
fn limits_summary(l: &chronos_core::limits::QueueLimits) -> String {
    let mut parts = Vec::new();
    if let Some(c) = l.concurrency {
        parts.push(format!("concurrency={c}"));
    }
    if let Some(r) = l.rate {
        parts.push(format!("rate={}/{}ms", r.limit, r.period_ms));
    }
    if let Some(c) = l.group_concurrency {
        parts.push(format!("group_concurrency={c}"));
    }
    if let Some(r) = l.group_rate {
        parts.push(format!("group_rate={}/{}ms", r.limit, r.period_ms));
    }
    if parts.is_empty() { "-".into() } else { parts.join(" ") }
}

/// A limit's count, `None` for `none` (remove the limit).
#[derive(Debug, Clone, Copy)]
pub struct Count(pub Option<u32>);

/// A rate, `None` for `none` (remove the limit).
#[derive(Debug, Clone, Copy)]
pub struct RateArg(pub Option<chronos_core::limits::Rate>);

/// `--concurrency 3` or `--concurrency none`.
pub fn parse_count_or_none(s: &str) -> std::result::Result<Count, String> {
    if s == "none" {
        return Ok(Count(None));
    }
    s.parse().map(|n| Count(Some(n))).map_err(|_| format!("{s:?} is not a count; give a number such as 3, or none"))
}

/// `--rate 100/1s` (also `ms`, `m`, `h`; a bare number is milliseconds) or `--rate none`.
pub fn parse_rate_or_none(s: &str) -> std::result::Result<RateArg, String> {
    if s == "none" {
        return Ok(RateArg(None));
    }
    let bad = || format!("{s:?} is not a rate; give N/PERIOD such as 100/1s, 20/500ms or 5/1m, or none");
    let (n, period) = s.split_once('/').ok_or_else(bad)?;
    let limit: u32 = n.trim().parse().map_err(|_| bad())?;
    let period = period.trim();
    let split = period.find(|c: char| !c.is_ascii_digit()).unwrap_or(period.len());
    let (num, unit) = period.split_at(split);
    let num: u64 = if num.is_empty() { 1 } else { num.parse().map_err(|_| bad())? };
    let ms = match unit {
        "" | "ms" => num,
        "s" => num * 1000,
        "m" => num * 60_000,
        "h" => num * 3_600_000,
        _ => return Err(bad()),
    };
    let period_ms = u32::try_from(ms).map_err(|_| bad())?;
    Ok(RateArg(Some(chronos_core::limits::Rate { limit, period_ms })))
}

pub async fn set_queue_limits(c: &Chronos, queue: &str, patch: &chronos_core::limits::LimitsPatch, json: bool) -> Result<()> {
    let q: QueueView = c.set_queue_limits(&cli_caller(), queue, patch).await.map_err(refusal)?.into();
    if json {
        return emit_json(&q);
    }
    emit(&format!("queue {} limits: {}\n", q.name, limits_summary(&q.limits)))
}

pub async fn set_queue_paused(c: &Chronos, queue: &str, paused: bool, json: bool) -> Result<()> {
    let q: QueueView = c.set_queue_paused(&cli_caller(), queue, paused).await.map_err(refusal)?.into();
    if json {
        return emit_json(&q);
    }
    emit(&format!("queue {} {}\n", q.name, if paused { "paused: workers stop claiming from it" } else { "resumed" }))
}

#[derive(clap::Subcommand)]
pub enum DlqCmd {
    /// Dead tasks, newest first (the view of GET /v1/dlq).
    List {
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// 1–500.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=500))]
        limit: i64,
        #[arg(long)]
        cursor: Option<uuid::Uuid>,
    },
    /// Put one dead task back as a fresh attempt (with an id), or every dead task with --all
    /// (of one --queue / --name / --error) as a job followed with a progress line; their SQS
    /// messages are removed.
    Redrive {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<uuid::Uuid>,
        #[arg(long)]
        all: bool,
        #[arg(long, requires = "all")]
        queue: Option<String>,
        #[arg(long, requires = "all")]
        name: Option<String>,
        /// The first line of the last error (the dashboard's dead-letter groups).
        #[arg(long, requires = "all")]
        error: Option<String>,
        /// Start the job and print its id; follow it with `chronos jobs show <id> --wait`.
        #[arg(long, requires = "all")]
        no_wait: bool,
    },
}

pub async fn dlq(c: &Chronos, dlq_queue: &str, cmd: DlqCmd, json: bool) -> Result<()> {
    match cmd {
        DlqCmd::List { queue, name, limit, cursor } => {
            let filter = TaskFilter { queue, name, before_id: cursor, limit, ..Default::default() };
            emit_page(c.dead_tasks(&cli_caller(), filter).await.map_err(refusal)?.into(), json, "dead tasks")
        }
        DlqCmd::Redrive { id: Some(id), .. } => {
            let t: TaskView = c.redrive(&cli_caller(), id).await.map_err(refusal)?.into();
            if json {
                return emit_json(&t);
            }
            emit(&format!("task {} redriven: queued with a fresh attempt budget\n", t.id))
        }
        DlqCmd::Redrive { id: None, queue, name, error, no_wait, .. } => {
            let sel = chronos_core::jobs::Selection { queue, name, error, ..Default::default() };
            crate::jobs::start(c, dlq_queue, chronos_core::jobs::JobKind::Redrive, sel, no_wait, json).await
        }
    }
}

#[derive(clap::Subcommand)]
pub enum SchedulesCmd {
    /// Create a schedule: its task runs on `cron` in `--tz` (the fields of POST /v1/schedules).
    Create {
        /// Unique: 1–128 of A–Z a–z 0–9 _ - . : /
        #[arg(long)]
        name: String,
        /// 5 fields, 6 with leading seconds, or a macro such as @daily.
        #[arg(long)]
        cron: String,
        /// IANA time zone.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// The task's handler kind, e.g. http.
        #[arg(long)]
        task_name: String,
        #[arg(long, default_value = "default")]
        queue: String,
        /// JSON payload.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// 0–100 or critical, high, normal, low.
        #[arg(long)]
        priority: Option<String>,
        #[arg(long)]
        max_attempts: Option<u32>,
        /// allow, skip or queue_one.
        #[arg(long, default_value = "allow")]
        overlap: String,
        /// run_all, run_once or skip.
        #[arg(long, default_value = "run_once")]
        misfire: String,
        /// Create it paused (nothing planned until resumed).
        #[arg(long)]
        paused: bool,
    },
    /// Change a schedule (the fields of PATCH /v1/schedules/{id}); the task is replaced whole,
    /// so --queue, --payload, --priority and --max-attempts need --task-name.
    Update {
        id: uuid::Uuid,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        cron: Option<String>,
        #[arg(long)]
        tz: Option<String>,
        #[arg(long)]
        task_name: Option<String>,
        #[arg(long, requires = "task_name")]
        queue: Option<String>,
        #[arg(long, requires = "task_name")]
        payload: Option<String>,
        #[arg(long, requires = "task_name")]
        priority: Option<String>,
        #[arg(long, requires = "task_name")]
        max_attempts: Option<u32>,
        /// allow, skip or queue_one.
        #[arg(long)]
        overlap: Option<String>,
        /// run_all, run_once or skip.
        #[arg(long)]
        misfire: Option<String>,
    },
    /// Schedules by name (the view of GET /v1/schedules).
    List {
        /// 1–500.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=500))]
        limit: i64,
        /// The last name of the previous page.
        #[arg(long)]
        after: Option<String>,
    },
    /// One schedule with its next fire instants and its last 10 runs.
    Show { id: uuid::Uuid },
    /// Pause: the occurrences not started are dropped.
    Pause { id: uuid::Uuid },
    /// Resume: plans from now (the paused stretch is not a misfire).
    Resume { id: uuid::Uuid },
    /// Run the schedule's task once, now.
    Trigger { id: uuid::Uuid },
    /// Delete it and its occurrences not started; past runs stay.
    Delete { id: uuid::Uuid },
}

pub async fn schedules(s: &Scheduler, cmd: SchedulesCmd, json: bool) -> Result<()> {
    let now = chrono::Utc::now();
    let caller = cli_caller();
    let view = |v: ScheduleView, json: bool, what: &str| -> Result<()> {
        if json {
            return emit_json(&v);
        }
        emit(&format!("schedule {} ({}) {what}\n", v.name, v.id))
    };
    match cmd {
        SchedulesCmd::Create { name, cron, tz, task_name, queue, payload, priority, max_attempts, overlap, misfire, paused } => {
            let payload: serde_json::Value =
                serde_json::from_str(&payload).map_err(|e| Refusal::new(Kind::Invalid, format!("--payload is not valid JSON: {e}")))?;
            let mut task = serde_json::json!({ "name": task_name, "queue": queue, "payload": payload });
            if let Some(p) = priority {
                task["priority"] = p.parse::<i64>().map(serde_json::Value::from).unwrap_or(serde_json::Value::String(p));
            }
            if let Some(m) = max_attempts {
                task["max_attempts"] = m.into();
            }
            // The API's request body, so the CLI takes exactly its fields and checks.
            let body = serde_json::json!({ "name": name, "cron": cron, "timezone": tz, "task": task,
                                           "overlap": overlap, "misfire": misfire, "paused": paused });
            let req: chronos_api::views::CreateSchedule = chronos_api::json::parse(body.to_string().as_bytes()).map_err(api_refusal)?;
            let spec = req.into_spec(s.chronos.max_payload_bytes).map_err(api_refusal)?;
            let rec = s.create_by(&caller, &spec).await.map_err(|e| match e {
                ChangeError::NameTaken(n) => Refusal::new(Kind::Refused, format!("a schedule named {n:?} exists already")).into(),
                ChangeError::NotFound => Refusal::new(Kind::NotFound, "the schedule was deleted meanwhile").into(),
                ChangeError::Other(e) => refusal(e),
            })?;
            view(ScheduleView::new(rec, now), json, "created")
        }
        SchedulesCmd::Update { id, name, cron, tz, task_name, queue, payload, priority, max_attempts, overlap, misfire } => {
            let mut body = serde_json::json!({});
            for (k, v) in [("name", name), ("cron", cron), ("timezone", tz), ("overlap", overlap), ("misfire", misfire)] {
                if let Some(v) = v {
                    body[k] = v.into();
                }
            }
            if let Some(task_name) = task_name {
                let payload: serde_json::Value = serde_json::from_str(payload.as_deref().unwrap_or("{}"))
                    .map_err(|e| Refusal::new(Kind::Invalid, format!("--payload is not valid JSON: {e}")))?;
                let mut task =
                    serde_json::json!({ "name": task_name, "queue": queue.unwrap_or_else(|| "default".into()), "payload": payload });
                if let Some(p) = priority {
                    task["priority"] = p.parse::<i64>().map(serde_json::Value::from).unwrap_or(serde_json::Value::String(p));
                }
                if let Some(m) = max_attempts {
                    task["max_attempts"] = m.into();
                }
                body["task"] = task;
            }
            // The API's request body and checks, so the CLI refuses what PATCH refuses.
            let req: chronos_api::views::UpdateSchedule = chronos_api::json::parse(body.to_string().as_bytes()).map_err(api_refusal)?;
            chronos_api::routes::schedules::check_when(req.name.as_deref(), req.cron.as_deref(), req.timezone.as_deref())
                .map_err(api_refusal)?;
            let patch = req.into_patch(s.chronos.max_payload_bytes).map_err(api_refusal)?;
            let rec = s.update_by(&caller, id, &patch).await.map_err(|e| match e {
                ChangeError::NameTaken(n) => Refusal::new(Kind::Refused, format!("a schedule named {n:?} exists already")).into(),
                ChangeError::NotFound => Refusal::new(Kind::NotFound, format!("no schedule {id}")).into(),
                ChangeError::Other(e) => refusal(e),
            })?;
            view(ScheduleView::new(rec, now), json, "updated")
        }
        SchedulesCmd::List { limit, after } => {
            let mut rows = s.list(after.as_deref(), limit + 1).await.map_err(refusal)?;
            let more = rows.len() as i64 > limit;
            rows.truncate(limit as usize);
            let next_cursor = if more { rows.last().map(|r| r.name.clone()) } else { None };
            let schedules: Vec<ScheduleView> = rows.into_iter().map(|r| ScheduleView::new(r, now)).collect();
            if json {
                return emit_json(&chronos_api::views::SchedulePage { schedules, next_cursor });
            }
            if schedules.is_empty() {
                eprintln!("no schedules");
                return Ok(());
            }
            let rows = schedules
                .iter()
                .map(|v| {
                    vec![
                        v.id.to_string(),
                        v.name.clone(),
                        v.cron.clone(),
                        v.timezone.clone(),
                        v.task.name.clone(),
                        v.paused.to_string(),
                        v.next_fires.first().cloned().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            emit(&table(&["id", "name", "cron", "timezone", "task", "paused", "next_fire"], rows))?;
            if let Some(c) = next_cursor {
                eprintln!("more: add --after {c}");
            }
            Ok(())
        }
        SchedulesCmd::Show { id } => {
            let rec = s.get(id).await.map_err(refusal)?.ok_or_else(|| Refusal::new(Kind::NotFound, format!("no schedule {id}")))?;
            let tz = chronos_core::cron::parse_timezone(&rec.timezone).unwrap_or(chrono_tz::Tz::UTC);
            let recs = s.runs(id, 10).await.map_err(refusal)?;
            let fires: Vec<_> = recs.iter().map(|r| r.fire_at).collect();
            let runs: Vec<ScheduleRunView> = s
                .chronos
                .with_live(recs)
                .await
                .into_iter()
                .zip(fires)
                .map(|(v, fire_at)| ScheduleRunView {
                    task_id: v.id,
                    fire_at: fire_at.map(|t| chronos_api::views::zoned(t, tz)),
                    status: v.status,
                    attempts: v.attempts,
                    last_error: v.last_error,
                    finished_at: v.finished_at,
                })
                .collect();
            let mut v = ScheduleView::new(rec, now);
            if json {
                v.runs = Some(runs);
                return emit_json(&v);
            }
            let mut out = String::new();
            for (k, val) in [
                ("id", v.id.to_string()),
                ("name", v.name.clone()),
                ("cron", v.cron.clone()),
                ("timezone", v.timezone.clone()),
                ("task", format!("{} on queue {}", v.task.name, v.task.queue)),
                ("paused", v.paused.to_string()),
                ("overlap", v.overlap.clone()),
                ("misfire", v.misfire.clone()),
                ("next_fires", v.next_fires.join(", ")),
            ] {
                let _ = writeln!(out, "{k:<12} {val}");
            }
            if !runs.is_empty() {
                out.push('\n');
                let rows = runs
                    .iter()
                    .map(|r| vec![opt(r.fire_at.as_deref()), r.task_id.to_string(), r.status.clone(), short(r.last_error.as_deref(), 60)])
                    .collect();
                out.push_str(&table(&["fire_at", "task_id", "status", "last_error"], rows));
            }
            emit(&out)
        }
        SchedulesCmd::Pause { id } | SchedulesCmd::Resume { id } => {
            let paused = matches!(cmd, SchedulesCmd::Pause { .. });
            let rec = s.set_paused_by(&caller, id, paused).await.map_err(|e| change_refusal(e, id))?;
            view(ScheduleView::new(rec, now), json, if paused { "paused" } else { "resumed" })
        }
        SchedulesCmd::Trigger { id } => {
            let task_id = s
                .trigger_by(&caller, id)
                .await
                .map_err(refusal)?
                .ok_or_else(|| Refusal::new(Kind::NotFound, format!("no schedule {id}")))?;
            if json {
                return emit_json(&serde_json::json!({ "schedule_id": id, "task_id": task_id }));
            }
            emit(&format!("schedule {id} triggered: task {task_id}\n"))
        }
        SchedulesCmd::Delete { id } => {
            let rec = s
                .delete_by(&caller, id)
                .await
                .map_err(refusal)?
                .ok_or_else(|| Refusal::new(Kind::NotFound, format!("no schedule {id}")))?;
            view(ScheduleView::new(rec, now), json, "deleted")
        }
    }
}

#[derive(clap::Subcommand)]
pub enum KeysCmd {
    /// Every API key (the secret itself is never stored, only its first characters).
    List,
    /// Create a key; its secret is printed once.
    Create {
        /// What the key is for, e.g. billing-service.
        #[arg(long)]
        name: String,
        /// admin, operator, producer or viewer.
        #[arg(long)]
        role: String,
    },
    /// Revoke a key: requests with it get 401 from now on.
    Revoke { id: uuid::Uuid },
}

pub async fn keys(c: &Chronos, cmd: KeysCmd, json: bool) -> Result<()> {
    match cmd {
        KeysCmd::List => {
            let keys: Vec<KeyView> = c.list_keys().await.map_err(refusal)?.into_iter().map(KeyView::from).collect();
            if json {
                return emit_json(&KeyList { keys });
            }
            let rows = keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.to_string(),
                        k.name.clone(),
                        k.role.clone(),
                        k.prefix.clone(),
                        time(k.created_at),
                        opt(k.revoked_at.map(time)),
                    ]
                })
                .collect();
            emit(&table(&["id", "name", "role", "prefix", "created_at", "revoked_at"], rows))
        }
        KeysCmd::Create { name, role } => {
            let role: Role = role.parse().map_err(|_| {
                Refusal::new(Kind::Invalid, format!("--role: {role:?} is not a role; use admin, operator, producer or viewer"))
            })?;
            let (key, secret) = c.create_key(&cli_caller(), &name, role).await.map_err(refusal)?;
            let view = chronos_api::views::CreatedKey { key: key.into(), secret };
            if json {
                return emit_json(&view);
            }
            emit(&format!(
                "key {} ({}, {}) created; its secret, shown only now:\n{}\n",
                view.key.id, view.key.name, view.key.role, view.secret
            ))
        }
        KeysCmd::Revoke { id } => {
            if !c.revoke_key(&cli_caller(), id).await.map_err(refusal)? {
                return Err(Refusal::new(Kind::NotFound, format!("no live key {id}")).into());
            }
            if json {
                return emit_json(&serde_json::json!({ "id": id, "revoked": true }));
            }
            emit(&format!("key {id} revoked\n"))
        }
    }
}
