//! CPU time and memory of processes, from /proc (Linux only).

use std::collections::HashMap;
use std::sync::OnceLock;

/// Clock ticks per second of /proc/<pid>/stat times.
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// (utime + stime, cutime + cstime) of `pid`, in seconds.
fn cpu_times(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse::<f64>().ok() };
    let ticks = ticks_per_second();
    Some((
        (field(14)? + field(15)?) / ticks,
        (field(16)? + field(17)?) / ticks,
    ))
}

/// CPU seconds `pid` has used so far (0 if it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    cpu_times(pid).map_or(0.0, |(own, _)| own)
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every process whose command name is `name`.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| comm(*pid).as_deref() == Some(name))
        .collect()
}

/// CPU seconds used so far by every process called `name`, plus what their
/// exited children used (the reaped children of the topmost ones: Postgres
/// backends that ended are counted through the postmaster).
pub fn group_cpu_seconds(name: &str) -> f64 {
    let pids = pids_named(name);
    let names: HashMap<u32, ()> = pids.iter().map(|p| (*p, ())).collect();
    pids.iter()
        .filter_map(|pid| {
            let (own, children) = cpu_times(*pid)?;
            let top = ppid(*pid).is_none_or(|parent| !names.contains_key(&parent));
            Some(if top { own + children } else { own })
        })
        .sum()
}

/// CPU seconds used so far by everything a raw stage runs on: this process
/// (clients, and the receiver and tonic server of those stages), RabbitMQ
/// and Postgres.
pub fn stage_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()) + group_cpu_seconds("beam.smp") + group_cpu_seconds("postgres")
}

/// A `Vm*` line of /proc/<pid>/status in MiB (e.g. `VmHWM`, `VmRSS`).
pub fn vm_mib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me) >= 0.0);
        assert!(vm_mib(me, "VmHWM").is_some_and(|m| m > 0.0));
        assert!(ppid(me).is_some());
    }
}
