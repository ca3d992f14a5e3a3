//! `chronos jobs …` and the bulk `chronos dlq redrive --all`: start a job, follow its progress
//! (a progress line on a terminal), list, show and cancel jobs. The views are the API's
//! (`GET /v1/jobs/{id}`), so `--json` prints what the API returns.
//!
//! A followed job is also worked from here when no other runner holds it: a CLI pointed at the
//! stores finishes its job even when no worker runs.

use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use anyhow::Result;
use chronos_api::routes::jobs::{JobList, JobView};
use chronos_core::Chronos;
use chronos_core::jobs::{DlqHandle, Job, JobKind, Selection, run_job};

use crate::ops::{self, cli_caller, refusal};

#[derive(clap::Args, Default)]
pub struct FilterArgs {
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    /// pending, queued, scheduled, running, retrying, completed, dead or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    /// Full-text search, as `chronos tasks --q`.
    #[arg(long)]
    pub q: Option<String>,
    /// RFC 3339, e.g. 2026-12-01T00:00:00Z.
    #[arg(long)]
    pub created_after: Option<String>,
    #[arg(long)]
    pub created_before: Option<String>,
    /// The first line of the last error (the dashboard's dead-letter groups).
    #[arg(long)]
    pub error: Option<String>,
}

impl FilterArgs {
    fn selection(self) -> Result<Selection> {
        let time = |flag: &str, v: Option<String>| -> Result<Option<chrono::DateTime<chrono::Utc>>> {
            v.map(|v| {
                chrono::DateTime::parse_from_rfc3339(&v).map(|t| t.to_utc()).map_err(|_| {
                    ops::Refusal::new(ops::Kind::Invalid, format!("{flag}: {v:?} is not an RFC 3339 instant (e.g. 2026-12-01T00:00:00Z)"))
                        .into()
                })
            })
            .transpose()
        };
        Ok(Selection {
            queue: self.queue,
            name: self.name,
            status: self.status,
            q: self.q,
            created_after: time("--created-after", self.created_after)?,
            created_before: time("--created-before", self.created_before)?,
            error: self.error,
        })
    }
}

