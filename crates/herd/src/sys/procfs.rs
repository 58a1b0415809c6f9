//! What `/proc` tells about a process (`proc(5)`): its CPU time, resident memory and open
//! descriptors, for [`Primary::stats`](crate::Primary::stats).

use std::fs;

/// The kernel's clock tick (`sysconf(_SC_CLK_TCK)`), in which `/proc/PID/stat` gives CPU
/// times; 100 where it cannot be read (every Linux architecture's `USER_HZ`).
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf takes a plain integer and returns -1 for an unknown name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// The process's CPU time, user plus system, in seconds (`utime` and `stime`, fields 14 and
/// 15 of `/proc/PID/stat`; `pid` 0 is this process).
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(path(pid, "stat")).ok()?;
    // `pid (comm) state ppid ...`: the command may hold spaces; fields follow the last `)`.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    // After the `)`, field 3 (state) is the first: utime is field 14, the 12th from here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_second())
}

/// The process's resident set size in bytes (`VmRSS` of `/proc/PID/status`, given in kB);
/// `None` for a zombie or a kernel thread, which have none.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(path(pid, "status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// The process's open descriptors (entries of `/proc/PID/fd`).
pub(crate) fn open_fds(pid: u32) -> Option<u64> {
    let entries = fs::read_dir(path(pid, "fd")).ok()?;
    // Reading `/proc/self/fd` opens one descriptor of its own: not counted.
    let own = u64::from(pid == 0);
    Some((entries.count() as u64).saturating_sub(own))
}

fn path(pid: u32, file: &str) -> String {
    if pid == 0 { format!("/proc/self/{file}") } else { format!("/proc/{pid}/{file}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_memory_and_descriptors() {
        // Burn a little CPU so the count is past a tick on any clock.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_seconds(0).is_some_and(|s| s > 0.0), "{:?}", cpu_seconds(0));
        assert!(rss_bytes(0).is_some_and(|b| b > 1 << 20), "{:?}", rss_bytes(0));
        // Other tests open and close descriptors meanwhile: only a lower bound is certain
        // (the three standard streams and the file held here).
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(open_fds(0).is_some_and(|n| n >= 4), "{:?}", open_fds(0));
        drop(file);
        assert_eq!(open_fds(u32::MAX), None);
        assert_eq!(rss_bytes(u32::MAX), None);
    }
}
