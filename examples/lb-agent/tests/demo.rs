//! `lb-agent demo`, the README's main job, end to end: every frontend type
//! answers, traffic is balanced, and nothing is left behind; also after
//! Ctrl-C. Privileged.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lb-agent");

fn netns_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.contains(&format!("-{pid}-")))
        .map(str::to_string)
        .collect()
}

#[test]
fn demo_reaches_every_frontend_type_and_cleans_up() {
    lb_testkit::require_privileges();
    let demo = Command::new(BIN)
        .args(["demo", "--requests", "9"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = demo.id();
    let child = demo.wait_with_output().unwrap();
    assert!(
        netns_of(pid).is_empty(),
        "namespaces left: {:?}",
        netns_of(pid)
    );
    let out = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    for want in [
        "==> ClusterIP 10.96.0.10:80",
        "==> NodePort 192.168.10.1:30080",
        "==> LoadBalancer 198.51.100.10:80",
        "==> ExternalIPs 198.51.100.20:80",
        "==> HostPort 192.168.10.1:8081",
        "==> NodePort via localhost 127.0.0.1:30080",
        "==> HostPort via localhost 127.0.0.1:8081",
        "Socket LB:              Enabled",
        "==> Done.",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    assert!(!out.contains("FAILED"), "{out}");
    // Balanced: the ClusterIP section is answered by more than one backend.
    let section = out.split("==> ClusterIP 10.96.0.10:80").nth(1).unwrap();
    let summary = section.lines().find(|l| l.contains("answered by")).unwrap();
    assert!(summary.matches("backend-").count() >= 2, "{summary}");
}

#[test]
fn demo_tears_down_on_ctrl_c() {
    lb_testkit::require_privileges();
    let child = Command::new(BIN)
        .args(["demo", "--requests", "200"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the topology exists, then interrupt.
    let start = Instant::now();
    while netns_of(pid).len() < 5 {
        assert!(start.elapsed() < Duration::from_secs(20), "no topology");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted"), "{err}");
    assert!(
        netns_of(pid).is_empty(),
        "namespaces left: {:?}",
        netns_of(pid)
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&format!("lbt-bpf-{pid}-")),
        "bpffs left mounted"
    );
}
