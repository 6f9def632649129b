//! Kubernetes objects to lb-core services, with kube-proxy's semantics.
//!
//! - Each Service port yields a ClusterIP frontend per cluster IP, a NodePort
//!   wildcard frontend per IP family (NodePort and LoadBalancer types), one
//!   frontend per `externalIPs` entry and per `status.loadBalancer.ingress` IP.
//! - Backends come from the EndpointSlices labelled
//!   `kubernetes.io/service-name`: the slice port whose name equals the
//!   Service port's name (`""` matches an unnamed port) and protocol; a
//!   missing `ready` means ready; `serving: true, terminating: true` is a
//!   terminating backend; `serving: false` (or not ready and not terminating)
//!   excludes the endpoint.
//! - Pods with `hostPort`s on this node yield HostPort services.
//! - Topology: endpoint `nodeName`, `zone`, `hints.forNodes` and
//!   `hints.forZones` are carried to lb-core;
//!   `spec.trafficDistribution: PreferClose` (or `PreferSameZone`), or the
//!   annotation `service.kubernetes.io/topology-mode: Auto`, becomes
//!   [`TrafficDistribution::PreferClose`], and `PreferSameNode` becomes
//!   [`TrafficDistribution::PreferSameNode`] (lb-core's `topology` module
//!   does the filtering, with kube-proxy's fallbacks).
//! - Weights: Kubernetes has no endpoint weight, so the annotation
//!   [`WEIGHTS_ANNOTATION`] (`lb-agent.io/backend-weights`), on an
//!   EndpointSlice or on the Service, gives `ADDRESS=WEIGHT` pairs,
//!   comma-separated (weight 0..=65535; 0 takes no new flows). The slice's
//!   entry for an address wins over the Service's; unlisted endpoints keep
//!   the default weight 100. A malformed annotation skips the service.
//!
//! Pure: no I/O. A bad object is reported and skipped; the rest translates.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use lb_core::{
    BackendParams, BackendState, FrontendParams, FrontendType, L3n4Addr, L4Proto, ServiceName,
    SessionAffinity, TrafficDistribution, TrafficPolicy,
};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The annotation (on an EndpointSlice or a Service) with backend weights:
/// `ADDRESS=WEIGHT[,ADDRESS=WEIGHT...]`.
pub const WEIGHTS_ANNOTATION: &str = "lb-agent.io/backend-weights";
/// Kubernetes' topology-aware routing annotation (`Auto` turns it on).
pub const TOPOLOGY_MODE_ANNOTATION: &str = "service.kubernetes.io/topology-mode";
/// Its pre-1.27 name.
pub const TOPOLOGY_HINTS_ANNOTATION: &str = "service.kubernetes.io/topology-aware-hints";

/// An object that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {reason}")]
pub struct Skipped {
    /// `KIND NAMESPACE/NAME`.
    pub object: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The translation of a set of objects.
#[derive(Debug, Default)]
pub struct Translation {
    /// lb-core services, in name order.
    pub services: Vec<lb_core::Service>,
    /// Objects (or parts of them) that were skipped.
    pub skipped: Vec<Skipped>,
    /// Services that failed to translate (their last good version may stay).
    pub failed: Vec<ServiceName>,
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ServiceName {
    ServiceName::new(
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or(""),
    )
}

fn proto(p: Option<&str>) -> Result<L4Proto, String> {
    p.unwrap_or("TCP").parse().map_err(|e| format!("{e}"))
}

fn port(n: i32, what: &str) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{what} {n} is not a valid port"))
}

fn ip(s: &str, what: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("{what} {s:?} is not an IP address"))
}

