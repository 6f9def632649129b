//! All-or-nothing writes: a batch the kernel refuses midway leaves the maps
//! as they were, and a load that fails on a later interface leaves no link
//! of its own attached. Privileged (root).

mod common;

use aya::programs::{tc::TcAttachType, SchedClassifier};
use common::*;
use lb_core::*;
use lb_ebpf::abi::LbSvcMeta;
use lb_ebpf::{LoadError, LoadOptions, MapCapacity, Maps};
use lb_testkit::{BpffsGuard, NetNs};

/// Everything `apply` writes, as sorted debug lines.
fn snapshot(maps: &Maps) -> Vec<String> {
    fn lines<K: std::fmt::Debug, V: std::fmt::Debug>(
        tag: &str,
        it: impl Iterator<Item = Result<(K, V), aya::maps::MapError>>,
    ) -> Vec<String> {
        let mut v: Vec<String> = it
            .map(|r| {
                let (k, v) = r.unwrap();
                format!("{tag} {k:?} = {v:?}")
            })
            .collect();
        v.sort();
        v
    }
    let mut out = Vec::new();
    out.extend(lines("svc", maps.services.iter()));
    out.extend(lines("be", maps.backends.iter()));
    out.extend(lines("revnat", maps.rev_nat.iter()));
    out.extend(lines("svc6", maps.services6.iter()));
    out.extend(lines("be6", maps.backends6.iter()));
    out.extend(lines("revnat6", maps.rev_nat6.iter()));
    out.extend(lines("svcmeta", maps.svc_meta.iter()));
    out.extend(lines("bemeta", maps.be_meta.iter()));
    let mut keys: Vec<String> = maps
        .maglev
        .keys()
        .map(|k| format!("maglev {:?}", k.unwrap()))
        .chain(maps.src_range.keys().map(|k| {
            let k = k.unwrap();
            format!("range {:?}/{}", k.data(), k.prefix_len())
        }))
        .chain(maps.src_range6.keys().map(|k| {
            let k = k.unwrap();
            format!("range6 {:?}/{}", k.data(), k.prefix_len())
        }))
        .collect();
    keys.sort();
    out.extend(keys);
    // The counters too: a slot the batch freed and handed out again (zeroed)
    // gets its counters back.
    out.extend(counter_lines(maps));
    out
}

/// A fixture for `node` with small service tables: the metadata map (not
/// counted by the capacity check, which knows only the services map) can
/// be filled up.
fn small_services_fixture(node: NodeConfig) -> Fixture {
    Fixture::with_capacity(
        node,
        MapCapacity {
            services: 64,
            ..MapCapacity::default()
        },
    )
}

#[test]
fn a_batch_the_kernel_refuses_midway_is_rolled_back() {
    lb_testkit::require_privileges();
    let node = NodeConfig::new("node-1", vec![ip(NODE_IP)]);
    let mut fx = small_services_fixture(node);
    let mut web = service(
        "default/web",
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &["10.0.1.5:8080", "10.0.1.6:8080"],
    );
    web.source_ranges = vec!["192.168.5.0/24".parse().unwrap()];
    fx.apply(&[web.clone()]);

    // Fill the metadata map with entries of no frontend.
    let junk = LbSvcMeta::new("junk/junk").unwrap();
    let mut id = 1000u32;
    while fx.dp.maps().svc_meta.insert(id, junk, 0).is_ok() {
        id += 1;
    }
    assert!(id > 1000);
    // Traffic to both backends, so that their counters are not zero.
    for port in 40000..40008u16 {
        let frame = tcp(&format!("192.168.5.2:{port}"), "10.96.0.10:80");
        assert_eq!(fx.ingress(&frame).0, TC_ACT_OK);
    }
    let before = snapshot(fx.dp.maps());

    // Change the existing frontend (backends, ranges, Maglev) and add one:
    // the new frontend's metadata write fails.
    let mut web2 = service(
        "default/web",
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &["10.0.1.6:8080", "10.0.1.7:8080", "10.0.1.8:8080"],
    );
    web2.source_ranges = vec!["192.168.6.0/24".parse().unwrap()];
    web2.algorithm = Some(LbAlgorithm::Maglev);
    let mut api = service(
        "default/api",
        &[("10.96.0.20:443", FrontendType::ClusterIp)],
        &["10.0.2.5:8443"],
    );
    api.algorithm = Some(LbAlgorithm::Maglev);
    let desired = DesiredState::build(&fx.node, &[web2.clone(), api.clone()]).unwrap();
    let err = fx.rec.apply(&mut fx.dp, &desired).unwrap_err();
    assert!(
        matches!(
            err,
            ReconcileError::Dataplane(DataplaneError::System { .. })
        ),
        "{err}"
    );
    assert_eq!(snapshot(fx.dp.maps()), before, "every write undone");

    // The datapath still serves the old state.
    let (rv, out) = fx.ingress(&tcp("192.168.5.2:40000", "10.96.0.10:80"));
    assert_eq!(rv, TC_ACT_OK);
    let be = endpoints(&out).1;
    assert!(
        be == sa("10.0.1.5:8080") || be == sa("10.0.1.6:8080"),
        "{be}"
    );

    // With room again, the same batch applies.
    for junk_id in 1000..id {
        fx.dp.maps().svc_meta.remove(&junk_id).unwrap();
    }
    fx.rec
        .apply(&mut fx.dp, &desired)
        .expect("apply after the failure");
    let (rv, out) = fx.ingress(&tcp("192.168.6.2:40000", "10.96.0.20:443"));
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(endpoints(&out).1, sa("10.0.2.5:8443"));
}

