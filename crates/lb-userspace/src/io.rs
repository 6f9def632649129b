//! Moving frames between network devices and the packet path.
//!
//! # Design
//!
//! The loop runs in the node's network namespace, next to the kernel's
//! forwarding. For every device it opens a packet socket with virtio-net
//! headers ([`crate::afpacket`]; all of them waited on with one `poll(2)`)
//! and, when asked, attaches a tiny BPF program to the
//! device's tc ingress through a TCX link ([`crate::tcx::TcxDrop`]) that
//! drops the IP frames the loop handles ([`crate::tcx::takes`]: every IPv4
//! frame, and every IPv6 frame but hop-by-hop and ICMPv6 informational
//! messages, which carry neighbour discovery and MLD; ICMPv6 errors are
//! the loop's, as they may be about load-balanced flows). Packet taps run before tc ingress, so the
//! loop still sees each frame, while the kernel never forwards the
//! original. The loop rewrites the frame in place ([`PacketPath`]) and
//! re-injects the IP packet through a raw socket of its family
//! (`IPPROTO_RAW`, header included; for IPv6 the kernel implies the header
//! from `IPPROTO_RAW`): the kernel routes it from the node's routing table,
//! resolves neighbours and sends it out of the right device — towards a
//! backend after DNAT, towards the client after reverse NAT, and unchanged
//! for traffic that is not ours.
//!
//! The drop belongs to the process: the TCX link is an fd, so the program
//! is detached when the loop is dropped and also when the process dies
//! without unwinding (`kill -9`, abort). A dead loop never leaves a device
//! blackholed, and the loop creates and deletes no qdisc or tc filter, so
//! other users' tc configuration on the device is left alone. TCX needs
//! Linux 6.6 or later; [`IoLoop::new`] fails on older kernels when asked
//! for drop rules.
//!
//! Devices have a role: frames from a [`Role::Client`] device go through the
//! frontend path (BPF ingress program), frames from a [`Role::Backend`]
//! device through the reply path (BPF egress program). Frames the node
//! itself sends are seen by the tap as well; they are recognised by their
//! packet type (`PACKET_OUTGOING`) or the device's own source MAC address
//! and ignored.
//!
//! Connection tracking is expired from the loop: every
//! [`EXPIRE_INTERVAL`] it calls [`PacketPath::expire`] with a budget of
//! [`EXPIRE_BUDGET`] table slots, so a full table is swept every few
//! seconds with bounded work between packets.
//!
//! # Limits
//!
//! * Frames [`crate::tcx::takes`] leaves to the kernel (ARP, ICMPv6
//!   informational messages, IPv6 with a hop-by-hop header, other EtherTypes) are neither dropped
//!   nor touched (a TCP/UDP packet behind a hop-by-hop header so stays
//!   with the kernel in that mode). IPv6 packets with other extension
//!   headers than those [`packet::parse`] skips (fragments, a routing
//!   header with segments left) are re-injected unchanged.
//! * IPv6 packets to link-local or multicast destinations are re-injected
//!   without a scope (interface), which the kernel refuses for link-local
//!   ones (counted as send errors).
//! * A device has one role: frames from a backend device only get reverse
//!   NAT, so a backend that is itself a client of a frontend is not
//!   load-balanced through this loop.
//! * One thread, one [`PacketPath`] (one connection-tracking table for both
//!   directions); devices are polled in turn with a short read timeout.
//!   Several workers would need flow steering that sends both directions
//!   of a flow to one worker (or a shared table).
//! * Re-injected packets are locally generated for the kernel: the TTL is
//!   not decremented, packets above the egress MTU with DF set fail with
//!   `EMSGSIZE` (counted as send errors), and netfilter sees them in OUTPUT
//!   rather than FORWARD.
//! * GSO/GRO super-frames (a TSO sender over veth, a NIC's GRO: up to
//!   64 KiB, far above the MTU) are cut into the segments their sender
//!   meant ([`crate::gso::Segments`], by the `gso_size` the kernel
//!   reports) before the packet path sees them, so each segment is
//!   load-balanced and re-injected on its own; a raw socket would refuse
//!   the whole frame. Frames that cannot be cut (IPv6 with extension
//!   headers, UFO) are dropped and counted ([`IoStats::gso_unsupported`]).
//! * Every IPv4 frame (and IPv6 frame the drop takes) of the devices takes
//!   the userspace detour, also traffic for the node itself.
//! * Frames captured from a peer that leaves the L4 checksum to offload
//!   (veth) carry a partial checksum; the kernel says so in the frame's
//!   virtio-net header and the loop completes it at the offset given
//!   there ([`crate::gso::complete_checksum`]) before the packet path.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pnet_datalink::NetworkInterface;
use pnet_packet::ip::IpNextHeaderProtocol;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_transport::{transport_channel, TransportChannelType, TransportProtocol, TransportSender};

