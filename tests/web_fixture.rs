//! The fixture the JavaScript decoder is tested against
//! (`web/test/fixtures/frames.json`, read by `node --test web/test/`):
//! real frames from the Rust encoder, and what they must decode to.
//!
//! The fixture is committed, and this test fails when it differs from what
//! the encoder produces now, so that the JS tests can never pass against
//! frames the server no longer sends. After a deliberate change to the
//! wire, regenerate it with
//! `TICKWIRE_BLESS=1 cargo test --test web_fixture` and commit it with the
//! change.

use bytes::Bytes;
use serde_json::{json, Value};
use tickwire::candle::{Bar, INTERVALS};
use tickwire::decimal::Fixed;
use tickwire::decimal::WideFixed;
use tickwire::update::{Sequenced, Side, SymbolStatus, Update, UpdateKind};
use tickwire::wire::encode::{
    candles_frames, frame_payload, side_name, symbol_binary, symbol_json, BookHead, BookLevels,
    CandleHead, FrameEncoder, SymbolFormat,
};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web/test/fixtures/frames.json");

struct Sym {
    id: u32,
    name: &'static str,
    price_decimals: u8,
    size_decimals: u8,
}

const SYMBOLS: &[Sym] = &[
    // TC0: the bundled recording's scales.
    Sym {
        id: 0,
        name: "BTCUSDT",
        price_decimals: 8,
        size_decimals: 8,
    },
    // TC1: a name that needs escaping in JSON and is not ASCII; no size
    // decimals at all.
    Sym {
        id: 7,
        name: "X\"Y/é",
        price_decimals: 2,
        size_decimals: 0,
    },
    // TC2: a large id, few decimals, for signs and extremes.
    Sym {
        id: 65_535,
        name: "EDGE",
        price_decimals: 4,
        size_decimals: 3,
    },
];

/// `sz`: the bid and ask sizes, `None` for unknown.
fn quote(
    symbol: u32,
    seq: u64,
    symbol_seq: u64,
    (px, sz): ([i64; 2], [Option<i64>; 2]),
    ts: [u64; 3],
) -> Sequenced {
    Sequenced {
        update: Update {
            symbol,
            kind: UpdateKind::Quote {
                bid_px: px[0],
                bid_sz: sz[0],
                ask_px: px[1],
                ask_sz: sz[1],
            },
            exchange_ts_ns: ts[0],
            receive_ts_ns: ts[1],
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        },
        seq,
        symbol_seq,
        publish_ts_ns: ts[2],
    }
}

fn trade(symbol: u32, seq: u64, px: i64, sz: i64, side: Side, ts: [u64; 3]) -> Sequenced {
    Sequenced {
        update: Update {
            symbol,
            kind: UpdateKind::Trade { px, sz, side },
            exchange_ts_ns: ts[0],
            receive_ts_ns: ts[1],
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        },
        seq,
        symbol_seq: seq,
        publish_ts_ns: ts[2],
    }
}

fn status(symbol: u32, seq: u64, symbol_seq: u64, status: SymbolStatus) -> Sequenced {
    Sequenced {
        update: Update {
            symbol,
            kind: UpdateKind::Status(status),
            exchange_ts_ns: 0,
            receive_ts_ns: 1_723_161_256_000_000_007,
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        },
        seq,
        symbol_seq,
        publish_ts_ns: 1_900_000_000_000_200_009,
    }
}

