//! From a manifest directory to a [`DesiredState`], isolating bad input:
//! a bad file keeps its last good objects, a service that fails translation
//! or lb-core validation keeps its last good version (or is left out when it
//! never had one), and a frontend claimed by two services stays with the one
//! programmed first (then name order). Everything else still applies.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use lb_core::{DesiredState, L3n4Addr, NodeConfig, Service, ServiceName};

use crate::capacity::{Budget, Footprint, MapLimits};
use crate::manifests::{self, ManifestError, Object, Sourced};
use crate::translate;

/// The desired state of one pass over the directory.
#[derive(Debug)]
pub struct Pass {
    /// What to program.
    pub desired: DesiredState,
    /// Services in it.
    pub services: usize,
    /// Everything that was skipped or kept from before, one line each,
    /// naming file and object.
    pub problems: Vec<String>,
    /// The zone topology-aware routing used, and where it came from.
    pub zone: Option<(String, ZoneSource)>,
    /// The services of the previous pass that this one keeps, in their
    /// previous version: applying them first removes what this pass drops
    /// (a delete-only step) when the full change does not fit the maps at
    /// its peak (new entries are written before stale ones go).
    pub kept_before: Vec<Service>,
}

/// Where the node's topology zone came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneSource {
    /// The `--zone` flag (it wins over the label).
    Flag,
    /// The `topology.kubernetes.io/zone` label of this node's Node object.
    NodeLabel,
}

/// The well-known label holding a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The manifest directory plus the last good version of every file and
/// service.
#[derive(Debug)]
pub struct Sources {
    dir: PathBuf,
    node: NodeConfig,
    files: BTreeMap<PathBuf, Vec<Sourced>>,
    services: BTreeMap<ServiceName, Service>,
    /// The file each object (`KIND NAMESPACE/NAME`) came from last pass.
    defined_in: HashMap<String, PathBuf>,
    /// The zone given by flag, which wins over the Node's label.
    flag_zone: Option<String>,
    limits: Option<MapLimits>,
}

fn error_path(e: &ManifestError) -> &Path {
    match e {
        ManifestError::Io { path, .. } | ManifestError::Parse { path, .. } => path,
    }
}

impl Sources {
    /// Sources for `dir` on `node`; nothing is read yet.
    pub fn new(dir: impl Into<PathBuf>, node: NodeConfig) -> Self {
        Sources {
            dir: dir.into(),
            flag_zone: node.zone.clone(),
            node,
            files: BTreeMap::new(),
            services: BTreeMap::new(),
            defined_in: HashMap::new(),
            limits: None,
        }
    }

