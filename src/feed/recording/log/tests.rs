use super::decode::Cursor;
use super::*;
use crate::feed::normalize::RejectTally;
use crate::update::{Side, SymbolStatus, Update, UpdateKind};

/// A small deterministic generator (SplitMix64), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn symbols() -> Vec<LogSymbol> {
    ["BTCUSDT", "ETHUSDT", "BTC-USD"]
        .iter()
        .enumerate()
        .map(|(i, name)| LogSymbol {
            id: i as u32 * 7,
            name: (*name).to_owned(),
            price_decimals: 8,
            size_decimals: 3 + i as u8,
        })
        .collect()
}

/// `n` updates over three symbols, with extremes mixed in.
fn stream(n: usize, seed: u64) -> Vec<Sequenced> {
    let mut rng = Rng(seed);
    let syms = symbols();
    let mut symbol_seqs = [0u64; 3];
    let mut t = 1_723_161_253_937_085_768u64;
    (0..n)
        .map(|i| {
            let s = rng.below(3) as usize;
            symbol_seqs[s] += 1 + rng.below(2);
            t += rng.below(5_000_000);
            let wild = i % 97 == 13;
            let px = 6_183_763_000_000 + rng.below(1_000_000) as i64;
            let kind = match (rng.below(3), wild) {
                // A live venue's statuses are recorded too (they keep the
                // symbol's sequence; the deltas must not mind).
                _ if i % 31 == 7 => UpdateKind::Status(
                    [
                        SymbolStatus::Live,
                        SymbolStatus::StaleGap,
                        SymbolStatus::StaleDisconnected,
                        SymbolStatus::StaleSilent,
                    ][rng.below(4) as usize],
                ),
                (_, true) => UpdateKind::Quote {
                    bid_px: i64::MIN,
                    bid_sz: Some(i64::MAX),
                    ask_px: i64::MAX,
                    ask_sz: Some(-1),
                },
                (0, _) => UpdateKind::Trade {
                    px,
                    sz: rng.below(1 << 40) as i64,
                    side: [Side::Unknown, Side::Buy, Side::Sell][rng.below(3) as usize],
                },
                // A size the venue did not give, one time in five.
                _ => UpdateKind::Quote {
                    bid_px: px,
                    bid_sz: Some(rng.below(1 << 30) as i64).filter(|_| rng.below(5) != 0),
                    ask_px: px + 1 + rng.below(100) as i64,
                    ask_sz: Some(rng.below(1 << 30) as i64).filter(|_| rng.below(5) != 0),
                },
            };
            Sequenced {
                update: Update {
                    symbol: syms[s].id,
                    kind,
                    exchange_ts_ns: if wild { 0 } else { t - 1_270_000_000 },
                    receive_ts_ns: if wild { u64::MAX } else { t },
                    origin_seq: 0,
                    origin_publish_ts_ns: 0,
                },
                seq: i as u64 + 1,
                symbol_seq: symbol_seqs[s],
                publish_ts_ns: t + rng.below(100_000),
            }
        })
        .collect()
}

/// Writes `updates` with blocks closed every `per_block` updates; returns
/// the log and the byte offset where each block ends.
fn write(updates: &[Sequenced], per_block: usize) -> (Vec<u8>, Vec<usize>) {
    let syms = symbols();
    let mut w = LogWriter::new(Vec::new(), 42).unwrap();
    let mut ends = Vec::new();
    for (i, u) in updates.iter().enumerate() {
        let sym = syms.iter().find(|s| s.id == u.update.symbol).unwrap();
        w.push(sym, u).unwrap();
        if (i + 1) % per_block == 0 {
            w.finish_block().unwrap();
            ends.push(w.out.len());
        }
    }
    w.finish_block().unwrap();
    if ends.last() != Some(&w.out.len()) {
        ends.push(w.out.len());
    }
    (w.finish().unwrap(), ends)
}

