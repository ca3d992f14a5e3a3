//! `GET /schedules`: each schedule with its cron in words, zone, next five fires and last
//! runs; `POST /schedules/{id}/pause`, `/resume`, `/trigger`.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;
use chrono::Utc;
use chronos_core::access::Permission;
use chronos_core::cron::parse_timezone;
use chronos_core::schedule::{ChangeError, ScheduleRecord};
use chronos_core::store::TaskRecord;
use maud::{Markup, html};
use serde_json::json;
use uuid::Uuid;

use super::{ActionForm, after_action};
use crate::DashState;
use crate::cron_words::describe;
use crate::error::PageError;
use crate::session::{Flash, Session};
use crate::ui::{self, Nav, badge};

const LAST_RUNS: i64 = 8;

fn fires(s: &ScheduleRecord) -> Markup {
    let tz = parse_timezone(&s.timezone).ok();
    let next = if s.paused { Vec::new() } else { s.next_fires(Utc::now(), 5) };
    html! {
        @if s.paused { span.muted { "paused" } }
        @else if next.is_empty() { span.muted { "none" } }
        ol.fires {
            @for t in &next {
                li title=(t.format("%Y-%m-%d %H:%M:%S UTC")) {
                    @match tz {
                        Some(tz) => { (t.with_timezone(&tz).format("%a %d %b %H:%M:%S %:z")) }
                        None => { (t.format("%a %d %b %H:%M:%S UTC")) }
                    }
                }
            }
        }
    }
}

fn runs(rs: &[TaskRecord]) -> Markup {
    html! {
        @if rs.is_empty() { span.muted { "no runs yet" } }
        div.runs {
            @for r in rs {
                a.run href=(format!("/tasks/{}", r.id)) title=(format!("{} · {}", r.status, r.fire_at.unwrap_or(r.run_at).format("%Y-%m-%d %H:%M:%S UTC"))) {
                    (badge(&r.status))
                }
            }
        }
    }
}

fn row(s: &Session, sc: &ScheduleRecord, rs: &[TaskRecord]) -> Markup {
    let manage = s.may(Permission::SchedulesManage);
    html! {
        tr data-schedule=(sc.id) {
            td.name {
                strong { (sc.name) }
                span.sub { "runs " span.mono { (sc.task.name) } " on " a href=(format!("/tasks?queue={}", ui::url_encode(&sc.task.queue))) { (sc.task.queue) } }
            }
            td {
                div { (describe(&sc.cron)) }
                code.cron { (sc.cron) }
            }
            td { (sc.timezone) }
            td { @if sc.paused { span.badge.s-paused { "paused" } } @else { span.badge.s-active { "active" } }
                 span.sub { "overlap " (sc.overlap.as_str()) " · misfire " (sc.misfire.as_str()) } }
            td.fires { (fires(sc)) }
            td { (runs(rs)) }
            @if manage {
                td.actions {
                    @let verb = if sc.paused { "resume" } else { "pause" };
                    form.inline method="post" action=(format!("/schedules/{}/{verb}", sc.id)) {
                        input type="hidden" name="csrf" value=(s.csrf);
                        button.btn.small.ghost type="submit" { @if sc.paused { "Resume" } @else { "Pause" } }
                    }
                    form.inline method="post" action=(format!("/schedules/{}/trigger", sc.id)) data-confirm=(format!("Run {} once now?", sc.name)) {
                        input type="hidden" name="csrf" value=(s.csrf);
                        button.btn.small type="submit" { "Trigger" }
                    }
                }
            }
        }
    }
}

pub async fn page(State(state): State<DashState>, s: Session, flash: Flash) -> Result<Response, PageError> {
    s.require(Permission::SchedulesRead)?;
    let since = state.live.cursor();
    let list = state.scheduler.list(None, 500).await?;
    let mut with_runs = Vec::with_capacity(list.len());
    for sc in list {
        let rs = state.scheduler.runs(sc.id, LAST_RUNS).await?;
        with_runs.push((sc, rs));
    }
    let manage = s.may(Permission::SchedulesManage);
    let body = html! {
        div.pagehead {
            h1 { "Schedules" }
            span.sub { (with_runs.len()) " schedules · next fires in each schedule's own zone" }
        }
        section.card.flush {
            table.grid.schedules #schedules data-region="schedules" data-refresh-on="tasks" data-refresh-ms="5000" {
                thead { tr { th { "Schedule" } th { "When" } th { "Zone" } th { "State" } th { "Next five" } th { "Last runs (newest first)" } @if manage { th.actions {} } } }
                tbody {
                    @if with_runs.is_empty() {
                        tr { td.empty colspan="7" { "No schedules. Create one with " code { "POST /v1/schedules" } "." } }
                    }
                    @for (sc, rs) in &with_runs { (row(&s, sc, rs)) }
                }
            }
        }
    };
    Ok(ui::page(&s, Nav::Schedules, "Schedules", &flash, &since, body))
}

fn parse_id(id: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(id).map_err(|_| PageError::NotFound(format!("There is no schedule {id:?}.")))
}

fn change(e: ChangeError, id: Uuid) -> PageError {
    match e {
        ChangeError::NotFound => PageError::NotFound(format!("There is no schedule {id}.")),
        ChangeError::NameTaken(m) => PageError::Conflict(m),
        ChangeError::Other(e) => e.into(),
    }
}

async fn set_paused(state: &DashState, s: &Session, id: &str, f: &ActionForm, paused: bool) -> Result<String, PageError> {
    s.check_csrf(&f.csrf)?;
    s.require(Permission::SchedulesManage)?;
    let id = parse_id(id)?;
    let rec = state.scheduler.set_paused(id, paused).await.map_err(|e| change(e, id))?;
    let action = if paused { "schedule_pause" } else { "schedule_resume" };
    state.chronos.audit(&s.caller, action, None, json!({ "schedule_id": id, "name": rec.name })).await?;
    Ok(if paused { format!("Schedule {} paused.", rec.name) } else { format!("Schedule {} resumed.", rec.name) })
}

async fn trigger_one(state: &DashState, s: &Session, id: &str, f: &ActionForm) -> Result<String, PageError> {
    s.check_csrf(&f.csrf)?;
    s.require(Permission::SchedulesManage)?;
    let id = parse_id(id)?;
    let task = state.scheduler.trigger(id).await?.ok_or_else(|| PageError::NotFound(format!("There is no schedule {id}.")))?;
    state.chronos.audit(&s.caller, "schedule_trigger", Some(task), json!({ "schedule_id": id, "task_id": task })).await?;
    Ok(format!("Triggered: task {task} queued."))
}

pub async fn pause(State(state): State<DashState>, s: Session, Path(id): Path<String>, Form(f): Form<ActionForm>) -> Response {
    after_action(set_paused(&state, &s, &id, &f, true).await, f.back.as_deref(), "/schedules")
}

pub async fn resume(State(state): State<DashState>, s: Session, Path(id): Path<String>, Form(f): Form<ActionForm>) -> Response {
    after_action(set_paused(&state, &s, &id, &f, false).await, f.back.as_deref(), "/schedules")
}

pub async fn trigger(State(state): State<DashState>, s: Session, Path(id): Path<String>, Form(f): Form<ActionForm>) -> Response {
    after_action(trigger_one(&state, &s, &id, &f).await, f.back.as_deref(), "/schedules")
}
