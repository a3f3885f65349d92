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
mod reader;
mod session;

use std::collections::HashSet;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

use self::catalog::StartIndex;
use self::session::{Next, Segment};
use crate::feed::{FeedError, FeedSpec, Speed};
use crate::wire::{self, Channels, Format, ReplayControl};

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
    /// Where the recording's blocks start and how late they run, when the
    /// catalog has read it: a segment from a time starts at the first block
    /// it needs.
    pub index: Option<Arc<StartIndex>>,
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
    /// Times it was sent elsewhere in the recording.
    pub seeks: u64,
    /// `replay_behind` notices sent.
    pub behind_notices: u64,
    /// Bytes of a log its block index let the session seek past, unread.
    pub jumped_bytes: u64,
    /// Lines of a line format its index let the session read past,
    /// unparsed.
    pub jumped_lines: u64,
    /// Updates of a log read but passed over, in blocks wholly before the
    /// session's time.
    pub passed_over: u64,
}

/// Runs one session to its end, sending to `tx` (bounded: a full channel
/// waits, which is the back-pressure), and taking `controls` between
/// updates. Ends early if the client goes away (the receiver is dropped,
/// or the controls' sender). A `seek` starts a new segment: the file read
/// again from the new time, under new numbers, after a `replay_seek`
/// notice.
pub async fn run(
    req: ReplayRequest,
    output: Output,
    tx: mpsc::Sender<Bytes>,
    mut controls: Option<mpsc::Receiver<ReplayControl>>,
) -> Result<Summary, FeedError> {
    let mut summary = Summary::default();
    let mut from_ns = req.from_ns;
    let mut speed = req.speed;
    loop {
        let segment = Segment::new(&req, from_ns, output)?;
        let passed = segment.passed();
        let next = segment
            .play(&req, &mut speed, &tx, &mut controls, &mut summary)
            .await;
        passed.add_to(&mut summary);
        match next? {
            Next::End => return Ok(summary),
            Next::Gone => {
                summary.cut = true;
                return Ok(summary);
            }
            Next::Seek(to) => {
                from_ns = to;
                summary.seeks += 1;
                let text = format!(r#"{{"type":"replay_seek","from":{to}}}"#);
                if tx.send(notice(output, &text)).await.is_err() {
                    summary.cut = true;
                    return Ok(summary);
                }
            }
        }
    }
}

/// A notice of the session's own (`replay_seek`, `replay_behind`) in the
/// session's output: a line, or a text frame (in both subprotocols, as
/// replies are).
fn notice(output: Output, json: &str) -> Bytes {
    match output {
        Output::NdJson => {
            let mut line = BytesMut::with_capacity(json.len() + 1);
            line.put_slice(json.as_bytes());
            line.put_u8(b'\n');
            line.freeze()
        }
        Output::Frames(_) => wire::text_frame_of(json.as_bytes()),
    }
}
