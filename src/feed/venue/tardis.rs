//! Tardis.dev CSV downloads (<https://docs.tardis.dev/downloadable-csv-files>):
//! `quotes` and `trades`, and level 0 of `book_snapshot_N` as a quote.
//!
//! Columns are found by header name. Tardis never quotes fields in these
//! files (numbers, symbols and the literals buy/sell/unknown), so a row is
//! split on commas. Times are µs: `timestamp` is the exchange's,
//! `local_timestamp` Tardis's receive time (optionally with a `.nnn` ns
//! fraction, as `tickwire convert` writes for ns recordings).

use crate::feed::normalize::{BadRecord, Emitter, Outcome};
use crate::update::Side;

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
    BookSnapshot { common: Common, book: Level },
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
        let level = |bp, ba, ap, aa| -> Option<Level> {
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
        if let Some(book) = level(
            "bids[0].price",
            "bids[0].amount",
            "asks[0].price",
            "asks[0].amount",
        ) {
            return Ok(Columns::BookSnapshot { common, book });
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
        let kind = if col("is_snapshot").is_some() {
            "incremental_book_L2".to_owned()
        } else {
            format!("with columns `{}`", names[4..].join(","))
        };
        Err(format!(
            "Tardis {kind} CSV (only quotes, trades and book_snapshot_N are)"
        ))
    }

    fn common(&self) -> &Common {
        match self {
            Columns::Quotes { common, .. }
            | Columns::Trades { common, .. }
            | Columns::BookSnapshot { common, .. } => common,
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
