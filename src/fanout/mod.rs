//! Fan-out: what one connection is sent, decided with no I/O.
//!
//! A [`Subscriber`] owns a cursor into the ring and the connection's
//! subscriptions. [`Subscriber::fill`] moves every pending frame it wants
//! into the connection's [`Outbox`] as clones of the publisher's `Bytes`:
//! no per-subscriber encoding and no payload copy. A connection that falls
//! too far behind (lapped by the ring, or more than `max_lag_updates`
//! entries behind) skips to the head of the ring and is sent, for each
//! subscribed symbol that changed, only the newest frame from the
//! last-value cache. Per-symbol *floors* then make sure no ring entry older
//! than what was sent from the cache goes out after it.

use std::collections::HashMap;
use std::sync::Arc;

#[cfg(test)]
mod book_tests;
mod cached;
#[cfg(test)]
mod candle_tests;
mod fill;
mod outbox;
mod pipe;
mod poll;
pub mod shard;
#[cfg(test)]
mod shard_tests;
mod slots;
mod subscriptions;
mod throttle;
mod throttled;

use self::cached::unwatch;
pub use self::outbox::{Outbox, MAX_IOV};
pub use self::poll::{poll_body, Polled};
pub use self::slots::Folded;
use self::subscriptions::{Allowed, BitSet};
use self::throttle::Throttle;
pub use self::throttle::{clock_ms, instant_of};

use crate::market::{Market, Published};
use crate::update::SymbolId;
use crate::wire::{self, channel, Channels, Format};

/// Per-connection bounds, from the server config.
#[derive(Debug, Clone, Copy)]
pub struct FanoutLimits {
    /// Stop taking frames from the ring once this many bytes wait to be
    /// written.
    pub max_outbox_bytes: usize,
    /// A connection further behind the head of the ring than this is
    /// conflated.
    pub max_lag_updates: u64,
    /// Most symbols one connection may subscribe to, and may name in one
    /// request; `*` counts as every symbol it covers.
    pub max_subscriptions: usize,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        for (s, &mask) in self.channels.iter().enumerate() {
            unwatch(&self.market, s as SymbolId, Channels(mask));
        }
        let metrics = &self.market.metrics;
        metrics.subscriptions.sub(self.subscribed_count as u64);
        if !self.is_idle() {
            metrics.subscribers.dec();
        }
    }
}

/// One connection's view of the market: what it subscribes to, where it is
/// in the ring, and what it has been told.
pub struct Subscriber {
    market: Arc<Market>,
    format: Format,
    limits: FanoutLimits,
    /// Ring position of the next entry to look at.
    cursor: u64,
    /// Subscribed with `*`: symbols that appear later join `subscribed`
    /// while the connection is within `max_subscriptions`.
    all: bool,
    /// Symbol ids below this have been offered to the `*` subscription.
    all_checked: SymbolId,
    /// Every symbol the connection gets, named or through `*`.
    subscribed: BitSet,
    subscribed_count: usize,
    /// The channels the connection takes of each subscribed symbol, by
    /// symbol id; each book channel in it is counted as a watcher of the
    /// symbol's book ([`crate::market::books`]) until it is dropped.
    channels: Vec<u16>,
    /// The channels of the `*` subscription, which symbols that join it
    /// take.
    all_channels: Channels,
    /// Book snapshots of symbols that joined `*` in the middle of a fill,
    /// queued before the entry that made them join.
    joined: Vec<Published>,
    /// Symbols whose definition this connection has been sent.
    defined: BitSet,
    /// After a snapshot or a catch-up: per symbol and [`floor_class`], the
    /// global sequence of the newest entry sent from the cache (or of the
    /// book state a book snapshot holds); ring entries of that symbol and
    /// class at or below it are skipped.
    floors: HashMap<(SymbolId, u8), u64>,
    /// Ring position from which every entry is newer than anything the
    /// floors hold; the floors are dropped there.
    floor_until: u64,
    /// What the access token allows; None for everything.
    allowed: Option<Allowed>,
    /// The throttles and gates of throttled symbols, from the first
    /// subscribe that asks for one ([`throttle`]).
    throttle: Option<Box<Throttle>>,
    /// The time of the last fill or request ([`clock_ms`]), for the
    /// throttle.
    now_ms: u64,
    /// The oldest held entry the ring no longer had when it was due
    /// (`u64::MAX`: none): the next fill catches up.
    lost_held: u64,
    /// When every symbol the connection takes is throttled: the grid point
    /// ([`clock_ms`]) before which it need not read the ring, and the
    /// shortest interval. A fill before then reads nothing (unless the
    /// ring is running ahead of it), so that the connection costs its
    /// writer one ring scan per interval, not one per publish batch.
    read_at: Option<(u64, u16)>,
    /// Frames with payloads of at least this many bytes go compressed
    /// (0: none): [`deflate_from`](Self::deflate_from).
    deflate_min: usize,
}

