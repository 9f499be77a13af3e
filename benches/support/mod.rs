//! What the end-to-end benches share: the resource use of a finished child process.

use std::process::Child;

/// What `wait4` says of a finished child.
pub struct Usage {
    pub cpu_s: f64,
    pub max_rss_mb: f64,
}

/// Reaps `child` (which must exit 0 when `must_succeed`) and returns its CPU seconds and peak RSS.
pub fn wait(child: &mut Child, must_succeed: bool) -> Usage {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, and wait4 only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own unreaped child; both pointers are valid for the call.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    if must_succeed {
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child failed: {status}");
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage { cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime), max_rss_mb: usage.ru_maxrss as f64 / 1024.0 }
}