fn updates_of(entries: &[Entry]) -> Vec<Sequenced> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Update(u) => Some(*u),
            Entry::Symbol(_) => None,
        })
        .collect()
}

#[test]
fn round_trips_every_field_and_extremes() {
    let updates = stream(5000, 1);
    let (log, ends) = write(&updates, 700);
    let (entries, stats) = read_entries(&log).unwrap();
    assert_eq!(updates_of(&entries), updates);
    assert_eq!(stats.blocks as usize, ends.len());
    assert_eq!(
        stats.corrupt + stats.skipped_bytes + stats.torn_tail_bytes,
        0
    );
    // Every block defines the symbols it uses before their first update.
    let defs = entries
        .iter()
        .filter(|e| matches!(e, Entry::Symbol(_)))
        .count();
    assert!(defs >= ends.len() && defs <= 3 * ends.len(), "{defs}");
    // Compact: well under the 80 bytes of a binary quote frame.
    let per_update = log.len() as f64 / updates.len() as f64;
    assert!(per_update < 40.0, "{per_update} bytes per update");
}

#[test]
fn header_is_checked() {
    let (log, _) = write(&stream(10, 2), 5);
    // TC0: not a log.
    assert!(matches!(
        LogReader::new(&b"{\"a\":1}\n"[..]),
        Err(LogError::Magic)
    ));
    assert!(matches!(LogReader::new(&[][..]), Err(LogError::Magic)));
    // TC1: truncated header.
    assert!(matches!(LogReader::new(&log[..12]), Err(LogError::Header)));
    // TC2: header CRC.
    let mut bad = log.clone();
    bad[14] ^= 1;
    assert!(matches!(LogReader::new(&bad[..]), Err(LogError::Header)));
    // TC3: a future version, and version 0, with a valid CRC.
    for version in [VERSION + 1, 0] {
        let other = with_version(&log[..HEADER_LEN], version);
        assert!(
            matches!(LogReader::new(&other[..]), Err(LogError::Version(v)) if v == version),
            "{version}"
        );
    }
    let r = LogReader::new(&log[..]).unwrap();
    assert_eq!((r.started_ns, r.version), (42, VERSION));
}

