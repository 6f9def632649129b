//! The socket-LB programs (`bpf/lb_sock.c`) on a caller-given cgroup:
//! checking the target (a cgroup2 directory, never the root cgroup),
//! attaching with pinned links, and swapping the programs of existing links
//! atomically on a reload (raw `BPF_LINK_UPDATE`: aya 0.14 has no
//! `attach_to_link` for cgroup programs).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr};

use crate::loader::LoadError;

/// The socket programs, in attach order: (program name, pin suffix, which
/// is also the hook's name). The IPv6 hooks also serve IPv4-mapped
/// destinations of dual-stack sockets (through the IPv4 maps).
pub const SOCK_PROGRAMS: [(&str, &str); 8] = [
    ("lb_sock_connect4", "connect4"),
    ("lb_sock_sendmsg4", "sendmsg4"),
    ("lb_sock_recvmsg4", "recvmsg4"),
    ("lb_sock_getpeername4", "getpeername4"),
    ("lb_sock_connect6", "connect6"),
    ("lb_sock_sendmsg6", "sendmsg6"),
    ("lb_sock_recvmsg6", "recvmsg6"),
    ("lb_sock_getpeername6", "getpeername6"),
];

/// The cgroup hooks the socket LB attaches (`connect4`, ..., `getpeername6`),
/// as `status --verbose` lists them.
pub const SOCK_HOOKS: [&str; SOCK_PROGRAMS.len()] = {
    let mut out = [""; SOCK_PROGRAMS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = SOCK_PROGRAMS[i].1;
        i += 1;
    }
    out
};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// An opened target cgroup: its directory and inode (the pin name's id).
#[derive(Debug)]
pub(crate) struct Cgroup {
    pub(crate) file: File,
    pub(crate) id: u64,
}

/// Opens `path` as a socket-LB target: it must be a cgroup2 directory other
/// than the root cgroup (programs there would capture every process of the
/// machine).
pub(crate) fn open_target(path: &Path) -> Result<Cgroup, LoadError> {
    let not_a_cgroup = || LoadError::NotACgroup(path.to_owned());
    let canonical = std::fs::canonicalize(path).map_err(|_| not_a_cgroup())?;
    let c = CString::new(canonical.as_os_str().as_encoded_bytes()).map_err(|_| not_a_cgroup())?;
    // SAFETY: `c` is a valid NUL-terminated path; `st` is written by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(not_a_cgroup());
    }
    #[allow(clippy::unnecessary_cast)]
    if st.f_type as i64 != CGROUP2_SUPER_MAGIC {
        return Err(not_a_cgroup());
    }
    // `cgroup.type` exists in every cgroup but the root one; a mount point
    // (the parent on another device) is a root as well.
    let at_mount_root = canonical
        .parent()
        .and_then(|p| std::fs::metadata(p).ok())
        .zip(std::fs::metadata(&canonical).ok())
        .is_none_or(|(parent, me)| parent.dev() != me.dev());
    if at_mount_root || !canonical.join("cgroup.type").exists() {
        return Err(LoadError::RootCgroup(canonical));
    }
    let file = File::open(&canonical).map_err(|source| LoadError::Io {
        op: "open cgroup",
        path: canonical.clone(),
        source,
    })?;
    let id = file
        .metadata()
        .map_err(|source| LoadError::Io {
            op: "stat cgroup",
            path: canonical.clone(),
            source,
        })?
        .ino();
    Ok(Cgroup { file, id })
}

/// `DIR/links/cgroup-<id>-<hook>`.
pub(crate) fn link_pin(links: &Path, cgroup: &Cgroup, hook: &str) -> PathBuf {
    links.join(format!("cgroup-{}-{hook}", cgroup.id))
}

fn program_error(context: String, e: impl std::error::Error + Send + Sync + 'static) -> LoadError {
    LoadError::Program {
        context,
        source: Box::new(e),
    }
}

/// Attaches `prog` to the cgroup through the link pinned at `pin` (swapping
/// the link's program atomically), or creates and pins a new link.
pub(crate) fn attach_pinned(
    prog: &mut CgroupSockAddr,
    name: &str,
    cgroup: &Cgroup,
    pin: &Path,
) -> Result<(), LoadError> {
    let ctx = || format!("attaching {name} to cgroup {}", cgroup.id);
    if pin.exists() {
        let prog_fd = prog
            .fd()
            .map_err(|e| program_error(ctx(), e))?
            .as_fd()
            .as_raw_fd();
        match obj_get(pin).and_then(|link| link_update(link.as_raw_fd(), prog_fd)) {
            Ok(()) => return Ok(()),
            // A stale pin (e.g. the cgroup was recreated): replace it.
            Err(_) => std::fs::remove_file(pin).map_err(|source| LoadError::Io {
                op: "unpin stale link",
                path: pin.to_owned(),
                source,
            })?,
        }
    }
    let id = prog
        .attach(&cgroup.file, CgroupAttachMode::Single)
        .map_err(|e| program_error(ctx(), e))?;
    let link = prog.take_link(id).map_err(|e| program_error(ctx(), e))?;
    let fd: FdLink = link.try_into().map_err(|e| program_error(ctx(), e))?;
    fd.pin(pin)
        .map_err(|e| program_error(format!("pinning link {}", pin.display()), e))?;
    Ok(())
}

/// `BPF_OBJ_GET`: opens a pinned object.
fn obj_get(pin: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(pin.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // union bpf_attr for BPF_OBJ_GET: { u64 pathname; u32 bpf_fd; u32 file_flags; }
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    // SAFETY: `attr` is a zeroed bpf_attr of sufficient size whose pathname
    // points at `c`, alive for the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, attr.as_mut_ptr(), 128u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `BPF_LINK_UPDATE`: makes `link` run `prog` (atomic for the hook).
fn link_update(link: RawFd, prog: RawFd) -> io::Result<()> {
    // union bpf_attr for BPF_LINK_UPDATE: { u32 link_fd; u32 new_prog_fd; u32 flags; u32 old_prog_fd; }
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(link as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog as u32).to_ne_bytes());
    // SAFETY: `attr` is a zeroed bpf_attr of sufficient size.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_UPDATE, attr.as_mut_ptr(), 128u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
