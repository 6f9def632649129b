//! Watching an API server with kube-rs instead of a manifest directory:
//! Services and EndpointSlices of every namespace, this node's Pods
//! (`spec.nodeName`) and this node's Node object (for its zone label), each
//! mirrored in a reflector store. Watch restarts
//! (410 Gone) relist; bookmarks keep the resource version fresh. Every
//! change wakes the agent, which reads the stores like a directory.

use std::path::PathBuf;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::manifests::{Loaded, Object, Sourced};

/// The mirrored objects and the watch tasks; dropping it stops watching.
pub struct KubeSource {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn mirror<K>(
    api: Api<K>,
    config: watcher::Config,
    tx: mpsc::UnboundedSender<()>,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let kind = K::kind(&());
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => {
                    let _ = tx.send(());
                }
                Err(e) => tracing::warn!("watching {kind}: {e} (the watch restarts)"),
            }
        }
    });
    (reader, task)
}

impl KubeSource {
    /// Starts watching with `client`; `node_name` selects the Pods. The
    /// receiver gets one message per applied watch event.
    pub fn start(client: Client, node_name: &str) -> (KubeSource, mpsc::UnboundedReceiver<()>) {
        let (tx, events) = mpsc::unbounded_channel();
        let cfg = || watcher::Config::default();
        let (services, t1) = mirror(Api::<Service>::all(client.clone()), cfg(), tx.clone());
        let (slices, t2) = mirror(Api::<EndpointSlice>::all(client.clone()), cfg(), tx.clone());
        let (pods, t3) = mirror(
            Api::<Pod>::all(client.clone()),
            cfg().fields(&format!("spec.nodeName={node_name}")),
            tx.clone(),
        );
        let (nodes, t4) = mirror(
            Api::<Node>::all(client),
            cfg().fields(&format!("metadata.name={node_name}")),
            tx,
        );
        let src = KubeSource {
            services,
            slices,
            pods,
            nodes,
            tasks: vec![t1, t2, t3, t4],
        };
        (src, events)
    }

