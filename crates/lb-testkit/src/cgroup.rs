//! Temporary cgroup v2 directories.
//!
//! A [`CgroupGuard`] creates `lbt-<label>-<pid>-<counter>` below a parent
//! cgroup (by default the root of the cgroup2 mount) and, on drop, moves
//! every process still inside it (or inside child cgroups created under it)
//! back to that parent and removes the directories. It never acts on the
//! root cgroup itself.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

/// Errors of the cgroup fixture.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// No cgroup2 filesystem is mounted.
    #[error("no cgroup2 mount found in /proc/self/mountinfo")]
    NoCgroup2,
    /// The operation would act on the root cgroup.
    #[error("refusing to operate on the root cgroup {0}")]
    RootCgroup(PathBuf),
    /// The path is not below the cgroup2 mount.
    #[error("{path} is not inside the cgroup2 mount {mount}")]
    NotInCgroup2 {
        /// The offending path.
        path: PathBuf,
        /// The cgroup2 mount point.
        mount: PathBuf,
    },
    /// A label contained unsupported characters.
    #[error("invalid cgroup label {0:?}")]
    InvalidLabel(String),
    /// A filesystem operation failed.
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
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Decodes the octal escapes (`\040` etc.) used in /proc/self/mountinfo.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds the first cgroup2 mount point in mountinfo text.
fn find_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = pre.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// The cgroup v2 mount point, from `/proc/self/mountinfo` (fstype `cgroup2`).
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(io_err("read", path))?;
    find_cgroup2(&text).ok_or(CgroupError::NoCgroup2)
}

fn canonical_mount() -> Result<PathBuf, CgroupError> {
    let mount = cgroup2_mount()?;
    fs::canonicalize(&mount).map_err(io_err("canonicalize", &mount))
}

/// The cgroup v2 directory of the current process (`0::` line of /proc/self/cgroup).
pub fn current_cgroup() -> Result<PathBuf, CgroupError> {
    let mount = cgroup2_mount()?;
    let path = Path::new("/proc/self/cgroup");
    let text = fs::read_to_string(path).map_err(io_err("read", path))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .trim_start_matches('/');
    Ok(mount.join(rel))
}

/// A temporary child cgroup, removed on drop.
#[derive(Debug)]
pub struct CgroupGuard {
    path: PathBuf,
    parent: PathBuf,
}

impl CgroupGuard {
    /// Creates `lbt-<pid>-<counter>` directly under the cgroup2 mount root.
    pub fn new() -> Result<Self, CgroupError> {
        Self::with_label("")
    }

    /// Creates `lbt-<label>-<pid>-<counter>` under the cgroup2 mount root.
    pub fn with_label(label: &str) -> Result<Self, CgroupError> {
        let mount = cgroup2_mount()?;
        Self::new_in(&mount, label)
    }

    /// Creates `lbt-<label>-<pid>-<counter>` under `parent`, which must be a
    /// cgroup (the mount root is allowed as a *parent*).
    pub fn new_in(parent: &Path, label: &str) -> Result<Self, CgroupError> {
        if !crate::valid_label(label) {
            return Err(CgroupError::InvalidLabel(label.to_owned()));
        }
        let mount = canonical_mount()?;
        let parent = fs::canonicalize(parent).map_err(io_err("canonicalize", parent))?;
        if !parent.starts_with(&mount) {
            return Err(CgroupError::NotInCgroup2 {
                path: parent,
                mount,
            });
        }
        let path = parent.join(crate::resource_name(label));
        fs::create_dir(&path).map_err(io_err("mkdir", &path))?;
        Ok(CgroupGuard { path, parent })
    }

