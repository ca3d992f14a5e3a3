//! `GET /tasks` (search and filters, newest first, cursor paging, live rows), `GET /tasks/{id}`
//! (payload, attempts timeline with stack traces, manual actions) and the task actions
//! `POST /tasks/{id}/retry`, `/cancel`, `/redrive`.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use chronos_core::access::Permission;
use chronos_core::model::{Status, TaskId};
use chronos_core::store::{AttemptRecord, TaskFilter, TaskRecord};
use maud::{Markup, html};
use serde::Deserialize;

use super::{ActionForm, after_action};
use crate::DashState;
use crate::error::PageError;
use crate::session::{Flash, Session};
use crate::ui::{self, Nav, badge, opt_time, time};

pub const PAGE_SIZE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub name: String,
    /// Created at or after (`YYYY-MM-DDTHH:MM`, UTC, as a datetime-local input sends it).
    #[serde(default)]
    pub from: String,
    /// Created before.
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub cursor: String,
}

fn some(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

fn instant(field: &str, s: &str) -> Result<Option<DateTime<Utc>>, String> {
    let Some(v) = some(s) else { return Ok(None) };
    if let Ok(t) = DateTime::parse_from_rfc3339(&v) {
        return Ok(Some(t.to_utc()));
    }
    for f in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&v, f) {
            return Ok(Some(t.and_utc()));
        }
    }
    Err(format!("{field}: {v:?} is not a time such as 2026-12-01T09:00 (UTC)"))
}

impl ListParams {
    /// The core filter these parameters stand for, or what to fix.
    pub fn filter(&self) -> Result<TaskFilter, String> {
        let status = match some(&self.status) {
            Some(s) => Some(s.parse::<Status>().map_err(|e| e.to_string())?.as_str().to_owned()),
            None => None,
        };
        let before_id = match some(&self.cursor) {
            Some(c) => Some(TaskId::parse_str(&c).map_err(|_| "cursor: not a cursor from this page".to_owned())?),
            None => None,
        };
        Ok(TaskFilter {
            status,
            queue: some(&self.queue),
            name: some(&self.name),
            created_after: instant("from", &self.from)?,
            created_before: instant("to", &self.to)?,
            q: some(&self.q),
            before_id,
            limit: PAGE_SIZE,
            ..Default::default()
        })
    }

    fn query_without_cursor(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in
            [("q", &self.q), ("queue", &self.queue), ("status", &self.status), ("name", &self.name), ("from", &self.from), ("to", &self.to)]
        {
            if !v.trim().is_empty() {
                parts.push(format!("{k}={}", ui::url_encode(v.trim())));
            }
        }
        parts.join("&")
    }

    fn is_filtered(&self) -> bool {
        !self.query_without_cursor().is_empty()
    }
}

fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() > max { format!("{}…", line.chars().take(max).collect::<String>()) } else { line.to_owned() }
}

pub fn task_row(t: &TaskRecord) -> Markup {
    html! {
        tr data-task=(t.id) {
            td { (badge(&t.status)) }
            td.name {
                a href=(format!("/tasks/{}", t.id)) { (t.name) }
                span.id.mono { (ui::short_id(t.id)) }
            }
            td { a.qlink href=(format!("/tasks?queue={}", ui::url_encode(&t.queue))) { (t.queue) } }
            td.num { span data-attempts="" { (t.attempts) } span.muted { "/" (t.max_attempts) } }
            td.nowrap { (time(t.created_at)) }
            td.nowrap { @if let Some(f) = t.finished_at { (time(f)) } @else { span.muted { "due " } (time(t.run_at)) } }
            td.error { @if let Some(e) = &t.last_error { span title=(first_line(e, 500)) { (first_line(e, 120)) } } }
        }
    }
}

