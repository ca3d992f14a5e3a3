//! Bulk operations as jobs: redrive the dead-letter queue, cancel or retry every task a filter
//! selects. A request records a job ([`Chronos::start_job`]) and returns at once; a runner
//! ([`run_jobs`], one per process running the background services, and [`run_due`] in the
//! tick) takes the job's lease and works through it in steps of [`STEP`] tasks.
//!
//! Each step is committed in one `UPDATE` guarded by the lease (the runner that lost its lease
//! changes nothing): the cursor, the counts, and for a redrive the tasks whose SQS message is
//! still to be removed. Those are recorded *before* the step acts, so a runner killed mid-step
//! leaves nothing behind: the next runner (once the lease expired) repeats the step from the
//! same cursor, counts the tasks it finds already redriven by this job as redriven, and removes
//! their messages with the others.
//!
//! A redrive ends with the letters phase: sweeps of the SQS queue that delete the messages of
//! the redriven tasks and keep every other message hidden until the sweep ends (so each sweep
//! sees each message once), then make them visible again. What no sweep found is reported as
//! `sqs_letters_not_found` (a letter never sent, or taken by a consumer of the queue).

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::access::{Caller, Role};
use crate::client::Chronos;
use crate::dlq::Dlq;
use crate::error::{Error, Result};
use crate::model::TaskId;
use crate::queue::{CancelOutcome, RetryNowOutcome};
use crate::store::TaskFilter;

/// Tasks one step takes.
pub const STEP: i64 = 500;
/// How long a runner holds a job between steps; a runner that died is replaced after this.
pub const LEASE: Duration = Duration::from_secs(30);
/// The longest one sweep of the SQS queue runs before its progress is committed.
const SWEEP_BUDGET: Duration = Duration::from_secs(15);
/// Sweeps of the SQS queue a redrive makes at most before it reports the rest as not found.
const MAX_SWEEPS: i32 = 5;
/// Failed steps in a row (a store unreachable) after which the job ends `failed`.
const MAX_ERRORS: i32 = 20;
/// Postgres channel a new job is announced on.
const CHANNEL: &str = "chronos_jobs";
/// A runner looks for jobs whose lease expired this often when nothing was announced.
const RESCAN: Duration = Duration::from_secs(10);

/// What a job does to each task it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Dead tasks back as fresh attempts, their SQS messages removed.
    Redrive,
    /// Cancel (a running task is told through its heartbeat).
    Cancel,
    /// Queue scheduled, retrying and dead tasks at once.
    Retry,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Redrive => "redrive",
            JobKind::Cancel => "cancel",
            JobKind::Retry => "retry",
        }
    }

    /// `redrive`, `cancel` or `retry`; anything else is [`Error::Invalid`] on `kind`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "redrive" => Ok(JobKind::Redrive),
            "cancel" => Ok(JobKind::Cancel),
            "retry" => Ok(JobKind::Retry),
            _ => Err(Error::invalid("kind", format!("{s:?} is not a job kind; use redrive, cancel or retry"))),
        }
    }
}

/// Which tasks a job works on; every field narrows it. A redrive always takes dead tasks only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Full-text search, as `GET /v1/tasks?q=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<DateTime<Utc>>,
    /// The first line of the last error, as the dashboard groups dead tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Selection {
    fn is_empty(&self) -> bool {
        *self == Selection::default()
    }

    fn filter(&self, before_id: Option<TaskId>, limit: i64) -> TaskFilter {
        TaskFilter {
            status: self.status.clone(),
            queue: self.queue.clone(),
            name: self.name.clone(),
            created_after: self.created_after,
            created_before: self.created_before,
            q: self.q.clone(),
            created_by: None,
            before_id,
            error_group: self.error.clone(),
            limit,
        }
    }
}

