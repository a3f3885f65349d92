//! One segment of a replay session: the recording read from a time on,
//! published into a private market and drained to the client; a `seek`
//! ends it, and the session starts another ([`super::run`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::catalog::StartIndex;
use super::reader::{spawn_reader, At, Passed, Start};
use super::{notice, Output, ReplayRequest, Summary};
use crate::fanout::{FanoutLimits, Outbox, Subscriber};
use crate::feed::recording::Pacer;
use crate::feed::{FeedError, Speed, Timed};
use crate::market::Market;
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::symbols::{Normalizer, SymbolTable};
use crate::update::UpdateKind;
use crate::wire::encode::frame_payload;
use crate::wire::{self, Channels, Format, ReplayControl};

/// The session's ring: larger than a batch, so that its one reader, which
/// drains it after every batch, is never lapped.
const RING: usize = 1 << 13;

/// Updates read from the file per hand-over and per drain.
pub(super) const BATCH: usize = 512;

/// A paced session this far behind its recorded pace says so, at most once
/// this often.
const BEHIND: Duration = Duration::from_secs(1);

/// How a segment ended.
pub(super) enum Next {
    /// The window is replayed.
    End,
    /// The client went away.
    Gone,
    /// The client asked for the recording from this time on.
    Seek(u64),
}

/// A private market, its publisher and its one subscriber.
pub(super) struct Segment {
    market: Arc<Market>,
    publisher: Publisher,
    sub: Subscriber,
    out: Outbox,
    output: Output,
    batches: mpsc::Receiver<Result<Vec<Timed>, FeedError>>,
    filter: SymbolFilter,
    from_ns: u64,
    channels: Option<Channels>,
    /// Book channels are asked for: levels before `from_ns` are published
    /// (no one watches yet, so nothing is encoded) to build the books that
    /// the subscription's snapshots at `from_ns` show.
    books: bool,
    /// The subscriber has subscribed: at the window's first update, so
    /// that its snapshots are the state at the window's start.
    subscribed: bool,
    passed: Arc<Passed>,
}

impl Segment {
    pub(super) fn new(
        req: &ReplayRequest,
        from_ns: u64,
        output: Output,
    ) -> Result<Self, FeedError> {
        let symbols = SymbolTable::new();
        let (market, writer) =
            Market::new(RING, Arc::clone(&symbols), Arc::new(Metrics::default()));
        let publisher = Publisher::new(Arc::clone(&market), writer);
        let limits = FanoutLimits {
            max_outbox_bytes: 4 << 20,
            max_lag_updates: RING as u64 - 1,
            max_subscriptions: usize::MAX,
        };
        let format = match output {
            Output::NdJson => Format::Json,
            Output::Frames(format) => format,
        };
        let mut sub = Subscriber::new(Arc::clone(&market), format, limits);
        let books = req
            .channels
            .is_some_and(|c| c.book_variants().next().is_some());
        // A book is its history: with book channels, everything is read.
        let skip_to = if books { 0 } else { from_ns };
        let at = req
            .index
            .as_deref()
            .filter(|_| skip_to > 0)
            .map(|ix| match ix {
                StartIndex::LogBlocks(blocks) => At::Byte(blocks.start_for(skip_to)),
                StartIndex::Lines(runs) => At::Line(runs.start_for(skip_to)),
            });
        let start = Start { at, skip_to };
        if !books {
            // `*` at once, and before the reader starts: each symbol is
            // then defined with its first message (a symbol the reader had
            // interned already would be defined into this ack's outbox,
            // which is dropped), and the filter publishes only the wanted.
            subscribe(&mut sub, "*", req.channels, &mut Outbox::default());
        }
        let passed = Arc::new(Passed::default());
        let normalizer = Normalizer::new(Arc::clone(&symbols));
        let batches = spawn_reader(&req.spec, normalizer, start, Arc::clone(&passed))?;
        Ok(Segment {
            market,
            publisher,
            sub,
            out: Outbox::default(),
            output,
            batches,
            filter: SymbolFilter::new(req.symbols.clone(), symbols),
            from_ns,
            channels: req.channels,
            books,
            subscribed: !books,
            passed,
        })
    }

