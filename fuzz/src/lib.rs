//! The bodies of tickwire's fuzz targets, in one place for both harnesses:
//! cargo-fuzz (`fuzz/fuzz_targets/*.rs`, nightly, libFuzzer) and the stable
//! one (`tests/fuzz_regressions.rs`, which includes this file as a module and
//! runs every target over the committed seeds and thousands of mutations
//! under `cargo test`). See docs/FUZZING.md.
//!
//! Each function takes arbitrary bytes, drives a real tickwire entry point
//! with them, and panics only when tickwire breaks a promise: a panic inside
//! tickwire, an update of a symbol that was never defined, a reply that is
//! not the JSON it claims, a frame that does not decode to what was
//! encoded, a connection that outlives its peer.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tickwire::bench::{samples::parse_server_bytes, Protocol};
use tickwire::config::ServeConfig;
use tickwire::decimal::{parse_scaled, write_fixed, Fixed, MAX_DECIMALS};
use tickwire::feed::venue::tardis;
use tickwire::feed::{FeedStats, FileReader};
use tickwire::server::guard::proxy::TrustedProxies;
use tickwire::server::guard::proxy_header::{self, Parsed, MAX_PROXY_HEADER_BYTES};
use tickwire::server::{self, Running};
use tickwire::symbols::{Normalizer, SymbolTable};
use tickwire::update::{Sequenced, Side, SymbolStatus, Update, UpdateKind};
use tickwire::wire::decode::{self, Decoder, ServerMessage, SymbolDef, UpdateHeader};
use tickwire::wire::encode::{self, FrameEncoder, SymbolFormat};
use tickwire::wire::frame;
use tickwire::wire::{self, Op, Symbols};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------
// Feeds
// ---------------------------------------------------------------------------

/// A recording of JSON lines (Binance, Coinbase; bare, wrapped, prefixed or
/// cryptofeed lines; or compressed), read through [`FileReader`], the one
/// parsing path of `--feed` files. The `feed_binance` and `feed_coinbase`
/// targets both run this, seeded from their venue's captures.
pub fn feed_json_lines(data: &[u8]) {
    recording_updates(data.to_vec());
}

/// A Tardis CSV recording. Input that does not start like a Tardis header
/// gets the header's fixed prefix in front, so that the fuzzer mutates the
/// rest of the header (which columns, in which order) and the rows, instead
/// of mostly falling back to JSON lines.
pub fn feed_tardis(data: &[u8]) {
    let prefix = tardis::HEADER_PREFIX.as_bytes();
    let bytes = if data.starts_with(prefix) {
        data.to_vec()
    } else {
        let mut b = Vec::with_capacity(prefix.len() + 1 + data.len());
        b.extend_from_slice(prefix);
        b.push(b',');
        b.extend_from_slice(data);
        b
    };
    recording_updates(bytes);
}

/// Reads a whole recording, checking each update; returns how many it
/// had.
pub fn recording_updates(bytes: Vec<u8>) -> u64 {
    let compressed =
        bytes.starts_with(&[0x1f, 0x8b]) || bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64
        + u64::from(bytes.last().is_some_and(|&b| b != b'\n'));
    let table = SymbolTable::new();
    let mut normalizer = Normalizer::new(Arc::clone(&table));
    let stats = Arc::new(FeedStats::default());
    let Ok(reader) =
        FileReader::from_bytes("fuzz-input", bytes, &mut normalizer, Arc::clone(&stats))
    else {
        return 0;
    };
    let mut failed = false;
    let mut updates = 0;
    for item in reader {
        match item {
            Ok(timed) => {
                check_update(&table, &timed.update);
                updates += 1;
            }
            // The error ends the iteration; nothing to check in its text.
            Err(_) => failed = true,
        }
    }
    let records = stats.records.get();
    let skipped = stats.skipped.get();
    let rejected = stats.rejected.get();
    assert!(
        skipped + rejected <= records,
        "{skipped} skipped + {rejected} rejected of {records} records"
    );
    if !compressed && !failed {
        assert_eq!(records, lines, "every line is counted as a record");
    }
    updates
}

