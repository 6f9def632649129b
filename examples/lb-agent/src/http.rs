//! A tiny HTTP/1.1 responder for the demo's backend pods, and a tiny client
//! for machines without `curl`. Each responder runs on a thread inside a
//! network namespace and answers every request with `200` and its name.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use lb_testkit::{NetNs, NsThread};

/// A responder; stopped and joined on drop.
pub struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<NsThread<()>>,
}

impl Responder {
    /// Starts answering `body` on `bind` inside `ns`.
    pub fn start(ns: &NetNs, bind: SocketAddr, body: String) -> Result<Responder, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let stop2 = stop.clone();
        let thread = ns
            .spawn_thread(move || {
                let l = match TcpListener::bind(bind).and_then(|l| {
                    l.set_nonblocking(true)?;
                    Ok(l)
                }) {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("bind {bind}: {e}")));
                        return;
                    }
                };
                while !stop2.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((s, _)) => answer(s, &body),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        let r = Responder {
            stop,
            thread: Some(thread),
        };
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| format!("responder on {bind} did not start"))??;
        Ok(r)
    }
}

fn answer(mut s: TcpStream, body: &str) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes());
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `GET /` to `addr` from inside `ns`; returns the body.
pub fn get(ns: &NetNs, addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    ns.run_in(|| get_here(addr, timeout))
        .map_err(|e| e.to_string())?
}

/// `GET /` to `addr` from the current namespace; returns the body of a
/// `200` answer, or the raw reply of a server that does not speak HTTP
/// (e.g. lb-testkit's echo servers, which answer with their tag).
pub fn get_here(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let err = |e: std::io::Error| format!("{addr}: {e}");
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(err)?;
    s.set_read_timeout(Some(timeout)).map_err(err)?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(err)?;
    s.shutdown(std::net::Shutdown::Write).map_err(err)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(err)?;
    let out = String::from_utf8_lossy(&out).into_owned();
    if !out.starts_with("HTTP/") {
        return Ok(out);
    }
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {out:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected status: {head}"));
    }
    Ok(body.to_string())
}
