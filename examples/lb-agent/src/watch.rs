//! Watching the manifest directory: every create, write, rename (as
//! `sed -i` does) or delete in it wakes the agent, which then re-reads the
//! directory. Events are coalesced by the caller.

use std::path::Path;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// A running watch; dropping it stops watching.
pub struct DirWatch {
    _watcher: notify::RecommendedWatcher,
    /// One message per relevant event.
    pub events: mpsc::UnboundedReceiver<()>,
}

/// Starts watching `dir` (not recursive).
pub fn watch_dir(dir: &Path) -> notify::Result<DirWatch> {
    let (tx, events) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
            Ok(_) => {
                let _ = tx.send(());
            }
            Err(e) => {
                tracing::warn!("watching manifests: {e}");
                let _ = tx.send(());
            }
        })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(DirWatch {
        _watcher: watcher,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn next(w: &mut DirWatch) {
        tokio::time::timeout(Duration::from_secs(2), w.events.recv())
            .await
            .expect("an event within 2 s");
    }

    #[tokio::test]
    async fn create_rename_and_delete_wake_the_watch() {
        let d = tempfile::tempdir().unwrap();
        let mut w = watch_dir(d.path()).unwrap();
        std::fs::write(d.path().join("a.yaml"), "x").unwrap();
        next(&mut w).await;
        while w.events.try_recv().is_ok() {}
        std::fs::write(d.path().join(".sedXYZ"), "y").unwrap();
        std::fs::rename(d.path().join(".sedXYZ"), d.path().join("a.yaml")).unwrap();
        next(&mut w).await;
        while w.events.try_recv().is_ok() {}
        std::fs::remove_file(d.path().join("a.yaml")).unwrap();
        next(&mut w).await;
    }
}