/// The number of entries of the IPv6 maps in a snapshot.
fn lb6_lines(snap: &[String]) -> usize {
    snap.iter()
        .filter(|l| {
            ["svc6 ", "be6 ", "revnat6 ", "range6 "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .count()
}

/// A batch that rewrites a dual-stack service's IPv6 frontends (backends,
/// source ranges, Maglev) and adds IPv6 and IPv4 frontends, refused by the
/// kernel midway, leaves every map (the `lb6_*` ones included) as it was.
/// Bounded: a handful of map writes.
#[test]
fn a_batch_with_ipv6_entries_refused_midway_is_rolled_back() {
    lb_testkit::require_privileges();
    let node = NodeConfig::new("node-1", vec![ip(NODE_IP), ip("fd00:1::10")]);
    let mut fx = small_services_fixture(node);
    let mut web = service(
        "default/web",
        &[
            ("10.96.0.10:80", FrontendType::ClusterIp),
            ("[fd00:96::10]:80", FrontendType::ClusterIp),
            ("[::]:30080", FrontendType::NodePort),
            ("[2001:db8:1::7]:80", FrontendType::LoadBalancer),
        ],
        &[
            "10.0.1.5:8080",
            "[fd00:a::5]:8080",
            "[fd00:a::6]:8080",
            "[fd00:a::7]:8080",
        ],
    );
    web.source_ranges = vec![
        "fd00:c::/64".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    fx.apply(&[web.clone()]);

    let junk = LbSvcMeta::new("junk/junk").unwrap();
    let mut id = 1000u32;
    while fx.dp.maps().svc_meta.insert(id, junk, 0).is_ok() {
        id += 1;
    }
    assert!(id > 1000);
    let before = snapshot(fx.dp.maps());
    assert!(lb6_lines(&before) > 10, "{before:#?}");

    // Fewer IPv6 backends (stale slots), other ranges, Maglev, and a new
    // service whose metadata write fails.
    let mut web2 = service(
        "default/web",
        &[
            ("10.96.0.10:80", FrontendType::ClusterIp),
            ("[fd00:96::10]:80", FrontendType::ClusterIp),
            ("[::]:30080", FrontendType::NodePort),
            ("[2001:db8:1::7]:80", FrontendType::LoadBalancer),
        ],
        &["10.0.1.5:8080", "[fd00:a::6]:8080", "[fd00:a::8]:8080"],
    );
    web2.source_ranges = vec!["fd00:d::/48".parse().unwrap()];
    web2.algorithm = Some(LbAlgorithm::Maglev);
    let mut api = service(
        "default/api",
        &[
            ("[fd00:96::20]:443", FrontendType::ClusterIp),
            ("10.96.0.20:443", FrontendType::ClusterIp),
        ],
        &["[fd00:b::5]:8443", "10.0.2.5:8443"],
    );
    api.algorithm = Some(LbAlgorithm::Maglev);
    let desired = DesiredState::build(&fx.node, &[web2.clone(), api.clone()]).unwrap();
    let plan = fx.rec.plan(&desired).unwrap();
    assert!(
        plan.ops.iter().any(|op| matches!(op,
            Op::UpsertFrontend(f) if f.service.name == "web" && f.key.addr.addr.is_ipv6())),
        "the batch rewrites IPv6 frontends"
    );
    let err = fx.rec.apply(&mut fx.dp, &desired).unwrap_err();
    assert!(
        matches!(
            err,
            ReconcileError::Dataplane(DataplaneError::System { .. })
        ),
        "{err}"
    );
    assert_eq!(snapshot(fx.dp.maps()), before, "every write undone");

    // With room again, the same batch applies and the IPv6 maps change.
    for junk_id in 1000..id {
        fx.dp.maps().svc_meta.remove(&junk_id).unwrap();
    }
    fx.rec
        .apply(&mut fx.dp, &desired)
        .expect("apply after the failure");
    let after = snapshot(fx.dp.maps());
    assert!(
        after
            .iter()
            .any(|l| l.starts_with("range6 ") && l.contains("253, 0, 0, 13")),
        "{after:#?}"
    );
    assert_ne!(after, before);
}

#[test]
fn a_load_failing_on_a_later_interface_detaches_what_it_attached() {
    lb_testkit::require_privileges();
    let ns = NetNs::new().expect("netns");
    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let opts = LoadOptions::new(&pin_dir, &["lo", "nosuchdev0"]);
    let err = ns
        .run_in(|| lb_ebpf::load(&opts))
        .unwrap()
        .expect_err("the second interface does not exist");
    assert!(
        matches!(err, LoadError::NoInterface(ref d) if d == "nosuchdev0"),
        "{err}"
    );
    let links: Vec<_> = std::fs::read_dir(pin_dir.join("links"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(links.is_empty(), "links left pinned: {links:?}");
    // And the kernel has nothing attached to lo either.
    // (A link goes once its last reference does, which the kernel may
    // finish a moment after the unpin.)
    for attach in [TcAttachType::Ingress, TcAttachType::Egress] {
        let attached = || {
            ns.run_in(|| SchedClassifier::query_tcx("lo", attach))
                .unwrap()
                .expect("query tcx")
                .1
                .len()
        };
        let start = std::time::Instant::now();
        while attached() > 0 && start.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(attached(), 0, "{attach:?}: programs left attached");
    }
    lb_ebpf::cleanup(&pin_dir).expect("cleanup");
}