/// Parses a [`WEIGHTS_ANNOTATION`] value.
pub fn parse_weights(v: &str) -> Result<BTreeMap<IpAddr, u16>, String> {
    let mut out = BTreeMap::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (a, w) = entry
            .split_once('=')
            .ok_or_else(|| format!("{WEIGHTS_ANNOTATION}: {entry:?} is not ADDRESS=WEIGHT"))?;
        let a = ip(a.trim(), WEIGHTS_ANNOTATION)?;
        let w: u16 = w.trim().parse().map_err(|_| {
            format!("{WEIGHTS_ANNOTATION}: weight {w:?} of {a} is not in 0..=65535")
        })?;
        out.insert(a, w);
    }
    Ok(out)
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn weights_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<BTreeMap<IpAddr, u16>, String> {
    annotation(meta, WEIGHTS_ANNOTATION)
        .map(parse_weights)
        .unwrap_or_else(|| Ok(BTreeMap::new()))
}

/// The service's topology preference: `trafficDistribution`, else the
/// topology-mode annotation (`Auto`).
fn distribution(svc: &Service) -> TrafficDistribution {
    let spec = svc.spec.as_ref();
    match spec.and_then(|s| s.traffic_distribution.as_deref()) {
        Some("PreferClose" | "PreferSameZone") => return TrafficDistribution::PreferClose,
        Some("PreferSameNode") => return TrafficDistribution::PreferSameNode,
        Some(_) => return TrafficDistribution::Default,
        None => {}
    }
    let mode = annotation(&svc.metadata, TOPOLOGY_MODE_ANNOTATION)
        .or_else(|| annotation(&svc.metadata, TOPOLOGY_HINTS_ANNOTATION));
    match mode {
        Some(m) if m.eq_ignore_ascii_case("auto") => TrafficDistribution::PreferClose,
        _ => TrafficDistribution::Default,
    }
}

fn policy(p: Option<&str>) -> TrafficPolicy {
    match p {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    }
}

/// Translates everything; `node_name` selects this node's HostPort pods.
pub fn translate(
    services: &[&Service],
    slices: &[&EndpointSlice],
    pods: &[&Pod],
    node_name: &str,
) -> Translation {
    let mut out = Translation::default();
    let mut by_service: BTreeMap<ServiceName, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let owner = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        match owner {
            Some(svc) => by_service
                .entry(ServiceName::new(
                    slice.metadata.namespace.as_deref().unwrap_or("default"),
                    svc.as_str(),
                ))
                .or_default()
                .push(slice),
            None => out.skipped.push(Skipped {
                object: format!("EndpointSlice {}", name_of(&slice.metadata)),
                reason: format!("no {SERVICE_NAME_LABEL} label"),
            }),
        }
    }
    let mut known = std::collections::BTreeSet::new();
    for svc in services {
        let name = name_of(&svc.metadata);
        known.insert(name.clone());
        let slices = by_service.get(&name).map(Vec::as_slice).unwrap_or(&[]);
        match translate_service(svc, slices) {
            Ok(Some(s)) => out.services.push(s),
            Ok(None) => {}
            Err(reason) => {
                out.skipped.push(Skipped {
                    object: format!("Service {name}"),
                    reason,
                });
                out.failed.push(name);
            }
        }
    }
    for (svc, slices) in &by_service {
        if !known.contains(svc) {
            for s in slices {
                out.skipped.push(Skipped {
                    object: format!("EndpointSlice {}", name_of(&s.metadata)),
                    reason: format!("service {svc} is unknown"),
                });
            }
        }
    }
    for pod in pods {
        match translate_pod(pod, node_name) {
            Ok(services) => out.services.extend(services),
            Err(reason) => out.skipped.push(Skipped {
                object: format!("Pod {}", name_of(&pod.metadata)),
                reason,
            }),
        }
    }
    out.services.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// One Service and its slices; `Ok(None)` for services the agent does not
