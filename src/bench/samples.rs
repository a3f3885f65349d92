//! What a load thread samples from the server's bytes: the frames parsed
//! out of each read, per-connection sequence checks and counters, and the
//! thread's latency histograms. The frame loop here is the hot path of the
//! harness: no allocation, one clock read per socket read.

use hdrhistogram::Histogram;

use super::{Phase, Protocol};
use crate::update::now_ns;
use crate::wire::decode::offset;
use crate::wire::encode::{msg_type, BOOK_HEAD_LEN, QUOTE_LEN, STATUS_LEN, TRADE_LEN};
use crate::wire::frame;

/// Highest latency recorded, in µs (one hour); larger values saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Symbol ids above this are taken as a sign of a non-tickwire server.
const MAX_SYMBOL_ID: usize = 1 << 20;
/// Error texts kept for the report.
const MAX_ERRORS_KEPT: usize = 8;
/// Largest server message accepted; tickwire's are under 1 KiB.
pub(crate) const MAX_FRAME: usize = 1 << 20;

/// A server frame the harness cannot take.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FrameError {
    #[error("the server sent a masked frame")]
    Masked,
    #[error("unsupported frame opcode {0:#x} (fragmented or reserved)")]
    Opcode(u8),
    #[error("a {0}-byte message, larger than the harness accepts")]
    TooLarge(usize),
    #[error("not a tickwire message: {0}")]
    NotTickwire(String),
    #[error("a ts-prefix payload of {0} bytes, shorter than 16")]
    ShortPayload(usize),
}

/// One parsed frame header: first byte (FIN, RSV, opcode), header length,
/// payload length. A masked frame is refused at its second byte.
#[inline]
pub(crate) fn frame_header(bytes: &[u8]) -> Result<Option<(u8, usize, usize)>, FrameError> {
    let h = match frame::parse(bytes) {
        Some(h) if !h.masked => h,
        Some(_) => return Err(FrameError::Masked),
        None if frame::prefix(bytes).is_some_and(|p| p.masked) => return Err(FrameError::Masked),
        None => return Ok(None),
    };
    let len = h.payload_len as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(Some((bytes[0], h.header_len, len)))
}

/// One compressed message in this many is inflated (`--deflate`).
pub const INFLATE_ONE_IN: u64 = 32;

/// A permessage-deflate message inflated.
fn inflate(data: &[u8]) -> Result<Vec<u8>, FrameError> {
    crate::wire::deflate::inflate(data, MAX_FRAME)
        .map_err(|e| FrameError::NotTickwire(e.to_string()))
}

/// A microsecond histogram with 3 significant digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts (1 ≤ low, 2·low ≤ high).
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| unreachable!())
}

/// Counters and sequence state of one connection.
#[derive(Debug, Clone, Default)]
pub struct ConnStats {
    /// Market-data messages over the whole run (from subscribe to stop).
    pub updates_total: u64,
    /// Market-data messages during the measured window.
    pub updates_measured: u64,
    /// Their bytes on the wire, WebSocket headers included.
    pub bytes_measured: u64,
    /// Symbol definitions received.
    pub definitions: u64,
    /// Per-symbol sequence jumps (conflation or loss), and the updates they skipped.
    pub gaps: u64,
    pub missed: u64,
    /// A per-symbol sequence lower than one already seen: a bug.
    pub reorders: u64,
    /// A per-symbol sequence equal to the last one: a bug.
    pub duplicates: u64,
    /// `conflated` notices from the server.
    pub conflated_notices: u64,
    /// Compressed (permessage-deflate) messages, and those inflated.
    pub compressed: u64,
    pub inflated: u64,
    /// Stale / live status messages (upstream feeds only).
    pub status_notices: u64,
    /// `error` messages from the server.
    pub server_errors: u64,
    /// The close code the server sent, if it closed.
    pub close_code: Option<u16>,
    pub disconnected: bool,
    pub protocol_error: Option<String>,
    last_symbol_seq: Vec<u64>,
}

