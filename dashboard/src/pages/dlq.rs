//! `GET /dlq`: dead tasks grouped by their error; `POST /dlq/redrive` redrives one group (or
//! every dead task) in the background, its progress pushed live (and shown on reload).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Form;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use chronos_core::access::{Caller, Permission};
use chronos_core::history;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use crate::DashState;
use crate::error::PageError;
use crate::session::{Flash, Session};
use crate::ui::{self, Nav, num};

/// A bulk redrive takes at most this many tasks; run it again for the rest.
pub const MAX_JOB: i64 = 10_000;
/// Finished jobs are shown this long.
const KEEP_JOBS: chrono::Duration = chrono::Duration::minutes(15);

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: u64,
    pub label: String,
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    pub finished: bool,
    pub started: DateTime<Utc>,
}

/// Bulk redrives of this process.
#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    list: Mutex<Vec<Job>>,
}

impl Jobs {
    pub fn recent(&self) -> Vec<Job> {
        let mut l = self.list.lock().unwrap();
        l.retain(|j| !j.finished || Utc::now() - j.started < KEEP_JOBS);
        l.iter().rev().cloned().collect()
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Job)) -> Option<Job> {
        let mut l = self.list.lock().unwrap();
        let j = l.iter_mut().find(|j| j.id == id)?;
        f(j);
        Some(j.clone())
    }
}

fn publish(state: &DashState, j: &Job) {
    state.live.publish("job", serde_json::to_string(j).unwrap_or_default(), None, Some(Permission::DlqRead));
}

/// Start redriving the dead tasks whose error group is `error` (all when `None`), in `queue`
/// when given. Returns the job id.
async fn start(state: &DashState, caller: &Caller, error: Option<String>, queue: Option<String>) -> Result<Job, PageError> {
    let ids = history::dead_ids(&state.chronos.store, error.as_deref(), queue.as_deref(), MAX_JOB).await?;
    let label = match (&error, &queue) {
        (Some(e), _) if e.is_empty() => "dead tasks without an error".to_owned(),
        (Some(e), _) => format!("“{}”", e.chars().take(80).collect::<String>()),
        (None, Some(q)) => format!("every dead task in {q}"),
        (None, None) => "every dead task".to_owned(),
    };
    let job = Job {
        id: state.jobs.next.fetch_add(1, Ordering::SeqCst) + 1,
        label,
        total: ids.len(),
        done: 0,
        failed: 0,
        finished: ids.is_empty(),
        started: Utc::now(),
    };
    state.jobs.list.lock().unwrap().push(job.clone());
    let (state2, caller, id) = (state.clone(), caller.clone(), job.id);
    tokio::spawn(async move {
        // One SQS sweep per chunk (not per task), and progress after each chunk.
        for chunk in ids.chunks(100) {
            let (done, failed) = match state2.chronos.redrive_many(&caller, chunk).await {
                Ok(r) => (r.ids.len(), chunk.len() - r.ids.len()),
                Err(e) => {
                    tracing::warn!(error = %e, "bulk redrive: a chunk failed");
                    (0, chunk.len())
                }
            };
            if let Some(j) = state2.jobs.update(id, |j| {
                j.done += done;
                j.failed += failed;
            }) {
                publish(&state2, &j);
            }
        }
        if let Some(j) = state2.jobs.update(id, |j| j.finished = true) {
            publish(&state2, &j);
        }
    });
    Ok(job)
}

#[derive(Debug, Default, Deserialize)]
pub struct DlqParams {
    #[serde(default)]
    queue: String,
}

fn job_row(j: &Job) -> Markup {
    html! {
        div.job data-job=(j.id) data-finished=(j.finished) {
            span.label { "Redriving " (j.label) }
            progress max=(j.total.max(1)) value=(if j.total == 0 { 1 } else { j.done + j.failed }) {}
            span.count { span data-done="" { (num(j.done as i64)) } " / " (num(j.total as i64))
                @if j.failed > 0 { span.muted { " · " (j.failed) " skipped" } } }
            span.state { @if j.finished { "done" } @else { "running…" } }
        }
    }
}

