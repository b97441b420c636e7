//! Latency histograms, CPU accounting from /proc, rounding for the JSON output.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Microsecond latencies, 1 µs to 120 s, 3 significant digits.
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    pub fn new() -> Self {
        Self(Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"))
    }

    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }

    pub fn summary_ms(&self) -> Value {
        json!({
            "count": self.count(),
            "p50": round3(self.quantile_ms(0.50)),
            "p90": round3(self.quantile_ms(0.90)),
            "p99": round3(self.quantile_ms(0.99)),
            "p999": round3(self.quantile_ms(0.999)),
            "max": round3(self.max_ms()),
        })
    }
}

pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// utime + stime of a process in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state(0) ppid(1) ... utime is field 14 overall → index 11 here, stime 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU use of a process over a window, in percent of one core.
pub struct CpuMeter {
    pid: String,
    ticks: Option<u64>,
    at: Instant,
}

impl CpuMeter {
    pub fn start(pid: impl ToString) -> Self {
        let pid = pid.to_string();
        Self {
            ticks: cpu_ticks(&pid),
            pid,
            at: Instant::now(),
        }
    }

    pub fn percent(&self) -> Option<f64> {
        let now = cpu_ticks(&self.pid)?;
        let secs = self.at.elapsed().as_secs_f64();
        let used = (now - self.ticks?) as f64 / 100.0;
        Some(round1(100.0 * used / secs.max(1e-9)))
    }
}

/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Busy share of one CPU core (everything but idle and iowait: user, system, softirq...), from
/// /proc/stat. A process's own CPU time leaves out the softirq work of its sockets, which on
/// loopback is a large part of a server's core.
pub struct CoreMeter {
    core: usize,
    start: Option<(u64, u64)>,
}

fn core_ticks(core: usize) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat
        .lines()
        .find(|l| l.starts_with(&format!("cpu{core} ")))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

impl CoreMeter {
    pub fn start(core: usize) -> Self {
        Self {
            core,
            start: core_ticks(core),
        }
    }

    pub fn percent(&self) -> Option<f64> {
        let (b0, t0) = self.start?;
        let (b1, t1) = core_ticks(self.core)?;
        (t1 > t0).then(|| round1(100.0 * (b1 - b0) as f64 / (t1 - t0) as f64))
    }
}

/// Errors seen by a scenario's clients: how many, and the first message (shortened) for the report.
#[derive(Default)]
pub struct Errors {
    count: Cell<u64>,
    first: RefCell<Option<String>>,
}

impl Errors {
    pub fn note(&self, what: &str) {
        self.count.set(self.count.get() + 1);
        let mut first = self.first.borrow_mut();
        if first.is_none() {
            *first = Some(what.chars().take(300).collect());
        }
    }

    pub fn count(&self) -> u64 {
        self.count.get()
    }

    /// Forgets the count (not the first message), e.g. after a warm-up.
    pub fn reset_count(&self) {
        self.count.set(0);
    }

    pub fn first(&self) -> Option<String> {
        self.first.borrow().clone()
    }
}
