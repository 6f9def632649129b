//! kube-proxy's `nftables` mode as `nft -f` input.
//!
//! [`full_sync`] creates `table ip kube-proxy` with kube-proxy's base chains
//! (filter hooks at priority -110, dstnat/srcnat nat hooks), the sets and
//! verdict maps (`cluster-ips`, `nodeport-ips`, `service-ips`,
//! `service-nodeports`, `no-endpoint-*`, `firewall-ips`), and per service
//! port a `service-<hash>-ns/name/proto/port` chain (masquerade off-cluster
//! sources, then `numgen random mod N vmap { i : goto endpoint-… }`), an
//! `external-…` chain for NodePorts, and one `endpoint-…` chain per endpoint
//! (hairpin masquerade, `dnat to`). Map elements send ClusterIP traffic to
//! the service chain and NodePort traffic to the external chain.
//!
//! [`endpoint_change`] is the incremental transaction kube-proxy runs when
//! one service's endpoints changed: it re-adds and flushes that service's
//! chains and writes their rules again, and flushes the chains of removed
//! endpoints (kube-proxy deletes them in a later sync, once no map element
//! can still reference them); map elements are untouched.
//!
//! Chain names are kube-proxy's `hashAndTruncate`: the first 8 base32
//! characters of SHA-256(base) + `-` + base.

use std::fmt::Write;
use std::net::SocketAddrV4;

use super::{sha256_base32, ProxyConfig, ServicePort};

/// The table every rule lives in.
pub const TABLE: &str = "ip kube-proxy";
const MAX_CHAIN_NAME: usize = 256;

fn hash_and_truncate(prefix: &str, base: &str) -> String {
    let mut name = format!("{prefix}-{}-{base}", &sha256_base32(base)[..8]);
    if name.len() > MAX_CHAIN_NAME {
        name.truncate(MAX_CHAIN_NAME - 3);
        name.push_str("...");
    }
    name
}

fn base(sp: &ServicePort) -> String {
    format!("{}/{}/{}", sp.service, sp.proto_lower(), sp.port_name)
}

/// `service-<hash>-ns/name/proto/port`.
pub fn service_chain(sp: &ServicePort) -> String {
    hash_and_truncate("service", &base(sp))
}

/// `external-<hash>-ns/name/proto/port` (NodePort traffic).
pub fn external_chain(sp: &ServicePort) -> String {
    hash_and_truncate("external", &base(sp))
}

/// `endpoint-<hash>-ns/name/proto/port__ip/port`.
pub fn endpoint_chain(sp: &ServicePort, ep: &SocketAddrV4) -> String {
    hash_and_truncate(
        "endpoint",
        &format!("{}__{}/{}", base(sp), ep.ip(), ep.port()),
    )
}

/// The `nft -f` input of a full sync of `ports` into an empty namespace.
pub fn full_sync(cfg: &ProxyConfig, ports: &[ServicePort]) -> String {
    let eps: usize = ports.iter().map(|p| p.endpoints.len()).sum();
    let mut s = String::with_capacity(256 * (ports.len() * 4 + eps * 3) + 4096);
    skeleton(cfg, &mut s);
    for sp in ports {
        let proto = sp.proto_lower();
        let _ = writeln!(s, "add element {TABLE} cluster-ips {{ {} }}", sp.cluster_ip);
        if sp.endpoints.is_empty() {
            let _ = writeln!(
                s,
                "add element {TABLE} no-endpoint-services {{ {} . {proto} . {} comment \"{}\" : goto reject-chain }}",
                sp.cluster_ip,
                sp.port,
                sp.name_string()
            );
            if let Some(np) = sp.node_port {
                let _ = writeln!(
                    s,
                    "add element {TABLE} no-endpoint-nodeports {{ {proto} . {np} comment \"{}\" : goto reject-chain }}",
                    sp.name_string()
                );
            }
            continue;
        }
        service_chains(cfg, sp, &mut s);
        let _ = writeln!(
            s,
            "add element {TABLE} service-ips {{ {} . {proto} . {} : goto {} }}",
            sp.cluster_ip,
            sp.port,
            service_chain(sp)
        );
        if let Some(np) = sp.node_port {
            let _ = writeln!(
                s,
                "add element {TABLE} service-nodeports {{ {proto} . {np} : goto {} }}",
                external_chain(sp)
            );
        }
    }
    s
}

/// The transaction kube-proxy runs when the endpoints of `after` (one
/// service port) changed from those of `before`.
pub fn endpoint_change(cfg: &ProxyConfig, before: &ServicePort, after: &ServicePort) -> String {
    let mut s = String::with_capacity(4096);
    service_chains(cfg, after, &mut s);
    for ep in &before.endpoints {
        if !after.endpoints.contains(ep) {
            let _ = writeln!(s, "flush chain {TABLE} {}", endpoint_chain(before, ep));
        }
    }
    s
}