/// One load thread's measurements.
#[derive(Debug, Clone)]
pub(crate) struct ThreadStats {
    protocol: Protocol,
    pub clients: Vec<ConnStats>,
    /// Receive time − publish timestamp, µs, normal clients, measured window.
    pub publish: Histogram<u64>,
    /// Receive time − feed receive timestamp, µs (tickwire only).
    pub receive: Histogram<u64>,
    /// Receive time − publish timestamp of the slow clients.
    pub slow_publish: Histogram<u64>,
    /// Timestamps ahead of the local clock (recorded as 0).
    pub negative_latency: u64,
    pub errors: Vec<String>,
}

/// What one pass over a read buffer found.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub consumed: usize,
    pub frames: u64,
    pub max_seq: u64,
    pub closed: bool,
    pub pong_needed: bool,
}

/// The fields of one market-data message the harness uses.
struct Tick {
    symbol: u32,
    seq: u64,
    /// The symbol's sequence; for a book message its `book_seq`, which a
    /// `book.N` channel skips through by design (no gap counted).
    symbol_seq: u64,
    book: bool,
    publish_ts: u64,
    receive_ts: Option<u64>,
}

impl ThreadStats {
    pub fn new(clients: usize, protocol: Protocol) -> Self {
        ThreadStats {
            protocol,
            clients: vec![ConnStats::default(); clients],
            publish: latency_histogram(),
            receive: latency_histogram(),
            slow_publish: latency_histogram(),
            negative_latency: 0,
            errors: Vec::new(),
        }
    }

    pub fn protocol_error(&mut self, slot: usize, e: FrameError) {
        let text = e.to_string();
        self.keep_error(text.clone());
        self.clients[slot].protocol_error = Some(text);
    }

    fn keep_error(&mut self, text: String) {
        if self.errors.len() < MAX_ERRORS_KEPT {
            self.errors.push(text);
        }
    }

    /// Parses every complete frame in `bytes` for connection `slot`.
    pub fn parse_frames(
        &mut self,
        slot: usize,
        bytes: &[u8],
        phase: Phase,
        slow: bool,
    ) -> Result<Parsed, FrameError> {
        let now = now_ns();
        let measuring = phase == Phase::Measure;
        let mut parsed = Parsed::default();
        while let Some((opcode, header, len)) = frame_header(&bytes[parsed.consumed..])? {
            let start = parsed.consumed + header;
            let Some(payload) = bytes.get(start..start + len) else {
                break;
            };
            parsed.consumed = start + len;
            parsed.frames += 1;
            let counted = self.clients[slot].updates_measured;
            let tick = match opcode {
                0x82 => self.binary(slot, payload, measuring)?,
                0x81 => self.text(slot, payload)?,
                // permessage-deflate (FIN, RSV1): counted as it comes; one
                // in INFLATE_ONE_IN inflated for its latency (inflating
                // each would measure this thread, not the server). Only
                // market data is large enough to come compressed.
                0xc1 | 0xc2 => {
                    let c = &mut self.clients[slot];
                    c.compressed += 1;
                    if c.compressed % INFLATE_ONE_IN == 1 {
                        c.inflated += 1;
                        let data = inflate(payload)?;
                        let tick = if opcode == 0xc2 {
                            self.binary(slot, &data, measuring)?
                        } else {
                            self.text(slot, &data)?
                        };
                        // Sampled: its sequence says nothing of the others.
                        tick.map(|t| Tick { book: true, ..t })
                    } else {
                        c.updates_total += 1;
                        if measuring {
                            c.updates_measured += 1;
                        }
                        None
                    }
                }
                0x88 => {
                    let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    self.clients[slot].close_code = code;
                    parsed.closed = true;
                    break;
                }
                0x89 => {
                    parsed.pong_needed = true;
                    None
                }
                0x8A => None,
                other => return Err(FrameError::Opcode(other)),
            };
            if let Some(t) = tick {
                parsed.max_seq = parsed.max_seq.max(t.seq);
                self.update(slot, &t, now, measuring, slow);
            }
            let c = &mut self.clients[slot];
            if c.updates_measured != counted {
                c.bytes_measured += (header + len) as u64;
            }
        }
        Ok(parsed)
    }

