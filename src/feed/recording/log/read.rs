//! Reading a log: whole blocks only, with resynchronization past damage.

use std::collections::HashMap;
use std::io::{self, Read};

use super::decode::{decode_payload, latest_pace};
use super::{
    block_crc, Entry, LogError, LogSymbol, ReadStats, BLOCK_HEADER_LEN, BLOCK_MARKER,
    BLOCK_UPDATES, HEADER_LEN, MAGIC, MAX_BLOCK_PAYLOAD, OLDEST_VERSION, VERSION,
};
use crate::update::SymbolId;

/// Reads a log block by block. Damage after the header never fails a read:
/// a corrupt block is skipped (scanning for the next marker whose block
/// verifies) and counted, a torn tail ends the log; both show in
/// [`stats`](Self::stats).
pub struct LogReader<R: Read> {
    src: R,
    /// Bytes read from `src` and not yet consumed, from `pos`.
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    /// When the recording started, from the header.
    pub started_ns: u64,
    /// The file's format version, which says which records may appear.
    pub version: u16,
    stats: ReadStats,
    /// Every definition met so far, to refuse a block that redefines an id
    /// differently (which only a broken writer or corruption could do).
    symbols: HashMap<SymbolId, LogSymbol>,
    /// Bytes read from `src` in all.
    read_total: u64,
}