/// Adds (and flushes, so the input is idempotent) the chains of one service
/// port and writes their rules.
fn service_chains(cfg: &ProxyConfig, sp: &ServicePort, s: &mut String) {
    let proto = sp.proto_lower();
    let svc = service_chain(sp);
    let ext = sp.node_port.map(|_| external_chain(sp));
    let eps: Vec<String> = sp
        .endpoints
        .iter()
        .map(|ep| endpoint_chain(sp, ep))
        .collect();
    // Chains first: a rule or map element may only name existing chains.
    for chain in std::iter::once(&svc).chain(ext.iter()).chain(eps.iter()) {
        let _ = writeln!(s, "add chain {TABLE} {chain}");
        let _ = writeln!(s, "flush chain {TABLE} {chain}");
    }
    let _ = writeln!(
        s,
        "add rule {TABLE} {svc} ip daddr {} {proto} dport {} ip saddr != {} jump mark-for-masquerade",
        sp.cluster_ip, sp.port, cfg.cluster_cidr
    );
    let mut vmap = String::new();
    for (i, chain) in eps.iter().enumerate() {
        if i > 0 {
            vmap.push_str(", ");
        }
        let _ = write!(vmap, "{i} : goto {chain}");
    }
    let _ = writeln!(
        s,
        "add rule {TABLE} {svc} numgen random mod {} vmap {{ {vmap} }}",
        sp.endpoints.len()
    );
    if let Some(ext) = &ext {
        let _ = writeln!(s, "add rule {TABLE} {ext} jump mark-for-masquerade");
        let _ = writeln!(s, "add rule {TABLE} {ext} goto {svc}");
    }
    for (ep, chain) in sp.endpoints.iter().zip(&eps) {
        let _ = writeln!(
            s,
            "add rule {TABLE} {chain} ip saddr {} jump mark-for-masquerade",
            ep.ip()
        );
        let _ = writeln!(
            s,
            "add rule {TABLE} {chain} meta l4proto {proto} dnat to {ep}"
        );
    }
}

