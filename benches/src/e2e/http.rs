//! A small HTTP/1.1 server for the end-to-end benchmark's backend pods.
//!
//! Every request gets `200 OK` with a short fixed body; connections are
//! kept alive unless the request says `Connection: close` (then the server
//! answers with the same header and closes, as nginx would). A fixed pool of
//! threads accepts on one listener and serves one connection each at a time,
//! so no thread is spawned per connection and the server adds the same small
//! cost to every variant. The listener is created inside a namespace with
//! [`lb_testkit::NetNs::run_in`]; the threads serve from anywhere.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use lb_testkit::NetNs;

/// A running server. The worker threads live as long as the process (the
/// benchmark binary exits when done); deleting the namespace closes nothing,
/// so the harness simply stops sending traffic.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
}

impl HttpServer {
    /// Binds `addr` inside `ns` and starts `workers` threads.
    ///
    /// # Errors
    ///
    /// Entering the namespace or binding fails.
    pub fn start(ns: &NetNs, addr: SocketAddr, body: &str, workers: usize) -> io::Result<Self> {
        let listener = ns
            .run_in(|| TcpListener::bind(addr))
            .map_err(io::Error::other)??;
        let response: Arc<[u8]> = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
        .into();
        let closing: Arc<[u8]> = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
        .into();
        let listener = Arc::new(listener);
        let requests = Arc::new(AtomicU64::new(0));
        for _ in 0..workers.max(1) {
            let (listener, response, closing, requests) = (
                listener.clone(),
                response.clone(),
                closing.clone(),
                requests.clone(),
            );
            thread::Builder::new()
                .name(format!("http-{}", addr.port()))
                .stack_size(64 * 1024)
                .spawn(move || loop {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let _ = serve(conn, &response, &closing, &requests);
                        }
                        Err(_) => thread::sleep(std::time::Duration::from_millis(10)),
                    }
                })?;
        }
        Ok(HttpServer { addr, requests })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Serves one connection until the peer closes or asks to.
fn serve(
    mut conn: TcpStream,
    response: &[u8],
    closing: &[u8],
    requests: &AtomicU64,
) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    loop {
        let n = conn.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        // Answer every complete request in the buffer (pipelining).
        let mut start = 0;
        while let Some(end) = find(&buf[start..len], b"\r\n\r\n") {
            let head = &buf[start..start + end];
            start += end + 4;
            requests.fetch_add(1, Ordering::Relaxed);
            if wants_close(head) {
                conn.write_all(closing)?;
                return Ok(());
            }
            conn.write_all(response)?;
        }
        buf.copy_within(start..len, 0);
        len -= start;
        if len == buf.len() {
            return Err(io::Error::other("request head too large"));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// True when the request head has a `Connection: close` header.
fn wants_close(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').any(|line| {
        let line = String::from_utf8_lossy(line).to_ascii_lowercase();
        line.starts_with("connection:") && line.contains("close")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_header_is_recognised() {
        assert!(wants_close(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r"
        ));
        assert!(!wants_close(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r"
        ));
        assert_eq!(find(b"ab\r\n\r\ncd", b"\r\n\r\n"), Some(2));
    }
}
