//! Flows and dependencies: tasks that wait for other tasks.
//!
//! A flow is a tree submitted at once ([`Chronos::submit_flow`]): every node a task, a parent
//! runs only after all its children finished. `depends_on` ([`Chronos::submit_after`]) makes a
//! new task wait for tasks that already exist. Either way the waiting task is `pending`: it is
//! held in Postgres only (`tasks.pending_deps` counts what it still waits for, `task_deps` has
//! one row per edge), never in Redis, so a Redis that lost its data loses nothing of it.
//!
//! The audit writer closes edges: in the transaction that records a task's end it sets the
//! state of every open edge to it ([`resolve_in`], once per edge however often the task's end is
//! replayed, so a child that ran twice counts once), counts the parents down, and fails a
//! parent whose child ended dead or cancelled (unless it said `on_child_failure: "ignore"`):
//! the parent ends `cancelled` with the reason, and its own parents are counted in turn. A
//! parent whose count reached zero is `queued` (or `scheduled`, if its own run time is still
//! ahead), and after the commit put into Redis ([`release`]); one whose release died between
//! the two is found by the tick ([`crate::reconcile::sweep_never_enqueued`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::access::Caller;
use crate::client::{Chronos, SubmittedTask};
use crate::error::{Error, Result};
use crate::model::{NewTask, PreparedTask, TaskId};
use crate::queue::{CancelOutcome, Engine};
use crate::store::{Store, TaskRecord};

/// Nodes in one flow at most.
pub const MAX_FLOW_TASKS: usize = 1_000;
/// Tasks one task may depend on at most (`depends_on`).
pub const MAX_DEPENDS_ON: usize = 100;

/// What a dead or cancelled child does to the task waiting for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChildFailure {
    /// The waiting task ends `cancelled`, its `last_error` naming the child (the default).
    #[default]
    Fail,
    /// The child counts as finished; the waiting task runs when the others have.
    Ignore,
}

impl ChildFailure {
    fn column(self) -> Option<&'static str> {
        match self {
            ChildFailure::Fail => None,
            ChildFailure::Ignore => Some("ignore"),
        }
    }
}

/// One node of a flow, in pre-order: `parent` is the index of an earlier node (`None` for the
/// root, which comes first).
#[derive(Debug, Clone)]
pub struct FlowTask {
    pub task: NewTask,
    pub parent: Option<usize>,
    pub on_child_failure: ChildFailure,
}

/// A flow as submitted: its root, and the id of every node in the order given.
#[derive(Debug, Clone)]
pub struct SubmittedFlow {
    /// False when the root's idempotency key named a flow submitted before (returned instead).
    pub created: bool,
    pub root: TaskRecord,
    pub task_ids: Vec<TaskId>,
}

/// A task another waits for, with how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct Dependency {
    pub id: TaskId,
    pub name: String,
    pub queue: String,
    pub status: String,
    /// What its handler returned, once it completed.
    pub result: Option<serde_json::Value>,
    /// `child` (a flow's tree) or `depends_on`.
    pub kind: String,
}

/// The tasks `id` waits for (or waited for), in the order they were submitted.
pub async fn dependencies(store: &Store, id: TaskId) -> Result<Vec<Dependency>> {
    let rows: Vec<(Uuid, String, String, String, Option<serde_json::Value>, String)> = sqlx::query_as(
        "SELECT t.id, t.name, t.queue, t.status, t.result, d.kind FROM task_deps d JOIN tasks t ON t.id = d.depends_on
         WHERE d.task_id = $1 ORDER BY t.id",
    )
    .bind(id)
    .fetch_all(store.pool())
    .await?;
    Ok(rows.into_iter().map(|(id, name, queue, status, result, kind)| Dependency { id, name, queue, status, result, kind }).collect())
}

