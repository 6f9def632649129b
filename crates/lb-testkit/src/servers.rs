//! Tiny echo servers running inside a namespace, and matching one-shot
//! clients. The sockets are created inside the namespace (by a thread that
//! `setns`ed into it), so no external programs are needed.
//!
//! Protocol: a TCP server first writes its `tag`, then echoes every byte
//! until the client shuts down its write side, then closes. A UDP server
//! answers every datagram with `tag` followed by the datagram. A distinct tag
//! per backend tells a test which backend answered.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::netns::{NetNs, NetnsError, NsThread};

const POLL: Duration = Duration::from_millis(20);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP or UDP echo server inside a namespace; stopped and joined on drop.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    thread: Option<NsThread<()>>,
}

impl EchoServer {
    /// Starts a TCP echo server bound to `bind` (port 0 picks a free port)
    /// inside `ns`. Each connection first receives `tag`.
    pub fn tcp(ns: &NetNs, bind: SocketAddr, tag: &[u8]) -> Result<Self, NetnsError> {
        Self::start(ns, bind, tag.to_vec(), true)
    }

    /// Starts a UDP echo server bound to `bind` inside `ns`; each reply is
    /// `tag` followed by the received datagram.
    pub fn udp(ns: &NetNs, bind: SocketAddr, tag: &[u8]) -> Result<Self, NetnsError> {
        Self::start(ns, bind, tag.to_vec(), false)
    }

    fn start(ns: &NetNs, bind: SocketAddr, tag: Vec<u8>, tcp: bool) -> Result<Self, NetnsError> {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel::<io::Result<SocketAddr>>();
        let (stop2, served2) = (stop.clone(), served.clone());
        let thread = ns.spawn_thread(move || {
            if tcp {
                serve_tcp(bind, &tag, &stop2, &served2, &tx);
            } else {
                serve_udp(bind, &tag, &stop2, &served2, &tx);
            }
        })?;
        let mut server = EchoServer {
            addr: bind,
            stop,
            served,
            thread: Some(thread),
        };
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(addr)) => {
                server.addr = addr;
                Ok(server)
            }
            Ok(Err(e)) => Err(NetnsError::io(format!("bind echo server to {bind}"), e)),
            Err(_) => {
                // The thread ended (e.g. setns failed) or hung; report why.
                let why = match server.thread.take().map(NsThread::join) {
                    Some(Err(e)) => e.to_string(),
                    _ => "server thread did not start".to_owned(),
                };
                Err(NetnsError::io(
                    format!("start echo server on {bind}"),
                    io::Error::other(why),
                ))
            }
        }
    }

    /// The bound address (with the real port if 0 was requested).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of TCP connections accepted / UDP datagrams received so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if let Err(e) = t.join() {
                eprintln!("lb-testkit: echo server on {}: {e}", self.addr);
            }
        }
    }
}

fn serve_tcp(
    bind: SocketAddr,
    tag: &[u8],
    stop: &AtomicBool,
    served: &AtomicUsize,
    ready: &mpsc::Sender<io::Result<SocketAddr>>,
) {
    let listener = match TcpListener::bind(bind).and_then(|l| {
        l.set_nonblocking(true)?;
        Ok(l)
    }) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(listener.local_addr());
    let stop_flag = Arc::new(AtomicBool::new(false));
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                served.fetch_add(1, Ordering::SeqCst);
                let tag = tag.to_vec();
                let stop_flag = stop_flag.clone();
                conns.push(std::thread::spawn(move || {
                    let _ = echo_connection(stream, &tag, &stop_flag);
                }));
                conns.retain(|h| !h.is_finished());
            }
            Err(_) => std::thread::sleep(POLL / 4),
        }
    }
    stop_flag.store(true, Ordering::SeqCst);
    for c in conns {
        let _ = c.join();
    }
}

fn echo_connection(mut stream: TcpStream, tag: &[u8], stop: &AtomicBool) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.write_all(tag)?;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => stream.write_all(&buf[..n])?,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    stream.shutdown(Shutdown::Both)
}

fn serve_udp(
    bind: SocketAddr,
    tag: &[u8],
    stop: &AtomicBool,
    served: &AtomicUsize,
    ready: &mpsc::Sender<io::Result<SocketAddr>>,
) {
    let sock = match UdpSocket::bind(bind).and_then(|s| {
        s.set_read_timeout(Some(POLL))?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(sock.local_addr());
    let mut buf = [0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let mut reply = tag.to_vec();
            reply.extend_from_slice(&buf[..n]);
            // Count before replying so a client that got the reply sees it.
            served.fetch_add(1, Ordering::SeqCst);
            let _ = sock.send_to(&reply, peer);
        }
    }
}

fn ns_io<T>(
    ns: &NetNs,
    context: impl Fn() -> String,
    f: impl FnOnce() -> io::Result<T>,
) -> Result<T, NetnsError> {
    ns.run_in(f)?.map_err(|e| NetnsError::io(context(), e))
}

/// Opens a TCP connection from inside `ns` to `dst`. The socket stays in
/// `ns`; it can be used from any thread.
pub fn tcp_connect(
    ns: &NetNs,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, NetnsError> {
    ns_io(
        ns,
        || format!("connect from {} to {dst}", ns.name()),
        || {
            let s = TcpStream::connect_timeout(&dst, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            Ok(s)
        },
    )
}

/// Connects from inside `ns` to `dst`, sends `msg`, shuts down the write
/// side and returns everything read until EOF (for an [`EchoServer`]:
/// tag + `msg`). `timeout` applies to connecting and to each read/write.
pub fn tcp_request(
    ns: &NetNs,
    dst: SocketAddr,
    msg: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, NetnsError> {
    let mut s = tcp_connect(ns, dst, timeout)?;
    let ctx = || format!("TCP request from {} to {dst}", ns.name());
    s.write_all(msg).map_err(|e| NetnsError::io(ctx(), e))?;
    s.shutdown(Shutdown::Write)
        .map_err(|e| NetnsError::io(ctx(), e))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| NetnsError::io(ctx(), e))?;
    Ok(out)
}

/// Sends `msg` as one UDP datagram from inside `ns` to `dst` and returns the
/// first reply (waiting at most `timeout`).
pub fn udp_request(
    ns: &NetNs,
    dst: SocketAddr,
    msg: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, NetnsError> {
    let any: SocketAddr = if dst.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = ns_io(
        ns,
        || format!("UDP socket in {}", ns.name()),
        || UdpSocket::bind(any),
    )?;
    let ctx = || format!("UDP request from {} to {dst}", ns.name());
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| NetnsError::io(ctx(), e))?;
    sock.send_to(msg, dst)
        .map_err(|e| NetnsError::io(ctx(), e))?;
    let mut buf = vec![0u8; 65536];
    let (n, _) = sock
        .recv_from(&mut buf)
        .map_err(|e| NetnsError::io(ctx(), e))?;
    buf.truncate(n);
    Ok(buf)
}
