//! The tick's planner: which occurrences of a schedule to plan in one pass, as a pure function
//! of (expression, zone, `planned_until`, misfire policy, clock, horizon). No I/O: the tick
//! records what it returns; tests drive the clock instead of sleeping.

use chrono::{DateTime, Utc};

use crate::cron::{CronExpr, Tz};

use super::Misfire;

/// Occurrences one schedule gets per planning pass; a schedule further behind (every second,
/// after a long outage with `run_all`) catches up over several passes of the same tick.
pub const PASS_LIMIT: usize = 1000;

/// What one pass plans for one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Fire instants to enqueue, oldest first.
    pub fires: Vec<DateTime<Utc>>,
    /// The schedule's new `planned_until`.
    pub planned_to: DateTime<Utc>,
    /// Missed occurrences (their instant passed while no tick ran) left out by the policy.
    pub misfires_skipped: u64,
}

/// Plan the occurrences in `(planned_until, until]` (at most [`PASS_LIMIT`]), applying the
/// misfire policy to those at or before `now`.
pub fn plan(expr: &CronExpr, tz: Tz, planned_until: DateTime<Utc>, misfire: Misfire, now: DateTime<Utc>, until: DateTime<Utc>) -> Plan {
    let mut fires = Vec::new();
    let mut planned_to = planned_until;
    let mut misfires_skipped = 0;
    if planned_until < now {
        // Missed while no tick ran.
        let mut missed = expr.occurrences(tz, planned_until, now, PASS_LIMIT);
        let complete = missed.len() < PASS_LIMIT;
        match misfire {
            Misfire::RunAll => {
                if let Some(&last) = missed.last() {
                    planned_to = last;
                }
                fires.append(&mut missed);
            }
            Misfire::RunOnce | Misfire::Skip => {
                let mut skipped = missed.len() as u64;
                let mut last = missed.last().copied();
                // Only the latest matters: walk to it without keeping the rest.
                while !missed.is_empty() && missed.len() == PASS_LIMIT {
                    missed = expr.occurrences(tz, missed[PASS_LIMIT - 1], now, PASS_LIMIT);
                    skipped += missed.len() as u64;
                    last = missed.last().copied().or(last);
                }
                if misfire == Misfire::RunOnce
                    && let Some(l) = last
                {
                    fires.push(l);
                    skipped -= 1;
                }
                misfires_skipped = skipped;
                planned_to = now;
            }
        }
        if misfire == Misfire::RunAll && !complete {
            // More missed occurrences than one pass takes: the next pass continues.
            return Plan { fires, planned_to, misfires_skipped };
        }
        planned_to = planned_to.max(now);
    }
    let room = PASS_LIMIT.saturating_sub(fires.len()).max(1);
    let ahead = expr.occurrences(tz, planned_to, until, room);
    planned_to = if ahead.len() == room { *ahead.last().unwrap_or(&until) } else { until };
    fires.extend(ahead);
    Plan { fires, planned_to, misfires_skipped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::parse_timezone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn a_schedule_on_time_plans_its_window_ahead() {
        let e = CronExpr::parse("*/1 * * * *").unwrap();
        let tz = parse_timezone("UTC").unwrap();
        let p = plan(&e, tz, at("2026-01-01T00:00:00Z"), Misfire::RunOnce, at("2026-01-01T00:00:00Z"), at("2026-01-01T00:03:00Z"));
        assert_eq!(p.fires, vec![at("2026-01-01T00:01:00Z"), at("2026-01-01T00:02:00Z"), at("2026-01-01T00:03:00Z")]);
        assert_eq!((p.planned_to, p.misfires_skipped), (at("2026-01-01T00:03:00Z"), 0));
    }

    #[test]
    fn each_misfire_policy_decides_what_an_outage_missed() {
        let e = CronExpr::parse("*/1 * * * *").unwrap();
        let tz = parse_timezone("UTC").unwrap();
        let (from, now, until) = (at("2026-01-01T00:00:00Z"), at("2026-01-01T00:10:00Z"), at("2026-01-01T00:12:00Z"));
        let ahead = [at("2026-01-01T00:11:00Z"), at("2026-01-01T00:12:00Z")];
        let all = plan(&e, tz, from, Misfire::RunAll, now, until);
        assert_eq!(all.fires.len(), 12, "ten missed and two ahead");
        assert_eq!(all.misfires_skipped, 0);
        let once = plan(&e, tz, from, Misfire::RunOnce, now, until);
        assert_eq!(once.fires, [&[now][..], &ahead].concat(), "the latest missed one, then the window");
        assert_eq!(once.misfires_skipped, 9);
        let skip = plan(&e, tz, from, Misfire::Skip, now, until);
        assert_eq!(skip.fires, ahead.to_vec());
        assert_eq!((skip.misfires_skipped, skip.planned_to), (10, until));
    }

    #[test]
    fn a_run_all_catch_up_longer_than_a_pass_continues_in_the_next() {
        let e = CronExpr::parse("* * * * * *").unwrap();
        let tz = parse_timezone("UTC").unwrap();
        let from = at("2026-01-01T00:00:00Z");
        let now = from + chrono::Duration::seconds(5000);
        let p = plan(&e, tz, from, Misfire::RunAll, now, now + chrono::Duration::seconds(180));
        assert_eq!(p.fires.len(), PASS_LIMIT);
        assert_eq!(p.planned_to, from + chrono::Duration::seconds(PASS_LIMIT as i64));
    }
}
