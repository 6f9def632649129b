//! Answers API queries without queueing them behind a long sync.
//!
//! The agent is one value behind a lock: a sync (seconds for thousands of
//! services, admitted one at a time) holds it from start to end. A query
//! that finds the lock busy for longer than a short wait is answered from
//! the answers the agent last gave, taken at the end of the last completed
//! sync or by the last query that got through; a status answered that way
//! says so (`sync.from_cache`). Only a query that has no earlier answer
//! waits for the sync, up to the client's timeout.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::api::{Request, Response};

/// What the API asks of the agent.
pub trait Answer {
    /// Answers one query.
    fn answer(&mut self, req: Request) -> Response;
}

/// The agent, shared by the sync loop and the API; `None` while starting.
pub type Shared<A> = Arc<Mutex<Option<A>>>;

/// The last answer given to each query.
#[derive(Default)]
struct Cache {
    service_list: Option<Response>,
    status: Option<Response>,
}

impl Cache {
    fn slot(&mut self, req: &Request) -> &mut Option<Response> {
        match req {
            Request::ServiceList => &mut self.service_list,
            Request::Status => &mut self.status,
        }
    }
}

/// Answers queries from the agent when it is free, else from the cache.
pub struct Answerer<A> {
    agent: Shared<A>,
    cache: Mutex<Cache>,
    wait: Duration,
    wait_uncached: Duration,
}

impl<A: Answer> Answerer<A> {
    /// Serves `agent`; a query waits `wait` for a busy agent before it is
    /// answered from the cache, and `wait_uncached` when there is nothing
    /// cached yet.
    pub fn new(agent: Shared<A>, wait: Duration, wait_uncached: Duration) -> Self {
        Answerer {
            agent,
            cache: Mutex::new(Cache::default()),
            wait,
            wait_uncached,
        }
    }

    /// Answers `req`.
    pub fn answer(&self, req: Request) -> Response {
        if let Some(mut guard) = self.agent.try_lock_for(self.wait) {
            return self.fresh(guard.as_mut(), req);
        }
        if let Some(cached) = self.cache.lock().slot(&req).clone() {
            return mark_cached(cached);
        }
        match self.agent.try_lock_for(self.wait_uncached) {
            Some(mut guard) => self.fresh(guard.as_mut(), req),
            None => Response::Error(format!(
                "busy: a sync has held the agent for more than {:?} and no earlier answer exists",
                self.wait + self.wait_uncached
            )),
        }
    }

    /// Refreshes the cache from `agent`, which the caller holds locked (the
    /// sync loop, right after a sync).
    pub fn refresh(&self, agent: &mut A) {
        for req in [Request::ServiceList, Request::Status] {
            let resp = agent.answer(req.clone());
            *self.cache.lock().slot(&req) = Some(resp);
        }
    }

    fn fresh(&self, agent: Option<&mut A>, req: Request) -> Response {
        let Some(agent) = agent else {
            return Response::Error("starting: loading the dataplane".into());
        };
        let resp = agent.answer(req.clone());
        if !matches!(resp, Response::Error(_)) {
            *self.cache.lock().slot(&req) = Some(resp.clone());
        }
        resp
    }
}

fn mark_cached(resp: Response) -> Response {
    match resp {
        Response::Status(mut s) => {
            s.sync.from_cache = true;
            Response::Status(s)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Status, SyncInfo};

    /// Answers with its sync count in the status's `sync.count`.
    struct Fake {
        syncs: u64,
    }

    impl Answer for Fake {
        fn answer(&mut self, req: Request) -> Response {
            match req {
                Request::ServiceList => Response::ServiceList(vec![]),
                Request::Status => {
                    let mut s: Status = serde_json::from_value(serde_json::json!({
                        "version": "", "node_name": "", "node_ips": [], "dataplane": "",
                        "devices": [], "socket_lb": "", "mode": "", "backend_selection": "",
                        "session_affinity": "", "graceful_termination": "",
                        "nodeport_range": "", "source": "", "bpffs": "", "services": 0,
                        "frontends": 0, "backends": 0, "maps": [], "drops": [],
                        "sync": SyncInfo::default(),
                    }))
                    .unwrap();
                    s.sync.count = self.syncs;
                    Response::Status(Box::new(s))
                }
            }
        }
    }

    fn status_of(r: Response) -> SyncInfo {
        match r {
            Response::Status(s) => s.sync,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_busy_agent_is_answered_from_the_last_sync() {
        let agent: Shared<Fake> = Arc::new(Mutex::new(None));
        let a = Answerer::new(
            agent.clone(),
            Duration::from_millis(20),
            Duration::from_millis(20),
        );
        assert_eq!(
            a.answer(Request::Status),
            Response::Error("starting: loading the dataplane".into())
        );
        *agent.lock() = Some(Fake { syncs: 1 });
        let fresh = status_of(a.answer(Request::Status));
        assert_eq!((fresh.count, fresh.from_cache), (1, false));
        {
            // A sync holds the agent: the query does not wait for it.
            let mut g = agent.lock();
            let busy = status_of(a.answer(Request::Status));
            assert_eq!((busy.count, busy.from_cache), (1, true));
            // The sync ends and refreshes the cache.
            let f = g.as_mut().unwrap();
            f.syncs = 2;
            a.refresh(f);
            let busy = status_of(a.answer(Request::Status));
            assert_eq!((busy.count, busy.from_cache), (2, true));
            assert_eq!(
                a.answer(Request::ServiceList),
                Response::ServiceList(vec![])
            );
        }
        let free = status_of(a.answer(Request::Status));
        assert_eq!((free.count, free.from_cache), (2, false));
    }

    #[test]
    fn with_nothing_cached_a_busy_agent_gives_a_clear_error() {
        let agent: Shared<Fake> = Arc::new(Mutex::new(Some(Fake { syncs: 0 })));
        let a = Answerer::new(
            agent.clone(),
            Duration::from_millis(10),
            Duration::from_millis(10),
        );
        let _g = agent.lock();
        match a.answer(Request::ServiceList) {
            Response::Error(e) => assert!(e.starts_with("busy: a sync"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
