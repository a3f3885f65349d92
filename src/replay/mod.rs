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
use crate::feed::{FeedError, FeedSpec, FeedStats, Speed, Timed};
use crate::market::Market;
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::symbols::{Normalizer, SymbolTable};
use crate::wire::encode::frame_payload;
use crate::wire::{self, Channels, Format};

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
}

/// Runs one session to its end, sending to `tx` (bounded: a full channel
/// waits, which is the back-pressure). Ends early if the client goes away
/// (the receiver is dropped).
pub async fn run(
    req: ReplayRequest,
    output: Output,
    tx: mpsc::Sender<Bytes>,
) -> Result<Summary, FeedError> {
    let symbols = SymbolTable::new();
    let (market, writer) = Market::new(RING, Arc::clone(&symbols), Arc::new(Metrics::default()));
    let mut publisher = Publisher::new(Arc::clone(&market), writer);
    let limits = FanoutLimits {
        max_outbox_bytes: 4 << 20,
        max_lag_updates: RING as u64 - 1,
        max_subscriptions: usize::MAX,
    };
    let mut sub = Subscriber::new(Arc::clone(&market), Format::Json, limits);
    let mut out = Outbox::default();
    subscribe(&mut sub, req.channels, &mut out);
    // The ack is the live protocol's; a replay's stream is the data.
    out = Outbox::default();

    let (batch_tx, mut batch_rx) = mpsc::channel::<Result<Vec<Timed>, FeedError>>(2);
    let normalizer = Normalizer::new(Arc::clone(&symbols));
    let spec = req.spec.clone();
    std::thread::Builder::new()
        .name("replay-reader".into())
        .spawn(move || read(&spec, normalizer, &batch_tx))
        .map_err(|e| FeedError::Reader {
            file: req.spec.name(),
            reason: e.to_string(),
        })?;

    let mut summary = Summary::default();
    let mut pacer = crate::feed::recording::Pacer::new(req.speed);
    // By symbol id: 0 not looked at yet, 1 wanted, 2 not.
    let mut wanted_ids: Vec<u8> = Vec::new();
    let mut wanted = |id: u32| {
        let Some(names) = &req.symbols else {
            return true;
        };
        let i = id as usize;
        if wanted_ids.len() <= i {
            wanted_ids.resize(i + 1, 0);
        }
        if wanted_ids[i] == 0 {
            let yes = symbols.get(id).is_some_and(|d| names.contains(&*d.name));
            wanted_ids[i] = if yes { 1 } else { 2 };
        }
        wanted_ids[i] == 1
    };
    'read: while let Some(batch) = batch_rx.recv().await {
        for timed in batch? {
            let t = timed.pace_ns.unwrap_or(0);
            if t >= req.to_ns {
                break 'read;
            }
            if t < req.from_ns || !wanted(timed.update.symbol) {
                continue;
            }
            pacer.wait(timed.pace_ns).await;
            publisher.publish(timed.update);
            summary.updates += 1;
            if market.ring.tail() - sub.position() >= BATCH as u64
                && !drain(&mut sub, &mut out, output, &tx, &mut summary).await
            {
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