impl Subscriber {
    pub fn new(market: Arc<Market>, format: Format, limits: FanoutLimits) -> Self {
        let cursor = market.ring.tail();
        Subscriber {
            market,
            format,
            limits,
            cursor,
            all: false,
            all_checked: 0,
            subscribed: BitSet::default(),
            subscribed_count: 0,
            channels: Vec::new(),
            all_channels: Channels(0),
            joined: Vec::new(),
            defined: BitSet::default(),
            floors: HashMap::new(),
            floor_until: 0,
            allowed: None,
            throttle: None,
            now_ms: 0,
            lost_held: u64::MAX,
            read_at: None,
            deflate_min: 0,
        }
    }

    /// Whether the connection subscribes to nothing (and so need not be
    /// woken by updates).
    pub fn is_idle(&self) -> bool {
        !self.all && self.subscribed_count == 0
    }

    /// The ring entries a fill can act on, as the subscribed symbols
    /// folded ([`Folded`]): a fill passes over an entry whose symbol's bit
    /// is not in it, doing nothing else. None when a fill may
    /// do more than that: a `*` subscription takes symbols as they appear,
    /// and throttles hold and release entries by the clock.
    pub fn interest(&self) -> Option<Folded> {
        let plain = !self.all
            && self.throttle.is_none()
            && self.read_at.is_none()
            && self.joined.is_empty()
            && self.lost_held == u64::MAX;
        plain.then(|| self.subscribed.fold())
    }

    /// Ring position of the next entry a fill looks at.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Moves the cursor forward to `pos` over entries a fill would pass
    /// over: the caller knows that none of them has a symbol whose bit is
    /// in [`interest`](Self::interest), which must be `Some`.
    pub fn skip_to(&mut self, pos: u64) {
        debug_assert!(self.interest().is_some());
        if pos > self.cursor {
            self.cursor = pos;
            if !self.floors.is_empty() && self.cursor > self.floor_until {
                self.floors.clear();
            }
        }
    }

    /// The channels the connection takes of symbol `s`.
    fn channels_of(&self, s: SymbolId) -> Channels {
        Channels(self.channels.get(s as usize).copied().unwrap_or(0))
    }

    /// Whether the connection takes entry `p`: a status of a subscribed
    /// symbol, or an entry of one of the symbol's channels.
    fn wants(&mut self, p: &Published) -> bool {
        self.wants_symbol(p.symbol) && (p.is_status || self.channels_of(p.symbol).has(p.channel))
    }

    /// Whether the connection gets `id`; a symbol new to a `*`
    /// subscription joins it here, if the limit allows.
    fn wants_symbol(&mut self, id: SymbolId) -> bool {
        if self.subscribed.contains(id) {
            return true;
        }
        if self.all && id >= self.all_checked {
            self.follow(id + 1);
            return self.subscribed.contains(id);
        }
        false
    }

    /// Offers symbols `all_checked..until` to the `*` subscription, in id
    /// order, each one the token allows taken while the connection is
    /// within `max_subscriptions`.
    fn follow(&mut self, until: SymbolId) {
        if !self.all || until <= self.all_checked {
            return;
        }
        self.refresh_allowed();
        let mut added = 0;
        for id in self.all_checked..until {
            if self.subscribed_count + added >= self.limits.max_subscriptions {
                break;
            }
            if self.allowed(id) && self.subscribed.insert(id) {
                added += 1;
                if let Some(t) = &mut self.throttle {
                    t.set(id, t.all_ms);
                    if t.all_ms == 0 {
                        self.read_at = None;
                    }
                }
                let mut joined = std::mem::take(&mut self.joined);
                self.add_channels(id, self.all_channels, &mut joined);
                self.joined = joined;
            }
        }
        self.all_checked = until;
        self.subscribed_count += added;
        self.market.metrics.subscriptions.add(added as u64);
    }

    /// Skips ring entries of symbol `s` on `channel` at or below `seq`.
    fn raise_floor(&mut self, s: SymbolId, channel: u8, seq: u64) {
        let floor = self.floors.entry((s, channel)).or_insert(0);
        *floor = (*floor).max(seq);
        self.floor_until = self.floor_until.max(seq);
    }

