//! The tickwire log: a compact, append-only binary recording of what a
//! publisher published, byte for byte as docs/LOG.md describes.
//!
//! A file is a header, then blocks. Every block carries its own CRC-32 and
//! the definitions of the symbols it uses, and its deltas start from zero,
//! so any whole block decodes on its own: a torn tail (a crash mid-write)
//! ends the replay at the last whole block, and a corrupt block in the
//! middle is skipped by scanning for the next block marker, counted, and
//! never misread.
//!
//! - [`LogWriter`] writes blocks (by record count and size; the caller adds
//!   flushes by time).
//! - [`LogReader`] reads them back, with [`ReadStats`] of what it skipped.
//! - [`LogFeed`] turns a log into a feed's [`Timed`] updates, carrying the
//!   recorded `symbol_seq` as [`Update::origin_seq`].
//! - [`fuzz_read`] is the body of the `log_reader` fuzz target.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering::Relaxed;

use super::{FeedError, FeedStats, Timed};
use crate::symbols::{Normalizer, MAX_NAME_LEN};
use crate::update::{Sequenced, Side, SymbolId, Update, UpdateKind};

/// The file's first 8 bytes: a high byte so that it is not text, the name,
/// and CR LF SUB LF to catch line-ending and text-mode mangling (as PNG's).
pub const MAGIC: [u8; 8] = [0x89, b'T', b'W', b'L', b'\r', b'\n', 0x1a, b'\n'];

/// The format version this code writes and reads.
pub const VERSION: u16 = 1;

/// Bytes of the file header: magic, version, flags, start time, CRC.
pub const HEADER_LEN: usize = 24;

/// Every block starts with these 4 bytes.
pub const BLOCK_MARKER: [u8; 4] = *b"TWBK";

/// Bytes of a block header: marker, payload length, update count, CRC.
pub const BLOCK_HEADER_LEN: usize = 16;

/// The largest payload a reader accepts; a length above it is corruption.
pub const MAX_BLOCK_PAYLOAD: usize = 1 << 24;

/// A writer closes a block at this many updates...
pub const BLOCK_UPDATES: u32 = 4096;

/// ... or at this many payload bytes, whichever comes first.
pub const BLOCK_BYTES: usize = 1 << 18;

const TAG_SYMBOL: u8 = 0x01;
const TAG_QUOTE: u8 = 0x02;
/// A trade's tag is this plus its [`Side`] (0 unknown, 1 buy, 2 sell).
const TAG_TRADE: u8 = 0x10;

/// A symbol as the log defines it. `id` is the recording server's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogSymbol {
    pub id: SymbolId,
    pub name: String,
    pub price_decimals: u8,
    pub size_decimals: u8,
}

/// One decoded record of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A symbol's definition, met before its first update in every block.
    Symbol(LogSymbol),
    /// An update as published. `update.origin_seq` is always 0 here: the
    /// recorded number is `symbol_seq`.
    Update(Sequenced),
}

/// What the reader met besides whole blocks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    /// Whole blocks decoded.
    pub blocks: u64,
    /// Updates in them.
    pub updates: u64,
    /// Places where a block was expected and something else (a bad CRC, a
    /// bad marker or length, a payload that does not decode) was found;
    /// each was skipped up to the next whole block.
    pub corrupt: u64,
    /// Bytes skipped over at those places.
    pub skipped_bytes: u64,
    /// Bytes of an incomplete last block (a torn tail), ignored.
    pub torn_tail_bytes: u64,
}

/// Why a log cannot be read at all. Damage after the header is not an
/// error: it is skipped and counted in [`ReadStats`].
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("not a tickwire log (bad magic)")]
    Magic,
    #[error("log header is truncated or corrupt (bad CRC)")]
    Header,
    #[error("log format version {0} (this build reads {VERSION})")]
    Version(u16),
    #[error("{0}")]
    Io(#[from] io::Error),
}

// ---------------------------------------------------------------------------
// Encoding helpers

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// `v - prev` as a zigzag varint; wrapping, so any pair of values encodes.
fn put_delta(out: &mut Vec<u8>, v: u64, prev: u64) {
    put_varint(out, zigzag(v.wrapping_sub(prev) as i64));
}

