//! Privileged integration tests of the fixtures themselves. They need root
//! and fail loudly (never skip) without it. Safe to run in parallel.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lb_testkit::cgroup::{cgroup2_mount, CgroupError, CgroupGuard};
use lb_testkit::{
    ensure_bpffs, is_bpffs, require_privileges, tcp_connect, tcp_request, udp_request, BpffsGuard,
    EchoServer, NetNs, Topology, VethPair,
};

const TIMEOUT: Duration = Duration::from_secs(5);

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_netns_gone(names: &[String]) {
    let list = netns_list();
    for n in names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str())),
            "namespace {n} still listed:\n{list}"
        );
        assert!(
            !Path::new("/var/run/netns").join(n).exists(),
            "{n} file left"
        );
    }
}

fn mounted(path: &Path) -> bool {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy();
    mi.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(p.as_ref()))
}

fn thread_netns() -> std::path::PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").unwrap()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn topology_routes_client_to_backends_and_cleans_up() {
    require_privileges();
    let topo = Topology::new(2).unwrap();
    assert_eq!(topo.node_client_dev, topo.node_client_link.name);
    assert!(topo.node_client_dev.len() <= 15);
    assert_eq!(topo.node.sysctl("net.ipv4.ip_forward").unwrap(), "1");

    let mut servers = Vec::new();
    for b in &topo.backends {
        let tag = format!("be{}:", b.index + 1);
        for ip in [b.v4.into(), b.v6.into()] {
            let tcp = EchoServer::tcp(&b.ns, SocketAddr::new(ip, 8080), tag.as_bytes()).unwrap();
            let udp = EchoServer::udp(&b.ns, SocketAddr::new(ip, 8081), tag.as_bytes()).unwrap();
            servers.push((tag.clone(), tcp, udp));
        }
    }
    for (tag, tcp, udp) in &servers {
        let reply = tcp_request(&topo.client, tcp.local_addr(), b"hello", TIMEOUT).unwrap();
        assert_eq!(
            reply,
            [tag.as_bytes(), b"hello"].concat(),
            "via {}",
            tcp.local_addr()
        );
        let reply = udp_request(&topo.client, udp.local_addr(), b"ping", TIMEOUT).unwrap();
        assert_eq!(
            reply,
            [tag.as_bytes(), b"ping"].concat(),
            "via {}",
            udp.local_addr()
        );
        assert_eq!((tcp.served(), udp.served()), (1, 1));
    }

    // The backend sees the client's real address (plain routing, no NAT).
    let b0 = &topo.backends[0];
    let listener = b0
        .ns
        .run_in(|| TcpListener::bind((b0.v4, 9000)))
        .unwrap()
        .unwrap();
    let mut conn = tcp_connect(&topo.client, SocketAddr::from((b0.v4, 9000)), TIMEOUT).unwrap();
    let (_, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::from(topo.client_v4));
    conn.write_all(b"x").unwrap();

    // The VIP is routed to the node by the client but goes nowhere without a LB.
    let vip = SocketAddr::from((lb_testkit::topology::VIP_V4, 80));
    assert!(tcp_request(&topo.client, vip, b"x", Duration::from_millis(300)).is_err());

    let names = topo.namespace_names();
    assert_eq!(names.len(), 4);
    drop(conn);
    drop(servers);
    drop(topo);
    assert_netns_gone(&names);
}

#[test]
fn enter_guard_runs_a_listener_inside_and_restores() {
    require_privileges();
    let a = NetNs::with_label("a").unwrap();
    let b = NetNs::with_label("b").unwrap();
    let pair = VethPair::builder(&a, &b)
        .mac_a([0x02, 0, 0, 0, 0xaa, 0x01])
        .mac_b([0x02, 0, 0, 0, 0xbb, 0x01])
        .addr_a("10.77.0.1/24")
        .addr_a("fd00:77::1/64")
        .addr_b("10.77.0.2/24")
        .addr_b("fd00:77::2/64")
        .create()
        .unwrap();
    assert_eq!(pair.a.mac, [0x02, 0, 0, 0, 0xaa, 0x01]);
    assert_eq!(pair.b.mac, [0x02, 0, 0, 0, 0xbb, 0x01]);
    assert_eq!(pair.a.netns, a.name());
    assert_eq!(b.link(&pair.b.name).unwrap(), pair.b);
    assert!(pair.a.ifindex > 1 && pair.b.ifindex > 1);

    let before = thread_netns();
    let listener = {
        let _guard = b.enter().unwrap();
        assert_ne!(thread_netns(), before, "enter() did not switch");
        TcpListener::bind("[fd00:77::2]:7000").unwrap()
    };
    assert_eq!(thread_netns(), before, "guard did not restore the netns");

    // The listener lives in `b` even though this thread is back home.
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        peer
    });
    let mut c = tcp_connect(&a, "[fd00:77::2]:7000".parse().unwrap(), TIMEOUT).unwrap();
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(
        server.join().unwrap().ip(),
        "fd00:77::1".parse::<std::net::IpAddr>().unwrap()
    );

    // run_in restores even when the closure panics.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.run_in(|| panic!("boom")).unwrap();
    }));
    assert!(r.is_err());
    assert_eq!(thread_netns(), before);

    let names = vec![a.name().to_owned(), b.name().to_owned()];
    drop((a, b));
    assert_netns_gone(&names);
}