/// `log` with its header's version changed, and the header CRC made good.
fn with_version(log: &[u8], version: u16) -> Vec<u8> {
    let mut out = log.to_vec();
    out[8..10].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&out[..20]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn unknown_sizes_round_trip_without_bytes_of_their_own() {
    let sym = &symbols()[0];
    let quote = |bid_sz, ask_sz| Sequenced {
        update: Update {
            symbol: sym.id,
            kind: UpdateKind::Quote {
                bid_px: 10,
                bid_sz,
                ask_px: 11,
                ask_sz,
            },
            exchange_ts_ns: 0,
            receive_ts_ns: 0,
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        },
        seq: 0,
        symbol_seq: 0,
        publish_ts_ns: 0,
    };
    // (bid size, ask size, tag, record bytes after the tag): the id, five
    // zero deltas, the bid, and the ask's delta against the bid, 1 byte
    // each (8), plus 1 byte per known size below 64 (zigzag 2).
    for (bid_sz, ask_sz, tag, len) in [
        (Some(1), Some(1), 0x02, 10),
        (None, Some(1), 0x03, 9),
        (Some(1), None, 0x04, 9),
        (None, None, 0x05, 8),
        // TC4: a real zero is a number, not unknown.
        (Some(0), Some(0), 0x02, 10),
    ] {
        let mut w = LogWriter::new(Vec::new(), 0).unwrap();
        w.push(sym, &quote(bid_sz, ask_sz)).unwrap();
        let log = w.finish().unwrap();
        // Header, block header, the symbol's definition (tag, id, two
        // decimals, name length, name), then the quote.
        let at = HEADER_LEN + BLOCK_HEADER_LEN + 5 + sym.name.len();
        assert_eq!(log[at], tag, "{bid_sz:?} {ask_sz:?}");
        assert_eq!(log.len() - at - 1, len, "{bid_sz:?} {ask_sz:?}");
        let (entries, _) = read_entries(&log).unwrap();
        assert_eq!(updates_of(&entries), [quote(bid_sz, ask_sz)]);
    }
}

#[test]
fn version_1_logs_stay_readable() {
    // TC0: a log written by the version 1 writer (`tickwire convert
    // tests/data/coinbase-exchange.jsonl`, before version 2): its quote
    // without sizes was recorded, and is read back, as sizes of 0.
    let v1 = include_bytes!("../../../../tests/data/log-v1-coinbase-exchange.twlog");
    let r = LogReader::new(&v1[..]).unwrap();
    assert_eq!(r.version, 1);
    let (entries, stats) = read_entries(v1).unwrap();
    assert_eq!((stats.blocks, stats.corrupt), (1, 0));
    let kinds: Vec<UpdateKind> = updates_of(&entries).iter().map(|u| u.update.kind).collect();
    assert_eq!(kinds.len(), 4);
    assert_eq!(
        kinds[0],
        UpdateKind::Quote {
            bid_px: 128_504_000_000,
            bid_sz: Some(46_688_654),
            ask_px: 128_527_000_000,
            ask_sz: Some(156_637_040),
        }
    );
    assert!(matches!(
        kinds[1],
        UpdateKind::Quote {
            bid_sz: Some(0),
            ask_sz: Some(0),
            ..
        }
    ));
    // TC1: the tags of unknown sizes are not version 1's: a file that says
    // version 1 and holds one is corrupt there, and only there.
    let updates: Vec<Sequenced> = stream(40, 9)
        .into_iter()
        .filter(|u| !matches!(u.update.kind, UpdateKind::Status(_)))
        .collect();
    let unknown = |u: &Sequenced| {
        matches!(
            u.update.kind,
            UpdateKind::Quote { bid_sz: None, .. } | UpdateKind::Quote { ask_sz: None, .. }
        )
    };
    let (log, _) = write(&updates, 1);
    let (entries, stats) = read_entries(&with_version(&log, 1)).unwrap();
    let want: Vec<Sequenced> = updates.iter().filter(|u| !unknown(u)).copied().collect();
    assert!(want.len() < updates.len() && !want.is_empty());
    assert_eq!(updates_of(&entries), want);
    // Neighbouring bad blocks are one damaged place.
    assert!(stats.corrupt > 0);
}

#[test]
fn truncation_anywhere_yields_exactly_the_whole_blocks() {
    let updates = stream(240, 3);
    let (log, ends) = write(&updates, 20);
    for cut in HEADER_LEN..=log.len() {
        let (entries, stats) = read_entries(&log[..cut]).unwrap();
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        assert_eq!(
            updates_of(&entries),
            updates[..(whole * 20).min(updates.len())],
            "cut at {cut}"
        );
        let last_end = ends[..whole].last().copied().unwrap_or(HEADER_LEN);
        assert_eq!(stats.torn_tail_bytes as usize, cut - last_end, "cut {cut}");
        assert_eq!(stats.corrupt, 0, "cut {cut}");
    }
}

#[test]
fn any_corrupt_byte_loses_only_its_block() {
    let updates = stream(200, 4);
    let (log, ends) = write(&updates, 20);
    let mut starts = vec![HEADER_LEN];
    starts.extend_from_slice(&ends[..ends.len() - 1]);
    let mut rng = Rng(99);
    for at in HEADER_LEN..log.len() {
        let mut bad = log.clone();
        bad[at] ^= 1 + rng.below(255) as u8;
        let (entries, stats) = read_entries(&bad).unwrap();
        let block = starts.iter().rposition(|&s| s <= at).unwrap();
        let mut want = updates.clone();
        want.drain(block * 20..((block + 1) * 20).min(updates.len()));
        assert_eq!(updates_of(&entries), want, "byte {at}");
        if block + 1 == starts.len() && stats.corrupt == 0 {
            // A corrupt length in the last block can make it look torn.
            assert!(stats.torn_tail_bytes > 0, "byte {at}");
        } else {
            assert_eq!(stats.corrupt, 1, "byte {at}");
        }
    }
}

#[test]
fn damage_made_of_block_headers_costs_bounded_work_and_loses_nothing_else() {
    // 4 MiB of headers that each pass the marker, length and count checks
    // and claim 1 MiB: checking every candidate's CRC would cost 4 TiB of
    // CRC; the search's budget keeps it to a few hundred MiB. Then 3 MiB of
    // zeros (let go as the search passes, not held whole), then a block.
    let updates = stream(60, 5);
    let (log, ends) = write(&updates, 20);
    let mut bad = log[..ends[0]].to_vec();
    let mut fake = BLOCK_MARKER.to_vec();
    fake.extend_from_slice(&(1u32 << 20).to_le_bytes());
    fake.extend_from_slice(&1u32.to_le_bytes());
    fake.extend_from_slice(&0u32.to_le_bytes());
    for _ in 0..(4 << 20) / fake.len() {
        bad.extend_from_slice(&fake);
    }
    bad.extend(std::iter::repeat_n(0u8, 3 << 20));
    bad.extend_from_slice(&log[ends[0]..]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read_entries(&bad));
    });
    // A deadline, so that a regression fails here instead of running for
    // hours.
    let (entries, stats) = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the reader finished")
        .unwrap();
    assert_eq!(updates_of(&entries), updates, "every block but the damage");
    assert_eq!(stats.corrupt, 1);
}

