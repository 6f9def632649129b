//! The agent's on-disk state: the private state directory (the API socket)
//! and the checks that keep other users out of it and out of
//! the pin directory.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The API socket's file name inside the state directory.
pub const SOCKET_FILE: &str = "agent.sock";

/// A state or pin directory that must not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The directory (or a parent) could be changed by another user.
    #[error("refusing {path}: {reason}")]
    Insecure {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `path`, if it exists, is a real directory owned by us (or
/// root) and not writable by group or others, and that every existing parent
/// (where it would be created) is owned by us or root and not writable by
/// group or others unless it has the sticky bit (like `/tmp`): another user
/// could otherwise swap the directory for one of theirs.
pub fn check_private_dir(path: &Path) -> Result<(), StateError> {
    let insecure = |p: &Path, reason: String| StateError::Insecure {
        path: p.to_path_buf(),
        reason,
    };
    let euid = unsafe_euid();
    match fs::symlink_metadata(path) {
        Ok(m) => {
            if m.file_type().is_symlink() {
                return Err(insecure(path, "it is a symbolic link".into()));
            }
            if !m.is_dir() {
                return Err(insecure(path, "not a directory".into()));
            }
            if m.uid() != euid && m.uid() != 0 {
                return Err(insecure(path, format!("owned by uid {}", m.uid())));
            }
            if m.mode() & 0o022 != 0 {
                return Err(insecure(
                    path,
                    format!(
                        "mode {:o} is writable by other users (chmod go-w)",
                        m.mode() & 0o7777
                    ),
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("stat", path)(e)),
    }
    for parent in path.ancestors().skip(1) {
        let Ok(m) = fs::metadata(parent) else {
            continue;
        };
        if m.uid() != euid && m.uid() != 0 {
            return Err(insecure(
                path,
                format!(
                    "its parent {} is owned by uid {}",
                    parent.display(),
                    m.uid()
                ),
            ));
        }
        let sticky = m.mode() & 0o1000 != 0;
        if m.mode() & 0o022 != 0 && !sticky {
            let who = if m.mode() & 0o002 != 0 {
                "world-writable"
            } else {
                "group-writable"
            };
            return Err(insecure(
                path,
                format!("its parent {} is {who}", parent.display()),
            ));
        }
    }
    Ok(())
}

fn unsafe_euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// True when the process runs as root.
pub fn is_root() -> bool {
    unsafe_euid() == 0
}

/// Creates the state directory (mode 0700) after checking it.
pub fn prepare_state_dir(path: &Path) -> Result<(), StateError> {
    check_private_dir(path)?;
    if !path.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io("mkdir", path))?;
    }
    check_private_dir(path)
}

/// Restricts a directory we created to its owner.
pub fn make_private(path: &Path) -> Result<(), StateError> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io("chmod", path))
}

/// Removes what the agent left in its state directory (cleanup); missing
/// files are fine.
pub fn remove_state(state_dir: &Path) -> Result<(), StateError> {
    let p = state_dir.join(SOCKET_FILE);
    match fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", &p)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_writable_dirs_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("state");
        prepare_state_dir(&d).unwrap();
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_state_dir(&d).unwrap_err().to_string();
        assert!(e.contains("writable by other users"), "{e}");
        // A world-writable parent without the sticky bit.
        let child = d.join("x");
        let e = check_private_dir(&child).unwrap_err().to_string();
        assert!(e.contains("world-writable"), "{e}");
        // /tmp-like parents (sticky) are fine.
        fs::set_permissions(&d, fs::Permissions::from_mode(0o1777)).unwrap();
        check_private_dir(&child).unwrap();
        // Group-writable: the directory itself and a parent.
        fs::set_permissions(&d, fs::Permissions::from_mode(0o770)).unwrap();
        let e = check_private_dir(&d).unwrap_err().to_string();
        assert!(e.contains("mode 770 is writable by other users"), "{e}");
        let e = check_private_dir(&child).unwrap_err().to_string();
        assert!(e.contains("is group-writable"), "{e}");
        // A symbolic link and a plain file.
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&d, t.path().join("link")).unwrap();
        let e = check_private_dir(&t.path().join("link")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        fs::write(d.join("f"), "").unwrap();
        let e = check_private_dir(&d.join("f")).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    /// Directories (or parents) owned by another user are refused. Needs
    /// root for chown.
    #[test]
    fn dirs_of_other_users_are_refused() {
        lb_testkit::require_root();
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("state");
        prepare_state_dir(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
        let e = prepare_state_dir(&d).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
        let e = check_private_dir(&d.join("below")).unwrap_err().to_string();
        assert!(
            e.contains("its parent") && e.contains("owned by uid 65534"),
            "{e}"
        );
    }
}