#[derive(clap::Subcommand)]
pub enum JobsCmd {
    /// Jobs, newest first (the view of GET /v1/jobs).
    List {
        /// 1–200.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=200))]
        limit: i64,
        #[arg(long)]
        cursor: Option<uuid::Uuid>,
    },
    /// One job's progress and result; --wait follows it until it ends.
    Show {
        id: uuid::Uuid,
        #[arg(long)]
        wait: bool,
    },
    /// Start a bulk operation over the tasks the filter selects: redrive (dead tasks back with
    /// their SQS messages removed), cancel, or retry (scheduled, retrying and dead queued now).
    /// Follows it with a progress line unless --no-wait.
    Create {
        #[arg(value_parser = ["redrive", "cancel", "retry"])]
        kind: String,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop a job: a queued one at once, a running one after its current step.
    Cancel { id: uuid::Uuid },
}

pub async fn jobs(c: &Chronos, dlq_queue: &str, cmd: JobsCmd, json: bool) -> Result<()> {
    match cmd {
        JobsCmd::List { limit, cursor } => {
            let mut jobs = c.jobs(&cli_caller(), cursor, limit + 1).await.map_err(refusal)?;
            let more = jobs.len() as i64 > limit;
            jobs.truncate(limit as usize);
            let next_cursor = if more { jobs.last().map(|j| j.id) } else { None };
            let list = JobList { jobs: jobs.into_iter().map(Into::into).collect(), next_cursor };
            if json {
                return ops::emit_json(&list);
            }
            let rows = list
                .jobs
                .iter()
                .map(|j| {
                    vec![
                        j.id.to_string(),
                        j.kind.clone(),
                        j.state.clone(),
                        format!("{} / {}", j.processed, j.total),
                        j.succeeded.to_string(),
                        j.skipped.to_string(),
                        ops::time(j.created_at),
                    ]
                })
                .collect();
            let mut text = ops::table(&["ID", "KIND", "STATE", "PROCESSED", "DONE", "SKIPPED", "CREATED"], rows);
            if let Some(c) = list.next_cursor {
                text.push_str(&format!("more: --cursor {c}\n"));
            }
            ops::emit(&text)
        }
        JobsCmd::Show { id, wait } => {
            let job = c.job(&cli_caller(), id).await.map_err(refusal)?;
            let job = if wait { follow(c, dlq_queue, job).await? } else { job };
            finish(job, json)
        }
        JobsCmd::Create { kind, filter, no_wait } => {
            let kind = JobKind::parse(&kind).map_err(refusal)?;
            start(c, dlq_queue, kind, filter.selection()?, no_wait, json).await
        }
        JobsCmd::Cancel { id } => {
            let job = c.cancel_job(&cli_caller(), id).await.map_err(refusal)?;
            if json {
                return ops::emit_json(&JobView::from(job));
            }
            ops::emit(&format!("job {id} {}\n", if job.state == "cancelled" { "cancelled" } else { "stops after its current step" }))
        }
    }
}

/// Start a job, then (unless `no_wait`) follow it to its end.
pub async fn start(c: &Chronos, dlq_queue: &str, kind: JobKind, sel: Selection, no_wait: bool, json: bool) -> Result<()> {
    let job = c.start_job(&cli_caller(), kind, sel).await.map_err(refusal)?;
    if no_wait {
        if json {
            return ops::emit_json(&JobView::from(job));
        }
        return ops::emit(&format!("job {} started: {} tasks; follow it with `chronos jobs show {} --wait`\n", job.id, job.total, job.id));
    }
    let job = follow(c, dlq_queue, job).await?;
    finish(job, json)
}

/// Until the job ends: work it here when no runner holds it, and redraw the progress line.
async fn follow(c: &Chronos, dlq_queue: &str, mut job: Job) -> Result<Job> {
    let tty = std::io::stderr().is_terminal();
    let who = format!("cli-{}", std::process::id());
    let mut dlq = DlqHandle::new(None, Some(dlq_queue.to_owned()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let work = {
        let (c, who, id, stop) = (c.clone(), who.clone(), job.id, stop.clone());
        tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    return;
                }
                match run_job(&c, &mut dlq, &who, id, &stop).await {
                    // Held elsewhere, or a step failed and backs off: look again shortly.
                    Ok(false) | Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    Ok(true) => {}
                }
            }
        })
    };
    while !job.is_finished() {
        if tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{}", progress_line(&job));
            let _ = err.flush();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        job = c.job(&cli_caller(), job.id).await.map_err(refusal)?;
    }
    let _ = stop_tx.send(true);
    let _ = work.await;
    if tty {
        eprint!("\r\x1b[2K");
    }
    Ok(job)
}

fn progress_line(j: &Job) -> String {
    let pct = if j.total == 0 { 100 } else { (j.processed * 100 / j.total).min(100) };
    let width = 30usize;
    let filled = (pct as usize * width) / 100;
    let mut line =
        format!("{} [{}{}] {pct:>3}% {} / {} tasks", j.kind.as_str(), "#".repeat(filled), "-".repeat(width - filled), j.processed, j.total);
    if j.phase == "letters" {
        line.push_str(&format!(" · removing SQS messages ({} left)", j.sqs_letters_pending));
    }
    line
}

/// Print the job's outcome; a job that failed is exit code 1, one cancelled is 4.
fn finish(job: Job, json: bool) -> Result<()> {
    let (state, id) = (job.state.clone(), job.id);
    let last_error = job.last_error.clone();
    if json {
        ops::emit_json(&JobView::from(job))?;
    } else {
        let mut text = format!("job {id} {state}: {} of {} tasks processed", job.processed, job.total);
        let verb = match job.kind {
            JobKind::Redrive => "redriven",
            JobKind::Cancel => "cancelled",
            JobKind::Retry => "queued again",
        };
        text.push_str(&format!(", {} {verb}, {} skipped", job.succeeded, job.skipped));
        if job.kind == JobKind::Redrive {
            text.push_str(&format!(
                "; {} SQS messages removed, {} not found in the queue, {} still to remove",
                job.sqs_messages_removed, job.sqs_letters_not_found, job.sqs_letters_pending
            ));
        }
        text.push('\n');
        ops::emit(&text)?;
    }
    match state.as_str() {
        "failed" => Err(anyhow::anyhow!("the job failed: {}", last_error.unwrap_or_default())),
        "cancelled" => Err(ops::Refusal::new(ops::Kind::Refused, format!("job {id} was cancelled before it finished")).into()),
        _ => Ok(()),
    }
}
