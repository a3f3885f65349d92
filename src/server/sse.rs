//! `/sse`: the market data as Server-Sent Events, for clients that cannot
//! open a WebSocket (a proxy that drops upgrades, a locked-down network).
//!
//! The stream is a [`Subscriber`] like any WebSocket connection's, in the
//! JSON format: every event's data is the payload of the same pre-encoded
//! `tickwire.v1.json` frame the WebSocket clients get (the frame minus its
//! header, a slice of the publisher's bytes), so nothing is re-encoded per
//! client. Slow clients get the same bounds: the outbox stops taking frames
//! at `max_outbox_bytes`, a client `max_lag_updates` behind is conflated,
//! and one whose socket takes nothing for `stall_timeout_ms` is dropped.
//!
//! Updates carry their global sequence as the event `id`, so a browser that
//! reconnects sends it back as `Last-Event-ID` and gets, instead of the
//! whole snapshot, only the symbols that changed since. The wire is
//! specified in docs/PROTOCOL.md, "Server-Sent Events".

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Method, Response, StatusCode, Uri};
use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep_until, timeout, Instant};

use crate::fanout::{Outbox, Subscriber};
use crate::market::Market;
use crate::server::guard::access::Grant;
use crate::server::query;
use crate::server::session::{Session, Sessions};
use crate::server::ws::connection::ConnectionConfig;
use crate::wire::encode::frame_payload;
use crate::wire::{self, Channels, ErrorCode, Format, Op, Request, Symbols};

/// A comment line goes out after this long without an event, so that
/// proxies and the browser do not take a quiet market for a dead stream.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// How long the browser waits before it reconnects (the `retry:` field).
const RETRY_MS: u32 = 1000;

/// Why `/sse` refused a request, with the status it answers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("/sse takes GET")]
    MethodNotAllowed,
    #[error("/sse needs ?symbols=NAME,NAME or ?symbols=*")]
    NoSymbols,
    /// A refusal of the subscription: unknown symbol, too many symbols.
    #[error("{0}")]
    Refused(String),
    /// The access token does not allow a requested symbol.
    #[error("{0}")]
    Forbidden(String),
}