/// An update's symbol is defined, its prices and sizes are not negative
/// (a feed rejects those), and its numbers print and parse back exactly at
/// the symbol's scale.
fn check_update(table: &SymbolTable, u: &Update) {
    let def = table
        .get(u.symbol)
        .unwrap_or_else(|| panic!("update of undefined symbol id {}", u.symbol));
    assert!(def.price_decimals <= MAX_DECIMALS && def.size_decimals <= MAX_DECIMALS);
    let (prices, sizes) = match u.kind {
        UpdateKind::Quote {
            bid_px,
            bid_sz,
            ask_px,
            ask_sz,
        } => (
            vec![bid_px, ask_px],
            [bid_sz, ask_sz].into_iter().flatten().collect(),
        ),
        UpdateKind::Trade { px, sz, .. } | UpdateKind::Level { px, sz, .. } => (vec![px], vec![sz]),
        UpdateKind::Status(_) => (vec![], vec![]),
    };
    for (values, decimals) in [(prices, def.price_decimals), (sizes, def.size_decimals)] {
        for m in values {
            assert!(m >= 0, "a negative price or size was served: {m}");
            let mut text = Vec::new();
            write_fixed(&mut text, m, decimals);
            assert_eq!(parse_scaled(&text, decimals), Ok(m), "{m} at {decimals}");
        }
    }
}

// ---------------------------------------------------------------------------
// Client requests
// ---------------------------------------------------------------------------

/// One client text message through `wire::parse_request`, at a small
/// and at the default subscription limit, and the reply it would get.
pub fn control_message(data: &[u8]) {
    for max in [4, 1024] {
        match wire::parse_request(data, max) {
            Ok(req) => {
                let (op, symbols) = match &req.op {
                    Op::Subscribe(s) => ("subscribe", Some(s)),
                    Op::Unsubscribe(s) => ("unsubscribe", Some(s)),
                    Op::Ping => ("ping", None),
                    Op::Replay(control) => {
                        if let wire::ReplayControl::Speed(Some(k)) = control {
                            assert!(k.is_finite() && *k > 0.0, "speed {k}");
                        }
                        (control.name(), None)
                    }
                };
                if let Some(Symbols::Names(names)) = symbols {
                    assert!(!names.is_empty() && names.len() <= max, "{names:?}");
                }
                let reply = match (symbols, &req.op) {
                    (Some(s), _) => {
                        wire::ack_reply(op, req.id, s, req.channels, req.throttle_ms, 3)
                    }
                    (None, Op::Replay(_)) => wire::control_ack(op, req.id),
                    (None, _) => wire::pong_reply(req.id, 7),
                };
                let v = text_json(&reply);
                assert_eq!(v["id"].as_u64(), req.id);
                if let Some(s) = symbols {
                    let expected: Vec<Value> = match s {
                        Symbols::All => vec!["*".into()],
                        Symbols::Names(n) => n.iter().map(|n| n.as_str().into()).collect(),
                    };
                    assert_eq!(v["symbols"], Value::Array(expected));
                    assert_eq!(v["op"], op);
                    assert_eq!(v["throttle_ms"].as_u64(), req.throttle_ms.map(u64::from));
                }
                if let Some(ms) = req.throttle_ms {
                    assert!(
                        ms == 0 || (wire::MIN_THROTTLE_MS..=wire::MAX_THROTTLE_MS).contains(&ms)
                    );
                }
            }
            Err(refusal) => {
                let v = text_json(&wire::error_reply(&refusal));
                assert_eq!(v["type"], "error");
                assert_eq!(v["code"].as_u64(), Some(refusal.code as u64));
                assert_eq!(v["reason"], refusal.reason.as_str());
                assert_eq!(v["id"].as_u64(), refusal.id);
            }
        }
    }
}

/// The JSON object in a complete text frame.
fn text_json(frame: &[u8]) -> Value {
    let (f, used) = next_frame(frame)
        .expect("a valid frame")
        .expect("a complete frame");
    assert_eq!(used, frame.len(), "one frame");
    assert_eq!(f.opcode, encode::OPCODE_TEXT);
    let v: Value = serde_json::from_slice(f.payload).expect("JSON");
    assert!(v.is_object(), "{v}");
    v
}

// ---------------------------------------------------------------------------
// The HTTP upgrade and the connection behind it
// ---------------------------------------------------------------------------

/// A real server, started once per process: a small recording replayed at
/// full speed and finished before the first input, so that every input
/// meets the same state. The clock is paused: an input that leaves the
/// server waiting costs no wall time.
struct UpgradeServer {
    rt: tokio::runtime::Runtime,
    running: Running,
}

