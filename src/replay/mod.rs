//! Replay on demand (`docs/PROTOCOL.md`, "Replay"): one client's own pass
//! over a recording of the catalog ([`catalog`]), these symbols, this time
//! window, at this speed, and **every** update: a session never conflates.
//!
//! A session is a private copy of the data path, in one task: the
//! recording is read on a thread of its own (the reader live feeds use),
//! filtered, paced, and published by a [`Publisher`] of the session's own
//! into a ring of its own, which one [`Subscriber`] drains into the client
//! after every batch. So a replay sends the very messages the live `/ws`
//! sends (the same encoders, sequences, books and candles), and the ring
//! never laps its one reader: the next batch is read only once the client
//! has taken the last one. Back-pressure is TCP's: a client that reads
//! slowly slows the reading of the file, whatever the speed asked for.

pub mod catalog;
mod time;

use std::collections::HashSet;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

pub use self::time::parse_time;
use crate::fanout::{FanoutLimits, Outbox, Subscriber};
use crate::feed::recording::Pacer;
use crate::feed::{FeedError, FeedSpec, FeedStats, Speed, Timed};
use crate::market::Market;
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::symbols::{Normalizer, SymbolTable};
use crate::wire::encode::frame_payload;
use crate::wire::{self, Channels, Format, ReplayControl};

/// The session's ring: larger than a batch, so that its one reader, which
/// drains it after every batch, is never lapped.
const RING: usize = 1 << 13;

/// Updates read from the file per hand-over and per drain.
const BATCH: usize = 512;

/// What one session replays.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub spec: FeedSpec,
    /// Only these symbols (`None`: every one).
    pub symbols: Option<HashSet<String>>,
    /// The window, in ns of recorded time (a record's capture time, else
    /// its exchange time): from inclusive, to exclusive.
    pub from_ns: u64,
    pub to_ns: u64,
    pub speed: Speed,
    /// As on `/ws` (`None`: quotes and trades).
    pub channels: Option<Channels>,
}

/// What the session sends its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The JSON messages, one per line (`/replay.ndjson`).
    NdJson,
    /// WebSocket frames of this subprotocol, as `/ws` sends them
    /// (`/replay`).
    Frames(Format),
}

/// How a session ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Updates of the window published (before channel selection).
    pub updates: u64,
    /// Messages sent to the client (definitions and data).
    pub messages: u64,
    /// Whether the client went away before the end.
    pub cut: bool,
    /// Times it was paused.
    pub pauses: u64,
}

/// Runs one session to its end, sending to `tx` (bounded: a full channel
/// waits, which is the back-pressure), and taking `controls` between
/// updates. Ends early if the client goes away (the receiver is dropped,
/// or the controls' sender).
pub async fn run(
    req: ReplayRequest,
    output: Output,
    tx: mpsc::Sender<Bytes>,
    mut controls: Option<mpsc::Receiver<ReplayControl>>,
) -> Result<Summary, FeedError> {
    let symbols = SymbolTable::new();
    let (market, writer) = Market::new(RING, Arc::clone(&symbols), Arc::new(Metrics::default()));
    let mut publisher = Publisher::new(Arc::clone(&market), writer);
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
    let mut out = Outbox::default();
    subscribe(&mut sub, req.channels, &mut out);
    // The ack is the live protocol's; a replay's stream is the data.
    out = Outbox::default();

    let mut batch_rx = spawn_reader(&req.spec, Normalizer::new(Arc::clone(&symbols)))?;
    let mut summary = Summary::default();
    let mut pacer = Pacer::new(req.speed);
    let mut filter = SymbolFilter::new(req.symbols.clone(), symbols);
    'read: while let Some(batch) = batch_rx.recv().await {
        for timed in batch? {
            let t = timed.pace_ns.unwrap_or(0);
            if t >= req.to_ns {
                break 'read;
            }
            if t < req.from_ns || !filter.wants(timed.update.symbol) {
                continue;
            }
            if let Some(c) = &mut controls {
                if !take_controls(c, &mut pacer, &mut summary).await {
                    summary.cut = true;
                    return Ok(summary);
                }
            }
            pacer.wait(timed.pace_ns).await;
            publisher.publish(timed.update);
            summary.updates += 1;
            // Paced, each update goes when it is due; at full speed, in
            // batches.
            let due = pacer.is_paced() || market.ring.tail() - sub.position() >= BATCH as u64;
            if due && !drain(&mut sub, &mut out, output, &tx, &mut summary).await {
                summary.cut = true;
                return Ok(summary);
            }
        }
        if !drain(&mut sub, &mut out, output, &tx, &mut summary).await {
            summary.cut = true;
            return Ok(summary);
        }
    }
    if !drain(&mut sub, &mut out, output, &tx, &mut summary).await {
        summary.cut = true;
    }
    Ok(summary)
}