/// Close the open edges to tasks that just finished (`(id, status)`, status one of completed,
/// dead, cancelled), inside the audit writer's transaction; returns the tasks released (now
/// `queued` or `scheduled`), for [`release`] after the commit.
pub(crate) async fn resolve_in(tx: &mut sqlx::PgConnection, finished: &[(Uuid, &str)]) -> Result<Vec<Uuid>> {
    let mut released = Vec::new();
    let mut round: Vec<(Uuid, String)> = finished.iter().map(|(id, st)| (*id, (*st).to_owned())).collect();
    // Each round is one level of parents failed in turn; a flow is a tree of at most
    // MAX_FLOW_TASKS, and depends_on edges only point at older tasks, so this ends.
    while !round.is_empty() {
        round.sort_unstable();
        round.dedup_by_key(|(id, _)| *id);
        let ids: Vec<Uuid> = round.iter().map(|(id, _)| *id).collect();
        let sts: Vec<&str> = round.iter().map(|(_, st)| st.as_str()).collect();
        let edges: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
            "UPDATE task_deps d SET state = v.st FROM UNNEST($1::uuid[], $2::text[]) AS v(id, st)
             WHERE d.depends_on = v.id AND d.state IS NULL RETURNING d.task_id, d.depends_on, v.st",
        )
        .bind(&ids)
        .bind(&sts)
        .fetch_all(&mut *tx)
        .await?;
        if edges.is_empty() {
            break;
        }
        // Per waiting task: edges closed now, and the first child that failed.
        let mut per: BTreeMap<Uuid, (i32, Option<(Uuid, String)>)> = BTreeMap::new();
        for (parent, child, st) in edges {
            let e = per.entry(parent).or_default();
            e.0 += 1;
            if st != "completed" && e.1.is_none() {
                e.1 = Some((child, st));
            }
        }
        let parents: Vec<Uuid> = per.keys().copied().collect();
        let closed: Vec<i32> = per.values().map(|v| v.0).collect();
        let failed: Vec<Option<Uuid>> = per.values().map(|v| v.1.as_ref().map(|f| f.0)).collect();
        let failed_as: Vec<Option<&str>> = per.values().map(|v| v.1.as_ref().map(|f| f.1.as_str())).collect();
        let changed: Vec<(Uuid, String)> = sqlx::query_as(
            "WITH u AS (SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::uuid[], $4::text[]) AS v(id, n, failed, fst) ORDER BY id),
             d AS (SELECT t.id, u.n, u.failed, u.fst,
                          u.failed IS NOT NULL AND t.on_child_failure IS DISTINCT FROM 'ignore' AS fails,
                          t.pending_deps - u.n <= 0 AS ready
                   FROM tasks t JOIN u ON u.id = t.id WHERE t.status = 'pending' FOR UPDATE OF t)
             UPDATE tasks t SET
               pending_deps = greatest(t.pending_deps - d.n, 0),
               status = CASE WHEN d.fails THEN 'cancelled'
                             WHEN d.ready AND t.run_at > now() THEN 'scheduled'
                             WHEN d.ready THEN 'queued' ELSE 'pending' END,
               last_error = CASE WHEN d.fails THEN 'task ' || d.failed || ', which it waits for, ended ' || d.fst ELSE t.last_error END,
               finished_at = CASE WHEN d.fails THEN now() ELSE t.finished_at END,
               released_at = CASE WHEN NOT d.fails AND d.ready THEN now() ELSE t.released_at END,
               run_at = CASE WHEN NOT d.fails AND d.ready THEN greatest(t.run_at, now()) ELSE t.run_at END,
               updated_at = now()
             FROM d WHERE t.id = d.id
             RETURNING t.id, t.status",
        )
        .bind(&parents)
        .bind(&closed)
        .bind(&failed)
        .bind(&failed_as)
        .fetch_all(&mut *tx)
        .await?;
        round.clear();
        for (id, status) in changed {
            match status.as_str() {
                "queued" | "scheduled" => released.push(id),
                "cancelled" => round.push((id, status)),
                _ => {}
            }
        }
    }
    Ok(released)
}

/// Put released tasks into Redis (each in its queue; one Redis already holds is left alone).
pub async fn release(engine: &Engine, store: &Store, ids: &[Uuid]) -> Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM tasks t LEFT JOIN schedules s ON s.id = t.schedule_id
         WHERE t.id = ANY($1) AND t.status IN ('queued', 'scheduled') AND t.attempts = 0 ORDER BY t.queue, t.id",
        crate::reconcile::RESTORE_COLUMNS
    )))
    .bind(ids)
    .fetch_all(store.pool())
    .await?;
    let mut by_queue: BTreeMap<String, Vec<&sqlx::postgres::PgRow>> = BTreeMap::new();
    for r in &rows {
        by_queue.entry(sqlx::Row::get::<String, _>(r, "queue")).or_default().push(r);
    }
    let mut n = 0;
    for (queue, rows) in by_queue {
        n += crate::reconcile::restore_rows(engine, store, &queue, &rows).await?;
        for r in &rows {
            crate::metrics::task(&queue, &sqlx::Row::get::<String, _>(*r, "name")).enqueued.increment(1);
        }
    }
    Ok(n)
}

