//! A log as a feed source, and sequences across loops.

use std::collections::HashMap;
use std::io::{self, Read};

use super::{pace_ns, Entry, LogError, LogReader, LogSymbol, ReadStats};
use crate::feed::normalize::{has_negative, Reason, RejectTally};
use crate::feed::{FeedError, FeedStats, Timed};
use crate::symbols::Normalizer;
use crate::update::{SymbolId, Update, UpdateKind};

/// A log replayed as a feed: symbols are interned by name with their
/// recorded decimals, and each update carries its recorded `symbol_seq` as
/// `origin_seq`, so the replaying publisher serves the same numbers.
pub(crate) struct LogFeed<R: Read> {
    reader: LogReader<R>,
    file: String,
    /// Log id to this server's id; `None` for a symbol whose name this
    /// server already knows with other decimals.
    ids: HashMap<SymbolId, Option<SymbolId>>,
    reported: ReadStats,
}

impl<R: Read> LogFeed<R> {
    pub fn open(src: R, file: String) -> Result<Self, FeedError> {
        let reader = LogReader::new(src).map_err(|e| FeedError::Unrecognized {
            file: file.clone(),
            line: 0,
            reason: e.to_string(),
        })?;
        Ok(LogFeed {
            reader,
            file,
            ids: HashMap::new(),
            reported: ReadStats::default(),
        })
    }

    /// Whole blocks read so far: the position the reader's messages give.
    pub fn blocks(&self) -> u64 {
        self.reader.stats().blocks
    }

    /// Passes over the blocks before the one that holds `from_ns`
    /// ([`LogReader::skip_before`]): a window late in a long log costs
    /// their decoding, not their replay. Returns the updates passed over.
    pub fn skip_before(&mut self, from_ns: u64) -> Result<u64, FeedError> {
        self.reader
            .skip_before(from_ns)
            .map_err(|e| self.read_error(e))
    }

    fn read_error(&self, e: LogError) -> FeedError {
        FeedError::Read {
            file: self.file.clone(),
            line: self.reader.stats().blocks + 1,
            source: match e {
                LogError::Io(e) => e,
                other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
            },
        }
    }

    /// The next block's updates, or `None` at the end of the log. Corrupt
    /// places, updates of a symbol that cannot be served and updates with
    /// a negative price or size are rejected: counted in `stats` and
    /// `rejections`, and (when `verbose`, within the reason's budget)
    /// warned about; a torn tail is only warned about.
    pub fn next_block(
        &mut self,
        normalizer: &mut Normalizer,
        stats: &FeedStats,
        rejections: &mut RejectTally,
        verbose: bool,
        out: &mut Vec<Timed>,
    ) -> Result<bool, FeedError> {
        let block = self.reader.next_block().map_err(|e| self.read_error(e))?;
        self.report(stats, rejections, verbose);
        let Some(entries) = block else {
            return Ok(false);
        };
        let at = self.blocks();
        for entry in entries {
            match entry {
                Entry::Symbol(sym) => {
                    stats.skipped.inc();
                    if self.ids.contains_key(&sym.id) {
                        continue;
                    }
                    let local = self.intern(normalizer, &sym)?;
                    self.ids.insert(sym.id, local);
                }
                Entry::Update(s) => {
                    stats.records.inc();
                    let Some(Some(symbol)) = self.ids.get(&s.update.symbol).copied() else {
                        stats.rejected.inc();
                        rejections.add(Reason::Symbol, at, 1);
                        continue;
                    };
                    if has_negative(&s.update.kind) {
                        stats.rejected.inc();
                        let n = rejections.add(Reason::Negative, at, 1);
                        if verbose && RejectTally::logs(n) {
                            tracing::warn!(
                                "{}: block {at}: rejected update (negative #{n}): a negative \
                                 price or size, symbol_seq {}",
                                self.file,
                                s.symbol_seq
                            );
                        }
                        continue;
                    }
                    let update = Update {
                        symbol,
                        // A level's number is its book_seq, which the
                        // replaying publisher gives again: the book is
                        // rebuilt from the recorded events, numbered from
                        // 1 (a looped replay's second pass starts with a
                        // snapshot, and could not keep the first's numbers).
                        origin_seq: match s.update.kind {
                            UpdateKind::Level { .. } => 0,
                            _ => s.symbol_seq,
                        },
                        ..s.update
                    };
                    out.push(Timed {
                        update,
                        pace_ns: pace_ns(&s),
                    });
                }
            }
        }
        Ok(true)
    }

    fn intern(
        &self,
        normalizer: &mut Normalizer,
        sym: &LogSymbol,
    ) -> Result<Option<SymbolId>, FeedError> {
        let def = normalizer
            .table()
            .intern(&sym.name, sym.price_decimals, sym.size_decimals)
            .map_err(|e| FeedError::Symbol {
                name: self.file.clone(),
                source: e.into(),
            })?;
        if (def.price_decimals, def.size_decimals) == (sym.price_decimals, sym.size_decimals) {
            return Ok(Some(def.id));
        }
        tracing::warn!(
            "{}: symbol {} is recorded with {}/{} decimals but already served with {}/{}; \
             its updates are rejected",
            self.file,
            sym.name,
            sym.price_decimals,
            sym.size_decimals,
            def.price_decimals,
            def.size_decimals
        );
        Ok(None)
    }

    fn report(&mut self, stats: &FeedStats, rejections: &mut RejectTally, verbose: bool) {
        let now = self.reader.stats();
        if now.corrupt > self.reported.corrupt {
            let new = now.corrupt - self.reported.corrupt;
            stats.rejected.add(new);
            rejections.add(Reason::Corrupt, now.blocks + 1, new);
        }
        if !verbose {
            self.reported = now;
            return;
        }
        if now.corrupt > self.reported.corrupt {
            tracing::warn!(
                "{}: corrupt log data skipped ({} place(s), {} bytes so far)",
                self.file,
                now.corrupt,
                now.skipped_bytes
            );
        }
        if now.torn_tail_bytes > self.reported.torn_tail_bytes {
            tracing::warn!(
                "{}: log ends in an incomplete block ({} bytes ignored)",
                self.file,
                now.torn_tail_bytes
            );
        }
        self.reported = now;
    }
}

/// Gives a looped replay's origin sequences room to grow: each pass adds,
/// per symbol, the last number the previous passes reached. A recording
/// numbered 1..n replays as 1..n, n+1..2n, ...: never older than what was
/// served, and gapless if the recording was.
#[derive(Default)]
pub(crate) struct LoopedSequences {
    offset: HashMap<SymbolId, u64>,
    last: HashMap<SymbolId, u64>,
}

impl LoopedSequences {
    pub fn apply(&mut self, update: &mut Update) {
        if update.origin_seq == 0 {
            return;
        }
        let offset = self.offset.get(&update.symbol).copied().unwrap_or(0);
        update.origin_seq = update.origin_seq.saturating_add(offset);
        let last = self.last.entry(update.symbol).or_insert(0);
        *last = (*last).max(update.origin_seq);
    }

    pub fn next_pass(&mut self) {
        self.offset.clone_from(&self.last);
    }
}