#[test]
fn varints_refuse_overlong_and_overflowing_encodings() {
    let mut c = Cursor {
        bytes: &[0xff; 11],
        at: 0,
    };
    assert_eq!(c.varint(), None);
    let mut max = Vec::new();
    put_varint(&mut max, u64::MAX);
    assert_eq!(max.len(), 10);
    let mut c = Cursor { bytes: &max, at: 0 };
    assert_eq!(c.varint(), Some(u64::MAX));
    max[9] = 2;
    let mut c = Cursor { bytes: &max, at: 0 };
    assert_eq!(c.varint(), None);
    for v in [0i64, 1, -1, i64::MIN, i64::MAX] {
        assert_eq!(unzigzag(zigzag(v)), v);
    }
}

#[test]
fn looped_sequences_continue_per_symbol() {
    let mut seqs = LoopedSequences::default();
    let pass = |seqs: &mut LoopedSequences| -> Vec<u64> {
        let out = [(0, 1), (1, 1), (0, 2), (0, 3), (1, 2), (2, 0)]
            .iter()
            .map(|&(symbol, origin_seq)| {
                let mut u = stream(1, 5)[0].update;
                u.symbol = symbol;
                u.origin_seq = origin_seq;
                seqs.apply(&mut u);
                u.origin_seq
            })
            .collect();
        seqs.next_pass();
        out
    };
    assert_eq!(pass(&mut seqs), [1, 1, 2, 3, 2, 0]);
    // Symbol 0 ended at 3, symbol 1 at 2; 0 (numbered here) stays 0.
    assert_eq!(pass(&mut seqs), [4, 3, 5, 6, 4, 0]);
    assert_eq!(pass(&mut seqs), [7, 5, 8, 9, 6, 0]);
}

