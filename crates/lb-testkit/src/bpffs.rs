//! Private bpffs mounts for pinning maps and programs in tests.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statfs::statfs;
use thiserror::Error;

/// `statfs(2)` `f_type` of a bpffs (`BPF_FS_MAGIC`).
pub const BPF_FS_MAGIC: u32 = 0xcafe_4a11;

/// Errors of the bpffs fixture.
#[derive(Debug, Error)]
pub enum BpffsError {
    /// A directory operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `mount(2)` / `umount2(2)` / `statfs(2)` failed.
    #[error("{op} {path}: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
}

fn sys_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> BpffsError + 'a {
    move |source| BpffsError::Sys {
        op,
        path: path.to_owned(),
        source,
    }
}

/// True when `path` is (the root of or inside) a bpffs.
pub fn is_bpffs(path: impl AsRef<Path>) -> Result<bool, BpffsError> {
    let path = path.as_ref();
    let st = statfs(path).map_err(sys_err("statfs", path))?;
    // The width/signedness of f_type differs between targets.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.filesystem_type().0 as i64 as u32;
    Ok(magic == BPF_FS_MAGIC)
}

fn mount_bpffs(path: &Path) -> Result<(), BpffsError> {
    mount(
        Some("bpf"),
        path,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(sys_err("mount bpffs on", path))
}

/// Makes sure a bpffs is mounted at `path` (creating the directory if
/// needed). Returns `true` if it mounted one, `false` if one was already
/// there. The mount is left in place.
pub fn ensure_bpffs(path: impl AsRef<Path>) -> Result<bool, BpffsError> {
    let path = path.as_ref();
    fs::create_dir_all(path).map_err(|source| BpffsError::Io {
        op: "mkdir",
        path: path.to_owned(),
        source,
    })?;
    if is_bpffs(path)? {
        return Ok(false);
    }
    mount_bpffs(path)?;
    Ok(true)
}

/// A fresh bpffs mounted on a unique directory under the temp dir
/// (`$TMPDIR/lbt-bpf-<pid>-<counter>`); lazily unmounted and removed on drop.
#[derive(Debug)]
pub struct BpffsGuard {
    path: PathBuf,
}

impl BpffsGuard {
    /// Creates the directory and mounts a new bpffs instance on it.
    pub fn new() -> Result<Self, BpffsError> {
        let path = std::env::temp_dir().join(crate::resource_name("bpf"));
        fs::create_dir(&path).map_err(|source| BpffsError::Io {
            op: "mkdir",
            path: path.clone(),
            source,
        })?;
        if let Err(e) = mount_bpffs(&path) {
            let _ = fs::remove_dir(&path);
            return Err(e);
        }
        Ok(BpffsGuard { path })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path()/name`, a convenient pin path.
    pub fn pin_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// Lazily unmounts `path` (if it is a mount point) and removes the (then
/// empty) directory.
pub(crate) fn unmount_and_remove(path: &Path) -> Result<(), BpffsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (any more); just remove the directory.
        Ok(()) | Err(nix::Error::EINVAL) => {}
        Err(e) => return Err(sys_err("umount", path)(e)),
    }
    fs::remove_dir(path).map_err(|source| BpffsError::Io {
        op: "rmdir",
        path: path.to_owned(),
        source,
    })
}

impl Drop for BpffsGuard {
    fn drop(&mut self) {
        if let Err(e) = unmount_and_remove(&self.path) {
            eprintln!("lb-testkit: removing bpffs {}: {e}", self.path.display());
        }
    }
}