use crate::afpacket::RxSocket;
use crate::gso::{self, Segments, VNET_HDR_LEN};
use crate::packet::{self, ETH_HLEN, IPV6_HLEN};
use crate::path::{Direction, Outcome, PacketPath};

/// Room past a frame in the loop's buffer: a NAT46/64 translation or a DSR
/// outer header may grow the frame by this much.
const ROOM: usize = {
    let dsr = if crate::dsr::OVERHEAD6 > crate::dsr::OVERHEAD {
        crate::dsr::OVERHEAD6
    } else {
        crate::dsr::OVERHEAD
    };
    let xlate = if crate::nat46x64::HEADROOM > dsr {
        crate::nat46x64::HEADROOM
    } else {
        dsr
    };
    // An ICMP error about a NAT46/64 flow.
    if crate::nat46x64_icmp::HEADROOM > xlate {
        crate::nat46x64_icmp::HEADROOM
    } else {
        xlate
    }
};
use crate::tcx::TcxDrop;

/// How often the loop expires connection tracking.
pub const EXPIRE_INTERVAL: Duration = Duration::from_millis(100);
/// Table slots examined per expiry run (of each table).
pub const EXPIRE_BUDGET: usize = 4096;

/// What a device carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Clients reach frontends through it.
    Client,
    /// Backends reply through it.
    Backend,
    /// Both (a one-armed node, as in a DSR setup where clients and
    /// backends sit behind one router): a frame that is a reply of a
    /// tracked flow is reverse-NATed, any other goes through the frontend
    /// path.
    OneArmed,
}

/// A device the loop serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Interface name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// Errors of the I/O loop.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// No interface of that name in this network namespace.
    #[error("no network interface {0:?} in this namespace")]
    NoInterface(String),
    /// The interface has no MAC address (not Ethernet).
    #[error("interface {0:?} has no MAC address")]
    NoMac(String),
    /// Opening a socket failed.
    #[error("{context}: {source}")]
    Socket {
        /// What was being opened.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What the loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Frames received from the devices (own frames excluded).
    pub received: u64,
    /// Packets re-injected.
    pub sent: u64,
    /// Frames dropped by the packet path.
    pub dropped: u64,
    /// Re-injections the kernel refused.
    pub send_errors: u64,
    /// GSO/GRO frames received (above the MTU; each counted once in
    /// `received`).
    pub gso_frames: u64,
    /// Segments cut from them, each handled as a frame of its own.
    pub segments: u64,
    /// GSO frames that could not be segmented (dropped): IPv6 extension
    /// headers, UFO.
    pub gso_unsupported: u64,
    /// Flows removed by expiry.
    pub expired_flows: u64,
    /// Affinity entries removed by expiry.
    pub expired_affinity: u64,
}

struct Port {
    role: Role,
    mac: [u8; 6],
    rx: RxSocket,
}

/// Receive buffer of each device's packet socket: room for bursts of
/// 64 KiB GSO frames while the loop serves the other devices.
const RCVBUF: usize = 8 << 20;
/// Frames read from one device in a row before the others get a turn.
const BATCH: usize = 64;
/// How long the loop waits for a frame before it checks its stop flag
/// and runs expiry.
const POLL_MS: libc::c_int = 10;
/// The largest frame read: a 64 KiB IP packet (GSO/GRO) and its Ethernet
/// header.
const MAX_FRAME: usize = ETH_HLEN + (1 << 16);

/// The I/O loop: devices in, raw socket out, one packet path in between.
pub struct IoLoop {
    ports: Vec<Port>,
    /// One `pollfd` per port, in order.
    pollfds: Vec<libc::pollfd>,
    tx: TransportSender,
    tx6: TransportSender,
    path: PacketPath,
    /// Frames as received: virtio-net header, then the frame.
    rx_buf: Vec<u8>,
    /// The frame (or segment) the packet path works on, with room past it.
    buf: Vec<u8>,
    start: Instant,
    stats: IoStats,
    last_expiry: Instant,
    // Declared last: the drops are detached after the sockets are closed.
    _drops: Vec<TcxDrop>,
}

impl std::fmt::Debug for IoLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoLoop")
            .field("ports", &self.ports.len())
            .field("stats", &self.stats)
            .finish()
    }
}