    /// The mirrored objects, shaped like a directory read.
    pub fn objects(&self) -> Loaded {
        let mut out = Loaded::default();
        let src = |kind: &str| PathBuf::from(format!("kube:{kind}"));
        for s in self.services.state() {
            out.objects.push(Sourced {
                path: src("Service"),
                object: Object::Service(Box::new((*s).clone())),
            });
        }
        for s in self.slices.state() {
            out.objects.push(Sourced {
                path: src("EndpointSlice"),
                object: Object::EndpointSlice(Box::new((*s).clone())),
            });
        }
        for p in self.pods.state() {
            out.objects.push(Sourced {
                path: src("Pod"),
                object: Object::Pod(Box::new((*p).clone())),
            });
        }
        for n in self.nodes.state() {
            out.objects.push(Sourced {
                path: src("Node"),
                object: Object::Node(Box::new((*n).clone())),
            });
        }
        out.objects
            .sort_by_key(|o| (o.path.clone(), o.object.describe()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;
    use std::time::Duration;

    fn svc(name: &str, ip: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
               "spec": {"clusterIP": ip, "ports": [{"port": 80}]}})
    }

    fn list(kind: &str, rv: &str, items: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": kind,
            "metadata": {"resourceVersion": rv}, "items": items}))
        .unwrap()
    }

    fn lines(events: &[serde_json::Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            out.extend(serde_json::to_vec(e).unwrap());
            out.push(b'\n');
        }
        out
    }

    /// Replays recorded API answers: Services list, a watch with an event, a
    /// bookmark and a 410 Gone, the relist, then quiet watches.
    async fn api_server(
        mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
        seen: mpsc::UnboundedSender<String>,
    ) {
        let mut service_lists = 0;
        let mut service_watches = 0;
        let mut parked = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let uri = req.uri().to_string();
            let _ = seen.send(uri.clone());
            let watch = uri.contains("watch=true");
            let body: Option<Vec<u8>> = if uri.starts_with("/api/v1/services") {
                match (watch, service_lists, service_watches) {
                    (false, 0, _) => {
                        service_lists += 1;
                        Some(list("ServiceList", "10", vec![svc("web", "10.96.0.10")]))
                    }
                    (false, _, _) => {
                        service_lists += 1;
                        Some(list(
                            "ServiceList",
                            "30",
                            vec![svc("web", "10.96.0.10"), svc("late", "10.96.0.12")],
                        ))
                    }
                    (true, _, 0) => {
                        service_watches += 1;
                        Some(lines(&[
                            json!({"type": "ADDED", "object": svc("api", "10.96.0.11")}),
                            json!({"type": "BOOKMARK", "object": {"apiVersion": "v1", "kind": "Service",
                                   "metadata": {"resourceVersion": "20"}}}),
                            json!({"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status",
                                   "metadata": {}, "status": "Failure", "reason": "Expired",
                                   "message": "too old resource version: 10 (20)", "code": 410}}),
                        ]))
                    }
                    (true, _, _) => None,
                }
            } else if uri.starts_with("/apis/discovery.k8s.io/v1/endpointslices") && !watch {
                Some(list(
                    "EndpointSliceList",
                    "10",
                    vec![
                        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": "web-1", "namespace": "default", "resourceVersion": "1",
                                     "labels": {"kubernetes.io/service-name": "web"}},
                        "addressType": "IPv4", "ports": [{"port": 8080}],
                        "endpoints": [{"addresses": ["10.200.1.2"]}]}),
                    ],
                ))
            } else if uri.starts_with("/api/v1/pods") && !watch {
                assert!(
                    uri.contains("fieldSelector=spec.nodeName%3Dnode-1"),
                    "{uri}"
                );
                Some(list("PodList", "10", vec![]))
            } else if uri.starts_with("/api/v1/nodes") && !watch {
                assert!(
                    uri.contains("fieldSelector=metadata.name%3Dnode-1"),
                    "{uri}"
                );
                Some(list(
                    "NodeList",
                    "10",
                    vec![json!({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": "node-1", "resourceVersion": "1",
                                     "labels": {"topology.kubernetes.io/zone": "zone-a"}}})],
                ))
            } else {
                None
            };
            match body {
                Some(b) => send.send_response(Response::builder().body(Body::from(b)).unwrap()),
                // A watch with nothing to say: keep it open.
                None => parked.push(send),
            }
        }
    }

    #[tokio::test]
    async fn lists_watches_relists_after_410_and_follows_bookmarks() {
        let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        tokio::spawn(api_server(handle, seen_tx));
        let client = Client::new(mock, "default");
        let (src, mut events) = KubeSource::start(client, "node-1");
        let names = |src: &KubeSource| {
            let mut v: Vec<String> = src
                .objects()
                .objects
                .iter()
                .map(|o| o.object.describe())
                .collect();
            v.sort();
            v
        };
        let want = [
            "EndpointSlice default/web-1",
            "Node node-1",
            "Service default/late",
            "Service default/web",
        ];
        let done = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                events.recv().await.expect("watch tasks alive");
                if names(&src) == want {
                    break;
                }
            }
        })
        .await;
        let mut uris = Vec::new();
        while let Ok(u) = seen.try_recv() {
            uris.push(u);
        }
        assert!(
            done.is_ok(),
            "stores: {:?}, requests: {uris:#?}",
            names(&src)
        );
        // Watches ask for bookmarks; the 410 forced a relist, which replaced
        // the store (the object only the expired watch had seen is gone).
        let svc: Vec<&String> = uris
            .iter()
            .filter(|u| u.starts_with("/api/v1/services"))
            .collect();
        assert!(
            svc.iter().any(|u| u.contains("allowWatchBookmarks=true")),
            "{svc:#?}"
        );
        assert!(
            svc.iter().filter(|u| !u.contains("watch=true")).count() >= 2,
            "{svc:#?}"
        );
        // The objects translate like a directory's.
        let loaded = src.objects();
        let mut s = vec![];
        let mut e = vec![];
        for o in &loaded.objects {
            match &o.object {
                Object::Service(x) => s.push(x.as_ref()),
                Object::EndpointSlice(x) => e.push(x.as_ref()),
                Object::Pod(_) | Object::Node(_) => {}
            }
        }
        let t = lb_agent::translate::translate(&s, &e, &[], "node-1");
        let web = t
            .services
            .iter()
            .find(|x| x.name.to_string() == "default/web")
            .unwrap();
        assert_eq!(web.backends[0].addr.to_string(), "10.200.1.2:8080/TCP");
    }
}
