//! Recorded feeds: open, decompress, read lines, recognize each line's shape
//! and venue, pace by the recorded clock, and loop.
//!
//! Everything is decided from the content, never from the file name:
//!
//! - compression by magic bytes: gzip `1f 8b`, zstd `28 b5 2f fd`, else plain;
//! - after that, [`log::MAGIC`] makes the file a tickwire log, read by blocks
//!   (`LogFeed`); its recorded symbol sequences go on as `origin_seq`,
//!   raised on every loop so that a pass never goes back (`LoopedSequences`);
//! - a first line starting with [`tardis::HEADER_PREFIX`] makes the file a
//!   Tardis CSV; anything else is JSON lines, where each line may be a bare
//!   JSON object, `<integer epoch ns|µs|ms> <json>` (hftbacktest),
//!   `<epoch seconds.fraction>: <json>`, or a cryptofeed v2 capture record
//!   `{"t":"recv","ts":<epoch s>,"data":"<json text>"}`, and the JSON may be
//!   wrapped in Binance's `{"stream":..,"data":{..}}`.
//!
//! Lines a capture tool writes around the data are skipped, not rejected:
//! cryptofeed's raw capture (`AsyncFileCallback`) starts with
//! `configuration: {...}` and notes REST responses
//! (`https://… -> <ts>: {...}`), messages it sent (`wss://… <- <ts>: {...}`)
//! and connections (`wss://… <-> <ts>`) among the `<ts>: <json>` it received
//! (`capture_note`). They do not count towards recognizing the file.
//!
//! If none of the first [`DETECT_LINES`] non-empty lines is a known record,
//! the file is refused; after that a bad line is counted and skipped. The
//! log of rejections has a budget per reason (`RejectTally` in `feed`), and
//! every pass over a file ends with a summary line: records, updates,
//! skipped, and the rejections by reason with the first line of each.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::sync::Arc;
use std::time::Duration;

use simd_json::prelude::*;
use simd_json::BorrowedValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::log::{self, LogFeed, LoopedSequences};
use crate::feed::normalize::{BadRecord, Emitter, Outcome, RejectTally, MAX_LINE_BYTES};
use crate::feed::timestamp::{decimal_secs_ns, epoch_int_ns};
use crate::feed::venue::{binance, coinbase, tardis};
use crate::feed::{FeedError, FeedSpec, FeedStats, ReplayOptions, Speed, Timed};
use crate::symbols::{Normalizer, SymbolTable};
use crate::update::Update;

/// Lines looked at before a file with no known record is refused.
pub const DETECT_LINES: u64 = 100;

/// Decompressed bytes read per system call.
const READ_BUF: usize = 1 << 16;

/// Updates the reader thread hands over at once; large enough to make the
/// channel hop cheap, small enough to keep pacing latency out of sight.
const BATCH: usize = 256;

/// Gaps shorter than this are not slept: tokio's timer ticks in ms, so such
/// a sleep would end at the next tick anyway.
const SLEEP_SLACK: Duration = Duration::from_millis(1);

enum Format {
    JsonLines,
    Tardis(tardis::Columns),
}

/// How loudly a reader reports its rejections and its end-of-pass summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Voice {
    /// Rejections within budget at warn; the summary at info, or warn when
    /// something was rejected.
    Normal,
    /// A looped replay's later passes, which repeat the first line for
    /// line: rejections and the end-of-file summary at debug. A stop
    /// mid-pass is still summarized at the normal level.
    Repeat,
    /// [`probe`]: nothing.
    Silent,
}

/// Reads a recording synchronously, yielding its updates in file order.
///
/// A read error or an unrecognizable file ends the iteration with an `Err`
/// after every update read before it.
pub struct FileReader<'n> {
    file: String,
    src: Box<dyn BufRead + Send>,
    normalizer: &'n mut Normalizer,
    stats: Arc<FeedStats>,
    format: Option<Format>,
    line_no: u64,
    /// Non-empty lines that are not capture notes.
    nonempty: u64,
    /// Capture notes skipped ([`capture_note`]).
    notes: u64,
    recognized: bool,
    first_failure: Option<(u64, String)>,
    rejections: RejectTally,
    voice: Voice,
    /// Updates handed out this pass, and the stats when it started: the
    /// summary reports this pass alone.
    yielded: u64,
    start_records: u64,
    start_skipped: u64,
    summarized: bool,
    line: Vec<u8>,
    scratch: Vec<u8>,
    out: Vec<Timed>,
    pending: VecDeque<Timed>,
    done: bool,
    /// Set when the file is a tickwire log, which is read by blocks.
    log: Option<LogFeed<Box<dyn BufRead + Send>>>,
}

