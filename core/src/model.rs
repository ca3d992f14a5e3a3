//! The task model: what a producer submits ([`NewTask`]), how it is validated and encoded for
//! the Redis scripts ([`PreparedTask`]), and what a worker receives ([`ClaimedTask`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

pub type TaskId = Uuid;

pub const DEFAULT_QUEUE: &str = "default";
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const MAX_MAX_ATTEMPTS: u32 = 1000;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 256 * 1024;
pub const MAX_NAME_LEN: usize = 128;
pub const MAX_QUEUE_LEN: usize = 64;
/// Longest group (tenant) name, in bytes.
pub const MAX_GROUP_LEN: usize = 128;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// Where a task is in its life. `completed`, `dead` and `cancelled` are terminal
/// (a dead task can still be retried by hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waits for the tasks it depends on (a flow's children, `depends_on`); held in Postgres
    /// only, until the last of them finishes.
    Pending,
    Scheduled,
    Queued,
    Running,
    Retrying,
    Completed,
    Dead,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Pending,
        Status::Scheduled,
        Status::Queued,
        Status::Running,
        Status::Retrying,
        Status::Completed,
        Status::Dead,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Scheduled => "scheduled",
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Retrying => "retrying",
            Status::Completed => "completed",
            Status::Dead => "dead",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Dead | Status::Cancelled)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Status::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            Error::invalid(
                "status",
                format!("unknown status {s:?}; expected one of pending, scheduled, queued, running, retrying, completed, dead, cancelled"),
            )
        })
    }
}

/// Priority 0–100, higher runs first. Accepts the names `critical` (100), `high` (75),
/// `normal` (50) and `low` (25) wherever a number is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Priority(u8);

impl Priority {
    pub const CRITICAL: Priority = Priority(100);
    pub const HIGH: Priority = Priority(75);
    pub const NORMAL: Priority = Priority(50);
    pub const LOW: Priority = Priority(25);

    pub fn new(value: i64) -> Result<Self> {
        if (0..=100).contains(&value) {
            Ok(Priority(value as u8))
        } else {
            Err(Error::invalid("priority", format!("{value} is out of range; use 0–100 or critical, high, normal, low")))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

impl FromStr for Priority {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "critical" => Ok(Priority::CRITICAL),
            "high" => Ok(Priority::HIGH),
            "normal" => Ok(Priority::NORMAL),
            "low" => Ok(Priority::LOW),
            other => match other.parse::<i64>() {
                Ok(n) => Priority::new(n),
                Err(_) => Err(Error::invalid("priority", format!("{other:?} is not a priority; use 0–100 or critical, high, normal, low"))),
            },
        }
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(i64),
            Name(String),
        }
        let raw = Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected 0–100 or one of critical, high, normal, low"))?;
        match raw {
            Raw::Num(n) => Priority::new(n),
            Raw::Name(s) => s.parse(),
        }
        .map_err(|e| match e {
            Error::Invalid { message, .. } => serde::de::Error::custom(message),
            other => serde::de::Error::custom(other),
        })
    }
}

/// Random spread applied to a retry delay (thundering herds after an outage are the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// The computed delay exactly.
    None,
    /// Uniform in `[0, delay]` (AWS's "full jitter").
    #[default]
    Full,
    /// Uniform in `[delay/2, delay]`.
    Equal,
}

impl Jitter {
    fn as_str(self) -> &'static str {
        match self {
            Jitter::None => "none",
            Jitter::Full => "full",
            Jitter::Equal => "equal",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    /// `min(cap, base * 2^(attempt-1))`.
    #[default]
    Exponential,
    /// `min(cap, base)` every time.
    Fixed,
}

/// Retry delay policy. Default: exponential, 1 s base, 1 h cap, full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default)]
    pub kind: BackoffKind,
    #[serde(default = "Backoff::default_base")]
    pub base_ms: u64,
    #[serde(default = "Backoff::default_cap")]
    pub cap_ms: u64,
    #[serde(default)]
    pub jitter: Jitter,
}

impl Backoff {
    fn default_base() -> u64 {
        1_000
    }
    fn default_cap() -> u64 {
        3_600_000
    }

