//! Bad input: every invalid desired state gets a typed error naming the
//! service and field, and the programmed state stays as it was.

use lb_core::*;

fn node() -> NodeConfig {
    NodeConfig::new("node-a", vec!["192.168.1.10".parse().unwrap()])
}

fn svc(name: &str, frontend: &str, kind: FrontendType) -> Service {
    let mut s = Service::new(name.parse().unwrap());
    s.frontends
        .push(FrontendParams::new(frontend.parse().unwrap(), kind));
    s.backends
        .push(BackendParams::new("10.0.0.1:8080".parse().unwrap()));
    s
}

fn err(services: &[Service]) -> ConfigError {
    DesiredState::build(&node(), services).unwrap_err()
}

#[test]
fn port_zero() {
    let e = err(&[svc("ns/a", "10.96.0.1:0", FrontendType::ClusterIp)]);
    assert!(matches!(e, ConfigError::PortZero { .. }));
    assert!(e.to_string().contains("ns/a"), "{e}");
    let mut s = svc("ns/b", "10.96.0.1:80", FrontendType::ClusterIp);
    s.backends[0].addr.port = 0;
    assert!(matches!(err(&[s]), ConfigError::InvalidBackend { .. }));
}

#[test]
fn nodeport_out_of_range_and_configurable_range() {
    let s = svc("ns/a", "0.0.0.0:8080", FrontendType::NodePort);
    let e = err(std::slice::from_ref(&s));
    assert_eq!(
        e.to_string(),
        "service ns/a: nodePort 8080 is outside the NodePort range 30000-32767"
    );
    let mut n = node();
    n.nodeport_range = 8000..=9000;
    assert!(DesiredState::build(&n, &[s]).is_ok());
    n.nodeport_range = 0..=10;
    assert!(matches!(
        DesiredState::build(&n, &[]),
        Err(ConfigError::InvalidNodePortRange { .. })
    ));
}

#[test]
fn duplicate_frontend_across_services() {
    let e = err(&[
        svc("ns/a", "10.96.0.1:80", FrontendType::ClusterIp),
        svc("ns/b", "10.96.0.1:80", FrontendType::ExternalIp),
    ]);
    assert_eq!(
        e.to_string(),
        "frontend 10.96.0.1:80/TCP of service ns/b is already used by service ns/a"
    );
    // Same address, another protocol, is a different frontend.
    assert!(DesiredState::build(
        &node(),
        &[
            svc("ns/a", "10.96.0.1:80/TCP", FrontendType::ClusterIp),
            svc("ns/b", "10.96.0.1:80/UDP", FrontendType::ClusterIp),
        ]
    )
    .is_ok());
    // A NodePort expands onto the node IP, which an externalIP may not reuse.
    let e = err(&[
        svc("ns/a", "0.0.0.0:30001", FrontendType::NodePort),
        svc("ns/b", "192.168.1.10:30001", FrontendType::ExternalIp),
    ]);
    assert!(matches!(e, ConfigError::DuplicateFrontend { .. }));
}

#[test]
fn no_frontends_and_duplicate_service() {
    let e = err(&[Service::new("ns/empty".parse().unwrap())]);
    assert_eq!(e.to_string(), "service ns/empty: no frontends");
    let a = svc("ns/a", "10.96.0.1:80", FrontendType::ClusterIp);
    let mut b = svc("ns/a", "10.96.0.2:80", FrontendType::ClusterIp);
    b.backends.clear();
    assert!(matches!(err(&[a, b]), ConfigError::DuplicateService { .. }));
}

#[test]
fn unspecified_and_multicast_frontends() {
    assert!(matches!(
        err(&[svc("ns/a", "0.0.0.0:80", FrontendType::ClusterIp)]),
        ConfigError::InvalidFrontendAddress { .. }
    ));
    assert!(matches!(
        err(&[svc("ns/a", "224.0.0.1:80", FrontendType::LoadBalancer)]),
        ConfigError::InvalidFrontendAddress { .. }
    ));
}

#[test]
fn unknown_protocol_and_bad_addresses_do_not_parse() {
    assert!(matches!(
        "10.0.0.1:80/ICMP".parse::<L3n4Addr>(),
        Err(ParseError::UnknownProtocol(_))
    ));
    assert!(matches!(
        "10.0.0.1".parse::<L3n4Addr>(),
        Err(ParseError::Address(_))
    ));
    assert!("noslash".parse::<ServiceName>().is_err());
}

#[test]
fn affinity_timeout_limits() {
    let mut s = svc("ns/a", "10.96.0.1:80", FrontendType::ClusterIp);
    s.session_affinity = SessionAffinity::ClientIp { timeout_secs: 0 };
    assert!(matches!(
        err(std::slice::from_ref(&s)),
        ConfigError::InvalidAffinityTimeout { seconds: 0, .. }
    ));
    s.session_affinity = SessionAffinity::ClientIp {
        timeout_secs: 86_401,
    };
    assert!(matches!(
        err(&[s]),
        ConfigError::InvalidAffinityTimeout { .. }
    ));
}

#[test]
fn more_backends_than_the_table_allows() {
    let mut n = node();
    n.maglev = MaglevConfig::new(251, 0).unwrap();
    let mut s = svc("ns/a", "10.96.0.1:80", FrontendType::ClusterIp);
    s.algorithm = Some(LbAlgorithm::Maglev);
    s.backends = (0..300u32)
        .map(|i| {
            BackendParams::new(lb_core::L3n4Addr::new(
                std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
                80,
                L4Proto::Tcp,
            ))
        })
        .collect();
    let e = DesiredState::build(&n, std::slice::from_ref(&s)).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::TooManyBackends {
                count: 300,
                max: 251,
                ..
            }
        ),
        "{e}"
    );
    n.max_backends_per_frontend = 100;
    s.algorithm = Some(LbAlgorithm::Random);
    assert!(matches!(
        DesiredState::build(&n, &[s]).unwrap_err(),
        ConfigError::TooManyBackends { max: 100, .. }
    ));
}

#[test]
fn an_invalid_update_leaves_the_programmed_state_untouched() {
    let node = node();
    let good = vec![svc("ns/a", "10.96.0.1:80", FrontendType::ClusterIp)];
    let mut dp = MemoryDataplane::new();
    let mut rec = Reconciler::new();
    rec.apply(&mut dp, &DesiredState::build(&node, &good).unwrap())
        .unwrap();
    let before = rec.current().clone();
    let bad = vec![
        svc("ns/a", "10.96.0.1:80", FrontendType::ClusterIp),
        svc("ns/b", "10.96.0.1:80", FrontendType::ClusterIp),
    ];
    assert!(DesiredState::build(&node, &bad).is_err());
    // Nothing reached the reconciler or the dataplane.
    assert!(rec.current() == &before);
    assert_eq!(dp.tables(), &before);
}
