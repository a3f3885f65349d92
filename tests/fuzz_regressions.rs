//! The fuzz targets on stable, under `cargo test`: each target's body
//! (fuzz/src/lib.rs, the same code cargo-fuzz runs) over its committed
//! seeds (fuzz/seeds/<target>/), every crash input kept as a regression
//! (fuzz/regressions/<target>/), and a few thousand inputs made from them by
//! a small deterministic mutator. See docs/FUZZING.md.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

thread_local! {
    /// Panics on this thread, including in tasks a current-thread runtime
    /// ran here: tokio catches those, and they must fail the test too.
    static PANICS: Cell<u64> = const { Cell::new(0) };
}

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            default(info);
        }));
    });
}

/// The files of `fuzz/<dir>/<target>/`, in name order.
fn inputs(dir: &str, target: &str) -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&path) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect()
}

/// xorshift64*: the same inputs on every run.
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A seed with one to four of libFuzzer's simpler mutations applied.
    fn mutate(&mut self, seeds: &[Vec<u8>], tokens: &[&[u8]]) -> Vec<u8> {
        let mut data = seeds[self.below(seeds.len())].clone();
        for _ in 0..1 + self.below(4) {
            let at = self.below(data.len() + 1);
            match self.below(8) {
                0 if !data.is_empty() => {
                    let i = self.below(data.len());
                    data[i] ^= 1 << self.below(8);
                }
                1 if !data.is_empty() => {
                    let i = self.below(data.len());
                    data[i] = self.next() as u8;
                }
                2 => data.insert(at, self.next() as u8),
                3 if !data.is_empty() => {
                    let end = (at + 1 + self.below(16)).min(data.len());
                    data.drain(at.min(end)..end);
                }
                4 if !data.is_empty() => {
                    let from = self.below(data.len());
                    let len = self.below(data.len() - from).min(64);
                    let chunk = data[from..from + len].to_vec();
                    data.splice(at..at, chunk);
                }
                5 => {
                    let other = &seeds[self.below(seeds.len())];
                    let from = self.below(other.len());
                    let len = self.below(other.len() - from + 1);
                    data.splice(at..at, other[from..from + len].iter().copied());
                }
                6 if !tokens.is_empty() => {
                    let token = tokens[self.below(tokens.len())];
                    data.splice(at..at, token.iter().copied());
                }
                _ => data.truncate(at),
            }
        }
        data
    }
}

/// Runs `target` over the seeds, the regressions and `mutations` mutated
/// inputs; a failing input is printed so that it can be kept.
fn run(name: &str, target: fn(&[u8]), mutations: usize, tokens: &[&[u8]]) {
    count_panics();
    let seeds = inputs("seeds", name);
    assert!(!seeds.is_empty(), "no seeds in fuzz/seeds/{name}");
    let regressions = inputs("regressions", name);
    let mut mutator = Mutator(0x7469_636b_7769_7265 ^ name.len() as u64);
    let generated = (0..mutations).map(|_| mutator.mutate(&seeds, tokens));
    let all = seeds.iter().chain(&regressions).cloned().chain(generated);
    for (i, input) in all.enumerate() {
        let before = PANICS.with(Cell::get);
        let result = panic::catch_unwind(AssertUnwindSafe(|| target(&input)));
        let panicked = result.is_err() || PANICS.with(Cell::get) != before;
        assert!(
            !panicked,
            "{name}: input {i} panicked: {:?}\n(bytes: {input:?})",
            String::from_utf8_lossy(&input)
        );
    }
}

const JSON_TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\u0000",
    b"\"e\":\"trade\"",
    b"\"stream\":\"x\",\"data\":",
    b"-",
    b".",
    b"e",
    b"1e999",
    b"18446744073709551616",
    b"null",
    b"true",
    b"0.000000000000000000001",
    b"\n",
];

#[test]
fn feed_binance() {
    run(
        "feed_binance",
        targets::feed_json_lines,
        10_000,
        JSON_TOKENS,
    );
}

#[test]
fn feed_coinbase() {
    run(
        "feed_coinbase",
        targets::feed_json_lines,
        10_000,
        JSON_TOKENS,
    );
}

#[test]
fn feed_tardis() {
    let tokens: &[&[u8]] = &[
        b",",
        b"\n",
        b"-",
        b".",
        b"buy",
        b"bids[0].price",
        b"99999999999999999999",
    ];
    run("feed_tardis", targets::feed_tardis, 10_000, tokens);
}

#[test]
fn control_message() {
    run(
        "control_message",
        targets::control_message,
        20_000,
        JSON_TOKENS,
    );
}

