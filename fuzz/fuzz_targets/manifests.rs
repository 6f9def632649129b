//! The agent's manifest path on arbitrary text: parsing (YAML/JSON,
//! multi-document, lists), translation to lb-core services and the
//! per-service isolation of `Sources`. The input is split on NUL bytes into
//! successive versions of one hostile file, `z.yaml`, read next to a good
//! service in `a-good.yaml` that was programmed first. Nothing may panic;
//! every pass must build a desired state that the reconciler applies; and the
//! good service keeps its ClusterIP and NodePort frontends whatever the
//! hostile file says.
#![no_main]

use std::path::Path;

use lb_agent::manifests::{parse_into, Loaded};
use lb_agent::sources::Sources;
use lb_core::{L3n4Addr, MemoryDataplane, NodeConfig, Reconciler, ServiceName};
use libfuzzer_sys::fuzz_target;

const GOOD: &str = "\
apiVersion: v1
kind: Service
metadata: {name: good, namespace: default}
spec: {type: NodePort, clusterIP: 10.96.0.1, ports: [{name: http, port: 80, nodePort: 30080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: good-1, namespace: default, labels: {kubernetes.io/service-name: good}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.200.1.2], nodeName: node-1}]
";

fn pass(sources: &mut Sources, hostile: Option<&str>) -> lb_core::DesiredState {
    let mut loaded = Loaded::default();
    parse_into(Path::new("a-good.yaml"), GOOD, &mut loaded);
    if let Some(text) = hostile {
        parse_into(Path::new("z.yaml"), text, &mut loaded);
    }
    let pass = sources
        .pass_loaded(loaded)
        .unwrap_or_else(|e| panic!("a pass was refused as a whole: {e}"));
    let mut dp = MemoryDataplane::new();
    let mut rec = Reconciler::new();
    rec.apply(&mut dp, &pass.desired)
        .unwrap_or_else(|e| panic!("the desired state does not apply: {e}"));
    assert!(dp.tables() == rec.current());
    pass.desired
}

fn owner(desired: &lb_core::DesiredState, addr: &str) -> Option<ServiceName> {
    let addr: L3n4Addr = addr.parse().unwrap();
    desired
        .frontends
        .iter()
        .find(|(k, _)| k.addr == addr)
        .map(|(_, f)| f.service.clone())
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let node = NodeConfig::new("node-1", vec!["192.168.10.1".parse().unwrap()]);
    let mut sources = Sources::new("/nonexistent", node).ipv4_only();
    let good: ServiceName = "default/good".parse().unwrap();
    let first = pass(&mut sources, None);
    assert_eq!(owner(&first, "10.96.0.1:80/TCP"), Some(good.clone()));
    for version in text.split('\0').take(4) {
        let desired = pass(&mut sources, Some(version));
        for fe in ["10.96.0.1:80/TCP", "0.0.0.0:30080/TCP"] {
            assert_eq!(owner(&desired, fe), Some(good.clone()), "{fe} lost");
        }
    }
});
