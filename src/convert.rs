//! `tickwire convert IN OUT`: any recording tickwire reads into a tickwire
//! log, and a log (or any other recording) into Tardis-style CSV.
//!
//! - OUT ending in `.csv` gets Tardis CSV: `quotes`
//!   (`exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount`)
//!   or `trades` (`exchange,symbol,timestamp,local_timestamp,id,side,price,amount`).
//!   A recording with both kinds gets `STEM.quotes.csv` and
//!   `STEM.trades.csv` instead. Times are µs as Tardis writes them, with
//!   `.nnn` added only when the recording has finer (ns) times; prices and
//!   sizes are written with all of the symbol's decimals.
//! - Any other OUT gets a log. From a log, every field is kept. From other
//!   formats, updates are numbered as the publisher would number them
//!   (`seq` from 1, `symbol_seq` from 1 per symbol) and `publish_ts` is 0:
//!   they were never served.
//!
//! The input is opened and recognized before any output is created: a file
//! tickwire cannot read leaves nothing behind. Bad records are rejected as
//! a feed rejects them (logged per reason, with file and line) and counted
//! in the [`ConvertSummary`].

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::decimal::write_fixed;
use crate::feed::normalize::{has_negative, Reason, RejectTally};
use crate::feed::recording::lines;
use crate::feed::recording::log::{Entry, LogReader, LogSymbol, LogWriter, ReadStats};
use crate::feed::{FeedError, FeedSpec, FeedStats, FileReader};
use crate::symbols::{Normalizer, SymbolTable};
use crate::update::{level_flags, BookSide, Sequenced, Side, UpdateKind};

/// Why a conversion failed. A cause is a source, not repeated in the
/// message.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error("{path}: cannot {doing}")]
    Io {
        path: PathBuf,
        /// `open`, `read`, `create`, `write`.
        doing: &'static str,
        source: io::Error,
    },
    #[error("{path}: {reason}")]
    Log { path: PathBuf, reason: String },
    #[error("symbol {0:?} has a comma, which Tardis CSV cannot hold")]
    CsvSymbol(String),
}

/// What a conversion read and wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertSummary {
    /// Records read: lines or rows of a recording, updates of a log.
    pub read: u64,
    /// Updates written.
    pub updates: u64,
    /// Records read and not written, as no quote or trade: depth, REST
    /// snapshots, capture notes, headers; a log's statuses in CSV.
    pub skipped: u64,
    /// Bad records: malformed lines, negative prices or sizes, a log's
    /// corrupt places.
    pub rejected: u64,
    /// The files written.
    pub outputs: Vec<PathBuf>,
    /// When the input was a log: what its reader skipped.
    pub damage: Option<ReadStats>,
}

/// Converts `input` to `output` (see the module docs). `exchange` fills the
/// CSV's `exchange` column: the log does not know the venue.
pub fn convert(
    input: &Path,
    output: &Path,
    exchange: &str,
) -> Result<ConvertSummary, ConvertError> {
    let mut src = open(input)?;
    let head = src.fill_buf().map_err(io_at(input, "read"))?;
    if crate::feed::recording::log::is_log(head) {
        convert_log(input, src, output, exchange)
    } else {
        drop(src);
        convert_recording(input, output, exchange)
    }
}