    /// Takes ownership of an existing cgroup: it will be emptied and removed
    /// on drop. Refuses the root cgroup and anything outside the cgroup2 mount.
    pub fn adopt(path: impl AsRef<Path>) -> Result<Self, CgroupError> {
        let mount = canonical_mount()?;
        let path =
            fs::canonicalize(path.as_ref()).map_err(io_err("canonicalize", path.as_ref()))?;
        check_not_root(&path, &mount)?;
        let parent = path
            .parent()
            .map(Path::to_owned)
            .ok_or_else(|| CgroupError::RootCgroup(path.clone()))?;
        Ok(CgroupGuard { path, parent })
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parent cgroup directory (where processes go back on drop).
    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// The cgroup id (inode of the directory), as returned by
    /// `bpf_get_current_cgroup_id()`.
    pub fn id(&self) -> Result<u64, CgroupError> {
        fs::metadata(&self.path)
            .map(|m| m.ino())
            .map_err(io_err("stat", &self.path))
    }

    /// Opens the cgroup directory (e.g. as a `BPF_PROG_ATTACH` target fd).
    pub fn open(&self) -> Result<File, CgroupError> {
        File::open(&self.path).map_err(io_err("open", &self.path))
    }

    /// Moves process `pid` (all its threads) into this cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        write_pid(&self.path, pid)
    }

    /// Pids currently in this cgroup (not its children).
    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        read_procs(&self.path)
    }

    /// Creates a child cgroup below this one (removed with this guard at the latest).
    pub fn child(&self, label: &str) -> Result<CgroupGuard, CgroupError> {
        CgroupGuard::new_in(&self.path, label)
    }
}

fn check_not_root(path: &Path, mount: &Path) -> Result<(), CgroupError> {
    if path == mount || path.parent().is_none() {
        return Err(CgroupError::RootCgroup(path.to_owned()));
    }
    if !path.starts_with(mount) {
        return Err(CgroupError::NotInCgroup2 {
            path: path.to_owned(),
            mount: mount.to_owned(),
        });
    }
    Ok(())
}

fn write_pid(cgroup: &Path, pid: u32) -> Result<(), CgroupError> {
    let procs = cgroup.join("cgroup.procs");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .map_err(io_err("open", &procs))?;
    // One pid per write(2), as the kernel requires.
    f.write_all(format!("{pid}\n").as_bytes())
        .map_err(io_err("write pid to", &procs))
}

fn read_procs(cgroup: &Path) -> Result<Vec<u32>, CgroupError> {
    let procs = cgroup.join("cgroup.procs");
    let text = fs::read_to_string(&procs).map_err(io_err("read", &procs))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Empties `path` (and its descendants) into `target` and removes the
/// directories bottom-up. Never touches the cgroup2 mount root.
pub(crate) fn remove_cgroup_tree(path: &Path, target: &Path) -> Result<(), CgroupError> {
    if let Ok(mount) = canonical_mount() {
        check_not_root(path, &mount)?;
    }
    let entries = fs::read_dir(path).map_err(io_err("read dir", path))?;
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_cgroup_tree(&entry.path(), target)?;
        }
    }
    let mut last_err = None;
    for _ in 0..100 {
        for pid in read_procs(path).unwrap_or_default() {
            // The process may have exited meanwhile; that is fine.
            let _ = write_pid(target, pid);
        }
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last_err = Some(e),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(CgroupError::Io {
        op: "rmdir",
        path: path.to_owned(),
        source: last_err.unwrap_or_else(|| io::Error::other("rmdir kept failing")),
    })
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Err(e) = remove_cgroup_tree(&self.path, &self.parent) {
            eprintln!("lb-testkit: removing cgroup {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup2_from_mountinfo() {
        let mi = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            find_cgroup2(mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let mi = "29 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(find_cgroup2(mi), Some(PathBuf::from("/sys/fs/cgroup")));
        let mi = "29 1 0:26 / /my\\040cg rw - cgroup2 none rw\n";
        assert_eq!(find_cgroup2(mi), Some(PathBuf::from("/my cg")));
        assert_eq!(find_cgroup2("1 2 3:4 / / rw - ext4 /dev/sda rw\n"), None);
    }

    #[test]
    fn root_is_refused() {
        let mount = Path::new("/sys/fs/cgroup/unified");
        assert!(matches!(
            check_not_root(mount, mount),
            Err(CgroupError::RootCgroup(_))
        ));
        assert!(matches!(
            check_not_root(Path::new("/"), mount),
            Err(CgroupError::RootCgroup(_))
        ));
        assert!(matches!(
            check_not_root(Path::new("/tmp/x"), mount),
            Err(CgroupError::NotInCgroup2 { .. })
        ));
        assert!(check_not_root(&mount.join("lbt-1-2"), mount).is_ok());
    }
}
