//! `GET /jobs`: every bulk operation (redrive, cancel or retry by filter) with its progress and
//! result, and `POST /jobs/{id}/cancel`. Jobs are `chronos_core::jobs` rows, worked by whichever
//! process runs the background services; [`watch`] pushes their progress to open pages.

use std::collections::HashMap;
use std::time::Duration;

use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;
use chrono::Utc;
use chronos_core::Chronos;
use chronos_core::access::{BOOTSTRAP_ADMIN, Caller, Permission, Role};
use chronos_core::jobs::{Job, JobKind};
use maud::{Markup, html};
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use super::{ActionForm, after_action};
use crate::DashState;
use crate::error::PageError;
use crate::live::Live;
use crate::session::{Flash, Session};
use crate::ui::{self, Nav, num};

/// Finished jobs stay on the dead-letter page this long.
pub const RECENT: chrono::Duration = chrono::Duration::minutes(15);
/// How often open jobs' progress is read while somebody watches.
const POLL: Duration = Duration::from_secs(1);

/// What the job does, to whom, in a few words.
pub fn label(j: &Job) -> String {
    let s = &j.selection;
    let what = match (j.kind, &s.error) {
        (JobKind::Redrive, Some(e)) if e.is_empty() => "dead tasks without an error".to_owned(),
        (JobKind::Redrive, Some(e)) => format!("dead tasks failing with “{}”", e.chars().take(80).collect::<String>()),
        (JobKind::Redrive, None) => "every dead task".to_owned(),
        (_, _) => {
            let mut parts = Vec::new();
            if let Some(st) = &s.status {
                parts.push(format!("{st} tasks"));
            }
            if let Some(n) = &s.name {
                parts.push(format!("named {n}"));
            }
            if let Some(q) = &s.q {
                parts.push(format!("matching “{q}”"));
            }
            if let Some(e) = &s.error {
                parts.push(format!("failing with “{}”", e.chars().take(60).collect::<String>()));
            }
            if parts.is_empty() { "tasks".to_owned() } else { parts.join(" ") }
        }
    };
    let verb = match j.kind {
        JobKind::Redrive => "Redrive",
        JobKind::Cancel => "Cancel",
        JobKind::Retry => "Retry",
    };
    match &s.queue {
        Some(q) => format!("{verb} {what} in {q}"),
        None => format!("{verb} {what}"),
    }
}

fn state_text(j: &Job) -> String {
    match (j.state.as_str(), j.phase.as_str()) {
        ("running", "letters") => format!("removing {} SQS messages…", num(j.sqs_letters_pending)),
        ("running", _) if j.cancel_requested => "stopping…".into(),
        ("running", _) => "running…".into(),
        ("queued", _) => "waiting for a runner".into(),
        (s, _) => s.into(),
    }
}

/// One job as a row with a progress bar; `data-*` lets the live script update it in place.
pub fn job_row(j: &Job, s: &Session) -> Markup {
    let finished = j.is_finished();
    html! {
        div.job data-job=(j.id) data-finished=(finished) data-state=(j.state) {
            span.label title=(label(j)) { (label(j)) }
            progress max=(j.total.max(1)) value=(if j.total == 0 && finished { 1 } else { j.processed }) {}
            span.count {
                span data-processed="" { (num(j.processed)) } " / " (num(j.total))
                span.muted data-detail="" { (detail(j)) }
            }
            span.state data-state-text="" { (state_text(j)) }
            @if !finished && s.may(Permission::TasksManage) && !j.cancel_requested {
                form.inline method="post" action=(format!("/jobs/{}/cancel", j.id)) data-confirm="Stop this job after its current step?" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="back" value="/jobs";
                    button.btn.small type="submit" { "Stop" }
                }
            }
        }
    }
}

fn detail(j: &Job) -> String {
    let mut d = String::new();
    if j.skipped > 0 {
        d.push_str(&format!(" · {} skipped", num(j.skipped)));
    }
    if j.kind == JobKind::Redrive && (j.sqs_messages_removed > 0 || j.phase == "done") {
        d.push_str(&format!(" · {} SQS messages removed", num(j.sqs_messages_removed)));
        if j.sqs_letters_not_found > 0 {
            d.push_str(&format!(", {} not found", num(j.sqs_letters_not_found)));
        }
    }
    if let Some(e) = &j.last_error
        && !j.is_finished()
    {
        d.push_str(&format!(" · retrying after: {}", e.chars().take(80).collect::<String>()));
    }
    d
}

