//! Decoding a verified block's payload into its records: symbol
//! definitions and delta-coded updates, as docs/LOG.md lays them out.
//!
//! Apart from the block framing in `read` (markers, lengths, CRCs,
//! resynchronization), which hands over only payloads whose CRC matched.
//! Every field is still bounds-checked here: a CRC catches damage, not a
//! file written wrong, or made to match it.

use std::collections::HashMap;

use super::{
    pace_ns, unzigzag, Deltas, Entry, IdMap, LogSymbol, LEVEL_ASK, LEVEL_LAST, LEVEL_RESET,
    QUOTE_ASK_SIZE_UNKNOWN, QUOTE_BID_SIZE_UNKNOWN, TAG_LEVEL, TAG_QUOTE, TAG_STATUS, TAG_SYMBOL,
    TAG_TRADE,
};
use crate::symbols::MAX_NAME_LEN;
use crate::update::{
    level_flags, BookSide, Sequenced, Side, SymbolId, SymbolStatus, Update, UpdateKind,
};

/// A payload being decoded, and how far.
pub(super) struct Cursor<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    pub(super) fn varint(&mut self) -> Option<u64> {
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

/// Decodes one verified payload of a file of format `version`. Definitions
/// are checked against every earlier one: a block that redefines an id
/// differently is refused whole, and only a whole good block adds its
/// definitions.
pub(super) fn decode_payload(
    bytes: &[u8],
    known: &mut HashMap<SymbolId, LogSymbol>,
    version: u16,
) -> Option<Vec<Entry>> {
    let mut entries = Vec::new();
    decode_each(bytes, known, version, |e| entries.push(e))?;
    Some(entries)
}

/// A verified payload's number of updates and the latest of their pace
/// times ([`pace_ns`]; `None` if one has none), decoded as
/// [`decode_payload`] decodes it but kept nowhere: what passing over a
/// block needs to know.
pub(super) fn latest_pace(bytes: &[u8], version: u16) -> Option<(u64, Option<u64>)> {
    let (mut updates, mut latest) = (0u64, Some(0u64));
    decode_each(bytes, &mut HashMap::new(), version, |e| {
        if let Entry::Update(u) = e {
            updates += 1;
            latest = latest.zip(pace_ns(&u)).map(|(a, b)| a.max(b));
        }
    })?;
    Some((updates, latest))
}

/// [`decode_payload`]'s work, each record handed to `sink` as it is
/// decoded; `None` (the payload refused) may come after some were.
fn decode_each(
    bytes: &[u8],
    known: &mut HashMap<SymbolId, LogSymbol>,
    version: u16,
    mut sink: impl FnMut(Entry),
) -> Option<()> {
    // Quotes with unknown sizes came with version 2.
    let last_quote_tag = if version >= 2 {
        TAG_QUOTE + QUOTE_BID_SIZE_UNKNOWN + QUOTE_ASK_SIZE_UNKNOWN
    } else {
        TAG_QUOTE
    };
    let mut c = Cursor { bytes, at: 0 };
    let mut d = Deltas::default();
    let mut defined: IdMap<LogSymbol> = IdMap::default();
    while c.at < bytes.len() {
        let tag = c.byte()?;
        if tag == TAG_SYMBOL {
            let sym = symbol_definition(&mut c)?;
            let id = sym.id;
            let earlier = defined.get(&id).or_else(|| known.get(&id));
            if earlier.is_some_and(|e| *e != sym) || defined.contains_key(&id) {
                return None;
            }
            defined.insert(id, sym.clone());
            sink(Entry::Symbol(sym));
            continue;
        }
        // Levels and the book_gap status came with version 3.
        let (last_status, books) = if version >= 3 { (4, true) } else { (3, false) };
        let known = (TAG_QUOTE..=last_quote_tag).contains(&tag)
            || (TAG_TRADE..=TAG_TRADE + 2).contains(&tag)
            || (TAG_STATUS..=TAG_STATUS + last_status).contains(&tag)
            || (books && (TAG_LEVEL..=TAG_LEVEL + 7).contains(&tag));
        if !known {
            return None;
        }
        let id = SymbolId::try_from(c.varint()?).ok()?;
        if !defined.contains_key(&id) {
            return None;
        }
        sink(Entry::Update(update_record(
            &mut c,
            id,
            tag,
            last_quote_tag,
            &mut d,
        )?));
    }
    known.extend(defined);
    Some(())
}

/// A symbol definition after its tag: id, decimals and name, each within
/// its bounds.
fn symbol_definition(c: &mut Cursor<'_>) -> Option<LogSymbol> {
    let id = SymbolId::try_from(c.varint()?).ok()?;
    let price_decimals = c.byte()?;
    let size_decimals = c.byte()?;
    let len = usize::from(c.byte()?);
    let name = c.bytes.get(c.at..c.at + len)?;
    c.at += len;
    let name = std::str::from_utf8(name).ok()?;
    let bad_decimals = price_decimals > crate::decimal::MAX_DECIMALS
        || size_decimals > crate::decimal::MAX_DECIMALS;
    if name.is_empty() || len > MAX_NAME_LEN || bad_decimals {
        return None;
    }
    Some(LogSymbol {
        id,
        name: name.to_owned(),
        price_decimals,
        size_decimals,
    })
}

/// An update of symbol `id` after its tag and id: the sequence and the
/// times, each a delta from the block's previous update (the symbol
/// sequence from the symbol's), then the fields of its kind. Moves `d` on.
fn update_record(
    c: &mut Cursor<'_>,
    id: SymbolId,
    tag: u8,
    last_quote_tag: u8,
    d: &mut Deltas,
) -> Option<Sequenced> {
    let level = tag >= TAG_LEVEL;
    let (last_symbol_seq, last_px) = if level { &d.books } else { &d.symbols }
        .get(&id)
        .copied()
        .unwrap_or((0, 0));
    let seq = c.delta(d.seq)?;
    let symbol_seq = c.delta(last_symbol_seq)?;
    let exchange_ts_ns = c.delta(d.exchange_ts)?;
    let receive_ts_ns = c.delta(d.receive_ts)?;
    let publish_ts_ns = c.delta(d.publish_ts)?;
    let (kind, px) = update_kind(c, tag, last_quote_tag, last_px)?;
    d.seq = seq;
    d.exchange_ts = exchange_ts_ns;
    d.receive_ts = receive_ts_ns;
    d.publish_ts = publish_ts_ns;
    if level {
        d.books.insert(id, (symbol_seq, px));
    } else {
        d.symbols.insert(id, (symbol_seq, px));
    }
    Some(Sequenced {
        update: Update {
            symbol: id,
            kind,
            exchange_ts_ns,
            receive_ts_ns,
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        },
        seq,
        symbol_seq,
        publish_ts_ns,
    })
}

/// The kind an update's tag names, and its fields: prices as deltas from
/// `last_px` (a quote's ask from its bid), sizes as they are. Also returns
/// the price the symbol's next update is a delta from.
fn update_kind(
    c: &mut Cursor<'_>,
    tag: u8,
    last_quote_tag: u8,
    last_px: i64,
) -> Option<(UpdateKind, i64)> {
    if tag >= TAG_LEVEL {
        let bits = tag - TAG_LEVEL;
        let px = last_px.wrapping_add(c.signed()?);
        let sz = c.signed()?;
        let side = if bits & LEVEL_ASK != 0 {
            BookSide::Ask
        } else {
            BookSide::Bid
        };
        let mut flags = 0;
        if bits & LEVEL_RESET != 0 {
            flags |= level_flags::RESET;
        }
        if bits & LEVEL_LAST != 0 {
            flags |= level_flags::LAST;
        }
        Some((
            UpdateKind::Level {
                side,
                px,
                sz,
                flags,
            },
            px,
        ))
    } else if tag >= TAG_STATUS {
        let status = match tag - TAG_STATUS {
            0 => SymbolStatus::Live,
            1 => SymbolStatus::StaleGap,
            2 => SymbolStatus::StaleDisconnected,
            3 => SymbolStatus::StaleSilent,
            _ => SymbolStatus::StaleBookGap,
        };
        Some((UpdateKind::Status(status), last_px))
    } else if tag <= last_quote_tag {
        let unknown = tag - TAG_QUOTE;
        let bid_px = last_px.wrapping_add(c.signed()?);
        let bid_sz = match unknown & QUOTE_BID_SIZE_UNKNOWN {
            0 => Some(c.signed()?),
            _ => None,
        };
        let ask_px = bid_px.wrapping_add(c.signed()?);
        let ask_sz = match unknown & QUOTE_ASK_SIZE_UNKNOWN {
            0 => Some(c.signed()?),
            _ => None,
        };
        let kind = UpdateKind::Quote {
            bid_px,
            bid_sz,
            ask_px,
            ask_sz,
        };
        Some((kind, bid_px))
    } else {
        let px = last_px.wrapping_add(c.signed()?);
        let sz = c.signed()?;
        let side = match tag - TAG_TRADE {
            1 => Side::Buy,
            2 => Side::Sell,
            _ => Side::Unknown,
        };
        Some((UpdateKind::Trade { px, sz, side }, px))
    }
}
