//! Reading Kubernetes objects from a directory of manifests: every
//! `*.yaml`, `*.yml` and `*.json` file, multi-document YAML, and `kind: List`
//! unwrapped, exactly as `kubectl get -o yaml` prints them.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;

/// The objects the agent uses; every other kind is ignored.
#[derive(Debug, Clone)]
pub enum Object {
    /// A `v1 Service`.
    Service(Box<Service>),
    /// A `discovery.k8s.io/v1 EndpointSlice`.
    EndpointSlice(Box<EndpointSlice>),
    /// A `v1 Pod` (for its hostPorts).
    Pod(Box<Pod>),
    /// A `v1 Node` (this node's, for its `topology.kubernetes.io/zone`
    /// label).
    Node(Box<Node>),
}

impl Object {
    /// `KIND NAMESPACE/NAME`, for log lines.
    pub fn describe(&self) -> String {
        let (kind, meta) = match self {
            Object::Service(s) => ("Service", &s.metadata),
            Object::EndpointSlice(e) => ("EndpointSlice", &e.metadata),
            Object::Pod(p) => ("Pod", &p.metadata),
            Object::Node(n) => ("Node", &n.metadata),
        };
        let name = meta.name.as_deref().unwrap_or("");
        match self {
            // Cluster-scoped.
            Object::Node(_) => format!("{kind} {name}"),
            _ => format!(
                "{kind} {}/{name}",
                meta.namespace.as_deref().unwrap_or("default")
            ),
        }
    }
}

/// An object and the file it came from.
#[derive(Debug, Clone)]
pub struct Sourced {
    /// The file.
    pub path: PathBuf,
    /// The object.
    pub object: Object,
}

/// A file or document that could not be read; the rest still applies.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The directory or file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML/JSON, or not a valid object of its kind.
    #[error("{path}: document {index}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 0-based document index within the file.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// What a directory holds: the objects read and the errors met on the way.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every Service, EndpointSlice and Pod, in file order.
    pub objects: Vec<Sourced>,
    /// Documents or files that were skipped.
    pub errors: Vec<ManifestError>,
    /// Documents of other kinds that were ignored (`KIND` and file).
    pub ignored: Vec<(String, PathBuf)>,
}

/// The largest manifest file read (16 MiB, ten times what the API server
/// stores for one object); a larger file is reported and skipped.
pub const MAX_FILE: u64 = 16 << 20;

/// The deepest `[`/`{` nesting a file may have. The YAML parser takes time
/// quadratic in the nesting depth (100 000 levels: minutes), and nothing
/// deeper than 128 levels can deserialize anyway; the count includes
/// brackets inside strings, so the limit is generous.
pub const MAX_NESTING: usize = 1000;

/// True for the file names the agent reads.
pub fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Reads every manifest file in `dir` (not recursive), in name order.
pub fn load_dir(dir: &Path) -> Result<Loaded, ManifestError> {
    let io = |source| ManifestError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_manifest(p))
        .collect();
    files.sort();
    let mut loaded = Loaded::default();
    for path in files {
        match read_bounded(&path) {
            Ok(Some(text)) => parse_into(&path, &text, &mut loaded),
            Ok(None) => loaded.errors.push(ManifestError::Parse {
                path,
                index: 0,
                message: format!("larger than {} MiB, not read", MAX_FILE >> 20),
            }),
            Err(source) => loaded.errors.push(ManifestError::Io { path, source }),
        }
    }
    Ok(loaded)
}

/// The file's text, or `None` when it is larger than [`MAX_FILE`] (also
/// when it grows past it while being read).
fn read_bounded(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    if f.metadata()?.len() > MAX_FILE {
        return Ok(None);
    }
    let mut text = String::new();
    (&mut f).take(MAX_FILE + 1).read_to_string(&mut text)?;
    Ok((text.len() as u64 <= MAX_FILE).then_some(text))
}

/// Parses one file's text (YAML, possibly multi-document, or JSON) into `out`.
pub fn parse_into(path: &Path, text: &str, out: &mut Loaded) {
    if nesting(text) > MAX_NESTING {
        out.errors.push(ManifestError::Parse {
            path: path.to_path_buf(),
            index: 0,
            message: format!("nested deeper than {MAX_NESTING} levels, not parsed"),
        });
        return;
    }
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                out.errors.push(ManifestError::Parse {
                    path: path.to_path_buf(),
                    index,
                    message: e.to_string(),
                });
                // A syntax error ends the stream: later documents cannot be located.
                break;
            }
        };
        add_value(path, index, value, out);
    }
}

