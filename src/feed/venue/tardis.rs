//! Tardis.dev CSV downloads (<https://docs.tardis.dev/downloadable-csv-files>):
//! `quotes` and `trades`, and level 0 of `book_snapshot_N` as a quote.
//!
//! Columns are found by header name. Tardis never quotes fields in these
//! files (numbers, symbols and the literals buy/sell/unknown), so a row is
//! split on commas. Times are µs: `timestamp` is the exchange's,
//! `local_timestamp` Tardis's receive time (optionally with a `.nnn` ns
//! fraction, as `tickwire convert` writes for ns recordings).

use crate::feed::normalize::{book_level, BadRecord, Emitter, Outcome};
use crate::update::{BookSide, Side, SymbolId};

/// The start of every Tardis CSV header.
pub const HEADER_PREFIX: &str = "exchange,symbol,timestamp,local_timestamp";

/// Which data type a file holds, with the column of each field it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Columns {
    /// `exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount`
    ///
    /// `binance-futures,BTCUSDT,1582329601096000,1582329603502092,0.84,9682,9681.92,0.67`
    Quotes { common: Common, book: Level },
    /// `exchange,symbol,timestamp,local_timestamp,id,side,price,amount`; `side`
    /// is the aggressor's (buy, sell or unknown).
    ///
    /// `binance-futures,BTCUSDT,1582329602111000,1582329602418379,42377944,buy,9682,0.132`
    Trades {
        common: Common,
        side: usize,
        price: usize,
        amount: usize,
    },
    /// `book_snapshot_N`: `asks[0].price,asks[0].amount,bids[0].price,bids[0].amount,asks[1].price,...`
    ///
    /// `binance-futures,BTCUSDT,1598918403696000,1598918403810979,11657.08,1.714,11657.07,10.896,...`
    /// `book_snapshot_N`: a quote from the top level, and the top N levels
    /// of each side as a book snapshot.
    BookSnapshot {
        common: Common,
        book: Level,
        depth: Vec<Level>,
    },
    /// `incremental_book_L2`: one level per row; the rows of one message
    /// (same symbol, local timestamp and `is_snapshot`) are one book event.
    IncrementalL2 {
        common: Common,
        is_snapshot: usize,
        side: usize,
        price: usize,
        amount: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Common {
    symbol: usize,
    timestamp: usize,
    local_timestamp: usize,
    columns: usize,
}

/// Columns of the best bid and ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    bid_price: usize,
    bid_amount: usize,
    ask_price: usize,
    ask_amount: usize,
}

impl Columns {
    /// Reads a header line. The error names the unsupported data type.
    pub fn from_header(header: &str) -> Result<Columns, String> {
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        let col = |name: &str| names.iter().position(|n| *n == name);
        let common = Common {
            symbol: col("symbol").ok_or("Tardis CSV without a `symbol` column")?,
            timestamp: col("timestamp").ok_or("Tardis CSV without `timestamp`")?,
            local_timestamp: col("local_timestamp")
                .ok_or("Tardis CSV without `local_timestamp`")?,
            columns: names.len(),
        };
        let level = |bp: &str, ba: &str, ap: &str, aa: &str| -> Option<Level> {
            Some(Level {
                bid_price: col(bp)?,
                bid_amount: col(ba)?,
                ask_price: col(ap)?,
                ask_amount: col(aa)?,
            })
        };
        if let Some(book) = level("bid_price", "bid_amount", "ask_price", "ask_amount") {
            return Ok(Columns::Quotes { common, book });
        }
        let nth = |i: usize| {
            level(
                &format!("bids[{i}].price"),
                &format!("bids[{i}].amount"),
                &format!("asks[{i}].price"),
                &format!("asks[{i}].amount"),
            )
        };
        if let Some(book) = nth(0) {
            let depth = (0..).map_while(nth).collect();
            return Ok(Columns::BookSnapshot {
                common,
                book,
                depth,
            });
        }
        if let (Some(is_snapshot), Some(side), Some(price), Some(amount)) =
            (col("is_snapshot"), col("side"), col("price"), col("amount"))
        {
            return Ok(Columns::IncrementalL2 {
                common,
                is_snapshot,
                side,
                price,
                amount,
            });
        }
        if let (Some(_), Some(side), Some(price), Some(amount)) =
            (col("id"), col("side"), col("price"), col("amount"))
        {
            return Ok(Columns::Trades {
                common,
                side,
                price,
                amount,
            });
        }
        Err(format!(
            "Tardis CSV with columns `{}` (only quotes, trades, book_snapshot_N and \
             incremental_book_L2 are)",
            names[4..].join(",")
        ))
    }

    fn common(&self) -> &Common {
        match self {
            Columns::Quotes { common, .. }
            | Columns::Trades { common, .. }
            | Columns::BookSnapshot { common, .. }
            | Columns::IncrementalL2 { common, .. } => common,
        }
    }