    pub fn exponential(base: Duration, cap: Duration, jitter: Jitter) -> Self {
        Backoff { kind: BackoffKind::Exponential, base_ms: base.as_millis() as u64, cap_ms: cap.as_millis() as u64, jitter }
    }

    pub fn fixed(delay: Duration) -> Self {
        let ms = delay.as_millis() as u64;
        Backoff { kind: BackoffKind::Fixed, base_ms: ms, cap_ms: ms, jitter: Jitter::None }
    }

    pub fn validate(&self) -> Result<()> {
        if self.base_ms == 0 {
            return Err(Error::invalid("backoff.base_ms", "must be at least 1"));
        }
        if self.cap_ms < self.base_ms {
            return Err(Error::invalid("backoff.cap_ms", format!("must be at least base_ms ({})", self.base_ms)));
        }
        if self.cap_ms > 7 * 24 * 3_600_000 {
            return Err(Error::invalid("backoff.cap_ms", "must be at most 7 days (604800000)"));
        }
        Ok(())
    }

    /// The compact form stored in the task hash; `backoff_delay` in `lib.lua` parses it and
    /// computes the delay (the one place the formula lives; tests/tests/scripts.rs tables it).
    pub fn encode(&self) -> String {
        let k = match self.kind {
            BackoffKind::Exponential => 'e',
            BackoffKind::Fixed => 'f',
        };
        format!("{k}:{}:{}:{}", self.base_ms, self.cap_ms, self.jitter.as_str())
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut it = s.split(':');
        let kind = match it.next()? {
            "e" => BackoffKind::Exponential,
            "f" => BackoffKind::Fixed,
            _ => return None,
        };
        let base_ms = it.next()?.parse().ok()?;
        let cap_ms = it.next()?.parse().ok()?;
        let jitter = match it.next()? {
            "none" => Jitter::None,
            "full" => Jitter::Full,
            "equal" => Jitter::Equal,
            _ => return None,
        };
        Some(Backoff { kind, base_ms, cap_ms, jitter })
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { kind: BackoffKind::Exponential, base_ms: 1_000, cap_ms: 3_600_000, jitter: Jitter::Full }
    }
}

/// When a new task should first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    #[default]
    Now,
    At(DateTime<Utc>),
    /// Relative to Redis time when the task is enqueued.
    After(Duration),
}

/// A task as a producer describes it. Build with [`NewTask::new`] and the `with_*` methods.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub queue: String,
    pub name: String,
    pub payload: serde_json::Value,
    pub priority: Priority,
    pub schedule: Schedule,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout: Duration,
    pub idempotency_key: Option<String>,
    /// The API key that submitted it (set by the API, not by producers).
    pub created_by: Option<String>,
    /// Set on the occurrences a schedule plans: which schedule and fire instant (this also
    /// fixes the task id, so an occurrence planned twice is still one task).
    pub origin: Option<Origin>,
    /// When it was submitted, at Postgres's precision (microseconds): the row's `created_at`
    /// and the base of a `delay`. Set by [`NewTask::prepare`] when unset, so the answer to a
    /// submission can show what was stored without reading it back.
    pub submitted_at: Option<DateTime<Utc>>,
    /// The group (tenant) it belongs to, e.g. a customer id: a queue's `group_concurrency` and
    /// `group_rate` apply per group, and groups take turns (see [`crate::limits`]).
    pub group: Option<String>,
    /// A deadline: no attempt starts after it; a task still waiting then ends `cancelled` with
    /// the reason (decided by the claim script, in Redis time).
    pub expires_at: Option<DateTime<Utc>>,
    /// The W3C `traceparent` of whoever submitted it (see [`crate::telemetry`]): the worker's
    /// spans continue that trace.
    pub trace_context: Option<String>,
}

/// How far ahead a first run may be, whether given as `run_at` or as a delay: 10 years.
pub const MAX_FIRST_RUN_AHEAD: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// An instant at Postgres's precision (microseconds), so what is answered is what is stored.
pub fn stored_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    t.trunc_subsecs(6)
}

