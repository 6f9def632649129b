//! Fixtures shared by the agent tests over lb-testkit's DSR topology.
#![allow(dead_code)]

use std::path::Path;
use std::process::Child;

use lb_testkit::dsr_topology::VIP;

/// Child processes, SIGTERMed on drop.
pub struct Procs(pub Vec<Option<Child>>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            super::terminate(c);
        }
    }
}

/// Writes `web.yaml` to `dir`: LoadBalancer Service `default/web` (ClusterIP
/// 10.96.0.10, the DSR topology's VIP, NodePort 30080, port 80 -> 8080) with
/// `backends` as ready endpoints on node-2.
pub fn dsr_topology_manifests(dir: &Path, backends: &[String]) {
    let eps: String = backends
        .iter()
        .map(|a| format!("- addresses: [{a}]\n  conditions: {{ready: true}}\n  nodeName: node-2\n"))
        .collect();
    let text = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ports:
  - {{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}}
status:
  loadBalancer:
    ingress: [{{ip: {VIP}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
{eps}"#
    );
    std::fs::write(dir.join("web.yaml"), text).unwrap();
}

/// The directories of an agent run over the DSR topology: a scratch dir
/// with the agent's `state` dir and its `manifests` dir (holding
/// [`dsr_topology_manifests`]), and a private bpffs with the agent's pin
/// path `pins`. Dropped after the agent and servers declared after it.
pub struct AgentDirs {
    pub state: std::path::PathBuf,
    pub manifests: std::path::PathBuf,
    pub pins: std::path::PathBuf,
    _bpffs: lb_testkit::BpffsGuard,
    _scratch: tempfile::TempDir,
}

impl AgentDirs {
    /// Fresh directories, the manifests serving `backends` (`ADDR`s).
    pub fn new(backends: &[String]) -> AgentDirs {
        let scratch = tempfile::tempdir().unwrap();
        let bpffs = lb_testkit::BpffsGuard::new().expect("bpffs");
        let pins = bpffs.pin_path("lb");
        let state = scratch.path().join("state");
        let manifests = scratch.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        dsr_topology_manifests(&manifests, backends);
        AgentDirs {
            state,
            manifests,
            pins,
            _bpffs: bpffs,
            _scratch: scratch,
        }
    }
}
