//! Replay on demand: the catalog (`/recordings`) of a recordings
//! directory, the names a client may and may not use, and NDJSON replay
//! sessions (`/replay.ndjson`) compared update by update with the
//! recording as tickwire's reader reads it, through a symbol filter, a time
//! window, a slow client, and the session limit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tickwire::config::ServeConfig;
use tickwire::feed::recording::FileReader;
use tickwire::feed::FeedSpec;
use tickwire::symbols::{Normalizer, SymbolTable};
use tickwire::update::UpdateKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::temp::TempDir;
use common::*;

fn real(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/feeds-real")
        .join(name)
}

/// A recordings directory: the bundled recording, a Tardis CSV, a file
/// that is no recording, a hidden file, and a symbolic link out of it.
fn recordings() -> TempDir {
    let dir = TempDir::new("recordings");
    std::fs::copy(bundled_path(), dir.path("bundled.jsonl.gz")).unwrap();
    std::fs::copy(
        real("tardis-binance-futures-trades-BTCUSDT-20200222.csv"),
        dir.path("trades.csv"),
    )
    .unwrap();
    std::fs::write(dir.path("README.txt"), "not a recording\n").unwrap();
    std::fs::copy(bundled_path(), dir.path(".hidden.jsonl.gz")).unwrap();
    std::os::unix::fs::symlink(
        real("binance-spot-BTCUSDT-20230405-hftbacktest.jsonl"),
        dir.path("outside.jsonl"),
    )
    .unwrap();
    dir
}

async fn server(dir: &TempDir, max_sessions: usize) -> tickwire::server::Running {
    start(ServeConfig {
        recordings_dir: Some(dir.0.clone()),
        max_replay_sessions: max_sessions,
        ..ServeConfig::default()
    })
    .await
}

/// A GET, the whole response: status and body (de-chunked).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut raw))
        .await
        .expect("the response within 60 s")
        .unwrap();
    split_response(&raw)
}

fn split_response(raw: &[u8]) -> (u16, Vec<u8>) {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[end..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..line]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[line + 2..line + 2 + n]);
            rest = &rest[line + 2 + n + 2..];
        }
        body = out;
    }
    (status, body)
}