/// The fuzz target's body over inputs derived from a real log:
/// truncated, bit-flipped, spliced, and random. A stable stand-in for
/// `cargo fuzz run log_reader`.
#[test]
fn fuzz_body_survives_mutated_logs() {
    let (log, _) = write(&stream(300, 6), 37);
    let mut rng = Rng(7);
    fuzz_read(&log);
    for round in 0..3000 {
        let mut input = log.clone();
        match round % 5 {
            0 => input.truncate(rng.below(log.len() as u64) as usize),
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(input.len() as u64) as usize;
                    input[at] = rng.next() as u8;
                }
            }
            2 => {
                let a = rng.below(log.len() as u64) as usize;
                let b = rng.below(log.len() as u64) as usize;
                let (a, b) = (a.min(b), a.max(b));
                input.splice(a..a, log[a..b].iter().copied());
            }
            3 => input = (0..rng.below(600)).map(|_| rng.next() as u8).collect(),
            _ => {
                // A huge declared length right after the header.
                input.truncate(HEADER_LEN);
                input.extend_from_slice(&BLOCK_MARKER);
                input.extend_from_slice(&(rng.next() as u32).to_le_bytes());
                input.extend((0..rng.below(64)).map(|_| rng.next() as u8));
            }
        }
        fuzz_read(&input);
        // Blocks cut out of a log and fed alone (no header) must not panic.
        fuzz_read(&input[input.len().min(HEADER_LEN)..]);
    }
}

#[test]
fn log_feed_serves_recorded_numbers_paced_by_publish_time() {
    use crate::feed::FeedStats;
    use crate::symbols::{Normalizer, SymbolTable};
    let mut updates = stream(6, 8);
    updates[1].publish_ts_ns = 0;
    updates[2].publish_ts_ns = 0;
    updates[2].update.receive_ts_ns = 0;
    updates[2].update.exchange_ts_ns = 77;
    let (log, _) = write(&updates, 100);
    let table = SymbolTable::new();
    // ETHUSDT (log id 7) is already served with other decimals.
    table.intern("ETHUSDT", 2, 2).unwrap();
    let mut normalizer = Normalizer::new(table.clone());
    let stats = FeedStats::default();
    let mut feed = LogFeed::open(&log[..], "test".into()).unwrap();
    let mut out = Vec::new();
    let mut rejections = RejectTally::default();
    let mut next = |out: &mut Vec<_>| {
        feed.next_block(&mut normalizer, &stats, &mut rejections, true, out)
            .unwrap()
    };
    assert!(next(&mut out));
    assert!(!next(&mut out));
    let by_log_id = |id: u32| symbols().into_iter().find(|s| s.id == id).unwrap().name;
    let served: Vec<&Sequenced> = updates
        .iter()
        .filter(|u| by_log_id(u.update.symbol) != "ETHUSDT")
        .collect();
    assert_eq!(out.len(), served.len());
    for (t, s) in out.iter().zip(served) {
        // TC0: the server's own id for the name, the recorded symbol_seq as
        // origin_seq, everything else as recorded.
        let def = table.get(t.update.symbol).unwrap();
        assert_eq!(&*def.name, by_log_id(s.update.symbol));
        assert_eq!(t.update.origin_seq, s.symbol_seq);
        assert_eq!(
            (
                t.update.kind,
                t.update.exchange_ts_ns,
                t.update.receive_ts_ns
            ),
            (
                s.update.kind,
                s.update.exchange_ts_ns,
                s.update.receive_ts_ns
            )
        );
        // TC1: paced by publish time, else receive time, else exchange time.
        let want = [
            s.publish_ts_ns,
            s.update.receive_ts_ns,
            s.update.exchange_ts_ns,
        ]
        .into_iter()
        .find(|&t| t != 0);
        assert_eq!(t.pace_ns, want);
    }
    // TC2: the conflicting symbol's updates are rejected and counted.
    let rejected = updates.len() - out.len();
    assert!(rejected > 0);
    assert_eq!(stats.rejected.get(), rejected as u64);
    assert_eq!(rejections.total(), rejected as u64);
}

