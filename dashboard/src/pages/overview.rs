//! `GET /`: every queue's counts (live), attempts per minute over the last hour, pause and
//! resume, limits. `POST /queues/{queue}/pause`, `/resume`, `/limits`.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chronos_core::access::Permission;
use chronos_core::client::QueueSummary;
use chronos_core::history;
use chronos_core::limits::{LimitsPatch, QueueLimits, Rate};
use maud::{Markup, html};

use super::{ActionForm, after_action};
use crate::DashState;
use crate::error::PageError;
use crate::session::{Flash, Session};
use crate::ui::{self, Nav, num};

const CHART_MINUTES: u32 = 60;

fn cell(q: &str, k: &str, v: impl Into<i128>, href: Option<String>) -> Markup {
    let v = v.into();
    html! {
        td.num.zero[v == 0] data-q=(q) data-k=(k) {
            @if let Some(h) = href { a href=(h) { (num(v)) } } @else { (num(v)) }
        }
    }
}

/// `20 / 1 s`, `5 / 500 ms`.
fn rate_label(r: Rate) -> String {
    if r.period_ms.is_multiple_of(1000) {
        format!("{} / {} s", r.limit, r.period_ms / 1000)
    } else {
        format!("{} / {} ms", r.limit, r.period_ms)
    }
}

/// The queue's limits as chips, and for an operator who may change them a form to do so.
fn limits_cell(s: &Session, q: &QueueSummary, manage: bool) -> Markup {
    let l = q.limits;
    let v = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
    html! {
        td.limits data-q=(q.name) data-k="limits" {
            @if l.is_none() { span.faint { "none" } }
            @if let Some(c) = l.concurrency { span.chip title="Attempts running at once, across all workers" { "≤ " (c) " running" } }
            @if let Some(r) = l.rate { span.chip title="Starts per period (sliding window)" { (rate_label(r)) } }
            @if let Some(c) = l.group_concurrency { span.chip title="Attempts running at once per group" { "≤ " (c) " per group" } }
            @if let Some(r) = l.group_rate { span.chip title="Starts per period per group" { (rate_label(r)) " per group" } }
            @if manage {
                details.limits-edit {
                    summary { "Edit" }
                    form.limits-form method="post" action=(format!("/queues/{}/limits", ui::seg(&q.name))) {
                        input type="hidden" name="csrf" value=(s.csrf);
                        p.hint { "Empty = no limit. Applies to the next claim." }
                        label { span { "Concurrency" } input type="number" min="1" name="concurrency" value=(v(l.concurrency)) placeholder="none"; }
                        label { span { "Rate" }
                            input type="number" min="1" name="rate_limit" value=(v(l.rate.map(|r| r.limit))) placeholder="starts";
                            span.per { "per" }
                            input type="number" min="1" name="rate_period_ms" value=(v(l.rate.map(|r| r.period_ms))) placeholder="ms";
                        }
                        label { span { "Per group" } input type="number" min="1" name="group_concurrency" value=(v(l.group_concurrency)) placeholder="none"; }
                        label { span { "Group rate" }
                            input type="number" min="1" name="group_rate_limit" value=(v(l.group_rate.map(|r| r.limit))) placeholder="starts";
                            span.per { "per" }
                            input type="number" min="1" name="group_rate_period_ms" value=(v(l.group_rate.map(|r| r.period_ms))) placeholder="ms";
                        }
                        button.btn.small type="submit" { "Save limits" }
                    }
                }
            }
        }
    }
}

