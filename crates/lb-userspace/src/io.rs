//! Moving frames between network devices and the packet path.
//!
//! # Design
//!
//! The loop runs in the node's network namespace, next to the kernel's
//! forwarding. For every device it opens a `pnet` datalink channel
//! (`AF_PACKET`) and, when asked, installs one tc rule that drops every
//! IPv4 frame arriving on it (`clsact` + a one-instruction classic BPF
//! classifier in direct-action mode returning `TC_ACT_SHOT`, protocol `ip`). Packet taps run before tc ingress, so the loop still sees each
//! frame, while the kernel never forwards the original. The loop rewrites
//! the frame in place ([`PacketPath`]) and re-injects the IP packet through
//! one raw IPv4 socket (`IPPROTO_RAW`, header included): the kernel routes
//! it from the node's routing table, resolves neighbours and sends it out of
//! the right device — towards a backend after DNAT, towards the client after
//! reverse NAT, and unchanged for traffic that is not ours.
//!
//! Devices have a role: frames from a [`Role::Client`] device go through the
//! frontend path (BPF ingress program), frames from a [`Role::Backend`]
//! device through the reply path (BPF egress program). Frames the node
//! itself sends are seen by the tap as well; they are recognised by the
//! device's own source MAC address and ignored.
//!
//! # Limits
//!
//! * IPv4 only: other frames (ARP, IPv6) are neither dropped nor touched.
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
//! * Every IPv4 frame of the devices takes the userspace detour, also
//!   traffic for the node itself.
//! * Frames captured from a peer that leaves the L4 checksum to offload
//!   (veth) carry a partial checksum; the loop completes it in software
//!   ([`packet::complete_partial_checksum`]) before the packet path runs.

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pnet_datalink::{Channel, DataLinkReceiver, NetworkInterface};
use pnet_packet::ip::IpNextHeaderProtocol;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_transport::{transport_channel, TransportChannelType, TransportSender};

use crate::packet::{self, ETH_HLEN};
use crate::path::{Direction, Outcome, PacketPath};

/// What a device carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Clients reach frontends through it.
    Client,
    /// Backends reply through it.
    Backend,
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
    /// A tc command failed.
    #[error("`tc {args}` failed: {stderr}")]
    Tc {
        /// The arguments.
        args: String,
        /// Its error output.
        stderr: String,
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
}

/// A tc drop rule on one device; removed on drop.
#[derive(Debug)]
struct DropRule {
    dev: String,
}

fn tc(args: &[&str]) -> Result<(), IoError> {
    let err = |stderr: String| IoError::Tc {
        args: args.join(" "),
        stderr,
    };
    let out = Command::new("tc")
        .args(args)
        .output()
        .map_err(|e| err(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

impl DropRule {
    fn install(dev: &str) -> Result<Self, IoError> {
        tc(&["qdisc", "add", "dev", dev, "clsact"])?;
        let rule = DropRule { dev: dev.into() };
        // A one-instruction classic BPF classifier in direct-action mode:
        // `ret #TC_ACT_SHOT` (needs neither cls_matchall nor act_gact).
        tc(&[
            "filter",
            "add",
            "dev",
            dev,
            "ingress",
            "protocol",
            "ip",
            "prio",
            "1",
            "bpf",
            "bytecode",
            "1,6 0 0 2,",
            "da",
        ])?;
        Ok(rule)
    }
}

impl Drop for DropRule {
    fn drop(&mut self) {
        let _ = tc(&["qdisc", "del", "dev", &self.dev, "clsact"]);
    }
}

struct Port {
    role: Role,
    mac: [u8; 6],
    rx: Box<dyn DataLinkReceiver>,
}

/// The I/O loop: devices in, raw socket out, one packet path in between.
pub struct IoLoop {
    ports: Vec<Port>,
    tx: TransportSender,
    path: PacketPath,
    buf: Vec<u8>,
    start: Instant,
    stats: IoStats,
    // Declared last: rules are removed after the sockets are closed.
    _rules: Vec<DropRule>,
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

impl IoLoop {
    /// Opens the devices in the current network namespace and, with
    /// `drop_rules`, installs the tc rules that keep the kernel from
    /// forwarding the originals (removed when the loop is dropped).
    pub fn new(devices: &[Device], path: PacketPath, drop_rules: bool) -> Result<Self, IoError> {
        let poll = Duration::from_millis(if devices.len() > 1 { 1 } else { 50 });
        let mut ports = Vec::new();
        for d in devices {
            let iface = find(&d.name)?;
            let mac = iface.mac.ok_or_else(|| IoError::NoMac(d.name.clone()))?;
            let cfg = pnet_datalink::Config {
                read_timeout: Some(poll),
                ..Default::default()
            };
            let rx = match pnet_datalink::channel(&iface, cfg) {
                Ok(Channel::Ethernet(_tx, rx)) => rx,
                Ok(_) => {
                    return Err(IoError::Socket {
                        context: format!("datalink channel on {}", d.name),
                        source: std::io::Error::other("not an Ethernet channel"),
                    })
                }
                Err(source) => {
                    return Err(IoError::Socket {
                        context: format!("datalink channel on {}", d.name),
                        source,
                    })
                }
            };
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
        let mut rules = Vec::new();
        if drop_rules {
            for d in devices {
                rules.push(DropRule::install(&d.name)?);
            }
        }
        Ok(IoLoop {
            ports,
            tx,
            path,
            buf: vec![0; 1 << 16],
            start: Instant::now(),
            stats: IoStats::default(),
            _rules: rules,
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
            for i in 0..self.ports.len() {
                self.poll_one(i);
            }
        }
        self.stats
    }

    /// Receives at most one frame from port `i` and handles it.
    fn poll_one(&mut self, i: usize) {
        let port = &mut self.ports[i];
        let (role, mac) = (port.role, port.mac);
        let len = match port.rx.next() {
            Ok(frame) => {
                // Only IPv4 frames are dropped by the tc rule; our own
                // transmissions are seen by the tap too.
                if frame.len() < ETH_HLEN
                    || frame[12..14] != [0x08, 0x00]
                    || packet::src_mac(frame) == Some(mac)
                    || frame.len() > self.buf.len()
                {
                    return;
                }
                self.buf[..frame.len()].copy_from_slice(frame);
                frame.len()
            }
            Err(_) => return,
        };
        self.stats.received += 1;
        let dir = match role {
            Role::Client => Direction::ToFrontend,
            Role::Backend => Direction::Reply,
        };
        let now = self.start.elapsed().as_secs();
        let frame = &mut self.buf[..len];
        if let packet::Parsed::Ok(info) = packet::parse(frame) {
            packet::complete_partial_checksum(frame, &info);
        }
        let outcome = self.path.process(frame, dir, now);
        if let Outcome::Dropped(_) = outcome {
            self.stats.dropped += 1;
            return;
        }
        self.reinject(len);
    }

    fn reinject(&mut self, len: usize) {
        let frame = &self.buf[..len];
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
}