pub async fn list(State(state): State<DashState>, s: Session, flash: Flash, Query(p): Query<ListParams>) -> Result<Response, PageError> {
    s.require(Permission::TasksRead)?;
    let since = state.live.cursor();
    let (page, problem) = match p.filter() {
        Ok(f) => {
            let page = state.chronos.task_page(&s.caller, f).await?;
            (Some((state.chronos.with_live(page.tasks).await, page.next_cursor)), None)
        }
        Err(why) => (None, Some(why)),
    };
    let queues = if s.may(Permission::QueuesRead) { state.chronos.engine.queues().await.unwrap_or_default() } else { Vec::new() };
    let first_page = p.cursor.trim().is_empty();
    let base = p.query_without_cursor();
    let body = html! {
        div.pagehead {
            h1 { "Tasks" }
            span.sub { "newest first" @if s.caller.role.sees_only_own_tasks() { " · only the tasks your key created" } }
        }
        form.filters method="get" action="/tasks" {
            input.grow type="search" name="q" value=(p.q) placeholder="Search names, errors and payloads (e.g. timeout -smtp \"disk full\")" aria-label="Search";
            @if !queues.is_empty() {
                select name="queue" aria-label="Queue" data-autosubmit="" {
                    option value="" { "All queues" }
                    @for q in &queues { option value=(q) selected[p.queue.trim() == q] { (q) } }
                }
            } @else {
                input type="text" name="queue" value=(p.queue) placeholder="Queue" aria-label="Queue";
            }
            select name="status" aria-label="Status" data-autosubmit="" {
                option value="" { "Any status" }
                @for st in Status::ALL { option value=(st.as_str()) selected[p.status.trim() == st.as_str()] { (st.as_str()) } }
            }
            input type="text" name="name" value=(p.name) placeholder="Task name" aria-label="Task name";
            label.inline { "From" input type="datetime-local" name="from" value=(p.from) aria-label="Created from (UTC)"; }
            label.inline { "to" input type="datetime-local" name="to" value=(p.to) aria-label="Created before (UTC)"; }
            button.btn.primary type="submit" { "Search" }
            @if p.is_filtered() { a.btn.ghost href="/tasks" { "Clear" } }
        }
        @if let Some(why) = &problem { div.flash.err role="alert" { (why) } }
        section.card.flush {
            table.grid.tasks #results data-region="results" data-live-list=[(first_page && problem.is_none()).then_some("")] {
                thead { tr { th { "Status" } th { "Task" } th { "Queue" } th.num { "Attempts" } th { "Created" } th { "Finished / due" } th { "Last error" } } }
                tbody {
                    @if let Some((rows, _)) = &page {
                        @if rows.is_empty() {
                            tr { td.empty colspan="7" { @if p.is_filtered() { "No task matches these filters." } @else { "No tasks yet." } } }
                        }
                        @for t in rows { (task_row(t)) }
                    }
                }
            }
        }
        nav.pager {
            @if !first_page { a.btn.ghost href=(format!("/tasks?{base}")) { "← Newest" } }
            @if let Some((_, Some(next))) = &page {
                a.btn.ghost href=(format!("/tasks?{}{}cursor={next}", base, if base.is_empty() { "" } else { "&" })) { "Older →" }
            }
        }
    };
    let mut r = ui::page(&s, Nav::Tasks, "Tasks", &flash, &since, body);
    if problem.is_some() {
        *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(r)
}

fn parse_id(id: &str) -> Result<TaskId, PageError> {
    TaskId::parse_str(id).map_err(|_| PageError::NotFound(format!("There is no task {id:?}: task ids are UUIDs.")))
}

/// Why an action is not possible in this state (`None`: possible). Display only: the engine
/// decides, and refuses anyway.
fn why_not(action: &str, t: &TaskRecord) -> Option<String> {
    let st = t.status.as_str();
    match action {
        "retry" if !matches!(st, "scheduled" | "retrying" | "dead") => {
            Some(format!("Only scheduled, retrying or dead tasks can be retried now; this one is {st}."))
        }
        "cancel" if t.cancel_requested => Some("Cancellation was requested; the handler is told at its next heartbeat.".into()),
        "cancel" if !matches!(st, "pending" | "queued" | "scheduled" | "retrying" | "running" | "dead") => {
            Some(format!("A {st} task cannot be cancelled."))
        }
        "redrive" if st != "dead" => Some(format!("Only dead tasks can be redriven; this one is {st}.")),
        _ => None,
    }
}

