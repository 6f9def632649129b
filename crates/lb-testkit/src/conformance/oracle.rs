//! [`OracleDataplane`]: lb-core's [`MemoryDataplane`] and [`decide`] behind
//! the [`DataplaneUnderTest`] interface — the reference every other
//! dataplane is compared with.

use std::collections::HashMap;
use std::net::SocketAddr;

use lb_core::{
    decide, Dataplane, DataplaneError, DropReason, FlowContext, FlowKey, FlowState,
    MemoryDataplane, NodeConfig, Op, Scope, Tables, Verdict,
};

use super::dut::{DataplaneUnderTest, Direction, Drops, PacketCtx, PacketResult, Setup};
use super::reference::{classify, endpoints, rewrite, Class};
use super::Scenario;

/// lb-core's in-memory dataplane plus the flow oracle, rewriting frames with
/// [`rewrite`] (checksums recomputed from scratch).
#[derive(Debug, Clone)]
pub struct OracleDataplane {
    dp: MemoryDataplane,
    /// `dp.tables()` with the node's Maglev parameters (ops do not carry them).
    tables: Tables,
    node: NodeConfig,
    flows: FlowState,
    /// Reply 5-tuple → (client, frontend).
    replies: HashMap<FlowKey, (SocketAddr, SocketAddr)>,
    drops: Drops,
}

impl OracleDataplane {
    /// An empty oracle for `setup`.
    pub fn new(setup: &Setup) -> Self {
        OracleDataplane {
            dp: MemoryDataplane::with_capacity(setup.capacity),
            tables: Tables::new(),
            node: setup.node.clone(),
            flows: FlowState::new(),
            replies: HashMap::new(),
            drops: Drops::default(),
        }
        .with_tables()
    }

    fn with_tables(mut self) -> Self {
        self.tables = self.dp.tables().clone();
        self.tables.maglev = self.node.maglev;
        self
    }

    fn client_packet(&mut self, frame: &[u8], key: FlowKey, ctx: PacketCtx) -> PacketResult {
        let fctx = FlowContext {
            now: ctx.now,
            entropy: ctx.entropy,
            scope: Scope::External,
        };
        match decide(&self.tables, &self.node, &mut self.flows, &key, fctx) {
            Verdict::Pass => PacketResult::Accept(frame.to_vec()),
            Verdict::Drop { reason, .. } => {
                match reason {
                    DropReason::NoBackend => self.drops.no_backend += 1,
                    DropReason::NoLocalBackend => self.drops.no_local_backend += 1,
                    DropReason::SourceRangeDenied => self.drops.source_range += 1,
                }
                PacketResult::Drop
            }
            Verdict::Forward(f) if f.encap.is_some() => {
                // DSR: the packet leaves unchanged inside IPIP or
                // IPv6-in-IPv6; replies bypass the node, which keeps no
                // reply state.
                let Some(encap) = f.encap else { unreachable!() };
                match super::reference::encap(frame, encap, f.backend.port) {
                    Some(out) => PacketResult::Accept(out),
                    None => PacketResult::Drop,
                }
            }
            Verdict::Forward(f) => {
                let (client, frontend) = endpoints(&key);
                let src = SocketAddr::new(f.snat.unwrap_or(key.src), key.sport);
                let dst = SocketAddr::new(f.backend.addr, f.backend.port);
                let reply = FlowKey {
                    src: dst.ip(),
                    sport: dst.port(),
                    dst: src.ip(),
                    dport: src.port(),
                    proto: key.proto,
                };
                // A new flow owns the reply direction of its tuple (two flows
                // can share one when clients are SNATed with the same port).
                if f.selection != lb_core::Selection::Established {
                    self.replies.insert(reply, (client, frontend));
                }
                match rewrite(frame, src, dst) {
                    Some(out) => PacketResult::Accept(out),
                    None => PacketResult::Drop,
                }
            }
        }
    }

    fn reply(&mut self, frame: &[u8], key: FlowKey) -> PacketResult {
        let Some((client, frontend)) = self.replies.get(&key).copied() else {
            return PacketResult::Accept(frame.to_vec());
        };
        // The BPF egress program takes the reverse-NAT entry's address, or
        // for a wildcard entry the address the client used: both are `frontend`.
        let fe = frontend;
        let dst = SocketAddr::new(client.ip(), key.dport);
        match rewrite(frame, fe, dst) {
            Some(out) => PacketResult::Accept(out),
            None => PacketResult::Drop,
        }
    }
}

impl DataplaneUnderTest for OracleDataplane {
    fn name(&self) -> String {
        "lb-core MemoryDataplane + flow::decide".into()
    }

    fn unsupported(&self, scenario: Scenario) -> Option<String> {
        match scenario {
            Scenario::SnatPortCollision | Scenario::SnatPortCollisionV6 => Some(
                "lb-core's model keeps the client's source port when it SNATs (the port is \
                 the dataplane's to allocate), so two clients with one port to one remote \
                 backend share a reply tuple"
                    .into(),
            ),
            Scenario::ReplyTupleClash => Some(
                "lb-core's model keeps the client's source port of a DNATed flow, so one \
                 client port to two frontends of one backend shares a reply tuple (the \
                 newer flow owns it)"
                    .into(),
            ),
            Scenario::IcmpErrors | Scenario::Nat46x64Icmp => {
                Some("lb-core's model has no ICMP: errors about flows pass untranslated".into())
            }
            _ => None,
        }
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        self.dp.apply(ops)?;
        self.tables = self.dp.tables().clone();
        self.tables.maglev = self.node.maglev;
        Ok(())
    }

    fn process(&mut self, dir: Direction, frame: &[u8], ctx: PacketCtx) -> PacketResult {
        let key = match classify(frame) {
            Class::Flow(key) => key,
            Class::Ignore => return PacketResult::Accept(frame.to_vec()),
            Class::Malformed => {
                self.drops.malformed += 1;
                return PacketResult::Drop;
            }
        };
        match dir {
            Direction::ToFrontend => self.client_packet(frame, key, ctx),
            Direction::Reply => self.reply(frame, key),
        }
    }

    fn reset_flows(&mut self) {
        self.flows = FlowState::new();
        self.replies.clear();
    }

    fn drops(&self) -> Option<Drops> {
        Some(self.drops)
    }
}
