//! Tiny echo servers running inside a namespace, and matching one-shot
//! clients. The sockets are created inside the namespace (by a thread that
//! `setns`ed into it), so no external programs are needed.
//!
//! Protocol: a TCP server first writes its `tag`, then echoes every byte
//! until the client shuts down its write side, then closes. A UDP server
//! answers every datagram with `tag` followed by the datagram. A distinct tag
//! per backend tells a test which backend answered. The `*_with_peer`
//! variants put `[PEER_ADDR:PORT]` right after the tag, so a test also sees
//! the client address the backend saw (source-IP preservation, SNAT).

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
        Self::start(ns, bind, tag.to_vec(), true, false)
    }

    /// Like [`EchoServer::tcp`], and each connection receives
    /// `[PEER_ADDR:PORT]` right after `tag`.
    pub fn tcp_with_peer(ns: &NetNs, bind: SocketAddr, tag: &[u8]) -> Result<Self, NetnsError> {
        Self::start(ns, bind, tag.to_vec(), true, true)
    }

    /// Like [`EchoServer::udp`], with `[PEER_ADDR:PORT]` between `tag` and
    /// the echoed datagram.
    pub fn udp_with_peer(ns: &NetNs, bind: SocketAddr, tag: &[u8]) -> Result<Self, NetnsError> {
        Self::start(ns, bind, tag.to_vec(), false, true)
    }

    /// Starts a UDP echo server bound to `bind` inside `ns`; each reply is
    /// `tag` followed by the received datagram.
    pub fn udp(ns: &NetNs, bind: SocketAddr, tag: &[u8]) -> Result<Self, NetnsError> {
        Self::start(ns, bind, tag.to_vec(), false, false)
    }

    fn start(
        ns: &NetNs,
        bind: SocketAddr,
        tag: Vec<u8>,
        tcp: bool,
        peer: bool,
    ) -> Result<Self, NetnsError> {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel::<io::Result<SocketAddr>>();
        let (stop2, served2) = (stop.clone(), served.clone());
        let thread = ns.spawn_thread(move || {
            if tcp {
                serve_tcp(bind, &tag, peer, &stop2, &served2, &tx);
            } else {
                serve_udp(bind, &tag, peer, &stop2, &served2, &tx);
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

/// `tag`, then `[peer]` when asked for.
fn greeting(tag: &[u8], peer: Option<SocketAddr>) -> Vec<u8> {
    let mut out = tag.to_vec();
    if let Some(p) = peer {
        out.extend_from_slice(format!("[{p}]").as_bytes());
    }
    out
}

fn serve_tcp(
    bind: SocketAddr,
    tag: &[u8],
    peer: bool,
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
            Ok((stream, from)) => {
                served.fetch_add(1, Ordering::SeqCst);
                let tag = greeting(tag, peer.then_some(from));
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
    with_peer: bool,
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
            let mut reply = greeting(tag, with_peer.then_some(peer));
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
    let s = tcp_connect(ns, dst, timeout)?;
    tcp_exchange(s, msg, || {
        format!("TCP request from {} to {dst}", ns.name())
    })
}

/// Sends `msg` on `s`, shuts down its write side and returns everything
/// read until EOF; errors name `ctx()`.
fn tcp_exchange(
    mut s: TcpStream,
    msg: &[u8],
    ctx: impl Fn() -> String,
) -> Result<Vec<u8>, NetnsError> {
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
    udp_request_from(ns, any, dst, msg, timeout)
}

/// Like [`tcp_request`], from the local address `src` (port chosen by the
/// kernel), which must be assigned in `ns`.
pub fn tcp_request_from(
    ns: &NetNs,
    src: std::net::IpAddr,
    dst: SocketAddr,
    msg: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, NetnsError> {
    let ctx = || format!("TCP request from {src} in {} to {dst}", ns.name());
    let s = ns_io(ns, ctx, || connect_from(src, dst, timeout))?;
    tcp_exchange(s, msg, ctx)
}

/// A TCP connection from `src` (IPv4) to `dst`, in the calling thread's
/// namespace.
fn connect_from(
    src: std::net::IpAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let (std::net::IpAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "tcp_request_from: IPv4 only",
        ));
    };
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket owned by the TcpStream below (or closed on error).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is ours; from here on the TcpStream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    // The send timeout bounds a blocking connect(2).
    stream.set_write_timeout(Some(timeout))?;
    stream.set_read_timeout(Some(timeout))?;
    let local = sin(src, 0);
    // SAFETY: valid sockaddr_in of `len` bytes.
    if unsafe { libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let remote = sin(*dst.ip(), dst.port());
    // SAFETY: valid sockaddr_in of `len` bytes.
    if unsafe { libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// Like [`udp_request`], from the local address `src` and port `sport`
/// (0: the kernel picks one).
pub fn udp_request_from(
    ns: &NetNs,
    src: SocketAddr,
    dst: SocketAddr,
    msg: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, NetnsError> {
    let sock = ns_io(
        ns,
        || format!("UDP socket on {src} in {}", ns.name()),
        || UdpSocket::bind(src),
    )?;
    let ctx = || format!("UDP request from {src} in {} to {dst}", ns.name());
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
