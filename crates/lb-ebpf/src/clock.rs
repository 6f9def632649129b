//! The datapath's affinity clock, read from userspace.

/// Seconds of `CLOCK_MONOTONIC_COARSE`, the clock `bpf_ktime_get_coarse_ns`
/// reads: the unit of affinity `last_used` stamps.
pub fn now_secs() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the kernel writes.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64
}
