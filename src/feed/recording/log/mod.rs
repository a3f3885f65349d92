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
//! - `write`: [`LogWriter`] writes blocks (closed by record count and size;
//!   the caller adds flushes by time).
//! - `read`: [`LogReader`] reads whole blocks back, with [`ReadStats`] of
//!   what it skipped.
//! - `decode`: a verified block's payload into its records, every field
//!   bounds-checked.
//! - `index`: [`scan`] reads a log once for its [`BlockIndex`] (where each
//!   block starts, how late its updates run) and what a catalog says of it.
//! - `feed`: `LogFeed` turns a log into a feed's
//!   [`Timed`](crate::feed::Timed) updates, carrying the recorded
//!   `symbol_seq` as [`Update::origin_seq`](crate::update::Update::origin_seq);
//!   `LoopedSequences` keeps them rising across loops.
//! - [`fuzz_read`] is the body of the `log_reader` fuzz target.

mod decode;
mod feed;
mod index;
mod read;
mod write;

use std::collections::HashMap;
use std::io;

use crate::update::{Sequenced, SymbolId};

pub(crate) use feed::{LogFeed, LoopedSequences};
pub use index::{scan, BlockIndex, LogScan};
pub use read::LogReader;
pub use write::LogWriter;

/// The file's first 8 bytes: a high byte so that it is not text, the name,
/// and CR LF SUB LF to catch line-ending and text-mode mangling (as PNG's).
pub const MAGIC: [u8; 8] = [0x89, b'T', b'W', b'L', b'\r', b'\n', 0x1a, b'\n'];

/// The format version this code writes. Version 2 added quotes with
/// unknown sizes (tags `0x03` to `0x05`), version 3 order-book levels and
/// the `book_gap` status (tags `0x24`, `0x30` to `0x37`); it reads 1 and 2
/// as well, which are the same format without them.
pub const VERSION: u16 = 3;

/// The oldest format version this code reads.
pub const OLDEST_VERSION: u16 = 1;

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
/// A quote's tag is this plus its unknown sizes (version 2 on): bit 0 the
/// bid's, bit 1 the ask's, as in the wire's quote flags. An unknown size
/// has no varint.
const TAG_QUOTE: u8 = 0x02;
/// Bits of a quote's tag above [`TAG_QUOTE`].
const QUOTE_BID_SIZE_UNKNOWN: u8 = 1;
const QUOTE_ASK_SIZE_UNKNOWN: u8 = 2;
/// A trade's tag is this plus its [`Side`] (0 unknown, 1 buy, 2 sell).
const TAG_TRADE: u8 = 0x10;
/// A live venue's per-symbol status: this plus the status (0 live, 1 stale
/// after a gap, 2 disconnected, 3 silent); no numbers follow.
const TAG_STATUS: u8 = 0x20;
/// An order-book level (version 3 on): this plus bit 0 for the ask side,
/// bit 1 [`RESET`](crate::update::level_flags::RESET) (the first level of a
/// snapshot), bit 2 [`LAST`](crate::update::level_flags::LAST) (the last of
/// a book event). Its `symbol_seq` is the event's `book_seq`.
const TAG_LEVEL: u8 = 0x30;
const LEVEL_ASK: u8 = 1;
const LEVEL_RESET: u8 = 2;
const LEVEL_LAST: u8 = 4;

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
    #[error("log format version {0} (this build reads {OLDEST_VERSION} to {VERSION})")]
    Version(u16),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The time a recorded update is paced and windowed by: when it was
/// served; for a converted log, which was never served, when it was
/// captured, else the venue's time. `None`: no time at all.
pub fn pace_ns(s: &Sequenced) -> Option<u64> {
    [
        s.publish_ts_ns,
        s.update.receive_ts_ns,
        s.update.exchange_ts_ns,
    ]
    .into_iter()
    .find(|&t| t != 0)
}

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

/// Hashes a symbol id for the maps a block's decoding consults at every
/// update: one multiply and a fold, where std's SipHash took some 40 % of
/// a log's decoding time. Unkeyed: a log is the operator's file, not a
/// client's input, and a block can only use ids it defines.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // The product's high half depends on every bit of the id; folding
        // it down gives the table's index (low bits) all of them too.
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
}

/// A map by symbol id with [`IdHasher`].
type IdMap<V> = HashMap<SymbolId, V, std::hash::BuildHasherDefault<IdHasher>>;

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
    symbols: IdMap<(u64, i64)>,
    /// Per symbol: last book_seq and last level price.
    books: IdMap<(u64, i64)>,
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

/// Whether `head` (the first bytes of a decompressed file) is a log.
pub fn is_log(head: &[u8]) -> bool {
    head.starts_with(&MAGIC)
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
mod tests;