    /// Queues a frame from the cache and raises the symbol's floor so that
    /// the ring's copy of it, or anything older, is not sent after it.
    fn send_latest(&mut self, p: &Published, out: &mut Outbox) {
        if let Some(t) = &mut self.throttle {
            t.sent(p.symbol, self.now_ms);
        }
        self.define(p.symbol, out);
        self.push_frame(p, out);
        let floor = self.floors.entry((p.symbol, floor_class(p))).or_insert(0);
        *floor = (*floor).max(p.seq);
        // p sits at ring position p.seq - 1; everything from p.seq on is newer.
        self.floor_until = self.floor_until.max(p.seq);
    }

    /// Sends frames of at least `min` bytes of payload compressed
    /// (permessage-deflate negotiated, with the whole window), each
    /// compressed once for every connection ([`EncodedUpdate::deflated`]).
    ///
    /// [`EncodedUpdate::deflated`]: crate::wire::encode::EncodedUpdate::deflated
    pub fn deflate_from(&mut self, min: usize) {
        self.deflate_min = min;
    }

    /// A `*` subscription with book channels takes the symbols interned
    /// since it last looked, and their books, now: a symbol whose only data
    /// is its book has no ring entry until someone watches it, so waiting
    /// for one (as quotes and trades do) would wait forever.
    fn join_new_books(&mut self, out: &mut Outbox) {
        let known = self.market.symbols.len() as SymbolId;
        if known <= self.all_checked {
            return;
        }
        self.follow(known);
        for j in std::mem::take(&mut self.joined) {
            self.send_latest(&j, out);
        }
    }

    /// Skips to the head of the ring and queues the newest value of each
    /// subscribed symbol that changed since the cursor.
    fn catch_up(&mut self, out: &mut Outbox) {
        // What throttles hold is older than anything the cache sends now,
        // and may not be in the cache any more (a trade): it goes first.
        if let Some(t) = &mut self.throttle {
            let held = t.take_all();
            self.send_held(&held, out, true);
        }
        // What was held and lost counts as changed since the cursor: the
        // cache's newest of it goes out.
        let old = self
            .cursor
            .min(std::mem::replace(&mut self.lost_held, u64::MAX) - 1);
        let tail = self.market.ring.tail();
        let dropped = tail - self.cursor;
        self.cursor = tail;
        let metrics = &self.market.metrics;
        metrics.lapped_readers_total.inc();
        metrics.conflated_updates_total.add(dropped);
        self.follow(self.market.lvc.len() as SymbolId);
        let candidates: Vec<SymbolId> = self.subscribed.iter().collect();
        let mut latest = std::mem::take(&mut self.joined);
        for s in candidates {
            let channels = self.channels_of(s);
            let values = self
                .market
                .lvc
                .values(s)
                .in_order(channels.has(channel::QUOTES), channels.has(channel::TRADES));
            // Changed since the cursor (entry at position p.seq - 1 >= old),
            // and newer than anything already sent from the cache.
            latest.extend(values.filter(|p| p.seq > old && p.seq > self.floor(p)));
            self.cached_since(s, channels, old, &mut latest);
        }
        latest.sort_unstable_by_key(|p| p.seq);
        out.push(wire::conflated_notice(dropped, latest.len()));
        for p in &latest {
            self.send_latest(p, out);
        }
    }
}

impl Subscriber {
    /// The floor of `p`'s symbol and class (0 if none).
    fn floor(&self, p: &Published) -> u64 {
        self.floor_of(p.symbol, floor_class(p))
    }

    /// The floor of symbol `s` and floor class `class` (0 if none).
    fn floor_of(&self, s: SymbolId, class: u8) -> u64 {
        self.floors.get(&(s, class)).copied().unwrap_or(0)
    }
}