/// Two symbols, a quote and a trade each.
const FEED: &str = concat!(
    r#"{"u":1,"s":"BTCUSDT","b":"61837.63000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}"#,
    "\n",
    r#"{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":3,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}"#,
    "\n",
    r#"{"u":2,"s":"ETHUSDT","b":"2545.80000000","B":"1.5","a":"2545.81000000","A":"0.25"}"#,
    "\n",
    r#"{"e":"aggTrade","E":1723161256322,"s":"ETHUSDT","a":1,"p":"2545.81000000","q":"0.12050000","f":1,"l":2,"T":1723161256321,"m":false,"M":true}"#,
    "\n",
);
const FEED_UPDATES: u64 = 4;

/// How long (on the paused clock) the client waits for the server's answer
/// before it leaves; a server that is waiting for more input lets the
/// clock run to it at once.
const SETTLE: Duration = Duration::from_secs(60);

fn upgrade_server() -> &'static UpgradeServer {
    static SERVER: OnceLock<UpgradeServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        let feed = std::env::temp_dir().join(format!("tickwire-fuzz-{}.jsonl", std::process::id()));
        std::fs::write(&feed, FEED).expect("writing the feed");
        let config = ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            feeds: vec![feed.to_string_lossy().into_owned()],
            speed: "max".into(),
            ..ServeConfig::default()
        };
        let running = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let running =
                server::start(listener, config.validate().expect("config")).expect("start");
            // The publisher and the feed's reader are threads of their own:
            // wait in real time until the recording is published.
            for _ in 0..10_000 {
                if running.market.ring.tail() >= FEED_UPDATES {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
                tokio::task::yield_now().await;
            }
            assert_eq!(running.market.ring.tail(), FEED_UPDATES, "feed published");
            running
        });
        let _ = std::fs::remove_file(&feed);
        UpgradeServer { rt, running }
    })
}

/// The bytes a client sends on one connection: an HTTP request (or
/// several, or garbage), and after a successful upgrade the WebSocket
/// frames that follow, served by [`Running::serve_stream`], the code every
/// accepted TCP connection runs. The client reads everything, then leaves.
///
/// Checks: the answer is HTTP; a 101 names one of our subprotocols (or
/// none) and is followed only by complete, valid server frames (JSON
/// control messages, market data as docs/PROTOCOL.md lays it out, at most
/// one close frame, last); the connection ends once the client has gone,
/// and every connection's resources are released (the connection gauge and
/// the queued-bytes gauge are back to zero).
pub fn upgrade(data: &[u8]) {
    upgrade_answer(data);
}

/// [`upgrade`], returning every byte the client received.
pub fn upgrade_answer(data: &[u8]) -> Vec<u8> {
    let s = upgrade_server();
    let out = s.rt.block_on(async {
        let (client, server_end) = tokio::io::duplex(64 * 1024);
        let serve = async {
            let served = tokio::time::timeout(
                Duration::from_secs(3600),
                s.running.serve_stream(server_end),
            );
            assert!(served.await.is_ok(), "the connection outlived its client");
        };
        let (_, out) = tokio::join!(serve, talk(client, data));
        let metrics = &s.running.market.metrics;
        // The WebSocket connection runs in a task of its own.
        let released = wait_until(|| metrics.connections.get() == 0);
        assert!(released.await, "a connection outlived its client");
        assert_eq!(metrics.queued_bytes.get(), 0, "queued bytes released");
        out
    });
    check_http_answer(&out);
    out
}

async fn talk(client: tokio::io::DuplexStream, data: &[u8]) -> Vec<u8> {
    let (mut rd, mut wr) = tokio::io::split(client);
    let mut out = Vec::new();
    let io = async {
        // The server may stop reading (a refusal, a close): then the write
        // fails, and that is fine.
        let _ = tokio::join!(wr.write_all(data), rd.read_to_end(&mut out));
    };
    let _ = tokio::time::timeout(SETTLE, io).await;
    out
}

async fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

fn check_http_answer(out: &[u8]) {
    if out.is_empty() {
        // A connection that ends inside a request head is closed without
        // an answer.
        return;
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "not an HTTP answer ({other:?}): {:?}",
            String::from_utf8_lossy(&out[..out.len().min(200)])
        ),
    };
    // HTTP/1.0 requests are answered in HTTP/1.0.
    assert!(matches!(resp.version, Some(0 | 1)));
    if resp.code != Some(101) {
        return;
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    assert!(
        header("sec-websocket-accept").is_some(),
        "101 without accept"
    );
    let format = match header("sec-websocket-protocol") {
        None | Some(b"tickwire.v1") => Protocol::TickwireBinary,
        Some(b"tickwire.v1.json") => Protocol::TickwireJson,
        Some(p) => panic!("101 with subprotocol {:?}", String::from_utf8_lossy(p)),
    };
    // permessage-deflate, if the answer says so: frames may then come
    // compressed (RSV1).
    let deflate = header("sec-websocket-extensions").is_some_and(|v| {
        let v = String::from_utf8_lossy(v);
        assert!(
            v.starts_with("permessage-deflate; server_no_context_takeover"),
            "an extension answered: {v}"
        );
        true
    });
    check_server_frames(&out[head_len..], format, deflate);
}

