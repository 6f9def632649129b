//! Shared helpers of the lb-agent end-to-end tests.
#![allow(dead_code)]

use std::process::Child;
use std::time::{Duration, Instant};

/// Sends SIGTERM to the child in `slot` (taking it) and waits up to 5 s;
/// returns whether it exited with status 0. A child that does not exit in
/// time is killed and counts as a failure; an empty slot returns false.
pub fn terminate(slot: &mut Option<Child>) -> bool {
    let Some(mut c) = slot.take() else {
        return false;
    };
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(st) = c.try_wait().unwrap() {
            return st.success();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    false
}

pub mod agent;
pub mod dsr;
