//! A closed-loop TCP load client that runs inside a namespace and counts
//! every request: each request is a new connection to the target, sends a
//! payload, shuts down its write side and reads until EOF. Against an
//! [`EchoServer`](crate::EchoServer) the reply is the backend's tag followed
//! by the payload, so every success is attributed to the backend that
//! answered, and every failure is kept with its error.
//!
//! ```no_run
//! use std::time::Duration;
//! use lb_testkit::load::{Load, LoadConfig};
//! # let ns = lb_testkit::NetNs::new().unwrap();
//! let load = Load::start(&ns, LoadConfig::new("10.96.0.10:80".parse().unwrap())).unwrap();
//! std::thread::sleep(Duration::from_secs(5));
//! let stats = load.stop();
//! assert_eq!(stats.failed, 0, "{:?}", stats.errors);
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::{NetNs, NetnsError, NsThread};

/// What to send, where, and how hard.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The address every connection goes to.
    pub target: SocketAddr,
    /// Concurrent connections (one thread each).
    pub workers: usize,
    /// Bytes each request sends.
    pub payload: Vec<u8>,
    /// Connect timeout, and the timeout of each read and write.
    pub timeout: Duration,
    /// Pause of each worker between requests.
    pub pause: Duration,
}

impl LoadConfig {
    /// Two workers, payload `"ping"`, 3 s timeout, 5 ms pause.
    pub fn new(target: SocketAddr) -> Self {
        LoadConfig {
            target,
            workers: 2,
            payload: b"ping".to_vec(),
            timeout: Duration::from_secs(3),
            pause: Duration::from_millis(5),
        }
    }
}

/// What a load run saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Requests answered in full.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Successes per backend tag (the reply up to its first `:`).
    pub by_backend: BTreeMap<String, u64>,
    /// Failures per error (`connect: ...`, `read: ...`, `short reply`).
    pub errors: BTreeMap<String, u64>,
    /// Failures per backend tag, for requests that failed after their
    /// backend's tag arrived (the rest are under `""`).
    pub failed_by_backend: BTreeMap<String, u64>,
    /// Wall-clock time the load ran.
    pub elapsed: Duration,
}

impl LoadStats {
    /// Requests per second over the run.
    pub fn rate(&self) -> f64 {
        (self.ok + self.failed) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A running load; [`Load::stop`] ends it and returns the counts.
pub struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<LoadStats>>,
    workers: Vec<NsThread<()>>,
    started: Instant,
}

/// The backend tag at the start of `reply` (up to its first `:`), or `""`.
fn tag_of(reply: &[u8]) -> String {
    match reply.iter().position(|b| *b == b':') {
        Some(i) => String::from_utf8_lossy(&reply[..i]).into_owned(),
        None => String::new(),
    }
}

/// One request; `Ok(tag)` or (the error's description, the backend tag
/// received before it failed or `""`).
fn request(cfg: &LoadConfig) -> Result<String, (String, String)> {
    request_inner(cfg).map_err(|e| (e, String::new()))?
}

fn request_inner(cfg: &LoadConfig) -> Result<Result<String, (String, String)>, String> {
    let mut s = TcpStream::connect_timeout(&cfg.target, cfg.timeout)
        .map_err(|e| format!("connect: {}", e.kind()))?;
    s.set_read_timeout(Some(cfg.timeout))
        .and_then(|_| s.set_write_timeout(Some(cfg.timeout)))
        .map_err(|e| format!("setsockopt: {e}"))?;
    s.write_all(&cfg.payload)
        .map_err(|e| format!("write: {}", e.kind()))?;
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {}", e.kind()))?;
    let mut reply = Vec::new();
    // read_to_end keeps what it read before an error: the backend's tag.
    if let Err(e) = s.read_to_end(&mut reply) {
        return Ok(Err((format!("read: {}", e.kind()), tag_of(&reply))));
    }
    if !reply.ends_with(&cfg.payload) {
        return Ok(Err(("short reply".into(), tag_of(&reply))));
    }
    let tag = String::from_utf8_lossy(&reply[..reply.len() - cfg.payload.len()]);
    Ok(Ok(tag.split(':').next().unwrap_or("").to_string()))
}

impl Load {
    /// Starts `cfg.workers` threads inside `ns`, each sending requests until
    /// [`Load::stop`].
    pub fn start(ns: &NetNs, cfg: LoadConfig) -> Result<Load, NetnsError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let mut workers = Vec::new();
        for _ in 0..cfg.workers.max(1) {
            let (stop, stats, cfg) = (stop.clone(), stats.clone(), cfg.clone());
            workers.push(ns.spawn_thread(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = request(&cfg);
                    let mut st = stats.lock().unwrap_or_else(|e| e.into_inner());
                    match r {
                        Ok(tag) => {
                            st.ok += 1;
                            *st.by_backend.entry(tag).or_default() += 1;
                        }
                        Err((e, tag)) => {
                            st.failed += 1;
                            *st.errors.entry(e).or_default() += 1;
                            *st.failed_by_backend.entry(tag).or_default() += 1;
                        }
                    }
                    drop(st);
                    if !cfg.pause.is_zero() {
                        std::thread::sleep(cfg.pause);
                    }
                }
            })?);
        }
        Ok(Load {
            stop,
            stats,
            workers,
            started: Instant::now(),
        })
    }

    /// The counts so far.
    pub fn snapshot(&self) -> LoadStats {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        s.elapsed = self.started.elapsed();
        s
    }

    /// Stops every worker (each finishes its request in flight) and returns
    /// the counts.
    pub fn stop(mut self) -> LoadStats {
        self.halt()
    }

    fn halt(&mut self) -> LoadStats {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.snapshot()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}