/// A permessage-deflate message inflated (flate2 here, independently of
/// the server's own inflate).
fn inflate_message(data: &[u8]) -> Vec<u8> {
    let mut d = flate2::Decompress::new(false);
    let input = [data, &[0, 0, 0xff, 0xff][..]].concat();
    let mut out = Vec::with_capacity(data.len() * 8 + 1024);
    loop {
        let before = d.total_in();
        d.decompress_vec(
            &input[d.total_in() as usize..],
            &mut out,
            flate2::FlushDecompress::Sync,
        )
        .expect("a compressed server frame that does not inflate");
        if d.total_in() as usize == input.len() {
            return out;
        }
        if d.total_in() == before && out.len() < out.capacity() {
            panic!("a compressed server frame that stops short");
        }
        out.reserve(out.capacity());
    }
}

/// Everything after a 101 is complete server frames: text frames are JSON
/// objects with a `type`, binary frames are tickwire messages, and a close
/// frame, if any, is last.
fn check_server_frames(all: &[u8], format: Protocol, deflate: bool) {
    let mut bytes = all;
    let mut closed = false;
    // One connection's decoder: definitions come before their updates.
    let mut decoder = Decoder::new();
    while !bytes.is_empty() {
        assert!(!closed, "a frame after the close frame");
        // A compressed frame: RSV1 allowed (deflate only), and checked
        // as what it inflates to.
        let rsv1 = deflate && bytes[0] & 0x40 != 0;
        let mut plain = bytes[..bytes.len().min(frame::MAX_HEADER_LEN)].to_vec();
        if rsv1 {
            assert!(matches!(bytes[0] & 0x0f, 1 | 2), "RSV1 on a control frame");
            plain[0] &= !0x40;
        }
        let parsed = match frame::prefix(&plain) {
            Some(_) => frame::parse(&plain).map(|h| (h.header_len, h.payload_len)),
            None => None,
        };
        let (f, used) = match (rsv1, parsed) {
            (true, Some((header_len, len))) => {
                let end = header_len + len as usize;
                assert!(end <= bytes.len(), "a cut compressed frame");
                let inflated = inflate_message(&bytes[header_len..end]);
                check_payload(&mut decoder, bytes[0] & 0x0f, &inflated, format);
                bytes = &bytes[end..];
                continue;
            }
            _ => match next_frame(bytes) {
                Ok(Some(x)) => x,
                other => panic!("bad server frame: {other:?}"),
            },
        };
        match f.opcode {
            encode::OPCODE_TEXT | encode::OPCODE_BINARY => {
                check_payload(&mut decoder, f.opcode, f.payload, format)
            }
            encode::OPCODE_CLOSE => {
                closed = true;
                assert!(f.payload.len() != 1 && f.payload.len() <= 125);
                if f.payload.len() >= 2 {
                    std::str::from_utf8(&f.payload[2..]).expect("UTF-8 close reason");
                }
            }
            // Pongs answer the client's pings; pings are the heartbeat.
            encode::OPCODE_PONG | encode::OPCODE_PING => {}
            other => panic!("server sent opcode {other:#x}"),
        }
        bytes = &bytes[used..];
    }
    // The bench harness's parser takes the same bytes (it speaks no
    // extension).
    if !deflate {
        if let Err(e) = parse_server_bytes(format, all) {
            panic!("the bench parser refused the server's frames: {e}");
        }
    }
}

/// A text frame is a JSON object with a `type`, a binary one a tickwire
/// message (and only on the binary subprotocol).
fn check_payload(decoder: &mut Decoder, opcode: u8, payload: &[u8], format: Protocol) {
    if opcode == encode::OPCODE_TEXT {
        if let Err(e) = decoder.decode_json(payload) {
            panic!("{e}: {:?}", String::from_utf8_lossy(payload));
        }
        return;
    }
    assert_eq!(
        format,
        Protocol::TickwireBinary,
        "binary on the JSON subprotocol"
    );
    if let Err(e) = decoder.decode_binary(payload) {
        panic!("not a tickwire binary message: {e}");
    }
}

