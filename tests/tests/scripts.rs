//! Table-driven tests of the Redis scripts: seed a starting state, run one transition, compare
//! the whole resulting state of the queue (every set and every task's status).

use std::collections::BTreeMap;
use std::time::Duration;

use chronos_core::model::{Backoff, Jitter, NewTask, PreparedTask};
use chronos_core::queue::{CancelOutcome, Engine, FailKind, FailOutcome, LeaseState, RetryNowOutcome};
use chronos_tests::TestEnv;
use serde_json::json;
use uuid::Uuid;

const Q: &str = "q";
const LEASE: Duration = Duration::from_secs(30);

/// The whole live state of queue `Q`, with task ids replaced by their labels.
#[derive(Debug, PartialEq, Eq, Default)]
struct State {
    ready: Vec<&'static str>,
    delayed: Vec<&'static str>,
    retry: Vec<&'static str>,
    active: Vec<&'static str>,
    dead: Vec<&'static str>,
    dlq: Vec<&'static str>,
    /// label → (status, attempts)
    tasks: BTreeMap<&'static str, (String, u32)>,
}

struct Fixture {
    env: TestEnv,
    labels: Vec<(&'static str, Uuid)>,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture { env: TestEnv::new().await, labels: Vec::new() }
    }

    fn engine(&self) -> &Engine {
        &self.env.engine
    }

    fn id(&self, label: &str) -> Uuid {
        self.labels.iter().find(|(l, _)| *l == label).unwrap().1
    }

    fn label(&self, id: &str) -> &'static str {
        self.labels.iter().find(|(_, u)| u.to_string() == id).map(|(l, _)| *l).unwrap_or("?")
    }

    async fn add(&mut self, label: &'static str, t: NewTask) -> (Uuid, bool) {
        let p: PreparedTask = t.queue(Q).prepare(1 << 20).unwrap();
        let r = self.engine().enqueue(std::slice::from_ref(&p), Duration::from_secs(60)).await.unwrap()[0];
        if r.1 {
            self.labels.push((label, p.id));
        }
        r
    }

    async fn claim(&self, n: usize) -> Vec<(Uuid, u64)> {
        self.engine().claim(Q, "w1", n, LEASE).await.unwrap().tasks.into_iter().map(|t| (t.id, t.token)).collect()
    }

    async fn state(&self) -> State {
        let k = self.engine().keys(Q);
        let mut conn = self.engine().connection();
        let mut s = State::default();
        for (key, into) in [
            (&k.ready, &mut s.ready),
            (&k.delayed, &mut s.delayed),
            (&k.retry, &mut s.retry),
            (&k.active, &mut s.active),
            (&k.dead, &mut s.dead),
            (&k.dlq, &mut s.dlq),
        ] {
            let ids: Vec<String> = redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
            *into = ids.iter().map(|i| self.label(i)).collect();
        }
        for (label, id) in &self.labels {
            let f = self.engine().task_fields(Q, *id).await.unwrap();
            if let Some(st) = f.get("st") {
                s.tasks.insert(label, (st.clone(), f.get("a").and_then(|a| a.parse().ok()).unwrap_or(0)));
            }
        }
        s
    }
}

fn task() -> NewTask {
    NewTask::new("noop", json!({})).backoff(Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10), Jitter::None))
}

