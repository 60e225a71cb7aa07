//! CPU time used: by this process (the load generator, `getrusage`) and by spawned nodes
//! (`/proc/PID/stat`), so the report can show what each acknowledged write cost on both
//! sides of the socket. Read by the main thread at the start and the end of the run.

use std::time::Duration;

/// User plus system CPU time this process has used so far (all threads).
pub fn own_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` into the pointer it is given, which points to a
    // zeroed `rusage` of ours; RUSAGE_SELF needs no other argument.
    let done = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if done != 0 {
        return Duration::ZERO;
    }
    // SAFETY: zero-initialised and, on success, filled by the kernel: every field is a plain
    // integer, so any bit pattern is a valid `rusage`.
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Clock ticks per second of the times in `/proc/PID/stat`.
fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf reads a configuration value; it takes and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// User plus system CPU time of process `pid`, from `/proc/PID/stat`; `None` when it is gone.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_stat_ticks(&stat)?;
    Some(Duration::from_micros(
        ticks * 1_000_000 / clock_ticks_per_s(),
    ))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces, so fields are counted after its closing one.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Microseconds of `cpu` per one of `count` things (writes); `None` when there were none.
pub fn us_per(cpu: Duration, count: u64) -> Option<f64> {
    (count > 0).then(|| cpu.as_secs_f64() * 1e6 / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (rcraft (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 9 0 100 1000 10";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn own_cpu_grows_with_work_and_a_live_process_has_a_cpu_time() {
        let before = own_cpu();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while own_cpu() <= before {
            x = std::hint::black_box(x.wrapping_add(1));
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no CPU time counted"
            );
        }
        assert!(process_cpu(std::process::id()).is_some());
        assert_eq!(us_per(Duration::from_millis(3), 1000), Some(3.0));
        assert_eq!(us_per(Duration::from_millis(3), 0), None);
    }
}
