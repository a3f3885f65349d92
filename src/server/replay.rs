//! Replay on demand over HTTP: `GET /recordings` (the catalog as JSON) and
//! `GET /replay.ndjson?recording=…` (one session's messages, one JSON per
//! line), with the sessions counted against their limits
//! ([`crate::replay`] does the replaying).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Either;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode, Uri};

use super::routes::{respond, Body};
use super::sse::{channels_param, EventStream};
use super::{query, AppState};
use crate::feed::{FeedSpec, Speed};
use crate::replay::catalog::{Catalog, Entry};
use crate::replay::{self, Output, ReplayRequest};
use crate::timestamp::time_ns;

/// The server's replay side: its catalog and its sessions' limits.
#[derive(Debug)]
pub struct ReplaySetup {
    pub catalog: Arc<Catalog>,
    /// Sessions at once, in all and per client address.
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
}

/// The sessions running, by client address (`None`: not attributed to one).
pub(super) struct Replays {
    setup: ReplaySetup,
    running: Mutex<HashMap<Option<IpAddr>, usize>>,
}

impl Replays {
    pub(super) fn new(setup: ReplaySetup) -> Replays {
        Replays {
            setup,
            running: Mutex::new(HashMap::new()),
        }
    }
}

/// One running session's place in the count, given back when dropped.
pub(super) struct Slot {
    state: Arc<AppState>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(r) = &self.state.replay {
            let mut running = r.running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = running.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    running.remove(&self.ip);
                }
            }
        }
        self.state.market.metrics.replay_sessions.dec();
    }
}

fn not_enabled() -> Response<Body> {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain",
        "replay is not enabled on this server (serve --recordings DIR)\n",
    )
}

/// `GET /recordings`: every recording of the catalog, described (new or
/// changed files are read on a blocking thread first).
pub(super) fn recordings(method: &Method, state: &Arc<AppState>) -> Response<Body> {
    let Some(r) = &state.replay else {
        return not_enabled();
    };
    if method != Method::GET {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    let catalog = Arc::clone(&r.setup.catalog);
    let (tx, body) = EventStream::channel();
    tokio::spawn(async move {
        let list = tokio::task::spawn_blocking(move || catalog.list())
            .await
            .unwrap_or_default();
        #[derive(serde::Serialize)]
        struct Listing<'a> {
            recordings: Vec<&'a Entry>,
        }
        let listing = Listing {
            recordings: list.iter().map(|e| &**e).collect(),
        };
        let json = serde_json::to_string(&listing).unwrap_or_default();
        let _ = tx.send(Bytes::from(json + "\n")).await;
    });
    let mut resp = Response::new(Either::Right(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `GET /replay.ndjson?recording=…`: a session of the client's own,
/// streamed as NDJSON with the client's reading as the back-pressure.
pub(super) fn ndjson(
    method: &Method,
    uri: &Uri,
    state: &Arc<AppState>,
    ip: Option<IpAddr>,
) -> Response<Body> {
    if method != Method::GET {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    let (req, slot) = match open_session(uri, state, ip) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let (tx, body) = EventStream::channel();
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let _slot = slot;
        let summary = replay::run(req, Output::NdJson, tx, None).await;
        ended(&state, summary);
    });
    let mut resp = Response::new(Either::Right(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

/// Counts and logs how a session ended.
pub(super) fn ended(state: &AppState, summary: Result<replay::Summary, crate::feed::FeedError>) {
    match summary {
        Ok(summary) => {
            state
                .market
                .metrics
                .replay_updates_total
                .add(summary.updates);
            let m = &state.market.metrics;
            m.replay_jumped_bytes_total.add(summary.jumped_bytes);
            m.replay_jumped_lines_total.add(summary.jumped_lines);
            m.replay_passed_over_total.add(summary.passed_over);
            tracing::debug!(?summary, "replay session ended");
        }
        Err(e) => tracing::warn!("replay session failed: {e}"),
    }
}

/// A session's request from the query, and its place against the limits;
/// or the refusal (counted).
pub(super) fn open_session(
    uri: &Uri,
    state: &Arc<AppState>,
    ip: Option<IpAddr>,
) -> Result<(ReplayRequest, Slot), Box<Response<Body>>> {
    let Some(r) = &state.replay else {
        return Err(Box::new(not_enabled()));
    };
    let metrics = &state.market.metrics;
    let req = request(uri.query(), &r.setup.catalog).map_err(|(status, reason)| {
        metrics.replay_refused_total.inc();
        Box::new(respond(status, "text/plain", format!("{reason}\n")))
    })?;
    {
        let mut running = r.running.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = running.values().sum();
        let mine = running.get(&ip).copied().unwrap_or(0);
        if total >= r.setup.max_sessions || (ip.is_some() && mine >= r.setup.max_sessions_per_ip) {
            metrics.replay_refused_total.inc();
            let reason = if total >= r.setup.max_sessions {
                format!("{total} replay sessions running, the most this server takes (max_replay_sessions)")
            } else {
                format!(
                    "{mine} replay sessions running from your address (max_replay_sessions_per_ip)"
                )
            };
            let mut resp = respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", reason + "\n");
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return Err(Box::new(resp));
        }
        *running.entry(ip).or_insert(0) += 1;
    }
    metrics.replay_sessions.inc();
    metrics.replay_sessions_total.inc();
    let slot = Slot {
        state: Arc::clone(state),
        ip,
    };
    Ok((req, slot))
}

type Refusal = (StatusCode, String);

/// A session's parameters from the query: `recording` (required),
/// `symbols`, `from`, `to`, `speed` (default `max`), `channels`.
fn request(q: Option<&str>, catalog: &Catalog) -> Result<ReplayRequest, Refusal> {
    let bad = |reason: String| (StatusCode::BAD_REQUEST, reason);
    let name = query::param(q, "recording").ok_or_else(|| bad("recording= is required".into()))?;
    let path = catalog.resolve(&name).map_err(|e| {
        (
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            e.to_string(),
        )
    })?;
    let symbols = match query::param(q, "symbols") {
        None => None,
        Some(list) => {
            let names: HashSet<String> = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            (!names.contains("*")).then_some(names)
        }
    };
    let time = |key: &str, default: u64| {
        match query::param(q, key) {
        None => Ok(default),
        Some(v) => time_ns(&v).ok_or_else(|| {
            bad(format!(
                "{key}={v:?}: not a time (RFC 3339, e.g. 2024-08-08T23:54:15Z, or ns since the epoch)"
            ))
        }),
    }
    };
    let (from_ns, to_ns) = (time("from", 0)?, time("to", u64::MAX)?);
    if from_ns >= to_ns {
        return Err(bad("from= must be before to=".into()));
    }
    let speed = match query::param(q, "speed") {
        None => Speed::Max,
        Some(v) => v
            .parse::<Speed>()
            .map_err(|e| bad(format!("speed={v:?}: {e}")))?,
    };
    let channels = channels_param(q).map_err(|e| bad(e.to_string()))?;
    Ok(ReplayRequest {
        index: catalog.index_of(&name, &path),
        spec: FeedSpec::File(path),
        symbols,
        from_ns,
        to_ns,
        speed,
        channels,
    })
}
