//! kube-proxy's `iptables` mode as `iptables-restore` input.
//!
//! [`jump_rules`] is what kube-proxy installs once (it uses `iptables -C/-I`;
//! here it is an `iptables-restore --noflush` input), [`full_sync`] is the
//! input of a full sync and [`partial_sync`] the input of a sync after some
//! services changed: kube-proxy (with `MinimizeIPTablesRestore`) rewrites the
//! top-level chains (`KUBE-SERVICES`, `KUBE-NODEPORTS`, the filter chains)
//! in full but only the per-service chains of changed services, and deletes
//! (`-X`) chains that went away. Both are loaded with
//! `iptables-restore --noflush`, as kube-proxy does.
//!
//! Chain names are kube-proxy's: `KUBE-SVC-`/`KUBE-EXT-` + the first 16
//! base32 characters of SHA-256(`ns/name:port` + protocol), `KUBE-SEP-` +
//! the same of SHA-256(`ns/name:port` + protocol + `ip:port`).

use std::fmt::Write;
use std::net::SocketAddrV4;

use super::{sha256_base32, ProxyConfig, ServicePort};

/// `KUBE-SVC-<hash>` of a service port.
pub fn svc_chain(sp: &ServicePort) -> String {
    format!(
        "KUBE-SVC-{}",
        hash16(&format!("{}{}", sp.name_string(), sp.proto_lower()))
    )
}

/// `KUBE-EXT-<hash>` of a service port (external traffic: NodePort).
pub fn ext_chain(sp: &ServicePort) -> String {
    format!(
        "KUBE-EXT-{}",
        hash16(&format!("{}{}", sp.name_string(), sp.proto_lower()))
    )
}

/// `KUBE-SEP-<hash>` of one endpoint of a service port.
pub fn sep_chain(sp: &ServicePort, ep: &SocketAddrV4) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&format!("{}{}{}", sp.name_string(), sp.proto_lower(), ep))
    )
}

fn hash16(s: &str) -> String {
    sha256_base32(s)[..16].to_owned()
}

/// kube-proxy's `computeProbability(n)`: `1/n` with ten decimals.
pub fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// The jumps from the built-in chains into kube-proxy's chains, as an
/// `iptables-restore --noflush` input (declares the chains it jumps to).
pub fn jump_rules() -> String {
    let mut s = String::new();
    s.push_str("*filter\n");
    for c in [
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-SERVICES",
        "KUBE-FORWARD",
        "KUBE-PROXY-FIREWALL",
    ] {
        let _ = writeln!(s, ":{c} - [0:0]");
    }
    let new = "-m conntrack --ctstate NEW";
    for (chain, cond, comment, target) in [
        (
            "INPUT",
            new,
            "kubernetes load balancer firewall",
            "KUBE-PROXY-FIREWALL",
        ),
        (
            "INPUT",
            "",
            "kubernetes health check service ports",
            "KUBE-NODEPORTS",
        ),
        (
            "INPUT",
            new,
            "kubernetes externally-visible service portals",
            "KUBE-EXTERNAL-SERVICES",
        ),
        (
            "FORWARD",
            new,
            "kubernetes load balancer firewall",
            "KUBE-PROXY-FIREWALL",
        ),
        ("FORWARD", "", "kubernetes forwarding rules", "KUBE-FORWARD"),
        (
            "FORWARD",
            new,
            "kubernetes service portals",
            "KUBE-SERVICES",
        ),
        (
            "FORWARD",
            new,
            "kubernetes externally-visible service portals",
            "KUBE-EXTERNAL-SERVICES",
        ),
        (
            "OUTPUT",
            new,
            "kubernetes load balancer firewall",
            "KUBE-PROXY-FIREWALL",
        ),
        ("OUTPUT", new, "kubernetes service portals", "KUBE-SERVICES"),
    ] {
        let cond = if cond.is_empty() {
            String::new()
        } else {
            format!(" {cond}")
        };
        let _ = writeln!(
            s,
            "-I {chain}{cond} -m comment --comment \"{comment}\" -j {target}"
        );
    }
    s.push_str("COMMIT\n*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n");
    s.push_str("-I OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    s.push_str(
        "-I PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    s.push_str(
        "-I POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
    );
    s.push_str("COMMIT\n");
    s
}

/// The `iptables-restore --noflush` input of a full sync of `ports`.
pub fn full_sync(cfg: &ProxyConfig, ports: &[ServicePort]) -> String {
    render(cfg, ports, &|_| true, &[])
}

