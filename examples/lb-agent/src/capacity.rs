//! Per-service admission against the dataplane's map sizes.
//!
//! The eBPF dataplane applies a batch all or nothing and refuses one that
//! does not fit its maps (`CapacityExceeded`). Without a check here, one
//! service too large for a map would make every later apply fail. So
//! [`Budget`] admits services one at a time, in the agent's order
//! (incumbents first), and leaves out only a service that does not fit,
//! with a reason naming the map, its size and the entries needed, like
//! Cilium's "service map is full" errors.
//!
//! A service is charged for what it holds at the peak of the apply: the
//! reconciler writes new entries before it removes stale ones, so a changed
//! service is charged, per frontend, the larger of its old and new entries,
//! and the union of its old and new backends.
//!
//! IPv4 frontends and backends take entries in the `lb4_*` maps, IPv6 ones
//! in the `lb6_*` maps (each family's maps have the [`MapLimits`] sizes);
//! the Maglev map is shared.

use std::collections::{BTreeMap, BTreeSet};

use lb_core::{DesiredState, FrontendKey, L3n4Addr, LbAlgorithm};

/// Sizes (`max_entries`) of the maps a service takes entries in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLimits {
    /// Services map: one entry per frontend plus one per backend slot.
    pub services: usize,
    /// Backends map: one entry per distinct backend address.
    pub backends: usize,
    /// Reverse-NAT map: one entry per frontend.
    pub rev_nat: usize,
    /// Maglev map: one table per frontend using Maglev.
    pub maglev: usize,
    /// Source-range map: one entry per `loadBalancerSourceRanges` prefix of
    /// the frontend's family and frontend.
    pub src_range: usize,
}

/// The map names in reasons (those of lb-ebpf's `bpf/lb_abi.h`), per
/// family: services, backends, reverse NAT, source ranges.
const MAPS: [[&str; 4]; 2] = [
    [
        "lb4_services",
        "lb4_backends",
        "lb4_reverse_nat",
        "lb4_src_range",
    ],
    [
        "lb6_services",
        "lb6_backends",
        "lb6_reverse_nat",
        "lb6_src_range",
    ],
];
const MAGLEV: &str = "lb4_maglev";

/// 0 for IPv4, 1 for IPv6 (index of [`MAPS`]).
fn fam(ip: std::net::IpAddr) -> usize {
    usize::from(ip.is_ipv6())
}

/// The entries one service takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Services-map entries per frontend (its backend slots plus one).
    service_entries: BTreeMap<FrontendKey, usize>,
    /// Backend addresses.
    backends: BTreeSet<L3n4Addr>,
    /// Frontends with a Maglev table.
    maglev: BTreeSet<FrontendKey>,
    /// Source-range prefixes per frontend.
    ranges: BTreeMap<FrontendKey, usize>,
}

impl Footprint {
    /// The entries of a desired state (usually one service's).
    pub fn of(d: &DesiredState) -> Self {
        let mut f = Footprint::default();
        for (key, fe) in &d.frontends {
            f.service_entries.insert(*key, fe.backends.len() + 1);
            if fe.algorithm == LbAlgorithm::Maglev {
                f.maglev.insert(*key);
            }
            // Only ranges of the frontend's family are programmed.
            let own = fe
                .source_ranges
                .iter()
                .filter(|n| n.addr().is_ipv4() == key.addr.addr.is_ipv4());
            f.ranges.insert(*key, own.count());
        }
        f.backends = d.backends.keys().copied().collect();
        f
    }

    /// What the service holds while it changes from `old` to `self`: per
    /// frontend the larger entry count (source ranges: both, they are
    /// written before the stale ones go), the union of the backends.
    pub fn during_change_from(mut self, old: &Footprint) -> Self {
        for (k, n) in &old.service_entries {
            let e = self.service_entries.entry(*k).or_default();
            *e = (*e).max(*n);
        }
        for (k, n) in &old.ranges {
            *self.ranges.entry(*k).or_default() += n;
        }
        self.backends.extend(old.backends.iter().copied());
        self.maglev.extend(old.maglev.iter().copied());
        self
    }