/// What a schedule does when an occurrence comes due while its previous run is not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Run anyway.
    #[default]
    Allow,
    /// Drop the occurrence (recorded as cancelled, with the reason).
    Skip,
    /// Keep at most one occurrence waiting; it starts when the previous run ends.
    QueueOne,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Skip => "skip",
            Overlap::QueueOne => "queue_one",
        }
    }
    /// The one-letter form the claim script reads ("" = no guard).
    pub fn code(self) -> &'static str {
        match self {
            Overlap::Allow => "",
            Overlap::Skip => "s",
            Overlap::QueueOne => "q",
        }
    }
}

impl FromStr for Overlap {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [Overlap::Allow, Overlap::Skip, Overlap::QueueOne]
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| Error::invalid("overlap", format!("{s:?} is not an overlap policy; use allow, skip or queue_one")))
    }
}

/// The schedule an occurrence came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub schedule_id: Uuid,
    pub fire_at: DateTime<Utc>,
    pub overlap: Overlap,
}

impl Origin {
    /// The id of the occurrence of `schedule_id` at `fire_at`: a UUIDv7 whose timestamp is the
    /// fire instant and whose other bits hash (schedule, instant), so every tick that plans this
    /// occurrence names the same task.
    pub fn task_id(&self) -> TaskId {
        use sha2::{Digest, Sha256};
        let ms = self.fire_at.timestamp_millis().max(0) as u64;
        let mut h = Sha256::new();
        h.update(self.schedule_id.as_bytes());
        h.update(ms.to_be_bytes());
        let d = h.finalize();
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        b[6..].copy_from_slice(&d[..10]);
        b[6] = 0x70 | (b[6] & 0x0f);
        b[8] = 0x80 | (b[8] & 0x3f);
        Uuid::from_bytes(b)
    }
}

impl NewTask {
    pub fn new(name: impl Into<String>, payload: serde_json::Value) -> Self {
        NewTask {
            queue: DEFAULT_QUEUE.to_owned(),
            name: name.into(),
            payload,
            priority: Priority::default(),
            schedule: Schedule::Now,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            timeout: DEFAULT_TIMEOUT,
            idempotency_key: None,
            created_by: None,
            origin: None,
            submitted_at: None,
            group: None,
            expires_at: None,
            trace_context: None,
        }
    }

