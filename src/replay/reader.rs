//! A segment's reader thread: the recording read from where its start
//! index says (a seek into a plain log, or lines read past), whole blocks
//! before the time passed over, and its updates handed to the session in
//! batches; what it passed over is told back in [`Passed`].

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::session::BATCH;
use super::Summary;
use crate::feed::recording::log::HEADER_LEN;
use crate::feed::recording::FileReader;
use crate::feed::{FeedError, FeedSpec, FeedStats, Timed};
use crate::symbols::Normalizer;

/// What a segment's reader passed over before its first update: set by
/// the reader thread before it sends its first batch, read by the session
/// after the segment. Counters for metrics only: a segment that received
/// a batch reads them ordered by the channel; one that ended sooner (its
/// client gone mid-skip) may read less.
#[derive(Default)]
pub(super) struct Passed {
    bytes: AtomicU64,
    lines: AtomicU64,
    updates: AtomicU64,
}

impl Passed {
    pub(super) fn add_to(&self, summary: &mut Summary) {
        // Relaxed: pairs with the stores in `read`, ordered by the batch
        // channel's send and receive (see the type's note).
        summary.jumped_bytes += self.bytes.load(Ordering::Relaxed);
        summary.jumped_lines += self.lines.load(Ordering::Relaxed);
        summary.passed_over += self.updates.load(Ordering::Relaxed);
    }
}

/// Starts the thread that reads the recording: its updates in batches,
/// then the channel's end (or an error).
pub(super) fn spawn_reader(
    spec: &FeedSpec,
    normalizer: Normalizer,
    start: Start,
    passed: Arc<Passed>,
) -> Result<mpsc::Receiver<Result<Vec<Timed>, FeedError>>, FeedError> {
    let (tx, rx) = mpsc::channel(2);
    let thread_spec = spec.clone();
    std::thread::Builder::new()
        .name("replay-reader".into())
        .spawn(move || read(&thread_spec, normalizer, start, &passed, &tx))
        .map_err(|e| FeedError::Reader {
            file: spec.name(),
            reason: e.to_string(),
        })?;
    Ok(rx)
}

/// Where a segment's reader starts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Start {
    /// Where the recording's start index says to begin.
    pub(super) at: Option<At>,
    /// The time before which a log's whole blocks are passed over.
    pub(super) skip_to: u64,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum At {
    /// This byte of a plain log, seeked to.
    Byte(u64),
    /// After this many lines of a line format, read past unparsed.
    Line(u64),
}

/// The reader thread: the recording's updates in batches, from where
/// `start` says, then the channel's end (or an error).
fn read(
    spec: &FeedSpec,
    mut normalizer: Normalizer,
    start: Start,
    passed: &Passed,
    tx: &mpsc::Sender<Result<Vec<Timed>, FeedError>>,
) {
    let byte = match start.at {
        Some(At::Byte(b)) => Some(b),
        _ => None,
    };
    let opened = open(spec, &mut normalizer, byte).and_then(|mut r| {
        if let Some(At::Line(n)) = start.at {
            r.skip_lines(n)?;
        }
        let n = r.skip_before(start.skip_to)?;
        // Relaxed: the batch channel's send orders these (see `Passed`).
        passed.updates.store(n, Ordering::Relaxed);
        let bytes = byte.map_or(0, |b| b.saturating_sub(HEADER_LEN as u64));
        passed.bytes.store(bytes, Ordering::Relaxed);
        let lines = match start.at {
            Some(At::Line(_)) => r.line_no(),
            _ => 0,
        };
        passed.lines.store(lines, Ordering::Relaxed);
        Ok(r)
    });
    let reader = match opened {
        Ok(reader) => reader,
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

/// The recording's reader (quiet); for a plain log with a byte `at` from
/// its block index, its header and then the file from that byte, as if
/// the blocks before were not there.
fn open<'n>(
    spec: &FeedSpec,
    normalizer: &'n mut Normalizer,
    at: Option<u64>,
) -> Result<FileReader<'n>, FeedError> {
    let stats = Arc::new(FeedStats::default());
    let (Some(at), FeedSpec::File(path)) = (at, spec) else {
        return FileReader::open(spec, normalizer, stats).map(FileReader::quiet);
    };
    let open_err = |source| FeedError::Open {
        file: spec.name(),
        source,
    };
    let mut file = File::open(path).map_err(open_err)?;
    let mut header = vec![0u8; HEADER_LEN];
    file.read_exact(&mut header).map_err(open_err)?;
    file.seek(SeekFrom::Start(at)).map_err(open_err)?;
    let src = io::Cursor::new(header).chain(BufReader::with_capacity(1 << 16, file));
    FileReader::with_source(spec.name(), Box::new(src), normalizer, stats).map(FileReader::quiet)
}