#[test]
fn upgrade() {
    let tokens: &[&[u8]] = &[
        b"\r\n",
        b"\r\n\r\n",
        b"Upgrade: websocket\r\n",
        b"Connection: Upgrade\r\n",
        b"Sec-WebSocket-Version: 13\r\n",
        b"Sec-WebSocket-Protocol: tickwire.v1\r\n",
        b"Content-Length: 5\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"\x81\x80\0\0\0\0",
        b"\x88\x82\0\0\0\0\x03\xe8",
        b"Sec-WebSocket-Extensions: permessage-deflate\r\n",
        b"\xc1\x85\0\0\0\0",
        b"\xc2\x7e\x01\x00\0\0\0\0",
    ];
    run("upgrade", targets::upgrade, 6000, tokens);
}

#[test]
fn proxy_header() {
    let tokens: &[&[u8]] = &[
        b"PROXY ",
        b"TCP4 ",
        b"TCP6 ",
        b"UNKNOWN",
        b"\r\n",
        b"\r\n\r\n\0\r\nQUIT\n",
        b"\x21\x11\x00\x0c",
        b"\x21\x21\x00\x24",
        b"\x20\x00\x00\x00",
        b"\x0f\xf0",
        b" 65535",
        b"::ffff:",
        b"[",
        b"]:",
        b", ",
    ];
    run("proxy_header", targets::proxy_header, 20_000, tokens);
}

#[test]
fn frame_roundtrip() {
    run("frame_roundtrip", targets::frame_roundtrip, 10_000, &[]);
}

#[test]
fn frame_decode() {
    let tokens: &[&[u8]] = &[
        b"\x82\x50",
        b"\x81\x7e\x01\x00",
        b"\x82\x7f",
        b"\x88\x02\x03\xe8",
    ];
    run("frame_decode", targets::frame_decode, 20_000, tokens);
}

#[test]
fn quiet_pong() {
    let tokens: &[&[u8]] = &[b"\x8a\x80", b"\x8a\xfd", b"\x0a\x80", b"\x89\x80"];
    run("quiet_pong", targets::quiet_pong, 20_000, tokens);
}

/// The seed named `prefix` (seed files are `<name>-<hash>`).
fn seed(target: &str, prefix: &str) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}-"))
        })
        .unwrap_or_else(|| panic!("no seed {prefix} in {}", dir.display()));
    std::fs::read(file.path()).unwrap()
}

