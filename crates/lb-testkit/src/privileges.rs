//! Preconditions of privileged tests. They fail loudly; they never skip.
//!
//! Call [`require_privileges`] (or at least [`require_root`]) as the first
//! statement of every privileged test.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use thiserror::Error;

use crate::bpffs::{unmount_and_remove, BpffsGuard};
use crate::cgroup::{cgroup2_mount, remove_cgroup_tree};
use crate::netns::{delete_netns, kill_all_in, run_checked, NetNs};

/// Why privileged tests cannot run here.
#[derive(Debug, Clone, Error)]
#[error("{0}")]
pub struct PrivilegeError(pub String);

const HINT: &str = "Privileged lb tests need: root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF), \
iproute2 (`ip`), util-linux `nsenter` and `sysctl`, a cgroup v2 mount, bpffs support and the \
bpf(2) syscall. They NEVER skip: run them as root, e.g. `sudo -E cargo test`.";

#[track_caller]
fn fail(what: &str, err: &dyn std::fmt::Display) -> ! {
    panic!(
        "\n\n========== PRIVILEGED TEST CANNOT RUN ==========\n{what}: {err}\n{HINT}\n================================================\n"
    );
}

/// Panics with a loud message unless the effective uid is 0.
#[track_caller]
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        fail(
            "not running as root",
            &format!("euid = {}", nix::unistd::geteuid()),
        );
    }
}

/// Checks (once per process, result cached) that privileged fixtures work:
/// root, `ip`/`nsenter`/`sysctl` present, a namespace can be created and
/// entered, a cgroup2 mount exists, bpffs can be mounted, and `bpf(2)` can
/// create a map. Also removes leftovers of dead test processes
/// ([`cleanup_stale`]).
pub fn check_privileges() -> Result<(), PrivilegeError> {
    static RESULT: OnceLock<Result<(), PrivilegeError>> = OnceLock::new();
    RESULT.get_or_init(run_checks).clone()
}

/// Panics with a loud, explicit message unless [`check_privileges`] passes.
#[track_caller]
pub fn require_privileges() {
    require_root();
    if let Err(e) = check_privileges() {
        fail("privileged test environment unavailable", &e);
    }
}

fn run_checks() -> Result<(), PrivilegeError> {
    let err = |what: &str, e: &dyn std::fmt::Display| PrivilegeError(format!("{what}: {e}"));
    if !nix::unistd::geteuid().is_root() {
        return Err(PrivilegeError("not running as root".into()));
    }
    for (tool, arg) in [
        ("ip", "-V"),
        ("nsenter", "--version"),
        ("sysctl", "--version"),
    ] {
        run_checked(Command::new(tool).arg(arg).stdout(Stdio::null()))
            .map_err(|e| err(&format!("`{tool}` unavailable"), &e))?;
    }
    cleanup_stale();
    let ns =
        NetNs::with_label("probe").map_err(|e| err("cannot create a network namespace", &e))?;
    ns.exec_ok(&["true"])
        .map_err(|e| err("cannot run a command in a namespace (nsenter)", &e))?;
    ns.run_in(|| ())
        .map_err(|e| err("cannot setns into a namespace", &e))?;
    drop(ns);
    cgroup2_mount().map_err(|e| err("cgroup v2", &e))?;
    drop(BpffsGuard::new().map_err(|e| err("cannot mount bpffs", &e))?);
    probe_bpf_syscall().map_err(|e| err("bpf(2) BPF_MAP_CREATE failed", &e))?;
    Ok(())
}

/// Creates and closes a one-entry array map with the raw `bpf(2)` syscall.
fn probe_bpf_syscall() -> Result<(), std::io::Error> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    // map_type, key_size, value_size, max_entries, rest zero.
    let mut attr = [0u32; 16];
    attr[0] = BPF_MAP_TYPE_ARRAY;
    attr[1] = 4;
    attr[2] = 4;
    attr[3] = 1;
    // SAFETY: `attr` is a valid, zero-padded `union bpf_attr` prefix of the
    // size we pass; the kernel only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor we own and close exactly once.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

fn pid_dead(pid: u32) -> bool {
    !Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes namespaces, cgroups and bpffs directories named
/// `lbt-…-<pid>-<counter>` whose creating process no longer exists (left
/// behind by a test process that was killed). Resources of live processes
/// are never touched. Returns how many were removed.
pub fn cleanup_stale() -> usize {
    let mut removed = 0;
    if let Ok(out) = run_checked(Command::new("ip").args(["netns", "list"])) {
        for name in out.lines().filter_map(|l| l.split_whitespace().next()) {
            if crate::resource_pid(name).is_some_and(pid_dead) {
                let _ = kill_all_in(name);
                if delete_netns(name).is_ok() {
                    removed += 1;
                }
            }
        }
    }
    if let Ok(mount) = cgroup2_mount() {
        for entry in fs::read_dir(&mount).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if crate::resource_pid(&name.to_string_lossy()).is_some_and(pid_dead)
                && remove_cgroup_tree(&entry.path(), &mount).is_ok()
            {
                removed += 1;
            }
        }
    }
    for entry in fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("lbt-bpf-")
            && crate::resource_pid(&name).is_some_and(pid_dead)
            && unmount_and_remove(&entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}