/// Make `tasks` (already prepared and in one transaction) wait: set each waiting one `pending`
/// with its count and failure rule, and insert its edges.
async fn wait_in(
    tx: &mut sqlx::PgConnection,
    waiting: &[(Uuid, i32, ChildFailure)],
    edges: &[(Uuid, Uuid, &str, Option<&str>)],
) -> Result<()> {
    if !waiting.is_empty() {
        let ids: Vec<Uuid> = waiting.iter().map(|w| w.0).collect();
        let counts: Vec<i32> = waiting.iter().map(|w| w.1).collect();
        let rules: Vec<Option<&str>> = waiting.iter().map(|w| w.2.column()).collect();
        sqlx::query(
            "UPDATE tasks t SET status = 'pending', pending_deps = u.n, on_child_failure = u.f
             FROM UNNEST($1::uuid[], $2::int4[], $3::text[]) AS u(id, n, f) WHERE t.id = u.id AND u.n > 0",
        )
        .bind(&ids)
        .bind(&counts)
        .bind(&rules)
        .execute(&mut *tx)
        .await?;
    }
    if !edges.is_empty() {
        let parents: Vec<Uuid> = edges.iter().map(|e| e.0).collect();
        let children: Vec<Uuid> = edges.iter().map(|e| e.1).collect();
        let kinds: Vec<&str> = edges.iter().map(|e| e.2).collect();
        let states: Vec<Option<&str>> = edges.iter().map(|e| e.3).collect();
        sqlx::query(
            "INSERT INTO task_deps (task_id, depends_on, kind, state)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&parents)
        .bind(&children)
        .bind(&kinds)
        .bind(&states)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Take back the rows of a submission Redis refused (its edges too).
async fn undo(store: &Store, ids: &[TaskId]) {
    let r = async {
        sqlx::query("DELETE FROM task_deps WHERE task_id = ANY($1)").bind(ids).execute(store.pool()).await?;
        store.delete_tasks(ids).await
    }
    .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "could not undo the rows of a flow after Redis refused it");
    }
}

/// Every task of the flow whose root is `root`, root first, in submission order.
async fn flow_ids(store: &Store, root: TaskId) -> Result<Vec<TaskId>> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "WITH RECURSIVE f(id) AS (SELECT $1::uuid UNION SELECT d.depends_on FROM task_deps d JOIN f ON d.task_id = f.id WHERE d.kind = 'child')
         SELECT id FROM f ORDER BY id = $1 DESC, id",
    )
    .bind(root)
    .fetch_all(store.pool())
    .await?;
    Ok(ids)
}