    /// Services-map entries of family `i`.
    fn services(&self, i: usize) -> usize {
        let of = self.service_entries.iter();
        of.filter(|(k, _)| fam(k.addr.addr) == i)
            .map(|(_, n)| n)
            .sum()
    }

    /// Frontends (reverse-NAT entries) of family `i`.
    fn frontends(&self, i: usize) -> usize {
        let of = self.service_entries.keys();
        of.filter(|k| fam(k.addr.addr) == i).count()
    }

    /// Source-range entries of family `i`.
    fn ranges(&self, i: usize) -> usize {
        let of = self.ranges.iter();
        of.filter(|(k, _)| fam(k.addr.addr) == i)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Entries admitted so far against [`MapLimits`].
#[derive(Debug, Clone)]
pub struct Budget {
    limits: MapLimits,
    /// Per family (see [`fam`]).
    services: [usize; 2],
    rev_nat: [usize; 2],
    ranges: [usize; 2],
    maglev: usize,
    backends: BTreeSet<L3n4Addr>,
    /// Entries of `backends` per family.
    backend_count: [usize; 2],
}

impl Budget {
    /// An empty budget.
    pub fn new(limits: MapLimits) -> Self {
        Budget {
            limits,
            services: [0; 2],
            rev_nat: [0; 2],
            ranges: [0; 2],
            maglev: 0,
            backends: BTreeSet::new(),
            backend_count: [0; 2],
        }
    }

    /// Admits `f` when every map still has room for it (and takes its
    /// entries); otherwise returns why not and takes nothing.
    pub fn admit(&mut self, f: &Footprint) -> Result<(), String> {
        let l = self.limits;
        let mut checks = vec![(MAGLEV, l.maglev, self.maglev, f.maglev.len())];
        for (i, [services, backends, rev_nat, src_range]) in MAPS.into_iter().enumerate() {
            let used_backends = self.backend_count[i];
            let new_backends = f
                .backends
                .iter()
                .filter(|b| fam(b.addr) == i && !self.backends.contains(b))
                .count();
            checks.extend([
                (services, l.services, self.services[i], f.services(i)),
                (backends, l.backends, used_backends, new_backends),
                (rev_nat, l.rev_nat, self.rev_nat[i], f.frontends(i)),
                (src_range, l.src_range, self.ranges[i], f.ranges(i)),
            ]);
        }
        for (map, max, used, needed) in checks {
            if needed > max {
                return Err(format!(
                    "map {map} too small: the service needs {needed} entries, \
                     the map holds {max} (raise its --bpf-lb-*-map-max)"
                ));
            }
            if used + needed > max {
                return Err(format!(
                    "map {map} is full: the service needs {needed} entries, \
                     {used} of {max} are taken by the services admitted before it"
                ));
            }
        }
        for i in 0..2 {
            self.services[i] += f.services(i);
            self.rev_nat[i] += f.frontends(i);
            self.ranges[i] += f.ranges(i);
        }
        self.maglev += f.maglev.len();
        for b in &f.backends {
            if self.backends.insert(*b) {
                self.backend_count[fam(b.addr)] += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::{
        BackendParams, FrontendParams, FrontendType, L3n4Addr, L4Proto, NodeConfig, Service,
    };

    fn svc(name: &str, ip: &str, backends: usize) -> DesiredState {
        let node = NodeConfig::new("n", vec!["192.168.10.1".parse().unwrap()]);
        let mut s = Service::new(name.parse().unwrap());
        s.frontends.push(FrontendParams::new(
            L3n4Addr::new(ip.parse().unwrap(), 80, L4Proto::Tcp),
            FrontendType::ClusterIp,
        ));
        for i in 0..backends {
            s.backends.push(BackendParams::new(L3n4Addr::new(
                format!("10.0.{}.{}", i / 250, i % 250 + 1).parse().unwrap(),
                8080,
                L4Proto::Tcp,
            )));
        }
        DesiredState::build(&node, &[s]).unwrap()
    }

    fn limits(services: usize, backends: usize) -> MapLimits {
        MapLimits {
            services,
            backends,
            rev_nat: 100,
            maglev: 10,
            src_range: 10,
        }
    }

    #[test]
    fn a_service_larger_than_a_map_is_refused_and_takes_nothing() {
        let mut b = Budget::new(limits(10, 100));
        let big = Footprint::of(&svc("default/big", "10.96.0.1", 12));
        let e = b.admit(&big).unwrap_err();
        assert!(e.contains("lb4_services too small"), "{e}");
        assert!(
            e.contains("needs 13 entries") && e.contains("holds 10"),
            "{e}"
        );
        // Nothing was taken: a service that fits still does.
        let small = Footprint::of(&svc("default/small", "10.96.0.2", 9));
        b.admit(&small).unwrap();
    }

    #[test]
    fn a_full_map_refuses_the_next_service_only() {
        let mut b = Budget::new(limits(100, 5));
        b.admit(&Footprint::of(&svc("default/a", "10.96.0.1", 3)))
            .unwrap();
        // Shares its 3 backends with a: needs no new backend entry.
        b.admit(&Footprint::of(&svc("default/b", "10.96.0.2", 3)))
            .unwrap();
        let e = b
            .admit(&Footprint::of(&svc("default/c", "10.96.0.3", 6)))
            .unwrap_err();
        assert!(e.contains("lb4_backends is full"), "{e}");
        assert!(e.contains("needs 3 entries, 3 of 5"), "{e}");
    }

    #[test]
    fn a_changed_service_is_charged_its_peak() {
        let old = Footprint::of(&svc("default/a", "10.96.0.1", 8));
        let new = Footprint::of(&svc("default/a", "10.96.0.1", 2));
        let peak = new.during_change_from(&old);
        assert_eq!(peak.services(0), 9);
        assert_eq!(peak.backends.len(), 8);
    }

    #[test]
    fn each_family_has_its_own_maps() {
        // 2 x 4 service entries per family fit maps of 10 entries each; a
        // third IPv6 service does not, an IPv4 one still does.
        let node = NodeConfig::new(
            "n",
            vec!["192.168.10.1".parse().unwrap(), "fd00::1".parse().unwrap()],
        );
        let v6 = |name: &str, vip: &str| {
            let mut s = Service::new(name.parse().unwrap());
            s.frontends.push(FrontendParams::new(
                L3n4Addr::new(vip.parse().unwrap(), 80, L4Proto::Tcp),
                FrontendType::ClusterIp,
            ));
            for i in 1..=3u16 {
                s.backends.push(BackendParams::new(L3n4Addr::new(
                    format!("fd00:200::{i}").parse().unwrap(),
                    8080,
                    L4Proto::Tcp,
                )));
            }
            DesiredState::build(&node, &[s]).unwrap()
        };
        let mut b = Budget::new(limits(10, 100));
        for (name, ip) in [("default/a", "10.96.0.1"), ("default/b", "10.96.0.2")] {
            b.admit(&Footprint::of(&svc(name, ip, 3))).unwrap();
        }
        for (name, ip) in [("default/c", "fd00:96::1"), ("default/d", "fd00:96::2")] {
            b.admit(&Footprint::of(&v6(name, ip))).unwrap();
        }
        let e = b
            .admit(&Footprint::of(&v6("default/e", "fd00:96::3")))
            .unwrap_err();
        assert!(e.contains("lb6_services is full"), "{e}");
        let e = b
            .admit(&Footprint::of(&svc("default/f", "10.96.0.3", 3)))
            .unwrap_err();
        assert!(e.contains("lb4_services is full"), "{e}");
        let mut b = Budget::new(limits(100, 100));
        b.admit(&Footprint::of(&v6("default/c", "fd00:96::1")))
            .unwrap();
        assert_eq!((b.services, b.backend_count), ([0, 4], [0, 3]));
    }
}