    fn binary(
        &mut self,
        slot: usize,
        p: &[u8],
        measuring: bool,
    ) -> Result<Option<Tick>, FrameError> {
        match self.protocol {
            // Only the header fields, at the offsets of `crate::wire::decode`,
            // rather than `decode::Decoder`: this runs for every frame of
            // every connection of a load thread, and the full decoder (a
            // definition lookup, every field checked and turned into
            // `Fixed`, a `serde_json::Value` per JSON message) costs about
            // 3x as much per binary quote and 2.4x per JSON one (measured
            // in a debug build, 200,000 quotes: 279 vs 813 ns, 7.2 vs
            // 17.4 µs), which would lower the rate one thread can measure.
            Protocol::TickwireBinary => match (p.first().copied(), p.len()) {
                (Some(msg_type::QUOTE), QUOTE_LEN) | (Some(msg_type::TRADE), TRADE_LEN) => {
                    let symbol = u32_at(p, offset::SYMBOL);
                    if symbol as usize > MAX_SYMBOL_ID {
                        return Err(FrameError::NotTickwire(format!("symbol id {symbol}")));
                    }
                    Ok(Some(Tick {
                        symbol,
                        seq: u64_at(p, offset::SEQ),
                        symbol_seq: u64_at(p, offset::SYMBOL_SEQ),
                        book: false,
                        receive_ts: Some(u64_at(p, offset::RECEIVE_TS)),
                        publish_ts: u64_at(p, offset::PUBLISH_TS),
                    }))
                }
                (Some(msg_type::BOOK), n) if n >= BOOK_HEAD_LEN => Ok(Some(Tick {
                    symbol: u32_at(p, offset::SYMBOL).min(MAX_SYMBOL_ID as u32),
                    seq: u64_at(p, offset::SEQ),
                    symbol_seq: u64_at(p, offset::SYMBOL_SEQ),
                    book: true,
                    receive_ts: Some(u64_at(p, offset::RECEIVE_TS)),
                    publish_ts: u64_at(p, offset::PUBLISH_TS),
                })),
                (Some(msg_type::SYMBOL), n) if n >= offset::symbol::NAME => {
                    self.clients[slot].definitions += 1;
                    Ok(None)
                }
                // A symbol's stale / live status: not an update, and it
                // carries the symbol's last sequence, not a new one.
                (Some(msg_type::STATUS), STATUS_LEN) => {
                    self.clients[slot].status_notices += 1;
                    Ok(None)
                }
                (t, n) => Err(FrameError::NotTickwire(format!(
                    "binary message of type {t:?} and {n} bytes"
                ))),
            },
            Protocol::TsPrefix if p.len() >= 16 => {
                let seq = u64_at(p, 8);
                Ok(Some(Tick {
                    symbol: 0,
                    seq,
                    symbol_seq: seq,
                    book: false,
                    publish_ts: u64_at(p, 0),
                    receive_ts: None,
                }))
            }
            Protocol::TsPrefix => Err(FrameError::ShortPayload(p.len())),
            Protocol::RawTcp => {
                let c = &mut self.clients[slot];
                c.updates_total += 1;
                c.updates_measured += u64::from(measuring);
                Ok(None)
            }
            Protocol::TickwireJson => Err(FrameError::NotTickwire(
                "a binary message on the JSON subprotocol".into(),
            )),
        }
    }

