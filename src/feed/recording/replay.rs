//! A recording replayed as a feed: passes over it on a reader thread, again
//! from the top when looped, handed in batches to the async side, which
//! paces them ([`super::pacer`]) into the publisher's channel.
//!
//! What each pass says in the log is here too ([`PassReport`]): those lines
//! carry this module's name as their target, which operators filter on
//! (`RUST_LOG=tickwire::feed::recording::replay=debug`), whoever reads the
//! recording.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::log::LoopedSequences;
use super::pacer::Pacer;
use super::reader::FileReader;
use crate::feed::normalize::{BadRecord, RejectTally, LOGGED_PER_REASON, LOG_EVERY};
use crate::feed::{FeedError, FeedSpec, FeedStats, ReplayOptions, Timed};
use crate::symbols::Normalizer;
use crate::update::Update;

/// Updates the reader thread hands over at once; large enough to make the
/// channel hop cheap, small enough to keep pacing latency out of sight.
const BATCH: usize = 256;

/// What the reader thread hands the async side.
enum Batch {
    Updates(Vec<Timed>),
    /// The recording starts again from the top.
    Restart,
    /// The recording ended.
    Done,
    Failed(FeedError),
}

/// Replays a recording into `tx`, paced by `opts`.
///
/// Reading and decompressing block, so they run on a dedicated thread that
/// hands over batches of parsed updates through a small bounded channel;
/// this task only paces and sends. A plain thread rather than
/// `spawn_blocking`: the reader lives as long as the feed (forever when
/// looped), which would pin a blocking-pool slot and, under a paused test
/// clock, stop tokio from auto-advancing time. Backpressure runs all the way
/// back: a slow publisher fills `tx`, which stops this task, which fills the
/// batch channel, which parks the reader.
pub(crate) async fn run(
    spec: FeedSpec,
    opts: ReplayOptions,
    normalizer: Normalizer,
    tx: mpsc::Sender<Update>,
    stats: Arc<FeedStats>,
) -> Result<(), FeedError> {
    let file = spec.name();
    let (batch_tx, mut batch_rx) = mpsc::channel(4);
    let reader_stats = stats.clone();
    std::thread::Builder::new()
        .name("feed-reader".into())
        .spawn(move || {
            let end = match read_batches(&spec, opts.looped, normalizer, &reader_stats, &batch_tx) {
                Ok(()) => Batch::Done,
                Err(err) => Batch::Failed(err),
            };
            // Fails only if the feed task is gone, and then nobody is asking.
            let _ = batch_tx.blocking_send(end);
        })
        .map_err(|e| FeedError::Reader {
            file: file.clone(),
            reason: e.to_string(),
        })?;
    let mut pacer = Pacer::new(opts.speed);
    while let Some(batch) = batch_rx.recv().await {
        match batch {
            Batch::Updates(items) => {
                for timed in items {
                    pacer.wait(timed.pace_ns).await;
                    if tx.send(timed.update).await.is_err() {
                        // The publisher is gone: the server is shutting down.
                        return Ok(());
                    }
                    stats.sent(&timed.update);
                }
            }
            Batch::Restart => pacer.restart(),
            Batch::Done => return Ok(()),
            Batch::Failed(err) => return Err(err),
        }
    }
    // The channel closed without a last word: the reader thread panicked.
    Err(FeedError::Reader {
        file,
        reason: "reader thread ended unexpectedly".into(),
    })
}

fn read_batches(
    spec: &FeedSpec,
    looped: bool,
    mut normalizer: Normalizer,
    stats: &Arc<FeedStats>,
    batch_tx: &mpsc::Sender<Batch>,
) -> Result<(), FeedError> {
    let mut sequences = LoopedSequences::default();
    let mut first_pass = true;
    loop {
        let mut produced = false;
        let mut batch = Vec::with_capacity(BATCH);
        let mut reader = FileReader::open(spec, &mut normalizer, stats.clone())?;
        if !std::mem::replace(&mut first_pass, false) {
            reader = reader.repeat_pass();
        }
        for item in reader {
            let mut timed = match item {
                Ok(timed) => timed,
                Err(err) => {
                    // Deliver what was read before the error; the caller
                    // reports the error after it.
                    let _ = batch_tx.blocking_send(Batch::Updates(batch));
                    return Err(err);
                }
            };
            produced = true;
            sequences.apply(&mut timed.update);
            batch.push(timed);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if batch_tx.blocking_send(Batch::Updates(full)).is_err() {
                    return Ok(());
                }
            }
        }
        if batch_tx.blocking_send(Batch::Updates(batch)).is_err() || !looped {
            return Ok(());
        }
        if !produced {
            // Looping a recording with no quotes or trades would spin.
            tracing::warn!("{}: no updates in the recording; not looping", spec.name());
            return Ok(());
        }
        stats.loops.inc();
        sequences.next_pass();
        if batch_tx.blocking_send(Batch::Restart).is_err() {
            return Ok(());
        }
    }
}