/// From a tickwire log, every field kept. Its updates were never checked
/// by a venue parser: a negative price or size is rejected here, and
/// logged with its block.
fn convert_log(
    input: &Path,
    src: Box<dyn BufRead + Send>,
    output: &Path,
    exchange: &str,
) -> Result<ConvertSummary, ConvertError> {
    let mut summary = ConvertSummary::default();
    let mut reader = LogReader::new(src).map_err(|e| log_err(input, e))?;
    let mut sink = create_sink(output, exchange)?;
    let mut symbols = std::collections::HashMap::new();
    let mut rejections = RejectTally::default();
    while let Some(block) = reader.next_block().map_err(|e| log_err(input, e))? {
        for entry in block {
            match entry {
                Entry::Symbol(sym) => {
                    symbols.insert(sym.id, sym);
                }
                Entry::Update(s) => {
                    summary.read += 1;
                    let sym = symbols
                        .get(&s.update.symbol)
                        .ok_or_else(|| log_err(input, "update before its symbol's definition"))?;
                    if has_negative(&s.update.kind) {
                        summary.rejected += 1;
                        let block = reader.stats().blocks;
                        let n = rejections.add(Reason::Negative, block, 1);
                        if RejectTally::logs(n) {
                            tracing::warn!(
                                "{}: block {block}: rejected update (negative #{n}): a \
                                 negative price or size of {}, symbol_seq {}",
                                input.display(),
                                sym.name,
                                s.symbol_seq
                            );
                        }
                    } else if sink.push(sym, &s)? {
                        summary.updates += 1;
                    } else {
                        summary.skipped += 1;
                    }
                }
            }
        }
    }
    let damage = reader.stats();
    summary.rejected += damage.corrupt;
    summary.damage = Some(damage);
    summary.outputs = sink.finish()?;
    Ok(summary)
}

/// From any other recording, read (and refused, if it must be, before any
/// output exists) as a feed reads it; updates are numbered as the
/// publisher would number them.
fn convert_recording(
    input: &Path,
    output: &Path,
    exchange: &str,
) -> Result<ConvertSummary, ConvertError> {
    let spec = FeedSpec::File(input.to_owned());
    crate::feed::probe(&spec)?;
    let mut sink = create_sink(output, exchange)?;
    let table = SymbolTable::new();
    let mut normalizer = Normalizer::new(Arc::clone(&table));
    let mut defs: Vec<LogSymbol> = Vec::new();
    let mut symbol_seqs: Vec<u64> = Vec::new();
    let mut book_seqs: Vec<u64> = Vec::new();
    let stats = Arc::new(FeedStats::default());
    let reader = FileReader::open(&spec, &mut normalizer, Arc::clone(&stats))?;
    let mut updates = 0;
    for (i, timed) in reader.enumerate() {
        let update = timed?.update;
        let id = update.symbol as usize;
        while defs.len() <= id {
            let def = table
                .get(defs.len() as u32)
                .ok_or_else(|| log_err(input, "update for a symbol not interned"))?;
            defs.push(LogSymbol {
                id: def.id,
                name: def.name.to_string(),
                price_decimals: def.price_decimals,
                size_decimals: def.size_decimals,
            });
            symbol_seqs.push(0);
            book_seqs.push(0);
        }
        // Quotes and trades are numbered per symbol; a book's levels by
        // their event (`book_seq`), which replays renumber anyway.
        let seqs = match update.kind {
            UpdateKind::Level { .. } => &mut book_seqs[id],
            _ => &mut symbol_seqs[id],
        };
        let symbol_seq = match update.kind {
            UpdateKind::Level { flags, .. } if flags & level_flags::LAST == 0 => *seqs + 1,
            _ => {
                *seqs += 1;
                *seqs
            }
        };
        let s = Sequenced {
            update,
            seq: i as u64 + 1,
            symbol_seq,
            publish_ts_ns: 0,
        };
        sink.push(&defs[id], &s)?;
        updates += 1;
    }
    Ok(ConvertSummary {
        read: stats.records.get(),
        updates,
        skipped: stats.skipped.get(),
        rejected: stats.rejected.get(),
        outputs: sink.finish()?,
        damage: None,
    })
}

fn create_sink(output: &Path, exchange: &str) -> Result<Box<dyn Sink>, ConvertError> {
    Ok(if is_csv(output) {
        Box::new(CsvSink::new(output, exchange))
    } else {
        Box::new(LogSink::create(output)?)
    })
}