impl<'n> FileReader<'n> {
    pub fn open(
        spec: &FeedSpec,
        normalizer: &'n mut Normalizer,
        stats: Arc<FeedStats>,
    ) -> Result<Self, FeedError> {
        let file = spec.name();
        let open_err = |source| FeedError::Open {
            file: file.clone(),
            source,
        };
        let src = match spec {
            FeedSpec::File(path) => {
                let raw = File::open(path).map_err(open_err)?;
                decompress(BufReader::with_capacity(READ_BUF, raw)).map_err(open_err)?
            }
            FeedSpec::Embedded { bytes, .. } => decompress(*bytes).map_err(open_err)?,
            FeedSpec::Synthetic(_) | FeedSpec::Upstream(_) | FeedSpec::Nats(_) => {
                return Err(FeedError::NotRecorded { name: file })
            }
        };
        Self::with_source(file, src, normalizer, stats)
    }

    /// Reads a recording held in memory, in any supported format and
    /// compression, named `name` in errors: the same parsing path as
    /// [`open`](Self::open) on a file. The fuzz targets (`fuzz/`) feed
    /// arbitrary bytes through it.
    pub fn from_bytes(
        name: &str,
        bytes: Vec<u8>,
        normalizer: &'n mut Normalizer,
        stats: Arc<FeedStats>,
    ) -> Result<Self, FeedError> {
        let src = decompress(io::Cursor::new(bytes)).map_err(|source| FeedError::Open {
            file: name.to_owned(),
            source,
        })?;
        Self::with_source(name.to_owned(), src, normalizer, stats)
    }

    /// Over decompressed bytes: a tickwire log (by its magic) is read by
    /// blocks, anything else by lines.
    fn with_source(
        file: String,
        mut src: Box<dyn BufRead + Send>,
        normalizer: &'n mut Normalizer,
        stats: Arc<FeedStats>,
    ) -> Result<Self, FeedError> {
        let open_err = |source| FeedError::Open {
            file: file.clone(),
            source,
        };
        let is_log = log::is_log(src.fill_buf().map_err(open_err)?);
        let (src, log): (Box<dyn BufRead + Send>, _) = if is_log {
            (
                Box::new(io::empty()),
                Some(LogFeed::open(src, file.clone())?),
            )
        } else {
            (src, None)
        };
        Ok(FileReader {
            file,
            src,
            normalizer,
            start_records: stats.records.get(),
            start_skipped: stats.skipped.get(),
            stats,
            format: None,
            line_no: 0,
            nonempty: 0,
            notes: 0,
            recognized: false,
            first_failure: None,
            rejections: RejectTally::default(),
            voice: Voice::Normal,
            yielded: 0,
            summarized: false,
            line: Vec::with_capacity(4096),
            scratch: Vec::new(),
            out: Vec::new(),
            pending: VecDeque::new(),
            done: false,
            log,
        })
    }

    /// A later pass of a looped replay: what it rejects and its summary
    /// are logged at debug, as they repeat the first pass's.
    pub(crate) fn repeat_pass(mut self) -> Self {
        self.voice = Voice::Repeat;
        self
    }

    /// Reads until the file is recognized, or fails as the iteration would
    /// on it (unreadable, empty, no known record in the first
    /// [`DETECT_LINES`]). A tickwire log is recognized by its header.
    fn recognize(&mut self) -> Result<(), FeedError> {
        if self.log.is_some() {
            return Ok(());
        }
        while !self.recognized {
            self.pending.clear();
            if !self.read_line()? {
                break;
            }
        }
        Ok(())
    }