/// The table, base chains, helper chains, sets and maps.
fn skeleton(cfg: &ProxyConfig, s: &mut String) {
    let mark = cfg.masquerade_mark;
    let _ = writeln!(
        s,
        "add table {TABLE} {{ comment \"rules for kube-proxy\" ; }}"
    );
    for (chain, ty, hook, prio) in [
        ("filter-prerouting", "filter", "prerouting", "-110"),
        ("filter-input", "filter", "input", "-110"),
        ("filter-forward", "filter", "forward", "-110"),
        ("filter-output", "filter", "output", "-110"),
        ("filter-output-post-dnat", "filter", "output", "-90"),
        ("nat-prerouting", "nat", "prerouting", "-100"),
        ("nat-output", "nat", "output", "-100"),
        ("nat-postrouting", "nat", "postrouting", "100"),
    ] {
        let _ = writeln!(
            s,
            "add chain {TABLE} {chain} {{ type {ty} hook {hook} priority {prio} ; }}"
        );
    }
    for chain in [
        "mark-for-masquerade",
        "masquerading",
        "services",
        "service-endpoints-check",
        "nodeport-endpoints-check",
        "firewall-check",
        "cluster-ips-check",
        "reject-chain",
    ] {
        let _ = writeln!(s, "add chain {TABLE} {chain}");
    }
    let _ = writeln!(
        s,
        "add set {TABLE} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"
    );
    let _ = writeln!(s, "add set {TABLE} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}");
    let addr_map = "type ipv4_addr . inet_proto . inet_service : verdict";
    let port_map = "type inet_proto . inet_service : verdict";
    for (map, ty, comment) in [
        (
            "service-ips",
            addr_map,
            "ClusterIP, ExternalIP and LoadBalancer IP traffic",
        ),
        ("service-nodeports", port_map, "NodePort traffic"),
        (
            "no-endpoint-services",
            addr_map,
            "vmap to drop or reject packets to services with no endpoints",
        ),
        (
            "no-endpoint-nodeports",
            port_map,
            "vmap to drop or reject packets to service nodeports with no endpoints",
        ),
        (
            "firewall-ips",
            addr_map,
            "destinations that are subject to LoadBalancerSourceRanges",
        ),
    ] {
        let _ = writeln!(
            s,
            "add map {TABLE} {map} {{ {ty} ; comment \"{comment}\" ; }}"
        );
    }
    let rules: [(&str, String); 19] = [
        (
            "filter-prerouting",
            "ct state new jump firewall-check".into(),
        ),
        (
            "filter-input",
            "ct state new jump nodeport-endpoints-check".into(),
        ),
        (
            "filter-input",
            "ct state new jump service-endpoints-check".into(),
        ),
        (
            "filter-forward",
            "ct state new jump service-endpoints-check".into(),
        ),
        (
            "filter-forward",
            "ct state new jump cluster-ips-check".into(),
        ),
        (
            "filter-output",
            "ct state new jump service-endpoints-check".into(),
        ),
        ("filter-output", "ct state new jump firewall-check".into()),
        (
            "filter-output-post-dnat",
            "ct state new jump cluster-ips-check".into(),
        ),
        ("nat-prerouting", "jump services".into()),
        ("nat-output", "jump services".into()),
        ("nat-postrouting", "jump masquerading".into()),
        ("mark-for-masquerade", format!("mark set mark or {mark:#x}")),
        ("masquerading", format!("mark and {mark:#x} == 0 return")),
        ("masquerading", format!("mark set mark xor {mark:#x}")),
        ("masquerading", "masquerade fully-random".into()),
        (
            "services",
            "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
        ),
        (
            "services",
            "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports".into(),
        ),
        (
            "service-endpoints-check",
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into(),
        ),
        (
            "nodeport-endpoints-check",
            "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports".into(),
        ),
    ];
    for (chain, rule) in rules {
        let _ = writeln!(s, "add rule {TABLE} {chain} {rule}");
    }
    let _ = writeln!(
        s,
        "add rule {TABLE} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips"
    );
    let _ = writeln!(s, "add rule {TABLE} reject-chain reject");
    let _ = writeln!(
        s,
        "add rule {TABLE} cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\""
    );
    let _ = writeln!(
        s,
        "add rule {TABLE} cluster-ips-check ip daddr {} drop comment \"Drop traffic to unallocated ClusterIPs\"",
        cfg.service_cidr
    );
    for ip in &cfg.node_ips {
        let _ = writeln!(s, "add element {TABLE} nodeport-ips {{ {ip} }}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeproxy::tests_support::two_services;

    #[test]
    fn chain_names_follow_hash_and_truncate() {
        let (_, ports) = two_services();
        let svc = service_chain(&ports[0]);
        assert!(svc.starts_with("service-"), "{svc}");
        assert!(svc.ends_with("-default/web/tcp/http"), "{svc}");
        assert_eq!(
            svc.len(),
            "service-".len() + 8 + "-default/web/tcp/http".len()
        );
        let ep = endpoint_chain(&ports[0], &ports[0].endpoints[0]);
        assert!(
            ep.ends_with("-default/web/tcp/http__10.200.1.2/8080"),
            "{ep}"
        );
        assert_eq!(&svc[8..16], &external_chain(&ports[0])[9..17]);
    }

    #[test]
    fn two_services_render_kube_proxys_layout() {
        let (cfg, ports) = two_services();
        let text = full_sync(&cfg, &ports);
        let web = &ports[0];
        let svc = service_chain(web);
        let ext = external_chain(web);
        let e1 = endpoint_chain(web, &web.endpoints[0]);
        let e2 = endpoint_chain(web, &web.endpoints[1]);
        for line in [
            "add table ip kube-proxy { comment \"rules for kube-proxy\" ; }".to_owned(),
            "add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }".into(),
            "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips".into(),
            "add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports".into(),
            "add rule ip kube-proxy masquerading masquerade fully-random".into(),
            "add element ip kube-proxy nodeport-ips { 192.168.10.1 }".into(),
            format!("add element ip kube-proxy service-ips {{ 10.96.0.10 . tcp . 80 : goto {svc} }}"),
            format!("add element ip kube-proxy service-nodeports {{ tcp . 30080 : goto {ext} }}"),
            format!("add rule ip kube-proxy {svc} ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade"),
            format!("add rule ip kube-proxy {svc} numgen random mod 2 vmap {{ 0 : goto {e1}, 1 : goto {e2} }}"),
            format!("add rule ip kube-proxy {ext} jump mark-for-masquerade"),
            format!("add rule ip kube-proxy {ext} goto {svc}"),
            format!("add rule ip kube-proxy {e1} ip saddr 10.200.1.2 jump mark-for-masquerade"),
            format!("add rule ip kube-proxy {e1} meta l4proto tcp dnat to 10.200.1.2:8080"),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // dns has no NodePort.
        assert!(!text.contains(&external_chain(&ports[1])));
        assert!(text.contains(&format!(
            "add element ip kube-proxy service-ips {{ 10.96.0.11 . tcp . 53 : goto {} }}",
            service_chain(&ports[1])
        )));
    }

    #[test]
    fn endpoint_change_rewrites_one_service_and_flushes_the_removed_endpoint() {
        let (cfg, ports) = two_services();
        let before = ports[0].clone();
        let mut after = before.clone();
        after.endpoints[1] = "10.200.3.2:8080".parse().unwrap();
        let tx = endpoint_change(&cfg, &before, &after);
        let new_ep = endpoint_chain(&after, &after.endpoints[1]);
        assert!(tx.contains(&format!("add chain ip kube-proxy {new_ep}\n")));
        assert!(tx.contains(&format!(
            "flush chain ip kube-proxy {}\n",
            service_chain(&after)
        )));
        assert!(tx.ends_with(&format!(
            "flush chain ip kube-proxy {}\n",
            endpoint_chain(&before, &before.endpoints[1])
        )));
        assert!(!tx.contains("service-ips"), "map elements are untouched");
        assert!(
            !tx.contains(&service_chain(&ports[1])),
            "other services untouched"
        );
    }
}