fn action_button(s: &Session, t: &TaskRecord, action: &str, label: &str, tone: &str, confirm: Option<&str>) -> Markup {
    let reason = why_not(action, t);
    html! {
        form.inline method="post" action=(format!("/tasks/{}/{action}", t.id)) data-confirm=[confirm] {
            input type="hidden" name="csrf" value=(s.csrf);
            button class=(format!("btn {tone}")) type="submit" disabled[reason.is_some()] title=[reason.as_deref()] data-action=(action) { (label) }
        }
    }
}

/// `exponential from 1.0 s, at most 1 h 00 min, full jitter`.
fn backoff_words(b: &serde_json::Value) -> String {
    match serde_json::from_value::<chronos_core::model::Backoff>(b.clone()) {
        Ok(b) => {
            let kind = match b.kind {
                chronos_core::model::BackoffKind::Exponential => "exponential from",
                chronos_core::model::BackoffKind::Fixed => "fixed",
            };
            let jitter = format!("{:?}", b.jitter).to_lowercase();
            format!("{kind} {}, at most {}, {jitter} jitter", ui::duration_ms(b.base_ms as i64), ui::duration_ms(b.cap_ms as i64))
        }
        Err(_) => b.to_string(),
    }
}

fn attempt_item(a: &AttemptRecord, longest: i64) -> Markup {
    let outcome = a.outcome.as_deref().unwrap_or(if a.finished_at.is_none() { "running" } else { "unknown" });
    let tone = match outcome {
        "completed" => "completed",
        "failed" | "lost" => "dead",
        "cancelled" => "cancelled",
        "released" => "queued",
        _ => "running",
    };
    let dur = a.duration_ms.unwrap_or(0);
    // Bar length on a log scale, so a 20 ms attempt is visible beside a 20 s one.
    // A scale of at least a second, so a lone 1 ms attempt is not a full bar.
    let scale = longest.max(1000) as f64;
    let pct = ((dur.max(1) as f64).ln_1p() / scale.ln_1p() * 100.0).clamp(2.0, 100.0);
    html! {
        li class=(format!("attempt o-{tone}")) {
            div.attempthead {
                span.num { "#" (a.attempt) }
                span class=(format!("badge s-{tone}")) { (outcome) }
                span.muted { "worker " } span.mono { (a.worker.as_deref().unwrap_or("—")) }
                span.muted { "started " } (opt_time(a.started_at))
                span.dur { @if a.duration_ms.is_some() { (ui::duration_ms(dur)) } @else { "—" } }
            }
            svg.durbar viewBox="0 0 100 4" preserveAspectRatio="none" aria-hidden="true" {
                rect.track x="0" y="0" width="100" height="4" rx="2" {}
                rect class=(format!("fill s-{tone}")) x="0" y="0" width=(format!("{pct:.1}")) height="4" rx="2" {}
            }
            @if let Some(e) = &a.error { p.errmsg { (e) } }
            @let trace = a.detail.as_deref().filter(|d| !d.trim().is_empty());
            @let logs = a.logs.as_deref().filter(|l| !l.trim().is_empty());
            @if trace.is_some() || logs.is_some() {
                // The stack trace and the handler's own lines side by side, where it failed and
                // what it said on the way.
                div.diag {
                    @if let Some(d) = trace {
                        details.trace open {
                            summary { "Stack trace" }
                            pre.code { (d) }
                        }
                    }
                    @if let Some(l) = logs {
                        details.trace.logs open {
                            @let n = l.lines().count();
                            summary { "Logs (" (n) @if n == 1 { " line)" } @else { " lines)" } }
                            pre.code { (l) }
                        }
                    }
                }
            }
        }
    }
}