    /// Reads one line into `pending`. `Ok(false)` at the end of the file.
    fn read_line(&mut self) -> Result<bool, FeedError> {
        self.line.clear();
        let (n, cut) =
            read_capped_line(&mut self.src, &mut self.line, MAX_LINE_BYTES).map_err(|source| {
                FeedError::Read {
                    file: self.file.clone(),
                    line: self.line_no + 1,
                    source,
                }
            })?;
        if n == 0 {
            return self.finish();
        }
        self.line_no += 1;
        self.stats.records.inc();
        if cut {
            self.nonempty += 1;
            self.reject(BadRecord::TooLong)?;
            return Ok(true);
        }
        let line = trim_ascii(&mut self.line);
        if line.is_empty() {
            return Ok(true);
        }
        if !matches!(self.format, Some(Format::Tardis(_))) {
            let first = self.nonempty + self.notes == 0;
            if let Some(kind) = capture_note(line, first) {
                self.notes += 1;
                self.stats.skipped.inc();
                if self.voice != Voice::Silent {
                    tracing::debug!("{}:{}: skipped {kind}", self.file, self.line_no);
                }
                return Ok(true);
            }
        }
        self.nonempty += 1;
        let mut emit = Emitter {
            normalizer: self.normalizer,
            receive_ts_ns: None,
            out: &mut self.out,
        };
        let result = match &self.format {
            Some(Format::JsonLines) => json_line(line, &mut self.scratch, &mut emit),
            Some(Format::Tardis(columns)) => match std::str::from_utf8(line) {
                Ok(row) => columns.parse_row(row, &mut emit),
                Err(_) => Err(BadRecord::Unrecognized("CSV row is not UTF-8".into())),
            },
            None if line.starts_with(tardis::HEADER_PREFIX.as_bytes()) => {
                let header = String::from_utf8_lossy(line);
                let columns = tardis::Columns::from_header(&header).map_err(|what| {
                    FeedError::Unsupported {
                        file: self.file.clone(),
                        line: self.line_no,
                        what,
                    }
                })?;
                self.format = Some(Format::Tardis(columns));
                Ok(Outcome::Skipped)
            }
            None => {
                self.format = Some(Format::JsonLines);
                json_line(line, &mut self.scratch, &mut emit)
            }
        };
        match result {
            Ok(Outcome::Emitted) => {
                self.recognized = true;
                self.pending.extend(self.out.drain(..));
            }
            Ok(Outcome::Skipped) => {
                self.recognized = true;
                self.stats.skipped.inc();
            }
            Ok(Outcome::Foreign) => {
                self.reject(BadRecord::Unrecognized("unknown message".into()))?
            }
            Err(err) => self.reject(err)?,
        }
        Ok(true)
    }

