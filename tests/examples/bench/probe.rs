//! Where the time goes: server-wide Redis counters (`INFO commandstats`, `INFO cpu`), the CPU
//! of the processes under test, of the local Postgres server and of the whole machine, read
//! from /proc before and after a scenario and turned into costs per task.

use std::collections::HashMap;

use anyhow::Result;
use chronos_core::Engine;

use crate::report::Report;

/// Linux counts process CPU in clock ticks of 1/100 s.
const TICKS_PER_S: f64 = 100.0;

/// Command name and user + system CPU seconds (all threads) of one process.
fn proc_stat(pid: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(") ")?;
    let comm = head.split_once(" (")?.1.to_owned();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 (utime) and 15 (stime); `rest` starts at field 3.
    Some((comm, (tick(11) + tick(12)) / TICKS_PER_S))
}

pub fn process_cpu_s(pid: u32) -> f64 {
    proc_stat(&pid.to_string()).map_or(0.0, |(_, s)| s)
}

pub fn self_cpu_s() -> f64 {
    proc_stat("self").map_or(0.0, |(_, s)| s)
}

/// Resident set size now and its peak (`VmRSS`, `VmHWM`), in bytes.
pub fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(line[name.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok()? * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU seconds of each Postgres server process on this machine, by pid.
fn postgres_cpu() -> HashMap<u32, f64> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return HashMap::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| match proc_stat(&pid.to_string())? {
            (comm, s) if comm == "postgres" => Some((pid, s)),
            _ => None,
        })
        .collect()
}

/// Busy and total CPU seconds of the whole machine (all cores), from /proc/stat.
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return (0.0, 0.0) };
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    ((total - idle) / TICKS_PER_S, total / TICKS_PER_S)
}

/// A snapshot; `since` turns two into a difference.
#[derive(Clone, Default)]
pub struct Probe {
    pub calls: u64,
    pub scripts: u64,
    pub redis_cpu_s: f64,
    /// The processes under test (workers, the API) and this process.
    pub procs_cpu_s: f64,
    pub self_cpu_s: f64,
    pg: HashMap<u32, f64>,
    pub pg_cpu_s: f64,
    pub machine_busy_s: f64,
    pub machine_total_s: f64,
    /// Per command: calls and microseconds inside Redis.
    pub by_command: HashMap<String, (u64, u64)>,
}

impl Probe {
    pub async fn take(engine: &Engine, pids: &[u32]) -> Result<Probe> {
        let mut conn = engine.connection();
        let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await?;
        let cpu: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
        let (machine_busy_s, machine_total_s) = machine_cpu();
        let mut p = Probe {
            procs_cpu_s: pids.iter().map(|p| process_cpu_s(*p)).sum(),
            self_cpu_s: self_cpu_s(),
            pg: postgres_cpu(),
            machine_busy_s,
            machine_total_s,
            ..Probe::default()
        };
        for line in stats.lines() {
            let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
            let field = |f: &str| -> u64 { rest.split(',').find_map(|kv| kv.strip_prefix(f)).and_then(|c| c.parse().ok()).unwrap_or(0) };
            let calls = field("calls=");
            p.by_command.insert(name.to_owned(), (calls, field("usec=")));
            p.calls += calls;
            if matches!(name, "evalsha" | "eval" | "evalsha_ro" | "eval_ro" | "fcall" | "fcall_ro") {
                p.scripts += calls;
            }
        }
        for line in cpu.lines() {
            if let Some((k, v)) = line.trim().split_once(':')
                && (k == "used_cpu_sys" || k == "used_cpu_user")
            {
                p.redis_cpu_s += v.parse::<f64>().unwrap_or(0.0);
            }
        }
        Ok(p)
    }

    pub fn since(self, before: &Probe) -> Probe {
        let by_command = self
            .by_command
            .iter()
            .map(|(k, (c, u))| {
                let (c0, u0) = before.by_command.get(k).copied().unwrap_or_default();
                (k.clone(), (c.saturating_sub(c0), u.saturating_sub(u0)))
            })
            .filter(|(_, (c, _))| *c > 0)
            .collect();
        Probe {
            calls: self.calls.saturating_sub(before.calls),
            scripts: self.scripts.saturating_sub(before.scripts),
            redis_cpu_s: self.redis_cpu_s - before.redis_cpu_s,
            procs_cpu_s: self.procs_cpu_s - before.procs_cpu_s,
            self_cpu_s: self.self_cpu_s - before.self_cpu_s,
            pg: HashMap::new(),
            pg_cpu_s: self.pg.iter().map(|(pid, s)| s - before.pg.get(pid).copied().unwrap_or(0.0)).sum(),
            machine_busy_s: self.machine_busy_s - before.machine_busy_s,
            machine_total_s: self.machine_total_s - before.machine_total_s,
            by_command,
        }
    }

    /// Costs per task under `key_…`: Redis commands, script calls, Redis CPU, the processes'
    /// CPU (`procs` names them, e.g. "worker"), Postgres CPU, and the machine's busy cores.
    pub fn report(&self, r: &mut Report, key: &str, label: &str, tasks: usize, procs: &str, secs: f64) {
        let n = tasks.max(1) as f64;
        r.add(format!("{key}_redis_calls_per_task"), format!("{label}: Redis commands / task"), self.calls as f64 / n, "calls");
        r.add(format!("{key}_scripts_per_task"), format!("{label}: script calls / task"), self.scripts as f64 / n, "calls");
        r.add(format!("{key}_redis_cpu_us_per_task"), format!("{label}: Redis CPU / task"), self.redis_cpu_s * 1e6 / n, "µs");
        r.add(format!("{key}_{procs}_cpu_us_per_task"), format!("{label}: {procs} CPU / task"), self.procs_cpu_s * 1e6 / n, "µs");
        r.add(format!("{key}_pg_cpu_us_per_task"), format!("{label}: Postgres CPU / task"), self.pg_cpu_s * 1e6 / n, "µs");
        if secs > 0.0 {
            r.add(format!("{key}_busy_cores"), format!("{label}: machine busy (cores)"), self.machine_busy_s / secs, "cores");
        }
    }

    /// Redis commands per task by command, most frequent first, to stderr.
    pub fn print_by_command(&self, label: &str, tasks: usize) {
        let mut v: Vec<_> = self.by_command.iter().collect();
        v.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        eprintln!("  {label}: Redis commands per task (µs inside Redis; a script's time includes its commands)");
        for (name, (calls, usec)) in v {
            eprintln!("    {name:<16} {:>8.3} calls  {:>8.2} µs", *calls as f64 / tasks as f64, *usec as f64 / tasks as f64);
        }
    }
}
