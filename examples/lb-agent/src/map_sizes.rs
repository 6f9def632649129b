//! `run`'s BPF map sizes, named like Cilium's flags (`--bpf-lb-map-max`,
//! `--bpf-ct-global-tcp-max` ...). Sizes apply when the maps are created;
//! maps already pinned keep theirs (run `lb-agent cleanup` to resize).

use clap::Args;
use lb_ebpf::MapCapacity;

/// Map sizes (`max_entries`).
#[derive(Debug, Clone, Args)]
pub struct MapSizeArgs {
    /// Default size of every load-balancing map (services, backends,
    /// reverse NAT, affinity), like Cilium's --bpf-lb-map-max.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1..))]
    pub bpf_lb_map_max: u32,
    /// Services map entries (frontends plus all their backend slots)
    /// [default: --bpf-lb-map-max].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub bpf_lb_service_map_max: Option<u32>,
    /// Backends map entries [default: --bpf-lb-map-max].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub bpf_lb_backend_map_max: Option<u32>,
    /// Reverse-NAT map entries (one per frontend) [default: --bpf-lb-map-max].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub bpf_lb_rev_nat_map_max: Option<u32>,
    /// Session-affinity map entries (LRU) [default: --bpf-lb-map-max].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub bpf_lb_affinity_map_max: Option<u32>,
    /// Maglev tables (frontends using Maglev).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub bpf_lb_maglev_map_max: u32,
    /// Source-range prefixes (loadBalancerSourceRanges, per frontend).
    #[arg(long, default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(1..))]
    pub bpf_lb_source_range_map_max: u32,
    /// Connection-tracking entries (LRU, two per flow; TCP and UDP share
    /// the one map, which Cilium splits into --bpf-ct-global-tcp-max and
    /// --bpf-ct-global-any-max). The SNAT and socket-LB reverse maps get
    /// the same size. The default is Cilium's TCP one: short connections
    /// hold entries for about 105 s each (closed flows' tuples are kept
    /// through TIME_WAIT), about 5 000 new connections/s; `status
    /// --verbose` warns from 80% fill.
    #[arg(long, default_value_t = 524_288, value_parser = clap::value_parser!(u32).range(1..))]
    pub bpf_ct_global_max: u32,
}

impl MapSizeArgs {
    /// The capacities to create maps with.
    pub fn capacity(&self) -> MapCapacity {
        let lb = self.bpf_lb_map_max;
        MapCapacity {
            services: self.bpf_lb_service_map_max.unwrap_or(lb),
            backends: self.bpf_lb_backend_map_max.unwrap_or(lb),
            rev_nat: self.bpf_lb_rev_nat_map_max.unwrap_or(lb),
            affinity: self.bpf_lb_affinity_map_max.unwrap_or(lb),
            maglev: self.bpf_lb_maglev_map_max,
            src_range: self.bpf_lb_source_range_map_max,
            ct: self.bpf_ct_global_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        m: MapSizeArgs,
    }

    #[test]
    fn defaults_are_lb_ebpf_defaults_and_specific_flags_win() {
        let t = T::parse_from(["t"]);
        assert_eq!(t.m.capacity(), MapCapacity::default());
        let t = T::parse_from([
            "t",
            "--bpf-lb-map-max",
            "100",
            "--bpf-lb-backend-map-max",
            "7",
            "--bpf-ct-global-max",
            "64",
        ]);
        let c = t.m.capacity();
        assert_eq!(
            (c.services, c.backends, c.rev_nat, c.affinity),
            (100, 7, 100, 100)
        );
        assert_eq!(c.ct, 64);
        assert!(T::try_parse_from(["t", "--bpf-lb-map-max", "0"]).is_err());
    }
}
