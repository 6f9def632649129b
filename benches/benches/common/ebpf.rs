//! Shared by the privileged eBPF benches (`ebpf_packet`, `ebpf_sync`): the
//! tc programs and their maps loaded — never attached to any interface — in
//! a private bpffs, with map capacities sized for the bench's service count,
//! and lb-core's reconciler programming them through [`EbpfDataplane`] (the
//! real map layout).
#![allow(dead_code)]

use lb_core::{DesiredState, NodeConfig, Reconciler, Service};
use lb_ebpf::{EbpfDataplane, LoadOptions, Loaded, MapCapacity};
use lb_testkit::BpffsGuard;

/// Loaded programs and maps; unpinned (and the bpffs unmounted) on drop,
/// also when a bench panics.
pub struct Rig {
    /// The loaded programs (for `TestRun`).
    pub loaded: Loaded,
    /// The maps, as lb-core's `Dataplane`.
    pub dp: EbpfDataplane,
    /// What is programmed.
    pub rec: Reconciler,
    bpffs: BpffsGuard,
}

/// Map capacities for `services` frontends with `backends` backends each,
/// plus `extra` frontends / backends of headroom, and `ct` CT entries.
pub fn capacity_for(services: usize, backends: usize, extra: usize, ct: u32) -> MapCapacity {
    let n = |x: usize| u32::try_from(x).expect("capacity fits u32");
    MapCapacity {
        // A frontend takes its own entry plus one per backend slot.
        services: n((services + extra) * (backends + 1) + extra),
        backends: n((services + extra) * backends + extra),
        rev_nat: n(services + extra),
        ct,
        ..MapCapacity::default()
    }
}

impl Rig {
    /// Loads the programs with `capacity` for `node`. Fails loudly (panics)
    /// without the privileges to do so.
    pub fn new(capacity: MapCapacity, node: &NodeConfig) -> Rig {
        lb_testkit::require_privileges();
        let bpffs = BpffsGuard::new().expect("bpffs");
        let mut opts = LoadOptions::new(bpffs.pin_path("lb"), &[]);
        opts.capacity = capacity;
        let loaded = lb_ebpf::load(&opts).expect("load the tc programs");
        let dp = EbpfDataplane::open(loaded.pin_dir(), node).expect("open the dataplane");
        Rig {
            loaded,
            dp,
            rec: Reconciler::new(),
            bpffs,
        }
    }

    /// Programs `services` (plan + apply + commit); returns the op count.
    pub fn apply(&mut self, node: &NodeConfig, services: &[Service]) -> usize {
        let desired = DesiredState::build(node, services).expect("valid services");
        self.rec.apply(&mut self.dp, &desired).expect("apply")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Err(e) = lb_ebpf::cleanup(self.loaded.pin_dir()) {
            eprintln!("cleanup {}: {e}", self.loaded.pin_dir().display());
        }
    }
}
