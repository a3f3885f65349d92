//! Order books over NATS: each book event the feed node publishes goes to
//! `<prefix>.book.<symbol>`, and the whole book, at most once a second
//! while it changes, to `<prefix>.booksnap.<symbol>` (the stream's last
//! message of that subject is the newest snapshot). An edge takes the
//! newest snapshot, then every event after it in `book_seq` order
//! ([`EdgeBooks`]); an event it cannot connect to its book (one lost, or
//! published before it subscribed) leaves the book waiting for the next
//! snapshot, never served with a gap.
//!
//! Payload (version [`PAYLOAD_VERSION`](super::PAYLOAD_VERSION), all
//! integers little-endian): the 40-byte header of an update (kind
//! [`KIND_EVENT`] or [`KIND_SNAPSHOT`], byte 2 the flags [`RESET`], the
//! `book_seq` where an update has its `symbol_seq`), then `u32` bids,
//! `u32` asks, the levels as `(i64 price, i64 size)`, best first, then the
//! symbol's name.

use std::collections::{HashMap, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};

use crate::update::{level_flags, BookSide, SymbolId, SymbolStatus, Update, UpdateKind};

/// Payload kind of one book event (the levels it changed).
pub const KIND_EVENT: u8 = 3;
/// Payload kind of a whole book.
pub const KIND_SNAPSHOT: u8 = 4;
/// Byte 2 of an event: it replaced the book (the venue's own snapshot).
pub const RESET: u8 = 1;

const HEAD_LEN: usize = 48;

/// Book events an edge holds while its book waits for a snapshot.
const MAX_WAITING: usize = 4096;

/// One book message, either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookPayload {
    pub name: String,
    pub price_decimals: u8,
    pub size_decimals: u8,
    pub snapshot: bool,
    /// An event that replaced the book.
    pub reset: bool,
    pub book_seq: u64,
    pub exchange_ts_ns: u64,
    pub receive_ts_ns: u64,
    pub publish_ts_ns: u64,
    pub levels: Vec<(BookSide, i64, i64)>,
}

impl BookPayload {
    pub fn encode(&self) -> Bytes {
        let name = &self.name.as_bytes()[..self.name.len().min(u8::MAX as usize)];
        let (bids, asks): (Vec<_>, Vec<_>) = self
            .levels
            .iter()
            .partition(|(side, _, _)| *side == BookSide::Bid);
        let mut out = BytesMut::with_capacity(HEAD_LEN + 16 * self.levels.len() + name.len());
        out.put_u8(super::PAYLOAD_VERSION);
        out.put_u8(if self.snapshot {
            KIND_SNAPSHOT
        } else {
            KIND_EVENT
        });
        out.put_u8(if self.reset { RESET } else { 0 });
        out.put_u8(self.price_decimals);
        out.put_u8(self.size_decimals);
        out.put_u8(name.len() as u8);
        out.put_u16_le(0);
        out.put_u64_le(self.book_seq);
        out.put_u64_le(self.exchange_ts_ns);
        out.put_u64_le(self.receive_ts_ns);
        out.put_u64_le(self.publish_ts_ns);
        out.put_u32_le(bids.len() as u32);
        out.put_u32_le(asks.len() as u32);
        for (_, px, sz) in bids.iter().chain(&asks) {
            out.put_i64_le(*px);
            out.put_i64_le(*sz);
        }
        out.put_slice(name);
        out.freeze()
    }

    /// A book payload, or `None` when `p` is not one (an update's).
    pub fn decode(p: &[u8]) -> Option<Result<BookPayload, String>> {
        if p.len() < 2 || !matches!(p[1], KIND_EVENT | KIND_SNAPSHOT) {
            return None;
        }
        Some(Self::decode_book(p))
    }