pub async fn detail(State(state): State<DashState>, s: Session, flash: Flash, Path(id): Path<String>) -> Result<Response, PageError> {
    s.require(Permission::TasksRead)?;
    let since = state.live.cursor();
    let id = parse_id(&id)?;
    let t = state.chronos.task(&s.caller, id).await?;
    let (attempts, actions, deps) = tokio::join!(
        state.chronos.attempts(&s.caller, id),
        state.chronos.manual_actions(&s.caller, id),
        state.chronos.dependencies(&s.caller, id)
    );
    let (attempts, actions, deps) = (attempts?, actions?, deps?);
    let payload = serde_json::to_string_pretty(&t.payload).unwrap_or_default();
    let longest = attempts.iter().filter_map(|a| a.duration_ms).max().unwrap_or(0);
    let manage = s.may(Permission::TasksManage);
    let body = html! {
        nav.crumbs { a href="/tasks" { "Tasks" } " / " a href=(format!("/tasks?queue={}", ui::url_encode(&t.queue))) { (t.queue) } " / " span { (ui::short_id(t.id)) } }
        div #task data-region="task" data-task-page=(t.id) {
            div.pagehead.task data-task=(t.id) {
                div {
                    h1 { (t.name) " " (badge(&t.status)) @if t.cancel_requested { " " span.badge.s-retrying { "cancel requested" } } }
                    span.sub.mono { (t.id) }
                }
                div.buttons {
                    @if manage {
                        (action_button(&s, &t, "retry", "Retry now", "primary", None))
                        (action_button(&s, &t, "cancel", "Cancel", "danger", Some("Cancel this task?")))
                        @if s.may(Permission::DlqManage) { (action_button(&s, &t, "redrive", "Redrive", "", None)) }
                    } @else {
                        span.muted.readonly { "Read-only access" }
                    }
                }
            }
            @if manage {
                @let reasons: Vec<String> = ["retry", "cancel", "redrive"].iter().filter_map(|a| why_not(a, &t)).collect();
                @if reasons.len() == 3 { p.muted.reasons { (reasons[0]) } }
            }
            div.cols {
                section.card {
                    div.cardhead { h2 { "Details" } }
                    dl.kv {
                        dt { "Queue" } dd { a href=(format!("/tasks?queue={}", ui::url_encode(&t.queue))) { (t.queue) } }
                        dt { "Attempts" } dd { (t.attempts) " of " (t.max_attempts) }
                        dt { "Priority" } dd { (t.priority) }
                        dt { "Created" } dd { (time(t.created_at)) }
                        dt { "Due" } @if t.status == "pending" { dd.muted { "once the tasks it waits for finish" } } @else { dd { (time(t.run_at)) } }
                        dt { "Finished" } dd { (opt_time(t.finished_at)) }
                        dt { "Timeout" } dd { (ui::duration_ms(t.timeout_ms)) }
                        dt { "Backoff" } dd { (backoff_words(&t.backoff)) }
                        dt { "Group" } dd.mono { (t.group.as_deref().unwrap_or("—")) }
                        @if let Some(ex) = t.expires_at { dt { "Expires" } dd { (ui::time(ex)) } }
                        @if let Some(pg) = &t.progress {
                            @let pct = pg["pct"].as_u64().unwrap_or(0).min(100);
                            dt { "Progress" }
                            dd.progress data-progress=(pct) {
                                progress max="100" value=(pct) {} " " (pct) "%"
                                @if let Some(m) = pg["message"].as_str().filter(|m| !m.is_empty()) { span.muted { " · " (m) } }
                            }
                        }
                        dt { "Idempotency key" } dd.mono { (t.idempotency_key.as_deref().unwrap_or("—")) }
                        dt { "Created by" } dd.mono { (t.created_by.as_deref().unwrap_or("—")) }
                        @if let Some(sid) = t.schedule_id {
                            dt { "Schedule" } dd { a href="/schedules" { span.mono { (ui::short_id(sid)) } } " · fire " (opt_time(t.fire_at)) }
                        }
                    }
                }
                section.card {
                    div.cardhead { h2 { "Payload" } span.muted { (payload.len()) " bytes" } }
                    pre.code.payload { (payload) }
                }
                @if let Some(r) = &t.result {
                    @let result = serde_json::to_string_pretty(r).unwrap_or_default();
                    section.card {
                        div.cardhead { h2 { "Result" } span.muted { "what the handler returned" } }
                        pre.code.result { (result) }
                    }
                }
            }
            @if !deps.is_empty() {
                @let open = deps.iter().filter(|d| !matches!(d.status.as_str(), "completed" | "dead" | "cancelled")).count();
                section.card.flush.deps {
                    div.cardhead {
                        h2 { "Waits for" }
                        span.muted {
                            @if t.status == "pending" { (ui::count(open as i64, "task")) " of " (deps.len()) " still to finish" }
                            @else { (ui::count(deps.len() as i64, "task")) }
                            @if t.on_child_failure.is_some() { " · a failed one is ignored" }
                        }
                    }
                    table.grid {
                        thead { tr { th { "Task" } th { "Queue" } th { "Status" } th { "How" } th { "Result" } } }
                        tbody {
                            @for d in &deps {
                                tr data-task=(d.id) {
                                    td { a href=(format!("/tasks/{}", d.id)) { (d.name) } " " span.mono.muted { (ui::short_id(d.id)) } }
                                    td { (d.queue) }
                                    td { (badge(&d.status)) }
                                    td.muted { @if d.kind == "child" { "child" } @else { "depends on" } }
                                    td.mono.wrap { @if let Some(r) = &d.result { (ui::truncate(&r.to_string(), 80)) } @else { span.muted { "—" } } }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(e) = &t.last_error {
                section.card.lasterror { div.cardhead { h2 { "Last error" } } pre.code { (e) } }
            }
            section.card {
                div.cardhead { h2 { "Attempts" } span.muted { (attempts.len()) } }
                @if attempts.is_empty() {
                    p.empty { "No attempt yet." }
                } @else {
                    ol.timeline { @for a in attempts.iter().rev() { (attempt_item(a, longest)) } }
                }
            }
            section.card.flush {
                div.cardhead { h2 { "Manual actions" } span.muted { "who did what, from the audit log" } }
                table.grid {
                    thead { tr { th { "When" } th { "Action" } th { "By" } th { "Status before" } } }
                    tbody {
                        @if actions.is_empty() { tr { td.empty colspan="4" { "None." } } }
                        @for a in &actions {
                            tr {
                                td.nowrap { (time(a.at)) }
                                td { (a.action.replace('_', " ")) }
                                td.mono { (a.actor) }
                                td { @if let Some(p) = a.detail.get("previous_status").and_then(|v| v.as_str()) { (badge(p)) } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(ui::page(&s, Nav::Tasks, &t.name, &flash, &since, body))
}

async fn act(state: &DashState, s: &Session, id: &str, f: &ActionForm, action: &str) -> Result<String, PageError> {
    s.check_csrf(&f.csrf)?;
    s.require(if action == "redrive" { Permission::DlqManage } else { Permission::TasksManage })?;
    let id = parse_id(id)?;
    let c = &state.chronos;
    Ok(match action {
        "retry" => {
            c.retry_now(&s.caller, id).await?;
            "Queued to run now.".into()
        }
        "redrive" => {
            c.redrive(&s.caller, id).await?;
            "Redriven: queued with a fresh attempt budget.".into()
        }
        _ => {
            let t = c.cancel(&s.caller, id).await?;
            if t.cancel_requested {
                "Cancellation requested: the handler is told at its next heartbeat.".into()
            } else {
                "Cancelled.".into()
            }
        }
    })
}

fn back(f: &ActionForm, id: &str) -> String {
    f.back.clone().unwrap_or_else(|| format!("/tasks/{}", ui::url_encode(id)))
}

pub async fn retry(State(state): State<DashState>, s: Session, Path(id): Path<String>, Form(f): Form<ActionForm>) -> Response {
    after_action(act(&state, &s, &id, &f, "retry").await, Some(&back(&f, &id)), "/tasks")
}

pub async fn cancel(State(state): State<DashState>, s: Session, Path(id): Path<String>, Form(f): Form<ActionForm>) -> Response {
    after_action(act(&state, &s, &id, &f, "cancel").await, Some(&back(&f, &id)), "/tasks")
}

pub async fn redrive(State(state): State<DashState>, s: Session, Path(id): Path<String>, Form(f): Form<ActionForm>) -> Response {
    after_action(act(&state, &s, &id, &f, "redrive").await, Some(&back(&f, &id)), "/tasks")
}
