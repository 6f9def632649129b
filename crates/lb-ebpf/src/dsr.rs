//! The backend side of direct server return ([`lb_core::LbMode::Dsr`] and
//! `Hybrid`): `bpf/lb_dsr_backend.c` on the device a backend receives its
//! traffic on.
//!
//! A node in DSR mode sends a flow's packets unchanged (destination the
//! frontend, source the client) inside IPIP to the backend's address, with
//! the backend's port in the outer header's Identification field
//! (`bpf/lb_dsr.h`). On the backend's device, the ingress program
//! decapsulates, translates the frontend to the backend's address and port
//! and remembers the flow (an LRU map keyed by the 5-tuple); the egress
//! program gives replies the frontend back as their source, and they leave
//! by the backend's own route, straight to the client. The backend needs no
//! tunnel device and no VIP on an interface.
//!
//! Nothing is pinned: the programs stay attached while the [`BackendSide`]
//! lives (an agent keeps it for its lifetime) and detach when it is dropped.

use aya::maps::{MapData, PerCpuArray};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};

use crate::loader::{interface_exists, prog_err, verifier_err, LoadError};

/// The compiled backend-side object (`bpf/lb_dsr_backend.c`).
pub static DSR_BACKEND_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb_dsr_backend.o"));

/// Name of the backend-side ingress program.
pub const PROG_DSR_INGRESS: &str = "lb_dsr_ingress";
/// Name of the backend-side egress program.
pub const PROG_DSR_EGRESS: &str = "lb_dsr_egress";
/// Its per-CPU counters (`enum lb_dsr_stat`).
pub const MAP_DSR_STATS: &str = "lb_dsr_stats";
/// Its flow map (`struct lb_dsr_key` -> `struct lb_dsr_val`, LRU).
pub const MAP_DSR_FLOWS: &str = "lb_dsr_flows";

/// Counters of a [`BackendSide`], summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// IPIP packets decapsulated and translated to the backend.
    pub decapsulated: u64,
    /// Replies translated back to the frontend.
    pub reversed: u64,
    /// IPIP packets dropped (not IPv4 TCP/UDP inside, or a helper failed).
    pub dropped: u64,
}

/// The backend-side programs attached to one device (in the calling
/// thread's network namespace). Dropping it detaches them.
pub struct BackendSide {
    ebpf: Ebpf,
    device: String,
}

impl std::fmt::Debug for BackendSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSide")
            .field("device", &self.device)
            .finish()
    }
}

impl BackendSide {
    /// Loads `bpf/lb_dsr_backend.c` and attaches its ingress and egress
    /// programs (TCX) to `device`. Run it in the device's network namespace.
    ///
    /// ```no_run
    /// let side = lb_ebpf::dsr::BackendSide::attach("eth0")?;
    /// println!("{:?}", side.stats()?);
    /// # Ok::<(), lb_ebpf::LoadError>(())
    /// ```
    pub fn attach(device: &str) -> Result<Self, LoadError> {
        if !interface_exists(device) {
            return Err(LoadError::NoInterface(device.to_owned()));
        }
        let mut ebpf = EbpfLoader::new()
            .load(DSR_BACKEND_OBJECT)
            .map_err(|e| LoadError::Object(Box::new(e)))?;
        for (name, attach) in [
            (PROG_DSR_INGRESS, TcAttachType::Ingress),
            (PROG_DSR_EGRESS, TcAttachType::Egress),
        ] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(LoadError::Missing(name))?
                .try_into()
                .map_err(prog_err(format!("{name} is not a classifier")))?;
            prog.load().map_err(verifier_err(name))?;
            prog.attach_with_options(
                device,
                attach,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(prog_err(format!("attaching {name} to {device}")))?;
        }
        Ok(BackendSide {
            ebpf,
            device: device.to_owned(),
        })
    }

    /// The device the programs are attached to.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Reads the counters.
    pub fn stats(&self) -> Result<BackendStats, LoadError> {
        let err = |e: aya::maps::MapError| LoadError::Program {
            context: format!("reading {MAP_DSR_STATS}"),
            source: Box::new(e),
        };
        let map = self
            .ebpf
            .map(MAP_DSR_STATS)
            .ok_or(LoadError::Missing(MAP_DSR_STATS))?;
        let stats: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(err)?;
        let sum =
            |i: u32| -> Result<u64, LoadError> { Ok(stats.get(&i, 0).map_err(err)?.iter().sum()) };
        Ok(BackendStats {
            decapsulated: sum(0)?,
            reversed: sum(1)?,
            dropped: sum(2)?,
        })
    }
}