/// The targets reach what they fuzz: the captures' seeds give updates, and
/// the upgrade target's seeds get through the upgrade to the WebSocket
/// connection (and are refused where they should be).
#[test]
fn the_targets_reach_the_code_they_fuzz() {
    for target in ["feed_binance", "feed_coinbase", "feed_tardis"] {
        let updates: u64 = inputs("seeds", target)
            .into_iter()
            .map(targets::recording_updates)
            .sum();
        assert!(updates > 0, "{target}: {updates} updates from the seeds");
    }
    let answer = |name: &str| {
        String::from_utf8_lossy(&targets::upgrade_answer(&seed("upgrade", name))).into_owned()
    };
    let subscribed = answer("json-subscribe");
    assert!(subscribed.starts_with("HTTP/1.1 101"), "{subscribed}");
    assert!(
        subscribed.contains(
            r#"{"type":"ack","op":"subscribe","id":1,"symbols":["BTCUSDT"],"snapshot":1}"#
        ),
        "{subscribed}"
    );
    assert!(
        subscribed.contains(r#""type":"trade","symbol":"BTCUSDT""#),
        "{subscribed}"
    );
    for (name, status) in [
        ("post", "405"),
        ("no-key", "400"),
        ("version-12", "426"),
        ("no-upgrade", "426"),
        ("unknown-protocol", "400"),
        ("huge-header", "101"),
        ("metrics", "200"),
        ("bad-header-line", "400"),
        ("proxy-v1-untrusted", "400"),
        ("many-headers", "431"),
    ] {
        let a = answer(name);
        assert!(a.starts_with(&format!("HTTP/1.1 {status}")), "{name}: {a}");
    }
    // The PROXY header seeds are headers, up to the one at the limit; the
    // one past it is refused from its length alone.
    use tickwire::server::guard::proxy_header::{
        parse, Parsed, ProxyError, MAX_PROXY_HEADER_BYTES,
    };
    for name in [
        "v1-tcp4",
        "v1-tcp6",
        "v1-unknown",
        "v1-longest",
        "v2-inet",
        "v2-inet6-tlvs",
        "v2-aws",
        "v2-local",
        "v2-unix",
        "v2-udp",
    ] {
        let bytes = seed("proxy_header", name);
        assert!(
            matches!(parse(&bytes), Ok(Parsed::Header(..))),
            "{name}: {:?}",
            parse(&bytes)
        );
    }
    let at_limit = seed("proxy_header", "v2-at-limit");
    assert_eq!(at_limit.len(), MAX_PROXY_HEADER_BYTES);
    assert!(matches!(
        parse(&at_limit),
        Ok(Parsed::Header(_, MAX_PROXY_HEADER_BYTES))
    ));
    assert_eq!(
        parse(&seed("proxy_header", "v2-over-limit")),
        Err(ProxyError::TooLarge)
    );
}

/// The server's frames after a 101: (opcode, payload).
fn frames_after_upgrade(answer: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let head = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head")
        + 4;
    assert!(answer.starts_with(b"HTTP/1.1 101"));
    let mut rest = &answer[head..];
    let mut frames = Vec::new();
    while let Ok(Some((f, used))) = targets::next_frame(rest) {
        frames.push((f.opcode, f.payload.to_vec()));
        rest = &rest[used..];
    }
    assert!(rest.is_empty(), "a partial frame");
    frames
}

/// Frames a client must not send, through the real connection code behind
/// a real upgrade: the close code docs/PROTOCOL.md gives, and nothing after.
#[test]
fn bad_frames_get_their_close_codes() {
    // TC0: a close frame with a 1-byte body: 1002.
    // TC1: a text message that is not UTF-8: 1007.
    for (name, code) in [("close-1-byte", 1002), ("bad-utf8", 1007)] {
        let frames = frames_after_upgrade(&targets::upgrade_answer(&seed("upgrade", name)));
        let (opcode, payload) = frames.last().expect("a close frame");
        assert_eq!(*opcode, 8, "{name}: {frames:?}");
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code, "{name}");
    }
    // TC2: a binary message gets error 4004.
    let frames = frames_after_upgrade(&targets::upgrade_answer(&seed("upgrade", "binary-message")));
    let error: serde_json::Value = serde_json::from_slice(&frames[0].1).unwrap();
    assert_eq!(error["code"], 4004);
    // TC3: a ping between messages is answered with its payload, and the
    // subscribe after it is served.
    let frames = frames_after_upgrade(&targets::upgrade_answer(&seed("upgrade", "ping-frame")));
    assert_eq!(frames[0], (0xA, b"hello".to_vec()));
    assert!(String::from_utf8_lossy(&frames[1].1).contains(r#""type":"ack""#));
    // TC4: a fragmented request is put together before it is parsed.
    let frames = frames_after_upgrade(&targets::upgrade_answer(&seed("upgrade", "fragmented")));
    assert!(
        String::from_utf8_lossy(&frames[0].1).contains(r#""type":"pong""#),
        "{frames:?}"
    ); // TC5: permessage-deflate: a message that inflates past the limit is
       // 1009, one that does not inflate 1007, RSV1 on a continuation 1002,
       // and RSV1 without the extension (an offer we declined) 1002.
    for (name, code) in [
        ("deflate-bomb", 1009),
        ("deflate-garbage", 1007),
        ("deflate-fragmented", 1002),
        ("deflate-declined", 1002),
    ] {
        let answer = targets::upgrade_answer(&seed("upgrade", name));
        let frames = frames_after_upgrade(&answer);
        let (opcode, payload) = frames.last().expect("a close frame");
        assert_eq!(*opcode, 8, "{name}: {frames:?}");
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code, "{name}");
        let head = String::from_utf8_lossy(&answer);
        assert_eq!(
            head.contains("permessage-deflate"),
            name != "deflate-declined",
            "{name}"
        );
    }
}

/// RFC 6455 §5.1: a server MUST close with 1002 on an unmasked client
/// frame, and docs/PROTOCOL.md says so. fastwebsockets unmasks when there
/// is a mask and does not tell the caller when there is none, so before
/// `src/mask_check.rs` an unmasked `{}` was read as a request (error 4000).
/// Found while writing these tests; see docs/SECURITY.md.
#[test]
fn unmasked_client_frames_are_closed_with_1002() {
    let frames = frames_after_upgrade(&targets::upgrade_answer(&seed("upgrade", "unmasked")));
    let (opcode, payload) = frames.last().expect("a close frame");
    assert_eq!(*opcode, 8, "{frames:?}");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
    assert_eq!(&payload[2..], b"unmasked client frame");
    // Not read as a request: nothing but the close.
    assert_eq!(frames.len(), 1, "{frames:?}");
}