impl<R: Read> LogReader<R> {
    /// Reads and checks the header.
    pub fn new(src: R) -> Result<Self, LogError> {
        let mut r = LogReader {
            src,
            buf: Vec::with_capacity(1 << 16),
            pos: 0,
            eof: false,
            started_ns: 0,
            version: 0,
            stats: ReadStats::default(),
            symbols: HashMap::new(),
            read_total: 0,
        };
        r.fill(HEADER_LEN)?;
        let h = r.available();
        if !h.starts_with(&MAGIC[..h.len().min(MAGIC.len())]) || h.is_empty() {
            return Err(LogError::Magic);
        }
        if h.len() < HEADER_LEN {
            return Err(LogError::Header);
        }
        let crc = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
        if crc32fast::hash(&h[..20]) != crc {
            return Err(LogError::Header);
        }
        let version = u16::from_le_bytes([h[8], h[9]]);
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(LogError::Version(version));
        }
        r.started_ns = u64::from_le_bytes(h[12..20].try_into().unwrap_or_default());
        r.version = version;
        r.pos += HEADER_LEN;
        Ok(r)
    }

    pub fn stats(&self) -> ReadStats {
        self.stats
    }

    /// Bytes of the source consumed so far: where the next block (or what
    /// the reader will skip before it) starts.
    pub fn offset(&self) -> u64 {
        self.read_total - (self.buf.len() - self.pos) as u64
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads until `n` bytes are available or the source ends.
    fn fill(&mut self, n: usize) -> io::Result<()> {
        if self.buf.len() - self.pos >= n || self.eof {
            return Ok(());
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        while self.buf.len() < n {
            let start = self.buf.len();
            let want = (n - start).clamp(1 << 12, 1 << 16);
            self.buf.resize(start + want, 0);
            let got = loop {
                match self.src.read(&mut self.buf[start..]) {
                    Ok(got) => break got,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.buf.truncate(start);
                        return Err(e);
                    }
                }
            };
            self.buf.truncate(start + got);
            self.read_total += got as u64;
            if got == 0 {
                self.eof = true;
                break;
            }
        }
        Ok(())
    }

    /// Passes over the whole blocks, from here, whose every update is
    /// earlier than `from_ns` by its [`pace_ns`](super::pace_ns): their CRC is checked and
    /// they are decoded to learn their times, but nothing is kept or handed
    /// over; they count in [`stats`](Self::stats) as read. Stops at the
    /// first block with a later update, or that does not verify, and
    /// leaves it to [`next_block`](Self::next_block). Exact in any order of
    /// times. Returns the number of updates passed over.
    pub fn skip_before(&mut self, from_ns: u64) -> Result<u64, LogError> {
        let mut passed = 0;
        while let Some(len) = self.whole_block_here()? {
            let block = &self.available()[..len];
            let count = u64::from(u32::from_le_bytes([
                block[8], block[9], block[10], block[11],
            ]));
            match latest_pace(&block[BLOCK_HEADER_LEN..], self.version) {
                Some((n, Some(latest))) if n == count && latest < from_ns => {}
                _ => break,
            }
            self.pos += len;
            self.stats.blocks += 1;
            self.stats.updates += count;
            passed += count;
        }
        Ok(passed)
    }

    /// The length of the block at `pos` if it is whole and its CRC
    /// verifies, reading as needed; consumes nothing.
    fn whole_block_here(&mut self) -> Result<Option<usize>, LogError> {
        self.fill(BLOCK_HEADER_LEN)?;
        let head = self.available();
        if head.len() < BLOCK_HEADER_LEN || head[..4] != BLOCK_MARKER || !plausible(head) {
            return Ok(None);
        }
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        self.fill(BLOCK_HEADER_LEN + len)?;
        let block = self.available();
        let whole = block.len() >= BLOCK_HEADER_LEN + len && crc_ok(block, len);
        Ok(whole.then_some(BLOCK_HEADER_LEN + len))
    }

    /// The next whole block's records, or `None` at the end of the log.
    pub fn next_block(&mut self) -> Result<Option<Vec<Entry>>, LogError> {
        let mut damaged = false;
        loop {
            self.fill(BLOCK_HEADER_LEN)?;
            let avail = self.available().len();
            if avail == 0 {
                return Ok(None);
            }
            match self.try_block()? {
                Attempt::Block(entries, len) => {
                    self.pos += len;
                    self.stats.blocks += 1;
                    return Ok(Some(entries));
                }
                Attempt::Short => {
                    // Everything to the end is buffered now. A later block
                    // that verifies means this one's length was corrupt;
                    // none means a torn tail.
                    match self.find_block(1, &mut damaged)? {
                        Some(skip) => {
                            self.skip(skip, &mut damaged);
                        }
                        None => {
                            self.stats.torn_tail_bytes += self.available().len() as u64;
                            self.pos = self.buf.len();
                            return Ok(None);
                        }
                    }
                }
                Attempt::Bad => match self.find_block(1, &mut damaged)? {
                    Some(skip) => self.skip(skip, &mut damaged),
                    None => {
                        let rest = self.available().len();
                        self.skip(rest, &mut damaged);
                        return Ok(None);
                    }
                },
            }
        }
    }

    fn skip(&mut self, n: usize, damaged: &mut bool) {
        if !*damaged {
            self.stats.corrupt += 1;
            *damaged = true;
        }
        self.stats.skipped_bytes += n as u64;
        self.pos += n;
    }

    /// Tries to read a block at `pos`, consuming nothing.
    fn try_block(&mut self) -> Result<Attempt, LogError> {
        let head = self.available();
        if head.len() < BLOCK_HEADER_LEN {
            return Ok(if BLOCK_MARKER.starts_with(&head[..head.len().min(4)]) {
                Attempt::Short
            } else {
                Attempt::Bad
            });
        }
        if head[..4] != BLOCK_MARKER {
            return Ok(Attempt::Bad);
        }
        if !plausible(head) {
            return Ok(Attempt::Bad);
        }
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        self.fill(BLOCK_HEADER_LEN + len)?;
        let block = &self.buf[self.pos..];
        if block.len() < BLOCK_HEADER_LEN + len {
            return Ok(Attempt::Short);
        }
        match verify(block, &mut self.symbols, self.version) {
            Some((entries, updates)) => {
                self.stats.updates += updates;
                Ok(Attempt::Block(entries, BLOCK_HEADER_LEN + len))
            }
            None => Ok(Attempt::Bad),
        }
    }

    /// The distance from `pos` to the next block that verifies, searching
    /// from `pos + from`, reading on as needed; `None` if there is none.
    ///
    /// Bounded in memory and time whatever the damage: the stretch searched
    /// is let go (skipped) every [`SEARCH_WINDOW`] bytes instead of held
    /// whole, and the CRCs of candidate blocks may cost [`CRC_BUDGET_BASE`]
    /// bytes plus [`CRC_BUDGET_PER_BYTE`] per byte searched: a file of
    /// nothing but plausible block headers, each claiming 16 MiB, would
    /// otherwise cost a CRC of 16 MiB per byte.
    fn find_block(&mut self, from: usize, damaged: &mut bool) -> Result<Option<usize>, LogError> {
        let mut at = from;
        let mut searched = 0usize;
        let mut crc_spent = 0usize;
        loop {
            if at > SEARCH_WINDOW {
                // No block starts before `at`: the candidates there failed.
                self.skip(at, damaged);
                searched += at;
                at = 0;
            }
            self.fill(at + BLOCK_HEADER_LEN + (1 << 16))?;
            let avail = self.available();
            let Some(found) = avail
                .get(at..)
                .and_then(|rest| rest.windows(4).position(|w| w == BLOCK_MARKER))
            else {
                if self.eof {
                    return Ok(None);
                }
                // Keep the last 3 bytes: a marker may straddle the refill.
                at = avail.len().saturating_sub(3).max(at);
                continue;
            };
            let cand = at + found;
            let avail = &self.buf[self.pos + cand..];
            let budget = CRC_BUDGET_BASE
                .saturating_add((searched + cand).saturating_mul(CRC_BUDGET_PER_BYTE));
            if avail.len() >= BLOCK_HEADER_LEN && plausible(avail) {
                let len = u32::from_le_bytes([avail[4], avail[5], avail[6], avail[7]]) as usize;
                if crc_spent + len <= budget {
                    self.fill(cand + BLOCK_HEADER_LEN + len)?;
                    let block = &self.buf[self.pos + cand..];
                    // A candidate is only checked, not decoded: decoding
                    // would record its symbols before it is really read.
                    if block.len() >= BLOCK_HEADER_LEN + len {
                        crc_spent += len;
                        if crc_ok(block, len) {
                            return Ok(Some(cand));
                        }
                    }
                }
            }
            at = cand + 1;
        }
    }
}