// ---------------------------------------------------------------------------
// What a trusted proxy sends first: a PROXY header, X-Forwarded-For
// ---------------------------------------------------------------------------

/// Arbitrary bytes as the start of a trusted proxy's connection: through
/// `proxy_header::parse` at once, and through `proxy_header::read_header`
/// as the server reads them, a few bytes at a time; then as an
/// `X-Forwarded-For` value.
///
/// Checks: the two readings agree (what arrives in pieces parses as it
/// does whole); a header is never longer than the input or
/// [`MAX_PROXY_HEADER_BYTES`], reads as the same header without what
/// follows it, and is incomplete when cut short; what the reader leaves is
/// exactly what follows the header; an incomplete input is shorter than
/// the limit; a header re-encoded in its version reads back the same; the
/// client named by `X-Forwarded-For` is the hop or one of its entries.
pub fn proxy_header(data: &[u8]) {
    let whole = proxy_header::parse(data);
    match whole {
        Ok(Parsed::Header(h, len)) => {
            assert!(len <= data.len() && len <= MAX_PROXY_HEADER_BYTES, "{len}");
            assert_eq!(proxy_header::parse(&data[..len]), whole);
            for cut in [0, 1, len / 2, len.saturating_sub(16), len - 1] {
                assert_eq!(
                    proxy_header::parse(&data[..cut.min(len - 1)]),
                    Ok(Parsed::Incomplete),
                    "cut at {cut} of {len}"
                );
            }
            let again = if h.version == 1 {
                h.to_v1()
            } else {
                h.to_v2(&[])
            };
            assert_eq!(
                proxy_header::parse(&again),
                Ok(Parsed::Header(h, again.len())),
                "re-encoded {again:?}"
            );
        }
        Ok(Parsed::Incomplete) => assert!(data.len() < MAX_PROXY_HEADER_BYTES),
        Ok(Parsed::NotProxy) | Err(_) => {}
    }
    // The server's reading, a few bytes per read.
    let mut buf = bytes::BytesMut::new();
    let mut trickle = Trickle {
        data,
        step: 1 + data.first().map_or(0, |&b| usize::from(b % 16)),
    };
    let read = proxy_runtime().block_on(proxy_header::read_header(&mut trickle, &mut buf));
    let consumed = data.len() - trickle.data.len();
    match (whole, read) {
        (Ok(Parsed::Header(h, len)), Ok(Some(r))) => {
            assert_eq!(h, r);
            assert_eq!(&buf[..], &data[len..consumed], "left after the header");
        }
        (Ok(Parsed::NotProxy), Ok(None)) => assert_eq!(&buf[..], &data[..consumed]),
        (Ok(Parsed::Incomplete), Ok(None)) => assert!(data.is_empty()),
        (Ok(Parsed::Incomplete), Err(e)) => {
            assert_eq!(e, proxy_header::ProxyError::Truncated);
            assert!(!data.is_empty());
        }
        (Err(w), Err(r)) => assert_eq!(w, r),
        (w, r) => panic!("whole: {w:?}, read in pieces: {r:?}"),
    }
    // The same bytes as X-Forwarded-For from a trusted hop.
    let trusted = proxy_trusted();
    let hop = std::net::IpAddr::from([10, 0, 0, 1]);
    let client = trusted.forwarded_client(hop, std::iter::once(data));
    if client != hop {
        let named = data.split(|&b| b == b',').any(|entry| {
            let Ok(text) = std::str::from_utf8(entry) else {
                return false;
            };
            let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
            let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
            let ip = text
                .parse::<std::net::IpAddr>()
                .ok()
                .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
                .or_else(|| bare?.parse::<std::net::IpAddr>().ok());
            ip.map(|ip| ip.to_canonical()) == Some(client)
        });
        assert!(
            named,
            "{client} is not in {:?}",
            String::from_utf8_lossy(data)
        );
    }
}

/// A reader that hands out `step` bytes at a time.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl tokio::io::AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.step.min(self.data.len()).min(out.remaining());
        out.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