/// balance (headless, ExternalName).
pub fn translate_service(
    svc: &Service,
    slices: &[&EndpointSlice],
) -> Result<Option<lb_core::Service>, String> {
    let spec = svc.spec.as_ref().ok_or("no spec")?;
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return Ok(None);
    }
    let cluster_ips: Vec<&str> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    if cluster_ips.contains(&"None") {
        return Ok(None); // headless
    }
    let cluster_ips = cluster_ips
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| ip(s, "clusterIP"))
        .collect::<Result<Vec<_>, _>>()?;
    let families: Vec<bool> = if cluster_ips.is_empty() {
        vec![true]
    } else {
        let mut f: Vec<bool> = cluster_ips.iter().map(IpAddr::is_ipv4).collect();
        f.dedup();
        f
    };
    let external_ips = spec
        .external_ips
        .iter()
        .flatten()
        .map(|s| ip(s, "externalIP"))
        .collect::<Result<Vec<_>, _>>()?;
    let lb_ips = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref())
        .map(|s| ip(s, "loadBalancer ingress IP"))
        .collect::<Result<Vec<_>, _>>()?;

    let mut out = lb_core::Service::new(name_of(&svc.metadata));
    out.traffic_distribution = distribution(svc);
    let svc_weights = weights_of(&svc.metadata)?;
    out.ext_traffic_policy = policy(spec.external_traffic_policy.as_deref());
    out.int_traffic_policy = policy(spec.internal_traffic_policy.as_deref());
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .map(|t| u32::try_from(t).unwrap_or(0))
            .unwrap_or(SessionAffinity::DEFAULT_TIMEOUT_SECS);
        out.session_affinity = SessionAffinity::ClientIp {
            timeout_secs: timeout,
        };
    }
    if kind == "LoadBalancer" {
        out.source_ranges = spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .map(|r| {
                r.trim()
                    .parse::<ipnet::IpNet>()
                    .map_err(|_| format!("loadBalancerSourceRange {r:?} is not a CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()?;
    }

    for sp in spec.ports.iter().flatten() {
        add_port(
            &mut out,
            sp,
            kind,
            &cluster_ips,
            &families,
            &external_ips,
            &lb_ips,
        )?;
        add_backends(&mut out, sp, slices, &svc_weights)?;
    }
    Ok(Some(out))
}

fn add_port(
    out: &mut lb_core::Service,
    sp: &ServicePort,
    kind: &str,
    cluster_ips: &[IpAddr],
    families: &[bool],
    external_ips: &[IpAddr],
    lb_ips: &[IpAddr],
) -> Result<(), String> {
    let proto = proto(sp.protocol.as_deref())?;
    let p = port(sp.port, "port")?;
    let port_name = sp.name.clone().unwrap_or_default();
    let mut push = |addr: IpAddr, port: u16, kind: FrontendType| {
        out.frontends.push(
            FrontendParams::new(L3n4Addr::new(addr, port, proto), kind)
                .with_port_name(port_name.clone()),
        )
    };
    for a in cluster_ips {
        push(*a, p, FrontendType::ClusterIp);
    }
    if matches!(kind, "NodePort" | "LoadBalancer") {
        if let Some(np) = sp.node_port {
            let np = port(np, "nodePort")?;
            for v4 in families {
                let any = if *v4 {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                };
                push(any, np, FrontendType::NodePort);
            }
        }
    }
    for a in external_ips {
        push(*a, p, FrontendType::ExternalIp);
    }
    if kind == "LoadBalancer" {
        for a in lb_ips {
            push(*a, p, FrontendType::LoadBalancer);
        }
    }
    Ok(())
}

/// The backend state kube-proxy gives an endpoint, or `None` to exclude it.
pub fn endpoint_state(ep: &Endpoint) -> Option<BackendState> {
    let c = ep.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    match (terminating, ready, serving) {
        (false, true, _) => Some(BackendState::Active),
        (true, _, true) => Some(BackendState::Terminating),
        _ => None,
    }
}

fn add_backends(
    out: &mut lb_core::Service,
    sp: &ServicePort,
    slices: &[&EndpointSlice],
    svc_weights: &BTreeMap<IpAddr, u16>,
) -> Result<(), String> {
    let want_name = sp.name.as_deref().unwrap_or("");
    let want_proto = proto(sp.protocol.as_deref())?;
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let slice_port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == want_name
                && proto(p.protocol.as_deref()).ok() == Some(want_proto)
        });
        let Some(Some(bport)) = slice_port.map(|p| p.port) else {
            continue;
        };
        let bport = port(bport, "endpoint port")?;
        let slice_weights = weights_of(&slice.metadata)
            .map_err(|e| format!("EndpointSlice {}: {e}", name_of(&slice.metadata)))?;
        for ep in slice.endpoints.iter().flatten() {
            let Some(state) = endpoint_state(ep) else {
                continue;
            };
            let hints: Vec<String> = ep
                .hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .into_iter()
                .flatten()
                .map(|z| z.name.clone())
                .filter(|z| !z.is_empty())
                .collect();
            let node_hints: Vec<String> = ep
                .hints
                .as_ref()
                .and_then(|h| h.for_nodes.as_ref())
                .into_iter()
                .flatten()
                .map(|n| n.name.clone())
                .filter(|n| !n.is_empty())
                .collect();
            for a in &ep.addresses {
                let addr = ip(a, "endpoint address")?;
                let weight = slice_weights
                    .get(&addr)
                    .or_else(|| svc_weights.get(&addr))
                    .copied()
                    .unwrap_or(BackendParams::DEFAULT_WEIGHT);
                let mut b = BackendParams::new(L3n4Addr::new(addr, bport, want_proto))
                    .with_port_name(want_name)
                    .with_state(state)
                    .with_weight(weight);
                b.node_name = ep.node_name.clone();
                b.zone = ep.zone.clone();
                b.zone_hints = hints.clone();
                b.node_hints = node_hints.clone();
                out.backends.push(b);
            }
        }
    }
    Ok(())
}

