//! Live exchange feeds: a WebSocket connection to a venue that stays up for
//! days, and never serves a wrong or an older price.
//!
//! # The spec
//!
//! `VENUE:URL`, where VENUE is `binance` or `coinbase` and URL a `ws://` or
//! `wss://` address. The venue's own query parameters stay in the URL;
//! tickwire's are taken out before it connects:
//!
//! - `binance:wss://stream.binance.com:9443/stream?streams=btcusdt@bookTicker/btcusdt@trade`
//!   subscribes by URL (Binance's combined streams);
//!   `binance:wss://stream.binance.com:9443/stream?subscribe=btcusdt@bookTicker/ethusdt@aggTrade`
//!   connects bare and sends a `SUBSCRIBE` message (the list may be
//!   separated by `/` or `,`). Payloads may come wrapped
//!   (`/stream`: `{"stream":..,"data":..}`) or bare (`/ws`).
//! - `coinbase:wss://ws-feed.exchange.coinbase.com?products=BTC-USD,ETH-USD&channels=ticker,matches,heartbeat`
//!   sends a `subscribe` message with those `product_ids` and `channels`
//!   (`channels` defaults to `ticker,matches,heartbeat`).
//!
//! Messages are normalized by the same venue parsers as recordings
//! ([`binance`], [`coinbase`]).
//!
//! # Staying up
//!
//! A connection that closes, fails, refuses the subscription, or stays
//! silent for the silence timeout (nothing at all: a ping is sent after half
//! of it, so a quiet but healthy venue answers with a pong) is dropped and
//! opened again after an exponential backoff with jitter (each delay drawn
//! from the upper half of the current step; the step doubles up to its
//! maximum, and starts over once a connection delivers data). Every
//! connection subscribes again. The venue's pings are answered with a pong
//! carrying the same payload (Binance closes a connection that does not
//! answer within a minute); Binance's disconnect after 24 h is an ordinary
//! close, followed by an ordinary reconnect.
//!
//! # Sequence rules
//!
//! Per symbol and per stream, the connector keeps the venue's last id:
//!
//! | message | id | contiguous (a jump is a gap) |
//! |---|---|---|
//! | Binance `trade` | `t` (trade id) | yes, +1 per trade per symbol |
//! | Binance `aggTrade` | `a` (aggregate trade id) | yes |
//! | Binance `bookTicker` | `u` (order book update id) | no: only top-of-book changes are sent |
//! | Coinbase `match`, `last_match` | `trade_id` | yes, +1 per match per product |
//! | Coinbase `ticker` | `sequence` (the product's feed sequence) | no: it numbers every order event of the full channel |
//! | Coinbase `heartbeat` | `last_trade_id` | a value past the last `trade_id` seen means matches were missed |
//!
//! A message whose id is not above the last one published for its symbol
//! and stream (a venue resending after a reconnect, `last_match` repeating
//! the last trade, messages out of order) is dropped and counted
//! (`tickwire_feed_outdated_total`), so no client ever sees an older value
//! after a newer one.
//!
//! # Status
//!
//! Every symbol the feed has published is `live` or `stale`. When the
//! connection is lost (or silent), every live symbol of the feed is marked
//! stale at once; when a gap is found, its symbol is. The update that
//! revealed a gap is still published (it is real), but it does not make the
//! symbol live: the next update of the symbol does, with a `live` status
//! just before it. The statuses go down the same channel as the updates, so
//! clients receive them in order with the data.

mod backoff;
pub(crate) mod rest;
mod sequence;
mod spec;
mod status;
pub(crate) mod ws_client;

use std::collections::HashMap;
// Relaxed: FeedStats's flags and timestamp are read one by one (see
// FeedStats); none orders other memory.
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload};
use simd_json::prelude::*;
use simd_json::BorrowedValue;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use self::ws_client::ClientSocket;
use crate::feed::normalize::{BookSync, Emitter, Outcome, Reason, RejectTally};
use crate::feed::venue::{binance, coinbase};
use crate::feed::{FeedError, FeedStats, Timed};
use crate::symbols::Normalizer;
use crate::update::{now_ns, SymbolId, SymbolStatus, Update};
use backoff::Backoff;
use sequence::{binance_control, coinbase_control, Control, Numbered, Numbering, Stream};
pub use spec::{UpstreamSpec, UpstreamTiming, Venue};