fn proxy_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fn proxy_trusted() -> &'static TrustedProxies {
    static T: OnceLock<TrustedProxies> = OnceLock::new();
    T.get_or_init(|| {
        TrustedProxies::parse(&["10.0.0.0/8".to_owned(), "2001:db8::/32".to_owned()])
            .expect("valid CIDRs")
    })
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// Arbitrary updates, symbol definitions and close frames, encoded by the
/// server's encoders (`FrameEncoder`, `SymbolTable::intern`,
/// `encode::close_frame`) and decoded by `tickwire::wire::decode` (pinned to
/// docs/PROTOCOL.md by its unit tests): every field comes back as it went
/// in, in both subprotocols, and the bench harness's parser (`tickwire
/// bench`) takes each frame.
pub fn frame_roundtrip(data: &[u8]) {
    let mut input = Input(data);
    let mut encoder = FrameEncoder::new();
    let table = SymbolTable::new();
    while let Some(kind) = input.take_u8() {
        match kind % 5 {
            0 | 1 | 4 => roundtrip_update(&mut input, &mut encoder, kind),
            2 => roundtrip_symbol(&mut input, &table),
            _ => roundtrip_close(&mut input),
        }
    }
}

/// `op % 5`: 0 a quote, 1 a trade, anything else a live venue's status. A
/// quote's sizes are unknown by the bits of `op / 5`: 1 the bid's, 2 the
/// ask's (the mantissas are still read, so that the input lines up).
fn roundtrip_update(input: &mut Input<'_>, encoder: &mut FrameEncoder, op: u8) {
    let which = op % 5;
    let known = |bit: u8, v: i64| ((op / 5) & bit == 0).then_some(v);
    let kind = if which == 0 {
        UpdateKind::Quote {
            bid_px: input.i64(),
            bid_sz: known(1, input.i64()),
            ask_px: input.i64(),
            ask_sz: known(2, input.i64()),
        }
    } else if which != 1 {
        UpdateKind::Status(
            [
                SymbolStatus::Live,
                SymbolStatus::StaleGap,
                SymbolStatus::StaleDisconnected,
                SymbolStatus::StaleSilent,
            ][usize::from(input.u8() % 4)],
        )
    } else {
        let side = match input.u8() % 3 {
            0 => Side::Unknown,
            1 => Side::Buy,
            _ => Side::Sell,
        };
        UpdateKind::Trade {
            px: input.i64(),
            sz: input.i64(),
            side,
        }
    };
    let s = Sequenced {
        update: Update {
            // Shifted by a fuzzed amount, so that small ids (real ones) are
            // as common as large ones.
            symbol: input
                .u32()
                .checked_shr(u32::from(input.u8() % 33))
                .unwrap_or(0),
            kind,
            exchange_ts_ns: input.u64(),
            receive_ts_ns: input.u64(),
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        },
        seq: input.u64(),
        symbol_seq: input.u64(),
        publish_ts_ns: input.u64(),
    };
    let price_decimals = input.u8() % (MAX_DECIMALS + 1);
    let size_decimals = input.u8() % (MAX_DECIMALS + 1);
    let name = input.string();
    let sym = SymbolFormat {
        name: &name,
        price_decimals,
        size_decimals,
    };
    let encoded = encoder.encode(&s, sym);

    // Both frames decode, with the symbol defined, to what was encoded.
    let mut decoder = Decoder::new();
    decoder
        .define(SymbolDef {
            id: s.update.symbol,
            name: name.clone(),
            price_decimals,
            size_decimals,
        })
        .expect("decimals within MAX_DECIMALS");
    let want_msg = decoded(&s, price_decimals, size_decimals);
    let (f, used) = next_frame(&encoded.binary).unwrap().unwrap();
    assert_eq!(
        (f.opcode, used),
        (encode::OPCODE_BINARY, encoded.binary.len())
    );
    assert_eq!(
        decoder.decode_binary(f.payload).ok(),
        Some(want_msg.clone())
    );
    // The bench harness keeps a sequence slot per symbol id up to 2^20, so
    // it is given only ids of up to 16 bits (one more 8 MB vector per input
    // would be most of the time spent), and ids past 2^20, which it must
    // take for a sign of a foreign server.
    let checked_by_bench = s.update.symbol <= u32::from(u16::MAX);
    let is_status = matches!(s.update.kind, UpdateKind::Status(_));
    // What the bench harness counts: an update, or a status notice.
    let counted = |r: tickwire::bench::samples::ConnStats| (r.updates_total, r.status_notices);
    let want = if is_status { (0, 1) } else { (1, 0) };
    let rec = || parse_server_bytes(Protocol::TickwireBinary, &encoded.binary);
    if s.update.symbol > 1 << 20 && !is_status {
        assert!(rec().is_err());
    } else if checked_by_bench {
        assert_eq!(rec().map(counted).ok(), Some(want));
    }

    // JSON: the decoder takes a number only as exactly the symbol's
    // decimals, an unknown size only as `null`, and the name only as the
    // definition's.
    let (f, used) = next_frame(&encoded.json).unwrap().unwrap();
    assert_eq!((f.opcode, used), (encode::OPCODE_TEXT, encoded.json.len()));
    match decoder.decode_json(f.payload) {
        Ok(m) => assert_eq!(m, want_msg),
        Err(e) => panic!("{e}: {}", String::from_utf8_lossy(f.payload)),
    }
    if checked_by_bench {
        let rec = parse_server_bytes(Protocol::TickwireJson, &encoded.json);
        assert_eq!(rec.map(counted).ok(), Some(want));
    }
}