/// The input of a partial sync: the top-level chains in full, the
/// per-service chains of the ports for which `changed(index)` is true, and
/// `-X` for each chain in `stale` (e.g. the `KUBE-SEP` of a removed
/// endpoint, from [`stale_chains`]).
pub fn partial_sync(
    cfg: &ProxyConfig,
    ports: &[ServicePort],
    changed: &dyn Fn(usize) -> bool,
    stale: &[String],
) -> String {
    render(cfg, ports, changed, stale)
}

/// The per-service chains of `before` that `after` no longer has.
pub fn stale_chains(before: &[ServicePort], after: &[ServicePort]) -> Vec<String> {
    let now: std::collections::HashSet<String> = after.iter().flat_map(chains_of).collect();
    let mut stale: Vec<String> = before
        .iter()
        .flat_map(chains_of)
        .filter(|c| !now.contains(c))
        .collect();
    stale.sort();
    stale.dedup();
    stale
}

fn chains_of(sp: &ServicePort) -> Vec<String> {
    let mut v = vec![svc_chain(sp)];
    if sp.node_port.is_some() {
        v.push(ext_chain(sp));
    }
    v.extend(sp.endpoints.iter().map(|ep| sep_chain(sp, ep)));
    v
}

fn render(
    cfg: &ProxyConfig,
    ports: &[ServicePort],
    changed: &dyn Fn(usize) -> bool,
    stale: &[String],
) -> String {
    let mark = cfg.masquerade_mark;
    // Roughly 120 bytes per rule, ~4 + 3 * endpoints rules per port.
    let eps: usize = ports.iter().map(|p| p.endpoints.len()).sum();
    let mut chains = String::with_capacity(64 * (ports.len() * 2 + eps) + 256);
    let mut rules = String::with_capacity(140 * (ports.len() * 5 + eps * 3) + 1024);

    // filter table
    let mut filter = String::new();
    filter.push_str("*filter\n");
    for c in [
        "KUBE-NODEPORTS",
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-PROXY-FIREWALL",
    ] {
        let _ = writeln!(filter, ":{c} - [0:0]");
    }
    filter.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    let _ = writeln!(
        filter,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark:#x}/{mark:#x} -j ACCEPT"
    );
    filter.push_str("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");

    // nat table: fixed chains
    chains.push_str("*nat\n");
    for c in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        let _ = writeln!(chains, ":{c} - [0:0]");
    }
    let _ = writeln!(
        rules,
        "-A KUBE-POSTROUTING -m mark ! --mark {mark:#x}/{mark:#x} -j RETURN"
    );
    let _ = writeln!(rules, "-A KUBE-POSTROUTING -j MARK --xor-mark {mark:#x}");
    rules.push_str("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
    let _ = writeln!(rules, "-A KUBE-MARK-MASQ -j MARK --or-mark {mark:#x}");

    for (i, sp) in ports.iter().enumerate() {
        let name = sp.name_string();
        let proto = sp.proto_lower();
        let svc = svc_chain(sp);
        if sp.endpoints.is_empty() {
            // No endpoints: only filter REJECT rules, no nat chains.
            let _ = writeln!(
                filter,
                "-A KUBE-SERVICES -m comment --comment \"{name} has no endpoints\" -m {proto} -p {proto} -d {}/32 --dport {} -j REJECT",
                sp.cluster_ip, sp.port
            );
            if let Some(np) = sp.node_port {
                let _ = writeln!(
                    filter,
                    "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"{name} has no endpoints\" -m addrtype --dst-type LOCAL -m {proto} -p {proto} --dport {np} -j REJECT"
                );
            }
            continue;
        }
        // The top-level jumps are written on every sync.
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" -m {proto} -p {proto} -d {}/32 --dport {} -j {svc}",
            sp.cluster_ip, sp.port
        );
        if let Some(np) = sp.node_port {
            let _ = writeln!(
                rules,
                "-A KUBE-NODEPORTS -m comment --comment {name} -m {proto} -p {proto} --dport {np} -j {}",
                ext_chain(sp)
            );
        }
        if !changed(i) {
            continue;
        }
        // Per-service chains, only for changed services.
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            rules,
            "-A {svc} -m comment --comment \"{name} cluster IP\" -m {proto} -p {proto} -d {}/32 --dport {} ! -s {} -j KUBE-MARK-MASQ",
            sp.cluster_ip, sp.port, cfg.cluster_cidr
        );
        let n = sp.endpoints.len();
        for (k, ep) in sp.endpoints.iter().enumerate() {
            let sep = sep_chain(sp, ep);
            if k + 1 < n {
                let _ = writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{name} -> {ep}\" -m statistic --mode random --probability {} -j {sep}",
                    probability(n - k)
                );
            } else {
                let _ = writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{name} -> {ep}\" -j {sep}"
                );
            }
        }
        if sp.node_port.is_some() {
            let ext = ext_chain(sp);
            let _ = writeln!(chains, ":{ext} - [0:0]");
            let _ = writeln!(
                rules,
                "-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" -j KUBE-MARK-MASQ"
            );
            let _ = writeln!(rules, "-A {ext} -j {svc}");
        }
        for ep in &sp.endpoints {
            let sep = sep_chain(sp, ep);
            let _ = writeln!(chains, ":{sep} - [0:0]");
            let _ = writeln!(
                rules,
                "-A {sep} -m comment --comment {name} -s {}/32 -j KUBE-MARK-MASQ",
                ep.ip()
            );
            let _ = writeln!(
                rules,
                "-A {sep} -m comment --comment {name} -m {proto} -p {proto} -j DNAT --to-destination {ep}"
            );
        }
    }
    rules.push_str("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n");
    // As kube-proxy: a chain line flushes the stale chain, then -X deletes it.
    for c in stale {
        let _ = writeln!(chains, ":{c} - [0:0]");
        let _ = writeln!(rules, "-X {c}");
    }
    filter.push_str("COMMIT\n");
    let mut out = filter;
    out.push_str(&chains);
    out.push_str(&rules);
    out.push_str("COMMIT\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeproxy::tests_support::two_services;

    #[test]
    fn probabilities_are_one_over_the_remaining_endpoints() {
        assert_eq!(probability(3), "0.3333333333");
        assert_eq!(probability(2), "0.5000000000");
        assert_eq!(probability(10), "0.1000000000");
    }

    #[test]
    fn two_services_render_kube_proxys_layout() {
        let (cfg, ports) = two_services();
        let text = full_sync(&cfg, &ports);
        let web = &ports[0];
        let svc = svc_chain(web);
        let ext = ext_chain(web);
        let sep1 = sep_chain(web, &web.endpoints[0]);
        let sep2 = sep_chain(web, &web.endpoints[1]);
        assert!(svc.starts_with("KUBE-SVC-") && svc.len() == 25, "{svc}");
        assert_eq!(&svc[9..], &ext[9..], "SVC and EXT share the hash");
        let expected_web = format!(
            "-A KUBE-SERVICES -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.10/32 --dport 80 -j {svc}\n\
             -A KUBE-NODEPORTS -m comment --comment default/web:http -m tcp -p tcp --dport 30080 -j {ext}\n\
             -A {svc} -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.10/32 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ\n\
             -A {svc} -m comment --comment \"default/web:http -> 10.200.1.2:8080\" -m statistic --mode random --probability 0.5000000000 -j {sep1}\n\
             -A {svc} -m comment --comment \"default/web:http -> 10.200.2.2:8080\" -j {sep2}\n\
             -A {ext} -m comment --comment \"masquerade traffic for default/web:http external destinations\" -j KUBE-MARK-MASQ\n\
             -A {ext} -j {svc}\n\
             -A {sep1} -m comment --comment default/web:http -s 10.200.1.2/32 -j KUBE-MARK-MASQ\n\
             -A {sep1} -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.200.1.2:8080\n"
        );
        assert!(text.contains(&expected_web), "{text}");
        for c in [&svc, &ext, &sep1, &sep2] {
            assert!(text.contains(&format!(":{c} - [0:0]\n")), "{c} declared");
        }
        // The second service has no NodePort: no EXT chain, no KUBE-NODEPORTS rule.
        let dns = &ports[1];
        assert!(!text.contains(&ext_chain(dns)));
        assert!(text.contains(&format!(
            "-d 10.96.0.11/32 --dport 53 -j {}",
            svc_chain(dns)
        )));
        // Masquerading and the last KUBE-SERVICES rule.
        assert!(text.contains("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n"));
        assert!(text.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n"));
        assert!(text.ends_with(
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\nCOMMIT\n"
        ));
        assert!(text.starts_with("*filter\n"));
    }

    #[test]
    fn partial_sync_rewrites_only_the_changed_service_and_deletes_stale_chains() {
        let (cfg, before) = two_services();
        let mut after = before.clone();
        after[0].endpoints[1] = "10.200.3.2:8080".parse().unwrap();
        let stale = stale_chains(&before, &after);
        assert_eq!(stale, vec![sep_chain(&before[0], &before[0].endpoints[1])]);
        let text = partial_sync(&cfg, &after, &|i| i == 0, &stale);
        assert!(text.contains(&format!(":{} - [0:0]", svc_chain(&after[0]))));
        assert!(!text.contains(&format!(":{} - [0:0]", svc_chain(&after[1]))));
        // The unchanged service is still jumped to from KUBE-SERVICES.
        assert!(text.contains(&format!("-j {}\n", svc_chain(&after[1]))));
        assert!(text.contains(&format!("-X {}\n", stale[0])));
    }
}
