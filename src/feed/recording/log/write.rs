//! Writing a log: blocks of delta-encoded records, closed by count and size
//! here and by time by the caller.

use std::io::{self, Write};

use super::{
    block_crc, header, put_delta, put_varint, zigzag, Deltas, LogSymbol, BLOCK_BYTES,
    BLOCK_HEADER_LEN, BLOCK_MARKER, BLOCK_UPDATES, LEVEL_ASK, LEVEL_LAST, LEVEL_RESET,
    QUOTE_ASK_SIZE_UNKNOWN, QUOTE_BID_SIZE_UNKNOWN, TAG_LEVEL, TAG_QUOTE, TAG_STATUS, TAG_SYMBOL,
    TAG_TRADE,
};
use crate::symbols::MAX_NAME_LEN;
use crate::update::{level_flags, BookSide, Sequenced, UpdateKind};

/// Appends updates to a log. Blocks are closed by [`BLOCK_UPDATES`] and
/// [`BLOCK_BYTES`] in [`push`](Self::push) and by
/// [`finish_block`](Self::finish_block), which the caller also calls on a
/// timer so that a live recording loses at most that much on a crash.
pub struct LogWriter<W: Write> {
    pub(super) out: W,
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

    /// Closes blocks at `n` updates (at least 1, at most
    /// [`BLOCK_UPDATES`], which readers hold a block to) instead of
    /// [`BLOCK_UPDATES`]: smaller blocks lose less to a corrupt byte and
    /// compress less.
    pub fn with_block_updates(mut self, n: u32) -> Self {
        self.block_updates = n.clamp(1, BLOCK_UPDATES);
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
                define(out, symbol);
                (0, 0)
            }
        };
        out.push(tag(&s.update.kind));
        // A level's sequence and price are deltas from the symbol's last
        // level: a book's numbers apart from its quotes'.
        let (last_symbol_seq, last_px) = match s.update.kind {
            UpdateKind::Level { .. } => d.books.get(&id).copied().unwrap_or((0, 0)),
            _ => (last_symbol_seq, last_px),
        };
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
                if let Some(sz) = bid_sz {
                    put_varint(out, zigzag(sz));
                }
                put_varint(out, zigzag(ask_px.wrapping_sub(bid_px)));
                if let Some(sz) = ask_sz {
                    put_varint(out, zigzag(sz));
                }
                bid_px
            }
            UpdateKind::Trade { px, sz, .. } => {
                put_varint(out, zigzag(px.wrapping_sub(last_px)));
                put_varint(out, zigzag(sz));
                px
            }
            UpdateKind::Level { px, sz, .. } => {
                put_varint(out, zigzag(px.wrapping_sub(last_px)));
                put_varint(out, zigzag(sz));
                px
            }
            UpdateKind::Status(_) => last_px,
        };
        d.seq = s.seq;
        d.exchange_ts = s.update.exchange_ts_ns;
        d.receive_ts = s.update.receive_ts_ns;
        d.publish_ts = s.publish_ts_ns;
        match s.update.kind {
            UpdateKind::Level { .. } => {
                d.books.insert(id, (s.symbol_seq, px));
                // A symbol's definition comes before its first record.
                d.symbols.entry(id).or_insert((0, 0));
            }
            _ => {
                d.symbols.insert(id, (s.symbol_seq, px));
            }
        }
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

/// A symbol's definition record, before its first update in a block.
fn define(out: &mut Vec<u8>, symbol: &LogSymbol) {
    out.push(TAG_SYMBOL);
    put_varint(out, u64::from(symbol.id));
    out.push(symbol.price_decimals);
    out.push(symbol.size_decimals);
    let name = symbol.name.as_bytes();
    let len = name.len().min(MAX_NAME_LEN);
    out.push(len as u8);
    out.extend_from_slice(&name[..len]);
}

/// A record's tag: its kind and the bits that say what follows.
fn tag(kind: &UpdateKind) -> u8 {
    match *kind {
        UpdateKind::Quote { bid_sz, ask_sz, .. } => {
            let mut tag = TAG_QUOTE;
            if bid_sz.is_none() {
                tag += QUOTE_BID_SIZE_UNKNOWN;
            }
            if ask_sz.is_none() {
                tag += QUOTE_ASK_SIZE_UNKNOWN;
            }
            tag
        }
        UpdateKind::Trade { side, .. } => TAG_TRADE + side as u8,
        UpdateKind::Status(status) => TAG_STATUS + status as u8,
        UpdateKind::Level { side, flags, .. } => {
            let mut tag = TAG_LEVEL;
            if side == BookSide::Ask {
                tag += LEVEL_ASK;
            }
            if flags & level_flags::RESET != 0 {
                tag += LEVEL_RESET;
            }
            if flags & level_flags::LAST != 0 {
                tag += LEVEL_LAST;
            }
            tag
        }
    }
}