    /// The first due time as seen by the producer's clock, `now` being the submission
    /// (Postgres record; Redis decides exactly).
    pub fn first_run_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        stored_precision(match self.schedule {
            Schedule::Now => now,
            Schedule::At(at) => at,
            Schedule::After(d) => now + chrono::Duration::from_std(d).unwrap_or_default(),
        })
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.schedule = Schedule::At(at);
        self
    }
    pub fn delay(mut self, d: Duration) -> Self {
        self.schedule = Schedule::After(d);
        self
    }
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.backoff = b;
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    pub fn idempotency_key(mut self, k: impl Into<String>) -> Self {
        self.idempotency_key = Some(k.into());
        self
    }
    pub fn group(mut self, g: impl Into<String>) -> Self {
        self.group = Some(g.into());
        self
    }
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(at);
        self
    }
    /// Continue this W3C `traceparent`'s trace in the worker (see [`crate::telemetry`]).
    pub fn trace_context(mut self, traceparent: impl Into<String>) -> Self {
        self.trace_context = Some(traceparent.into());
        self
    }

    /// Validate and encode. `max_payload` is the payload size limit in bytes.
    pub fn prepare(mut self, max_payload: usize) -> Result<PreparedTask> {
        let submitted = *self.submitted_at.get_or_insert_with(|| stored_precision(Utc::now()));
        validate_queue_name(&self.queue)?;
        validate_task_name(&self.name)?;
        if let Some(tc) = &self.trace_context
            && crate::telemetry::parse_traceparent(tc).is_none()
        {
            return Err(Error::invalid("trace_context", "is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)"));
        }
        let payload = serde_json::to_string(&self.payload).map_err(|e| Error::invalid("payload", e.to_string()))?;
        if payload.len() > max_payload {
            return Err(Error::invalid("payload", format!("is {} bytes; the limit is {max_payload} bytes", payload.len())));
        }
        crate::builtin::check_payload(&self.name, &self.payload)?;
        if self.max_attempts == 0 || self.max_attempts > MAX_MAX_ATTEMPTS {
            return Err(Error::invalid("max_attempts", format!("must be 1–{MAX_MAX_ATTEMPTS}")));
        }
        self.backoff.validate()?;
        if self.timeout < Duration::from_millis(1) || self.timeout > MAX_TIMEOUT {
            return Err(Error::invalid("timeout_ms", format!("must be 1–{} ms", MAX_TIMEOUT.as_millis())));
        }
        if let Some(k) = &self.idempotency_key
            && (k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_LEN)
        {
            return Err(Error::invalid("idempotency_key", format!("must be 1–{MAX_IDEMPOTENCY_KEY_LEN} bytes")));
        }
        if let Some(g) = &self.group {
            validate_group(g)?;
        }
        // One range for both ways of saying when: from 1970 (an instant in the past runs at
        // once) to 10 years after the submission.
        let latest = submitted + chrono::Duration::from_std(MAX_FIRST_RUN_AHEAD).unwrap_or_default();
        if let Schedule::At(at) = self.schedule
            && (at.timestamp_millis() < 0 || at > latest)
        {
            return Err(Error::invalid("run_at", format!("must be between 1970-01-01T00:00:00Z and 10 years from now ({latest})")));
        }
        if let Schedule::After(d) = self.schedule
            && d > MAX_FIRST_RUN_AHEAD
        {
            return Err(Error::invalid("delay_ms", format!("must be at most 10 years ({} ms)", MAX_FIRST_RUN_AHEAD.as_millis())));
        }
        if let Some(ex) = self.expires_at {
            let first = self.first_run_at(submitted);
            if ex <= first {
                return Err(Error::invalid(
                    "expires_at",
                    format!("{ex} is not after the task's first run ({first}); it could never start"),
                ));
            }
            if ex > latest {
                return Err(Error::invalid("expires_at", format!("must be at most 10 years from now ({latest})")));
            }
        }
        let id = self.origin.as_ref().map_or_else(Uuid::now_v7, Origin::task_id);
        Ok(PreparedTask { id, task: self, payload_json: payload })
    }
}

/// A validated task with its id and encoded payload, ready for Postgres and Redis.
#[derive(Debug, Clone)]
pub struct PreparedTask {
    pub id: TaskId,
    pub task: NewTask,
    pub payload_json: String,
}

impl PreparedTask {
    /// The idempotency key as deduplicated: scoped to the submitting API key, so one client's
    /// key can never return (or block) another client's task.
    pub fn dedupe_key(&self) -> Option<String> {
        let k = self.task.idempotency_key.as_deref()?;
        Some(match &self.task.created_by {
            Some(by) => format!("{by}/{k}"),
            None => k.to_owned(),
        })
    }

    /// The first due time as seen by the producer's clock (Postgres record; Redis decides exactly).
    pub fn approx_run_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.task.first_run_at(self.task.submitted_at.unwrap_or(now))
    }
}

/// Queue names become part of Redis keys and hash tags: keep them to a safe alphabet.
pub fn validate_queue_name(q: &str) -> Result<()> {
    if q.is_empty() || q.len() > MAX_QUEUE_LEN || !q.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.') {
        let q = excerpt(q);
        return Err(Error::invalid("queue", format!("{q} is not a valid queue name; use 1–{MAX_QUEUE_LEN} of A–Z a–z 0–9 _ - .")));
    }
    // "." and ".." cannot stand for themselves in a URL path segment: a link to such a queue
    // would resolve to another page.
    if q == "." || q == ".." {
        return Err(Error::invalid("queue", format!("{q:?} is not a valid queue name; \".\" and \"..\" are path segments, not names")));
    }
    Ok(())
}