/// The HostPort services of a pod running on `node_name`.
pub fn translate_pod(pod: &Pod, node_name: &str) -> Result<Vec<lb_core::Service>, String> {
    let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node_name);
    let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref());
    let (true, Some(pod_ip)) = (on_node, pod_ip) else {
        return Ok(Vec::new());
    };
    let pod_ip = ip(pod_ip, "podIP")?;
    let meta = name_of(&pod.metadata);
    let mut out = Vec::new();
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
    for cp in containers.flat_map(|c| c.ports.iter().flatten()) {
        let Some(hp) = cp.host_port else { continue };
        let proto = proto(cp.protocol.as_deref())?;
        let host_port = port(hp, "hostPort")?;
        let host_ip = match cp.host_ip.as_deref() {
            Some(s) if !s.is_empty() => ip(s, "hostIP")?,
            _ if pod_ip.is_ipv4() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            _ => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let mut svc = lb_core::Service::new(ServiceName::new(
            meta.namespace.clone(),
            format!(
                "{}:{}:{host_port}",
                meta.name,
                proto.as_str().to_lowercase()
            ),
        ));
        svc.frontends.push(FrontendParams::new(
            L3n4Addr::new(host_ip, host_port, proto),
            FrontendType::HostPort,
        ));
        let mut b = BackendParams::new(L3n4Addr::new(
            pod_ip,
            port(cp.container_port, "containerPort")?,
            proto,
        ));
        b.node_name = Some(node_name.to_string());
        svc.backends.push(b);
        out.push(svc);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> (Vec<Service>, Vec<EndpointSlice>, Vec<Pod>) {
        let mut loaded = crate::manifests::Loaded::default();
        crate::manifests::parse_into(std::path::Path::new("t.yaml"), yaml, &mut loaded);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let (mut s, mut e, mut p) = (vec![], vec![], vec![]);
        for o in loaded.objects {
            match o.object {
                crate::manifests::Object::Service(x) => s.push(*x),
                crate::manifests::Object::EndpointSlice(x) => e.push(*x),
                crate::manifests::Object::Pod(x) => p.push(*x),
                crate::manifests::Object::Node(_) => {}
            }
        }
        (s, e, p)
    }

    fn run(yaml: &str) -> Translation {
        let (s, e, p) = load(yaml);
        translate(
            &s.iter().collect::<Vec<_>>(),
            &e.iter().collect::<Vec<_>>(),
            &p.iter().collect::<Vec<_>>(),
            "node-1",
        )
    }

    const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  externalIPs: [198.51.100.20]
  externalTrafficPolicy: Local
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  loadBalancerSourceRanges: [192.168.10.0/24]
  ports:
  - {name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}
  - {name: dns, port: 53, protocol: UDP}
status:
  loadBalancer: {ingress: [{ip: 198.51.100.10}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: dns, port: 5353, protocol: UDP}
endpoints:
- addresses: [10.200.1.2]
  nodeName: node-1
- addresses: [10.200.2.2]
  conditions: {ready: false, serving: true, terminating: true}
  nodeName: node-1
- addresses: [10.200.3.2]
  conditions: {ready: false, serving: false, terminating: true}
- addresses: [10.200.4.2]
  conditions: {ready: false}
"#;

    #[test]
    fn service_and_slice_become_frontends_and_backends() {
        let t = run(WEB);
        assert!(t.skipped.is_empty(), "{:?}", t.skipped);
        let s = &t.services[0];
        assert_eq!(s.name.to_string(), "default/web");
        let fes: Vec<String> = s
            .frontends
            .iter()
            .map(|f| format!("{} {} {}", f.kind, f.addr, f.port_name))
            .collect();
        assert_eq!(
            fes,
            [
                "ClusterIP 10.96.0.10:80/TCP http",
                "NodePort 0.0.0.0:30080/TCP http",
                "ExternalIPs 198.51.100.20:80/TCP http",
                "LoadBalancer 198.51.100.10:80/TCP http",
                "ClusterIP 10.96.0.10:53/UDP dns",
                "ExternalIPs 198.51.100.20:53/UDP dns",
                "LoadBalancer 198.51.100.10:53/UDP dns",
            ]
        );
        let bes: Vec<String> = s
            .backends
            .iter()
            .map(|b| format!("{} {} {}", b.addr, b.port_name, b.state))
            .collect();
        assert_eq!(
            bes,
            [
                "10.200.1.2:8080/TCP http active",
                "10.200.2.2:8080/TCP http terminating",
                "10.200.1.2:5353/UDP dns active",
                "10.200.2.2:5353/UDP dns terminating",
            ]
        );
        assert_eq!(s.ext_traffic_policy, TrafficPolicy::Local);
        assert_eq!(s.session_affinity.timeout_secs(), Some(600));
        assert_eq!(s.source_ranges.len(), 1);
    }

    #[test]
    fn headless_external_name_and_unknown_slices() {
        let t = run(r#"
kind: Service
metadata: {name: headless}
spec: {clusterIP: None, ports: [{port: 80}]}
---
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: example.com}
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {name: orphan-1, labels: {kubernetes.io/service-name: orphan}}
addressType: IPv4
endpoints: []
"#);
        assert!(t.services.is_empty());
        assert_eq!(t.skipped.len(), 1);
        assert_eq!(
            t.skipped[0].to_string(),
            "EndpointSlice default/orphan-1: service default/orphan is unknown"
        );
    }

    #[test]
    fn unnamed_ports_match_unnamed_slice_ports_and_bad_ips_skip_the_service() {
        let t = run(r#"
kind: Service
metadata: {name: a}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {name: a-1, labels: {kubernetes.io/service-name: a}}
addressType: IPv4
ports: [{port: 9000}]
endpoints: [{addresses: [10.0.0.9]}]
---
kind: Service
metadata: {name: b}
spec: {clusterIP: 10.96.0.300, ports: [{port: 80}]}
"#);
        assert_eq!(t.services.len(), 1);
        assert_eq!(
            t.services[0].backends[0].addr.to_string(),
            "10.0.0.9:9000/TCP"
        );
        assert_eq!(
            t.skipped[0].to_string(),
            "Service default/b: clusterIP \"10.96.0.300\" is not an IP address"
        );
    }

    #[test]
    fn weights_hints_and_traffic_distribution() {
        let t = run(r#"
kind: Service
metadata:
  name: w
  annotations: {lb-agent.io/backend-weights: "10.0.0.1=3, 10.0.0.2=1"}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}], trafficDistribution: PreferClose}
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata:
  name: w-1
  labels: {kubernetes.io/service-name: w}
  annotations: {lb-agent.io/backend-weights: "10.0.0.2=0"}
addressType: IPv4
ports: [{port: 9000}]
endpoints:
- {addresses: [10.0.0.1], zone: a, hints: {forZones: [{name: a}]}}
- {addresses: [10.0.0.2], zone: b, hints: {forZones: [{name: b}, {name: c}]}}
- {addresses: [10.0.0.3]}
---
kind: Service
metadata:
  name: auto
  annotations: {service.kubernetes.io/topology-mode: Auto}
spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
---
kind: Service
metadata:
  name: bad
  annotations: {lb-agent.io/backend-weights: "10.0.0.1=heavy"}
spec: {clusterIP: 10.96.0.3, ports: [{port: 80}]}
"#);
        let by = |n: &str| t.services.iter().find(|s| s.name.name == n).unwrap();
        let w = by("w");
        assert_eq!(w.traffic_distribution, TrafficDistribution::PreferClose);
        let got: Vec<(String, u16, Option<String>, Vec<String>)> = w
            .backends
            .iter()
            .map(|b| {
                (
                    b.addr.addr.to_string(),
                    b.weight,
                    b.zone.clone(),
                    b.zone_hints.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1".into(), 3, Some("a".into()), vec!["a".into()]),
                (
                    "10.0.0.2".into(),
                    0,
                    Some("b".into()),
                    vec!["b".into(), "c".into()]
                ),
                ("10.0.0.3".into(), 100, None, vec![]),
            ]
        );
        assert_eq!(
            by("auto").traffic_distribution,
            TrafficDistribution::PreferClose
        );
        assert!(t.services.iter().all(|s| s.name.name != "bad"));
        assert!(t.skipped[0].reason.contains("heavy"), "{:?}", t.skipped);
    }

    #[test]
    fn prefer_same_node_and_node_hints() {
        let t = run(r#"
kind: Service
metadata: {name: n}
spec: {clusterIP: 10.96.0.4, ports: [{port: 80}], trafficDistribution: PreferSameNode}
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata:
  name: n-1
  labels: {kubernetes.io/service-name: n}
addressType: IPv4
ports: [{port: 9000}]
endpoints:
- {addresses: [10.0.0.1], nodeName: n1, zone: a, hints: {forNodes: [{name: n1}], forZones: [{name: a}]}}
- {addresses: [10.0.0.2], nodeName: n2, zone: a}
"#);
        let svc = &t.services[0];
        assert_eq!(
            svc.traffic_distribution,
            TrafficDistribution::PreferSameNode
        );
        let hints: Vec<(Option<String>, Vec<String>)> = svc
            .backends
            .iter()
            .map(|b| (b.node_name.clone(), b.node_hints.clone()))
            .collect();
        assert_eq!(
            hints,
            [
                (Some("n1".into()), vec!["n1".into()]),
                (Some("n2".into()), vec![]),
            ]
        );
    }

    #[test]
    fn host_ports_of_pods_on_this_node() {
        let t = run(r#"
kind: Pod
metadata: {name: p, namespace: ns}
spec:
  nodeName: node-1
  containers: [{name: c, ports: [{containerPort: 80, hostPort: 8081}]}]
status: {podIP: 10.200.1.2}
---
kind: Pod
metadata: {name: elsewhere, namespace: ns}
spec:
  nodeName: node-2
  containers: [{name: c, ports: [{containerPort: 80, hostPort: 8082}]}]
status: {podIP: 10.200.9.2}
"#);
        assert_eq!(t.services.len(), 1);
        let s = &t.services[0];
        assert_eq!(s.name.to_string(), "ns/p:tcp:8081");
        assert_eq!(s.frontends[0].addr.to_string(), "0.0.0.0:8081/TCP");
        assert_eq!(s.frontends[0].kind, FrontendType::HostPort);
        assert_eq!(s.backends[0].addr.to_string(), "10.200.1.2:80/TCP");
    }
}
