//! `/poll`: long-polling, for clients behind proxies that break both
//! WebSocket and streaming responses (docs/PROTOCOL.md, "Long-polling").
//!
//! Each request is a subscriber that lives for one answer. Without
//! `since`, the answer is what a subscribe's snapshot is (the ack, the
//! definitions, the newest of each symbol) at once. With `since=SEQ`, it is
//! what changed after global sequence SEQ ([`Subscriber::poll_since`]): at
//! once if anything did, else as soon as something does, or empty at the
//! timeout (`poll_timeout_ms`). Every answer says where the next poll
//! starts (`next`). The messages are the pre-encoded JSON of
//! `tickwire.v1.json`, as `/sse` sends them; nothing is re-encoded.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode, Uri};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::query;
use super::session::{Session, Sessions};
use super::sse::{channels_param, symbols_param, EventStream, SseError};
use crate::fanout::{poll_body, Outbox, Subscriber};
use crate::market::Market;
use crate::server::guard::access::Grant;
use crate::server::ws::connection::ConnectionConfig;
use crate::wire::{ErrorCode, Format, Op, Request};

/// Why `/poll` refused a request: its status and reason.
#[derive(Debug, PartialEq, Eq)]
pub struct PollError(pub StatusCode, pub String);

impl From<SseError> for PollError {
    fn from(e: SseError) -> Self {
        PollError(e.status(), e.to_string().replace("/sse", "/poll"))
    }
}

/// Answers a GET on `/poll`: subscribes as the query says, then answers
/// from a task (at once, or when something changes, or at the timeout).
pub fn open(
    method: &Method,
    uri: &Uri,
    market: &Arc<Market>,
    config: ConnectionConfig,
    grant: Grant,
    sessions: &Sessions,
) -> Result<Response<EventStream>, PollError> {
    if method != Method::GET {
        return Err(SseError::MethodNotAllowed.into());
    }
    let q = uri.query();
    let symbols = symbols_param(q).ok_or(SseError::NoSymbols)?;
    let channels = channels_param(q)?;
    let bad = |what: &str| {
        PollError(
            StatusCode::BAD_REQUEST,
            format!("{what}= must be a non-negative integer"),
        )
    };
    let since = match query::param(q, "since") {
        None => None,
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| bad("since"))?),
    }
    // A sequence this server has not published comes from an earlier run
    // of it (sequences restart at 1): the client needs everything.
    .filter(|&s| s <= market.ring.tail());
    let wait = match query::param(q, "timeout_ms") {
        None => config.poll_timeout,
        Some(v) => {
            let ms: u64 = v.trim().parse().map_err(|_| bad("timeout_ms"))?;
            Duration::from_millis(ms).min(config.poll_timeout)
        }
    };
    let mut sub = Subscriber::new(Arc::clone(market), Format::Json, config.limits);
    if let Some(symbols) = grant.symbols {
        sub.restrict(symbols);
    }
    let mut snapshot = Outbox::default();
    let request = Request {
        id: None,
        op: Op::Subscribe(symbols),
        channels,
        throttle_ms: None,
    };
    sub.request(request, &mut snapshot)
        .map_err(|r| match r.code {
            ErrorCode::Forbidden => PollError(StatusCode::FORBIDDEN, r.reason),
            _ => PollError(StatusCode::BAD_REQUEST, r.reason),
        })?;
    market.metrics.poll_requests_total.inc();
    let (tx, body) = EventStream::channel();
    let session = sessions.open(None);
    let task = answer(sub, since, snapshot, wait, tx, session);
    tokio::spawn(tracing::Instrument::in_current_span(task));
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Sends the one answer: the snapshot without `since`, else what changed
/// after it, waiting up to `wait` for something to.
async fn answer(
    mut sub: Subscriber,
    since: Option<u64>,
    mut snapshot: Outbox,
    wait: Duration,
    tx: mpsc::Sender<Bytes>,
    mut session: Session,
) {
    let market = Arc::clone(&session.market);
    let (next, mut out) = match since {
        None => (sub.position(), std::mem::take(&mut snapshot)),
        Some(since) => {
            let deadline = Instant::now() + wait;
            let mut out = Outbox::default();
            let mut from = since;
            loop {
                // Registered before the look, as the streams do: an update
                // published between the look and the wait still wakes us.
                let wakeup = market.wakeup.tasks.notified();
                tokio::pin!(wakeup);
                wakeup.as_mut().enable();
                let polled = sub.poll_since(since, from, &mut out);
                if polled.any || Instant::now() >= deadline {
                    break (polled.next, out);
                }
                from = polled.next;
                tokio::select! {
                    biased;
                    _ = session.shutdown.changed() => break (from, out),
                    _ = tx.closed() => return,
                    _ = &mut wakeup => {}
                    _ = sleep_until(deadline) => {}
                }
            }
        }
    };
    let body = poll_body(next, &mut out);
    let _ = tx.send(Bytes::from(body)).await;
}