enum Attempt {
    /// A whole, verified block and its length in bytes.
    Block(Vec<Entry>, usize),
    /// The data ends inside what looks like a block.
    Short,
    /// Not a block.
    Bad,
}

/// Bytes searched for the next block before they are let go.
const SEARCH_WINDOW: usize = 1 << 20;
/// CRC work a search may always do: two blocks of the largest size.
const CRC_BUDGET_BASE: usize = 2 * MAX_BLOCK_PAYLOAD;
/// CRC work a search earns per byte it has searched.
const CRC_BUDGET_PER_BYTE: usize = 64;

/// Whether a block header (at least [`BLOCK_HEADER_LEN`] bytes, marker
/// checked) could be one the writer wrote: its length within
/// [`MAX_BLOCK_PAYLOAD`] and its update count within [`BLOCK_UPDATES`].
fn plausible(head: &[u8]) -> bool {
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let count = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    len <= MAX_BLOCK_PAYLOAD && count <= BLOCK_UPDATES
}

fn crc_ok(block: &[u8], len: usize) -> bool {
    let crc = u32::from_le_bytes([block[12], block[13], block[14], block[15]]);
    block_crc(
        &block[4..12],
        &block[BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + len],
    ) == crc
}

/// Checks a whole block's CRC and decodes it; `None` if either fails.
fn verify(
    block: &[u8],
    known: &mut HashMap<SymbolId, LogSymbol>,
    version: u16,
) -> Option<(Vec<Entry>, u64)> {
    let len = u32::from_le_bytes([block[4], block[5], block[6], block[7]]) as usize;
    let count = u32::from_le_bytes([block[8], block[9], block[10], block[11]]);
    if !crc_ok(block, len) {
        return None;
    }
    let payload = &block[BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + len];
    let entries = decode_payload(payload, known, version)?;
    let updates = entries
        .iter()
        .filter(|e| matches!(e, Entry::Update(_)))
        .count() as u64;
    (updates == u64::from(count)).then_some((entries, updates))
}