/// What a client must decode `s` to, at these decimals.
fn decoded(s: &Sequenced, price_decimals: u8, size_decimals: u8) -> ServerMessage {
    let u = &s.update;
    let header = UpdateHeader {
        symbol: u.symbol,
        seq: s.seq,
        symbol_seq: s.symbol_seq,
        exchange_ts_ns: u.exchange_ts_ns,
        receive_ts_ns: u.receive_ts_ns,
        publish_ts_ns: s.publish_ts_ns,
    };
    let price = |mantissa| Fixed {
        mantissa,
        decimals: price_decimals,
    };
    let size = |mantissa| Fixed {
        mantissa,
        decimals: size_decimals,
    };
    match u.kind {
        UpdateKind::Quote {
            bid_px,
            bid_sz,
            ask_px,
            ask_sz,
        } => ServerMessage::Quote(decode::Quote {
            header,
            bid: price(bid_px),
            bid_size: bid_sz.map(size),
            ask: price(ask_px),
            ask_size: ask_sz.map(size),
        }),
        UpdateKind::Trade { px, sz, side } => ServerMessage::Trade(decode::Trade {
            header,
            price: price(px),
            size: size(sz),
            side,
        }),
        UpdateKind::Status(status) => ServerMessage::Status(decode::Status { header, status }),
        UpdateKind::Level { .. } => panic!("levels are encoded as books, never alone"),
    }
}

fn roundtrip_symbol(input: &mut Input<'_>, table: &SymbolTable) {
    let name = input.string();
    let (pd, sd) = (
        input.u8() % (MAX_DECIMALS + 1),
        input.u8() % (MAX_DECIMALS + 1),
    );
    let Ok(def) = table.intern(&name, pd, sd) else {
        return;
    };
    // Interned earlier with other scales: the first ones stay.
    let (pd, sd) = (def.price_decimals, def.size_decimals);
    let (f, used) = next_frame(&def.frame_binary).unwrap().unwrap();
    assert_eq!(
        (f.opcode, used),
        (encode::OPCODE_BINARY, def.frame_binary.len())
    );
    let want = ServerMessage::Symbol(SymbolDef {
        id: def.id,
        name: name.clone(),
        price_decimals: pd,
        size_decimals: sd,
    });
    assert_eq!(
        Decoder::new().decode_binary(f.payload).ok(),
        Some(want.clone())
    );
    let (f, used) = next_frame(&def.frame_json).unwrap().unwrap();
    assert_eq!(
        (f.opcode, used),
        (encode::OPCODE_TEXT, def.frame_json.len())
    );
    assert_eq!(Decoder::new().decode_json(f.payload).ok(), Some(want));
    for (format, frame) in [
        (Protocol::TickwireBinary, &def.frame_binary),
        (Protocol::TickwireJson, &def.frame_json),
    ] {
        let rec = parse_server_bytes(format, frame).expect("the harness takes a definition");
        assert_eq!(rec.definitions, 1);
    }
}

fn roundtrip_close(input: &mut Input<'_>) {
    let code = u16::from_le_bytes([input.u8(), input.u8()]);
    let reason = input.string();
    let frame = encode::close_frame(code, &reason);
    let (f, used) = next_frame(&frame).unwrap().unwrap();
    assert_eq!((f.opcode, used), (encode::OPCODE_CLOSE, frame.len()));
    assert!(
        f.payload.len() <= 125,
        "control frames carry at most 125 bytes"
    );
    assert_eq!(u16::from_be_bytes([f.payload[0], f.payload[1]]), code);
    let sent = std::str::from_utf8(&f.payload[2..]).expect("UTF-8 reason");
    assert!(reason.starts_with(sent));
    // Cut only to fit, at a character boundary.
    assert!(
        sent.len() == reason.len() || sent.len() + 4 > 123,
        "{sent:?}"
    );
    let rec = parse_server_bytes(Protocol::TickwireBinary, &frame).unwrap();
    assert_eq!(rec.close_code, Some(code));
}