    fn reject(&mut self, err: BadRecord) -> Result<(), FeedError> {
        // A record that failed halfway may have pushed some of its updates.
        self.out.clear();
        self.stats.rejected.inc();
        let reason = err.reason();
        let n = self.rejections.add(reason, self.line_no, 1);
        if !self.recognized {
            // Not logged one by one: the file may yet be refused, naming
            // this line; if it is recognized, the summary counts them.
            self.first_failure
                .get_or_insert_with(|| (self.line_no, err.to_string()));
            if self.nonempty >= DETECT_LINES {
                return Err(self.unrecognized());
            }
            return Ok(());
        }
        if RejectTally::logs(n) {
            let level = match self.voice {
                Voice::Normal => Some(tracing::Level::WARN),
                Voice::Repeat => Some(tracing::Level::DEBUG),
                Voice::Silent => None,
            };
            let budget = if n == crate::feed::normalize::LOGGED_PER_REASON {
                format!(
                    "; further `{}` rejections of this file are logged every {}th",
                    reason.name(),
                    crate::feed::normalize::LOG_EVERY
                )
            } else {
                String::new()
            };
            log_at(
                level,
                format_args!(
                    "{}:{}: rejected record ({} #{n}): {err}{budget}",
                    self.file,
                    self.line_no,
                    reason.name()
                ),
            );
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<bool, FeedError> {
        if self.recognized {
            self.summarize(true);
            Ok(false)
        } else if self.nonempty == 0 && self.notes == 0 {
            Err(FeedError::Empty {
                file: self.file.clone(),
            })
        } else {
            Err(self.unrecognized())
        }
    }

    fn unrecognized(&mut self) -> FeedError {
        let (line, reason) = self.first_failure.take().unwrap_or_else(|| {
            let why = if self.notes > 0 {
                "only a capture tool's notes (configuration, connections, sent \
                 messages, REST responses), no market data"
            } else {
                "no records"
            };
            (self.line_no, why.into())
        });
        FeedError::Unrecognized {
            file: self.file.clone(),
            line,
            reason,
        }
    }

    /// Logs this pass's one summary line, at the end of the file or when
    /// the reader is dropped before it (the feed stopped, or failed).
    fn summarize(&mut self, at_end: bool) {
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
        let (unit, at) = match &self.log {
            Some(log) => ("block", log.blocks()),
            None => ("line", self.line_no),
        };
        let end = if at_end { "end of file" } else { "stopped" };
        let records = self.stats.records.get() - self.start_records;
        let skipped = self.stats.skipped.get() - self.start_skipped;
        let by_reason = self.rejections.by_reason(unit);
        let sep = if by_reason.is_empty() { "" } else { ": " };
        log_at(
            level,
            format_args!(
                "{}: {end} at {unit} {at}: {records} records, {} updates, {skipped} skipped, \
                 {rejected} rejected{sep}{by_reason}",
                self.file, self.yielded
            ),
        );
    }
}

impl Drop for FileReader<'_> {
    fn drop(&mut self) {
        // Recognized or not, a pass that did not reach its end says where
        // it stopped and what it had rejected by then.
        self.summarize(false);
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

/// Opens a recording and reads until its format is recognized: what
/// `serve`, `record` and `convert` check before they start, so that a file
/// they could not replay (unreadable, empty, in no format tickwire knows)
/// is refused up front, like a missing one, rather than leaving a feed
/// with no data. A tickwire log is recognized by its header.
///
/// A pipe or a device (`--feed /dev/stdin`, a FIFO) is not probed: it
/// cannot be read twice, so what the probe read would be lost to the feed
/// (and opening a FIFO waits for its writer). It is checked as it is read.
pub fn probe(spec: &FeedSpec) -> Result<(), FeedError> {
    if let FeedSpec::File(path) = spec {
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
            return Ok(());
        }
    }
    let mut normalizer = Normalizer::new(SymbolTable::new());
    let mut reader = FileReader::open(spec, &mut normalizer, Arc::default())?;
    reader.voice = Voice::Silent;
    reader.recognize()
}

impl Iterator for FileReader<'_> {
    type Item = Result<Timed, FeedError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(timed) = self.pending.pop_front() {
                self.yielded += 1;
                return Some(Ok(timed));
            }
            if self.done {
                return None;
            }
            let read = match &mut self.log {
                Some(log) => {
                    let verbose = self.voice == Voice::Normal;
                    log.next_block(
                        self.normalizer,
                        &self.stats,
                        &mut self.rejections,
                        verbose,
                        &mut self.out,
                    )
                    .inspect(|more| {
                        self.pending.extend(self.out.drain(..));
                        if !more {
                            self.summarize(true);
                        }
                    })
                }
                None => self.read_line(),
            };
            match read {
                Ok(true) => {}
                Ok(false) => self.done = true,
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
            }
        }
    }
}

/// Every update of a recording, in order, for tests and tools.
pub fn read_all(spec: &FeedSpec, normalizer: &mut Normalizer) -> Result<Vec<Update>, FeedError> {
    FileReader::open(spec, normalizer, Arc::default())?
        .map(|timed| timed.map(|t| t.update))
        .collect()
}

pub(crate) fn decompress<R: BufRead + Send + 'static>(
    mut src: R,
) -> io::Result<Box<dyn BufRead + Send>> {
    let head = src.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        // Multi-member, so that concatenated gzip files (`cat a.gz b.gz`)
        // read as one.
        let gz = flate2::bufread::MultiGzDecoder::new(src);
        Box::new(BufReader::with_capacity(READ_BUF, gz))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let zst = zstd::stream::read::Decoder::with_buffer(src)?;
        Box::new(BufReader::with_capacity(READ_BUF, zst))
    } else {
        Box::new(src)
    })
}

