//! Builds a small cluster's services, reconciles them onto the in-memory
//! dataplane, prints what would be programmed (like `cilium service list`)
//! and where a few flows would go.
//!
//! Run with `cargo run -p lb-core --example quickstart`.

use lb_core::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut node = NodeConfig::new("node-1", vec!["192.168.1.10".parse()?]);
    node.algorithm = LbAlgorithm::Maglev;

    let mut web = Service::new("default/web".parse()?);
    web.frontends.push(FrontendParams::new(
        "10.96.0.10:80".parse()?,
        FrontendType::ClusterIp,
    ));
    web.frontends.push(FrontendParams::new(
        "0.0.0.0:30080".parse()?,
        FrontendType::NodePort,
    ));
    web.frontends.push(FrontendParams::new(
        "203.0.113.7:80".parse()?,
        FrontendType::LoadBalancer,
    ));
    for (ip, state) in [
        ("10.0.1.5", BackendState::Active),
        ("10.0.2.5", BackendState::Active),
        ("10.0.3.5", BackendState::Terminating),
    ] {
        web.backends
            .push(BackendParams::new(format!("{ip}:8080").parse()?).with_state(state));
    }
    let mut dns = Service::new("kube-system/kube-dns".parse()?);
    dns.frontends.push(FrontendParams::new(
        "10.96.0.53:53/UDP".parse()?,
        FrontendType::ClusterIp,
    ));
    dns.backends
        .push(BackendParams::new("10.0.1.9:53/UDP".parse()?));
    dns.session_affinity = SessionAffinity::client_ip();

    let desired = DesiredState::build(&node, &[web, dns])?;
    let mut dataplane = MemoryDataplane::new();
    let mut reconciler = Reconciler::new();
    let n = reconciler.apply(&mut dataplane, &desired)?;
    println!("applied {n} dataplane operations:");
    for op in dataplane.log() {
        println!("  {op}");
    }

    println!(
        "\n{:<4}{:<22}{:<14}{:<6}Backend",
        "ID", "Frontend", "Service Type", "Proto"
    );
    for fe in dataplane.tables().frontends.values() {
        let proto = fe.key.addr.proto.to_string();
        let frontend = fe.key.addr.host_port().to_string();
        let mut first = true;
        for (i, slot) in fe.backends.iter().enumerate() {
            let b = &dataplane.tables().backends[&slot.id];
            let backend = format!("{} => {} ({})", i + 1, b.addr.host_port(), slot.state);
            if first {
                println!(
                    "{:<4}{frontend:<22}{:<14}{proto:<6}{backend}",
                    fe.id.0,
                    fe.kind.as_str()
                );
                first = false;
            } else {
                println!("{:<46}{backend}", "");
            }
        }
    }

    println!("\nflows:");
    let mut flows = FlowState::new();
    for (src, dst, dport) in [
        ("10.0.9.1", "10.96.0.10", 80),
        ("10.0.9.2", "192.168.1.10", 30080),
        ("10.0.9.3", "127.0.0.1", 30080),
        ("10.0.9.4", "203.0.113.7", 80),
    ] {
        let key = FlowKey {
            src: src.parse()?,
            sport: 40000,
            dst: dst.parse()?,
            dport,
            proto: L4Proto::Tcp,
        };
        let ctx = FlowContext {
            now: 0,
            entropy: 0,
            scope: Scope::External,
        };
        let verdict = decide(dataplane.tables(), &node, &mut flows, &key, ctx);
        match verdict {
            Verdict::Forward(f) => println!(
                "  {src} -> {}  =>  backend {} (service {}, {:?})",
                f.frontend.host_port(),
                f.backend.host_port(),
                f.service,
                f.selection
            ),
            other => println!("  {src} -> {dst}:{dport}  =>  {other:?}"),
        }
    }
    Ok(())
}
