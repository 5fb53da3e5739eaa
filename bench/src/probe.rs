//! What the harness reads from /proc: the machine, the server's memory, and
//! which process spent the CPU during a phase. Parsers are pure and tested;
//! reading is best-effort (a figure that cannot be read is left out).

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

/// The machine the run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: Option<String>,
    pub mem_total_mib: Option<u64>,
    pub kernel: Option<String>,
    /// `/proc/loadavg` when the run started (other work on the machine).
    pub loadavg_at_start: Option<String>,
}

impl Machine {
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model: cpuinfo.lines().find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned())
            }),
            mem_total_mib: parse_kb_field(&meminfo, "MemTotal").map(|kb| kb / 1024),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            loadavg_at_start: read_trimmed("/proc/loadavg"),
        }
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// A `Field:   123 kB` line of /proc/meminfo or /proc/<pid>/status.
pub fn parse_kb_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A process's memory, in MiB.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    /// VmRSS now.
    pub rss_mib: f64,
    /// VmHWM: the peak RSS since the process started.
    pub hwm_mib: f64,
}

pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Memory {
        rss_mib: parse_kb_field(&status, "VmRSS")? as f64 / 1024.0,
        hwm_mib: parse_kb_field(&status, "VmHWM")? as f64 / 1024.0,
    })
}

/// CPU of a /proc/<pid>/stat line in clock ticks: utime + stime, plus
/// cutime + cstime of reaped children. The children's part is what keeps
/// PostgreSQL honest: a backend that exits during a phase takes its CPU
/// with it, but the postmaster, which reaps it, inherits the time. The
/// command name may contain spaces and parentheses, so fields count from
/// the last ')'.
pub fn parse_stat_ticks(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let ticks = (11..=14).map(|i| fields.get(i)?.parse::<u64>().ok()).sum::<Option<u64>>()?;
    Some((comm, ticks))
}

fn ticks_of(pid: &str) -> Option<(String, u64)> {
    parse_stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Busy and total jiffies of the whole machine (first line of /proc/stat).
pub fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// CPU spent so far by the parts of the stack, in clock ticks.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    at: Option<Instant>,
    server: Option<u64>,
    nats: Option<u64>,
    postgres: u64,
    bench: Option<u64>,
    machine: Option<(u64, u64)>,
}

impl CpuSnapshot {
    pub fn take(server: Option<u32>, nats: Option<u32>) -> Self {
        let of = |pid: Option<u32>| pid.and_then(|p| ticks_of(&p.to_string())).map(|(_, t)| t);
        // Every PostgreSQL backend is its own process named `postgres`.
        let postgres = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())).and_then(ticks_of))
            .filter(|(comm, _)| comm == "postgres")
            .map(|(_, t)| t)
            .sum();
        Self {
            at: Some(Instant::now()),
            server: of(server),
            nats: of(nats),
            postgres,
            bench: ticks_of("self").map(|(_, t)| t),
            machine: std::fs::read_to_string("/proc/stat").ok().and_then(|s| parse_machine_ticks(&s)),
        }
    }

    /// Cores each part kept busy on average between `self` and `later`.
    pub fn usage_until(&self, later: &Self) -> CpuUsage {
        let secs = match (self.at, later.at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let hz = clock_ticks_per_second() as f64;
        let cores = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if secs > 0.0 => Some(b.saturating_sub(a) as f64 / hz / secs),
            _ => None,
        };
        let machine_busy = match (self.machine, later.machine) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some((b1 - b0) as f64 / (t1 - t0) as f64),
            _ => None,
        };
        let mut usage = CpuUsage {
            server_cores: cores(self.server, later.server),
            nats_cores: cores(self.nats, later.nats),
            postgres_cores: cores(Some(self.postgres), Some(later.postgres)),
            bench_cores: cores(self.bench, later.bench),
            other_cores: None,
            machine_busy,
        };
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        usage.other_cores = machine_busy.map(|b| (b * n - usage.known_cores()).max(0.0));
        usage
    }
}

/// Average cores used by each part during a phase, and how busy the whole
/// machine was (0..1). PostgreSQL counts every `postgres` process on the
/// machine, including other databases' backends; `other_cores` is the rest
/// of the busy time: kernel work not charged to a process, and anything
/// else running on the machine (which makes the figures noisy).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUsage {
    pub server_cores: Option<f64>,
    pub nats_cores: Option<f64>,
    pub postgres_cores: Option<f64>,
    pub bench_cores: Option<f64>,
    pub other_cores: Option<f64>,
    pub machine_busy: Option<f64>,
}

impl CpuUsage {
    fn known_cores(&self) -> f64 {
        [self.server_cores, self.nats_cores, self.postgres_cores, self.bench_cores].iter().flatten().sum()
    }

    /// `server 0.46, nats 0.23, ...` for the text report.
    pub fn describe(&self) -> String {
        let parts = [
            ("server", self.server_cores),
            ("nats", self.nats_cores),
            ("postgres", self.postgres_cores),
            ("bench", self.bench_cores),
            ("other", self.other_cores),
        ];
        let mut out: Vec<String> = parts.iter().filter_map(|(name, v)| v.map(|v| format!("{name} {v:.2}"))).collect();
        if let Some(b) = self.machine_busy {
            out.push(format!("machine {:.0}% busy", b * 100.0));
        }
        out.join(", ")
    }
}

fn clock_ticks_per_second() -> u64 {
    // USER_HZ is 100 on every Linux architecture we run on; getconf says so
    // when it can, without linking libc.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

/// Samples a process's RSS until stopped; yields the highest sample.
pub struct RssSampler {
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Option<f64>>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let handle = tokio::spawn(async move {
            let mut max: Option<f64> = None;
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = &mut stopped => return max,
                    _ = tick.tick() => {
                        if let Some(m) = memory(pid) {
                            max = Some(max.map_or(m.rss_mib, |x| x.max(m.rss_mib)));
                        }
                    }
                }
            }
        });
        Self { stop, handle }
    }

    /// The highest RSS seen, in MiB.
    pub async fn finish(self) -> Option<f64> {
        let _ = self.stop.send(());
        self.handle.await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kb_fields_are_read_from_status_text() {
        let status = "Name:\tfhirstream\nVmHWM:\t  123456 kB\nVmRSS:\t   98765 kB\n";
        assert_eq!(parse_kb_field(status, "VmHWM"), Some(123_456));
        assert_eq!(parse_kb_field(status, "VmRSS"), Some(98_765));
        assert_eq!(parse_kb_field(status, "VmSwap"), None);
        assert_eq!(parse_kb_field("MemTotal:       24591944 kB\n", "MemTotal"), Some(24_591_944));
    }

    #[test]
    fn stat_ticks_survive_a_command_name_with_spaces_and_parens() {
        let stat = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 1234 0 0 0 700 55 30 4 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(("tokio (rt) w".into(), 789)));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn machine_ticks_count_iowait_as_idle() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n";
        assert_eq!(parse_machine_ticks(stat), Some((150, 1000)));
    }
}
