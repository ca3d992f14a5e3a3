//! `GET /dlq`: dead tasks grouped by their error; `POST /dlq/redrive` starts a redrive job for
//! one group (or every dead task), its progress pushed live (see [`super::jobs`]).

use axum::Form;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use chronos_core::access::Permission;
use chronos_core::history;
use chronos_core::jobs::{JobKind, Selection};
use maud::html;
use serde::Deserialize;

use crate::DashState;
use crate::error::PageError;
use crate::session::{Flash, Session};
use crate::ui::{self, Nav, num};

#[derive(Debug, Default, Deserialize)]
pub struct DlqParams {
    #[serde(default)]
    queue: String,
}

pub async fn page(State(state): State<DashState>, s: Session, flash: Flash, Query(p): Query<DlqParams>) -> Result<Response, PageError> {
    s.require(Permission::DlqRead)?;
    let since = state.live.cursor();
    let queue = Some(p.queue.trim().to_owned()).filter(|q| !q.is_empty());
    let groups = history::dead_groups(&state.chronos.store, queue.as_deref(), 100).await?;
    let total: i64 = groups.iter().map(|g| g.count).sum();
    let manage = s.may(Permission::DlqManage);
    let jobs = super::jobs::recent_redrives(&state.chronos, &s.caller).await?;
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
        div #jobs.jobs data-region="jobs" { @for j in &jobs { (super::jobs::job_row(j, &s)) } }
        section.card.flush {
            table.grid.dlq #groups data-region="groups" data-refresh-on="job dead" data-refresh-ms="1500" {
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
                            td.nowrap { @for id in g.sample.iter().take(3) { a.mono.idlink href=(format!("/tasks/{id}")) { (ui::short_id(*id)) } " " } }
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
    let selection = Selection { queue: queue.clone(), error: f.error, ..Default::default() };
    let job = state.chronos.start_job(&s.caller, JobKind::Redrive, selection).await?;
    let to = match &queue {
        Some(q) => format!("/dlq?queue={}", ui::url_encode(q)),
        None => "/dlq".into(),
    };
    let mut r = Redirect::to(&to).into_response();
    let text = format!("{}: {} dead tasks, in the background.", super::jobs::label(&job), num(job.total));
    r.headers_mut().append(header::SET_COOKIE, Flash::set(true, &text));
    Ok(r)
}