    /// What its reader passed over, once the segment has played.
    pub(super) fn passed(&self) -> Arc<Passed> {
        Arc::clone(&self.passed)
    }

    /// With book channels, subscribes at the window's first update (of
    /// `symbol`, wanted), so that the snapshots are the books at `from_ns`:
    /// `*` when every symbol is wanted; else each wanted symbol by name,
    /// those read so far now and the others at their first update, so that
    /// no other symbol is defined. The snapshots go to the client, the
    /// acks do not (an ack is the live protocol's; a replay's stream is
    /// the data).
    fn subscribe_at_window(&mut self, symbol: Option<u32>) {
        if !self.books {
            return;
        }
        if !std::mem::replace(&mut self.subscribed, true) {
            if self.filter.names.is_none() {
                self.subscribe_to("*");
                return;
            }
            for id in 0..self.filter.symbols.len() as u32 {
                if let Some(name) = self.filter.first_subscription(id) {
                    self.subscribe_to(&name);
                }
            }
        }
        if let Some(name) = symbol.and_then(|id| self.filter.first_subscription(id)) {
            self.subscribe_to(&name);
        }
    }

    fn subscribe_to(&mut self, symbols: &str) {
        // Drained after every publish: the ack is the only frame here.
        debug_assert!(self.out.is_empty());
        subscribe(&mut self.sub, symbols, self.channels, &mut self.out);
        let _ack = self.out.pop_frame();
    }

    /// Replays the window from this segment's time on, at `speed` (which
    /// a `speed` control changes for this segment and the next).
    pub(super) async fn play(
        mut self,
        req: &ReplayRequest,
        speed: &mut Speed,
        tx: &mpsc::Sender<Bytes>,
        controls: &mut Option<mpsc::Receiver<ReplayControl>>,
        summary: &mut Summary,
    ) -> Result<Next, FeedError> {
        let mut pacer = Pacer::new(*speed);
        let mut said_behind: Option<Instant> = None;
        'read: while let Some(batch) = self.batches.recv().await {
            for timed in batch? {
                let t = timed.pace_ns.unwrap_or(0);
                if t >= req.to_ns {
                    break 'read;
                }
                if !self.filter.wants(timed.update.symbol) {
                    continue;
                }
                if t < self.from_ns {
                    if self.books && matches!(timed.update.kind, UpdateKind::Level { .. }) {
                        self.publisher.publish(timed.update);
                    }
                    continue;
                }
                self.subscribe_at_window(Some(timed.update.symbol));
                if let Some(c) = controls {
                    match take_controls(c, (&mut pacer, speed), summary).await {
                        Flow::Go => {}
                        Flow::Gone => return Ok(Next::Gone),
                        Flow::Seek(to) => return Ok(Next::Seek(to)),
                    }
                }
                pacer.wait(timed.pace_ns).await;
                self.publisher.publish(timed.update);
                summary.updates += 1;
                // Paced, each update goes when it is due; at full speed, in
                // batches.
                let behind = self.market.ring.tail() - self.sub.position();
                if (pacer.is_paced() || behind >= BATCH as u64) && !self.drain(tx, summary).await {
                    return Ok(Next::Gone);
                }
                if let Some(late) = pacer.lateness() {
                    let quiet = said_behind.is_none_or(|at| at.elapsed() >= BEHIND);
                    if late >= BEHIND && quiet {
                        said_behind = Some(Instant::now());
                        summary.behind_notices += 1;
                        let text = format!(
                            r#"{{"type":"replay_behind","behind_ms":{}}}"#,
                            late.as_millis()
                        );
                        if tx.send(notice(self.output, &text)).await.is_err() {
                            return Ok(Next::Gone);
                        }
                    }
                }
            }
            if !self.drain(tx, summary).await {
                return Ok(Next::Gone);
            }
        }
        // A window with no update still gets the books at its start.
        self.subscribe_at_window(None);
        Ok(if self.drain(tx, summary).await {
            Next::End
        } else {
            Next::Gone
        })
    }

    /// Moves everything the segment's ring holds to the client. False if
    /// the client went away.
    async fn drain(&mut self, tx: &mpsc::Sender<Bytes>, summary: &mut Summary) -> bool {
        loop {
            let read = self.sub.fill(&mut self.out);
            if self.out.is_empty() {
                if read == 0 {
                    return true;
                }
                continue;
            }
            let mut chunk = BytesMut::with_capacity(self.out.len_bytes());
            while let Some((frame, _)) = self.out.pop_frame() {
                match self.output {
                    Output::NdJson => {
                        chunk.put_slice(&frame_payload(&frame));
                        chunk.put_u8(b'\n');
                    }
                    Output::Frames(_) => chunk.put_slice(&frame),
                }
                summary.messages += 1;
            }
            if tx.send(chunk.freeze()).await.is_err() {
                return false;
            }
        }
    }
}