/// A quote or trade as text: (symbol, kind, values).
type Tick = (String, &'static str, String);

/// The recording's quotes and trades as tickwire's reader reads them,
/// those of `symbols` (all if empty) recorded in `[from, to)`.
fn reference(path: &Path, symbols: &[&str], from: u64, to: u64) -> Vec<Tick> {
    let table = SymbolTable::new();
    let mut normalizer = Normalizer::new(table.clone());
    let spec = FeedSpec::File(path.to_owned());
    let mut out = Vec::new();
    for item in FileReader::open(&spec, &mut normalizer, Default::default()).unwrap() {
        let t = item.unwrap();
        let ts = t.pace_ns.unwrap_or(0);
        let def = table.get(t.update.symbol).unwrap();
        if ts < from || ts >= to || !(symbols.is_empty() || symbols.contains(&&*def.name)) {
            continue;
        }
        let f = |m: i64, d: u8| {
            tickwire::decimal::Fixed {
                mantissa: m,
                decimals: d,
            }
            .to_string()
        };
        let (pd, sd) = (def.price_decimals, def.size_decimals);
        match t.update.kind {
            UpdateKind::Quote {
                bid_px,
                bid_sz,
                ask_px,
                ask_sz,
            } => out.push((
                def.name.to_string(),
                "quote",
                format!(
                    "{} {:?} {} {:?}",
                    f(bid_px, pd),
                    bid_sz.map(|s| f(s, sd)),
                    f(ask_px, pd),
                    ask_sz.map(|s| f(s, sd))
                ),
            )),
            UpdateKind::Trade { px, sz, .. } => out.push((
                def.name.to_string(),
                "trade",
                format!("{} {}", f(px, pd), f(sz, sd)),
            )),
            _ => {}
        }
    }
    out
}

/// The quotes and trades of an NDJSON replay, as [`Tick`]s; every line
/// must be a JSON message, and every symbol defined before its first.
fn ticks(body: &[u8]) -> Vec<Tick> {
    let mut out = Vec::new();
    let mut defined = std::collections::HashSet::new();
    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let s = |k: &str| v[k].as_str().map(str::to_owned);
        let id = v["id"].as_u64();
        if v["type"] == "symbol" {
            defined.insert(id);
        } else if v["type"] == "quote" || v["type"] == "trade" {
            assert!(
                defined.contains(&id),
                "an update before its definition: {v}"
            );
        }
        match v["type"].as_str() {
            Some("quote") => out.push((
                s("symbol").unwrap(),
                "quote",
                format!(
                    "{} {:?} {} {:?}",
                    s("bid").unwrap(),
                    s("bid_size"),
                    s("ask").unwrap(),
                    s("ask_size")
                ),
            )),
            Some("trade") => out.push((
                s("symbol").unwrap(),
                "trade",
                format!("{} {}", s("price").unwrap(), s("size").unwrap()),
            )),
            Some("symbol" | "replay_behind") => {}
            other => panic!("unexpected message {other:?}: {v}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_lists_what_tickwire_reads_and_follows_the_directory() {
    let dir = recordings();
    let server = server(&dir, 4).await;
    let (status, body) = get(server.addr, "/recordings").await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_slice(&body).unwrap();
    let by_name: HashMap<String, Value> = list["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
        .collect();
    // TC0: the recordings, not the README, the hidden file or the link out.
    let mut names: Vec<&str> = by_name.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["bundled.jsonl.gz", "trades.csv"]);
    // TC1: what it says of them, against the reader's own count.
    let bundled = &by_name["bundled.jsonl.gz"];
    let reference = reference(&dir.path("bundled.jsonl.gz"), &[], 0, u64::MAX);
    assert_eq!(
        (bundled["format"].as_str(), bundled["compression"].as_str()),
        (Some("json-lines"), Some("gzip"))
    );
    assert_eq!(
        bundled["symbols"],
        serde_json::json!(["BTCUSDT", "ETHUSDT", "BTCUSD_PERP"])
    );
    assert_eq!(bundled["updates"].as_u64(), Some(reference.len() as u64));
    assert!(bundled["book_levels"].as_u64() > Some(0));
    let (first, last) = (
        bundled["first_ts"].as_u64().unwrap(),
        bundled["last_ts"].as_u64().unwrap(),
    );
    assert!(
        first >= 1_723_161_253_000_000_000 && last > first + 30_000_000_000,
        "{bundled}"
    );
    let trades = &by_name["trades.csv"];
    assert_eq!(trades["format"], "tardis-csv");
    assert_eq!(trades["symbols"], serde_json::json!(["BTCUSDT"]));
    // TC2: a file added while running shows up; one removed goes away.
    std::fs::copy(dir.path("trades.csv"), dir.path("more.csv")).unwrap();
    std::fs::remove_file(dir.path("bundled.jsonl.gz")).unwrap();
    let (_, body) = get(server.addr, "/recordings").await;
    let list: Value = serde_json::from_slice(&body).unwrap();
    let names: Vec<&str> = list["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["more.csv", "trades.csv"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_never_leave_the_directory() {
    let dir = recordings();
    let server = server(&dir, 4).await;
    for (query, status) in [
        ("recording=..%2F..%2Fetc%2Fpasswd", 400),
        ("recording=%2Fetc%2Fpasswd", 400),
        ("recording=..", 400),
        ("recording=.hidden.jsonl.gz", 400),
        ("recording=a%5Cb", 400),
        ("recording=", 400),
        ("recording=nothing.csv", 404),
        ("recording=outside.jsonl", 403),
        ("symbols=BTCUSDT", 400),
        ("recording=trades.csv&from=yesterday", 400),
        ("recording=trades.csv&speed=0", 400),
        ("recording=trades.csv&channels=book.7", 400),
        (
            "recording=trades.csv&from=2020-02-23T00:00:00Z&to=2020-02-22T00:00:00Z",
            400,
        ),
    ] {
        let (got, body) = get(server.addr, &format!("/replay.ndjson?{query}")).await;
        assert_eq!(got, status, "{query}: {}", String::from_utf8_lossy(&body));
    }
    let text = metrics_text(server.addr).await;
    assert_eq!(metric(&text, "tickwire_replay_refused_total"), 13);
    assert_eq!(metric(&text, "tickwire_replay_sessions_total"), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_the_recording_update_by_update() {
    let dir = recordings();
    let server = server(&dir, 4).await;
    let path = dir.path("bundled.jsonl.gz");
    // TC0: everything, as fast as it is read.
    let (status, body) = get(server.addr, "/replay.ndjson?recording=bundled.jsonl.gz").await;
    assert_eq!(status, 200);
    let want = reference(&path, &[], 0, u64::MAX);
    assert!(want.len() > 5_000, "{}", want.len());
    assert_eq!(ticks(&body), want);
    // TC1: one symbol, in a window given as RFC 3339 and as ns.
    let (from, to) = (1_723_161_260_000_000_000u64, 1_723_161_270_000_000_000u64);
    let q = "recording=bundled.jsonl.gz&symbols=ETHUSDT&from=2024-08-08T23:54:20Z&to=1723161270000000000";
    let (status, body) = get(server.addr, &format!("/replay.ndjson?{q}")).await;
    assert_eq!(status, 200);
    let want = reference(&path, &["ETHUSDT"], from, to);
    assert!(want.len() > 100, "{}", want.len());
    assert_eq!(ticks(&body), want);
    // TC2: a live server's numbers and counters are not the session's.
    let text = metrics_text(server.addr).await;
    assert_eq!(metric(&text, "tickwire_replay_sessions_total"), 2);
    assert_eq!(
        metric(&text, "tickwire_updates_in_total"),
        metric(&text, "tickwire_frames_encoded_total")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_waits_the_replay_and_loses_nothing_and_sessions_are_limited() {
    let dir = recordings();
    // 87,000 updates, some 20 MB of JSON: more than the sockets hold.
    std::fs::copy(
        real("binance-usdm-BTCUSDT-20240808-hftbacktest.jsonl.gz"),
        dir.path("usdm.jsonl.gz"),
    )
    .unwrap();
    let server = server(&dir, 1).await;
    let path = dir.path("usdm.jsonl.gz");
    // A client that reads a little, then nothing for a while. Through the
    // default receive buffer: a small fixed one can leave the window
    // smaller than the server's segment size once the client reads again,
    // and the rest then crawls at one segment per persist timeout (see the
    // stall test in `limits.rs`).
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(
        b"GET /replay.ndjson?recording=usdm.jsonl.gz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut raw = vec![0u8; 4096];
    let n = slow.read(&mut raw).await.unwrap();
    raw.truncate(n);
    // TC0: the one session allowed is taken: the next request is refused.
    eventually_async(Duration::from_secs(10), "the session counted", || async {
        let n = metric(&metrics_text(server.addr).await, "tickwire_replay_sessions");
        if n == 1 {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    let (status, _) = get(server.addr, "/replay.ndjson?recording=trades.csv").await;
    assert_eq!(status, 503);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // TC1: the slow client then reads the rest: all of it, in order.
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).await.unwrap();
    raw.extend_from_slice(&rest);
    let (status, body) = split_response(&raw);
    assert_eq!(status, 200);
    assert_eq!(ticks(&body), reference(&path, &[], 0, u64::MAX));
    // TC2: its slot is given back.
    eventually_async(Duration::from_secs(10), "the slot given back", || async {
        let n = metric(&metrics_text(server.addr).await, "tickwire_replay_sessions");
        if n == 0 {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    let (status, _) = get(server.addr, "/replay.ndjson?recording=trades.csv").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_recordings_directory_there_is_no_replay() {
    let server = start(ServeConfig::default()).await;
    for path in ["/recordings", "/replay.ndjson?recording=x"] {
        assert_eq!(get(server.addr, path).await.0, 404, "{path}");
    }
    server.stop().await;
}

/// A WebSocket replay session in `subprotocol`.
async fn replay_ws(addr: std::net::SocketAddr, query: &str, subprotocol: &str) -> Client {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/replay?{query}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", subprotocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], subprotocol);
    Client::new(ws)
}

/// A decoded quote or trade as a [`Tick`].
fn tick(c: &Client, m: &Msg) -> Option<Tick> {
    match m {
        Msg::Quote {
            id,
            bid,
            bid_size,
            ask,
            ask_size,
            ..
        } => Some((
            c.name(*id).to_owned(),
            "quote",
            format!("{bid} {bid_size:?} {ask} {ask_size:?}"),
        )),
        Msg::Trade {
            id, price, size, ..
        } => Some((c.name(*id).to_owned(), "trade", format!("{price} {size}"))),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_replay_sends_the_live_frames_and_ends_with_a_close() {
    let dir = recordings();
    let server = server(&dir, 4).await;
    let path = dir.path("bundled.jsonl.gz");
    let mut c = replay_ws(
        server.addr,
        "recording=bundled.jsonl.gz&symbols=BTCUSDT,BTCUSD_PERP",
        "tickwire.v1",
    )
    .await;
    let mut got = Vec::new();
    let end = loop {
        let m = c.next().await;
        if let Some(t) = tick(&c, &m) {
            got.push(t);
        } else if let Msg::Control(v) = &m {
            assert_eq!(v["type"], "replay_end", "{v}");
            break v.clone();
        }
    };
    let want = reference(&path, &["BTCUSDT", "BTCUSD_PERP"], 0, u64::MAX);
    assert_eq!(got, want);
    assert!(end["updates"].as_u64() >= Some(want.len() as u64), "{end}");
    // Then a close, 1000.
    assert_eq!(
        c.until_closed(Duration::from_secs(5)).await.map(|c| c.0),
        Some(1000)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_controls_pause_resume_and_change_the_speed_and_nothing_is_lost() {
    let dir = recordings();
    let server = server(&dir, 4).await;
    let path = dir.path("bundled.jsonl.gz");
    // At the recorded pace: 40 s of data, unless the speed changes.
    let mut c = replay_ws(
        server.addr,
        "recording=bundled.jsonl.gz&symbols=ETHUSDT&speed=1",
        "tickwire.v1.json",
    )
    .await;
    let mut got = Vec::new();
    while got.len() < 20 {
        let m = c.next().await;
        got.extend(tick(&c, &m));
    }
    // TC0: pause, acknowledged; once what was on the way has come, nothing
    // more while paused.
    c.send(r#"{"op":"pause","id":1}"#).await;
    loop {
        match c.next().await {
            Msg::Control(v) if v["type"] == "ack" => {
                assert_eq!(
                    (v["op"].as_str(), v["id"].as_u64()),
                    (Some("pause"), Some(1))
                );
                break;
            }
            m => got.extend(tick(&c, &m)),
        }
    }
    while let Some(m) = c.next_within(Duration::from_millis(700)).await {
        got.extend(tick(&c, &m));
    }
    assert!(
        c.next_within(Duration::from_millis(1500)).await.is_none(),
        "a message while paused"
    );
    // TC1: resume at full speed: the rest, all of it, then the end.
    c.send(r#"{"op":"speed","speed":"max","id":2}"#).await;
    c.send(r#"{"op":"resume","id":3}"#).await;
    let mut acks = Vec::new();
    loop {
        match c.next().await {
            Msg::Control(v) if v["type"] == "ack" => {
                acks.push(v["op"].as_str().unwrap().to_owned())
            }
            Msg::Control(v) if v["type"] == "replay_end" => break,
            m => got.extend(tick(&c, &m)),
        }
    }
    assert_eq!(acks, ["speed", "resume"]);
    assert_eq!(got, reference(&path, &["ETHUSDT"], 0, u64::MAX));
    // TC2: what a session does not take is refused, and the connection kept.
    let mut c = replay_ws(
        server.addr,
        "recording=trades.csv&speed=1",
        "tickwire.v1.json",
    )
    .await;
    c.send(r#"{"op":"subscribe","symbols":["*"],"id":4}"#).await;
    c.send(r#"{"op":"speed","speed":-1,"id":5}"#).await;
    let mut codes = Vec::new();
    while codes.len() < 2 {
        if let Msg::Control(v) = c.next().await {
            if v["type"] == "error" {
                codes.push(v["code"].as_u64().unwrap());
            }
        }
    }
    assert_eq!(codes, [4001, 4008]);
    // TC3: on /ws, a control is an unknown op.
    let mut live = Client::connect(server.addr, "tickwire.v1.json").await;
    live.send(r#"{"op":"pause","id":6}"#).await;
    let v = live.next_control().await;
    assert_eq!(
        (v["type"].as_str(), v["code"].as_u64()),
        (Some("error"), Some(4001))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_replays_from_the_new_time_under_new_numbers() {
    let dir = recordings();
    let server = server(&dir, 4).await;
    let path = dir.path("bundled.jsonl.gz");
    let mut c = replay_ws(
        server.addr,
        "recording=bundled.jsonl.gz&symbols=ETHUSDT&speed=1",
        "tickwire.v1.json",
    )
    .await;
    let mut before = Vec::new();
    while before.len() < 10 {
        let m = c.next().await;
        before.extend(tick(&c, &m));
    }
    let to = 1_723_161_280_000_000_000u64;
    c.send(r#"{"op":"speed","speed":"max","id":1}"#).await;
    c.send(r#"{"op":"seek","to":"2024-08-08T23:54:40Z","id":2}"#)
        .await;
    let mut after = Vec::new();
    let mut sought = false;
    let mut acks = Vec::new();
    loop {
        match c.next().await {
            Msg::Control(v) if v["type"] == "ack" => {
                acks.push(v["op"].as_str().unwrap().to_owned())
            }
            Msg::Control(v) if v["type"] == "replay_seek" => {
                assert_eq!(v["from"].as_u64(), Some(to));
                sought = true;
            }
            Msg::Control(v) if v["type"] == "replay_end" => break,
            m if sought => after.extend(tick(&c, &m)),
            m => before.extend(tick(&c, &m)),
        }
    }
    assert_eq!(acks, ["speed", "seek"]);
    // Before the seek, the recording from its start; after it, from the
    // time asked, whole, at the speed asked before it.
    let all = reference(&path, &["ETHUSDT"], 0, u64::MAX);
    assert_eq!(before[..], all[..before.len()]);
    assert_eq!(after, reference(&path, &["ETHUSDT"], to, u64::MAX));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_session_whose_client_stalls_says_it_is_behind_and_still_sends_everything() {
    let dir = recordings();
    std::fs::copy(
        real("binance-usdm-BTCUSDT-20240808-hftbacktest.jsonl.gz"),
        dir.path("usdm.jsonl.gz"),
    )
    .unwrap();
    let server = server(&dir, 4).await;
    let path = dir.path("usdm.jsonl.gz");
    // 30 times the recorded pace, in a window of 120 s of recording (4 s,
    // some 9 MB of JSON, more than the sockets between hold).
    let (from, to) = (1_723_161_300_000_000_000u64, 1_723_161_420_000_000_000u64);
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(
        format!("GET /replay.ndjson?recording=usdm.jsonl.gz&speed=30&from={from}&to={to} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = vec![0u8; 4096];
    let n = slow.read(&mut raw).await.unwrap();
    raw.truncate(n);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).await.unwrap();
    raw.extend_from_slice(&rest);
    let (_, body) = split_response(&raw);
    let behind: Vec<Value> = body
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(br#"{"type":"replay_behind""#))
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert!(!behind.is_empty(), "no replay_behind notice");
    assert!(
        behind[0]["behind_ms"].as_u64() >= Some(1000),
        "{:?}",
        behind[0]
    );
    assert_eq!(ticks(&body), reference(&path, &[], from, to));
    server.stop().await;
}

/// The book of `symbol` as the levels recorded before `from` leave it,
/// applied in the file's order: (bids best first, asks best first), each
/// level as text at the symbol's decimals.
type Side = Vec<(String, String)>;
fn book_before(path: &Path, symbol: &str, from: u64) -> (Side, Side) {
    use std::collections::BTreeMap;
    use tickwire::update::{level_flags, BookSide};
    let table = SymbolTable::new();
    let mut normalizer = Normalizer::new(table.clone());
    let spec = FeedSpec::File(path.to_owned());
    let (mut bids, mut asks) = (BTreeMap::new(), BTreeMap::new());
    let mut decimals = (0, 0);
    for item in FileReader::open(&spec, &mut normalizer, Default::default()).unwrap() {
        let t = item.unwrap();
        let def = table.get(t.update.symbol).unwrap();
        if t.pace_ns.unwrap_or(0) >= from || &*def.name != symbol {
            continue;
        }
        decimals = (def.price_decimals, def.size_decimals);
        if let UpdateKind::Level {
            side,
            px,
            sz,
            flags,
        } = t.update.kind
        {
            if flags & level_flags::RESET != 0 {
                bids.clear();
                asks.clear();
            }
            let book = match side {
                BookSide::Bid => &mut bids,
                BookSide::Ask => &mut asks,
            };
            if sz == 0 {
                book.remove(&px);
            } else {
                book.insert(px, sz);
            }
        }
    }
    let text = |(px, sz): (&i64, &i64)| {
        let f = |m: i64, d: u8| {
            tickwire::decimal::Fixed {
                mantissa: m,
                decimals: d,
            }
            .to_string()
        };
        (f(*px, decimals.0), f(*sz, decimals.1))
    };
    (
        bids.iter().rev().map(text).collect(),
        asks.iter().map(text).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_of_a_log_is_the_logs_window_and_a_book_starts_from_its_state_then() {
    // A log as `record` writes it: the bundled recording as published,
    // paced by publish time, in blocks.
    let dir = recordings();
    let log = dir.path("bundled.twlog");
    binary::record_max(bundled_path(), &log);
    let everything = reference(&log, &[], 0, u64::MAX);
    // Its times: the window starts 60 % of the way in, past whole blocks.
    let times: Vec<u64> = {
        let mut n = Normalizer::new(SymbolTable::new());
        FileReader::open(&FeedSpec::File(log.clone()), &mut n, Default::default())
            .unwrap()
            .map(|t| t.unwrap().pace_ns.unwrap())
            .collect()
    };
    assert!(
        times.len() > 3 * 4096,
        "{} updates: too few blocks",
        times.len()
    );
    let from = times[times.len() * 6 / 10];
    let to = times[times.len() * 9 / 10];
    let server = server(&dir, 4).await;
    // TC0: quotes and trades of the window, of every symbol and of one;
    // first before the catalog has read the log (its blocks before the
    // window are read and passed over), then after (its block index
    // seeks to the window's first block).
    let counters = |text: &str| {
        (
            metric(text, "tickwire_replay_passed_over_total"),
            metric(text, "tickwire_replay_jumped_bytes_total"),
        )
    };
    for indexed in [false, true] {
        if indexed {
            // Described from its blocks: the same counts and times as the
            // reader's.
            let (status, body) = get(server.addr, "/recordings").await;
            assert_eq!(status, 200);
            let list: Value = serde_json::from_slice(&body).unwrap();
            let entry = list["recordings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "bundled.twlog")
                .unwrap();
            assert_eq!(entry["format"], "tickwire-log");
            let n = entry["updates"].as_u64().unwrap() + entry["book_levels"].as_u64().unwrap();
            assert_eq!(n, times.len() as u64);
            assert_eq!(entry["first_ts"].as_u64(), times.iter().min().copied());
            assert_eq!(entry["last_ts"].as_u64(), times.iter().max().copied());
            assert_eq!(entry["symbols"].as_array().unwrap().len(), 3);
        }
        for symbols in [&[][..], &["BTCUSDT"]] {
            let before = counters(&metrics_text(server.addr).await);
            let q = format!(
                "recording=bundled.twlog&from={from}&to={to}{}",
                symbols
                    .first()
                    .map(|s| format!("&symbols={s}"))
                    .unwrap_or_default()
            );
            let (status, body) = get(server.addr, &format!("/replay.ndjson?{q}")).await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            let want = reference(&log, symbols, from, to);
            assert!(want.len() > 100 && want.len() < everything.len() / 2);
            assert_eq!(ticks(&body), want, "{symbols:?}");
            let after = counters(&metrics_text(server.addr).await);
            let (passed, jumped) = (after.0 - before.0, after.1 - before.1);
            if indexed {
                // Straight to the block that holds `from`.
                assert!(
                    jumped > 100_000 && passed == 0,
                    "{jumped} B, {passed} passed"
                );
            } else {
                // Whole blocks of 4,096 read and passed over.
                assert!(jumped == 0 && passed >= 4096, "{jumped} B, {passed} passed");
            }
        }
    }
    // TC1: the full book from the window's start: its first message is a
    // snapshot of the book the levels before `from` built, then changes.
    let q = format!("recording=bundled.twlog&symbols=BTCUSDT&channels=book&from={from}&to={to}");
    let (status, body) = get(server.addr, &format!("/replay.ndjson?{q}")).await;
    assert_eq!(status, 200);
    let messages: Vec<Value> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<Value>(l).unwrap())
        .collect();
    // Only the symbol asked for is defined, once.
    let defined: Vec<&Value> = messages.iter().filter(|v| v["type"] == "symbol").collect();
    assert_eq!(defined.len(), 1);
    assert_eq!(defined[0]["symbol"], "BTCUSDT");
    let books: Vec<Value> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<Value>(l).unwrap())
        .filter(|v| v["type"] == "book")
        .collect();
    assert!(books.len() > 10, "{} book messages", books.len());
    assert_eq!(books[0]["snapshot"], true, "{}", books[0]);
    assert!(books[1..].iter().all(|b| b["snapshot"] == false));
    let side = |v: &Value| -> Side {
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l[0].as_str().unwrap().to_owned(),
                    l[1].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let (bids, asks) = book_before(&log, "BTCUSDT", from);
    assert!(bids.len() >= 10 && asks.len() >= 10);
    assert_eq!(
        (side(&books[0]["bids"]), side(&books[0]["asks"])),
        (bids, asks)
    );
    // The changes go on from the snapshot's number, gapless.
    let seqs: Vec<u64> = books
        .iter()
        .map(|b| b["book_seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_line_format_starts_past_the_lines_before_the_window() {
    let dir = recordings();
    let server = server(&dir, 4).await;
    let jumped = |text: &str| metric(text, "tickwire_replay_jumped_lines_total");
    // TC0: a Tardis CSV, from its 9,000th trade's capture time (µs there):
    // unlisted, read from the top; listed, from its third run of 4,096
    // lines, the header read first.
    let path = dir.path("trades.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let row = text.lines().nth(9_000).unwrap();
    let from = row.split(',').nth(3).unwrap().parse::<u64>().unwrap() * 1_000;
    let want = reference(&path, &[], from, u64::MAX);
    assert!((950..1_100).contains(&want.len()), "{}", want.len());
    for listed in [false, true] {
        if listed {
            assert_eq!(get(server.addr, "/recordings").await.0, 200);
        }
        let before = jumped(&metrics_text(server.addr).await);
        let q = format!("/replay.ndjson?recording=trades.csv&from={from}");
        let (status, body) = get(server.addr, &q).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(ticks(&body), want);
        let lines = jumped(&metrics_text(server.addr).await) - before;
        assert_eq!(lines, if listed { 8_192 } else { 0 });
    }
    // TC1: the bundled capture (JSON lines, gzip), listed, late in it: the
    // window whole, whatever the runs passed.
    let path = dir.path("bundled.jsonl.gz");
    let from = 1_723_161_285_000_000_000u64;
    let q = format!("/replay.ndjson?recording=bundled.jsonl.gz&from={from}");
    let (status, body) = get(server.addr, &q).await;
    assert_eq!(status, 200);
    let want = reference(&path, &[], from, u64::MAX);
    assert!(want.len() > 500, "{}", want.len());
    assert_eq!(ticks(&body), want);
    server.stop().await;
}