#[test]
fn log_feed_rejects_negative_prices_and_sizes() {
    use crate::feed::normalize::Reason;
    use crate::feed::FeedStats;
    use crate::symbols::{Normalizer, SymbolTable};
    let good = stream(40, 9)
        .into_iter()
        .filter(|u| !crate::feed::normalize::has_negative(&u.update.kind))
        .take(3)
        .collect::<Vec<_>>();
    let template = good[0];
    let with = |kind| Sequenced {
        update: Update {
            kind,
            ..template.update
        },
        ..template
    };
    let quote = |bid_px, bid_sz, ask_px, ask_sz| {
        with(UpdateKind::Quote {
            bid_px,
            bid_sz: Some(bid_sz),
            ask_px,
            ask_sz: Some(ask_sz),
        })
    };
    let trade = |px, sz| {
        with(UpdateKind::Trade {
            px,
            sz,
            side: Side::Buy,
        })
    };
    let cases = [
        // TC0..TC3: each field of a quote below zero.
        (quote(-1, 1, 2, 1), false),
        (quote(1, -1, 2, 1), false),
        (quote(1, 1, -2, 1), false),
        (quote(1, 1, 2, -1), false),
        // TC4, TC5: a trade's price or size below zero.
        (trade(-5, 1), false),
        (trade(5, -1), false),
        // TC6: empty sides (size 0) and a status are served.
        (quote(1, 0, 2, 0), true),
        (with(UpdateKind::Status(SymbolStatus::Live)), true),
    ];
    let mut updates = good.clone();
    updates.extend(cases.iter().map(|(u, _)| *u));
    let (log, _) = write(&updates, 4);
    let mut normalizer = Normalizer::new(SymbolTable::new());
    let stats = FeedStats::default();
    let mut rejections = RejectTally::default();
    let mut feed = LogFeed::open(&log[..], "neg".into()).unwrap();
    let mut out = Vec::new();
    while feed
        .next_block(&mut normalizer, &stats, &mut rejections, true, &mut out)
        .unwrap()
    {}
    let kinds: Vec<UpdateKind> = out.iter().map(|t| t.update.kind).collect();
    let want: Vec<UpdateKind> = good
        .iter()
        .map(|u| u.update.kind)
        .chain(cases.iter().filter(|c| c.1).map(|c| c.0.update.kind))
        .collect();
    assert_eq!(kinds, want);
    assert_eq!(stats.rejected.get(), 6);
    let mut negative_only = RejectTally::default();
    // The first negative update is the last of the first block of four.
    negative_only.add(Reason::Negative, 1, 6);
    assert_eq!(rejections, negative_only);
}

#[test]
fn book_levels_round_trip_with_their_flags_and_need_version_3() {
    let sym = &symbols()[0];
    let level = |side, px, sz, flags, symbol_seq| Sequenced {
        update: Update {
            symbol: sym.id,
            kind: UpdateKind::Level {
                side,
                px,
                sz,
                flags,
            },
            exchange_ts_ns: 7,
            receive_ts_ns: 8,
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        },
        seq: 3,
        symbol_seq,
        publish_ts_ns: 9,
    };
    use crate::update::{level_flags::*, BookSide::*};
    let mut updates = vec![
        // TC0: a snapshot of three levels, then a change, between quotes.
        level(Bid, 6_183_763_000_000, 378_826_000, RESET, 1),
        level(Bid, 6_183_762_000_000, 0, 0, 1),
        level(Ask, 6_183_764_000_000, 1, LAST, 1),
    ];
    updates.extend(
        stream(3, 5)
            .into_iter()
            .filter(|u| u.update.symbol == sym.id),
    );
    updates.push(level(Ask, 6_183_765_000_000, 2, RESET | LAST, 2));
    // TC1: the book_gap status.
    let mut gap = updates[0];
    gap.update.kind = UpdateKind::Status(SymbolStatus::StaleBookGap);
    updates.push(gap);
    let (log, _) = write(&updates, 100);
    let (entries, stats) = read_entries(&log).unwrap();
    assert_eq!(updates_of(&entries), updates);
    assert_eq!(stats.corrupt, 0);
    // TC2: the same bytes under a version 2 header are damage, not levels.
    let old = with_version(&log, 2);
    let (entries, stats) = read_entries(&old).unwrap();
    assert!(updates_of(&entries).is_empty());
    assert_eq!(stats.corrupt, 1);
}