    /// Admits services only while they fit maps of these sizes: a service
    /// that does not is left out (with a problem line naming the map), the
    /// others still apply.
    pub fn with_limits(mut self, limits: MapLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The manifest directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the directory and builds the desired state. Fails only when the
    /// directory cannot be read or the combined state is refused; the caller
    /// then keeps what is programmed.
    pub fn pass(&mut self) -> Result<Pass, String> {
        let loaded = manifests::load_dir(&self.dir).map_err(|e| e.to_string())?;
        self.pass_loaded(loaded)
    }

    /// Builds the desired state from objects read elsewhere (an API server
    /// watch), with the same isolation as [`Sources::pass`].
    pub fn pass_loaded(&mut self, loaded: manifests::Loaded) -> Result<Pass, String> {
        let mut problems: Vec<String> = Vec::new();
        for (kind, path) in &loaded.ignored {
            tracing::debug!(file = %path.display(), "ignoring a {kind}");
        }

        // Files: a file with any error keeps its last good objects.
        let bad: BTreeSet<PathBuf> = loaded
            .errors
            .iter()
            .map(|e| error_path(e).to_path_buf())
            .collect();
        for e in &loaded.errors {
            problems.push(format!("skipped {e}"));
        }
        let mut files: BTreeMap<PathBuf, Vec<Sourced>> = BTreeMap::new();
        for o in loaded.objects {
            files.entry(o.path.clone()).or_default().push(o);
        }
        for path in &bad {
            if let Some(old) = self.files.get(path) {
                problems.push(format!(
                    "{}: keeping its last good version ({} objects)",
                    path.display(),
                    old.len()
                ));
                files.insert(path.clone(), old.clone());
            }
        }
        self.files = files;

        // Objects, each name once: the file that defined it last pass keeps
        // it (a new file cannot take an object over), otherwise the first
        // file in name order.
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        for o in self.files.values().flatten() {
            let what = o.object.describe();
            if self.defined_in.get(&what) == Some(&o.path) {
                seen.insert(what, o.path.clone());
            }
        }
        let (mut svcs, mut slices, mut pods) = (vec![], vec![], vec![]);
        let mut label_zone: Option<String> = None;
        let mut taken: BTreeSet<String> = BTreeSet::new();
        for o in self.files.values().flatten() {
            let what = o.object.describe();
            let first = seen.entry(what.clone()).or_insert_with(|| o.path.clone());
            if *first != o.path || !taken.insert(what.clone()) {
                problems.push(format!(
                    "{}: {what}: already defined in {}, ignored",
                    o.path.display(),
                    first.display()
                ));
                continue;
            }
            match &o.object {
                Object::Service(s) => svcs.push(s.as_ref()),
                Object::EndpointSlice(s) => slices.push(s.as_ref()),
                Object::Pod(p) => pods.push(p.as_ref()),
                Object::Node(n) => {
                    if n.metadata.name.as_deref() == Some(self.node.node_name.as_str()) {
                        label_zone = n
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(ZONE_LABEL))
                            .filter(|z| !z.is_empty())
                            .cloned();
                    }
                }
            }
        }
        let zone = match (&self.flag_zone, label_zone) {
            (Some(z), _) => Some((z.clone(), ZoneSource::Flag)),
            (None, Some(z)) => Some((z, ZoneSource::NodeLabel)),
            (None, None) => None,
        };
        self.node.zone = zone.as_ref().map(|(z, _)| z.clone());
        self.defined_in = seen.clone();
        let file_of = |what: &str| {
            seen.get(what)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| self.dir.display().to_string())
        };

        let t = translate::translate(&svcs, &slices, &pods, &self.node.node_name);
        for s in &t.skipped {
            problems.push(format!("{}: skipped {s}", file_of(&s.object)));
        }
        let mut fresh: BTreeMap<ServiceName, Service> = BTreeMap::new();
        for svc in t.services {
            fresh.insert(svc.name.clone(), svc);
        }

        // Candidates: unchanged incumbents, then changed ones (so neither a
        // newcomer nor a growing incumbent can take what an unchanged one
        // holds: frontends or map room), then newcomers, each group in name
        // order.
        let mut order: Vec<ServiceName> = Vec::new();
        let failed: BTreeSet<&ServiceName> = t.failed.iter().collect();
        let mut changed: Vec<ServiceName> = Vec::new();
        for (name, old) in &self.services {
            match fresh.get(name) {
                Some(new) if new == old => order.push(name.clone()),
                Some(_) => changed.push(name.clone()),
                None if failed.contains(name) => changed.push(name.clone()),
                None => {}
            }
        }
        order.extend(changed);
        for name in fresh.keys() {
            if !self.services.contains_key(name) {
                order.push(name.clone());
            }
        }