fn updates() -> Vec<Sequenced> {
    vec![
        // TC0: the quote of docs/PROTOCOL.md.
        quote(
            0,
            42,
            5,
            (
                [6_183_763_000_000, 6_183_764_000_000],
                [Some(378_826_000), Some(154_698_000)],
            ),
            [0, 1_723_161_253_937_000_000, 1_900_000_000_000_000_000],
        ),
        // TC1: a buy trade with every timestamp set, none a multiple of 256 ns
        // (what a float would lose).
        trade(
            0,
            43,
            6_183_764_000_000,
            100_000,
            Side::Buy,
            [
                1_723_161_255_210_000_001,
                1_723_161_253_940_000_003,
                1_900_000_000_000_100_005,
            ],
        ),
        // TC2: a sell with a negative size, zero size decimals, and an escaped name.
        trade(7, 44, 150, -1, Side::Sell, [1, 2, 3]),
        // TC3: values below one, negative, and the extremes of i64 and u64.
        quote(
            65_535,
            (1 << 53) - 1,
            1,
            ([-5, i64::MAX], [Some(1), Some(i64::MIN)]),
            [u64::MAX, u64::MAX - 1, 0],
        ),
        // TC4: an unknown aggressor side and a zero price.
        trade(65_535, 46, 0, 0, Side::Unknown, [0, 0, 0]),
        // TC5: statuses: stale for each reason, then live again.
        status(0, 47, 6, SymbolStatus::StaleGap),
        status(0, 48, 6, SymbolStatus::StaleDisconnected),
        status(7, 49, 44, SymbolStatus::StaleSilent),
        status(0, 50, 6, SymbolStatus::Live),
        // TC6: sizes the venue did not give: the bid's, then both (flags 1
        // and 3, null in JSON); TC7: real zeros, which are sizes.
        quote(
            0,
            51,
            7,
            (
                [6_183_763_000_000, 6_183_764_000_000],
                [None, Some(154_698_000)],
            ),
            [0, 1_723_161_257_000_000_011, 1_900_000_000_000_400_013],
        ),
        quote(7, 52, 45, ([150, 151], [None, None]), [4, 5, 6]),
        quote(65_535, 53, 2, ([-5, -4], [Some(0), Some(0)]), [7, 8, 9]),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(b: &Bytes) -> String {
    String::from_utf8(b.to_vec()).expect("JSON frames are UTF-8")
}

fn fixed(mantissa: i64, decimals: u8) -> String {
    Fixed { mantissa, decimals }.to_string()
}

/// A size as the decoder gives it: its text and its mantissa, or two nulls
/// when it is unknown.
fn size(mantissa: Option<i64>, decimals: u8) -> (Value, Value) {
    match mantissa {
        Some(m) => (fixed(m, decimals).into(), m.to_string().into()),
        None => (Value::Null, Value::Null),
    }
}

/// What the decoder must make of an update, computed here from the inputs,
/// not from the frames.
fn expected(s: &Sequenced, sym: &Sym) -> Value {
    let u = &s.update;
    let mut v = json!({
        "id": u.symbol,
        "symbol": sym.name,
        "seq": s.seq,
        "symbolSeq": s.symbol_seq,
        "exchangeTs": u.exchange_ts_ns.to_string(),
        "receiveTs": u.receive_ts_ns.to_string(),
        "publishTs": s.publish_ts_ns.to_string(),
    });
    let (pd, sd) = (sym.price_decimals, sym.size_decimals);
    let extra = match u.kind {
        UpdateKind::Quote {
            bid_px,
            bid_sz,
            ask_px,
            ask_sz,
        } => {
            let ((bid_size, bid_sz), (ask_size, ask_sz)) = (size(bid_sz, sd), size(ask_sz, sd));
            json!({
                "type": "quote",
                "bid": fixed(bid_px, pd), "bidSize": bid_size,
                "ask": fixed(ask_px, pd), "askSize": ask_size,
                "bidPx": bid_px.to_string(), "bidSz": bid_sz,
                "askPx": ask_px.to_string(), "askSz": ask_sz,
            })
        }
        UpdateKind::Trade { px, sz, side } => json!({
            "type": "trade",
            "price": fixed(px, pd), "size": fixed(sz, sd), "side": side_name(side),
            "px": px.to_string(), "sz": sz.to_string(),
        }),
        UpdateKind::Status(status) => json!({
            "type": "status",
            "state": status.state(),
            "reason": if status.is_stale() { Value::from(status.reason()) } else { Value::Null },
        }),
        UpdateKind::Level { .. } => panic!("the fixture has no books"),
    };
    if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
        v.extend(extra);
    }
    v
}

fn fixture() -> String {
    let mut messages = Vec::new();
    for sym in SYMBOLS {
        messages.push(json!({
            "binary": hex(&frame_payload(&symbol_binary(sym.id, sym.name, sym.price_decimals, sym.size_decimals))),
            "json": text(&frame_payload(&symbol_json(sym.id, sym.name, sym.price_decimals, sym.size_decimals))),
            "expect": {
                "type": "symbol", "id": sym.id, "symbol": sym.name,
                "priceDecimals": sym.price_decimals, "sizeDecimals": sym.size_decimals,
            },
        }));
    }
    let mut encoder = FrameEncoder::new();
    for s in updates() {
        let sym = SYMBOLS
            .iter()
            .find(|d| d.id == s.update.symbol)
            .expect("a defined symbol");
        let frames = encoder.encode(
            &s,
            SymbolFormat {
                name: sym.name,
                price_decimals: sym.price_decimals,
                size_decimals: sym.size_decimals,
            },
        );
        messages.push(json!({
            "binary": hex(&frame_payload(&frames.binary)),
            "json": text(&frame_payload(&frames.json)),
            "expect": expected(&s, sym),
        }));
    }
    // Books: a top-10 snapshot of EDGE (4 and 3 decimals), then changes of
    // the full book with a removal (size 0).
    let edge = &SYMBOLS[2];
    let format = SymbolFormat {
        name: edge.name,
        price_decimals: edge.price_decimals,
        size_decimals: edge.size_decimals,
    };
    for (depth, snapshot, seq, bids, asks) in [
        (
            10u16,
            true,
            90u64,
            vec![(1_234_500i64, 1_500i64), (1_234_000, 20)],
            vec![(1_235_000i64, 7i64)],
        ),
        (
            0,
            false,
            91,
            vec![(1_234_500, 0)],
            vec![(1_235_000, 8), (1_236_000, 1)],
        ),
    ] {
        let head = BookHead {
            symbol: edge.id,
            seq,
            book_seq: seq - 80,
            exchange_ts_ns: 1_723_161_256_298_000_000,
            receive_ts_ns: 1_723_161_255_030_314_667,
            publish_ts_ns: 1_900_000_000_000_000_123,
            depth,
            snapshot,
        };
        let frames = encoder.encode_book(
            &head,
            BookLevels {
                bids: &bids,
                asks: &asks,
            },
            format,
        );
        let levels = |l: &[(i64, i64)]| -> Vec<[String; 2]> {
            l.iter()
                .map(|&(p, q)| {
                    [
                        Fixed {
                            mantissa: p,
                            decimals: edge.price_decimals,
                        }
                        .to_string(),
                        Fixed {
                            mantissa: q,
                            decimals: edge.size_decimals,
                        }
                        .to_string(),
                    ]
                })
                .collect()
        };
        messages.push(json!({
            "binary": hex(&frame_payload(&frames.binary)),
            "json": text(&frame_payload(&frames.json)),
            "expect": {
                "type": "book", "id": edge.id, "symbol": edge.name,
                "channel": if depth == 0 { "book".to_owned() } else { format!("book.{depth}") },
                "depth": depth, "seq": seq, "bookSeq": seq - 80, "snapshot": snapshot,
                "exchangeTs": "1723161256298000000", "receiveTs": "1723161255030314667",
                "publishTs": "1900000000000000123",
                "bids": levels(&bids), "asks": levels(&asks),
            },
        }));
    }
    messages.extend(candle_messages(&mut encoder));
    let doc = json!({
        "about": "Generated by tests/web_fixture.rs from tickwire's encoder; do not edit. \
                  Payloads as a WebSocket client receives them (binary as hex), in order \
                  (definitions first), with the values they decode to. Integers too large \
                  for a double are strings.",
        "messages": messages,
    });
    serde_json::to_string_pretty(&doc).expect("serializable") + "\n"
}

/// Candles of EDGE (4 and 3 decimals): a closed 1m bar with a negative
/// low and a volume past i64, then a 1s snapshot of a closed and an open
/// bar.
fn candle_messages(encoder: &mut FrameEncoder) -> Vec<Value> {
    let edge = &SYMBOLS[2];
    let format = SymbolFormat {
        name: edge.name,
        price_decimals: edge.price_decimals,
        size_decimals: edge.size_decimals,
    };
    let bar = |start: u64, volume: i128| Bar {
        start_ts_ns: start,
        open: 1_234_500,
        high: 1_240_000,
        low: -5,
        close: 1_235_000,
        volume,
        trades: 17,
    };
    let head = |interval, seq: u64| CandleHead {
        symbol: edge.id,
        interval,
        seq,
        candle_seq: seq - 90,
        exchange_ts_ns: 1_723_161_300_019_000_001,
        receive_ts_ns: 1_723_161_298_770_000_003,
        publish_ts_ns: 1_900_000_000_000_400_005,
    };
    let expect_bar = |b: &Bar, closed: bool| {
        let px = |m| {
            Fixed {
                mantissa: m,
                decimals: edge.price_decimals,
            }
            .to_string()
        };
        json!({
            "startMs": b.start_ts_ns / 1_000_000,
            "open": px(b.open), "high": px(b.high), "low": px(b.low), "close": px(b.close),
            "volume": WideFixed { mantissa: b.volume, decimals: edge.size_decimals }.to_string(),
            "trades": b.trades, "closed": closed,
        })
    };
    let expect = |kind: &str, h: &CandleHead, snapshot: bool, bars: Value| {
        let interval = INTERVALS[h.interval].0;
        json!({
            "type": kind, "id": edge.id, "symbol": edge.name, "interval": interval,
            "channel": format!("candles.{interval}"), "seq": h.seq, "candleSeq": h.candle_seq,
            "exchangeTs": "1723161300019000001", "receiveTs": "1723161298770000003",
            "publishTs": "1900000000000400005", "snapshot": snapshot, "bars": bars,
        })
    };
    let wide = i128::from(i64::MAX) * 5 + 3;
    let one = bar(1_723_161_240_000_000_000, wide);
    let h = head(1, 95);
    let frames = encoder.encode_candle(&h, &one, true, format);
    let mut out = vec![json!({
        "binary": hex(&frame_payload(&frames.binary)),
        "json": text(&frame_payload(&frames.json)),
        "expect": expect("candle", &h, false, json!([expect_bar(&one, true)])),
    })];
    let (a, b) = (
        bar(1_723_161_299_000_000_000, 1),
        bar(1_723_161_300_000_000_000, 0),
    );
    let h = head(0, 96);
    let frames = candles_frames(&h, &[(a, true), (b, false)], true, format);
    out.push(json!({
        "binary": hex(&frame_payload(&frames.binary)),
        "json": text(&frame_payload(&frames.json)),
        "expect": expect("candles", &h, true, json!([expect_bar(&a, true), expect_bar(&b, false)])),
    }));
    out
}

#[test]
fn committed_fixture_matches_the_encoder() {
    let now = fixture();
    if std::env::var_os("TICKWIRE_BLESS").is_some() {
        std::fs::write(FIXTURE, &now).expect("write the fixture");
        return;
    }
    let committed = std::fs::read_to_string(FIXTURE).unwrap_or_default();
    assert!(
        committed == now,
        "{FIXTURE} differs from what the encoder produces now (or is missing): \
         if the wire changed on purpose, run `TICKWIRE_BLESS=1 cargo test --test web_fixture`, \
         check `node --test web/test/`, and commit both"
    );
}