/// Which floor an entry is held to: quotes, trades and statuses share one
/// (the cache holds them together); each book and candle channel has its
/// own, since its snapshot is read apart from the cache.
fn floor_class(p: &Published) -> u8 {
    if p.channel >= channel::BOOK {
        p.channel
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::publish::Publisher;
    use crate::ring::RingWriter;
    use crate::symbols::{Normalizer, SymbolTable};
    use crate::update::{SymbolStatus, Update, UpdateKind};
    use crate::wire::{ErrorCode, Request};

    struct Fixture {
        market: Arc<Market>,
        publisher: Publisher,
        normalizer: Normalizer,
    }

    fn fixture(ring: usize) -> Fixture {
        let symbols = SymbolTable::new();
        let (market, writer): (_, RingWriter<Published>) =
            Market::new(ring, Arc::clone(&symbols), Arc::new(Metrics::default()));
        Fixture {
            publisher: Publisher::new(Arc::clone(&market), writer),
            normalizer: Normalizer::new(symbols),
            market,
        }
    }

    impl Fixture {
        /// Publishes a quote whose bid is `bid` (in whole units).
        fn quote(&mut self, symbol: &str, bid: i64) {
            let scale = self.normalizer.scale(symbol, b"1", b"1").unwrap();
            let m = 10i64.pow(u32::from(scale.price_decimals));
            self.publisher.publish(Update {
                symbol: scale.id,
                kind: UpdateKind::Quote {
                    bid_px: bid * m,
                    bid_sz: Some(m),
                    ask_px: (bid + 1) * m,
                    ask_sz: Some(m),
                },
                exchange_ts_ns: 0,
                receive_ts_ns: 1,
                origin_seq: 0,
                origin_publish_ts_ns: 0,
            });
        }

        fn trade(&mut self, symbol: &str, px: i64) {
            let scale = self.normalizer.scale(symbol, b"1", b"1").unwrap();
            let m = 10i64.pow(u32::from(scale.price_decimals));
            self.publisher.publish(Update {
                symbol: scale.id,
                kind: UpdateKind::Trade {
                    px: px * m,
                    sz: m,
                    side: crate::update::Side::Buy,
                },
                exchange_ts_ns: 0,
                receive_ts_ns: 1,
                origin_seq: 0,
                origin_publish_ts_ns: 0,
            });
        }

        fn status(&mut self, symbol: &str, status: SymbolStatus) {
            let id = self.normalizer.scale(symbol, b"1", b"1").unwrap().id;
            self.publisher.publish(Update {
                symbol: id,
                kind: UpdateKind::Status(status),
                exchange_ts_ns: 0,
                receive_ts_ns: 1,
                origin_seq: 0,
                origin_publish_ts_ns: 0,
            });
        }

        fn subscriber(&self, max_lag_updates: u64) -> Subscriber {
            let limits = FanoutLimits {
                max_outbox_bytes: 1 << 20,
                max_lag_updates,
                max_subscriptions: 10,
            };
            Subscriber::new(Arc::clone(&self.market), Format::Json, limits)
        }
    }

    fn request(op: &str, symbols: &[&str]) -> Request {
        let list = symbols
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>();
        let text = format!(r#"{{"op":"{op}","symbols":[{}]}}"#, list.join(","));
        wire::parse_request(text.as_bytes(), 10).unwrap()
    }

    /// The JSON messages in the outbox, in order, as (type, symbol, symbol_seq).
    fn drain(out: &mut Outbox) -> Vec<(String, String, u64)> {
        let bytes = out.concat();
        out.advance(bytes.len());
        let mut msgs = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let h = crate::wire::frame::parse(rest).expect("a whole header");
            let (start, len) = (h.header_len, h.payload_len as usize);
            let v: serde_json::Value = serde_json::from_slice(&rest[start..start + len]).unwrap();
            msgs.push((
                v["type"].as_str().unwrap().to_owned(),
                v["symbol"].as_str().unwrap_or("").to_owned(),
                v["symbol_seq"].as_u64().unwrap_or(0),
            ));
            rest = &rest[start + len..];
        }
        msgs
    }

    fn msg(t: &str, s: &str, n: u64) -> (String, String, u64) {
        (t.into(), s.into(), n)
    }

    #[test]
    fn subscribe_sends_definitions_and_snapshot_then_only_newer_updates() {
        let mut f = fixture(16);
        f.quote("A", 1);
        f.quote("B", 1);
        f.quote("A", 2);
        let mut sub = f.subscriber(8);
        let mut out = Outbox::default();
        // TC0: idle connections take nothing from the ring.
        assert_eq!(sub.fill(&mut out), 0);
        sub.handle(request("subscribe", &["A"]), &mut out);
        assert_eq!(
            drain(&mut out),
            [
                msg("ack", "", 0),
                msg("symbol", "A", 0),
                msg("quote", "A", 2)
            ]
        );
        // TC1: only what comes after the snapshot, only for A.
        f.quote("B", 2);
        f.quote("A", 3);
        sub.fill(&mut out);
        assert_eq!(drain(&mut out), [msg("quote", "A", 3)]);
        // TC2: a second subscribe snapshots only the new symbol.
        sub.handle(request("subscribe", &["A", "B"]), &mut out);
        assert_eq!(
            drain(&mut out),
            [
                msg("ack", "", 0),
                msg("symbol", "B", 0),
                msg("quote", "B", 2)
            ]
        );
    }

    #[test]
    fn a_throttled_symbol_gets_its_newest_quote_per_interval_and_every_trade() {
        let mut f = fixture(64);
        f.quote("A", 1);
        f.quote("B", 1);
        let mut sub = f.subscriber(32);
        let mut out = Outbox::default();
        let t0 = 1_000_000;
        sub.now_ms = t0;
        let req = r#"{"op":"subscribe","symbols":["A"],"throttle_ms":100}"#;
        sub.handle(wire::parse_request(req.as_bytes(), 10).unwrap(), &mut out);
        sub.handle(request("subscribe", &["B"]), &mut out);
        let got = drain(&mut out);
        assert_eq!(got[1..3], [msg("symbol", "A", 0), msg("quote", "A", 1)]);
        // TC0: within A's interval: A is held, B, unthrottled, goes out as
        // it comes.
        f.quote("A", 2);
        f.trade("A", 3);
        f.quote("B", 2);
        f.quote("A", 4);
        f.trade("A", 5);
        f.quote("A", 6);
        sub.fill_at(&mut out, t0 + 50);
        assert_eq!(drain(&mut out), [msg("quote", "B", 2)]);
        assert_eq!(sub.next_due_ms(), Some(t0 + 100));
        // TC1: at the end of the interval, every trade and the newest
        // quote, in order.
        sub.fill_at(&mut out, t0 + 100);
        assert_eq!(
            drain(&mut out),
            [
                msg("trade", "A", 3),
                msg("trade", "A", 5),
                msg("quote", "A", 6)
            ]
        );
        assert_eq!(sub.next_due_ms(), None);
        // TC2: the next one waits for the next grid point.
        f.quote("A", 7);
        sub.fill_at(&mut out, t0 + 250);
        assert!(drain(&mut out).is_empty());
        sub.fill_at(&mut out, t0 + 300);
        assert_eq!(drain(&mut out), [msg("quote", "A", 7)]);
        // TC3: resubscribing without a throttle sends what is held now,
        // then A is unthrottled.
        f.quote("A", 8);
        sub.fill_at(&mut out, t0 + 310);
        assert!(drain(&mut out).is_empty());
        sub.handle(request("subscribe", &["A"]), &mut out);
        assert_eq!(drain(&mut out)[1..], [msg("quote", "A", 8)]);
        f.quote("A", 9);
        f.quote("A", 10);
        sub.fill_at(&mut out, t0 + 311);
        assert_eq!(
            drain(&mut out),
            [msg("quote", "A", 9), msg("quote", "A", 10)]
        );
    }

    #[test]
    fn a_lagging_throttled_subscriber_gets_what_was_held_before_the_catch_up() {
        let mut f = fixture(16);
        let mut sub = f.subscriber(4);
        let mut out = Outbox::default();
        let t0 = 1_000_000;
        sub.now_ms = t0;
        let req = r#"{"op":"subscribe","symbols":["*"],"throttle_ms":1000}"#;
        sub.handle(wire::parse_request(req.as_bytes(), 10).unwrap(), &mut out);
        drain(&mut out);
        f.quote("A", 1);
        f.trade("A", 2);
        sub.fill_at(&mut out, t0 + 1);
        assert!(drain(&mut out).is_empty());
        // TC0: held: a quote and a trade; then the connection lags, and
        // catches up: what was held first, then the newest.
        for i in 3..=8 {
            f.quote("A", i);
        }
        sub.fill_at(&mut out, t0 + 2);
        let got = drain(&mut out);
        assert_eq!(
            got[..3],
            [
                msg("symbol", "A", 0),
                msg("quote", "A", 1),
                msg("trade", "A", 2)
            ]
        );
        assert_eq!(got[3].0, "conflated");
        assert_eq!(got[4..], [msg("quote", "A", 8)]);
        // TC1: held entries the ring lapped: lost, announced, and the
        // newest comes from the cache.
        f.trade("A", 9);
        sub.fill_at(&mut out, t0 + 3);
        for i in 10..=30 {
            f.quote("A", i);
        }
        sub.fill_at(&mut out, t0 + 4);
        let got = drain(&mut out);
        assert_eq!(got[0].0, "conflated");
        assert_eq!(got[1..], [msg("quote", "A", 30)]);
    }

    #[test]
    fn a_connection_throttled_throughout_reads_the_ring_once_per_interval() {
        let mut f = fixture(64);
        f.quote("A", 1);
        let mut sub = f.subscriber(32);
        let mut out = Outbox::default();
        let t0 = 1_000_000;
        sub.now_ms = t0;
        let req = r#"{"op":"subscribe","symbols":["*"],"throttle_ms":100}"#;
        sub.handle(wire::parse_request(req.as_bytes(), 10).unwrap(), &mut out);
        drain(&mut out);
        assert_eq!(sub.fill_at(&mut out, t0 + 1), 0);
        f.quote("A", 2);
        f.trade("A", 3);
        f.quote("A", 4);
        // TC0: before the grid point, the ring is not read at all, and the
        // writer is told when to come back.
        assert_eq!(sub.fill_at(&mut out, t0 + 50), 0);
        assert_eq!(sub.next_due_ms(), Some(t0 + 100));
        // TC1: at it, read and sent at once: the trade, the newest quote.
        assert_eq!(sub.fill_at(&mut out, t0 + 101), 3);
        assert_eq!(
            drain(&mut out),
            [msg("trade", "A", 3), msg("quote", "A", 4)]
        );
        assert_eq!(sub.next_due_ms(), None);
        // TC2: a ring running ahead is read before the grid point (held).
        for i in 5..=25 {
            f.quote("A", i);
        }
        assert_eq!(sub.fill_at(&mut out, t0 + 150), 21);
        assert!(drain(&mut out).is_empty());
        sub.fill_at(&mut out, t0 + 200);
        assert_eq!(drain(&mut out), [msg("quote", "A", 25)]);
    }

    /// A fill gathers consecutive frames into runs only for a merging
    /// outbox; a plain one takes them one by one, the general way. Both
    /// must queue the same bytes through definitions, snapshots and their
    /// floors, symbols that are not taken, arena chunk boundaries, a
    /// catch-up, and fills cut short by the outbox bound.
    #[test]
    fn a_fill_queues_the_same_bytes_whether_it_gathers_runs_or_not() {
        let mut f = fixture(4096);
        // [merging, plain]
        let mut subs = [f.subscriber(1000), f.subscriber(1000)];
        let mut outs = [Outbox::merging(), Outbox::default()];
        let fill = |subs: &mut [Subscriber; 2], outs: &mut [Outbox; 2]| {
            let [m, p] = outs;
            assert_eq!(subs[0].fill(m), subs[1].fill(p));
            assert!(
                m.concat() == p.concat(),
                "{} and {} bytes",
                m.len_bytes(),
                p.len_bytes()
            );
            (m.frame_count(), p.frame_count())
        };
        let subscribe = |subs: &mut [Subscriber; 2], outs: &mut [Outbox; 2], names: &[&str]| {
            for (sub, out) in subs.iter_mut().zip(outs.iter_mut()) {
                sub.handle(request("subscribe", names), out);
            }
        };
        f.quote("A", 1);
        f.quote("B", 1);
        subscribe(&mut subs, &mut outs, &["A", "B"]);
        // Floored: the snapshot's A and B are not sent again.
        for i in 2..=600 {
            f.quote(["A", "B"][i as usize % 2], i);
        }
        let (m, p) = fill(&mut subs, &mut outs);
        // 599 frames of about 200 bytes: a few 64 KiB chunks, each run one
        // entry; the plain outbox has one per frame.
        // (And the ack, and A's and B's definitions and snapshots.)
        assert!(p == 5 + 599 && m < 10, "{m} entries merged, {p} plain");
        // C, not taken, breaks the runs.
        for i in 601..=700 {
            f.quote(["A", "B", "C"][i as usize % 3], i);
        }
        let (m, p) = fill(&mut subs, &mut outs);
        // One entry per A, B pair between two C's.
        assert!(
            p == 5 + 599 + 67 && m >= 6 + 33,
            "{m} entries merged, {p} plain"
        );
        for out in &mut outs {
            out.advance(out.len_bytes());
        }
        // C joins; then more than max_lag_updates behind: a catch-up.
        subscribe(&mut subs, &mut outs, &["C"]);
        for i in 701..=1900 {
            f.quote(["A", "B", "C"][i as usize % 3], i);
        }
        fill(&mut subs, &mut outs);
        let got = drain(&mut outs[0]);
        assert_eq!(got, drain(&mut outs[1]));
        let kinds: Vec<&str> = got.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "ack",
                "symbol",
                "quote",
                "conflated",
                "quote",
                "quote",
                "quote"
            ]
        );
        // Live again: runs of all three.
        for i in 1901..=2000 {
            f.quote(["A", "B", "C"][i as usize % 3], i);
        }
        let (m, p) = fill(&mut subs, &mut outs);
        assert!(p == 100 && m <= 2, "{m} entries merged, {p} plain");
        // Under `*`, a symbol first seen in the middle of a run: its
        // definition goes after the run, before its first frame.
        assert_eq!(drain(&mut outs[0]), drain(&mut outs[1]));
        subscribe(&mut subs, &mut outs, &["*"]);
        assert_eq!(drain(&mut outs[0]), drain(&mut outs[1]));
        for i in 2001..=2100 {
            let new = format!("N{i}");
            f.quote(["A", "B", new.as_str()][i as usize % 3], i);
        }
        let (m, p) = fill(&mut subs, &mut outs);
        let got = drain(&mut outs[0]);
        assert_eq!(got, drain(&mut outs[1]));
        // Seven new symbols join, up to max_subscriptions (10); the others
        // are passed over.
        let defined = got.iter().filter(|m| m.0 == "symbol").count();
        assert!(
            defined == 7 && got[2] == msg("symbol", "N2003", 0),
            "{m} {p} {:?}",
            &got[..4]
        );
    }

    /// The bound counts the run a fill is gathering: a merging outbox
    /// stops at `max_outbox_bytes` (plus the frame that crosses it) as a
    /// plain one does, and the next fill goes on from there.
    #[test]
    fn a_fill_gathering_runs_stops_at_the_outbox_bound() {
        let mut f = fixture(4096);
        let limits = FanoutLimits {
            max_outbox_bytes: 4096,
            max_lag_updates: 1000,
            max_subscriptions: 10,
        };
        let mut sub = Subscriber::new(Arc::clone(&f.market), Format::Json, limits);
        let mut out = Outbox::merging();
        f.quote("A", 0);
        sub.handle(request("subscribe", &["A"]), &mut out);
        drain(&mut out);
        for i in 1..=100 {
            f.quote("A", i);
        }
        let (mut got, mut sizes) = (Vec::new(), Vec::new());
        while sub.fill(&mut out) > 0 {
            sizes.push(out.len_bytes());
            got.extend(drain(&mut out));
        }
        // Each fill but the last stops at the bound, within a frame of it.
        let (last, full) = sizes.split_last().unwrap();
        assert!(full.len() >= 4, "{sizes:?}");
        assert!(
            full.iter().all(|n| (4096..4096 + 256).contains(n)),
            "{sizes:?}"
        );
        assert!(*last < 4096 + 256, "{sizes:?}");
        assert_eq!(got.len(), 100);
        assert_eq!(got[99], msg("quote", "A", 101));
    }

    #[test]
    fn a_lagging_subscriber_gets_only_the_latest_value_of_each_symbol() {
        let mut f = fixture(8);
        let mut sub = f.subscriber(4);
        let mut out = Outbox::default();
        sub.handle(request("subscribe", &["*"]), &mut out);
        drain(&mut out);
        for i in 1..=10 {
            f.quote("A", i);
            f.quote("B", i);
        }
        f.quote("C", 1);
        sub.fill(&mut out);
        let got = drain(&mut out);
        assert_eq!(got[0].0, "conflated");
        // Definitions before first updates; the latest of each, in publish order.
        assert_eq!(
            &got[1..],
            [
                msg("symbol", "A", 0),
                msg("quote", "A", 10),
                msg("symbol", "B", 0),
                msg("quote", "B", 10),
                msg("symbol", "C", 0),
                msg("quote", "C", 1),
            ]
        );
        let m = &f.market.metrics;
        assert_eq!(m.conflated_updates_total.get(), 21);
        assert_eq!(m.lapped_readers_total.get(), 1);
        // Then live again, with nothing older or repeated.
        f.quote("A", 11);
        sub.fill(&mut out);
        assert_eq!(drain(&mut out), [msg("quote", "A", 11)]);
    }

    #[test]
    fn statuses_ride_with_the_data_in_snapshots_and_catch_ups() {
        let mut f = fixture(8);
        f.quote("A", 1);
        f.status("A", SymbolStatus::StaleGap);
        // TC0: a snapshot has the update, then the status after it.
        let mut sub = f.subscriber(4);
        let mut out = Outbox::default();
        sub.handle(request("subscribe", &["A"]), &mut out);
        assert_eq!(
            drain(&mut out),
            [
                msg("ack", "", 0),
                msg("symbol", "A", 0),
                msg("quote", "A", 1),
                msg("status", "A", 1)
            ]
        );
        // TC1: live, then an update, through the ring in order.
        f.status("A", SymbolStatus::Live);
        f.quote("A", 2);
        sub.fill(&mut out);
        assert_eq!(
            drain(&mut out),
            [msg("status", "A", 1), msg("quote", "A", 2)]
        );
        // TC2: a client that lags learns the newest of both, in order.
        for i in 3..10 {
            f.quote("A", i);
        }
        f.status("A", SymbolStatus::StaleDisconnected);
        sub.fill(&mut out);
        let got = drain(&mut out);
        assert_eq!(got[0].0, "conflated");
        assert_eq!(&got[1..], [msg("quote", "A", 9), msg("status", "A", 9)]);
        // TC3: the skipped ring entries are not sent after the catch-up.
        f.quote("A", 10);
        sub.fill(&mut out);
        assert_eq!(drain(&mut out), [msg("quote", "A", 10)]);
    }

    #[test]
    fn unsubscribing_a_name_under_star_keeps_the_others() {
        let mut f = fixture(16);
        f.quote("A", 1);
        f.quote("B", 1);
        let mut sub = f.subscriber(8);
        let mut out = Outbox::default();
        sub.handle(request("subscribe", &["*"]), &mut out);
        sub.handle(request("unsubscribe", &["A"]), &mut out);
        drain(&mut out);
        f.quote("A", 2);
        f.quote("B", 2);
        sub.fill(&mut out);
        assert_eq!(drain(&mut out), [msg("quote", "B", 2)]);
        assert_eq!(f.market.metrics.subscriptions.get(), 1);
        drop(sub);
        assert_eq!(f.market.metrics.subscriptions.get(), 0);
        assert_eq!(f.market.metrics.subscribers.get(), 0);
    }

    #[test]
    fn a_restricted_subscriber_gets_only_its_symbols_even_new_ones() {
        let mut f = fixture(16);
        f.quote("A", 1);
        f.quote("B", 1);
        let mut sub = f.subscriber(8);
        sub.restrict(["B", "D"].into_iter().map(String::from).collect());
        let mut out = Outbox::default();
        // TC0: a name outside the grant is refused, the allowed one not.
        let refused = sub.request(request("subscribe", &["A", "B"]), &mut out);
        assert_eq!(refused.err().map(|r| r.code), Some(ErrorCode::Forbidden));
        // TC1: `*` snapshots only B, and takes D, interned later, live.
        sub.handle(request("subscribe", &["*"]), &mut out);
        assert_eq!(
            drain(&mut out),
            [
                msg("ack", "", 0),
                msg("symbol", "B", 0),
                msg("quote", "B", 1)
            ]
        );
        f.quote("A", 2);
        f.quote("C", 1);
        f.quote("D", 1);
        f.quote("B", 2);
        sub.fill(&mut out);
        assert_eq!(
            drain(&mut out),
            [
                msg("symbol", "D", 0),
                msg("quote", "D", 1),
                msg("quote", "B", 2)
            ]
        );
        // TC2: unsubscribing one name under `*` keeps only the other.
        sub.handle(request("unsubscribe", &["B"]), &mut out);
        drain(&mut out);
        f.quote("A", 3);
        f.quote("B", 3);
        f.quote("D", 2);
        sub.fill(&mut out);
        assert_eq!(drain(&mut out), [msg("quote", "D", 2)]);
    }

    #[test]
    fn star_counts_every_symbol_it_covers_and_follows_new_ones_within_the_limit() {
        let mut f = fixture(32);
        f.quote("A", 1);
        f.quote("B", 1);
        f.quote("C", 1);
        let metrics = Arc::clone(&f.market.metrics);
        let mut sub = f.subscriber(8);
        sub.limits.max_subscriptions = 2;
        let mut out = Outbox::default();
        // TC0: three symbols under `*`, over a limit of two: refused,
        // nothing changed.
        let refused = sub.request(request("subscribe", &["*"]), &mut out);
        assert_eq!(
            refused.err().map(|r| r.code),
            Some(ErrorCode::TooManySymbols)
        );
        assert!(sub.is_idle());
        let mut sub = f.subscriber(8);
        sub.limits.max_subscriptions = 4;
        // TC1: within the limit, `*` is taken and counts three.
        sub.handle(request("subscribe", &["*"]), &mut out);
        drain(&mut out);
        assert_eq!(metrics.subscriptions.get(), 3);
        // TC2: new symbols join while the connection is within its limit:
        // D does, E does not; E is then not sent, and naming it is refused.
        f.quote("D", 1);
        f.quote("E", 1);
        f.quote("A", 2);
        sub.fill(&mut out);
        assert_eq!(
            drain(&mut out),
            [
                msg("symbol", "D", 0),
                msg("quote", "D", 1),
                msg("quote", "A", 2)
            ]
        );
        assert_eq!(metrics.subscriptions.get(), 4);
        let refused = sub.request(request("subscribe", &["E"]), &mut out);
        assert_eq!(
            refused.err().map(|r| r.code),
            Some(ErrorCode::TooManySymbols)
        );
        // TC3: after dropping one name, there is room to name E.
        sub.handle(request("unsubscribe", &["A"]), &mut out);
        sub.handle(request("subscribe", &["E"]), &mut out);
        assert_eq!(metrics.subscriptions.get(), 4);
        drop(sub);
        assert_eq!(metrics.subscriptions.get(), 0);
        assert_eq!(metrics.subscribers.get(), 0);
    }
}