impl Chronos {
    /// Submit a flow: every node in one Postgres transaction, the leaves in one Redis round
    /// trip; nothing is created unless all of it is. Only the root may carry an idempotency key
    /// (a repeated key returns the flow it named, `created: false`).
    pub async fn submit_flow(&self, nodes: Vec<FlowTask>, caller: &Caller) -> Result<SubmittedFlow> {
        if nodes.is_empty() || nodes.len() > MAX_FLOW_TASKS {
            return Err(Error::invalid("children", format!("a flow has 1–{MAX_FLOW_TASKS} tasks (got {})", nodes.len())));
        }
        let mut children = vec![0i32; nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            match (i, n.parent) {
                (0, None) => {}
                (0, Some(_)) => return Err(Error::invalid("parent", "the first node is the root")),
                (_, Some(p)) if p < i => children[p] += 1,
                _ => return Err(Error::invalid("parent", format!("node {i} must name an earlier node as its parent"))),
            }
            if i > 0 && n.task.idempotency_key.is_some() {
                return Err(Error::invalid("idempotency_key", "only the root of a flow may carry one"));
            }
        }
        let now = crate::model::stored_precision(chrono::Utc::now());
        let mut prepared = Vec::with_capacity(nodes.len());
        for n in &nodes {
            let mut t = n.task.clone();
            t.submitted_at.get_or_insert(now);
            prepared.push(t.prepare(self.max_payload_bytes)?);
        }
        let ids: Vec<TaskId> = prepared.iter().map(|p| p.id).collect();
        let mut tx = self.store.pool().begin().await?;
        let recorded = Store::insert_tasks_in(&mut tx, &prepared, self.idempotency_retention).await?;
        if !recorded[0].1 {
            tx.rollback().await?;
            let root = self.store.get_task(recorded[0].0).await?.ok_or_else(|| Error::NotFound(format!("task {}", recorded[0].0)))?;
            let task_ids = flow_ids(&self.store, root.id).await?;
            return Ok(SubmittedFlow { created: false, root: self.live_one(root).await, task_ids });
        }
        let waiting: Vec<(Uuid, i32, ChildFailure)> =
            nodes.iter().enumerate().filter(|(i, _)| children[*i] > 0).map(|(i, n)| (ids[i], children[i], n.on_child_failure)).collect();
        let edges: Vec<(Uuid, Uuid, &str, Option<&str>)> =
            nodes.iter().enumerate().filter_map(|(i, n)| n.parent.map(|p| (ids[p], ids[i], "child", None))).collect();
        wait_in(&mut tx, &waiting, &edges).await?;
        tx.commit().await?;
        let leaves: Vec<PreparedTask> = prepared.iter().enumerate().filter(|(i, _)| children[*i] == 0).map(|(_, p)| p.clone()).collect();
        if let Err(e) = self.engine.enqueue(&leaves, self.idempotency_retention).await {
            undo(&self.store, &ids).await;
            return Err(e);
        }
        for p in &leaves {
            crate::metrics::task(&p.task.queue, &p.task.name).enqueued.increment(1);
        }
        let mut root = TaskRecord::just_created(ids[0], &nodes[0].task, Some(&caller.key_id));
        if children[0] > 0 {
            root.status = "pending".into();
            root.pending_deps = children[0];
            root.on_child_failure = nodes[0].on_child_failure.column().map(str::to_owned);
        }
        Ok(SubmittedFlow { created: true, root, task_ids: ids })
    }

    /// Submit a task that runs only after `depends_on` (existing tasks the caller may see) have
    /// finished. One that already completed counts as finished; one that ended dead or
    /// cancelled is refused unless `on_failure` is `Ignore`.
    pub async fn submit_after(
        &self,
        task: NewTask,
        depends_on: &[TaskId],
        on_failure: ChildFailure,
        caller: &Caller,
    ) -> Result<SubmittedTask> {
        let mut deps = depends_on.to_vec();
        deps.sort_unstable();
        deps.dedup();
        if deps.is_empty() || deps.len() > MAX_DEPENDS_ON {
            return Err(Error::invalid("depends_on", format!("name 1–{MAX_DEPENDS_ON} tasks (got {})", deps.len())));
        }
        let mut task = task;
        task.submitted_at.get_or_insert_with(|| crate::model::stored_precision(chrono::Utc::now()));
        let prepared = task.clone().prepare(self.max_payload_bytes)?;
        let mut tx = self.store.pool().begin().await?;
        // Locked: a dependency that finishes meanwhile waits for this commit, then finds the
        // edge open; one that finished before is seen finished here.
        let found: Vec<(Uuid, String, Option<String>)> =
            sqlx::query_as("SELECT id, status, created_by FROM tasks WHERE id = ANY($1) ORDER BY id FOR SHARE")
                .bind(&deps)
                .fetch_all(&mut *tx)
                .await?;
        let visible = |c: &Option<String>| !caller.role.sees_only_own_tasks() || c.as_deref() == Some(caller.key_id.as_str());
        if let Some(missing) = deps.iter().find(|d| !found.iter().any(|(id, _, c)| id == *d && visible(c))) {
            return Err(Error::invalid("depends_on", format!("names no task: {missing}")));
        }
        if on_failure == ChildFailure::Fail
            && let Some((id, st, _)) = found.iter().find(|(_, st, _)| st == "dead" || st == "cancelled")
        {
            return Err(Error::invalid(
                "depends_on",
                format!("task {id} ended {st}, so this one could never run; send \"on_child_failure\": \"ignore\" to run it anyway"),
            ));
        }
        let recorded = Store::insert_tasks_in(&mut tx, std::slice::from_ref(&prepared), self.idempotency_retention).await?;
        if !recorded[0].1 {
            // The idempotency key named a task submitted before: that one, as it is.
            tx.rollback().await?;
            let rec = self.store.get_task(recorded[0].0).await?.ok_or_else(|| Error::NotFound(format!("task {}", recorded[0].0)))?;
            return Ok(SubmittedTask { created: false, task: self.live_one(rec).await });
        }
        let terminal = |st: &str| matches!(st, "completed" | "dead" | "cancelled");
        let open = found.iter().filter(|(_, st, _)| !terminal(st)).count() as i32;
        let edges: Vec<(Uuid, Uuid, &str, Option<&str>)> =
            found.iter().map(|(id, st, _)| (prepared.id, *id, "depends_on", terminal(st).then_some(st.as_str()))).collect();
        wait_in(&mut tx, &[(prepared.id, open, on_failure)], &edges).await?;
        tx.commit().await?;
        let mut rec = TaskRecord::just_created(prepared.id, &task, Some(&caller.key_id));
        if open > 0 {
            rec.status = "pending".into();
            rec.pending_deps = open;
            rec.on_child_failure = on_failure.column().map(str::to_owned);
            return Ok(SubmittedTask { created: true, task: rec });
        }
        if let Err(e) = self.engine.enqueue(std::slice::from_ref(&prepared), self.idempotency_retention).await {
            undo(&self.store, &[prepared.id]).await;
            return Err(e);
        }
        crate::metrics::task(&task.queue, &task.name).enqueued.increment(1);
        Ok(SubmittedTask { created: true, task: rec })
    }