/// The deepest nesting of `[` and `{` in `text` (brackets in strings and
/// comments count too).
fn nesting(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn add_value(path: &Path, index: usize, value: serde_yaml::Value, out: &mut Loaded) {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_string();
    let parse_err = |message: String| ManifestError::Parse {
        path: path.to_path_buf(),
        index,
        message,
    };
    let object = match kind.as_str() {
        "List" | "ServiceList" | "EndpointSliceList" | "PodList" => {
            match value.get("items").and_then(|i| i.as_sequence()) {
                Some(items) => {
                    for item in items.clone() {
                        add_value(path, index, item, out);
                    }
                }
                None => out.errors.push(parse_err(format!("{kind} without items"))),
            }
            return;
        }
        "Service" => serde_yaml::from_value(value).map(|s| Object::Service(Box::new(s))),
        "EndpointSlice" => {
            serde_yaml::from_value(value).map(|s| Object::EndpointSlice(Box::new(s)))
        }
        "Pod" => serde_yaml::from_value(value).map(|p| Object::Pod(Box::new(p))),
        "Node" => serde_yaml::from_value(value).map(|n| Object::Node(Box::new(n))),
        _ => {
            out.ignored.push((kind, path.to_path_buf()));
            return;
        }
    };
    match object {
        Ok(object) => out.objects.push(Sourced {
            path: path.to_path_buf(),
            object,
        }),
        Err(e) => out.errors.push(parse_err(format!("invalid {kind}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multi_document_yaml_lists_and_json() {
        let mut out = Loaded::default();
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: a, namespace: ns}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
apiVersion: v1
kind: List
items:
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: a-1, namespace: ns, labels: {kubernetes.io/service-name: a}}
  addressType: IPv4
  endpoints: [{addresses: [10.0.0.1]}]
  ports: [{port: 8080}]
"#;
        parse_into(Path::new("x.yaml"), yaml, &mut out);
        let json = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"b"},"spec":{"ports":[{"port":53,"protocol":"UDP"}]}}"#;
        parse_into(Path::new("y.json"), json, &mut out);
        let names: Vec<String> = out.objects.iter().map(|o| o.object.describe()).collect();
        assert_eq!(
            names,
            ["Service ns/a", "EndpointSlice ns/a-1", "Service default/b"]
        );
        assert_eq!(out.ignored.len(), 1);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
    }

    #[test]
    fn deeply_nested_files_are_refused_quickly() {
        let mut out = Loaded::default();
        let n = 200_000;
        let deep = format!("{}{}", "[".repeat(n), "]".repeat(n));
        let json = format!(
            "{{\"kind\":\"Service\",\"spec\":{}{}}}",
            "{\"a\":".repeat(n),
            "}".repeat(n)
        );
        let start = std::time::Instant::now();
        parse_into(Path::new("deep.yaml"), &deep, &mut out);
        parse_into(Path::new("deep.json"), &json, &mut out);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(out.errors.len(), 2);
        assert!(out.errors[1]
            .to_string()
            .contains("nested deeper than 1000"));
        // Ordinary nesting (and brackets in strings) still parse.
        let mut out = Loaded::default();
        let ok = "kind: Service\nmetadata: {name: a, annotations: {x: '[[[[{{{{'}}\nspec: {ports: [{port: 80}]}\n";
        parse_into(Path::new("ok.yaml"), ok, &mut out);
        assert_eq!(out.objects.len(), 1, "{:?}", out.errors);
    }

    #[test]
    fn oversized_files_are_skipped_with_an_error() {
        let d = tempfile::tempdir().unwrap();
        let big = std::fs::File::create(d.path().join("big.yaml")).unwrap();
        big.set_len(MAX_FILE + 1).unwrap();
        std::fs::write(
            d.path().join("ok.yaml"),
            "kind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n",
        )
        .unwrap();
        let out = load_dir(d.path()).unwrap();
        assert_eq!(out.objects.len(), 1);
        assert_eq!(out.errors.len(), 1);
        let msg = out.errors[0].to_string();
        assert!(
            msg.contains("big.yaml") && msg.contains("larger than 16 MiB"),
            "{msg}"
        );
    }

    #[test]
    fn bad_documents_are_reported_with_file_and_index() {
        let mut out = Loaded::default();
        let yaml = "kind: Service\nmetadata: {name: a}\nspec: {ports: [{port: notanumber}]}\n";
        parse_into(Path::new("bad.yaml"), yaml, &mut out);
        parse_into(Path::new("worse.yaml"), "kind: [unclosed", &mut out);
        assert_eq!(out.errors.len(), 2);
        let msg = out.errors[0].to_string();
        assert!(
            msg.starts_with("bad.yaml: document 0: invalid Service"),
            "{msg}"
        );
        assert!(out.errors[1].to_string().starts_with("worse.yaml"));
    }
}