    fn text(&mut self, slot: usize, p: &[u8]) -> Result<Option<Tick>, FrameError> {
        if matches!(self.protocol, Protocol::TsPrefix | Protocol::RawTcp) {
            return Ok(None);
        }
        let kind = p
            .strip_prefix(b"{\"type\":\"")
            .and_then(|rest| rest.split(|&b| b == b'"').next());
        let c = &mut self.clients[slot];
        match kind {
            Some(kind @ (b"quote" | b"trade" | b"book")) => {
                let book = kind == b"book";
                let field = |key: &[u8]| {
                    json_u64(p, key).ok_or_else(|| {
                        FrameError::NotTickwire(String::from_utf8_lossy(p).into_owned())
                    })
                };
                return Ok(Some(Tick {
                    symbol: u32::try_from(field(b"\"id\":")?).unwrap_or(u32::MAX),
                    seq: field(b"\"seq\":")?,
                    symbol_seq: field(if book {
                        b"\"book_seq\":"
                    } else {
                        b"\"symbol_seq\":"
                    })?,
                    book,
                    receive_ts: Some(field(b"\"receive_ts\":")?),
                    publish_ts: field(b"\"publish_ts\":")?,
                }));
            }
            Some(b"symbol") => c.definitions += 1,
            Some(b"conflated") => c.conflated_notices += 1,
            Some(b"status") => c.status_notices += 1,
            Some(b"error") => {
                c.server_errors += 1;
                let text = String::from_utf8_lossy(p).into_owned();
                self.keep_error(format!("server: {text}"));
            }
            Some(_) => {}
            None => {
                return Err(FrameError::NotTickwire(
                    String::from_utf8_lossy(&p[..p.len().min(80)]).into_owned(),
                ))
            }
        }
        Ok(None)
    }

    fn update(&mut self, slot: usize, t: &Tick, now: u64, measuring: bool, slow: bool) {
        let c = &mut self.clients[slot];
        c.updates_total += 1;
        let s = (t.symbol as usize).min(MAX_SYMBOL_ID);
        if s >= c.last_symbol_seq.len() {
            c.last_symbol_seq.resize(s + 1, 0);
        }
        let last = c.last_symbol_seq[s];
        if t.book {
            // A book's sequence is its own: not this symbol's updates.
        } else if last != 0 {
            if t.symbol_seq == last {
                c.duplicates += 1;
            } else if t.symbol_seq < last {
                c.reorders += 1;
            } else if t.symbol_seq > last + 1 {
                c.gaps += 1;
                c.missed += t.symbol_seq - last - 1;
            }
        }
        if !t.book {
            c.last_symbol_seq[s] = last.max(t.symbol_seq);
        }
        if !measuring {
            return;
        }
        c.updates_measured += 1;
        if t.publish_ts > now {
            self.negative_latency += 1;
        }
        let publish_us = now.saturating_sub(t.publish_ts) / 1000;
        if slow {
            self.slow_publish.saturating_record(publish_us);
            return;
        }
        self.publish.saturating_record(publish_us);
        if let Some(ts) = t.receive_ts {
            self.receive
                .saturating_record(now.saturating_sub(ts) / 1000);
        }
    }
}

/// Runs the harness's frame parser over `bytes` as one connection of
/// `protocol` receives them in a single read, and returns what it recorded;
/// an incomplete frame at the end is left unread, as the harness leaves it
/// for the next read. The harness reads whatever a server sends, so this
/// must never panic: the fuzz targets (`fuzz/`) drive it with arbitrary
/// bytes and with tickwire's own frames.
pub fn parse_server_bytes(protocol: Protocol, bytes: &[u8]) -> Result<ConnStats, FrameError> {
    // Warm-up: the same parsing and sequence checks, no latency recorded,
    // so the histograms can be the smallest there are (a run's take 180 KB
    // each, which made this cost more than the parsing).
    let empty = || Histogram::new(1).unwrap_or_else(|_| unreachable!());
    let mut stats = ThreadStats {
        protocol,
        clients: vec![ConnStats::default()],
        publish: empty(),
        receive: empty(),
        slow_publish: empty(),
        negative_latency: 0,
        errors: Vec::new(),
    };
    stats.parse_frames(0, bytes, Phase::Warmup, false)?;
    Ok(stats.clients.swap_remove(0))
}

#[inline]
fn u32_at(p: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&p[at..at + 4]);
    u32::from_le_bytes(b)
}

#[inline]
fn u64_at(p: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_le_bytes(b)
}

