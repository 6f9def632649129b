//! The agent's API: read-only JSON-lines queries over the unix socket
//! `STATE_DIR/agent.sock` (mode 0600). One request line in, one response
//! line out, per connection.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::service_list::ServiceRow;
use crate::state::SOCKET_FILE;
use crate::status::Status;

/// A query.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum Request {
    /// What is programmed, as `service list` rows.
    ServiceList,
    /// The status report.
    Status,
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Rows for `service list`.
    ServiceList(Vec<ServiceRow>),
    /// The status report.
    Status(Box<Status>),
    /// The query failed.
    Error(String),
}

/// The longest request line read; a longer one is answered with an error.
pub const MAX_REQUEST: u64 = 64 * 1024;

/// Answers queries; called on a blocking thread.
pub type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

/// The socket path in `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_FILE)
}

/// Binds the socket, replacing a stale one; fails when another agent
/// answers on it. The socket is made mode 0600.
pub fn bind(state_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(state_dir);
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another agent answers on {}", path.display()),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let l = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Parses one request line strictly: a JSON object whose only member is
/// `query`, naming one of the read-only queries.
pub fn parse_request(line: &str) -> Result<Request, String> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).map_err(|e| e.to_string())?;
    match v.as_object() {
        Some(o) if o.len() == 1 && o.contains_key("query") => {}
        _ => return Err("expected {\"query\": \"service_list\" | \"status\"}".into()),
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// Serves queries until the task is dropped.
pub async fn serve(listener: UnixListener, handler: Handler) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("API accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut r = tokio::io::BufReader::new(r.take(MAX_REQUEST));
            let read = tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line)).await;
            let resp = match read {
                Ok(Ok(_)) => match parse_request(&line) {
                    Ok(req) => tokio::task::spawn_blocking(move || handler(req))
                        .await
                        .unwrap_or_else(|e| Response::Error(format!("handler failed: {e}"))),
                    Err(e) => Response::Error(format!("bad request: {e}")),
                },
                Ok(Err(e)) => Response::Error(format!("read: {e}")),
                Err(_) => return,
            };
            let mut out = serde_json::to_string(&resp)
                .unwrap_or_else(|e| format!("{{\"error\":\"encode: {e}\"}}"));
            out.push('\n');
            let _ = w.write_all(out.as_bytes()).await;
        });
    }
}

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent listens on the socket.
    #[error("no agent answers on {path}: {source}")]
    NoAgent {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The answer could not be read.
    #[error("bad answer from the agent: {0}")]
    BadAnswer(String),
}

/// Sends one query to the agent of `state_dir` (blocking, 5 s timeout).
pub fn query(state_dir: &Path, req: &Request) -> Result<Response, ClientError> {
    let path = socket_path(state_dir);
    let no_agent = |source| ClientError::NoAgent {
        path: path.clone(),
        source,
    };
    let mut s = std::os::unix::net::UnixStream::connect(&path).map_err(no_agent)?;
    let timeout = Some(Duration::from_secs(5));
    s.set_read_timeout(timeout).map_err(no_agent)?;
    s.set_write_timeout(timeout).map_err(no_agent)?;
    let mut line = serde_json::to_string(req).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(no_agent)?;
    let mut answer = String::new();
    BufReader::new(s)
        .read_line(&mut answer)
        .map_err(|e| ClientError::BadAnswer(e.to_string()))?;
    serde_json::from_str(answer.trim())
        .map_err(|e| ClientError::BadAnswer(format!("{e}: {answer:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Sends one raw line, returns the raw answer line.
    fn raw(state_dir: &Path, line: &str) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(socket_path(state_dir)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The server may answer (and close) before reading an endless line.
        let _ = s.write_all(line.as_bytes());
        let _ = s.write_all(b"\n");
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).unwrap();
        answer
    }

    #[test]
    fn queries_round_trip_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt.block_on(async { bind(dir.path()) }).unwrap();
        let mode = std::fs::metadata(socket_path(dir.path())).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let handler: Handler = Arc::new(move |req| {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match req {
                Request::ServiceList => Response::ServiceList(vec![]),
                Request::Status => Response::Error("no status here".into()),
            }
        });
        rt.spawn(serve(listener, handler));
        let d = dir.path().to_path_buf();
        let r = std::thread::spawn(move || {
            (
                query(&d, &Request::ServiceList).unwrap(),
                query(&d, &Request::Status).unwrap(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(r.0, Response::ServiceList(vec![]));
        assert_eq!(r.1, Response::Error("no status here".into()));
        // Read-only: only the two queries exist; anything else (a made-up
        // command, extra fields, garbage, an endless line) is refused before
        // the handler runs.
        let d = dir.path().to_path_buf();
        let answers = std::thread::spawn(move || {
            let long = format!("{{\"query\":\"status\",\"x\":\"{}\"}}", "a".repeat(200_000));
            [
                "{\"query\":\"apply\",\"services\":[]}",
                "{\"query\":\"cleanup\"}",
                "{\"query\":\"status\",\"flush\":true}",
                "not json",
                long.as_str(),
            ]
            .map(|line| raw(&d, line))
        })
        .join()
        .unwrap();
        for a in &answers {
            assert!(a.contains("\"error\":\"bad request"), "{a}");
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A second agent on the same directory is refused.
        let e = rt.block_on(async { bind(dir.path()) }).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        drop(rt);
        // Without an agent: NoAgent.
        let e = query(dir.path(), &Request::Status).unwrap_err();
        assert!(matches!(e, ClientError::NoAgent { .. }), "{e}");
    }
}
