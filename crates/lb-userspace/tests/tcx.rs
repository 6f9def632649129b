//! The I/O loop's drop of the original frames ([`lb_userspace::tcx`]):
//! it drops IPv4, and IPv6 but neighbour discovery, only while its owner
//! lives — also when the owner is killed with SIGKILL — and leaves other tc
//! configuration alone. Privileged.

use std::net::SocketAddr;
use std::time::Duration;

use lb_testkit::netns::NetNs;
use lb_testkit::veth::VethBuilder;
use lb_testkit::{udp_request, EchoServer};
use lb_userspace::io::{Device, IoLoop, Role};
use lb_userspace::tcx::{ingress_programs, TcxDrop};
use lb_userspace::{Config, UserspaceDataplane};

struct Pair {
    client: NetNs,
    server: NetNs,
    dev: String,
    ifindex: u32,
    _echo: EchoServer,
    _echo6: EchoServer,
}

fn pair() -> Pair {
    let client = NetNs::with_label("tcxc").expect("netns");
    let server = NetNs::with_label("tcxs").expect("netns");
    let veth = VethBuilder::new(&client, &server)
        .addr_a("10.77.0.1/24")
        .addr_b("10.77.0.2/24")
        .addr_a("fd00:77::1/64")
        .addr_b("fd00:77::2/64")
        .create()
        .expect("veth");
    let echo = EchoServer::udp(&server, "10.77.0.2:9000".parse().unwrap(), b"echo:").unwrap();
    let echo6 = EchoServer::udp(&server, "[fd00:77::2]:9000".parse().unwrap(), b"echo:").unwrap();
    Pair {
        client,
        server,
        dev: veth.b.name.clone(),
        ifindex: veth.b.ifindex,
        _echo: echo,
        _echo6: echo6,
    }
}

fn reaches6(p: &Pair) -> bool {
    let dst: SocketAddr = "[fd00:77::2]:9000".parse().unwrap();
    udp_request(&p.client, dst, b"hi", Duration::from_millis(400)).is_ok()
}

fn reaches(p: &Pair) -> bool {
    let dst: SocketAddr = "10.77.0.2:9000".parse().unwrap();
    udp_request(&p.client, dst, b"hi", Duration::from_millis(400)).is_ok()
}

fn programs(p: &Pair) -> u32 {
    p.server
        .run_in(|| ingress_programs(p.ifindex))
        .unwrap()
        .expect("BPF_PROG_QUERY")
}

#[test]
fn tcx_drop_blocks_ipv4_but_not_arp_while_it_is_held() {
    lb_testkit::require_privileges();
    let p = pair();
    assert!(reaches(&p), "baseline");
    assert_eq!(programs(&p), 0);
    let held = p
        .server
        .run_in(|| TcxDrop::attach(p.ifindex))
        .unwrap()
        .expect("attach");
    assert_eq!(programs(&p), 1);
    assert!(!reaches(&p), "IPv4 still delivered");
    // ARP (not IPv4) still passes: flush the neighbour entry and resolve it again.
    p.client.ip(&["neigh", "flush", "all"]).unwrap();
    assert!(!reaches(&p)); // resolves the neighbour first
    let neigh = p.client.ip(&["neigh", "show", "10.77.0.2"]).unwrap();
    assert!(
        !neigh.contains("FAILED") && !neigh.contains("INCOMPLETE") && !neigh.is_empty(),
        "ARP blocked: {neigh:?}"
    );
    drop_and_check(held, &p);
}