impl SseError {
    pub fn status(&self) -> StatusCode {
        match self {
            SseError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            SseError::NoSymbols | SseError::Refused(_) => StatusCode::BAD_REQUEST,
            SseError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }
}

/// The response body: chunks of events from the connection's task. A
/// chunk is at most one outbox of events, and the channel holds one, so
/// what waits for a slow socket stays within the outbox bound.
pub struct EventStream {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

impl EventStream {
    /// A body fed by the returned sender, ending when it is dropped.
    pub(super) fn channel() -> (mpsc::Sender<Bytes>, EventStream) {
        let (tx, rx) = mpsc::channel(1);
        (tx, EventStream { rx })
    }
}

/// Where a stream opens its session (the server's shutdown, the gauge), and how it ends its
/// HTTP connection at once.
pub struct StreamControl {
    pub sessions: Sessions,
    /// Notified when the stream stalls: the connection is closed then, not
    /// kept alive for another request behind bytes the client never read.
    pub close_connection: Arc<Notify>,
}

/// Opens an event stream for a GET on `/sse`: subscribes as the query
/// says, queues the snapshot (or, with `Last-Event-ID`, what changed since),
/// and starts the task that streams live updates until the client leaves,
/// stalls, its access token (`grant`) expires, or the server shuts down.
pub fn open(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    market: &Arc<Market>,
    config: ConnectionConfig,
    grant: Grant,
    control: StreamControl,
) -> Result<Response<EventStream>, SseError> {
    if method != Method::GET {
        return Err(SseError::MethodNotAllowed);
    }
    let symbols = symbols_param(uri.query()).ok_or(SseError::NoSymbols)?;
    let channels = channels_param(uri.query())?;
    let throttle_ms = throttle_param(uri.query())?;
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        // An id this server has not published yet comes from an earlier
        // run of it (sequences restart at 1): the client needs everything.
        .filter(|&id| id < market.ring.tail());
    let mut sub = Subscriber::new(Arc::clone(market), Format::Json, config.limits);
    if let Some(symbols) = grant.symbols {
        sub.restrict(symbols);
    }
    let mut outbox = Outbox::default();
    let request = Request {
        id: None,
        op: Op::Subscribe(symbols.clone()),
        channels,
        throttle_ms,
    };
    sub.request(request, &mut outbox)
        .map_err(|r| match r.code {
            ErrorCode::Forbidden => SseError::Forbidden(r.reason),
            _ => SseError::Refused(r.reason),
        })?;
    let first = first_chunk(&mut outbox, &symbols, (channels, throttle_ms), last_seen);

    let (tx, rx) = mpsc::channel(1);
    let StreamControl {
        sessions,
        close_connection,
    } = control;
    let session = sessions.open(grant.expires_in);
    // The stream's log lines carry its client, as the request's did.
    let task = stream(sub, first, tx, config, session, close_connection);
    tokio::spawn(tracing::Instrument::in_current_span(task));
    let mut r = Response::new(EventStream { rx });
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// The `symbols` query parameter: `*`, or names separated by commas,
/// percent-encoded.
pub(super) fn symbols_param(query: Option<&str>) -> Option<Symbols> {
    let value = query::param(query, "symbols")?;
    let names: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if names.iter().any(|n| n == "*") {
        Some(Symbols::All)
    } else if names.is_empty() {
        None
    } else {
        Some(Symbols::Names(names))
    }
}

/// The `channels` query parameter: names separated by commas, as in a
/// WebSocket subscribe; absent means quotes and trades.
pub(super) fn channels_param(query: Option<&str>) -> Result<Option<Channels>, SseError> {
    let Some(value) = query::param(query, "channels") else {
        return Ok(None);
    };
    let mut mask = Channels(0);
    for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let named = Channels::named(name).ok_or_else(|| {
            SseError::Refused(format!(
                "unknown channel {:?}; expected {}",
                name.chars().take(40).collect::<String>(),
                crate::wire::channel::EXPECTED
            ))
        })?;
        mask.0 |= named.0;
    }
    if mask.is_empty() {
        return Err(SseError::Refused("channels= names no channel".into()));
    }
    Ok(Some(mask))
}

/// The `throttle_ms` query parameter, as in a WebSocket subscribe.
fn throttle_param(query: Option<&str>) -> Result<Option<u16>, SseError> {
    let Some(value) = query::param(query, "throttle_ms") else {
        return Ok(None);
    };
    let ms: u64 = value
        .trim()
        .parse()
        .map_err(|_| SseError::Refused("throttle_ms= must be a non-negative integer".into()))?;
    wire::check_throttle(ms, None)
        .map(Some)
        .map_err(|r| SseError::Refused(r.reason))
}

/// The start of the stream, from what the subscribe queued (its ack, the
/// definitions, one cached update per symbol): the reconnection delay, an
/// ack whose `snapshot` counts what follows, the definitions, and the
/// cached updates newer than `last_seen`, oldest first so that the last
/// event id the browser keeps is the newest.
fn first_chunk(
    outbox: &mut Outbox,
    symbols: &Symbols,
    (channels, throttle_ms): (Option<Channels>, Option<u16>),
    last_seen: Option<u64>,
) -> Bytes {
    let mut definitions = Vec::new();
    let mut snapshot = Vec::new();
    while let Some((frame, seq)) = outbox.pop_frame() {
        let payload = frame_payload(&frame);
        match seq {
            Some(seq) if last_seen.is_none_or(|seen| seq > seen) => snapshot.push((seq, payload)),
            Some(_) => {}
            // The subscriber's own ack is replaced below by one that counts
            // what is left after the Last-Event-ID filter.
            None if payload.starts_with(br#"{"type":"ack""#) => {}
            None => definitions.push(payload),
        }
    }
    snapshot.sort_unstable_by_key(|&(seq, _)| seq);
    let mut chunk = BytesMut::new();
    chunk.put_slice(format!("retry: {RETRY_MS}\n\n").as_bytes());
    let ack = wire::ack_reply(
        "subscribe",
        None,
        symbols,
        channels,
        throttle_ms,
        snapshot.len(),
    );
    put_event(&mut chunk, None, &frame_payload(&ack));
    for d in &definitions {
        put_event(&mut chunk, None, d);
    }
    for (seq, payload) in &snapshot {
        put_event(&mut chunk, Some(*seq), payload);
    }
    chunk.freeze()
}

/// Appends one event. The JSON payloads are single lines (the encoder
/// escapes control characters), so one `data:` field carries each.
fn put_event(out: &mut BytesMut, id: Option<u64>, payload: &[u8]) {
    debug_assert!(!payload.contains(&b'\n'), "an event payload spans lines");
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.to_string().as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"data: ");
    out.put_slice(payload);
    out.put_slice(b"\n\n");
}

/// Streams one client's events until it leaves, stalls, its session's
/// token expires, or the server shuts down; the body ends when `tx` is
/// dropped.
async fn stream(
    mut sub: Subscriber,
    first: Bytes,
    tx: mpsc::Sender<Bytes>,
    config: ConnectionConfig,
    mut session: Session,
    close_connection: Arc<Notify>,
) {
    let market = Arc::clone(&session.market);
    let expired = session.expired();
    tokio::pin!(expired);
    let token_expired = || {
        market.metrics.token_expired_closes_total.inc();
        tracing::info!("ended an SSE stream whose access token expired");
    };
    let mut outbox = Outbox::default();
    let mut pending = Some(first);
    let mut quiet_since = Instant::now();
    let mut due_at = None;
    loop {
        // Register for the wake-up before looking at the ring, as the
        // WebSocket writer does (connection.rs): an update published between
        // the look and the wait still wakes us.
        let wakeup = market.wakeup.tasks.notified();
        tokio::pin!(wakeup);
        wakeup.as_mut().enable();

        let chunk = match pending.take() {
            Some(chunk) => chunk,
            None => {
                sub.fill(&mut outbox);
                due_at = sub
                    .next_due_ms()
                    .map(|ms| Instant::from_std(crate::fanout::instant_of(ms)));
                let mut chunk = BytesMut::with_capacity(outbox.len_bytes() + 64);
                while let Some((frame, seq)) = outbox.pop_frame() {
                    put_event(&mut chunk, seq, &frame_payload(&frame));
                }
                chunk.freeze()
            }
        };
        if !chunk.is_empty() {
            // While this waits for a slow socket, the ring moves on; the next
            // fill conflates if it moved too far.
            tokio::select! {
                biased;
                _ = session.shutdown.changed() => return,
                _ = &mut expired => return token_expired(),
                sent = timeout(config.stall_timeout, tx.send(chunk)) => match sent {
                    Ok(Ok(())) => {}
                    // The client went away (hyper dropped the body).
                    Ok(Err(_)) => return,
                    Err(_) => {
                        market.metrics.slow_client_closes_total.inc();
                        tracing::info!("closed a slow SSE client: no progress for {:?}", config.stall_timeout);
                        close_connection.notify_one();
                        return;
                    }
                },
            }
            quiet_since = Instant::now();
            continue;
        }
        tokio::select! {
            biased;
            _ = session.shutdown.changed() => return,
            _ = &mut expired => return token_expired(),
            _ = tx.closed() => return,
            _ = &mut wakeup => {}
            // Throttled frames due with no update to wake us: fill then.
            _ = sleep_until(due_at.unwrap_or(quiet_since + HEARTBEAT)), if due_at.is_some() => {}
            _ = sleep_until(quiet_since + HEARTBEAT) => {
                pending = Some(Bytes::from_static(b": ping\n\n"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_query() {
        let names = |v: &[&str]| Some(Symbols::Names(v.iter().map(|s| s.to_string()).collect()));
        // TC0: a list.
        assert_eq!(
            symbols_param(Some("symbols=BTCUSDT,ETHUSDT")),
            names(&["BTCUSDT", "ETHUSDT"])
        );
        // TC1: everything, plain or percent-encoded, among other parameters.
        assert_eq!(symbols_param(Some("symbols=*")), Some(Symbols::All));
        assert_eq!(symbols_param(Some("x=1&symbols=%2A")), Some(Symbols::All));
        // TC2: percent-encoded names and separators; a plus is a plus.
        assert_eq!(
            symbols_param(Some("symbols=BTC%2FUSD%2CETH+USD")),
            names(&["BTC/USD", "ETH+USD"])
        );
        // TC3: missing, empty, or a broken escape.
        assert_eq!(symbols_param(None), None);
        assert_eq!(symbols_param(Some("symbols=")), None);
        assert_eq!(symbols_param(Some("symbol=BTCUSDT")), None);
        assert_eq!(symbols_param(Some("symbols=BTC%2")), None);
    }

    #[test]
    fn events() {
        let mut out = BytesMut::new();
        put_event(&mut out, Some(12), b"{\"a\":1}");
        put_event(&mut out, None, b"{}");
        assert_eq!(&out[..], b"id: 12\ndata: {\"a\":1}\n\ndata: {}\n\n");
    }
}