#[test]
fn netns_exec_spawn_and_process_cleanup() {
    require_privileges();
    let ns = NetNs::new().unwrap();
    assert!(ns.path().exists());
    assert!(netns_list().contains(ns.name()));

    let out = ns.exec(&["ip", "-o", "link"]).unwrap();
    assert!(out.status.success());
    let links = String::from_utf8_lossy(&out.stdout);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    // nsenter keeps the host's /sys (ip netns exec would remount it).
    let cg = cgroup2_mount().unwrap();
    let out = ns.exec(&["ls", &cg.to_string_lossy()]).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("cgroup.procs"));

    ns.set_sysctl("net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(ns.sysctl("net.ipv4.ip_forward").unwrap(), "1");

    // A guarded background child, and an orphan nobody tracks.
    let mut child = ns.spawn(&["sleep", "1000"]).unwrap();
    let orphan: u32 = ns
        .exec_ok(&["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("pids in namespace", || {
        let pids = ns.pids().unwrap();
        pids.contains(&child.pid()) && pids.contains(&orphan)
    });
    let name = ns.name().to_owned();
    drop(ns);
    assert_netns_gone(&[name]);
    wait_until("guarded child killed", || {
        child.child_mut().try_wait().unwrap().is_some()
    });
    wait_until("orphan killed", || {
        // Gone, or a zombie waiting for its (non-test) reaper.
        std::fs::read_to_string(format!("/proc/{orphan}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    });
}

#[test]
fn parallel_topologies_do_not_collide() {
    require_privileges();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let topo = Topology::new(1).unwrap();
                let b = &topo.backends[0];
                let tag = format!("t{i}:");
                let srv =
                    EchoServer::tcp(&b.ns, SocketAddr::from((b.v6, 80)), tag.as_bytes()).unwrap();
                let r = tcp_request(&topo.client, srv.local_addr(), b"q", TIMEOUT).unwrap();
                assert_eq!(r, [tag.as_bytes(), b"q"].concat());
                topo.namespace_names()
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    let mut dedup = all.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), all.len(), "namespace names collided");
    assert_netns_gone(&all);
}

#[test]
fn cgroup_guard_creates_moves_and_removes() {
    require_privileges();
    let mount = cgroup2_mount().unwrap();
    let cg = CgroupGuard::with_label("t").unwrap();
    let path = cg.path().to_owned();
    assert!(path.starts_with(&mount) && path != mount);
    assert!(path.join("cgroup.procs").exists());
    assert!(cg.id().unwrap() > 1);

    let mut sleeper = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = sleeper.id();
    cg.add_pid(pid).unwrap();
    assert_eq!(cg.procs().unwrap(), vec![pid]);
    let child = cg.child("sub").unwrap();
    child.add_pid(pid).unwrap();
    assert!(cg.procs().unwrap().is_empty());
    let child_path = child.path().to_owned();
    // Leak the child guard's cleanup into the parent guard's drop.
    std::mem::forget(child);

    drop(cg);
    assert!(!child_path.exists());
    assert!(!path.exists(), "cgroup dir left behind");
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let rel = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    assert!(
        !rel.contains("lbt-"),
        "process still in a test cgroup: {rel}"
    );
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();

    // Never the root cgroup.
    assert!(matches!(
        CgroupGuard::adopt(&mount),
        Err(CgroupError::RootCgroup(_))
    ));
    assert!(matches!(
        CgroupGuard::adopt("/tmp"),
        Err(CgroupError::NotInCgroup2 { .. })
    ));
}

#[test]
fn bpffs_guard_mounts_and_unmounts() {
    require_privileges();
    let g = BpffsGuard::new().unwrap();
    let path = g.path().to_owned();
    assert!(is_bpffs(&path).unwrap());
    assert!(mounted(&path));
    assert!(!is_bpffs(std::env::temp_dir()).unwrap());
    // A second guard is a distinct instance.
    let g2 = BpffsGuard::new().unwrap();
    assert_ne!(g2.path(), g.path());
    drop(g);
    drop(g2);
    assert!(!mounted(&path));
    assert!(!path.exists());

    // ensure_bpffs mounts once, then recognises the mount.
    let dir = std::env::temp_dir().join(lb_testkit::unique_name("lbtens"));
    assert!(ensure_bpffs(&dir).unwrap());
    assert!(!ensure_bpffs(&dir).unwrap());
    assert!(is_bpffs(&dir).unwrap());
    let st = Command::new("umount").arg("-l").arg(&dir).status().unwrap();
    assert!(st.success());
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn cleanup_stale_removes_leftovers_of_dead_processes_only() {
    require_privileges();
    // A pid that certainly belonged to a process that has exited.
    let mut c = Command::new("true").spawn().unwrap();
    let dead = c.id();
    c.wait().unwrap();
    let stale_ns = format!("lbt-stale-{dead}-0");
    let live_ns = format!("lbt-live-{}-999999", std::process::id());
    for n in [&stale_ns, &live_ns] {
        assert!(Command::new("ip")
            .args(["netns", "add", n])
            .status()
            .unwrap()
            .success());
    }
    let mount = cgroup2_mount().unwrap();
    let stale_cg = mount.join(format!("lbt-stale-{dead}-0"));
    std::fs::create_dir(&stale_cg).unwrap();

    assert!(lb_testkit::cleanup_stale() >= 2);
    assert_netns_gone(&[stale_ns]);
    assert!(!stale_cg.exists());
    assert!(
        netns_list().contains(&live_ns),
        "live namespace was removed"
    );
    assert!(Command::new("ip")
        .args(["netns", "del", &live_ns])
        .status()
        .unwrap()
        .success());
}

#[test]
fn topology_is_cleaned_up_when_a_test_panics() {
    require_privileges();
    let mut names = Vec::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let topo = Topology::new(1).unwrap();
        names = topo.namespace_names();
        panic!("simulated test failure");
    }));
    assert!(r.is_err());
    assert_eq!(names.len(), 3);
    assert_netns_gone(&names);
}