/// A job as stored, with its progress.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: Uuid,
    pub kind: JobKind,
    pub selection: Selection,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub state: String,
    /// `tasks` (working through the tasks), `letters` (removing SQS messages), `done`.
    pub phase: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Tasks the selection matched when the job was created.
    pub total: i64,
    pub processed: i64,
    /// Redriven, cancelled or queued again.
    pub succeeded: i64,
    /// Not in a state the action applies to (e.g. no longer dead).
    pub skipped: i64,
    pub sqs_messages_removed: i64,
    /// Redriven tasks whose SQS message is still to be removed.
    pub sqs_letters_pending: i64,
    pub sqs_letters_not_found: i64,
    pub last_error: Option<String>,
    pub cancel_requested: bool,
}

impl Job {
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "completed" | "failed" | "cancelled")
    }
}

const JOB_COLUMNS: &str = "id, kind, selection, state, phase, created_by, created_at, started_at, updated_at, finished_at, total, \
     processed, succeeded, skipped, sqs_messages_removed, cardinality(letters_pending) AS pending, sqs_letters_not_found, last_error, \
     cancel_requested";

fn job_from_row(r: &sqlx::postgres::PgRow) -> Result<Job> {
    Ok(Job {
        id: r.get("id"),
        kind: JobKind::parse(r.get("kind"))?,
        selection: serde_json::from_value(r.get("selection")).unwrap_or_default(),
        state: r.get("state"),
        phase: r.get("phase"),
        created_by: r.get("created_by"),
        created_at: r.get("created_at"),
        started_at: r.get("started_at"),
        updated_at: r.get("updated_at"),
        finished_at: r.get("finished_at"),
        total: r.get("total"),
        processed: r.get("processed"),
        succeeded: r.get("succeeded"),
        skipped: r.get("skipped"),
        sqs_messages_removed: r.get("sqs_messages_removed"),
        sqs_letters_pending: r.get::<Option<i32>, _>("pending").unwrap_or(0) as i64,
        sqs_letters_not_found: r.get("sqs_letters_not_found"),
        last_error: r.get("last_error"),
        cancel_requested: r.get("cancel_requested"),
    })
}

impl Chronos {
    /// Record a job over the tasks `selection` matches now (tasks created later are not
    /// touched) and announce it to the runners. A producer's job is narrowed to its own tasks.
    pub async fn start_job(&self, caller: &Caller, kind: JobKind, mut selection: Selection) -> Result<Job> {
        if kind == JobKind::Redrive {
            if selection.status.as_deref().is_some_and(|s| s != "dead") {
                return Err(Error::invalid("status", "a redrive takes dead tasks only; leave status out"));
            }
            selection.status = Some("dead".into());
        } else if selection.is_empty() {
            return Err(Error::invalid(
                "filter",
                format!(
                    "names no tasks; give at least one of queue, name, status, q, created_after, created_before or error (to {} every task, \
                     give the statuses one by one)",
                    kind.as_str()
                ),
            ));
        }
        if let Some(s) = &selection.status {
            s.parse::<crate::model::Status>().map_err(|_| {
                Error::invalid(
                    "status",
                    format!("{s:?} is not a status; use pending, queued, scheduled, running, retrying, completed, dead or cancelled"),
                )
            })?;
        }
        // Ids are time-ordered: the job takes the tasks below this one, those that exist now.
        let cursor = Uuid::now_v7();
        let mut filter = selection.filter(Some(cursor), 0);
        if caller.role.sees_only_own_tasks() {
            filter.created_by = Some(caller.key_id.clone());
        }
        let total = self.store.count_tasks(&filter).await?;
        let id = Uuid::now_v7();
        let mut tx = self.store.pool().begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO jobs (id, kind, selection, created_by, created_role, total, cursor_id) VALUES ($1, $2, $3, $4, $5, $6, $7)
             RETURNING {JOB_COLUMNS}"
        )))
        .bind(id)
        .bind(kind.as_str())
        .bind(serde_json::to_value(&selection).unwrap_or_default())
        .bind(&caller.key_id)
        .bind(caller.role.as_str())
        .bind(total)
        .bind(cursor)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(id.to_string()).execute(&mut *tx).await?;
        tx.commit().await?;
        let job = job_from_row(&row)?;
        let detail = serde_json::json!({ "job_id": id, "kind": kind.as_str(), "selection": job.selection, "total": total });
        self.audit(caller, "job_start", None, detail).await?;
        Ok(job)
    }

    /// A job `caller` may see (its own, unless it may see every task).
    pub async fn job(&self, caller: &Caller, id: Uuid) -> Result<Job> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.store.pool())
            .await?;
        match row.map(|r| job_from_row(&r)).transpose()? {
            Some(j) if !caller.role.sees_only_own_tasks() || j.created_by == caller.key_id => Ok(j),
            _ => Err(Error::NotFound(format!("no job {id}"))),
        }
    }

    /// Jobs, newest first, `before` (a job id) paging back.
    pub async fn jobs(&self, caller: &Caller, before: Option<Uuid>, limit: i64) -> Result<Vec<Job>> {
        let own = caller.role.sees_only_own_tasks().then(|| caller.key_id.clone());
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1::uuid IS NULL OR id < $1) AND ($2::text IS NULL OR created_by = $2)
             ORDER BY id DESC LIMIT $3"
        )))
        .bind(before)
        .bind(own)
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Stop a job: a queued one at once, a running one after its current step. What it did
    /// so far stays done.
    pub async fn cancel_job(&self, caller: &Caller, id: Uuid) -> Result<Job> {
        let job = self.job(caller, id).await?;
        if job.is_finished() {
            return Err(Error::Conflict(format!("the job is {}; only a queued or running job can be cancelled", job.state)));
        }
        sqlx::query(
            "UPDATE jobs SET cancel_requested = true, updated_at = now(),
                 state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
                 finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END
             WHERE id = $1 AND state IN ('queued', 'running')",
        )
        .bind(id)
        .execute(self.store.pool())
        .await?;
        self.audit(caller, "job_cancel", None, serde_json::json!({ "job_id": id, "kind": job.kind.as_str() })).await?;
        self.job(caller, id).await
    }
}