#[test]
fn skipping_to_a_time_passes_over_whole_blocks_and_loses_nothing_at_or_after_it() {
    let all = stream(5_000, 11);
    let (log, _) = write(&all, 250);
    let times: Vec<u64> = all.iter().map(|u| pace_ns(u).unwrap()).collect();
    let wanted_from = |from: u64| -> Vec<Sequenced> {
        all.iter()
            .copied()
            .filter(|u| pace_ns(u).unwrap() >= from)
            .collect()
    };
    // TC: before the first update, in the middle of a block, on a block's
    // first update, past the last.
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    for (from, skips) in [
        (0, false),
        (first, false),
        (times[2_600], true),
        (times[2_750], true),
        (last + 1, true),
    ] {
        let mut r = LogReader::new(&log[..]).unwrap();
        let passed = r.skip_before(from).unwrap();
        let mut rest = Vec::new();
        while let Some(block) = r.next_block().unwrap() {
            rest.extend(updates_of(&block));
        }
        assert_eq!(passed as usize + rest.len(), all.len(), "{from}");
        assert_eq!(passed > 0, skips, "{from}: {passed} passed over");
        // Whole blocks only: what is passed over is a multiple of 250.
        assert_eq!(passed % 250, 0);
        let kept: Vec<Sequenced> = rest
            .into_iter()
            .filter(|u| pace_ns(u).unwrap() >= from)
            .collect();
        assert_eq!(kept, wanted_from(from), "{from}");
        assert_eq!(r.stats().updates, all.len() as u64);
    }
}

#[test]
fn the_block_index_starts_a_reader_at_the_first_block_a_time_needs() {
    let all = stream(5_000, 12);
    let (log, ends) = write(&all, 250);
    let scan = scan(&log[..]).unwrap();
    assert_eq!(scan.index.blocks(), ends.len());
    assert_eq!(scan.updates + scan.book_levels, all.len() as u64);
    assert_eq!(scan.symbols.len(), 3);
    let times: Vec<u64> = all.iter().map(|u| pace_ns(u).unwrap()).collect();
    assert_eq!(scan.first_ts, times.iter().min().copied());
    assert_eq!(scan.last_ts, times.iter().max().copied());
    for from in [
        0,
        times[0],
        times[1_234],
        times[2_500],
        times[4_999],
        u64::MAX,
    ] {
        let at = scan.index.start_for(from) as usize;
        // Block boundaries only: the header's end, or a block's end.
        assert!(at == HEADER_LEN || ends.contains(&at), "{from}: {at}");
        // The header, then the file from there, as the replay opens it.
        let mut from_there = log[..HEADER_LEN].to_vec();
        from_there.extend_from_slice(&log[at..]);
        let (entries, _) = read_entries(&from_there).unwrap();
        let got: Vec<Sequenced> = updates_of(&entries)
            .into_iter()
            .filter(|u| pace_ns(u).unwrap() >= from)
            .collect();
        let want: Vec<Sequenced> = all
            .iter()
            .copied()
            .filter(|u| pace_ns(u).unwrap() >= from)
            .collect();
        assert_eq!(got, want, "{from}");
        // And nothing more was read than the blocks before it allow: the
        // block before the start holds no update at or after `from`.
        if let Some(i) = ends.iter().position(|&e| e == at) {
            assert!(times[i * 250..(i + 1) * 250].iter().all(|&t| t < from));
        }
    }
    assert!(scan.index.start_for(times[4_000]) >= ends[10] as u64);
}