/// The dashboard's own view of every job (it lists them for any signed-in role that may read
/// tasks; producers' pages are narrowed by [`Chronos::jobs`] itself).
fn reader() -> Caller {
    Caller { key_id: BOOTSTRAP_ADMIN.into(), role: Role::Admin }
}

/// Redrive jobs open now or finished in the last [`RECENT`], newest first (the DLQ page).
pub async fn recent_redrives(c: &Chronos, caller: &Caller) -> Result<Vec<Job>, PageError> {
    let jobs = c.jobs(caller, None, 20).await?;
    Ok(jobs
        .into_iter()
        .filter(|j| j.kind == JobKind::Redrive && (!j.is_finished() || j.finished_at.is_some_and(|f| Utc::now() - f < RECENT)))
        .collect())
}

pub async fn page(State(state): State<DashState>, s: Session, flash: Flash) -> Result<Response, PageError> {
    s.require(Permission::TasksRead)?;
    let since = state.live.cursor();
    let jobs = state.chronos.jobs(&s.caller, None, 100).await?;
    let open = jobs.iter().filter(|j| !j.is_finished()).count();
    let body = html! {
        div.pagehead {
            h1 { "Jobs" }
            span.sub { (ui::count(jobs.len() as i64, "job")) " · " (open) " open · bulk redrive, cancel and retry run in the background" }
        }
        div #jobs.jobs.all data-region="jobs" {
            @if jobs.is_empty() {
                section.card { p.empty { "No jobs yet. Redrive a group on " a href="/dlq" { "Dead letters" } ", or start one with " code { "POST /v1/jobs" } " or " code { "chronos jobs create" } "." } }
            }
            @for j in &jobs {
                div.jobcard {
                    (job_row(j, &s))
                    div.jobmeta.muted {
                        span.mono { (ui::short_id(j.id)) } " · by " (j.created_by) " · " (ui::time(j.created_at))
                        @if let Some(f) = j.finished_at { " · took " (ui::duration_ms((f - j.started_at.unwrap_or(j.created_at)).num_milliseconds().max(0))) }
                    }
                }
            }
        }
    };
    Ok(ui::page(&s, Nav::Jobs, "Jobs", &flash, &since, body))
}

pub async fn cancel(State(state): State<DashState>, s: Session, Path(id): Path<String>, Form(f): Form<ActionForm>) -> Response {
    let r = async {
        s.check_csrf(&f.csrf)?;
        s.require(Permission::TasksManage)?;
        let id = Uuid::parse_str(&id).map_err(|_| PageError::NotFound(format!("There is no job {id:?}.")))?;
        let j = state.chronos.cancel_job(&s.caller, id).await?;
        Ok(if j.state == "cancelled" { "Job cancelled.".to_owned() } else { "The job stops after its current step.".to_owned() })
    };
    after_action(r.await, f.back.as_deref(), "/jobs")
}

/// Push open jobs' progress (read from Postgres each [`POLL`] while a page watches) as `job`
/// events; a job is sent again only when it changed.
pub async fn watch(chronos: Chronos, live: std::sync::Arc<Live>, mut stop: watch::Receiver<bool>) {
    let mut sent: HashMap<Uuid, (i64, String, String, i64)> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
        if live.watchers() == 0 {
            continue;
        }
        let Ok(jobs) = chronos.jobs(&reader(), None, 20).await else { continue };
        for j in &jobs {
            // Open jobs, and those that ended a moment ago (a page may show them still running).
            if j.finished_at.is_some_and(|f| Utc::now() - f > chrono::Duration::seconds(30)) {
                continue;
            }
            let key = (j.processed, j.state.clone(), j.phase.clone(), j.sqs_letters_pending);
            if sent.get(&j.id) == Some(&key) {
                continue;
            }
            let data = json!({
                "id": j.id, "total": j.total, "processed": j.processed, "finished": j.is_finished(), "state": j.state,
                "state_text": state_text(j), "detail": detail(j),
            });
            live.publish("job", data.to_string(), None, Some(Permission::TasksRead));
            sent.insert(j.id, key);
        }
        sent.retain(|id, _| jobs.iter().any(|j| j.id == *id));
    }
}