/// The unsigned integer after `key` in a flat JSON object.
fn json_u64(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut value: u64 = 0;
    let mut any = false;
    for &d in digits {
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts_frame(ts: u64, seq: u64) -> Vec<u8> {
        let mut f = vec![0x82, 32];
        f.extend_from_slice(&ts.to_le_bytes());
        f.extend_from_slice(&seq.to_le_bytes());
        f.extend_from_slice(&[0; 16]);
        f
    }

    #[test]
    fn sequence_checks_count_gaps_reorders_and_duplicates() {
        let mut s = ThreadStats::new(1, Protocol::TsPrefix);
        let mut bytes = Vec::new();
        // TC0: 1, 2 in order; TC1: 5 skips 3 and 4; TC2: 5 again; TC3: 4 late.
        for seq in [1, 2, 5, 5, 4] {
            bytes.extend(ts_frame(now_ns(), seq));
        }
        bytes.extend_from_slice(&[0x82, 32, 0]); // a partial frame stays unparsed
        let p = s.parse_frames(0, &bytes, Phase::Measure, false).unwrap();
        assert_eq!(p.frames, 5);
        assert_eq!(p.consumed, bytes.len() - 3);
        assert_eq!(p.max_seq, 5);
        let c = &s.clients[0];
        assert_eq!((c.gaps, c.missed, c.duplicates, c.reorders), (1, 2, 1, 1));
        assert_eq!(s.publish.len(), 5);
    }

    #[test]
    fn statuses_are_neither_updates_nor_gaps() {
        use crate::update::{Sequenced, SymbolStatus, Update, UpdateKind};
        use crate::wire::encode::{symbol_binary, FrameEncoder, SymbolFormat};
        let fmt = SymbolFormat {
            name: "A",
            price_decimals: 2,
            size_decimals: 2,
        };
        let mut enc = FrameEncoder::new();
        let mut frame = |seq, symbol_seq, kind| {
            let s = Sequenced {
                update: Update {
                    symbol: 0,
                    kind,
                    exchange_ts_ns: 0,
                    receive_ts_ns: 1,
                    origin_seq: 0,
                    origin_publish_ts_ns: 0,
                },
                seq,
                symbol_seq,
                publish_ts_ns: now_ns(),
            };
            enc.encode(&s, fmt)
        };
        let trade = UpdateKind::Trade {
            px: 1,
            sz: 1,
            side: crate::update::Side::Buy,
        };
        let stale = UpdateKind::Status(SymbolStatus::StaleGap);
        let live = UpdateKind::Status(SymbolStatus::Live);
        // A trade, stale and live (both with the trade's symbol_seq), a trade.
        let frames = [
            frame(1, 1, trade),
            frame(2, 1, stale),
            frame(3, 1, live),
            frame(4, 2, trade),
        ];
        for (protocol, json) in [
            (Protocol::TickwireBinary, false),
            (Protocol::TickwireJson, true),
        ] {
            let mut s = ThreadStats::new(1, protocol);
            let mut bytes = symbol_binary(0, "A", 2, 2).to_vec();
            for f in &frames {
                bytes.extend_from_slice(if json { &f.json } else { &f.binary });
            }
            if json {
                bytes.drain(..symbol_binary(0, "A", 2, 2).len());
            }
            s.parse_frames(0, &bytes, Phase::Measure, false).unwrap();
            let c = &s.clients[0];
            assert_eq!(c.status_notices, 2, "json: {json}");
            assert_eq!(c.updates_total, 2, "json: {json}");
            assert_eq!(
                (c.gaps, c.duplicates, c.reorders),
                (0, 0, 0),
                "json: {json}"
            );
        }
    }

    #[test]
    fn json_fields_are_read_without_confusing_seq_and_symbol_seq() {
        let q = br#"{"type":"quote","symbol":"X","id":7,"seq":42,"symbol_seq":5,"exchange_ts":0}"#;
        assert_eq!(json_u64(q, b"\"seq\":"), Some(42));
        assert_eq!(json_u64(q, b"\"symbol_seq\":"), Some(5));
        assert_eq!(json_u64(q, b"\"missing\":"), None);
    }

    #[test]
    fn compressed_messages_are_counted_and_one_in_32_inflated() {
        use crate::wire::deflate::compress;
        use crate::wire::encode::{deflated_frame, OPCODE_TEXT};
        let mut s = ThreadStats::new(1, Protocol::TickwireJson);
        let mut bytes = Vec::new();
        for seq in 1..=64u64 {
            let q = format!(
                r#"{{"type":"quote","symbol":"X","id":7,"seq":{seq},"symbol_seq":{seq},"exchange_ts":0,"receive_ts":{},"publish_ts":{}}}"#,
                now_ns(),
                now_ns()
            );
            bytes.extend_from_slice(&deflated_frame(OPCODE_TEXT, &compress(q.as_bytes())));
        }
        let p = s.parse_frames(0, &bytes, Phase::Measure, false).unwrap();
        assert_eq!((p.frames, p.consumed), (64, bytes.len()));
        let c = &s.clients[0];
        assert_eq!((c.compressed, c.inflated), (64, 2));
        assert_eq!((c.updates_total, c.updates_measured), (64, 64));
        assert_eq!(c.bytes_measured, bytes.len() as u64);
        // Sampled: latency recorded, no gap counted between samples.
        assert_eq!(s.publish.len(), 2);
        assert_eq!(c.gaps, 0);
        // Garbage that does not inflate is a protocol error, not a panic.
        let bad = deflated_frame(OPCODE_TEXT, &[0xff; 8]);
        let mut s = ThreadStats::new(1, Protocol::TickwireJson);
        assert!(s.parse_frames(0, &bad, Phase::Measure, false).is_err());
    }

    #[test]
    fn raw_frames_count_as_measured_only_in_the_window() {
        let mut s = ThreadStats::new(1, Protocol::RawTcp);
        let frame = ts_frame(1, 1);
        s.parse_frames(0, &frame, Phase::Warmup, false).unwrap();
        s.parse_frames(0, &frame, Phase::Measure, false).unwrap();
        assert_eq!(
            (s.clients[0].updates_total, s.clients[0].updates_measured),
            (2, 1)
        );
    }

    #[test]
    fn raw_frames_of_any_size_count_by_their_headers() {
        // The blaster's --frame-bytes: 82 (tickwire's quote, 2-byte header)
        // and 300 (4-byte header), back to back, split mid-frame.
        let mut bytes = vec![0x82, 80];
        bytes.resize(82, 0);
        bytes.extend_from_slice(&[0x82, 126, 0x01, 0x28]);
        bytes.resize(82 + 300, 0);
        let mut s = ThreadStats::new(1, Protocol::RawTcp);
        let p = s
            .parse_frames(0, &bytes[..200], Phase::Measure, false)
            .unwrap();
        assert_eq!((p.frames, p.consumed), (1, 82));
        let p = s
            .parse_frames(0, &bytes[82..], Phase::Measure, false)
            .unwrap();
        assert_eq!((p.frames, p.consumed), (1, 300));
        assert_eq!(s.clients[0].updates_measured, 2);
        assert_eq!(s.clients[0].bytes_measured, 382);
    }

    #[test]
    fn a_non_tickwire_binary_message_is_an_error() {
        let mut s = ThreadStats::new(1, Protocol::TickwireBinary);
        let err = s.parse_frames(0, &ts_frame(9, 1), Phase::Measure, false);
        assert!(matches!(err, Err(FrameError::NotTickwire(_))), "{err:?}");
    }

    #[test]
    fn frame_headers_of_each_length_form() {
        // TC0: short; TC1: 16-bit length; TC2: incomplete; TC3: masked.
        assert_eq!(frame_header(&[0x82, 0x20]).unwrap(), Some((0x82, 2, 32)));
        assert_eq!(
            frame_header(&[0x81, 126, 0x01, 0x00]).unwrap(),
            Some((0x81, 4, 256))
        );
        assert_eq!(frame_header(&[0x81, 126, 0x01]).unwrap(), None);
        assert!(matches!(
            frame_header(&[0x82, 0x85]),
            Err(FrameError::Masked)
        ));
    }
}