    /// Normalizes one data row.
    pub(crate) fn parse_row(
        &self,
        row: &str,
        emit: &mut Emitter<'_>,
    ) -> Result<Outcome, BadRecord> {
        let fields: Vec<&str> = row.split(',').collect();
        let common = self.common();
        if fields.len() != common.columns {
            return Err(BadRecord::fields(
                "Tardis row",
                format!("{} fields, header has {}", fields.len(), common.columns),
            ));
        }
        emit.receive_ts_ns = Some(micros(fields[common.local_timestamp])?);
        let exchange_ts = micros(fields[common.timestamp])?;
        let symbol = fields[common.symbol];
        match self {
            Columns::Quotes { book, .. } | Columns::BookSnapshot { book, .. } => {
                // An empty amount beside a price is a size not known
                // (`tickwire convert` writes one so); an empty price is
                // still an error.
                let amount = |i: usize| Some(fields[i]).filter(|a| !a.is_empty());
                let bid = (fields[book.bid_price], amount(book.bid_amount));
                let ask = (fields[book.ask_price], amount(book.ask_amount));
                emit.quote(symbol, bid, ask, exchange_ts)?;
                if let Columns::BookSnapshot { depth, .. } = self {
                    book_snapshot(symbol, &fields, depth, exchange_ts, emit)?;
                }
            }
            Columns::IncrementalL2 {
                is_snapshot,
                side,
                price,
                amount,
                ..
            } => {
                let field = |what: &str, value: &str| {
                    BadRecord::fields("Tardis incremental_book_L2", format!("{what} {value:?}"))
                };
                let row = L2Row {
                    symbol,
                    local_ts: fields[common.local_timestamp],
                    is_snapshot: match fields[*is_snapshot] {
                        "true" => true,
                        "false" => false,
                        other => return Err(field("is_snapshot", other)),
                    },
                    side: match fields[*side] {
                        "bid" => BookSide::Bid,
                        "ask" => BookSide::Ask,
                        other => return Err(field("side", other)),
                    },
                    price: fields[*price],
                    amount: fields[*amount],
                    exchange_ts,
                };
                incremental(row, emit)?;
            }
            Columns::Trades {
                side,
                price,
                amount,
                ..
            } => {
                let side = match fields[*side] {
                    "buy" => Side::Buy,
                    "sell" => Side::Sell,
                    _ => Side::Unknown,
                };
                emit.trade(symbol, fields[*price], fields[*amount], side, exchange_ts)?;
            }
        }
        Ok(Outcome::Emitted)
    }
}

/// µs as Tardis writes them; `tickwire convert` adds `.nnn` (ns) when a
/// recording has finer times than µs.
/// The top levels of a `book_snapshot_N` row as one book snapshot; a level
/// with an empty price (a book shallower than N) is left out.
fn book_snapshot(
    symbol: &str,
    fields: &[&str],
    depth: &[Level],
    exchange_ts: u64,
    emit: &mut Emitter<'_>,
) -> Result<(), BadRecord> {
    let scale = emit.scale_of(
        symbol,
        fields[depth[0].bid_price],
        fields[depth[0].bid_amount],
    )?;
    let mut levels = Vec::with_capacity(2 * depth.len());
    for l in depth {
        for (side, px, sz) in [
            (BookSide::Bid, l.bid_price, l.bid_amount),
            (BookSide::Ask, l.ask_price, l.ask_amount),
        ] {
            let (px, sz) = (fields[px], fields[sz]);
            if px.is_empty() || sz.is_empty() {
                continue;
            }
            levels.push(book_level(&scale, side, px, sz)?);
        }
    }
    if levels.is_empty() {
        levels.push((BookSide::Bid, 0, 0));
    }
    let receive_ts_ns = emit.receive_ts_ns;
    emit.levels(scale.id, &levels, true, exchange_ts, receive_ts_ns);
    Ok(())
}

/// One row of `incremental_book_L2`.
struct L2Row<'a> {
    symbol: &'a str,
    local_ts: &'a str,
    is_snapshot: bool,
    side: BookSide,
    price: &'a str,
    amount: &'a str,
    exchange_ts: u64,
}

/// The rows of the message being read, and per symbol the local time of
/// its last message if that was a snapshot.
#[derive(Debug, Default)]
struct L2Books {
    group: Option<Group>,
    in_snapshot: std::collections::HashMap<SymbolId, Option<String>>,
}

#[derive(Debug)]
struct Group {
    id: SymbolId,
    local_ts: String,
    is_snapshot: bool,
    /// The first snapshot row after changes: the book is replaced.
    reset: bool,
    levels: Vec<(BookSide, i64, i64)>,
    exchange_ts: u64,
    receive_ts: Option<u64>,
}