        let mut owners: BTreeMap<L3n4Addr, ServiceName> = BTreeMap::new();
        let mut accepted: BTreeMap<ServiceName, Service> = BTreeMap::new();
        let mut budget = self.limits.map(Budget::new);
        for name in order {
            let what = format!("Service {name}");
            let mut versions: Vec<&Service> = Vec::new();
            if let Some(s) = fresh.get(&name) {
                versions.push(s);
            }
            if let Some(s) = self.services.get(&name) {
                if versions.first().is_none_or(|v| *v != s) {
                    versions.push(s);
                }
            }
            let mut reasons = Vec::new();
            let old = self.services.get(&name);
            for (i, svc) in versions.iter().enumerate() {
                match self.check(svc, old, &owners, budget.as_mut()) {
                    Ok(addrs) => {
                        let is_old = i > 0 || !fresh.contains_key(&name);
                        if is_old {
                            let why = if reasons.is_empty() {
                                String::new()
                            } else {
                                format!(" (the new one: {})", reasons.join("; "))
                            };
                            problems.push(format!(
                                "{}: {what}: keeping its last good version{why}",
                                file_of(&what)
                            ));
                        }
                        for a in addrs {
                            owners.insert(a, name.clone());
                        }
                        accepted.insert(name.clone(), (*svc).clone());
                        break;
                    }
                    Err(r) => reasons.push(r),
                }
            }
            if !accepted.contains_key(&name) {
                for r in reasons {
                    problems.push(format!("{}: {what}: left out: {r}", file_of(&what)));
                }
            }
        }

