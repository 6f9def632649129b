//! Smoke test of the end-to-end benchmark harness (`--bin e2e`) at tiny
//! scale: 10 services, 1 s per variant, one round, 1 s of iperf3. Every
//! variant (direct, eBPF tc, eBPF socket LB, iptables, nftables; ClusterIP
//! and NodePort; keep-alive and one connection per request) must serve
//! requests with zero errors, and the table and PNG must be written.
//! Privileged (root); bounded: about 22 wrk runs of 1 s plus 8 iperf3 runs
//! of 1 s and setup, typically 30-60 s on a loaded 2-core machine; the
//! harness is killed after 150 s.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn every_variant_serves_requests_and_outputs_are_written() {
    lb_testkit::require_privileges();
    let out = std::env::temp_dir().join(format!("lb-e2e-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_e2e"))
        .args([
            "--services",
            "10",
            "--duration",
            "1",
            "--rounds",
            "1",
            "--iperf",
            "1",
        ])
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the e2e harness");
    let deadline = Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            // SIGTERM is not enough for a process blocked in wrk: SIGKILL.
            let _ = child.kill();
            panic!("e2e harness did not finish in 150 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "e2e failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let csv = std::fs::read_to_string(out.join("samples.csv")).expect("samples.csv");
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    // external: direct + 3 dataplanes x (ClusterIP, NodePort); node-local:
    // direct + socket LB + iptables + nftables; each in 2 connection modes.
    assert_eq!(rows.len(), (7 + 4) * 2, "{csv}");
    for dp in ["direct", "ebpf-tc", "ebpf-sock", "iptables", "nftables"] {
        assert!(rows.iter().any(|r| r[3] == dp), "{dp} missing:\n{csv}");
    }
    for r in &rows {
        let requests: u64 = r[6].parse().unwrap();
        let errors: u64 = r[10].parse().unwrap();
        assert!(requests > 0, "no requests served: {r:?}");
        assert_eq!(errors, 0, "errors: {r:?}");
    }
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    assert!(
        md.contains("| 10 | node-local | ebpf-sock | clusterip | new-conn |"),
        "{md}"
    );
    assert!(md.contains("iperf3 Gbit/s"), "{md}");
    let png = std::fs::read(out.join("e2e.png")).expect("e2e.png");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "PNG written"
    );
    let _ = std::fs::remove_dir_all(&out);
}