    fn decode_book(p: &[u8]) -> Result<BookPayload, String> {
        let u32_at = |o: usize| u32::from_le_bytes(p[o..o + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |o: usize| u64::from_le_bytes(p[o..o + 8].try_into().unwrap_or([0; 8]));
        if p.len() < HEAD_LEN {
            return Err(format!("book payload of {} bytes", p.len()));
        }
        if p[0] != super::PAYLOAD_VERSION || p[2] & !RESET != 0 || p[6] != 0 || p[7] != 0 {
            return Err("a book payload of another version or with undefined flags".into());
        }
        let (bids, asks) = (u32_at(40) as usize, u32_at(44) as usize);
        let levels_end = bids
            .checked_add(asks)
            .and_then(|n| n.checked_mul(16))
            .and_then(|n| n.checked_add(HEAD_LEN))
            .ok_or("a book payload with too many levels")?;
        if Some(p.len()) != levels_end.checked_add(p[5] as usize) {
            return Err(format!("book payload of {} bytes", p.len()));
        }
        let name = std::str::from_utf8(&p[levels_end..]).map_err(|_| "a name that is not UTF-8")?;
        let book_seq = u64_at(8);
        if book_seq == 0 {
            return Err("book sequence 0".into());
        }
        let levels = (0..bids + asks)
            .map(|i| {
                let at = HEAD_LEN + 16 * i;
                let side = if i < bids {
                    BookSide::Bid
                } else {
                    BookSide::Ask
                };
                (side, u64_at(at) as i64, u64_at(at + 8) as i64)
            })
            .collect();
        Ok(BookPayload {
            name: name.to_owned(),
            price_decimals: p[3],
            size_decimals: p[4],
            snapshot: p[1] == KIND_SNAPSHOT,
            reset: p[2] & RESET != 0,
            book_seq,
            exchange_ts_ns: u64_at(16),
            receive_ts_ns: u64_at(24),
            publish_ts_ns: u64_at(32),
            levels,
        })
    }
}

/// The edge's books: per symbol, in sync at a `book_seq`, or waiting for a
/// snapshot with the events that came meanwhile.
#[derive(Debug, Default)]
pub struct EdgeBooks {
    books: HashMap<SymbolId, EdgeBook>,
}

#[derive(Debug, Default)]
struct EdgeBook {
    state: State,
    /// Added to the feed node's `book_seq` for what this edge serves: 0
    /// until the feed node restarts and numbers from 1 again, so that the
    /// edge's numbers never go back.
    offset: u64,
    /// The last `book_seq` this edge passed on (its own numbering).
    served: u64,
}

#[derive(Debug)]
enum State {
    /// In sync at the feed node's `book_seq`.
    Synced { book_seq: u64 },
    Waiting {
        events: VecDeque<BookPayload>,
        /// Served before: told stale, and live again with the snapshot.
        was_live: bool,
    },
}

impl Default for State {
    fn default() -> Self {
        State::Waiting {
            events: VecDeque::new(),
            was_live: false,
        }
    }
}

impl EdgeBooks {
    /// Takes one book payload of symbol `id` (interned here): appends the
    /// updates to pass on to `out` (levels numbered by the feed node's
    /// `book_seq`, and statuses).
    pub fn take(&mut self, id: SymbolId, p: BookPayload, out: &mut Vec<Update>) {
        let book = self.books.entry(id).or_default();
        match &mut book.state {
            // In sync: the events carry what the same snapshot would.
            State::Synced { book_seq } if p.snapshot && p.book_seq == *book_seq => {}
            // A snapshot of another state: events were lost (a newer one),
            // or the feed node restarted (an older one): start from it.
            State::Synced { .. } if p.snapshot => book.resync(id, p, VecDeque::new(), false, out),
            // Seen, or numbered by a feed node that restarted: its next
            // snapshot resyncs.
            State::Synced { book_seq } if p.book_seq <= *book_seq => {}
            State::Synced { book_seq } if p.book_seq == *book_seq + 1 => {
                *book_seq = p.book_seq;
                book.pass(id, &p, out);
            }
            State::Synced { .. } => {
                // An event lost: stale until the next snapshot.
                out.push(status(id, SymbolStatus::StaleBookGap));
                book.state = State::Waiting {
                    events: VecDeque::from([p]),
                    was_live: true,
                };
            }
            State::Waiting { events, .. } if !p.snapshot => {
                if events.len() == MAX_WAITING {
                    events.pop_front();
                }
                events.push_back(p);
            }
            State::Waiting { events, was_live } => {
                let (held, was_live) = (std::mem::take(events), *was_live);
                book.resync(id, p, held, was_live, out);
            }
        }
    }
}

impl EdgeBook {
    /// Applies snapshot `p`, then the held events that follow it in order
    /// (duplicates once); at the first that does not, waits again with it
    /// and the rest.
    fn resync(
        &mut self,
        id: SymbolId,
        p: BookPayload,
        held: VecDeque<BookPayload>,
        was_live: bool,
        out: &mut Vec<Update>,
    ) {
        if p.book_seq + self.offset <= self.served {
            // The feed node numbers from 1 again (a restart).
            self.offset = self.served + 1 - p.book_seq;
        }
        if was_live {
            out.push(status(id, SymbolStatus::Live));
        }
        let mut at = p.book_seq;
        self.pass(id, &p, out);
        self.state = State::Synced { book_seq: at };
        let mut held: Vec<BookPayload> = held.into_iter().filter(|e| e.book_seq > at).collect();
        held.sort_by_key(|e| e.book_seq);
        held.dedup_by_key(|e| e.book_seq);
        let mut rest = held.into_iter();
        while let Some(e) = rest.next() {
            if e.book_seq != at + 1 {
                // What the snapshot and the held events leave out: wait for
                // the next snapshot, keeping what came after it.
                out.push(status(id, SymbolStatus::StaleBookGap));
                let mut events = VecDeque::from([e]);
                events.extend(rest);
                self.state = State::Waiting {
                    events,
                    was_live: true,
                };
                return;
            }
            at = e.book_seq;
            self.pass(id, &e, out);
            self.state = State::Synced { book_seq: at };
        }
    }

    /// Passes one payload's levels on, numbered in this edge's numbering.
    fn pass(&mut self, id: SymbolId, p: &BookPayload, out: &mut Vec<Update>) {
        self.served = p.book_seq + self.offset;
        levels(id, p, self.served, out);
    }
}

/// The levels of one payload as the publisher takes them: a snapshot, or
/// an event that replaced the book, starts with `RESET`; all carry the
/// feed node's `book_seq`.
fn levels(id: SymbolId, p: &BookPayload, book_seq: u64, out: &mut Vec<Update>) {
    let mut levels = p.levels.clone();
    if levels.is_empty() {
        // An event with no level still counts: a level of size 0 changes
        // nothing.
        levels.push((BookSide::Bid, 0, 0));
    }
    let n = levels.len();
    for (i, (side, px, sz)) in levels.into_iter().enumerate() {
        let mut flags = 0;
        if (p.snapshot || p.reset) && i == 0 {
            flags |= level_flags::RESET;
        }
        if i + 1 == n {
            flags |= level_flags::LAST;
        }
        out.push(Update {
            symbol: id,
            kind: UpdateKind::Level {
                side,
                px,
                sz,
                flags,
            },
            exchange_ts_ns: p.exchange_ts_ns,
            receive_ts_ns: p.receive_ts_ns,
            origin_seq: book_seq,
            origin_publish_ts_ns: p.publish_ts_ns,
        });
    }
}

fn status(id: SymbolId, status: SymbolStatus) -> Update {
    Update {
        symbol: id,
        kind: UpdateKind::Status(status),
        exchange_ts_ns: 0,
        receive_ts_ns: crate::update::now_ns(),
        origin_seq: 0,
        origin_publish_ts_ns: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(snapshot: bool, book_seq: u64, bid: i64) -> BookPayload {
        BookPayload {
            name: "BTCUSDT".into(),
            price_decimals: 8,
            size_decimals: 8,
            snapshot,
            reset: false,
            book_seq,
            exchange_ts_ns: 1,
            receive_ts_ns: 2,
            publish_ts_ns: 3,
            levels: vec![(BookSide::Bid, bid, 1), (BookSide::Ask, bid + 1, 2)],
        }
    }

    #[test]
    fn payloads_round_trip_and_updates_are_not_books() {
        let p = BookPayload {
            reset: true,
            ..payload(false, 7, 100)
        };
        assert_eq!(BookPayload::decode(&p.encode()), Some(Ok(p)));
        let s = payload(true, 9, 100);
        assert_eq!(BookPayload::decode(&s.encode()), Some(Ok(s)));
        // TC1: a quote's payload is not a book's; a cut one is an error.
        assert_eq!(BookPayload::decode(&[1, 1, 0]), None);
        let cut = payload(true, 9, 100).encode();
        assert!(matches!(
            BookPayload::decode(&cut[..cut.len() - 1]),
            Some(Err(_))
        ));
    }

    /// What `take` passed on: `S<seq>` a snapshot (RESET), `E<seq>` an
    /// event, `!` stale, `+` live.
    fn trace(books: &mut EdgeBooks, p: BookPayload) -> String {
        let mut out = Vec::new();
        books.take(0, p, &mut out);
        let mut s = String::new();
        for u in out {
            match u.kind {
                UpdateKind::Level { flags, .. } if flags & level_flags::LAST != 0 => {
                    let kind = if s.ends_with('R') { "S" } else { "E" };
                    if s.ends_with('R') {
                        s.pop();
                    }
                    s.push_str(&format!("{kind}{}", u.origin_seq));
                }
                UpdateKind::Level { flags, .. } if flags & level_flags::RESET != 0 => s.push('R'),
                UpdateKind::Level { .. } => {}
                UpdateKind::Status(SymbolStatus::StaleBookGap) => s.push('!'),
                UpdateKind::Status(SymbolStatus::Live) => s.push('+'),
                other => panic!("{other:?}"),
            }
        }
        s
    }

    #[test]
    fn an_edge_book_starts_from_a_snapshot_and_never_serves_a_gap() {
        let mut b = EdgeBooks::default();
        let steps = [
            // TC0: events before any snapshot wait; the snapshot at 5 then
            // the held 6 and 7 (4 is older than it).
            (payload(false, 4, 100), ""),
            (payload(false, 6, 100), ""),
            (payload(false, 7, 100), ""),
            (payload(true, 5, 100), "S5E6E7"),
            // TC1: in sync, a snapshot changes nothing; a duplicate neither.
            (payload(true, 7, 100), ""),
            (payload(false, 7, 100), ""),
            (payload(false, 8, 100), "E8"),
            // TC2: 10 after 8: stale, until a snapshot after it; then live.
            (payload(false, 10, 100), "!"),
            (payload(false, 11, 100), ""),
            (payload(false, 11, 100), ""),
            (payload(true, 10, 100), "+S10E11"),
            // TC3: in sync, a newer snapshot (events lost quietly) resyncs.
            (payload(true, 14, 100), "S14"),
            // TC4: the feed node restarted: numbered from 1 again; its
            // snapshot resyncs, and the edge's numbers keep rising.
            (payload(false, 2, 100), ""),
            (payload(true, 3, 100), "S15"),
            (payload(false, 4, 100), "E16"),
        ];
        for (i, (p, want)) in steps.into_iter().enumerate() {
            assert_eq!(trace(&mut b, p), want, "step {i}");
        }
    }
}