    /// Cancel a `pending` task (it is in Postgres only), counting down what waits for it.
    /// False when it was no longer pending.
    pub(crate) async fn cancel_pending(&self, id: TaskId, actor: &str) -> Result<bool> {
        let mut tx = self.store.pool().begin().await?;
        let done: Option<Uuid> = sqlx::query_scalar(
            "UPDATE tasks SET status = 'cancelled', finished_at = now(), updated_at = now() WHERE id = $1 AND status = 'pending' RETURNING id",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if done.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO audit_log (actor, action, task_id, detail) VALUES ($1, 'cancel', $2, jsonb_build_object('previous_status', 'pending', 'at', now()))",
        )
        .bind(actor)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let released = resolve_in(&mut tx, &[(id, "cancelled")]).await?;
        tx.commit().await?;
        release(&self.engine, &self.store, &released).await?;
        Ok(true)
    }

    /// Cancel what is unfinished below `id` in its flow (its children, theirs, …): waiting and
    /// pending tasks at once, running ones through their heartbeat. Returns how many it reached.
    pub(crate) async fn cancel_subtree(&self, id: TaskId, actor: &str) -> Result<usize> {
        let mut n = 0;
        let mut level = vec![id];
        let mut seen = std::collections::HashSet::new();
        while !level.is_empty() {
            let below: Vec<(Uuid, String, String)> = sqlx::query_as(
                "SELECT t.id, t.queue, t.status FROM task_deps d JOIN tasks t ON t.id = d.depends_on
                 WHERE d.task_id = ANY($1) AND d.kind = 'child' ORDER BY t.id",
            )
            .bind(&level)
            .fetch_all(self.store.pool())
            .await?;
            level.clear();
            for (child, queue, status) in below {
                if !seen.insert(child) {
                    continue;
                }
                level.push(child);
                match status.as_str() {
                    "completed" | "dead" | "cancelled" => {}
                    "pending" => n += usize::from(self.cancel_pending(child, actor).await?),
                    _ => {
                        if !matches!(self.engine.cancel(&queue, child, actor).await?, CancelOutcome::NotFound) {
                            n += 1;
                        }
                    }
                }
            }
        }
        Ok(n)
    }
}

impl Chronos {
    /// The tasks `id` waits (or waited) for, if `caller` may see it.
    pub async fn dependencies(&self, caller: &Caller, id: TaskId) -> Result<Vec<Dependency>> {
        let rec = self.task_record(caller, id).await?;
        dependencies(&self.store, rec.id).await
    }
}
