//! Where the blocks of a recording start and how late their updates run:
//! read once, it lets a replay from a time start at the first block it
//! needs instead of reading the file up to it. A plain log's blocks are
//! its own, by byte offset ([`scan`]); a line format's are runs of lines,
//! by line number (the catalog's).

use std::collections::HashSet;
use std::io::Read;

use super::{pace_ns, Entry, LogError, LogReader};
use crate::update::UpdateKind;

/// Each block's start (a byte offset, or a line number), with the latest
/// pace time ([`pace_ns`] for a log) of the blocks up to and including it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlockIndex {
    starts: Vec<u64>,
    /// Non-decreasing: a running maximum, so that the first block with an
    /// update at or after a time is found by bisection whatever the order
    /// of times in the file.
    latest: Vec<u64>,
    /// Where the last whole block ends.
    end: u64,
}

impl BlockIndex {
    /// The offset to read from for the updates at or after `from_ns`: the
    /// start of the first block that holds one (every block before it
    /// holds only earlier ones), or the end of the blocks if none does.
    pub fn start_for(&self, from_ns: u64) -> u64 {
        let i = self.latest.partition_point(|&t| t < from_ns);
        self.starts.get(i).copied().unwrap_or(self.end)
    }

    /// Whole blocks indexed.
    pub fn blocks(&self) -> usize {
        self.starts.len()
    }

    /// Adds the next block: where it starts, and the latest time of its
    /// updates (kept as the running latest).
    pub fn push(&mut self, start: u64, latest: u64) {
        let before = self.latest.last().copied().unwrap_or(0);
        self.starts.push(start);
        self.latest.push(before.max(latest));
    }

    /// Where the last block ends.
    pub fn set_end(&mut self, end: u64) {
        self.end = end;
    }
}

/// What one pass over a log found: its index, and what the catalog says
/// of it.
#[derive(Debug, Default)]
pub struct LogScan {
    pub index: BlockIndex,
    /// In the order they are first defined.
    pub symbols: Vec<String>,
    pub first_ts: Option<u64>,
    pub last_ts: Option<u64>,
    /// Quotes, trades and statuses.
    pub updates: u64,
    pub book_levels: u64,
}

/// Reads a whole log once: its blocks' offsets and times, its symbols and
/// its counts. An update without any time makes its block (and every
/// later one) never passed over.
pub fn scan<R: Read>(src: R) -> Result<LogScan, LogError> {
    let mut reader = LogReader::new(src)?;
    let mut out = LogScan::default();
    let mut seen = HashSet::new();
    loop {
        let mut latest = 0u64;
        // Where the reader stands: the block's start, or damage before it,
        // which a reader starting here skips again.
        let at = reader.offset();
        let Some(entries) = reader.next_block()? else {
            break;
        };
        for e in entries {
            match e {
                Entry::Symbol(s) => {
                    if seen.insert(s.name.clone()) {
                        out.symbols.push(s.name);
                    }
                }
                Entry::Update(u) => {
                    match u.update.kind {
                        UpdateKind::Level { .. } => out.book_levels += 1,
                        _ => out.updates += 1,
                    }
                    let t = pace_ns(&u);
                    latest = latest.max(t.unwrap_or(u64::MAX));
                    if let Some(t) = t {
                        out.first_ts = Some(out.first_ts.map_or(t, |f| f.min(t)));
                        out.last_ts = Some(out.last_ts.map_or(t, |l| l.max(t)));
                    }
                }
            }
        }
        out.index.push(at, latest);
        out.index.set_end(reader.offset());
    }
    Ok(out)
}