/// Runs a live feed until the publisher is gone (the server is shutting
/// down). It never gives up on the venue: every failure is a reconnect.
pub(crate) async fn run(
    spec: UpstreamSpec,
    normalizer: Normalizer,
    tx: mpsc::Sender<Update>,
    stats: Arc<FeedStats>,
) -> Result<(), FeedError> {
    stats.network.store(true, Relaxed);
    let mut connector = Connector {
        numbering: Numbering::default(),
        status: HashMap::new(),
        out: Vec::new(),
        scratch: Vec::new(),
        rejections: RejectTally::default(),
        books: BookSync::default(),
        fetches: HashMap::new(),
        spec,
        normalizer,
        tx,
        stats,
    };
    connector.run().await;
    Ok(())
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("the venue closed it: {0}")]
    Closed(String),
    #[error("silent past the timeout")]
    Silent,
    #[error("subscription refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
    /// The publisher is gone.
    #[error("shutting down")]
    Shutdown,
}

/// What one message did.
enum Step {
    Continue { data: bool },
    Refused(String),
    Shutdown,
}

struct Connector {
    spec: UpstreamSpec,
    normalizer: Normalizer,
    tx: mpsc::Sender<Update>,
    stats: Arc<FeedStats>,
    numbering: Numbering,
    /// Every symbol this feed has published, and whether it is stale now.
    status: HashMap<SymbolId, bool>,
    out: Vec<Timed>,
    scratch: Vec<u8>,
    /// Rejected messages by reason, for the log's per-reason budget.
    rejections: RejectTally,
    /// The venue's order books in sync.
    books: BookSync,
    /// Per book that waits for a REST snapshot: when it may be asked for.
    fetches: HashMap<SymbolId, rest::Fetch>,
}