fn find(name: &str) -> Result<NetworkInterface, IoError> {
    pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| IoError::NoInterface(name.into()))
}

/// The MTU of the device `name` in this network namespace
/// (`SIOCGIFMTU`; /sys may show another namespace's devices).
fn device_mtu(name: &str) -> Option<u32> {
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: a plain socket(2) call; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = b as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifru_mtu of `req`,
    // which lives across the call.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SIOCGIFMTU,
            &mut req,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success the kernel wrote ifru_mtu.
    u32::try_from(unsafe { req.ifr_ifru.ifru_mtu }).ok()
}

impl IoLoop {
    /// Opens the devices in the current network namespace and, with
    /// `drop_rules`, attaches the TCX drop programs that keep the kernel
    /// from forwarding the originals (detached when the loop is dropped or
    /// the process exits).
    pub fn new(
        devices: &[Device],
        mut path: PacketPath,
        drop_rules: bool,
    ) -> Result<Self, IoError> {
        // NAT46/64 packets are sized for the narrowest device
        // (PacketPath::set_link_mtu).
        if let Some(mtu) = devices.iter().filter_map(|d| device_mtu(&d.name)).min() {
            path.set_link_mtu(mtu);
        }
        let mut ports = Vec::new();
        let mut ifindexes = Vec::new();
        for d in devices {
            let iface = find(&d.name)?;
            ifindexes.push((iface.index, d.name.clone()));
            let mac = iface.mac.ok_or_else(|| IoError::NoMac(d.name.clone()))?;
            let rx = RxSocket::open(iface.index, RCVBUF).map_err(|source| IoError::Socket {
                context: format!("packet socket on {}", d.name),
                source,
            })?;
            ports.push(Port {
                role: d.role,
                mac: mac.octets(),
                rx,
            });
        }
        let (tx, _rx) = transport_channel(
            1 << 16,
            TransportChannelType::Layer3(IpNextHeaderProtocol(255)),
        )
        .map_err(|source| IoError::Socket {
            context: "raw IPv4 socket".into(),
            source,
        })?;
        // An AF_INET6 raw socket of protocol IPPROTO_RAW sends whole IPv6
        // packets (the kernel sets header-include for it).
        let (tx6, _rx6) = transport_channel(
            1 << 16,
            TransportChannelType::Layer4(TransportProtocol::Ipv6(IpNextHeaderProtocol(255))),
        )
        .map_err(|source| IoError::Socket {
            context: "raw IPv6 socket".into(),
            source,
        })?;
        let mut drops = Vec::new();
        if drop_rules {
            for (index, name) in ifindexes {
                let drop = TcxDrop::attach(index).map_err(|source| IoError::Socket {
                    context: format!("TCX drop program on {name}"),
                    source,
                })?;
                drops.push(drop);
            }
        }
        let pollfds = ports
            .iter()
            .map(|p| libc::pollfd {
                fd: p.rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        Ok(IoLoop {
            pollfds,
            ports,
            tx,
            tx6,
            path,
            rx_buf: vec![0; VNET_HDR_LEN + MAX_FRAME],
            buf: vec![0; MAX_FRAME + ROOM],
            start: Instant::now(),
            stats: IoStats::default(),
            last_expiry: Instant::now(),
            _drops: drops,
        })
    }

    /// What the loop did so far.
    pub fn stats(&self) -> IoStats {
        self.stats
    }

    /// The packet path (flows, counters).
    pub fn path(&self) -> &PacketPath {
        &self.path
    }

    /// Serves the devices until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) -> IoStats {
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: `pollfds` is a live array of that many pollfds.
            let ready = unsafe {
                libc::poll(
                    self.pollfds.as_mut_ptr(),
                    self.pollfds.len() as libc::nfds_t,
                    POLL_MS,
                )
            };
            if ready > 0 {
                for i in 0..self.ports.len() {
                    if self.pollfds[i].revents & libc::POLLIN != 0 {
                        for _ in 0..BATCH {
                            if !self.poll_one(i) {
                                break;
                            }
                        }
                    }
                }
            }
            if self.last_expiry.elapsed() >= EXPIRE_INTERVAL {
                self.last_expiry = Instant::now();
                let now = self.start.elapsed().as_secs();
                let e = self.path.expire(now, EXPIRE_BUDGET);
                self.stats.expired_flows += e.flows as u64;
                self.stats.expired_affinity += e.affinity as u64;
            }
        }
        self.stats
    }