/// How loudly a pass reports its rejections and its end-of-pass summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Voice {
    /// Rejections within budget at warn; the summary at info, or warn when
    /// something was rejected.
    Normal,
    /// A looped replay's later passes, which repeat the first line for
    /// line: rejections and the end-of-file summary at debug. A stop
    /// mid-pass is still summarized at the normal level.
    Repeat,
    /// [`probe`](super::probe): nothing.
    Silent,
}

/// What one pass over a recording says in the log: the capture notes it
/// skipped (at debug), each rejection within its reason's budget, and one
/// summary line when the pass ends or stops. The reader decides what a
/// line is worth; this says it.
pub(super) struct PassReport {
    pub(super) voice: Voice,
    /// This pass's rejections, by reason.
    pub(super) rejections: RejectTally,
    /// Updates handed out this pass, and the stats when it started: the
    /// summary reports this pass alone.
    pub(super) yielded: u64,
    start_records: u64,
    start_skipped: u64,
    summarized: bool,
}

impl PassReport {
    pub(super) fn new(stats: &FeedStats) -> Self {
        PassReport {
            voice: Voice::Normal,
            rejections: RejectTally::default(),
            yielded: 0,
            start_records: stats.records.get(),
            start_skipped: stats.skipped.get(),
            summarized: false,
        }
    }

    /// A capture tool's note, skipped (`kind` says which).
    pub(super) fn skipped_note(&self, file: &str, line_no: u64, kind: &str) {
        if self.voice != Voice::Silent {
            tracing::debug!("{file}:{line_no}: skipped {kind}");
        }
    }

    /// The `n`th rejection of its reason in this pass, at `line_no`: logged
    /// if within the reason's budget, the last one within it saying what
    /// follows.
    pub(super) fn rejected(&self, file: &str, line_no: u64, n: u64, err: &BadRecord) {
        if !RejectTally::logs(n) {
            return;
        }
        let reason = err.reason();
        let level = match self.voice {
            Voice::Normal => Some(tracing::Level::WARN),
            Voice::Repeat => Some(tracing::Level::DEBUG),
            Voice::Silent => None,
        };
        let budget = if n == LOGGED_PER_REASON {
            format!(
                "; further `{}` rejections of this file are logged every {LOG_EVERY}th",
                reason.name(),
            )
        } else {
            String::new()
        };
        log_at(
            level,
            format_args!(
                "{file}:{line_no}: rejected record ({} #{n}): {err}{budget}",
                reason.name()
            ),
        );
    }

    /// Logs the pass's one summary line, the first time it is asked: at
    /// the end of the file (`at_end`), or where the reader stopped. `unit`
    /// names what `at` counts (lines, or a log's blocks).
    pub(super) fn summarize(
        &mut self,
        file: &str,
        stats: &FeedStats,
        at_end: bool,
        (unit, at): (&str, u64),
    ) {
        if std::mem::replace(&mut self.summarized, true) {
            return;
        }
        let rejected = self.rejections.total();
        let level = match (self.voice, at_end) {
            (Voice::Silent, _) => None,
            (Voice::Repeat, true) => Some(tracing::Level::DEBUG),
            _ if rejected > 0 => Some(tracing::Level::WARN),
            _ => Some(tracing::Level::INFO),
        };
        if level.is_none() {
            return;
        }
        let end = if at_end { "end of file" } else { "stopped" };
        let records = stats.records.get() - self.start_records;
        let skipped = stats.skipped.get() - self.start_skipped;
        let by_reason = self.rejections.by_reason(unit);
        let sep = if by_reason.is_empty() { "" } else { ": " };
        log_at(
            level,
            format_args!(
                "{file}: {end} at {unit} {at}: {records} records, {} updates, {skipped} skipped, \
                 {rejected} rejected{sep}{by_reason}",
                self.yielded
            ),
        );
    }
}

/// Logs at a level chosen at run time (tracing's macros take a constant).
fn log_at(level: Option<tracing::Level>, args: std::fmt::Arguments<'_>) {
    match level {
        Some(tracing::Level::WARN) => tracing::warn!("{args}"),
        Some(tracing::Level::INFO) => tracing::info!("{args}"),
        Some(_) => tracing::debug!("{args}"),
        None => {}
    }
}
