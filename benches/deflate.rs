//! permessage-deflate on real data: the bundled recording replayed once
//! through the real server to two clients of each subprotocol, one that
//! offers the extension and one that does not, both subscribed to every
//! symbol's quotes, trades and `book.10`; then the bytes each took off the
//! wire, by kind of message. And the CPU one compression takes, over the
//! very payloads the server compressed. Counts, not timings, decide the
//! first part: they do not move with the machine's load.
//!
//! `cargo bench --bench deflate`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tickwire::config::ServeConfig;
use tickwire::wire::deflate;
use tickwire::wire::frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// What one client took: per kind of message (its `type`, or the binary
/// type byte), (messages, wire bytes, bytes once inflated, compressed ones).
type Tally = BTreeMap<String, (u64, u64, u64, u64)>;

fn bundled() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/feeds");
    let file = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
        .expect("a .jsonl.gz recording in feeds/");
    file.to_string_lossy().into_owned()
}

fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = flate2::Decompress::new(false);
    let input = [data, &[0, 0, 0xff, 0xff][..]].concat();
    let mut out = Vec::with_capacity(data.len() * 16 + 1024);
    d.decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync)
        .unwrap();
    out
}

/// One client: upgrade (offering the extension or not), subscribe, read
/// until nothing comes for a second; what it took, and the payloads of the
/// messages it got compressed (inflated).
async fn client(addr: std::net::SocketAddr, json: bool, offer: bool) -> (Tally, Vec<Vec<u8>>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let protocol = if json {
        "tickwire.v1.json"
    } else {
        "tickwire.v1"
    };
    let ext = if offer {
        format!("Sec-WebSocket-Extensions: {OFFER}\r\n")
    } else {
        String::new()
    };
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n{ext}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let head_end = loop {
        let n = s.read(&mut chunk).await.unwrap();
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    assert_eq!(head.contains("permessage-deflate"), offer, "{head}");
    buf.drain(..head_end);
    let sub = br#"{"op":"subscribe","symbols":["*"],"channels":["quotes","trades","book.10"]}"#;
    s.write_all(&masked_text(sub)).await.unwrap();
    let mut tally = Tally::new();
    let mut packed_payloads = Vec::new();
    loop {
        while let Some(h) = frame::parse(&buf) {
            let end = h.header_len + h.payload_len as usize;
            if buf.len() < end {
                break;
            }
            let rsv1 = buf[0] & 0x40 != 0;
            let payload = &buf[h.header_len..end];
            let data = if rsv1 {
                let d = inflate(payload);
                packed_payloads.push(d.clone());
                d
            } else {
                payload.to_vec()
            };
            let kind = if h.opcode == 1 {
                let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
                v["type"].as_str().unwrap_or("?").to_owned()
            } else {
                ["?", "quote", "trade", "symbol", "status", "book"]
                    .get(usize::from(data[0]))
                    .unwrap_or(&"?")
                    .to_string()
            };
            let t = tally.entry(kind).or_default();
            t.0 += 1;
            t.1 += end as u64;
            t.2 += (h.header_len + data.len()) as u64;
            t.3 += u64::from(rsv1);
            buf.drain(..end);
        }
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    (tally, packed_payloads)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = ServeConfig {
            feeds: vec![bundled()],
            speed: "max".into(),
            min_subscribers: 4,
            ring_capacity: 1 << 21,
            max_lag_updates: 1 << 20,
            max_outbox_bytes: 64 << 20,
            ..ServeConfig::default()
        };
        let server =
            tickwire::server::start(listener, config.validate().expect("valid")).unwrap();
        let addr = server.addr;
        let runs = tokio::join!(
            client(addr, false, false),
            client(addr, false, true),
            client(addr, true, false),
            client(addr, true, true),
        );
        server.stop().await;
        let mut packed = Vec::new();
        for (name, (tally, payloads)) in [
            ("tickwire.v1, plain", runs.0),
            ("tickwire.v1, deflate", runs.1),
            ("tickwire.v1.json, plain", runs.2),
            ("tickwire.v1.json, deflate", runs.3),
        ] {
            println!("{name}:");
            let (mut n, mut wire, mut raw) = (0, 0, 0);
            for (kind, (m, w, r, c)) in &tally {
                println!(
                    "  {kind:>9}: {m:>7} messages, {w:>11} bytes on the wire, {r:>11} inflated, {c:>7} compressed"
                );
                n += m;
                wire += w;
                raw += r;
            }
            println!(
                "  {:>9}: {n:>7} messages, {wire:>11} bytes on the wire, {raw:>11} inflated ({:.1} % of it on the wire)",
                "all",
                100.0 * wire as f64 / raw as f64
            );
            packed.extend(payloads);
        }
        // The CPU of one compression, over what the server compressed.
        let bytes: usize = packed.iter().map(Vec::len).sum();
        let mut per = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            for p in &packed {
                std::hint::black_box(deflate::compress(p));
            }
            per.push(started.elapsed().as_nanos() as f64 / packed.len() as f64);
        }
        per.sort_by(f64::total_cmp);
        println!(
            "compressing the {} payloads the server compressed ({} bytes, {:.0} on average): {:.2} µs each (median of 3 passes; {:.2}-{:.2})",
            packed.len(),
            bytes,
            bytes as f64 / packed.len().max(1) as f64,
            per[1] / 1e3,
            per[0] / 1e3,
            per[2] / 1e3
        );
    });
}