/// Which symbols a session replays, decided once per symbol id.
struct SymbolFilter {
    names: Option<HashSet<String>>,
    symbols: Arc<SymbolTable>,
    /// By symbol id: 0 not looked at yet, 1 wanted, 2 not, 3 wanted and
    /// subscribed to by name.
    decided: Vec<u8>,
}

impl SymbolFilter {
    fn new(names: Option<HashSet<String>>, symbols: Arc<SymbolTable>) -> Self {
        SymbolFilter {
            names,
            symbols,
            decided: Vec::new(),
        }
    }

    fn wants(&mut self, id: u32) -> bool {
        let Some(names) = &self.names else {
            return true;
        };
        let i = id as usize;
        if self.decided.len() <= i {
            self.decided.resize(i + 1, 0);
        }
        if self.decided[i] == 0 {
            let yes = self
                .symbols
                .get(id)
                .is_some_and(|d| names.contains(&*d.name));
            self.decided[i] = if yes { 1 } else { 2 };
        }
        self.decided[i] & 1 == 1
    }

    /// The name of a wanted symbol (of a filter by names) the first time
    /// it is asked for: to subscribe to it once.
    fn first_subscription(&mut self, id: u32) -> Option<Arc<str>> {
        if self.names.is_none() || !self.wants(id) || self.decided[id as usize] == 3 {
            return None;
        }
        self.decided[id as usize] = 3;
        self.symbols.get(id).map(|d| Arc::clone(&d.name))
    }
}

/// What the controls say to do next.
enum Flow {
    Go,
    Gone,
    Seek(u64),
}

/// Applies the controls that came; while paused, waits for `resume` (or a
/// `seek`).
async fn take_controls(
    controls: &mut mpsc::Receiver<ReplayControl>,
    (pacer, speed): (&mut Pacer, &mut Speed),
    summary: &mut Summary,
) -> Flow {
    let mut paused = false;
    loop {
        let control = if paused {
            match controls.recv().await {
                Some(c) => c,
                None => return Flow::Gone,
            }
        } else {
            match controls.try_recv() {
                Ok(c) => c,
                Err(mpsc::error::TryRecvError::Empty) => return Flow::Go,
                Err(mpsc::error::TryRecvError::Disconnected) => return Flow::Gone,
            }
        };
        match control {
            ReplayControl::Pause => {
                paused = true;
                summary.pauses += 1;
            }
            ReplayControl::Resume => paused = false,
            // Re-anchored at the next update: the pace changes from there.
            ReplayControl::Speed(k) => {
                *speed = k.map_or(Speed::Max, Speed::Factor);
                *pacer = Pacer::new(*speed);
            }
            ReplayControl::Seek(to) => return Flow::Seek(to),
        }
    }
}

/// Subscribes the session's one subscriber to `symbols` (`*`, or one
/// name) on the session's channels.
fn subscribe(sub: &mut Subscriber, symbols: &str, channels: Option<Channels>, out: &mut Outbox) {
    let text = match channels {
        None => serde_json::json!({"op": "subscribe", "symbols": [symbols]}).to_string(),
        Some(c) => {
            serde_json::json!({"op": "subscribe", "symbols": [symbols], "channels": c.names()})
                .to_string()
        }
    };
    if let Ok(req) = wire::parse_request(text.as_bytes(), usize::MAX) {
        sub.handle(req, out);
    }
}