fn trim_ascii(line: &mut [u8]) -> &mut [u8] {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &mut line[start..end]
}

/// What kind of capture-tool note `line` is, if it is one: cryptofeed's raw
/// capture (`AsyncFileCallback`) writes `configuration: {...}` as its first
/// line, then beside each received `<ts>: <message>`:
///
/// - `<http(s) URL> -> <ts>: <response>`, a REST response (a depth
///   snapshot);
/// - `<ws(s) URL> <- <ts>: <message>`, a message it sent (a subscribe);
/// - `<ws(s) URL> <-> <ts>`, a connection it opened.
///
/// The shape is checked whole (scheme, arrow, an epoch-seconds timestamp),
/// so that garbage is still rejected; the payload is not parsed.
pub(crate) fn capture_note(line: &[u8], first: bool) -> Option<&'static str> {
    // Every line is asked: data lines (a digit, `{`, `exchange,`) leave at
    // the first byte.
    if !matches!(line.first(), Some(b'c' | b'h' | b'w')) {
        return None;
    }
    if first && line.starts_with(b"configuration:") {
        return Some("capture configuration");
    }
    let scheme = [&b"https://"[..], b"http://", b"wss://", b"ws://"]
        .into_iter()
        .find(|s| line.starts_with(s))?;
    let url_end = line.iter().position(|b| *b == b' ')?;
    if url_end == scheme.len() {
        return None;
    }
    let rest = &line[url_end..];
    let (kind, after, payload) = if let Some(after) = rest.strip_prefix(b" <-> ") {
        ("connection note", after, false)
    } else if let Some(after) = rest.strip_prefix(b" <- ") {
        ("sent message", after, true)
    } else if let Some(after) = rest.strip_prefix(b" -> ") {
        ("REST response", after, true)
    } else {
        return None;
    };
    let ts = match after.iter().position(|b| *b == b':') {
        Some(colon) if payload => &after[..colon],
        None if !payload => after,
        _ => return None,
    };
    decimal_secs_ns(ts).map(|_| kind)
}

/// Splits a JSON-lines line into its capture timestamp, if any, and JSON.
fn split_prefix(line: &mut [u8]) -> Result<(Option<u64>, &mut [u8]), BadRecord> {
    if line.first() == Some(&b'{') {
        return Ok((None, line));
    }
    let Some(end) = line
        .iter()
        .position(|b| *b == b' ' || *b == b':' || *b == b'\t')
    else {
        return Err(BadRecord::Unrecognized(
            "neither JSON nor `<timestamp> <JSON>`".into(),
        ));
    };
    let token = &line[..end];
    let ts = if line[end] == b':' || token.contains(&b'.') {
        decimal_secs_ns(token)
    } else {
        epoch_int_ns(token)
    };
    let Some(ts) = ts else {
        let shown = String::from_utf8_lossy(&token[..token.len().min(40)]).into_owned();
        return Err(BadRecord::Unrecognized(format!(
            "line starts with {shown:?}, neither JSON nor an epoch timestamp"
        )));
    };
    let rest = &mut line[end..];
    let json_start = rest
        .iter()
        .position(|b| *b != b' ' && *b != b':' && *b != b'\t')
        .unwrap_or(rest.len());
    Ok((Some(ts), &mut rest[json_start..]))
}

/// Parses one JSON-lines line: prefix, envelopes, then the venue parsers.
fn json_line(
    line: &mut [u8],
    scratch: &mut Vec<u8>,
    emit: &mut Emitter<'_>,
) -> Result<Outcome, BadRecord> {
    let (prefix_ts, json) = split_prefix(line)?;
    // cryptofeed writes `ts` as a float with more digits than an f64 keeps,
    // so its text is taken before simd-json turns it into a number. The
    // record's first key is `t`, which makes the check cheap.
    let capture_ts = if json.starts_with(b"{\"t\":") {
        raw_number(json, b"\"ts\":").and_then(decimal_secs_ns)
    } else {
        None
    };
    let value = crate::json::parse(json).map_err(|e| BadRecord::Json(e.to_string()))?;
    if let Some(kind) = cryptofeed_kind(&value) {
        if kind != "recv" {
            // header, http, connect, send: the capture's own bookkeeping.
            return Ok(Outcome::Skipped);
        }
        let data = value
            .get("data")
            .and_then(|d| d.as_str())
            .ok_or_else(|| BadRecord::fields("cryptofeed recv", "no `data` string"))?;
        scratch.clear();
        scratch.extend_from_slice(data.as_bytes());
        let inner = crate::json::parse(scratch).map_err(|e| BadRecord::Json(e.to_string()))?;
        emit.receive_ts_ns = capture_ts.or(prefix_ts);
        return payload(&inner, emit);
    }
    emit.receive_ts_ns = prefix_ts;
    payload(&value, emit)
}

