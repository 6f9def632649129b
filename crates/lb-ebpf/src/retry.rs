//! Bounded retry of map writes the kernel refused with `ENOMEM`.
//!
//! The maps the dataplane writes are preallocated (`bpf/lb_abi.h`), so an
//! update of them never allocates. Two writes still can: an insert into the
//! source-range LPM trie (which cannot be preallocated) and the creation of
//! a Maglev inner array. Their allocations do not wait for reclaim, so they
//! can fail transiently when free memory is short; a few retries with a
//! growing pause (1, 2, 4 ... 128 ms, about 0.26 s in all) let the kernel
//! catch up. A write that still fails is reported, and the batch rolled back.

use std::time::Duration;

use aya::maps::MapError;

/// Retries after the first attempt.
pub(crate) const ENOMEM_RETRIES: u32 = 8;

/// True when `e` is the kernel's `ENOMEM`.
pub(crate) fn is_enomem(e: &MapError) -> bool {
    let io = match e {
        MapError::SyscallError(e) => &e.io_error,
        MapError::CreateError { io_error, .. } => io_error,
        _ => return false,
    };
    io.raw_os_error() == Some(libc::ENOMEM)
}

/// Runs `f`, retrying it up to [`ENOMEM_RETRIES`] times while it fails with
/// `ENOMEM`. `f` must be idempotent (a map update or a map creation is).
pub(crate) fn on_enomem<T>(mut f: impl FnMut() -> Result<T, MapError>) -> Result<T, MapError> {
    let mut pause = Duration::from_millis(1);
    for _ in 0..ENOMEM_RETRIES {
        match f() {
            Err(e) if is_enomem(&e) => {
                std::thread::sleep(pause);
                pause *= 2;
            }
            other => return other,
        }
    }
    f()
}

/// Loads of a program the kernel refused with `EAGAIN` tolerated.
pub(crate) const EAGAIN_RETRIES: u32 = 4;

/// Runs a program load `f`, retrying it up to [`EAGAIN_RETRIES`] times
/// while it fails with `EAGAIN`: the verifier gives up that way when a
/// signal is pending for the loading thread, which a busy process (tests
/// spawning commands) meets now and then with the larger programs (both
/// families in one object). libbpf retries its loads the same way. Every
/// program this crate loads (tc, XDP, cgroup socket LB, DSR backend side)
/// goes through it.
pub(crate) fn on_eagain(
    mut f: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), aya::programs::ProgramError> {
    let mut tries = 0;
    loop {
        match f() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && tries < EAGAIN_RETRIES =>
            {
                tries += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enomem() -> MapError {
        MapError::CreateError {
            name: "t".into(),
            io_error: std::io::Error::from_raw_os_error(libc::ENOMEM),
        }
    }

    #[test]
    fn retries_enomem_then_succeeds() {
        let mut calls = 0;
        let r = on_enomem(|| {
            calls += 1;
            if calls < 3 {
                Err(enomem())
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.unwrap(), 3);
    }

    #[test]
    fn gives_up_after_the_bound_and_passes_other_errors_at_once() {
        let mut calls = 0;
        let r: Result<(), _> = on_enomem(|| {
            calls += 1;
            Err(enomem())
        });
        assert!(is_enomem(&r.unwrap_err()));
        assert_eq!(calls, ENOMEM_RETRIES + 1);
        let mut calls = 0;
        let r: Result<(), _> = on_enomem(|| {
            calls += 1;
            Err(MapError::KeyNotFound)
        });
        assert!(matches!(r, Err(MapError::KeyNotFound)));
        assert_eq!(calls, 1);
    }
}