/// What a runner holds while it works a job.
struct Held {
    id: Uuid,
    kind: JobKind,
    selection: Selection,
    caller: Caller,
    phase: String,
    cursor: Uuid,
    pending: Vec<Uuid>,
    errors: i32,
}

/// Take the oldest job (or job `only`) that is queued or whose runner's lease expired.
async fn claim(c: &Chronos, who: &str, only: Option<Uuid>) -> Result<Option<Held>> {
    let row = sqlx::query(
        "UPDATE jobs SET lease_owner = $1, lease_until = now() + make_interval(secs => $2), updated_at = now(),
             state = 'running', started_at = coalesce(started_at, now())
         WHERE id = (SELECT id FROM jobs WHERE state IN ('queued', 'running') AND (lease_until IS NULL OR lease_until < now())
                       AND ($3::uuid IS NULL OR id = $3)
                     ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING id, kind, selection, created_by, created_role, phase, cursor_id, letters_pending, errors",
    )
    .bind(who)
    .bind(LEASE.as_secs_f64())
    .bind(only)
    .fetch_optional(c.store.pool())
    .await?;
    let Some(r) = row else { return Ok(None) };
    let role: String = r.get("created_role");
    Ok(Some(Held {
        id: r.get("id"),
        kind: JobKind::parse(r.get("kind"))?,
        selection: serde_json::from_value(r.get("selection")).unwrap_or_default(),
        caller: Caller { key_id: r.get("created_by"), role: role.parse().unwrap_or(Role::Viewer) },
        phase: r.get("phase"),
        cursor: r.get("cursor_id"),
        pending: r.get("letters_pending"),
        errors: r.get("errors"),
    }))
}

/// The outcome of one step.
enum Step {
    /// More to do.
    More,
    /// The job ended (completed, cancelled) or another runner has it now.
    Over,
}

/// Work `job` until it ends, the lease is lost, `deadline` passes or `stop` is set.
async fn work(c: &Chronos, dlq: &mut DlqHandle, who: &str, mut job: Held, deadline: Option<Instant>, stop: &watch::Receiver<bool>) {
    loop {
        if *stop.borrow() || deadline.is_some_and(|d| Instant::now() >= d) {
            // Hand it back at once rather than make the next runner wait for the lease.
            let _ = sqlx::query("UPDATE jobs SET lease_until = NULL, lease_owner = NULL WHERE id = $1 AND lease_owner = $2")
                .bind(job.id)
                .bind(who)
                .execute(c.store.pool())
                .await;
            return;
        }
        match step(c, dlq, who, &mut job).await {
            Ok(Step::More) => job.errors = 0,
            Ok(Step::Over) => return,
            Err(e) => {
                job.errors += 1;
                let message: String = e.to_string().chars().take(1000).collect();
                tracing::warn!(job = %job.id, error = %message, errors = job.errors, "job step failed; retrying later");
                // Back off through the lease: the job is picked up again (here or elsewhere)
                // once it expires.
                let wait = Duration::from_secs(1u64 << job.errors.clamp(0, 6) as u64);
                let failed = job.errors >= MAX_ERRORS;
                let _ = sqlx::query(
                    "UPDATE jobs SET errors = $3, last_error = $4, updated_at = now(),
                         lease_until = now() + make_interval(secs => $5),
                         state = CASE WHEN $6 THEN 'failed' ELSE state END,
                         finished_at = CASE WHEN $6 THEN now() ELSE finished_at END
                     WHERE id = $1 AND lease_owner = $2",
                )
                .bind(job.id)
                .bind(who)
                .bind(job.errors)
                .bind(message)
                .bind(wait.as_secs_f64())
                .bind(failed)
                .execute(c.store.pool())
                .await;
                return;
            }
        }
    }
}

/// One step: a page of tasks, or one sweep of the SQS queue.
async fn step(c: &Chronos, dlq: &mut DlqHandle, who: &str, job: &mut Held) -> Result<Step> {
    if job.phase == "letters" {
        return letters_step(c, dlq, who, job).await;
    }
    let mut filter = job.selection.filter(Some(job.cursor), STEP);
    if job.caller.role.sees_only_own_tasks() {
        filter.created_by = Some(job.caller.key_id.clone());
    }
    let page = c.with_live(c.store.list_tasks(&filter).await?).await;
    let last = page.last().map(|t| t.id);
    let (mut succeeded, mut skipped) = (0i64, 0i64);
    let already: HashSet<Uuid> = job.pending.iter().copied().collect();
    if job.kind == JobKind::Redrive {
        // Recorded before acting: a runner killed in the loop below leaves these to the next.
        let dead: Vec<Uuid> = page.iter().filter(|t| t.status == "dead").map(|t| t.id).collect();
        if !dead.is_empty() {
            let r = sqlx::query(
                "UPDATE jobs SET letters_pending = ARRAY(SELECT DISTINCT unnest(letters_pending || $3::uuid[])),
                     lease_until = now() + make_interval(secs => $4)
                 WHERE id = $1 AND lease_owner = $2",
            )
            .bind(job.id)
            .bind(who)
            .bind(&dead)
            .bind(LEASE.as_secs_f64())
            .execute(c.store.pool())
            .await?;
            if r.rows_affected() == 0 {
                return Ok(Step::Over);
            }
        }
    }
    let mut still_dead = Vec::new();
    for t in &page {
        let actor = &job.caller.key_id;
        let done = match job.kind {
            JobKind::Redrive if t.status == "dead" => {
                let ok = matches!(c.engine.retry_now(&t.queue, t.id, actor).await?, RetryNowOutcome::Queued { .. });
                // Its letter is pending already (recorded above); one still dead is taken back out.
                if !ok {
                    still_dead.push(t.id);
                }
                ok
            }
            // Redriven by this job in a step whose runner died before committing it.
            JobKind::Redrive => already.contains(&t.id),
            // A task waiting for its dependencies is in Postgres only: cancelled there, with
            // what waits under it, as a single cancel does (released meanwhile: Redis has it).
            JobKind::Cancel if t.status == "pending" && c.cancel_pending(t.id, actor).await? => {
                c.cancel_subtree(t.id, actor).await?;
                true
            }
            JobKind::Cancel => {
                matches!(c.engine.cancel(&t.queue, t.id, actor).await?, CancelOutcome::Cancelled { .. } | CancelOutcome::Cancelling)
            }
            JobKind::Retry => matches!(c.engine.retry_now(&t.queue, t.id, actor).await?, RetryNowOutcome::Queued { .. }),
        };
        if done {
            succeeded += 1;
        } else {
            skipped += 1;
        }
    }
    let exhausted = (page.len() as i64) < STEP;
    // Redrives end with the letters phase when there are messages to remove.
    let next_phase = match (exhausted, job.kind) {
        (false, _) => "tasks",
        (true, JobKind::Redrive) => "letters",
        (true, _) => "done",
    };
    let row = sqlx::query(
        "UPDATE jobs SET cursor_id = coalesce($3, cursor_id), processed = processed + $4, succeeded = succeeded + $5,
             skipped = skipped + $6, steps = steps + 1, errors = 0, phase = $7, updated_at = now(),
             letters_pending = ARRAY(SELECT unnest(letters_pending) EXCEPT SELECT unnest($8::uuid[])),
             lease_until = now() + make_interval(secs => $9),
             state = CASE WHEN $7 = 'done' THEN 'completed' WHEN cancel_requested THEN 'cancelled' ELSE state END,
             finished_at = CASE WHEN $7 = 'done' OR cancel_requested THEN now() ELSE finished_at END
         WHERE id = $1 AND lease_owner = $2
         RETURNING state, letters_pending",
    )
    .bind(job.id)
    .bind(who)
    .bind(last)
    .bind(page.len() as i64)
    .bind(succeeded)
    .bind(skipped)
    .bind(next_phase)
    .bind(&still_dead)
    .bind(LEASE.as_secs_f64())
    .fetch_optional(c.store.pool())
    .await?;
    let Some(row) = row else { return Ok(Step::Over) };
    let state: String = row.get("state");
    job.pending = row.get("letters_pending");
    if let Some(l) = last {
        job.cursor = l;
    }
    job.phase = next_phase.to_owned();
    Ok(if state == "running" { Step::More } else { Step::Over })
}

/// One sweep of the SQS queue for the pending letters; the job completes when none is left,
/// the queue was seen whole, or after [`MAX_SWEEPS`].
async fn letters_step(c: &Chronos, dlq: &mut DlqHandle, who: &str, job: &mut Held) -> Result<Step> {
    let (removed, complete) = if job.pending.is_empty() {
        (Vec::new(), true)
    } else if !dlq.configured() {
        // An embedding without SQS: nothing to remove the letters from; say so and finish.
        sqlx::query("UPDATE jobs SET last_error = $3 WHERE id = $1 AND lease_owner = $2")
            .bind(job.id)
            .bind(who)
            .bind("no SQS dead-letter queue is configured where this job ran; its letters were not looked for")
            .execute(c.store.pool())
            .await?;
        (Vec::new(), true)
    } else {
        let dlq = dlq.get().await?;
        let ids: HashSet<String> = job.pending.iter().map(Uuid::to_string).collect();
        let sweep = crate::client::sweep_letters(dlq, &ids, SWEEP_BUDGET).await?;
        let removed: Vec<Uuid> = sweep.removed.iter().filter_map(|s| s.parse().ok()).collect();
        let complete = sweep.exhausted || removed.len() == ids.len();
        (removed, complete)
    };
    let row = sqlx::query(
        "UPDATE jobs SET letters_pending = ARRAY(SELECT unnest(letters_pending) EXCEPT SELECT unnest($3::uuid[])),
             sqs_messages_removed = sqs_messages_removed + $4, letter_sweeps = letter_sweeps + 1, errors = 0, updated_at = now(),
             lease_until = now() + make_interval(secs => $5)
         WHERE id = $1 AND lease_owner = $2
         RETURNING letter_sweeps, cancel_requested",
    )
    .bind(job.id)
    .bind(who)
    .bind(&removed)
    .bind(removed.len() as i64)
    .bind(LEASE.as_secs_f64())
    .fetch_optional(c.store.pool())
    .await?;
    let Some(row) = row else { return Ok(Step::Over) };
    let sweeps: i32 = row.get("letter_sweeps");
    let cancelled: bool = row.get("cancel_requested");
    job.pending.retain(|id| !removed.contains(id));
    if !(complete || sweeps >= MAX_SWEEPS || cancelled) {
        return Ok(Step::More);
    }
    sqlx::query(
        "UPDATE jobs SET phase = 'done', state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'completed' END,
             sqs_letters_not_found = cardinality(letters_pending), finished_at = now(), updated_at = now()
         WHERE id = $1 AND lease_owner = $2",
    )
    .bind(job.id)
    .bind(who)
    .execute(c.store.pool())
    .await?;
    Ok(Step::Over)
}

/// The SQS queue a runner removes letters from: connected already, or by name on first use.
pub struct DlqHandle {
    dlq: Option<Dlq>,
    name: Option<String>,
}

impl DlqHandle {
    pub fn new(dlq: Option<Dlq>, name: Option<String>) -> Self {
        DlqHandle { dlq, name }
    }

    fn configured(&self) -> bool {
        self.dlq.is_some() || self.name.is_some()
    }

    async fn get(&mut self) -> Result<&Dlq> {
        if self.dlq.is_none() {
            let Some(name) = &self.name else {
                return Err(Error::Sqs("no SQS dead-letter queue is configured in this process".into()));
            };
            self.dlq = Some(Dlq::connect(name).await?);
        }
        Ok(self.dlq.as_ref().expect("set above"))
    }
}

/// Work jobs until `stop` is set: every job as it is announced, and those whose runner died
/// once their lease expired. `who` names this runner in the leases (unique per process).
pub async fn run_jobs(c: Chronos, mut dlq: DlqHandle, who: String, mut stop: watch::Receiver<bool>) {
    let mut listener: Option<PgListener> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        if listener.is_none() {
            // Listen before looking, so a job announced in between still wakes the wait below.
            listener = match PgListener::connect_with(c.store.pool()).await {
                Ok(mut l) => l.listen(CHANNEL).await.ok().map(|_| l),
                Err(_) => None,
            };
        }
        loop {
            match claim(&c, &who, None).await {
                Ok(Some(job)) => work(&c, &mut dlq, &who, job, None, &stop).await,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot look for jobs; will retry");
                    break;
                }
            }
            if *stop.borrow() {
                return;
            }
        }
        let announced = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = announced => if r.is_err() { listener = None },
            _ = tokio::time::sleep(RESCAN) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Work jobs for at most `budget` (the tick: resumes jobs whose runner died, and runs them
/// when no process runs the background services). Returns how many jobs it worked on.
pub async fn run_due(c: &Chronos, dlq: &mut DlqHandle, who: &str, budget: Duration) -> Result<usize> {
    let deadline = Instant::now() + budget;
    let (_tx, stop) = watch::channel(false);
    let mut n = 0;
    while Instant::now() < deadline {
        let Some(job) = claim(c, who, None).await? else { break };
        work(c, dlq, who, job, Some(deadline), &stop).await;
        n += 1;
    }
    Ok(n)
}

/// Work job `id` here until it ends or `stop` is set, if no other runner holds it (a CLI that
/// follows its own job need not wait for a worker). Returns whether it took the job.
pub async fn run_job(c: &Chronos, dlq: &mut DlqHandle, who: &str, id: Uuid, stop: &watch::Receiver<bool>) -> Result<bool> {
    let Some(job) = claim(c, who, Some(id)).await? else { return Ok(false) };
    work(c, dlq, who, job, None, stop).await;
    Ok(true)
}
