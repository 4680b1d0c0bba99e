//! The process's own metrics, read from `/proc/self` when `/metrics` is
//! scraped, under the names Prometheus client libraries give them.

use std::fmt::Write as _;

/// What `/proc` says of this process now; a file it cannot read leaves
/// its numbers out.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessStats {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

impl ProcessStats {
    pub fn read() -> Self {
        // SAFETY: sysconf has no memory-safety preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK) as f64,
                libc::sysconf(libc::_SC_PAGESIZE) as u64,
            )
        };
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // The fields after the command's name, which may hold spaces:
        // `state` is field 3, so field N is at N - 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages = |n: usize| {
            statm
                .split_whitespace()
                .nth(n)
                .and_then(|f| f.parse::<u64>().ok())
                .map(|p| p * page)
        };
        let boot_time = std::fs::read_to_string("/proc/stat")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok());
        ProcessStats {
            cpu_seconds: field(14)
                .zip(field(15))
                .map(|(user, system)| (user + system) / ticks),
            resident_bytes: pages(1),
            virtual_bytes: pages(0),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|fds| fds.count() as u64),
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Max open files")?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                }),
            start_time_seconds: boot_time
                .zip(field(22))
                .map(|(boot, start)| boot + start / ticks),
        }
    }

    pub fn write(&self, text: &mut String) -> std::fmt::Result {
        let families: [(&str, &str, &str, Option<f64>); 6] = [
            (
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time of this process.",
                self.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of this process.",
                self.resident_bytes.map(|b| b as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory of this process.",
                self.virtual_bytes.map(|b| b as f64),
            ),
            (
                "process_open_fds",
                "gauge",
                "Open file descriptors of this process.",
                self.open_fds.map(|n| n as f64),
            ),
            (
                "process_max_fds",
                "gauge",
                "Most file descriptors this process may open.",
                self.max_fds.map(|n| n as f64),
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "When this process started, in seconds since the Unix epoch.",
                self.start_time_seconds,
            ),
        ];
        for (name, kind, help, value) in families {
            let Some(value) = value else { continue };
            writeln!(text, "# HELP {name} {help}")?;
            writeln!(text, "# TYPE {name} {kind}")?;
            writeln!(text, "{name} {value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read_from_proc() {
        let stats = ProcessStats::read();
        assert!(stats.resident_bytes.unwrap() > 1024 * 1024);
        assert!(stats.open_fds.unwrap() >= 3);
        assert!(stats.max_fds.unwrap() >= stats.open_fds.unwrap());
        let now = chrono::Utc::now().timestamp() as f64;
        let started = stats.start_time_seconds.unwrap();
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} vs {now}"
        );
        assert!(stats.cpu_seconds.unwrap() >= 0.0);
    }
}