        let list: Vec<Service> = accepted.values().cloned().collect();
        let desired = DesiredState::build(&self.node, &list).map_err(|e| e.to_string())?;
        let kept_before = self
            .services
            .iter()
            .filter(|(n, _)| accepted.contains_key(*n))
            .map(|(_, s)| s.clone())
            .collect();
        self.services = accepted;
        Ok(Pass {
            desired,
            services: list.len(),
            problems,
            zone,
            kept_before,
        })
    }

    /// Validates one service alone, checks its frontends against those
    /// already taken and, with map limits, that it fits what is left of
    /// them (`old`: its programmed version, charged too while it changes);
    /// returns its frontend addresses.
    fn check(
        &self,
        svc: &Service,
        old: Option<&Service>,
        owners: &BTreeMap<L3n4Addr, ServiceName>,
        budget: Option<&mut Budget>,
    ) -> Result<Vec<L3n4Addr>, String> {
        let alone = DesiredState::build(&self.node, std::slice::from_ref(svc))
            .map_err(|e| e.to_string())?;
        let addrs: BTreeSet<L3n4Addr> = alone.frontends.keys().map(|k| k.addr).collect();
        for a in &addrs {
            if let Some(owner) = owners.get(a) {
                return Err(format!("frontend {a} already belongs to {owner}"));
            }
        }
        if let Some(budget) = budget {
            let mut f = Footprint::of(&alone);
            if let Some(old) = old.filter(|o| *o != svc) {
                if let Ok(o) = DesiredState::build(&self.node, std::slice::from_ref(old)) {
                    f = f.during_change_from(&Footprint::of(&o));
                }
            }
            budget.admit(&f)?;
        }
        Ok(addrs.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn node() -> NodeConfig {
        NodeConfig::new("node-1", vec!["192.168.10.1".parse().unwrap()])
    }

    fn svc(name: &str, ip: &str, node_port: Option<u16>) -> String {
        let (kind, np) = match node_port {
            Some(p) => ("NodePort", format!(", nodePort: {p}")),
            None => ("ClusterIP", String::new()),
        };
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
spec: {{type: {kind}, clusterIP: {ip}, ports: [{{name: http, port: 80{np}}}]}}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [10.200.1.2]}}]\n"
        )
    }

    fn names(p: &Pass) -> Vec<String> {
        let mut v: Vec<String> = p
            .desired
            .frontends
            .values()
            .map(|f| f.service.to_string())
            .collect();
        v.dedup();
        v
    }

    #[test]
    fn the_zone_comes_from_this_nodes_label_unless_a_flag_gives_it() {
        let d = tempfile::tempdir().unwrap();
        let zoned = "apiVersion: v1\nkind: Service\nmetadata: {name: z, namespace: default}\n\
spec: {clusterIP: 10.96.0.9, ports: [{port: 80}], trafficDistribution: PreferClose}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
metadata: {name: z-1, namespace: default, labels: {kubernetes.io/service-name: z}}\n\
addressType: IPv4\nports: [{port: 8080}]\nendpoints:\n\
- {addresses: [10.200.1.2], zone: zone-a}\n- {addresses: [10.200.2.2], zone: zone-b}\n";
        let nodes = "kind: Node\napiVersion: v1\nmetadata: {name: node-2, labels: {topology.kubernetes.io/zone: zone-b}}\n---\n\
kind: Node\napiVersion: v1\nmetadata: {name: node-1, labels: {topology.kubernetes.io/zone: zone-a}}\n";
        fs::write(d.path().join("svc.yaml"), zoned).unwrap();
        let selectable = |p: &Pass| {
            let f = p.desired.frontends.values().next().unwrap();
            f.backends[..f.selectable]
                .iter()
                .map(|b| b.addr.addr.to_string())
                .collect::<Vec<_>>()
        };
        // No Node object, no flag: topology is off.
        let mut s = Sources::new(d.path(), node());
        let p = s.pass().unwrap();
        assert_eq!(p.zone, None);
        assert_eq!(selectable(&p).len(), 2);
        // This node's label (not node-2's) gives the zone.
        fs::write(d.path().join("nodes.yaml"), nodes).unwrap();
        let p = s.pass().unwrap();
        assert_eq!(p.zone, Some(("zone-a".into(), ZoneSource::NodeLabel)));
        assert_eq!(selectable(&p), ["10.200.1.2"]);
        // A flag wins over the label.
        let mut flagged = node();
        flagged.zone = Some("zone-b".into());
        let p = Sources::new(d.path(), flagged).pass().unwrap();
        assert_eq!(p.zone, Some(("zone-b".into(), ZoneSource::Flag)));
        assert_eq!(selectable(&p), ["10.200.2.2"]);
        // The label goes away: so does the zone.
        fs::remove_file(d.path().join("nodes.yaml")).unwrap();
        let p = s.pass().unwrap();
        assert_eq!(p.zone, None);
    }

    #[test]
    fn bad_services_are_left_out_and_the_rest_applies() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.yaml"), svc("a", "10.96.0.1", Some(30080))).unwrap();
        // Out of the NodePort range, and a duplicate of a's NodePort.
        fs::write(d.path().join("b.yaml"), svc("b", "10.96.0.2", Some(80))).unwrap();
        fs::write(d.path().join("c.yaml"), svc("c", "10.96.0.3", Some(30080))).unwrap();
        fs::write(d.path().join("d.yaml"), "kind: [unclosed").unwrap();
        let mut s = Sources::new(d.path(), node());
        let p = s.pass().unwrap();
        assert_eq!(names(&p), ["default/a"]);
        let all = p.problems.join("\n");
        assert!(all.contains("b.yaml: Service default/b: left out"), "{all}");
        assert!(
            all.contains("c.yaml: Service default/c: left out: frontend 0.0.0.0:30080/TCP already belongs to default/a"),
            "{all}"
        );
        assert!(all.contains("d.yaml: document 0"), "{all}");
    }

    /// A service larger than a map, and one that no longer fits, are left
    /// out with the map named; the others stay; a service growing past the
    /// limit keeps its last good version.
    #[test]
    fn services_that_do_not_fit_the_maps_are_left_out_alone() {
        let d = tempfile::tempdir().unwrap();
        let many = |name: &str, ip: &str, n: usize| {
            let eps: Vec<String> = (0..n)
                .map(|i| {
                    format!(
                        "{{addresses: [10.201.{name_i}.{}]}}",
                        i + 1,
                        name_i = name.len()
                    )
                })
                .collect();
            format!(
                "kind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
spec: {{clusterIP: {ip}, ports: [{{name: http, port: 80}}]}}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]\n",
                eps.join(", ")
            )
        };
        fs::write(d.path().join("a.yaml"), svc("a", "10.96.0.1", None)).unwrap();
        fs::write(d.path().join("big.yaml"), many("big", "10.96.0.2", 12)).unwrap();
        fs::write(d.path().join("c.yaml"), svc("c", "10.96.0.3", None)).unwrap();
        let limits = MapLimits {
            services: 10,
            backends: 100,
            rev_nat: 100,
            maglev: 10,
            src_range: 10,
        };
        let mut s = Sources::new(d.path(), node()).with_limits(limits);
        let p = s.pass().unwrap();
        assert_eq!(names(&p), ["default/a", "default/c"]);
        let all = p.problems.join("\n");
        assert!(
            all.contains("big.yaml: Service default/big: left out: map lb4_services too small: the service needs 13 entries, the map holds 10"),
            "{all}"
        );
        // 4 of 10 entries used: a 7-entry newcomer does not fit, a 5-entry one does.
        fs::write(d.path().join("d.yaml"), many("dd", "10.96.0.4", 6)).unwrap();
        fs::write(d.path().join("e.yaml"), many("eee", "10.96.0.5", 4)).unwrap();
        let p = s.pass().unwrap();
        assert_eq!(names(&p), ["default/a", "default/c", "default/eee"]);
        let all = p.problems.join("\n");
        assert!(all.contains("Service default/dd: left out: map lb4_services is full: the service needs 7 entries, 4 of 10"), "{all}");
        // a grows past what is left: it keeps its 1-backend version.
        fs::write(d.path().join("a.yaml"), many("a", "10.96.0.1", 5)).unwrap();
        let p = s.pass().unwrap();
        assert_eq!(names(&p), ["default/a", "default/c", "default/eee"]);
        assert_eq!(
            p.desired.frontends.values().next().unwrap().backends.len(),
            1
        );
        let all = p.problems.join("\n");
        assert!(all.contains("Service default/a: keeping its last good version (the new one: map lb4_services is full"), "{all}");
    }

    #[test]
    fn incumbents_keep_their_frontends_and_bad_files_their_last_good_state() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("z.yaml"), svc("z", "10.96.0.1", Some(30080))).unwrap();
        let mut s = Sources::new(d.path(), node());
        assert_eq!(names(&s.pass().unwrap()), ["default/z"]);
        // A newcomer that sorts first cannot steal z's NodePort.
        fs::write(d.path().join("a.yaml"), svc("a", "10.96.0.2", Some(30080))).unwrap();
        let p = s.pass().unwrap();
        assert_eq!(names(&p), ["default/z"]);
        // z's file breaks: its last good objects stay.
        fs::write(d.path().join("z.yaml"), "kind: Service\nspec: [").unwrap();
        let p = s.pass().unwrap();
        assert_eq!(names(&p), ["default/z"]);
        assert!(p
            .problems
            .iter()
            .any(|l| l.contains("keeping its last good version")));
        // z becomes invalid (NodePort out of range): its last good version stays.
        fs::write(d.path().join("z.yaml"), svc("z", "10.96.0.1", Some(8080))).unwrap();
        let p = s.pass().unwrap();
        assert_eq!(names(&p), ["default/z"]);
        // A new file that sorts first cannot take z's objects over.
        fs::write(d.path().join("0.yaml"), svc("z", "10.96.0.9", None)).unwrap();
        let p = s.pass().unwrap();
        assert_eq!(names(&p), ["default/z"]);
        let fe: Vec<String> = p
            .desired
            .frontends
            .keys()
            .map(|k| k.addr.to_string())
            .collect();
        assert!(fe.contains(&"10.96.0.1:80/TCP".to_string()), "{fe:?}");
        assert!(
            p.problems
                .iter()
                .any(|l| l.contains("0.yaml: Service default/z: already defined in")),
            "{:?}",
            p.problems
        );
        fs::remove_file(d.path().join("0.yaml")).unwrap();
        // z is deleted: a takes the NodePort.
        fs::remove_file(d.path().join("z.yaml")).unwrap();
        assert_eq!(names(&s.pass().unwrap()), ["default/a"]);
    }
}