/// A block's decoding (and encoding) state: every value is a delta against
/// the previous one of its kind in the same block, from zero.
#[derive(Default)]
struct Deltas {
    seq: u64,
    exchange_ts: u64,
    receive_ts: u64,
    publish_ts: u64,
    /// Per symbol: last symbol_seq and last price (a quote's bid or a
    /// trade's price).
    symbols: HashMap<SymbolId, (u64, i64)>,
}

// ---------------------------------------------------------------------------
// Writer

/// Appends updates to a log. Blocks are closed by [`BLOCK_UPDATES`] and
/// [`BLOCK_BYTES`] in [`push`](Self::push) and by
/// [`finish_block`](Self::finish_block), which the caller also calls on a
/// timer so that a live recording loses at most that much on a crash.
pub struct LogWriter<W: Write> {
    out: W,
    payload: Vec<u8>,
    updates: u32,
    block_updates: u32,
    deltas: Deltas,
    /// Blocks and updates written so far.
    pub blocks_written: u64,
    pub updates_written: u64,
}

impl<W: Write> LogWriter<W> {
    /// Writes the file header. `started_ns` is when the recording started.
    pub fn new(mut out: W, started_ns: u64) -> io::Result<Self> {
        out.write_all(&header(started_ns))?;
        Ok(LogWriter {
            out,
            payload: Vec::with_capacity(BLOCK_BYTES + 256),
            updates: 0,
            block_updates: BLOCK_UPDATES,
            deltas: Deltas::default(),
            blocks_written: 0,
            updates_written: 0,
        })
    }

    /// Closes blocks at `n` updates (at least 1) instead of
    /// [`BLOCK_UPDATES`]: smaller blocks lose less to a corrupt byte and
    /// compress less.
    pub fn with_block_updates(mut self, n: u32) -> Self {
        self.block_updates = n.max(1);
        self
    }

    /// Adds one update; `symbol` is its definition (`symbol.id` must be
    /// `s.update.symbol`).
    pub fn push(&mut self, symbol: &LogSymbol, s: &Sequenced) -> io::Result<()> {
        debug_assert_eq!(symbol.id, s.update.symbol);
        let d = &mut self.deltas;
        let out = &mut self.payload;
        let id = s.update.symbol;
        let (last_symbol_seq, last_px) = match d.symbols.get(&id) {
            Some(state) => *state,
            None => {
                out.push(TAG_SYMBOL);
                put_varint(out, u64::from(id));
                out.push(symbol.price_decimals);
                out.push(symbol.size_decimals);
                let name = symbol.name.as_bytes();
                let len = name.len().min(MAX_NAME_LEN);
                out.push(len as u8);
                out.extend_from_slice(&name[..len]);
                (0, 0)
            }
        };
        out.push(match s.update.kind {
            UpdateKind::Quote { .. } => TAG_QUOTE,
            UpdateKind::Trade { side, .. } => TAG_TRADE + side as u8,
        });
        put_varint(out, u64::from(id));
        put_delta(out, s.seq, d.seq);
        put_delta(out, s.symbol_seq, last_symbol_seq);
        put_delta(out, s.update.exchange_ts_ns, d.exchange_ts);
        put_delta(out, s.update.receive_ts_ns, d.receive_ts);
        put_delta(out, s.publish_ts_ns, d.publish_ts);
        let px = match s.update.kind {
            UpdateKind::Quote {
                bid_px,
                bid_sz,
                ask_px,
                ask_sz,
            } => {
                put_varint(out, zigzag(bid_px.wrapping_sub(last_px)));
                put_varint(out, zigzag(bid_sz));
                put_varint(out, zigzag(ask_px.wrapping_sub(bid_px)));
                put_varint(out, zigzag(ask_sz));
                bid_px
            }
            UpdateKind::Trade { px, sz, .. } => {
                put_varint(out, zigzag(px.wrapping_sub(last_px)));
                put_varint(out, zigzag(sz));
                px
            }
        };
        d.seq = s.seq;
        d.exchange_ts = s.update.exchange_ts_ns;
        d.receive_ts = s.update.receive_ts_ns;
        d.publish_ts = s.publish_ts_ns;
        d.symbols.insert(id, (s.symbol_seq, px));
        self.updates += 1;
        if self.updates >= self.block_updates || self.payload.len() >= BLOCK_BYTES {
            self.finish_block()?;
        }
        Ok(())
    }

