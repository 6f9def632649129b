//! The command-line contract that needs no privileges: usage errors exit 2,
//! refused configurations exit 1 with one clear line.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lb-agent");

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["--bogus"]).0, Some(2));
    assert_eq!(run(&["run", "--manifests", "/tmp"]).0, Some(2));
    assert_eq!(run(&["service", "list", "-o", "xml"]).0, Some(2));
    let both = [
        "run",
        "--manifests",
        "/tmp",
        "--kubeconfig",
        "/k",
        "--node-ip",
        "1.2.3.4",
        "--device",
        "lo",
    ];
    assert_eq!(run(&both).0, Some(2));
}

#[test]
fn refused_configurations_exit_1_with_a_reason() {
    let base = [
        "run",
        "--manifests",
        "/tmp",
        "--node-ip",
        "192.168.10.1",
        "--device",
        "lo",
    ];
    let with = |extra: &[&str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        run(&v)
    };
    let (code, err) = with(&["--dataplane", "userspace", "--cgroup", "/tmp"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("socket LB is not available with the userspace dataplane"),
        "{err}"
    );
    // Both dataplanes do NAT46/64; either needs a node address per family.
    for dp in ["ebpf", "userspace"] {
        let (code, err) = with(&["--enable-nat46x64", "--dataplane", dp]);
        assert_eq!(code, Some(1));
        assert!(
            err.contains("needs a --node-ip of each family"),
            "{dp}: {err}"
        );
    }
    let (code, err) = with(&["--backend-device", "lo"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--backend-device is for --dataplane userspace"),
        "{err}"
    );
    let root = lb_testkit::cgroup2_mount().expect("a cgroup2 mount");
    let (code, err) = with(&["--cgroup", root.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("refusing the root cgroup"), "{err}");
    let (code, err) = with(&["--cgroup", "/tmp"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not a cgroup v2 directory"), "{err}");
    let (code, err) = run(&[
        "run",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
        "--node-ip",
        "192.168.10.1",
        "--device",
        "lo",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--kubeconfig /nonexistent/kubeconfig"),
        "{err}"
    );
    // Outside a cluster there is no service account: a clear error, exit 1.
    let (code, err) = run(&[
        "run",
        "--in-cluster",
        "--node-ip",
        "192.168.10.1",
        "--device",
        "lo",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--in-cluster"), "{err}");
    let (code, err) = with(&["--maglev-table-size", "100"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--maglev-table-size"), "{err}");
}

#[test]
fn queries_without_an_agent_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let (code, err) = run(&["service", "list", "--state-dir", state]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no agent answers"), "{err}");
    assert_eq!(run(&["status", "--state-dir", state]).0, Some(1));
}

#[test]
fn help_mentions_the_userspace_dataplane_and_the_demo() {
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--backend-device"), "{help}");
    assert!(help.contains("userspace"), "{help}");
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("demo"));
}