impl Connector {
    async fn run(&mut self) {
        let mut backoff = Backoff::new(self.spec.timing);
        let mut connections = 0u64;
        let name = self.spec.spec.clone();
        loop {
            let connect = ws_client::connect(
                &self.spec.endpoint,
                &self.spec.tls,
                self.spec.timing.silence_timeout,
            );
            match connect.await {
                Ok(ws) => {
                    connections += 1;
                    if connections > 1 {
                        self.stats.reconnects.inc();
                    }
                    self.stats.connected.store(true, Relaxed);
                    tracing::info!(feed = %name, "connected upstream");
                    let (end, delivered) = self.session(ws).await;
                    self.stats.connected.store(false, Relaxed);
                    let status = match &end {
                        End::Shutdown => return,
                        End::Refused(reason) => {
                            self.stats.refusals.inc();
                            tracing::warn!(feed = %name, "subscription refused: {reason}");
                            SymbolStatus::StaleDisconnected
                        }
                        End::Silent => SymbolStatus::StaleSilent,
                        End::Closed(_) | End::Failed(_) => SymbolStatus::StaleDisconnected,
                    };
                    tracing::warn!(feed = %name, "upstream connection ended: {end}; reconnecting");
                    if delivered {
                        backoff.reset();
                    }
                    if !self.mark_all_stale(status).await {
                        return;
                    }
                }
                Err(e) => tracing::warn!(feed = %name, "cannot connect upstream: {e}"),
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Serves one connection until it ends; also says whether it delivered
    /// any market data.
    async fn session(&mut self, ws: ClientSocket) -> (End, bool) {
        let ClientSocket {
            read: mut rx,
            write: mut wx,
        } = ws;
        let mut delivered = false;
        // A new connection's books start over: the first diffs wait for a
        // snapshot fetched now (the old ones' fetches died with the last
        // connection).
        self.books = BookSync::default();
        self.fetches.clear();
        let mut snapshots: JoinSet<(SymbolId, Result<Bytes, String>)> = JoinSet::new();
        for msg in self.spec.subscribe_messages() {
            let frame = Frame::text(Payload::Owned(msg.into_bytes()));
            if let Err(e) = wx.write_frame(frame).await {
                return (End::Failed(format!("sending the subscription: {e}")), false);
            }
        }
        // Half the silence timeout with nothing, then a ping; the other half
        // with nothing still, and the venue is gone.
        let half = self.spec.timing.silence_timeout / 2;
        // Auto-pong and auto-close are off: reads never need to send.
        let mut no_send = |_: Frame<'_>| std::future::ready(Ok::<(), std::io::Error>(()));
        loop {
            // One read per frame, kept pending across the ping: a read
            // dropped halfway through a frame would lose the framing.
            let read = rx.read_frame(&mut no_send);
            tokio::pin!(read);
            let mut pinged = false;
            let frame = loop {
                let waited = tokio::select! {
                    frame = &mut read => break frame,
                    _ = tokio::time::sleep(half) => None,
                    Some(done) = snapshots.join_next(), if !snapshots.is_empty() => Some(done),
                    _ = self.tx.closed() => return (End::Shutdown, delivered),
                };
                match waited {
                    None => {
                        if pinged {
                            return (End::Silent, delivered);
                        }
                        pinged = true;
                        let ping =
                            Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b"tickwire"));
                        if let Err(e) = wx.write_frame(ping).await {
                            return (End::Failed(e.to_string()), delivered);
                        }
                    }
                    Some(Ok((id, body))) => {
                        if !self.depth_snapshot(id, body).await {
                            return (End::Shutdown, delivered);
                        }
                        self.ask_for_snapshots(&mut snapshots);
                    }
                    // A fetch task that panicked: its book asks again later.
                    Some(Err(_)) => {}
                }
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => return (End::Failed(e.to_string()), delivered),
            };
            self.stats.last_message_ns.store(now_ns(), Relaxed);
            match frame.opcode {
                OpCode::Text => match self.message(&frame.payload).await {
                    Step::Continue { data } => {
                        delivered |= data;
                        self.ask_for_snapshots(&mut snapshots);
                    }
                    Step::Refused(reason) => return (End::Refused(reason), delivered),
                    Step::Shutdown => return (End::Shutdown, delivered),
                },
                _ => {
                    if let Some(end) = self.control(frame, &mut wx).await {
                        return (end, delivered);
                    }
                }
            }
        }
    }

    /// A frame that is not a message: a ping answered, a close echoed (the
    /// connection's end), a binary message refused.
    async fn control<S>(
        &mut self,
        frame: Frame<'_>,
        wx: &mut fastwebsockets::WebSocketWrite<S>,
    ) -> Option<End>
    where
        S: tokio::io::AsyncWrite + Unpin,
    {
        match frame.opcode {
            OpCode::Ping => {
                let pong = Frame::pong(Payload::Owned(frame.payload.to_vec()));
                if let Err(e) = wx.write_frame(pong).await {
                    return Some(End::Failed(e.to_string()));
                }
            }
            OpCode::Close => {
                let reason = close_reason(&frame.payload);
                // Echo it, as RFC 6455 asks; the connection is over anyway.
                let echo = Frame::close_raw(Payload::Owned(frame.payload.to_vec()));
                let _ = wx.write_frame(echo).await;
                return Some(End::Closed(reason));
            }
            OpCode::Binary => self.reject(
                Reason::Unrecognized,
                &"a binary message (venues send JSON text)",
            ),
            OpCode::Text | OpCode::Pong | OpCode::Continuation => {}
        }
        None
    }

    /// Handles one text message.
    async fn message(&mut self, payload: &[u8]) -> Step {
        self.stats.records.inc();
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(payload);
        let step = match crate::json::parse(&mut buf) {
            Ok(value) => self.value(&value).await,
            Err(e) => {
                self.reject(Reason::Json, &e);
                Step::Continue { data: false }
            }
        };
        self.scratch = buf;
        step
    }

    async fn value(&mut self, value: &BorrowedValue<'_>) -> Step {
        // Binance's combined streams wrap the payload.
        let value = match (self.spec.venue, value.get("stream"), value.get("data")) {
            (Venue::Binance, Some(stream), Some(data)) if stream.is_str() => data,
            _ => value,
        };
        let control = match self.spec.venue {
            Venue::Binance => binance_control(value),
            Venue::Coinbase => coinbase_control(value),
        };
        let numbered = match control {
            Control::Subscribed => {
                self.stats.skipped.inc();
                return Step::Continue { data: false };
            }
            Control::Refused(reason) => return Step::Refused(reason),
            Control::Heartbeat {
                symbol,
                last_trade_id,
            } => return self.heartbeat(symbol, last_trade_id).await,
            Control::Data(numbered) => numbered,
        };
        let gap = match &numbered {
            Some(n) => match self.check_sequence(n) {
                Some(gap) => gap,
                None => return Step::Continue { data: false },
            },
            None => false,
        };
        if !self.normalize(value) {
            return Step::Continue { data: false };
        }
        if let Some(n) = &numbered {
            self.numbering.set(n.symbol, n.stream, n.id);
        }
        if !self.publish_normalized(gap).await {
            return Step::Shutdown;
        }
        Step::Continue { data: true }
    }

    /// A Coinbase heartbeat: a `last_trade_id` past the last match seen
    /// for its symbol means matches were missed (when the feed watches
    /// them): a gap, which makes the symbol stale.
    async fn heartbeat(&mut self, symbol: &str, last_trade_id: u64) -> Step {
        self.stats.skipped.inc();
        let last = self.numbering.get(symbol, Stream::Trade);
        let watching = self.spec.channels.iter().any(|c| c == "matches");
        if watching && last != 0 && last_trade_id > last {
            self.stats.gaps.inc();
            self.numbering.set(symbol, Stream::Trade, last_trade_id);
            let id = self.normalizer.table().get_by_name(symbol).map(|d| d.id);
            if let Some(id) = id {
                if !self.set_stale(id, SymbolStatus::StaleGap).await {
                    return Step::Shutdown;
                }
            }
        }
        Step::Continue { data: false }
    }

    /// Checks a message's id against the last one published for its symbol
    /// and stream: `None` if it is not newer (dropped, counted as
    /// outdated); else whether it skips ids of a contiguous numbering (a
    /// gap, counted).
    fn check_sequence(&self, n: &Numbered<'_>) -> Option<bool> {
        let last = self.numbering.get(n.symbol, n.stream);
        if last != 0 && n.id <= last {
            self.stats.outdated.inc();
            return None;
        }
        let gap = n.contiguous && last != 0 && n.id > last + 1;
        if gap {
            self.stats.gaps.inc();
        }
        Some(gap)
    }

    /// Runs the venue's parser over a data message, into `out`; true if it
    /// gave updates. A message with none is counted as skipped, one the
    /// parser refuses as rejected.
    fn normalize(&mut self, value: &BorrowedValue<'_>) -> bool {
        self.out.clear();
        let mut emit = Emitter {
            normalizer: &mut self.normalizer,
            books: &mut self.books,
            receive_ts_ns: None,
            out: &mut self.out,
        };
        let parsed = match self.spec.venue {
            Venue::Binance => binance::parse(value, &mut emit),
            Venue::Coinbase => coinbase::parse(value, &mut emit),
        };
        match parsed {
            Ok(Outcome::Emitted) => true,
            Ok(Outcome::Skipped) => {
                self.stats.skipped.inc();
                false
            }
            Ok(Outcome::Foreign) => {
                self.reject(Reason::Unrecognized, &"not a message of this venue");
                false
            }
            Err(e) => {
                self.reject(e.reason(), &e);
                false
            }
        }
    }

    /// Counts a rejected message; logs it within its reason's budget, so
    /// that one noisy kind cannot hide the first of another.
    fn reject(&mut self, reason: Reason, why: &dyn std::fmt::Display) {
        self.stats.rejected.inc();
        let message = self.stats.records.get();
        let n = self.rejections.add(reason, message, 1);
        if RejectTally::logs(n) {
            tracing::warn!(
                feed = %self.spec.spec,
                "rejected upstream message {message} ({} #{n}): {why}",
                reason.name()
            );
        }
    }
}

/// The code and reason of a close frame, for the log.
fn close_reason(payload: &[u8]) -> String {
    match payload {
        [a, b, reason @ ..] => format!(
            "close {} {}",
            u16::from_be_bytes([*a, *b]),
            String::from_utf8_lossy(reason)
        ),
        _ => "close without a code".into(),
    }
}