/// Arbitrary bytes as what a quiet connection finds first
/// (`server/ws/quiet.rs`): `whole_pong` takes exactly a whole masked pong
/// of at most 125 payload bytes, final and with no RSV bits, as RFC 6455
/// §5.2 and §5.5 define it, read here from the bytes alone; anything else
/// is left to the reader.
pub fn quiet_pong(data: &[u8]) {
    let want = match data {
        [0x8A, b1, ..] if b1 & 0x80 != 0 && b1 & 0x7f <= 125 => {
            let len = 6 + usize::from(b1 & 0x7f);
            (data.len() >= len).then_some(len)
        }
        _ => None,
    };
    assert_eq!(frame::whole_pong(data), want, "{data:?}");
    if let Some(len) = want {
        assert!(len <= frame::MAX_PONG_LEN);
    }
}

/// Arbitrary bytes as a server's stream: the library's decoder
/// (`tickwire::wire::decode`, one decoder over the stream, as a client keeps it)
/// and the bench harness's parser (`tickwire bench` reads whatever any
/// server sends) must refuse what they cannot take, never panic.
pub fn frame_decode(data: &[u8]) {
    let mut rest = data;
    let mut decoder = Decoder::new();
    while let Ok(Some((f, used))) = next_frame(rest) {
        match f.opcode {
            encode::OPCODE_BINARY => drop(decoder.decode_binary(f.payload)),
            encode::OPCODE_TEXT => drop(decoder.decode_json(f.payload)),
            _ => {}
        }
        rest = &rest[used..];
    }
    for p in [
        Protocol::TickwireBinary,
        Protocol::TickwireJson,
        Protocol::TsPrefix,
        Protocol::RawTcp,
    ] {
        let _ = parse_server_bytes(p, data);
    }
}

// ---------------------------------------------------------------------------
// Server frames, read from RFC 6455 alone
// ---------------------------------------------------------------------------

/// One complete server frame: FIN set, unmasked (RFC 6455 §5.2).
#[derive(Debug, PartialEq, Eq)]
pub struct ServerFrame<'a> {
    pub opcode: u8,
    pub payload: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    NotFinal,
    Reserved,
    Masked,
    /// A length not written in the shortest form (RFC 6455 §5.2: "the
    /// minimal number of bytes MUST be used").
    LongLength,
}

/// The frame at the start of `bytes` and the bytes it takes, `None` if
/// incomplete.
pub fn next_frame(bytes: &[u8]) -> Result<Option<(ServerFrame<'_>, usize)>, FrameError> {
    let Some(p) = frame::prefix(bytes) else {
        return Ok(None);
    };
    if !p.fin {
        return Err(FrameError::NotFinal);
    }
    if p.rsv != 0 {
        return Err(FrameError::Reserved);
    }
    if p.masked {
        return Err(FrameError::Masked);
    }
    let Some(h) = frame::parse(bytes) else {
        return Ok(None);
    };
    if !h.minimal_length() {
        return Err(FrameError::LongLength);
    }
    let end = usize::try_from(h.payload_len)
        .ok()
        .and_then(|len| len.checked_add(h.header_len));
    match end.and_then(|end| bytes.get(h.header_len..end).map(|p| (p, end))) {
        Some((payload, end)) => Ok(Some((
            ServerFrame {
                opcode: h.opcode,
                payload,
            },
            end,
        ))),
        None => Ok(None),
    }
}

/// Fuzz bytes read as a sequence of values; past the end, zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take_u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u8(&mut self) -> u8 {
        self.take_u8().unwrap_or(0)
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    fn i64(&mut self) -> i64 {
        self.u64() as i64
    }

    fn u32(&mut self) -> u32 {
        self.u64() as u32
    }

    /// A length byte (up to 80), then that many bytes as (lossy) UTF-8.
    fn string(&mut self) -> String {
        let len = usize::from(self.u8() % 81).min(self.0.len());
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8_lossy(s).into_owned()
    }
}