    /// Updates in the block being built.
    pub fn pending(&self) -> u32 {
        self.updates
    }

    /// Writes the block being built, if it has anything, and flushes the
    /// underlying writer: after this returns, a crash loses nothing pushed.
    pub fn finish_block(&mut self) -> io::Result<()> {
        if self.updates == 0 {
            return Ok(());
        }
        let mut head = [0u8; BLOCK_HEADER_LEN];
        head[..4].copy_from_slice(&BLOCK_MARKER);
        head[4..8].copy_from_slice(&(self.payload.len() as u32).to_le_bytes());
        head[8..12].copy_from_slice(&self.updates.to_le_bytes());
        let crc = block_crc(&head[4..12], &self.payload);
        head[12..16].copy_from_slice(&crc.to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(&self.payload)?;
        self.out.flush()?;
        self.blocks_written += 1;
        self.updates_written += u64::from(self.updates);
        self.payload.clear();
        self.updates = 0;
        self.deltas = Deltas::default();
        Ok(())
    }

    /// Writes the last block and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.finish_block()?;
        Ok(self.out)
    }
}

fn header(started_ns: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    // 10..12: flags, none defined.
    h[12..20].copy_from_slice(&started_ns.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

fn block_crc(len_and_count: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len_and_count);
    h.update(payload);
    h.finalize()
}

// ---------------------------------------------------------------------------
// Reader

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
    stats: ReadStats,
    /// Every definition met so far, to refuse a block that redefines an id
    /// differently (which only a broken writer or corruption could do).
    symbols: HashMap<SymbolId, LogSymbol>,
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
            stats: ReadStats::default(),
            symbols: HashMap::new(),
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
        if version != VERSION {
            return Err(LogError::Version(version));
        }
        r.started_ns = u64::from_le_bytes(h[12..20].try_into().unwrap_or_default());
        r.pos += HEADER_LEN;
        Ok(r)
    }

    pub fn stats(&self) -> ReadStats {
        self.stats
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
            if got == 0 {
                self.eof = true;
                break;
            }
        }
        Ok(())
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
                    match self.find_block(1)? {
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
                Attempt::Bad => match self.find_block(1)? {
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
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if len > MAX_BLOCK_PAYLOAD {
            return Ok(Attempt::Bad);
        }
        self.fill(BLOCK_HEADER_LEN + len)?;
        let block = &self.buf[self.pos..];
        if block.len() < BLOCK_HEADER_LEN + len {
            return Ok(Attempt::Short);
        }
        match verify(block, &mut self.symbols) {
            Some((entries, updates)) => {
                self.stats.updates += updates;
                Ok(Attempt::Block(entries, BLOCK_HEADER_LEN + len))
            }
            None => Ok(Attempt::Bad),
        }
    }

    /// The distance from `pos` to the next block that verifies, searching
    /// from `pos + from`, reading on as needed; `None` if there is none.
    fn find_block(&mut self, from: usize) -> Result<Option<usize>, LogError> {
        let mut at = from;
        loop {
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
            if avail.len() >= BLOCK_HEADER_LEN {
                let len = u32::from_le_bytes([avail[4], avail[5], avail[6], avail[7]]) as usize;
                if len <= MAX_BLOCK_PAYLOAD {
                    self.fill(cand + BLOCK_HEADER_LEN + len)?;
                    let block = &self.buf[self.pos + cand..];
                    // A candidate is only checked, not decoded: decoding
                    // would record its symbols before it is really read.
                    if block.len() >= BLOCK_HEADER_LEN + len && crc_ok(block, len) {
                        return Ok(Some(cand));
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

fn crc_ok(block: &[u8], len: usize) -> bool {
    let crc = u32::from_le_bytes([block[12], block[13], block[14], block[15]]);
    block_crc(
        &block[4..12],
        &block[BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + len],
    ) == crc
}

/// Checks a whole block's CRC and decodes it; `None` if either fails.
fn verify(block: &[u8], known: &mut HashMap<SymbolId, LogSymbol>) -> Option<(Vec<Entry>, u64)> {
    let len = u32::from_le_bytes([block[4], block[5], block[6], block[7]]) as usize;
    let count = u32::from_le_bytes([block[8], block[9], block[10], block[11]]);
    if !crc_ok(block, len) {
        return None;
    }
    let entries = decode_payload(&block[BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + len], known)?;
    let updates = entries
        .iter()
        .filter(|e| matches!(e, Entry::Update(_)))
        .count() as u64;
    (updates == u64::from(count)).then_some((entries, updates))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            // The 10th byte holds only the top bit of a u64.
            if i == 9 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn delta(&mut self, prev: u64) -> Option<u64> {
        Some(prev.wrapping_add(unzigzag(self.varint()?) as u64))
    }

    fn signed(&mut self) -> Option<i64> {
        Some(unzigzag(self.varint()?))
    }
}

/// Decodes one verified payload. Definitions are checked against every
/// earlier one: a block that redefines an id differently is refused whole,
/// and only a whole good block adds its definitions.
fn decode_payload(bytes: &[u8], known: &mut HashMap<SymbolId, LogSymbol>) -> Option<Vec<Entry>> {
    let mut c = Cursor { bytes, at: 0 };
    let mut d = Deltas::default();
    let mut entries = Vec::new();
    let mut defined: HashMap<SymbolId, LogSymbol> = HashMap::new();
    while c.at < bytes.len() {
        let tag = c.byte()?;
        if tag == TAG_SYMBOL {
            let id = SymbolId::try_from(c.varint()?).ok()?;
            let price_decimals = c.byte()?;
            let size_decimals = c.byte()?;
            let len = usize::from(c.byte()?);
            let name = bytes.get(c.at..c.at + len)?;
            c.at += len;
            let name = std::str::from_utf8(name).ok()?;
            let bad_decimals = price_decimals > crate::decimal::MAX_DECIMALS
                || size_decimals > crate::decimal::MAX_DECIMALS;
            if name.is_empty() || len > MAX_NAME_LEN || bad_decimals {
                return None;
            }
            let sym = LogSymbol {
                id,
                name: name.to_owned(),
                price_decimals,
                size_decimals,
            };
            let earlier = defined.get(&id).or_else(|| known.get(&id));
            if earlier.is_some_and(|e| *e != sym) || defined.contains_key(&id) {
                return None;
            }
            defined.insert(id, sym.clone());
            entries.push(Entry::Symbol(sym));
            continue;
        }
        let kind_tag = tag;
        if kind_tag != TAG_QUOTE && !(TAG_TRADE..=TAG_TRADE + 2).contains(&kind_tag) {
            return None;
        }
        let id = SymbolId::try_from(c.varint()?).ok()?;
        if !defined.contains_key(&id) {
            return None;
        }
        let (last_symbol_seq, last_px) = d.symbols.get(&id).copied().unwrap_or((0, 0));
        let seq = c.delta(d.seq)?;
        let symbol_seq = c.delta(last_symbol_seq)?;
        let exchange_ts_ns = c.delta(d.exchange_ts)?;
        let receive_ts_ns = c.delta(d.receive_ts)?;
        let publish_ts_ns = c.delta(d.publish_ts)?;
        let (kind, px) = if kind_tag == TAG_QUOTE {
            let bid_px = last_px.wrapping_add(c.signed()?);
            let bid_sz = c.signed()?;
            let ask_px = bid_px.wrapping_add(c.signed()?);
            let ask_sz = c.signed()?;
            let kind = UpdateKind::Quote {
                bid_px,
                bid_sz,
                ask_px,
                ask_sz,
            };
            (kind, bid_px)
        } else {
            let px = last_px.wrapping_add(c.signed()?);
            let sz = c.signed()?;
            let side = match kind_tag - TAG_TRADE {
                1 => Side::Buy,
                2 => Side::Sell,
                _ => Side::Unknown,
            };
            (UpdateKind::Trade { px, sz, side }, px)
        };
        d.seq = seq;
        d.exchange_ts = exchange_ts_ns;
        d.receive_ts = receive_ts_ns;
        d.publish_ts = publish_ts_ns;
        d.symbols.insert(id, (symbol_seq, px));
        entries.push(Entry::Update(Sequenced {
            update: Update {
                symbol: id,
                kind,
                exchange_ts_ns,
                receive_ts_ns,
                origin_seq: 0,
            },
            seq,
            symbol_seq,
            publish_ts_ns,
        }));
    }
    known.extend(defined);
    Some(entries)
}

/// Whether `head` (the first bytes of a decompressed file) is a log.
pub fn is_log(head: &[u8]) -> bool {
    head.starts_with(&MAGIC)
}

// ---------------------------------------------------------------------------
// As a feed

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

    /// The next block's updates, or `None` at the end of the log. Corrupt
    /// blocks count as rejected records, with a warning; a torn tail is
    /// only warned about.
    pub fn next_block(
        &mut self,
        normalizer: &mut Normalizer,
        stats: &FeedStats,
        out: &mut Vec<Timed>,
    ) -> Result<bool, FeedError> {
        let block = self.reader.next_block().map_err(|e| FeedError::Read {
            file: self.file.clone(),
            line: self.reader.stats().blocks + 1,
            source: match e {
                LogError::Io(e) => e,
                other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
            },
        })?;
        self.report(stats);
        let Some(entries) = block else {
            return Ok(false);
        };
        for entry in entries {
            match entry {
                Entry::Symbol(sym) => {
                    stats.skipped.fetch_add(1, Relaxed);
                    if self.ids.contains_key(&sym.id) {
                        continue;
                    }
                    let local = self.intern(normalizer, &sym)?;
                    self.ids.insert(sym.id, local);
                }
                Entry::Update(s) => {
                    stats.records.fetch_add(1, Relaxed);
                    let Some(Some(symbol)) = self.ids.get(&s.update.symbol).copied() else {
                        stats.rejected.fetch_add(1, Relaxed);
                        continue;
                    };
                    let update = Update {
                        symbol,
                        origin_seq: s.symbol_seq,
                        ..s.update
                    };
                    // Paced by when it was served; a converted log was
                    // never served, so by capture time, else venue time.
                    let pace = [s.publish_ts_ns, update.receive_ts_ns, update.exchange_ts_ns]
                        .into_iter()
                        .find(|&t| t != 0);
                    out.push(Timed {
                        update,
                        pace_ns: pace,
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

    fn report(&mut self, stats: &FeedStats) {
        let now = self.reader.stats();
        if now.corrupt > self.reported.corrupt {
            stats
                .rejected
                .fetch_add(now.corrupt - self.reported.corrupt, Relaxed);
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

/// Every whole block's entries and what the reader skipped, for tools and
/// tests.
pub fn read_entries(bytes: &[u8]) -> Result<(Vec<Entry>, ReadStats), LogError> {
    let mut reader = LogReader::new(bytes)?;
    let mut entries = Vec::new();
    while let Some(block) = reader.next_block()? {
        entries.extend(block);
    }
    Ok((entries, reader.stats()))
}

/// The body of the `log_reader` fuzz target: reads any bytes as a log, also
/// behind a valid header, and checks the reader's own accounting. Must never
/// panic, hang or allocate without bound.
pub fn fuzz_read(data: &[u8]) {
    let check = |bytes: &[u8]| {
        if let Ok((entries, stats)) = read_entries(bytes) {
            let updates = entries
                .iter()
                .filter(|e| matches!(e, Entry::Update(_)))
                .count() as u64;
            assert_eq!(updates, stats.updates);
            let consumed = stats.skipped_bytes + stats.torn_tail_bytes;
            assert!(consumed <= bytes.len() as u64);
            // Whatever decoded re-encodes to blocks that decode the same.
            let mut symbols = HashMap::new();
            let mut again = Vec::new();
            let mut w = LogWriter::new(&mut again, 0).expect("Vec write");
            for e in &entries {
                match e {
                    Entry::Symbol(s) => {
                        symbols.insert(s.id, s.clone());
                    }
                    Entry::Update(u) => w.push(&symbols[&u.update.symbol], u).expect("Vec write"),
                }
            }
            w.finish().expect("Vec write");
            let (decoded, _) = read_entries(&again).expect("own output reads");
            let only_updates = |v: &[Entry]| -> Vec<Sequenced> {
                v.iter()
                    .filter_map(|e| match e {
                        Entry::Update(u) => Some(*u),
                        Entry::Symbol(_) => None,
                    })
                    .collect()
            };
            assert_eq!(only_updates(&decoded), only_updates(&entries));
        }
    };
    check(data);
    let mut framed = header(0).to_vec();
    framed.extend_from_slice(data);
    check(&framed);
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