fn st(pairs: &[(&'static str, &str, u32)]) -> BTreeMap<&'static str, (String, u32)> {
    pairs.iter().map(|(l, s, a)| (*l, (s.to_string(), *a))).collect()
}

#[tokio::test]
async fn enqueue_puts_due_tasks_in_ready_and_future_ones_in_delayed() {
    let mut f = Fixture::new().await;
    f.add("now", task()).await;
    f.add("later", task().delay(Duration::from_secs(60))).await;
    f.add("past", task().run_at(chrono::Utc::now() - chrono::Duration::seconds(5))).await;
    assert_eq!(
        f.state().await,
        State {
            ready: vec!["now", "past"],
            delayed: vec!["later"],
            tasks: st(&[("now", "queued", 0), ("later", "scheduled", 0), ("past", "queued", 0)]),
            ..Default::default()
        }
    );
    f.env.cleanup().await;
}

#[tokio::test]
async fn an_idempotency_key_dedupes_enqueue_and_returns_the_first_id() {
    let mut f = Fixture::new().await;
    let (first, created) = f.add("a", task().idempotency_key("order-42")).await;
    assert!(created);
    let (again, created_again) = f.add("b", task().idempotency_key("order-42")).await;
    assert_eq!(again, first);
    assert!(!created_again);
    assert_eq!(f.state().await, State { ready: vec!["a"], tasks: st(&[("a", "queued", 0)]), ..Default::default() });
    f.env.cleanup().await;
}

#[tokio::test]
async fn claim_leases_ready_tasks_and_promotes_due_delayed_ones() {
    let mut f = Fixture::new().await;
    f.add("a", task()).await;
    f.add("soon", task().delay(Duration::from_millis(50))).await;
    f.add("far", task().delay(Duration::from_secs(60))).await;
    tokio::time::sleep(Duration::from_millis(80)).await;
    let got = f.claim(10).await;
    assert_eq!(got.len(), 2);
    assert_ne!(got[0].1, got[1].1, "each lease gets its own fencing token");
    assert_eq!(
        f.state().await,
        State {
            active: vec!["a", "soon"],
            delayed: vec!["far"],
            tasks: st(&[("a", "running", 1), ("soon", "running", 1), ("far", "scheduled", 0)]),
            ..Default::default()
        }
    );
    f.env.cleanup().await;
}

#[tokio::test]
async fn ack_completes_with_the_current_token_and_refuses_a_stale_one() {
    let mut f = Fixture::new().await;
    f.add("a", task()).await;
    f.add("b", task()).await;
    let got = f.claim(2).await;
    let (a, b) = (got[0], got[1]);
    let r = f.engine().ack(Q, "w1", &[(a.0, a.1), (b.0, b.1 + 1000)]).await.unwrap();
    assert_eq!(r, vec![true, false]);
    assert_eq!(f.state().await, State { active: vec!["b"], tasks: st(&[("b", "running", 1)]), ..Default::default() });
    f.env.cleanup().await;
}

#[tokio::test]
async fn ack_claim_completes_the_current_lease_refuses_a_stale_one_and_leases_the_next_in_one_call() {
    let mut f = Fixture::new().await;
    for l in ["a", "b", "c", "d"] {
        f.add(l, task()).await;
    }
    // At most two running: the claim half sees the slots the ack half freed.
    let limits = chronos_core::limits::QueueLimits { concurrency: Some(2), ..Default::default() };
    f.engine().set_limits(Q, &limits).await.unwrap();
    let got = f.claim(2).await;
    let (a, b) = (got[0], got[1]);
    assert!(f.claim(1).await.is_empty(), "the limit holds the third task back");
    let done = |(id, token): (Uuid, u64)| chronos_core::queue::Completion { id, token, logs: None, result: None };
    let (answers, batch) = f.engine().ack_and_claim(Q, "w1", &[done(a), done((b.0, b.1 + 1000))], 2, LEASE).await.unwrap();
    assert_eq!(answers, vec![true, false], "a acked; b's stale token refused");
    let next: Vec<&str> = batch.tasks.iter().map(|t| f.label(&t.id.to_string())).collect();
    assert_eq!(next, vec!["c"], "one slot freed by the ack: one task leased after it");
    assert_eq!(
        f.state().await,
        State {
            ready: vec!["d"],
            active: vec!["b", "c"],
            tasks: st(&[("b", "running", 1), ("c", "running", 1), ("d", "queued", 0)]),
            ..Default::default()
        }
    );
    // Its outbox entries are ack's and claim's: a completion, then a claim.
    let k = f.engine().keys(Q);
    let mut conn = f.engine().connection();
    let kinds: Vec<redis::streams::StreamId> =
        redis::cmd("XRANGE").arg(&k.outbox).arg("-").arg("+").query_async::<redis::streams::StreamRangeReply>(&mut conn).await.unwrap().ids;
    let kinds: Vec<String> = kinds.iter().map(|e| e.get::<String>("k").unwrap()).collect();
    assert_eq!(&kinds[kinds.len() - 2..], ["d", "c"]);
    f.env.cleanup().await;
}

#[tokio::test]
async fn fail_retries_with_backoff_then_dead_letters_when_attempts_run_out() {
    let mut f = Fixture::new().await;
    f.add("a", task().max_attempts(2)).await;
    let (id, tok) = f.claim(1).await[0];
    let out = f.engine().fail(Q, id, tok, "w1", FailKind::Retryable, "boom", "trace", None).await.unwrap();
    assert!(matches!(out, FailOutcome::Retrying { .. }));
    assert_eq!(f.state().await, State { retry: vec!["a"], tasks: st(&[("a", "retrying", 1)]), ..Default::default() });

    // a stale token cannot fail it again
    assert_eq!(f.engine().fail(Q, id, tok, "w1", FailKind::Retryable, "x", "", None).await.unwrap(), FailOutcome::Stale);

    tokio::time::sleep(Duration::from_millis(120)).await;
    let (id2, tok2) = f.claim(1).await[0];
    assert_eq!(id2, id);
    let out = f.engine().fail(Q, id, tok2, "w1", FailKind::Retryable, "boom again", "", None).await.unwrap();
    assert_eq!(out, FailOutcome::Dead);
    assert_eq!(f.state().await, State { dead: vec!["a"], dlq: vec!["a"], tasks: st(&[("a", "dead", 2)]), ..Default::default() });
    assert_eq!(f.engine().task_fields(Q, id).await.unwrap()["le"], "boom again");
    f.env.cleanup().await;
}

#[tokio::test]
async fn a_permanent_failure_skips_the_remaining_attempts() {
    let mut f = Fixture::new().await;
    f.add("a", task().max_attempts(5)).await;
    let (id, tok) = f.claim(1).await[0];
    assert_eq!(f.engine().fail(Q, id, tok, "w1", FailKind::Permanent, "bad input", "", None).await.unwrap(), FailOutcome::Dead);
    assert_eq!(f.state().await, State { dead: vec!["a"], dlq: vec!["a"], tasks: st(&[("a", "dead", 1)]), ..Default::default() });
    f.env.cleanup().await;
}

#[tokio::test]
async fn a_retry_delay_override_replaces_the_backoff() {
    let mut f = Fixture::new().await;
    f.add("a", task()).await;
    let (id, tok) = f.claim(1).await[0];
    let out = f.engine().fail(Q, id, tok, "w1", FailKind::Retryable, "later", "", Some(Duration::from_secs(30))).await.unwrap();
    let FailOutcome::Retrying { due_ms } = out else { panic!("{out:?}") };
    let now = chrono::Utc::now().timestamp_millis();
    assert!((due_ms - now - 30_000).abs() < 1_000, "due in ~30 s, got {} ms", due_ms - now);
    f.env.cleanup().await;
}

#[tokio::test]
async fn heartbeat_extends_current_leases_reports_cancellation_and_refuses_stale_tokens() {
    let mut f = Fixture::new().await;
    f.add("a", task()).await;
    f.add("b", task()).await;
    let got = f.claim(2).await;
    assert_eq!(f.engine().cancel(Q, got[1].0, "tester").await.unwrap(), CancelOutcome::Cancelling);
    let states = f.engine().heartbeat(Q, LEASE, &[got[0], got[1], (got[0].0, got[0].1 + 99)]).await.unwrap();
    assert_eq!(states, vec![LeaseState::Extended, LeaseState::CancelRequested, LeaseState::Lost]);
    // the cancelled running task finishes as cancelled and leaves the queue
    assert_eq!(
        f.engine().fail(Q, got[1].0, got[1].1, "w1", FailKind::Cancelled, "cancelled", "", None).await.unwrap(),
        FailOutcome::Cancelled
    );
    assert_eq!(f.state().await, State { active: vec!["a"], tasks: st(&[("a", "running", 1)]), ..Default::default() });
    f.env.cleanup().await;
}

#[tokio::test]
async fn cancel_removes_waiting_scheduled_and_dead_tasks_at_once() {
    let mut f = Fixture::new().await;
    f.add("queued", task()).await;
    f.add("sched", task().delay(Duration::from_secs(60))).await;
    f.add("dead", task().max_attempts(1).priority(chronos_core::Priority::CRITICAL)).await;
    let (id, tok) = f.claim(1).await[0];
    assert_eq!(id, f.id("dead"));
    f.engine().fail(Q, id, tok, "w1", FailKind::Retryable, "x", "", None).await.unwrap();
    for l in ["queued", "sched", "dead"] {
        let out = f.engine().cancel(Q, f.id(l), "tester").await.unwrap();
        assert!(matches!(out, CancelOutcome::Cancelled { .. }), "{l}: {out:?}");
    }
    assert_eq!(f.state().await, State::default());
    assert_eq!(f.engine().cancel(Q, f.id("queued"), "tester").await.unwrap(), CancelOutcome::NotFound);
    f.env.cleanup().await;
}

#[tokio::test]
async fn retry_now_moves_retrying_and_dead_tasks_to_ready_and_refuses_waiting_ones() {
    let mut f = Fixture::new().await;
    f.add("r", task().max_attempts(3).priority(chronos_core::Priority::HIGH)).await;
    f.add("d", task().max_attempts(1).priority(chronos_core::Priority::HIGH)).await;
    f.add("w", task()).await;
    for (id, tok) in f.claim(2).await {
        f.engine().fail(Q, id, tok, "w1", FailKind::Retryable, "x", "", Some(Duration::from_secs(60))).await.unwrap();
    }
    assert_eq!(
        f.state().await,
        State {
            ready: vec!["w"],
            retry: vec!["r"],
            dead: vec!["d"],
            dlq: vec!["d"],
            tasks: st(&[("r", "retrying", 1), ("d", "dead", 1), ("w", "queued", 0)]),
            ..Default::default()
        }
    );
    assert_eq!(f.engine().retry_now(Q, f.id("r"), "op").await.unwrap(), RetryNowOutcome::Queued { was: "retrying".into() });
    assert_eq!(f.engine().retry_now(Q, f.id("d"), "op").await.unwrap(), RetryNowOutcome::Queued { was: "dead".into() });
    assert_eq!(f.engine().retry_now(Q, f.id("w"), "op").await.unwrap(), RetryNowOutcome::Refused { status: "queued".into() });
    assert_eq!(
        f.state().await,
        State {
            ready: vec!["r", "d", "w"],
            tasks: st(&[("r", "queued", 1), ("d", "queued", 1), ("w", "queued", 0)]),
            ..Default::default()
        }
    );
    // the dead task got a fresh budget: it may fail once more before dying again
    let fields = f.engine().task_fields(Q, f.id("d")).await.unwrap();
    assert_eq!(fields["ma"], "2");
    f.env.cleanup().await;
}

#[tokio::test]
async fn reap_requeues_expired_leases_and_fences_out_the_old_holder() {
    let mut f = Fixture::new().await;
    f.add("a", task().max_attempts(3)).await;
    f.add("last", task().max_attempts(1)).await;
    let got = f.engine().claim(Q, "w1", 2, Duration::from_millis(50)).await.unwrap().tasks;
    tokio::time::sleep(Duration::from_millis(80)).await;
    let (n, _) = f.engine().reap(Q, 100).await.unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        f.state().await,
        State {
            ready: vec!["a"],
            dead: vec!["last"],
            dlq: vec!["last"],
            tasks: st(&[("a", "queued", 1), ("last", "dead", 1)]),
            ..Default::default()
        }
    );
    let stale: Vec<(Uuid, u64)> = got.iter().map(|t| (t.id, t.token)).collect();
    assert_eq!(f.engine().ack(Q, "w1", &stale).await.unwrap(), vec![false, false]);
    assert_eq!(f.engine().heartbeat(Q, LEASE, &stale).await.unwrap(), vec![LeaseState::Lost, LeaseState::Lost]);
    f.env.cleanup().await;
}

#[tokio::test]
async fn release_hands_a_lease_back_without_using_up_an_attempt() {
    let mut f = Fixture::new().await;
    f.add("a", task().max_attempts(1)).await;
    let (id, tok) = f.claim(1).await[0];
    assert_eq!(f.engine().release(Q, "w1", &[(id, tok)]).await.unwrap(), vec![true]);
    assert_eq!(f.state().await, State { ready: vec!["a"], tasks: st(&[("a", "queued", 1)]), ..Default::default() });
    assert_eq!(f.engine().ack(Q, "w1", &[(id, tok)]).await.unwrap(), vec![false], "old token is fenced out");
    let (id2, tok2) = f.claim(1).await[0];
    assert_eq!(id2, id);
    // one more attempt is allowed, because the released one did not count
    assert_eq!(f.engine().fail(Q, id, tok2, "w1", FailKind::Retryable, "x", "", None).await.unwrap(), FailOutcome::Dead);
    f.env.cleanup().await;
}

#[tokio::test]
async fn a_paused_queue_is_not_claimed_from() {
    let mut f = Fixture::new().await;
    f.add("a", task()).await;
    let mut conn = f.engine().connection();
    let _: () = redis::cmd("SET").arg(f.engine().keys(Q).paused).arg(1).query_async(&mut conn).await.unwrap();
    assert!(f.claim(1).await.is_empty());
    let _: () = redis::cmd("DEL").arg(f.engine().keys(Q).paused).query_async(&mut conn).await.unwrap();
    assert_eq!(f.claim(1).await.len(), 1);
    f.env.cleanup().await;
}

#[tokio::test]
async fn a_critical_task_is_claimed_before_a_thousand_low_ones_and_fifo_holds_within_a_priority() {
    let f = Fixture::new().await;
    let low: Vec<PreparedTask> =
        (0..1000).map(|_| task().queue(Q).priority(chronos_core::Priority::LOW).prepare(1 << 20).unwrap()).collect();
    f.engine().enqueue(&low, Duration::from_secs(60)).await.unwrap();
    let critical = task().queue(Q).priority(chronos_core::Priority::CRITICAL).prepare(1 << 20).unwrap();
    f.engine().enqueue(std::slice::from_ref(&critical), Duration::from_secs(60)).await.unwrap();
    let first = f.engine().claim(Q, "w1", 1, LEASE).await.unwrap().tasks;
    assert_eq!(first[0].id, critical.id);
    let next: Vec<Uuid> = f.engine().claim(Q, "w1", 5, LEASE).await.unwrap().tasks.iter().map(|t| t.id).collect();
    let expected: Vec<Uuid> = low[..5].iter().map(|p| p.id).collect();
    assert_eq!(next, expected, "FIFO within a priority");
    f.env.cleanup().await;
}

/// Evaluate `body` after the scripts' shared `lib.lua`, with `args` as ARGV.
async fn lib_eval(env: &TestEnv, body: &str, args: &[&str]) -> redis::Value {
    let src = format!("{}{body}", chronos_core::queue::script::LUA_LIB);
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(src).arg(0);
    for a in args {
        cmd.arg(*a);
    }
    cmd.query_async(&mut env.engine.connection()).await.unwrap()
}

#[tokio::test]
async fn the_backoff_formula_in_lib_lua_doubles_up_to_the_cap_and_jitters() {
    let env = TestEnv::new().await;
    let b = Backoff::exponential(Duration::from_millis(100), Duration::from_millis(500), Jitter::None);
    let fixed = Backoff::fixed(Duration::from_millis(300));
    // (backoff, attempt, rnd) → delay in ms
    let table: Vec<(Backoff, u32, f64, i64)> = vec![
        (b, 1, 0.5, 100),
        (b, 2, 0.5, 200),
        (b, 3, 0.5, 400),
        (b, 4, 0.5, 500),
        (b, 5, 0.5, 500),
        (Backoff { jitter: Jitter::Full, ..b }, 3, 0.25, 100),
        (Backoff { jitter: Jitter::Equal, ..b }, 3, 0.5, 300),
        (Backoff { jitter: Jitter::Equal, ..b }, 1, 0.0, 50),
        (fixed, 1, 0.9, 300),
        (fixed, 7, 0.1, 300),
        (Backoff { jitter: Jitter::Full, ..fixed }, 2, 0.5, 150),
    ];
    for (backoff, attempt, rnd, want) in table {
        let got = lib_eval(
            &env,
            "return backoff_delay(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))",
            &[&backoff.encode(), &attempt.to_string(), &rnd.to_string()],
        )
        .await;
        assert_eq!(got, redis::Value::Int(want), "{} attempt {attempt} rnd {rnd}", backoff.encode());
    }
    env.cleanup().await;
}

#[tokio::test]
async fn lib_lua_builds_the_same_key_names_as_keys_rs() {
    let env = TestEnv::new().await;
    let k = env.engine.keys(Q);
    let got = lib_eval(
        &env,
        "return {task_key(ARGV[1], 'x'), payload_key(ARGV[1], 'x'), idem_key(ARGV[1], 'x'), done_key(ARGV[1], 'x'), guard_key(ARGV[1], 'x'), parked_key(ARGV[1], 'x'),
                 limits_key(ARGV[1]), rate_key(ARGV[1]), groups_count_key(ARGV[1]), waiting_groups_key(ARGV[1]), group_ready_key(ARGV[1], 'x'), group_active_key(ARGV[1], 'x')}",
        &[&k.prefix],
    )
    .await;
    let got: Vec<String> = redis::from_redis_value(got).unwrap();
    assert_eq!(
        got,
        vec![
            k.task("x"),
            k.payload("x"),
            k.idempotency("x"),
            k.done("x"),
            k.guard("x"),
            k.parked("x"),
            k.limits.clone(),
            k.rate.clone(),
            k.grouped.clone(),
            k.waiting_groups.clone(),
            k.group_ready("x"),
            k.group_active("x")
        ]
    );
    env.cleanup().await;
}

#[tokio::test]
async fn the_wait_after_a_lost_lease_counts_from_when_the_task_was_ready_again() {
    let env = TestEnv::new().await;
    let p = NewTask::new("noop", json!({})).queue(Q).prepare(1 << 20).unwrap();
    env.engine.enqueue(&[p], Duration::from_secs(60)).await.unwrap();
    let first = env.engine.claim(Q, "w1", 1, Duration::from_millis(100)).await.unwrap();
    assert_eq!(first.tasks.len(), 1);
    // The worker dies; its lease runs out long before the reaper looks.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(env.engine.reap(Q, 10).await.unwrap().0, 1);
    let again = env.engine.claim(Q, "w2", 1, LEASE).await.unwrap();
    assert_eq!(again.tasks.len(), 1);
    assert!(again.tasks[0].waited < Duration::from_millis(300), "waited {:?}: counted from before the lost run", again.tasks[0].waited);
    env.cleanup().await;
}