pub async fn page(State(state): State<DashState>, s: Session, flash: Flash, Query(p): Query<DlqParams>) -> Result<Response, PageError> {
    s.require(Permission::DlqRead)?;
    let since = state.live.cursor();
    let queue = Some(p.queue.trim().to_owned()).filter(|q| !q.is_empty());
    let groups = history::dead_groups(&state.chronos.store, queue.as_deref(), 100).await?;
    let total: i64 = groups.iter().map(|g| g.count).sum();
    let manage = s.may(Permission::DlqManage);
    let jobs = state.jobs.recent();
    let body = html! {
        div.pagehead {
            h1 { "Dead letters" }
            span.sub { (ui::count(total, "dead task")) " in " (ui::count(groups.len() as i64, "error group")) @if let Some(q) = &queue { " · queue " (q) } }
            @if manage && total > 0 {
                form.inline.right method="post" action="/dlq/redrive" data-confirm=(format!("Redrive all {} dead tasks?", total)) {
                    input type="hidden" name="csrf" value=(s.csrf);
                    @if let Some(q) = &queue { input type="hidden" name="queue" value=(q); }
                    button.btn.primary type="submit" { "Redrive all " (num(total)) }
                }
            }
        }
        @if let Some(q) = &queue { p.filterline { "Queue " strong { (q) } " · " a href="/dlq" { "show every queue" } } }
        div #jobs.jobs data-region="jobs" { @for j in &jobs { (job_row(j)) } }
        section.card.flush {
            table.grid.dlq #groups data-region="groups" data-refresh-on="job" data-refresh-ms="1500" {
                thead { tr { th { "Error" } th.num { "Tasks" } th { "Queues" } th { "Task names" } th { "Latest" } th { "Examples" } @if manage { th.actions {} } } }
                tbody {
                    @if groups.is_empty() { tr { td.empty colspan="7" { "The dead-letter queue is empty." } } }
                    @for g in &groups {
                        tr {
                            td.error.wrap { @if g.error.is_empty() { span.muted { "(no error message)" } } @else { span.mono { (g.error) } } }
                            td.num.alert { (num(g.count)) }
                            td { @for q in &g.queues { a.chip href=(format!("/dlq?queue={}", ui::url_encode(q))) { (q) } } }
                            td { @for n in &g.names { span.chip { (n) } } }
                            td.nowrap { (ui::opt_time(g.latest)) }
                            td.nowrap { @for id in g.sample.iter().take(3) { a.mono.idlink href=(format!("/tasks/{id}")) { (id.to_string()[..8].to_owned()) } " " } }
                            @if manage {
                                td.actions {
                                    form.inline method="post" action="/dlq/redrive" data-confirm=(format!("Redrive {} tasks?", g.count)) {
                                        input type="hidden" name="csrf" value=(s.csrf);
                                        input type="hidden" name="error" value=(g.error);
                                        @if let Some(q) = &queue { input type="hidden" name="queue" value=(q); }
                                        button.btn.small type="submit" { "Redrive " (num(g.count)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        p.muted.note { "Grouped by the first line of each task's last error. Redriving queues a task again with a fresh attempt budget and removes its SQS message." }
    };
    Ok(ui::page(&s, Nav::Dlq, "Dead letters", &flash, &since, body))
}

#[derive(Debug, Deserialize)]
pub struct RedriveForm {
    #[serde(default)]
    csrf: String,
    /// The group's error key; absent: every dead task.
    error: Option<String>,
    queue: Option<String>,
}

pub async fn redrive(State(state): State<DashState>, s: Session, Form(f): Form<RedriveForm>) -> Result<Response, PageError> {
    s.check_csrf(&f.csrf)?;
    s.require(Permission::DlqManage)?;
    let queue = f.queue.filter(|q| !q.trim().is_empty());
    let job = start(&state, &s.caller, f.error, queue.clone()).await?;
    let to = match &queue {
        Some(q) => format!("/dlq?queue={}", ui::url_encode(q)),
        None => "/dlq".into(),
    };
    let mut r = Redirect::to(&to).into_response();
    r.headers_mut().append(header::SET_COOKIE, Flash::set(true, &format!("Redriving {} dead tasks ({}).", job.total, job.label)));
    Ok(r)
}