fn is_csv(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, ConvertError> {
    let file = File::open(path).map_err(io_at(path, "open"))?;
    lines::decompress(BufReader::with_capacity(1 << 16, file)).map_err(io_at(path, "open"))
}

fn io_at<'p>(path: &'p Path, doing: &'static str) -> impl Fn(io::Error) -> ConvertError + 'p {
    move |source| ConvertError::Io {
        path: path.to_owned(),
        doing,
        source,
    }
}

fn log_err(path: &Path, reason: impl ToString) -> ConvertError {
    ConvertError::Log {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

trait Sink {
    /// Writes one update; false if the format has no place for it.
    fn push(&mut self, symbol: &LogSymbol, s: &Sequenced) -> Result<bool, ConvertError>;
    /// Flushes and returns the files written.
    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>, ConvertError>;
}

struct LogSink {
    path: PathBuf,
    log: LogWriter<BufWriter<File>>,
}

impl LogSink {
    fn create(path: &Path) -> Result<Self, ConvertError> {
        let file = File::create_new(path).map_err(io_at(path, "create"))?;
        let log = LogWriter::new(BufWriter::with_capacity(1 << 16, file), 0)
            .map_err(io_at(path, "write"))?;
        Ok(LogSink {
            path: path.to_owned(),
            log,
        })
    }
}

impl Sink for LogSink {
    fn push(&mut self, symbol: &LogSymbol, s: &Sequenced) -> Result<bool, ConvertError> {
        self.log
            .push(symbol, s)
            .map_err(io_at(&self.path, "write"))?;
        Ok(true)
    }

    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>, ConvertError> {
        let out = self.log.finish().map_err(io_at(&self.path, "write"))?;
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map_err(io_at(&self.path, "write"))?;
        Ok(vec![self.path])
    }
}

/// Quotes and trades go to files of their own, opened on first use.
struct CsvSink {
    output: PathBuf,
    exchange: String,
    quotes: Option<(PathBuf, BufWriter<File>)>,
    trades: Option<(PathBuf, BufWriter<File>)>,
    books: Option<(PathBuf, BufWriter<File>)>,
    /// Symbols in the middle of a book snapshot (its rows are `is_snapshot`).
    in_snapshot: HashSet<u32>,
    line: Vec<u8>,
}

const QUOTES_HEADER: &str =
    "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount";
const TRADES_HEADER: &str = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount";
const BOOKS_HEADER: &str =
    "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount";

impl CsvSink {
    fn new(output: &Path, exchange: &str) -> Self {
        CsvSink {
            output: output.to_owned(),
            exchange: exchange.to_owned(),
            quotes: None,
            trades: None,
            books: None,
            in_snapshot: Default::default(),
            line: Vec::with_capacity(256),
        }
    }

    /// `STEM.quotes.csv` or `STEM.trades.csv` beside the output.
    fn part(&self, kind: &str) -> PathBuf {
        let stem = self
            .output
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy();
        self.output.with_file_name(format!("{stem}.{kind}.csv"))
    }
}

fn open_part(path: PathBuf, header: &str) -> Result<(PathBuf, BufWriter<File>), ConvertError> {
    let file = File::create_new(&path).map_err(io_at(&path, "create"))?;
    let mut out = BufWriter::with_capacity(1 << 16, file);
    writeln!(out, "{header}").map_err(io_at(&path, "write"))?;
    Ok((path, out))
}

/// The rest of an `incremental_book_L2` row: every row of a venue snapshot
/// is `is_snapshot` (`in_snapshot` holds the symbols in the middle of one),
/// and the rows of one event share their times.
fn level_row(
    line: &mut Vec<u8>,
    s: &Sequenced,
    in_snapshot: &mut HashSet<u32>,
    (pd, sd): (u8, u8),
) {
    let UpdateKind::Level {
        side,
        px,
        sz,
        flags,
    } = s.update.kind
    else {
        return;
    };
    let id = s.update.symbol;
    if flags & level_flags::RESET != 0 {
        in_snapshot.insert(id);
    }
    let snapshot = in_snapshot.contains(&id);
    if flags & level_flags::LAST != 0 {
        in_snapshot.remove(&id);
    }
    line.extend_from_slice(if snapshot { b"true," } else { b"false," });
    line.extend_from_slice(match side {
        BookSide::Bid => b"bid,",
        BookSide::Ask => b"ask,",
    });
    write_fixed(line, px, pd);
    line.push(b',');
    write_fixed(line, sz, sd);
}

/// ns as Tardis's µs, with the sub-µs part only when there is one.
fn write_micros(line: &mut Vec<u8>, ns: u64) {
    let (us, rest) = (ns / 1000, ns % 1000);
    if rest == 0 {
        let _ = write!(line, "{us}");
    } else {
        let _ = write!(line, "{us}.{rest:03}");
    }
}

impl Sink for CsvSink {
    fn push(&mut self, symbol: &LogSymbol, s: &Sequenced) -> Result<bool, ConvertError> {
        // A live venue's stale / live status has no row in Tardis CSV.
        if matches!(s.update.kind, UpdateKind::Status(_)) {
            return Ok(false);
        }
        if symbol.name.contains(',') {
            return Err(ConvertError::CsvSymbol(symbol.name.clone()));
        }
        let mut buf = std::mem::take(&mut self.line);
        let line = &mut buf;
        line.clear();
        line.extend_from_slice(self.exchange.as_bytes());
        line.push(b',');
        line.extend_from_slice(symbol.name.as_bytes());
        line.push(b',');
        write_micros(line, s.update.exchange_ts_ns);
        line.push(b',');
        write_micros(line, s.update.receive_ts_ns);
        line.push(b',');
        let (pd, sd) = (symbol.price_decimals, symbol.size_decimals);
        let slot = match s.update.kind {
            UpdateKind::Quote {
                bid_px,
                bid_sz,
                ask_px,
                ask_sz,
            } => {
                // An unknown size is an empty field: 0 would be a size.
                if let Some(sz) = ask_sz {
                    write_fixed(line, sz, sd);
                }
                line.push(b',');
                write_fixed(line, ask_px, pd);
                line.push(b',');
                write_fixed(line, bid_px, pd);
                line.push(b',');
                if let Some(sz) = bid_sz {
                    write_fixed(line, sz, sd);
                }
                if self.quotes.is_none() {
                    self.quotes = Some(open_part(self.part("quotes"), QUOTES_HEADER)?);
                }
                &mut self.quotes
            }
            // Returned above.
            UpdateKind::Status(_) => return Ok(false),
            UpdateKind::Level { .. } => {
                level_row(line, s, &mut self.in_snapshot, (pd, sd));
                if self.books.is_none() {
                    self.books = Some(open_part(self.part("incremental_book_L2"), BOOKS_HEADER)?);
                }
                &mut self.books
            }
            UpdateKind::Trade { px, sz, side } => {
                // No trade id: the normalized stream does not carry one.
                line.push(b',');
                line.extend_from_slice(match side {
                    Side::Buy => b"buy",
                    Side::Sell => b"sell",
                    Side::Unknown => b"unknown",
                });
                line.push(b',');
                write_fixed(line, px, pd);
                line.push(b',');
                write_fixed(line, sz, sd);
                if self.trades.is_none() {
                    self.trades = Some(open_part(self.part("trades"), TRADES_HEADER)?);
                }
                &mut self.trades
            }
        };
        line.push(b'\n');
        if let Some((path, out)) = slot {
            out.write_all(line).map_err(io_at(path, "write"))?;
        }
        self.line = buf;
        Ok(true)
    }

    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>, ConvertError> {
        let mut written = Vec::new();
        for (path, mut out) in [self.quotes, self.trades, self.books].into_iter().flatten() {
            out.flush().map_err(io_at(&path, "write"))?;
            written.push(path);
        }
        if let [only] = written.as_mut_slice() {
            // One kind: it gets the name asked for.
            if self.output.exists() {
                return Err(ConvertError::Io {
                    path: self.output.clone(),
                    doing: "create",
                    source: io::Error::from(io::ErrorKind::AlreadyExists),
                });
            }
            std::fs::rename(&*only, &self.output).map_err(io_at(&self.output, "create"))?;
            *only = self.output.clone();
        }
        Ok(written)
    }
}