/// Starts the thread that reads the recording: its updates in batches,
/// then the channel's end (or an error).
fn spawn_reader(
    spec: &FeedSpec,
    normalizer: Normalizer,
) -> Result<mpsc::Receiver<Result<Vec<Timed>, FeedError>>, FeedError> {
    let (tx, rx) = mpsc::channel(2);
    let thread_spec = spec.clone();
    std::thread::Builder::new()
        .name("replay-reader".into())
        .spawn(move || read(&thread_spec, normalizer, &tx))
        .map_err(|e| FeedError::Reader {
            file: spec.name(),
            reason: e.to_string(),
        })?;
    Ok(rx)
}

/// Which symbols a session replays, decided once per symbol id.
struct SymbolFilter {
    names: Option<HashSet<String>>,
    symbols: Arc<SymbolTable>,
    /// By symbol id: 0 not looked at yet, 1 wanted, 2 not.
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
        self.decided[i] == 1
    }
}

/// Applies the controls that came; while paused, waits for `resume`.
/// False if the client went away.
async fn take_controls(
    controls: &mut mpsc::Receiver<ReplayControl>,
    pacer: &mut Pacer,
    summary: &mut Summary,
) -> bool {
    let mut paused = false;
    loop {
        let control = if paused {
            match controls.recv().await {
                Some(c) => c,
                None => return false,
            }
        } else {
            match controls.try_recv() {
                Ok(c) => c,
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        };
        match control {
            ReplayControl::Pause => {
                paused = true;
                summary.pauses += 1;
            }
            ReplayControl::Resume => paused = false,
            // Re-anchored at the next update: the pace changes from there.
            ReplayControl::Speed(k) => *pacer = Pacer::new(k.map_or(Speed::Max, Speed::Factor)),
        }
    }
}

/// Subscribes the session's one subscriber to every symbol (the filter is
/// at the reader: a named symbol does not exist before its first record).
fn subscribe(sub: &mut Subscriber, channels: Option<Channels>, out: &mut Outbox) {
    let text = match channels {
        None => r#"{"op":"subscribe","symbols":["*"]}"#.to_owned(),
        Some(c) => serde_json::json!({"op": "subscribe", "symbols": ["*"], "channels": c.names()})
            .to_string(),
    };
    if let Ok(req) = wire::parse_request(text.as_bytes(), usize::MAX) {
        sub.handle(req, out);
    }
}

/// Moves everything the session's ring holds to the client. False if the
/// client went away.
async fn drain(
    sub: &mut Subscriber,
    out: &mut Outbox,
    output: Output,
    tx: &mpsc::Sender<Bytes>,
    summary: &mut Summary,
) -> bool {
    loop {
        let read = sub.fill(out);
        if out.is_empty() {
            if read == 0 {
                return true;
            }
            continue;
        }
        let mut chunk = BytesMut::with_capacity(out.len_bytes());
        while let Some((frame, _)) = out.pop_frame() {
            match output {
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

/// The reader thread: the recording's updates in batches, then the
/// channel's end (or an error).
fn read(
    spec: &FeedSpec,
    mut normalizer: Normalizer,
    tx: &mpsc::Sender<Result<Vec<Timed>, FeedError>>,
) {
    let reader = match crate::feed::recording::FileReader::open(
        spec,
        &mut normalizer,
        Arc::new(FeedStats::default()),
    ) {
        Ok(reader) => reader.quiet(),
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    };
    let mut batch = Vec::with_capacity(BATCH);
    for item in reader {
        match item {
            Ok(timed) => batch.push(timed),
            Err(e) => {
                let _ = tx.blocking_send(Ok(batch));
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
        if batch.len() == BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if tx.blocking_send(Ok(full)).is_err() {
                // The session is gone.
                return;
            }
        }
    }
    let _ = tx.blocking_send(Ok(batch));
}