/// The `t` of a cryptofeed capture record.
fn cryptofeed_kind<'v>(value: &'v BorrowedValue<'_>) -> Option<&'v str> {
    let kind = value.get("t")?.as_str()?;
    let looks_like_capture = value.get("conn").is_some() || value.get("format").is_some();
    looks_like_capture.then_some(kind)
}

fn payload(value: &BorrowedValue<'_>, emit: &mut Emitter<'_>) -> Result<Outcome, BadRecord> {
    if let (Some(stream), Some(data)) = (value.get("stream"), value.get("data")) {
        if stream.is_str() {
            return match binance::parse(data, emit)? {
                Outcome::Foreign => Err(BadRecord::Unrecognized(
                    "Binance combined stream with an unknown payload".into(),
                )),
                known => Ok(known),
            };
        }
    }
    for venue in [binance::parse, coinbase::parse] {
        match venue(value, emit)? {
            Outcome::Foreign => {}
            known => return Ok(known),
        }
    }
    Err(BadRecord::Unrecognized(
        "JSON of no known venue message".into(),
    ))
}

/// The text of the number after `key` in raw JSON.
fn raw_number<'a>(json: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = json.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &json[at..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let len = rest[start..]
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b'.'))
        .unwrap_or(rest.len() - start);
    Some(&rest[start..start + len])
}

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
                    stats.updates.inc();
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

/// Maps recorded time to wall time: an update recorded at `t` is due at
/// `start + (t - t0) / k`.
struct Pacer {
    speed: Speed,
    /// Wall time and recorded time of the first paced update of this pass.
    anchor: Option<(Instant, u64)>,
    /// When the last paced update was due; the next pass starts there.
    last_due: Option<Instant>,
    /// A recent reading of the clock; anything due by then needs no sleep.
    now: Instant,
}

impl Pacer {
    fn new(speed: Speed) -> Self {
        Pacer {
            speed,
            anchor: None,
            last_due: None,
            now: Instant::now(),
        }
    }

    async fn wait(&mut self, pace_ns: Option<u64>) {
        let (Speed::Factor(k), Some(t)) = (self.speed, pace_ns) else {
            return;
        };
        let (start, t0) = *self
            .anchor
            .get_or_insert_with(|| (self.last_due.unwrap_or_else(Instant::now), t));
        // Recorded time going backwards (a merge of sources) is due now.
        let recorded = Duration::from_nanos(t.saturating_sub(t0));
        // Capped so that a wild timestamp cannot overflow `Instant`.
        let wall = recorded
            .div_f64(k)
            .min(Duration::from_secs(10 * 365 * 86_400));
        let due = start + wall;
        self.last_due = Some(due);
        if due <= self.now {
            return;
        }
        self.now = Instant::now();
        if due <= self.now + SLEEP_SLACK {
            return;
        }
        tokio::time::sleep_until(due).await;
        self.now = Instant::now();
    }

    /// Re-anchors so that the next pass continues where this one ended.
    fn restart(&mut self) {
        self.anchor = None;
    }
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;

/// Reads through the next newline (or the end), keeping at most `max`
/// bytes of the line in `line`: the rest of a longer line is read and
/// dropped. Returns the bytes read and whether the line was cut.
fn read_capped_line(
    src: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let (mut read, mut cut) = (0, false);
    loop {
        let buf = match src.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((read, cut));
        }
        let (chunk, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let room = max.saturating_sub(line.len());
        cut |= chunk.len() > room;
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        src.consume(n);
        read += n;
        if end {
            return Ok((read, cut));
        }
    }
}