fn queue_rows(s: &Session, qs: &[QueueSummary]) -> Markup {
    let manage = s.may(Permission::QueuesManage);
    html! {
        table.grid #queues data-region="queues" {
            thead {
                tr {
                    th { "Queue" }
                    th.num { "Waiting" } th.num { "Scheduled" } th.num { "Running" } th.num { "Retrying" }
                    th.num { "Completed" } th.num { "Dead" } th.num { "Cancelled" } th.num { "Oldest waiting" }
                    th { "State" }
                    th { "Limits" }
                    @if manage { th.actions { "" } }
                }
            }
            tbody {
                @if qs.is_empty() {
                    tr {  td.empty colspan="12" { "No queues yet. A queue appears when its first task is enqueued." } }
                }
                @for q in qs {
                    @let tasks = |status: &str| Some(format!("/tasks?queue={}&status={status}", ui::url_encode(&q.name)));
                    tr data-queue=(q.name) data-paused=(q.paused) {
                        td.name { a href=(format!("/tasks?queue={}", ui::url_encode(&q.name))) { (q.name) } }
                        (cell(&q.name, "waiting", q.waiting, tasks("queued")))
                        (cell(&q.name, "scheduled", q.scheduled, tasks("scheduled")))
                        (cell(&q.name, "running", q.running, tasks("running")))
                        (cell(&q.name, "retrying", q.retrying, tasks("retrying")))
                        (cell(&q.name, "completed", q.completed, tasks("completed")))
                        td.num.zero[q.dead == 0].alert[q.dead > 0] data-q=(q.name) data-k="dead" {
                            a href=(format!("/dlq?queue={}", ui::url_encode(&q.name))) { (num(q.dead)) }
                        }
                        (cell(&q.name, "cancelled", q.cancelled, tasks("cancelled")))
                        td.num data-q=(q.name) data-k="oldest" {
                            (q.oldest_waiting_age_s.map(|s| ui::duration_ms((s * 1000.0) as i64)).unwrap_or_else(|| "—".into()))
                        }
                        td {
                            @if q.paused { span.badge.s-paused { "paused" } } @else { span.badge.s-active { "active" } }
                            @if q.unserved {
                                " " span.badge.s-dead data-unserved="" title="Tasks wait here and no live worker serves this queue: start one with it (or *) in CHRONOS_QUEUES" { "no worker" }
                            }
                        }
                        (limits_cell(s, q, manage))
                        @if manage {
                            td.actions {
                                @let (verb, label) = if q.paused { ("resume", "Resume") } else { ("pause", "Pause") };
                                form.inline method="post" action=(format!("/queues/{}/{verb}", ui::seg(&q.name))) {
                                    input type="hidden" name="csrf" value=(s.csrf);
                                    button.btn.small.ghost[!q.paused] type="submit" { (label) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn stat(label: &str, key: &str, v: i64, tone: &str) -> Markup {
    html! {
        div class=(format!("stat {tone}")) {
            span.label { (label) }
            span.value data-total=(key) { (num(v)) }
        }
    }
}

pub async fn page(State(state): State<DashState>, s: Session, flash: Flash) -> Result<Response, PageError> {
    if !s.may(Permission::QueuesRead) {
        // A producer reads its own tasks and nothing else.
        return Ok(Redirect::to("/tasks").into_response());
    }
    let since = state.live.cursor();
    let (qs, minutes) = tokio::join!(state.chronos.queues(), history::throughput(&state.chronos.store, CHART_MINUTES));
    let (qs, minutes) = (qs?, minutes?);
    let total = |f: fn(&QueueSummary) -> i64| qs.iter().map(f).sum::<i64>();
    let body = html! {
        div.pagehead {
            h1 { "Overview" }
            span.sub { (ui::count(qs.len() as i64, "queue")) " · live" }
        }
        section.stats {
            (stat("Waiting", "waiting", total(|q| q.waiting as i64), ""))
            (stat("Scheduled", "scheduled", total(|q| q.scheduled as i64), ""))
            (stat("Running", "running", total(|q| q.running as i64), "info"))
            (stat("Retrying", "retrying", total(|q| q.retrying as i64), "warn"))
            (stat("Completed", "completed", total(|q| q.completed), "good"))
            (stat("Dead", "dead", total(|q| q.dead), "bad"))
            (stat("Cancelled", "cancelled", total(|q| q.cancelled), ""))
        }
        section.card {
            div.cardhead { h2 { "Throughput" } span.muted { "attempts finished per minute" } }
            div #chart data-region="chart" data-refresh-on="counts" data-refresh-ms="10000" { (ui::throughput_chart(&minutes)) }
        }
        section.card.flush.popovers {
            div.cardhead { h2 { "Queues" } span.muted { "waiting, scheduled, running and retrying from Redis; finished counts from the audit record" } }
            div data-region="queues-wrap" #queues-wrap { (queue_rows(&s, &qs)) }
        }
    };
    Ok(ui::page(&s, Nav::Overview, "Overview", &flash, &since, body))
}

async fn set_paused(state: &DashState, s: &Session, queue: &str, f: &ActionForm, paused: bool) -> Result<String, PageError> {
    s.check_csrf(&f.csrf)?;
    s.require(Permission::QueuesManage)?;
    let q = state.chronos.set_queue_paused(&s.caller, queue, paused).await?;
    Ok(if paused { format!("Queue {} paused: workers stop claiming from it.", q.name) } else { format!("Queue {} resumed.", q.name) })
}

pub async fn pause(State(state): State<DashState>, s: Session, Path(queue): Path<String>, Form(f): Form<ActionForm>) -> Response {
    after_action(set_paused(&state, &s, &queue, &f, true).await, f.back.as_deref(), "/")
}

pub async fn resume(State(state): State<DashState>, s: Session, Path(queue): Path<String>, Form(f): Form<ActionForm>) -> Response {
    after_action(set_paused(&state, &s, &queue, &f, false).await, f.back.as_deref(), "/")
}

/// The limits form: every field given (an empty one removes that limit).
#[derive(serde::Deserialize)]
pub struct LimitsForm {
    csrf: String,
    back: Option<String>,
    #[serde(default)]
    concurrency: String,
    #[serde(default)]
    rate_limit: String,
    #[serde(default)]
    rate_period_ms: String,
    #[serde(default)]
    group_concurrency: String,
    #[serde(default)]
    group_rate_limit: String,
    #[serde(default)]
    group_rate_period_ms: String,
}

fn form_count(field: &'static str, v: &str) -> Result<Option<u32>, PageError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| chronos_core::Error::invalid(field, format!("{v:?} is not a whole number; leave it empty for no limit")).into())
}

fn form_rate(field: &'static str, limit: &str, period: &str) -> Result<Option<Rate>, PageError> {
    match (form_count(field, limit)?, form_count(field, period)?) {
        (None, None) => Ok(None),
        (Some(limit), Some(period_ms)) => Ok(Some(Rate { limit, period_ms })),
        _ => Err(chronos_core::Error::invalid(field, "give both the starts and the period in ms, or neither for no limit").into()),
    }
}

async fn set_limits(state: &DashState, s: &Session, queue: &str, f: &LimitsForm) -> Result<String, PageError> {
    s.check_csrf(&f.csrf)?;
    s.require(Permission::QueuesManage)?;
    let want = QueueLimits {
        concurrency: form_count("concurrency", &f.concurrency)?,
        rate: form_rate("rate", &f.rate_limit, &f.rate_period_ms)?,
        group_concurrency: form_count("group_concurrency", &f.group_concurrency)?,
        group_rate: form_rate("group_rate", &f.group_rate_limit, &f.group_rate_period_ms)?,
    };
    let patch = LimitsPatch {
        concurrency: Some(want.concurrency),
        rate: Some(want.rate),
        group_concurrency: Some(want.group_concurrency),
        group_rate: Some(want.group_rate),
    };
    let q = state.chronos.set_queue_limits(&s.caller, queue, &patch).await?;
    Ok(if q.limits.is_none() {
        format!("Queue {}: no limits.", q.name)
    } else {
        format!("Queue {}: limits saved; the next claim applies them.", q.name)
    })
}

pub async fn limits(State(state): State<DashState>, s: Session, Path(queue): Path<String>, Form(f): Form<LimitsForm>) -> Response {
    // A value the operator typed wrong comes back as a message beside the form, not an error page.
    let result = set_limits(&state, &s, &queue, &f).await.map_err(|e| match e {
        PageError::Invalid(m) => PageError::Conflict(format!("Limits not changed: {m}")),
        e => e,
    });
    after_action(result, f.back.as_deref(), "/")
}