/// Group names become part of Redis keys: printable, no spaces, at most [`MAX_GROUP_LEN`] bytes.
pub fn validate_group(g: &str) -> Result<()> {
    if g.is_empty() || g.len() > MAX_GROUP_LEN || !g.bytes().all(|b| b.is_ascii_graphic()) {
        let g = excerpt(g);
        return Err(Error::invalid(
            "group",
            format!("{g} is not a valid group; use 1–{MAX_GROUP_LEN} printable ASCII characters, no spaces"),
        ));
    }
    Ok(())
}

/// A value for an error message: quoted, and cut to its start when long (a 100 KB name is not
/// echoed back whole).
pub fn excerpt(s: &str) -> String {
    const SHOWN: usize = 64;
    if s.chars().count() <= SHOWN {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(SHOWN).collect();
    format!("{head:?}… ({} bytes)", s.len())
}

pub fn validate_task_name(n: &str) -> Result<()> {
    if n.is_empty() || n.len() > MAX_NAME_LEN || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b)) {
        let n = excerpt(n);
        return Err(Error::invalid("name", format!("{n} is not a valid task name; use 1–{MAX_NAME_LEN} of A–Z a–z 0–9 _ - . : /")));
    }
    Ok(())
}

/// One leased attempt, as the claim script hands it to a worker.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub id: TaskId,
    pub queue: String,
    pub name: String,
    /// The payload as JSON text; parsed by the handler that needs it.
    pub payload: String,
    /// Fencing token of this lease: ack, fail and heartbeat must present it.
    pub token: u64,
    /// 1-based attempt number.
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub backoff: Backoff,
    pub idempotency_key: Option<String>,
    /// From when it was due (its run_at, or its retry's due time) to this claim, in Redis time.
    pub waited: Duration,
    /// The producer's W3C `traceparent`, when it sent one.
    pub trace_context: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_names_and_numbers_parse_and_out_of_range_is_refused() {
        assert_eq!("critical".parse::<Priority>().unwrap(), Priority(100));
        assert_eq!("low".parse::<Priority>().unwrap(), Priority(25));
        assert_eq!("7".parse::<Priority>().unwrap(), Priority(7));
        assert!("101".parse::<Priority>().is_err());
        assert!("urgent".parse::<Priority>().is_err());
        let p: Priority = serde_json::from_str("\"high\"").unwrap();
        assert_eq!(p, Priority::HIGH);
        assert!(serde_json::from_str::<Priority>("-1").is_err());
    }

    #[test]
    fn an_occurrence_id_is_a_v7_uuid_fixed_by_schedule_and_instant() {
        let at = DateTime::parse_from_rfc3339("2026-11-27T09:00:00Z").unwrap().to_utc();
        let o = Origin { schedule_id: Uuid::now_v7(), fire_at: at, overlap: Overlap::Allow };
        let id = o.task_id();
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id, Origin { overlap: Overlap::Skip, ..o }.task_id());
        assert_ne!(id, Origin { fire_at: at + chrono::Duration::seconds(1), ..o }.task_id());
        assert_ne!(id, Origin { schedule_id: Uuid::now_v7(), ..o }.task_id());
        let (secs, _) = id.get_timestamp().unwrap().to_unix();
        assert_eq!(secs as i64, at.timestamp());
    }

    #[test]
    fn backoff_encoding_round_trips() {
        for b in [Backoff::default(), Backoff::fixed(Duration::from_secs(3))] {
            assert_eq!(Backoff::decode(&b.encode()), Some(b));
        }
    }

    #[test]
    fn invalid_tasks_name_the_field_to_fix() {
        let field = |t: NewTask| match t.prepare(1024) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        };
        assert_eq!(field(NewTask::new("x", serde_json::json!({})).queue("a{b}")), "queue");
        assert_eq!(field(NewTask::new("", serde_json::json!({}))), "name");
        assert_eq!(field(NewTask::new("x", serde_json::json!("a".repeat(2000)))), "payload");
        assert_eq!(field(NewTask::new("x", serde_json::json!({})).max_attempts(0)), "max_attempts");
        assert_eq!(field(NewTask::new("x", serde_json::json!({})).timeout(Duration::ZERO)), "timeout_ms");
        assert!(NewTask::new("email.send", serde_json::json!({"to": "a@b"})).prepare(1024).is_ok());
    }
}
