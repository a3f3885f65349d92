//! One pass over a recording, as [`FileReader`]: open it, decompress it (by
//! magic bytes), tell a tickwire log (by its magic) from lines, tell a
//! Tardis CSV (by its header) from JSON lines, then read it line by line,
//! each to its parser, and hand out the updates in file order.
//!
//! The reader also decides what a line is worth: a record (its updates), a
//! skip (a capture tool's note, a message with no quote or trade), or a
//! rejection; a file with no known record in its first [`DETECT_LINES`] is
//! refused. Saying so in the log is `PassReport`'s part (in `replay.rs`).
//!
//! A replay (`replay.rs`), `convert`, [`probe`] and [`read_all`] all
//! read through it: there is one parsing path.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::sync::Arc;

use super::jsonl::{capture_note, json_line};
use super::lines::{decompress, read_capped_line, trim_ascii, READ_BUF};
use super::log::{self, LogFeed};
use super::replay::{PassReport, Voice};
use crate::feed::normalize::{BadRecord, BookSync, Emitter, Outcome, MAX_LINE_BYTES};
use crate::feed::venue::tardis;
use crate::feed::{FeedError, FeedSpec, FeedStats, Timed};
use crate::symbols::{Normalizer, SymbolTable};
use crate::update::Update;

/// Lines looked at before a file with no known record is refused.
pub const DETECT_LINES: u64 = 100;

enum Format {
    JsonLines,
    Tardis(tardis::Columns),
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
    /// What this pass says in the log, and its rejections by reason.
    report: PassReport,
    line: Vec<u8>,
    scratch: Vec<u8>,
    out: Vec<Timed>,
    pending: VecDeque<Timed>,
    /// The file's order books in sync (a snapshot and the diffs it
    /// releases are in the same file).
    books: BookSync,
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
    pub(crate) fn with_source(
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
            report: PassReport::new(&stats),
            stats,
            format: None,
            line_no: 0,
            nonempty: 0,
            notes: 0,
            recognized: false,
            first_failure: None,
            line: Vec::with_capacity(4096),
            scratch: Vec::new(),
            out: Vec::new(),
            pending: VecDeque::new(),
            books: BookSync::default(),
            done: false,
            log,
        })
    }

    /// A later pass of a looped replay: what it rejects and its summary
    /// are logged at debug, as they repeat the first pass's.
    pub(crate) fn repeat_pass(mut self) -> Self {
        self.report.voice = Voice::Repeat;
        self
    }

    /// What the file turned out to be: `tickwire-log`, `tardis-csv` or
    /// `json-lines` (`unknown` before its first record is recognized).
    pub(crate) fn format_name(&self) -> &'static str {
        match (&self.log, &self.format) {
            (Some(_), _) => "tickwire-log",
            (None, Some(Format::Tardis(_))) => "tardis-csv",
            (None, Some(Format::JsonLines)) => "json-lines",
            (None, None) => "unknown",
        }
    }

    /// Passes over what is before `from_ns` where the format can without
    /// replaying it: a log's whole blocks ([`LogFeed::skip_before`]); other
    /// formats are read whole. Returns the updates passed over.
    pub(crate) fn skip_before(&mut self, from_ns: u64) -> Result<u64, FeedError> {
        self.log
            .as_mut()
            .map_or(Ok(0), |log| log.skip_before(from_ns))
    }

    /// A pass that says nothing in the log (a client's replay session, the
    /// catalog's scan): what the server's own feeds would warn about is no
    /// news for each client that reads the file.
    pub(crate) fn quiet(mut self) -> Self {
        self.report.voice = Voice::Silent;
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

    /// The next line into `line`, unparsed: its bytes (0 at the end) and
    /// whether it was cut.
    fn raw_line(&mut self) -> Result<(usize, bool), FeedError> {
        self.line.clear();
        let read = read_capped_line(&mut self.src, &mut self.line, MAX_LINE_BYTES);
        let (n, cut) = read.map_err(|source| FeedError::Read {
            file: self.file.clone(),
            line: self.line_no + 1,
            source,
        })?;
        self.line_no += u64::from(n > 0);
        Ok((n, cut))
    }

    /// The line last read (0 before the first; a log has none).
    pub(crate) fn line_no(&self) -> u64 {
        self.line_no
    }

    /// Reads past the first `n` lines of a line format unparsed, after the
    /// ones that told its format, and drops what those held: the start a
    /// line index gives (none of their updates is wanted). Nothing for a log.
    pub(crate) fn skip_lines(&mut self, n: u64) -> Result<(), FeedError> {
        if self.log.is_some() {
            return Ok(());
        }
        self.recognize()?;
        if self.line_no < n {
            self.pending.clear();
        }
        while self.line_no < n && self.raw_line()?.0 > 0 {}
        Ok(())
    }

    /// Reads one line into `pending`. `Ok(false)` at the end of the file.
    fn read_line(&mut self) -> Result<bool, FeedError> {
        let (n, cut) = self.raw_line()?;
        if n == 0 {
            return self.finish();
        }
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
                self.report.skipped_note(&self.file, self.line_no, kind);
                return Ok(true);
            }
        }
        self.nonempty += 1;
        let mut emit = Emitter {
            normalizer: self.normalizer,
            books: &mut self.books,
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
        let n = self.report.rejections.add(reason, self.line_no, 1);
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
        self.report.rejected(&self.file, self.line_no, n, &err);
        Ok(())
    }

    fn finish(&mut self) -> Result<bool, FeedError> {
        if let Some(Format::Tardis(_)) = &self.format {
            // A message's rows are published when the next message starts;
            // the last one, here.
            let mut emit = Emitter {
                normalizer: self.normalizer,
                books: &mut self.books,
                receive_ts_ns: None,
                out: &mut self.out,
            };
            tardis::finish(&mut emit);
            self.pending.extend(self.out.drain(..));
        }
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
        let place = match &self.log {
            Some(log) => ("block", log.blocks()),
            None => ("line", self.line_no),
        };
        self.report
            .summarize(&self.file, &self.stats, at_end, place);
    }
}

impl Drop for FileReader<'_> {
    fn drop(&mut self) {
        // Recognized or not, a pass that did not reach its end says where
        // it stopped and what it had rejected by then.
        self.summarize(false);
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
    reader.report.voice = Voice::Silent;
    reader.recognize()
}

impl Iterator for FileReader<'_> {
    type Item = Result<Timed, FeedError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(timed) = self.pending.pop_front() {
                self.report.yielded += 1;
                return Some(Ok(timed));
            }
            if self.done {
                return None;
            }
            let read = match &mut self.log {
                Some(log) => {
                    let verbose = self.report.voice == Voice::Normal;
                    log.next_block(
                        self.normalizer,
                        &self.stats,
                        &mut self.report.rejections,
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