    /// Receives at most one frame from port `i` and handles it: a GSO
    /// frame segment by segment ([`crate::gso`]). False when no frame was
    /// queued.
    fn poll_one(&mut self, i: usize) -> bool {
        let port = &self.ports[i];
        let (role, mac) = (port.role, port.mac);
        let got = match port.rx.recv(&mut self.rx_buf) {
            Ok(got) => got,
            Err(e) => return e.kind() != std::io::ErrorKind::WouldBlock,
        };
        let frame = &self.rx_buf[VNET_HDR_LEN..VNET_HDR_LEN + got.len];
        // Only the frames the TCX program drops are ours; our own
        // transmissions are seen by the tap too.
        if got.outgoing || !crate::tcx::takes(frame) || packet::src_mac(frame) == Some(mac) {
            return true;
        }
        self.stats.received += 1;
        if let Some((kind, size)) = got.vnet.gso() {
            self.stats.gso_frames += 1;
            // Borrowed apart from `self` while its segments are handled
            // (an empty Vec takes its place: no allocation).
            let rx_buf = std::mem::take(&mut self.rx_buf);
            let frame = &rx_buf[VNET_HDR_LEN..VNET_HDR_LEN + got.len];
            match Segments::new(frame, kind, size) {
                Ok(mut segs) => {
                    while let Some(len) = segs.next_into(&mut self.buf[..MAX_FRAME]) {
                        self.stats.segments += 1;
                        self.handle(role, len);
                    }
                }
                Err(_) => self.stats.gso_unsupported += 1,
            }
            self.rx_buf = rx_buf;
            return true;
        }
        let len = got.len;
        self.buf[..len].copy_from_slice(frame);
        if got.vnet.needs_csum() {
            gso::complete_checksum(
                &mut self.buf[..len],
                usize::from(got.vnet.csum_start),
                usize::from(got.vnet.csum_offset),
            );
        }
        self.handle(role, len);
        true
    }

    /// Runs the frame `buf[..len]` from a device of `role` through the
    /// packet path and re-injects what it keeps.
    fn handle(&mut self, role: Role, len: usize) {
        let now = self.start.elapsed().as_secs();
        // The buffer has room past the frame for a NAT46/64 translation
        // or a DSR outer header.
        let (outcome, len) = match role {
            Role::Client => self
                .path
                .process_buf(&mut self.buf, len, Direction::ToFrontend, now),
            Role::Backend => self
                .path
                .process_buf(&mut self.buf, len, Direction::Reply, now),
            Role::OneArmed => match self
                .path
                .process_buf(&mut self.buf, len, Direction::Reply, now)
            {
                (Outcome::Pass, len) => {
                    self.path
                        .process_buf(&mut self.buf, len, Direction::ToFrontend, now)
                }
                done => done,
            },
        };
        if let Outcome::Dropped(_) = outcome {
            self.stats.dropped += 1;
            return;
        }
        self.reinject(len);
    }

    fn reinject(&mut self, len: usize) {
        let frame = &self.buf[..len];
        if frame[12..14] == [0x86, 0xdd] {
            return self.reinject6(len);
        }
        let Some(ip) = frame.get(ETH_HLEN..).and_then(Ipv4Packet::new) else {
            return;
        };
        // Ethernet may pad short packets: send the IP total length only.
        let total = usize::from(ip.get_total_length()).min(len - ETH_HLEN);
        let Some(ip) = frame
            .get(ETH_HLEN..ETH_HLEN + total)
            .and_then(Ipv4Packet::new)
        else {
            return;
        };
        let dst = IpAddr::V4(ip.get_destination());
        match self.tx.send_to(ip, dst) {
            Ok(_) => self.stats.sent += 1,
            Err(_) => self.stats.send_errors += 1,
        }
    }

    fn reinject6(&mut self, len: usize) {
        let frame = &self.buf[..len];
        let Some(ip) = frame.get(ETH_HLEN..).and_then(Ipv6Packet::new) else {
            return;
        };
        // Ethernet may pad short packets: send the header and payload only.
        let total = (IPV6_HLEN + usize::from(ip.get_payload_length())).min(len - ETH_HLEN);
        let Some(ip) = frame
            .get(ETH_HLEN..ETH_HLEN + total)
            .and_then(Ipv6Packet::new)
        else {
            return;
        };
        let dst = IpAddr::V6(ip.get_destination());
        match self.tx6.send_to(ip, dst) {
            Ok(_) => self.stats.sent += 1,
            Err(_) => self.stats.send_errors += 1,
        }
    }
}
