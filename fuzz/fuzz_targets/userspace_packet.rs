//! lb-userspace's packet path on arbitrary frames, over arbitrary programmed
//! services. Raw byte frames in either direction must never panic. Frames
//! built from fuzzed fields (valid checksums) must come out with valid
//! checksums and the same length; a forwarded frame is addressed to its
//! backend; a frame passed is untouched; and the reply of a forwarded flow is
//! reverse-NATed back to the frontend the client used.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use arbitrary::Arbitrary;
use lb_core::*;
use lb_fuzz::{ip, node, SvcSpec};
use lb_testkit::{parse, verify_checksums, PacketBuilder};
use lb_userspace::{Direction, Outcome, PacketMeta, UserspaceDataplane};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Frame {
    /// Arbitrary bytes.
    Raw(Vec<u8>, bool),
    /// A well-formed TCP or UDP frame from a client towards the services'
    /// address space, optionally with one byte changed afterwards.
    Built {
        client: u8,
        dst: u8,
        sport: u16,
        dport: u16,
        udp: bool,
        flags: u8,
        payload: u8,
        external: bool,
        corrupt: Option<(u16, u8)>,
    },
}

fuzz_target!(|input: (Vec<SvcSpec>, Vec<(Frame, u32)>)| {
    let (specs, frames) = input;
    let node = node();
    let services: Vec<Service> = specs.iter().take(6).map(SvcSpec::to_service).collect();
    let Ok(desired) = DesiredState::build(&node, &services) else {
        return;
    };
    // A small flow table: the 262144-flow default costs more to allocate
    // per input than the frames cost to process.
    let config = lb_userspace::Config {
        flows: 4096,
        ..Default::default()
    };
    let mut dp = UserspaceDataplane::new(node, config);
    if Reconciler::new().apply(&mut dp, &desired).is_err() {
        return;
    }
    let mut worker = dp.worker();
    // Reply 5-tuple (as the backend sees the flow) -> (client, frontend);
    // None once two flows share it (then a reply is ambiguous by design).
    let mut replies: HashMap<(SocketAddr, SocketAddr, bool), Option<(SocketAddr, SocketAddr)>> =
        HashMap::new();
    for (now, (frame, entropy)) in frames.into_iter().take(32).enumerate() {
        let now = now as u64;
        match frame {
            Frame::Raw(mut bytes, reply) => {
                let dir = if reply {
                    Direction::Reply
                } else {
                    Direction::ToFrontend
                };
                let before = bytes.clone();
                let out = worker.process(&mut bytes, dir, now);
                assert_eq!(bytes.len(), before.len());
                if out == Outcome::Pass {
                    assert_eq!(bytes, before, "a passed frame was changed");
                }
            }
            Frame::Built {
                client,
                dst,
                sport,
                dport,
                udp,
                flags,
                payload,
                external,
                corrupt,
            } => {
                let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, client)), sport);
                let to = SocketAddr::new(ip(dst, false), dport);
                let b = if udp {
                    PacketBuilder::udp(src, to)
                } else {
                    PacketBuilder::tcp(src, to).flags(lb_testkit::TcpFlags(flags & 0x1f))
                };
                let Ok(mut bytes) = b.payload(vec![0xab; usize::from(payload % 64)]).build() else {
                    return;
                };
                if let Some((at, val)) = corrupt {
                    let n = bytes.len();
                    bytes[usize::from(at) % n] = val;
                }
                let valid = verify_checksums(&bytes).is_ok();
                let before = bytes.clone();
                let meta = PacketMeta {
                    now,
                    entropy,
                    scope: if external {
                        Scope::External
                    } else {
                        Scope::Internal
                    },
                };
                let out = worker.process_with(&mut bytes, Direction::ToFrontend, meta);
                assert_eq!(bytes.len(), before.len());
                match out {
                    Outcome::Pass => assert_eq!(bytes, before, "a passed frame was changed"),
                    Outcome::Forwarded(f) if corrupt.is_none() => {
                        assert!(valid);
                        verify_checksums(&bytes).unwrap_or_else(|e| panic!("forwarded frame: {e}"));
                        let p = parse(&bytes).expect("forwarded frame parses");
                        assert_eq!(p.dst, SocketAddr::new(f.backend.addr, f.backend.port));
                        if let Some(s) = f.snat {
                            assert_eq!(p.src.ip(), s);
                        } else {
                            assert_eq!(p.src, src);
                        }
                        let k = (p.dst, p.src, udp);
                        let seen = replies.entry(k).or_insert(Some((src, to)));
                        if *seen != Some((src, to)) {
                            // Two flows without SNAT can share a reply tuple
                            // (same client port to two frontends of one
                            // backend); a SNATed flow never may.
                            assert!(f.snat.is_none(), "SNAT port reused: {f:?} and {seen:?}");
                            *seen = None;
                        }
                        let Some((client, frontend)) = *seen else {
                            continue;
                        };
                        // The backend answers; the reply goes back to the client
                        // from the address it used.
                        let r = if udp {
                            PacketBuilder::udp(p.dst, p.src)
                        } else {
                            PacketBuilder::tcp(p.dst, p.src).syn().ack()
                        };
                        let mut reply = r.build().expect("reply builds");
                        let out = worker.process(&mut reply, Direction::Reply, now);
                        assert!(
                            matches!(out, Outcome::ReverseNated { .. }),
                            "reply of {f:?} was {out:?}"
                        );
                        verify_checksums(&reply).unwrap_or_else(|e| panic!("reply: {e}"));
                        let q = parse(&reply).expect("reply parses");
                        assert_eq!((q.src, q.dst), (frontend, client));
                    }
                    Outcome::Forwarded(_) | Outcome::ReverseNated { .. } | Outcome::Dropped(_) => {
                        if valid && corrupt.is_none() {
                            verify_checksums(&bytes).unwrap_or_else(|e| panic!("{out:?}: {e}"));
                        }
                    }
                }
            }
        }
    }
});
