//! The load generators: `wrk` (HTTP latency and request rate) and `iperf3`
//! (TCP throughput), run inside a namespace and optionally inside a cgroup
//! (for the socket-LB variant), with their results parsed.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use lb_testkit::NetNs;

/// What one `wrk` run measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WrkResult {
    /// Completed requests.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 99th-percentile latency in microseconds.
    pub p99_us: f64,
    /// Socket errors (connect, read, write, timeout) plus non-2xx answers.
    pub errors: u64,
}

/// How `wrk` is run.
#[derive(Debug, Clone)]
pub struct WrkOptions {
    /// Threads (`-t`).
    pub threads: u32,
    /// Open connections (`-c`).
    pub connections: u32,
    /// Duration of the run (whole seconds, at least 1: wrk's unit).
    pub duration: Duration,
    /// Send `Connection: close`: one TCP connection per request.
    pub close: bool,
}

/// The Lua script that prints wrk's summary as one parseable line.
const SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("E2E requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#;

/// Writes the Lua script into `dir` and returns its path.
///
/// # Errors
///
/// Writing fails.
pub fn write_script(dir: &Path) -> io::Result<PathBuf> {
    let path = dir.join("e2e-summary.lua");
    std::fs::write(&path, SCRIPT)?;
    Ok(path)
}

/// A command running `program` in `ns`, inside `cgroup` when given (the
/// shell moves itself there before `exec`, so the program starts inside).
pub fn command_in(ns: &NetNs, cgroup: Option<&Path>, program: &str) -> Command {
    match cgroup {
        None => ns.command(program),
        Some(cg) => {
            let mut c = ns.command("sh");
            c.arg("-c")
                .arg(format!(
                    "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
                    cg.display()
                ))
                .arg(program);
            c
        }
    }
}

/// Runs wrk against `http://target/` and parses its summary.
///
/// # Errors
///
/// wrk cannot be started, fails, or prints no summary.
pub fn wrk(
    ns: &NetNs,
    cgroup: Option<&Path>,
    script: &Path,
    target: SocketAddr,
    opts: &WrkOptions,
) -> io::Result<WrkResult> {
    let mut cmd = command_in(ns, cgroup, "wrk");
    cmd.arg("-t")
        .arg(opts.threads.to_string())
        .arg("-c")
        .arg(opts.connections.to_string())
        .arg("-d")
        .arg(format!("{}s", opts.duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("2s")
        .arg("-s")
        .arg(script);
    if opts.close {
        cmd.arg("-H").arg("Connection: close");
    }
    cmd.arg(format!("http://{target}/"));
    let out = cmd.stdin(Stdio::null()).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "wrk {target} failed ({}): {} {}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_wrk(&stdout).ok_or_else(|| io::Error::other(format!("no wrk summary in {stdout:?}")))
}

/// Parses the `E2E …` line of [`SCRIPT`].
pub fn parse_wrk(stdout: &str) -> Option<WrkResult> {
    let line = stdout.lines().find(|l| l.starts_with("E2E "))?;
    let field = |name: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    };
    let requests = field("requests")?;
    let duration_us = field("duration_us")?;
    Some(WrkResult {
        requests: requests as u64,
        rps: if duration_us > 0.0 {
            requests / (duration_us / 1e6)
        } else {
            0.0
        },
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
        errors: field("errors")? as u64,
    })
}

/// Runs an iperf3 client to `target` for `duration`; returns the received
/// throughput in Gbit/s.
///
/// # Errors
///
/// iperf3 cannot be started, fails, or its JSON lacks the summary.
pub fn iperf3(
    ns: &NetNs,
    cgroup: Option<&Path>,
    target: SocketAddr,
    duration: Duration,
) -> io::Result<f64> {
    let secs = duration.as_secs().max(1);
    let out = command_in(ns, cgroup, "iperf3")
        .args([
            "-c",
            &target.ip().to_string(),
            "-p",
            &target.port().to_string(),
        ])
        .args(["-t", &secs.to_string(), "-J", "--connect-timeout", "3000"])
        .stdin(Stdio::null())
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| io::Error::other(format!("iperf3 {target}: {e}")))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(io::Error::other(format!("iperf3 {target}: {err}")));
    }
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(|b| b.as_f64())
        .map(|b| b / 1e9)
        .ok_or_else(|| io::Error::other(format!("iperf3 {target}: no sum_received")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_summary_line_parses() {
        let r = parse_wrk("Running 1s test\nE2E requests=5000 duration_us=2000000 p50_us=150 p99_us=900 errors=3\n")
            .unwrap();
        assert_eq!(r.requests, 5000);
        assert!((r.rps - 2500.0).abs() < 1e-9);
        assert_eq!((r.p50_us, r.p99_us, r.errors), (150.0, 900.0, 3));
        assert!(parse_wrk("nothing").is_none());
    }
}