/// Adds a row to the message being read; a row of another message (another
/// symbol, time or kind) first publishes the one before. Tardis: "if the
/// last update was not a snapshot and the current one is, the existing
/// order book state must be discarded"; a snapshot at another time than the
/// symbol's last one (`tickwire convert` writes one per venue snapshot) is
/// a new snapshot too, while the rows of one snapshot that other symbols'
/// rows interrupt continue it.
fn incremental(row: L2Row<'_>, emit: &mut Emitter<'_>) -> Result<(), BadRecord> {
    let scale = emit.scale_of(row.symbol, row.price, row.amount)?;
    let level = book_level(&scale, row.side, row.price, row.amount)?;
    let receive_ts = emit.receive_ts_ns;
    let books = emit.books.get::<L2Books>();
    let same = books.group.as_ref().is_some_and(|g| {
        g.id == scale.id && g.local_ts == row.local_ts && g.is_snapshot == row.is_snapshot
    });
    if !same {
        if let Some(done) = books.group.take() {
            publish(done, emit);
        }
        let books = emit.books.get::<L2Books>();
        let now = row.is_snapshot.then(|| row.local_ts.to_owned());
        let was = books.in_snapshot.insert(scale.id, now.clone()).flatten();
        books.group = Some(Group {
            id: scale.id,
            local_ts: row.local_ts.to_owned(),
            is_snapshot: row.is_snapshot,
            reset: now.is_some() && was != now,
            levels: Vec::new(),
            exchange_ts: row.exchange_ts,
            receive_ts,
        });
    }
    if let Some(g) = &mut emit.books.get::<L2Books>().group {
        g.levels.push(level);
    }
    Ok(())
}

fn publish(group: Group, emit: &mut Emitter<'_>) {
    emit.levels(
        group.id,
        &group.levels,
        group.reset,
        group.exchange_ts,
        group.receive_ts,
    );
}

/// The end of the file: the last message read is published.
pub(crate) fn finish(emit: &mut Emitter<'_>) {
    if let Some(done) = emit.books.get::<L2Books>().group.take() {
        publish(done, emit);
    }
}

fn micros(field: &str) -> Result<u64, BadRecord> {
    let (us, ns) = match field.split_once('.') {
        Some((us, frac)) if frac.len() <= 3 && frac.bytes().all(|b| b.is_ascii_digit()) => {
            let ns = format!("{frac:0<3}").parse::<u64>().ok();
            (us, ns)
        }
        Some(_) => ("", None),
        None => (field, Some(0)),
    };
    us.parse::<u64>()
        .ok()
        .and_then(|us| us.checked_mul(1_000)?.checked_add(ns?))
        .ok_or_else(|| BadRecord::Timestamp(field.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::normalize::{BookSync, Timed};
    use crate::symbols::{Normalizer, SymbolTable};
    use crate::update::{level_flags, UpdateKind};

    #[test]
    fn incremental_rows_of_one_message_are_one_event_and_a_new_snapshot_replaces_the_book() {
        let header = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount";
        let rows = [
            // TC0: a snapshot in two rows (one message).
            "deribit,X,1,10,true,ask,101,5",
            "deribit,X,1,10,true,bid,99,5",
            // TC1: two changes at 11, one at 12, another symbol at 12.
            "deribit,X,2,11,false,ask,101,0",
            "deribit,X,2,11,false,ask,102,1",
            "deribit,X,3,12,false,bid,98,1",
            "deribit,Y,3,12,false,bid,1,1",
            // TC2: a snapshot after changes replaces the book; the last
            // message is published at the end of the file.
            "deribit,X,4,13,true,bid,97,2",
        ];
        let columns = Columns::from_header(header).unwrap();
        let mut normalizer = Normalizer::new(SymbolTable::new());
        let mut books = BookSync::default();
        let mut out: Vec<Timed> = Vec::new();
        for row in rows {
            let mut emit = Emitter {
                normalizer: &mut normalizer,
                books: &mut books,
                receive_ts_ns: None,
                out: &mut out,
            };
            assert_eq!(columns.parse_row(row, &mut emit).unwrap(), Outcome::Emitted);
        }
        let mut emit = Emitter {
            normalizer: &mut normalizer,
            books: &mut books,
            receive_ts_ns: None,
            out: &mut out,
        };
        finish(&mut emit);
        let mut events = Vec::new();
        let mut n = 0;
        for t in &out {
            let UpdateKind::Level { flags, .. } = t.update.kind else {
                panic!("{:?}", t.update);
            };
            n += 1;
            if flags & level_flags::LAST != 0 {
                events.push((t.update.symbol, n));
                n = 0;
            }
        }
        // X:2 (snapshot), X:2, X:1, Y:1, X:1 (snapshot).
        assert_eq!(events, [(0, 2), (0, 2), (0, 1), (1, 1), (0, 1)]);
        let resets: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                matches!(t.update.kind, UpdateKind::Level { flags, .. } if flags & level_flags::RESET != 0)
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(resets, [0, 6]);
        // The snapshot's rows carry their capture time.
        assert_eq!(out[0].update.receive_ts_ns, 10_000);
    }
}