#[test]
fn tcx_drop_blocks_ipv6_udp_but_not_neighbour_discovery() {
    lb_testkit::require_privileges();
    let p = pair();
    assert!(reaches6(&p), "baseline");
    let held = p
        .server
        .run_in(|| TcxDrop::attach(p.ifindex))
        .unwrap()
        .expect("attach");
    assert!(!reaches6(&p), "IPv6 UDP still delivered");
    // Neighbour discovery (ICMPv6) still passes: flush and resolve again.
    p.client.ip(&["-6", "neigh", "flush", "all"]).unwrap();
    assert!(!reaches6(&p)); // resolves the neighbour first
    let neigh = p.client.ip(&["-6", "neigh", "show", "fd00:77::2"]).unwrap();
    assert!(
        !neigh.contains("FAILED") && !neigh.contains("INCOMPLETE") && !neigh.is_empty(),
        "neighbour discovery blocked: {neigh:?}"
    );
    drop(held);
    assert_eq!(programs(&p), 0, "detached with its owner");
    assert!(reaches6(&p), "IPv6 delivered again");
}

fn drop_and_check(held: TcxDrop, p: &Pair) {
    drop(held);
    assert_eq!(programs(p), 0, "detached with its owner");
    assert!(reaches(p), "IPv4 delivered again");
}

#[test]
fn io_loop_leaves_other_tc_config_alone_and_dies_cleanly() {
    lb_testkit::require_privileges();
    let p = pair();
    // Somebody else's clsact qdisc and filter (pass everything).
    let dev = p.dev.as_str();
    p.server
        .exec_ok(&["tc", "qdisc", "add", "dev", dev, "clsact"])
        .unwrap();
    p.server
        .exec_ok(&[
            "tc",
            "filter",
            "add",
            "dev",
            dev,
            "ingress",
            "pref",
            "7",
            "bpf",
            "bytecode",
            "1,6 0 0 0,",
            "da",
        ])
        .unwrap();
    let foreign = |p: &Pair| {
        p.server
            .exec_ok(&["tc", "filter", "show", "dev", dev, "ingress"])
            .unwrap()
    };
    assert!(foreign(&p).contains("pref 7"));

    let dp = UserspaceDataplane::new(
        lb_core::NodeConfig::new("n", vec!["10.77.0.2".parse().unwrap()]),
        Config::default(),
    );
    let io = p
        .server
        .run_in(|| {
            IoLoop::new(
                &[Device {
                    name: p.dev.clone(),
                    role: Role::Client,
                }],
                dp.worker(),
                true,
            )
        })
        .unwrap()
        .expect("io loop");
    assert_eq!(programs(&p), 1);
    drop(io);
    assert_eq!(programs(&p), 0);
    assert!(foreign(&p).contains("pref 7"), "foreign filter deleted");
    assert!(reaches(&p));

    // A process that holds the drop and is killed with SIGKILL (no
    // destructor runs) leaves nothing behind.
    let (child, ready) = p.server.run_in(|| fork_holder(p.ifindex)).unwrap();
    assert!(ready, "child attached");
    assert_eq!(programs(&p), 1);
    assert!(!reaches(&p));
    // SAFETY: `child` is our own child process.
    unsafe {
        assert_eq!(libc::kill(child, libc::SIGKILL), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(child, &mut status, 0), child);
        assert!(libc::WIFSIGNALED(status));
    }
    assert_eq!(programs(&p), 0, "program survived kill -9");
    assert!(reaches(&p), "device blackholed after kill -9");
    assert!(foreign(&p).contains("pref 7"));
}

/// Forks a child (in the calling thread's network namespace) that attaches
/// the drop to `ifindex`, reports on a pipe and waits to be killed.
fn fork_holder(ifindex: u32) -> (libc::pid_t, bool) {
    let mut fds = [0; 2];
    // SAFETY: plain system calls; the child only makes system calls
    // (TcxDrop::attach does not allocate) before it is killed.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            libc::close(fds[0]);
            let ok: u8 = match TcxDrop::attach(ifindex) {
                Ok(d) => {
                    std::mem::forget(d);
                    1
                }
                Err(_) => 0,
            };
            libc::write(fds[1], (&ok as *const u8).cast(), 1);
            loop {
                libc::pause();
            }
        }
        libc::close(fds[1]);
        let mut ok = 0u8;
        let n = libc::read(fds[0], (&mut ok as *mut u8).cast(), 1);
        libc::close(fds[0]);
        (pid, n == 1 && ok == 1)
    }
}
