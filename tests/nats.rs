//! Feed node and edge nodes over NATS: real nats-server processes (Debian's
//! `nats-server`, which scripts/test installs) with JetStream on free ports,
//! real `tickwire` processes, real WebSocket clients.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// Generous: only to turn a hang into a failure.
const PATIENCE: Duration = Duration::from_secs(30);

fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER") {
        return bin.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .expect("nats-server not found: scripts/test installs it (apt-get install nats-server)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A nats-server with JetStream, its store in a directory of its own.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl NatsServer {
    fn start() -> NatsServer {
        let port = free_port();
        let dir = TempDir::new(&format!("nats-{port}"));
        let mut server = NatsServer {
            child: None,
            port,
            dir,
        };
        server.restart();
        server
    }

    /// Starts (again) on the same port and store.
    fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = binary::dies_with_test(&mut Command::new(nats_server_bin()))
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
        let listening = eventually_blocking(PATIENCE, || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        assert!(listening, "nats-server did not listen");
    }

    /// SIGKILL: a crash, not a clean shutdown.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `tickwire serve` process, killed when dropped (or with the test's
/// thread); its log goes to the test's stderr if the test fails.
struct Node {
    bin: Binary,
    addr: SocketAddr,
}

impl Node {
    fn spawn(label: &str, args: &[&str]) -> Node {
        let bin = Binary::serve_with(
            binary::dies_with_test(&mut binary::tickwire())
                .arg("serve")
                .args(["--listen", "127.0.0.1:0"])
                .args(args)
                .env("RUST_LOG", "warn,tickwire=info")
                .env("NO_COLOR", "1"),
        )
        .labelled(label);
        let addr = bin.addr();
        Node { bin, addr }
    }

    fn kill(&mut self) {
        self.bin.kill();
    }

    async fn healthz(&self) -> serde_json::Value {
        let (status, text) = http_get(
            self.addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200, "{text}");
        let body = text.split_once("\r\n\r\n").unwrap().1;
        serde_json::from_str(body).unwrap()
    }

    /// Waits until `/healthz` satisfies `ok`.
    async fn wait_health(&self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
        eventually_async(PATIENCE, what, || async {
            let h = self.healthz().await;
            if ok(&h) {
                Ok(())
            } else {
                Err(h.to_string())
            }
        })
        .await
    }

    async fn wait_live(&self) {
        self.wait_health("edge live", |h| h["feeds"][0]["connected"] == true)
            .await;
    }
}

/// One quote or trade as a client sees it, by symbol name (ids are each
/// node's own).
#[derive(Debug, Clone, PartialEq)]
struct Tick {
    name: String,
    symbol_seq: u64,
    receive_ts: u64,
    publish_ts: u64,
    values: String,
}

fn tick(c: &Client, m: &Msg) -> Option<Tick> {
    let (id, symbol_seq, receive_ts, publish_ts, values) = match m {
        Msg::Quote {
            id,
            symbol_seq,
            receive_ts,
            publish_ts,
            bid,
            bid_size,
            ask,
            ask_size,
            ..
        } => (
            id,
            symbol_seq,
            receive_ts,
            publish_ts,
            format!("{bid}x{bid_size:?}/{ask}x{ask_size:?}"),
        ),
        Msg::Trade {
            id,
            symbol_seq,
            receive_ts,
            publish_ts,
            price,
            size,
            side,
            ..
        } => (
            id,
            symbol_seq,
            receive_ts,
            publish_ts,
            format!("{price}x{size} {side}"),
        ),
        _ => return None,
    };
    Some(Tick {
        name: c.name(*id).to_owned(),
        symbol_seq: *symbol_seq,
        receive_ts: *receive_ts,
        publish_ts: *publish_ts,
        values,
    })
}

/// What a watching client has received.
#[derive(Default)]
struct Seen {
    ticks: Vec<Tick>,
    /// Statuses: an edge's book can be stale for a moment (a snapshot
    /// older than the last event it loads), and its snapshot says so.
    statuses: usize,
    /// Symbol definitions by name: (price decimals, size decimals).
    definitions: BTreeMap<String, (u8, u8)>,
    /// Set when the connection ended, with the close frame if any.
    closed: Option<Option<(u16, String)>>,
}

/// A client subscribed to `*` that reads everything as it comes, on a task
/// of its own (a client that is not read falls behind and is conflated).
struct Watcher {
    seen: Arc<Mutex<Seen>>,
    /// Ticks in the snapshot after the subscribe ack.
    snapshot: usize,
}

impl Watcher {
    async fn subscribe_all(addr: SocketAddr, subprotocol: &str) -> Watcher {
        let mut client = Client::connect(addr, subprotocol).await;
        client.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
        let ack = client.next_control().await;
        assert_eq!(ack["type"], "ack", "{ack}");
        let snapshot = ack["snapshot"].as_u64().unwrap() as usize;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let m = client.next_within(Duration::from_secs(3600)).await;
                let mut seen = shared.lock().unwrap();
                match m {
                    None => continue,
                    Some(Msg::Closed(c)) => {
                        seen.closed = Some(c);
                        return;
                    }
                    Some(Msg::Symbol {
                        name,
                        price_decimals,
                        size_decimals,
                        ..
                    }) => {
                        seen.definitions
                            .insert(name, (price_decimals, size_decimals));
                    }
                    Some(Msg::Status { .. }) => seen.statuses += 1,
                    Some(m) => seen.ticks.extend(tick(&client, &m)),
                }
            }
        });
        let w = Watcher { seen, snapshot };
        // The snapshot's frames: the values, and the statuses among them.
        eventually_async(PATIENCE, "the snapshot", || async {
            let seen = w.seen.lock().unwrap();
            let n = seen.ticks.len() + seen.statuses;
            if n >= snapshot {
                Ok(())
            } else {
                Err(format!("{n} of {snapshot}"))
            }
        })
        .await;
        w
    }

    /// Waits until `done(ticks)`; panics on a close or after [`PATIENCE`].
    async fn wait_for(&self, done: impl Fn(&[Tick]) -> bool) {
        eventually_async(PATIENCE, "timed out", || async {
            let seen = self.seen.lock().unwrap();
            if done(&seen.ticks) {
                return Ok(());
            }
            assert!(seen.closed.is_none(), "disconnected: {:?}", seen.closed);
            Err(format!("after {} ticks", seen.ticks.len()))
        })
        .await
    }

    /// Waits until every symbol of `want` has reached its `symbol_seq`.
    async fn wait_converged(&self, want: &BTreeMap<String, Tick>) {
        self.wait_for(|t| {
            let latest: BTreeMap<&str, u64> =
                t.iter().map(|t| (t.name.as_str(), t.symbol_seq)).collect();
            want.iter()
                .all(|(name, last)| latest.get(name.as_str()) == Some(&last.symbol_seq))
        })
        .await;
    }

    /// Waits until the server ends the connection.
    async fn wait_closed(&self) {
        eventually(PATIENCE, "not disconnected", || {
            self.seen.lock().unwrap().closed.is_some()
        })
        .await;
    }

    fn ticks(&self) -> Vec<Tick> {
        self.seen.lock().unwrap().ticks.clone()
    }

    /// The newest tick of each symbol.
    fn latest(&self) -> BTreeMap<String, Tick> {
        self.ticks()
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect()
    }

    fn definitions(&self) -> BTreeMap<String, (u8, u8)> {
        self.seen.lock().unwrap().definitions.clone()
    }
}

/// Ticks grouped by symbol, in arrival order.
fn by_symbol(ticks: &[Tick]) -> BTreeMap<String, Vec<Tick>> {
    let mut out: BTreeMap<String, Vec<Tick>> = BTreeMap::new();
    for t in ticks {
        out.entry(t.name.clone()).or_default().push(t.clone());
    }
    out
}

/// Never an older (or the same) update of a symbol after a newer one.
fn assert_increasing(who: &str, ticks: &[Tick]) {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for t in ticks {
        let prev = last.insert(&t.name, t.symbol_seq).unwrap_or(0);
        assert!(
            t.symbol_seq > prev,
            "{who}: {} symbol_seq {} after {prev}",
            t.name,
            t.symbol_seq
        );
    }
}

fn feed_args<'a>(nats: &'a str, speed: &'a str, recording: &'a str) -> Vec<&'a str> {
    vec![
        "--feed",
        recording,
        "--speed",
        speed,
        "--publish",
        nats,
        // Held until the feed node's own watcher has subscribed.
        "--min-subscribers",
        "1",
        "--max-lag-updates",
        NEVER_CONFLATED,
    ]
}

/// The recording is shorter than this: a client that falls behind on a
/// busy machine is not conflated, and gets every update.
const NEVER_CONFLATED: &str = "16000";

fn spawn_edge(label: &str, nats: &str) -> Node {
    Node::spawn(
        label,
        &["--feed", nats, "--max-lag-updates", NEVER_CONFLATED],
    )
}

/// Waits for the feed node's recording to end; returns how many updates it
/// published.
async fn wait_finished(feed: &Node) -> usize {
    wait_finished_after(feed, 0).await
}

/// [`wait_finished`] for a feed node that published `restored` values of
/// its own before its feed ran: the feed's reader finishes a moment before
/// the publisher has published its last updates, so this waits for both.
async fn wait_finished_after(feed: &Node, restored: u64) -> usize {
    feed.wait_health("feed finished and all of it published", |h| {
        let fed = h["feeds"][0]["updates"].as_u64().unwrap_or(u64::MAX);
        h["feeds"][0]["state"] == "finished" && h["updates"].as_u64() == Some(fed + restored)
    })
    .await;
    feed.healthz().await["updates"].as_u64().unwrap() as usize
}

/// A feed node started with `args`, connected to NATS, and two live edges;
/// a binary client on the first edge and a JSON one on the second, then a
/// binary one on the feed node (the subscriber that releases the feed).
async fn feed_and_two_edges(url: &str, args: &[&str]) -> (Node, [Node; 2], [Watcher; 2], Watcher) {
    let feed = Node::spawn("feed", args);
    feed.wait_health("feed node connected", |h| h["publish"]["connected"] == true)
        .await;
    let edges = [spawn_edge("edge1", url), spawn_edge("edge2", url)];
    for e in &edges {
        e.wait_live().await;
    }
    let on_edges = [
        Watcher::subscribe_all(edges[0].addr, "tickwire.v1").await,
        Watcher::subscribe_all(edges[1].addr, "tickwire.v1.json").await,
    ];
    let on_feed = Watcher::subscribe_all(feed.addr, "tickwire.v1").await;
    (feed, edges, on_edges, on_feed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_serve_the_feed_nodes_exact_sequences() {
    let nats = NatsServer::start();
    let url = nats.url();
    let recording = bundled_path();
    let (feed, edges, on_edges, on_feed) =
        feed_and_two_edges(&url, &feed_args(&url, "8", &recording)).await;
    let total = wait_finished(&feed).await;
    assert!(total > 5000, "{total}");
    on_feed.wait_for(|t| t.len() >= total).await;
    let want = by_symbol(&on_feed.ticks());
    assert_eq!(want.len(), 3, "{:?}", want.keys());
    for (i, w) in on_edges.iter().enumerate() {
        w.wait_for(|t| t.len() >= total).await;
        let ticks = w.ticks();
        assert_eq!(ticks.len(), total, "edge {i}: nothing extra");
        // Per symbol: the same updates, numbers, prices and timestamps.
        let got = by_symbol(&ticks);
        for (name, ticks) in &want {
            assert_eq!(&got[name], ticks, "edge {i}, {name}");
            let seqs: Vec<u64> = ticks.iter().map(|t| t.symbol_seq).collect();
            assert_eq!(seqs, (1..=ticks.len() as u64).collect::<Vec<_>>());
        }
        assert_eq!(w.definitions(), on_feed.definitions(), "edge {i}");
    }
    for e in &edges {
        let h = e.healthz().await;
        let f = &h["feeds"][0];
        assert_eq!(
            (f["gaps"].as_u64(), f["reconnects"].as_u64()),
            (Some(0), Some(0)),
            "{h}"
        );
        assert_eq!(f["updates"].as_u64(), Some(total as u64), "{h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_keeps_edge_clients_and_they_converge() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let recording = bundled_path();
    // A small buffer, so that the outage shows latest-value-wins.
    let mut args = feed_args(&url, "5", &recording);
    args.extend(["--publish-buffer-updates", "64"]);
    let (feed, edges, on_edges, on_feed) = feed_and_two_edges(&url, &args).await;

    // Mid-stream: a crash, 1.5 s down, back on the same port and store.
    on_edges[0].wait_for(|t| t.len() >= 500).await;
    nats.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nats.restart();

    let total = wait_finished(&feed).await;
    on_feed.wait_for(|t| t.len() >= total).await;
    let want = on_feed.latest();
    let all: HashMap<(String, u64), Tick> = on_feed
        .ticks()
        .into_iter()
        .map(|t| ((t.name.clone(), t.symbol_seq), t))
        .collect();
    for (i, w) in on_edges.iter().enumerate() {
        // Converges to the feed node's last value of every symbol (never
        // disconnected: wait_for panics on a close).
        w.wait_converged(&want).await;
        assert_eq!(w.latest(), want, "edge {i}");
        let ticks = w.ticks();
        assert_increasing(&format!("edge {i}"), &ticks);
        // Everything it got is an update the feed node published, as published.
        for t in &ticks {
            assert_eq!(
                Some(t),
                all.get(&(t.name.clone(), t.symbol_seq)),
                "edge {i}"
            );
        }
        // The outage was conflated: the edge skipped updates.
        assert!(ticks.len() < total, "edge {i}: {} of {total}", ticks.len());
    }
    for e in &edges {
        let h = e.healthz().await;
        let f = &h["feeds"][0];
        assert_eq!(f["connected"], true, "{h}");
        assert!(f["reconnects"].as_u64() >= Some(1), "{h}");
        assert!(f["gaps"].as_u64() >= Some(1), "{h}");
        assert_eq!(h["connections"], 1, "{h}");
    }
    let h = feed.healthz().await;
    assert!(h["publish"]["reconnects"].as_u64() >= Some(1), "{h}");
    assert_eq!(h["publish"]["connected"], true, "{h}");
    assert!(h["publish"]["conflated"].as_u64() > Some(0), "{h}");
    let metrics = metrics_text(feed.addr).await;
    assert!(metric(&metrics, "tickwire_nats_publish_reconnects_total") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_edge_starts_from_the_full_snapshot_and_takes_over_clients() {
    let nats = NatsServer::start();
    let url = nats.url();
    let recording = bundled_path();
    let feed = Node::spawn("feed", &feed_args(&url, "max", &recording));
    feed.wait_health("feed node connected", |h| h["publish"]["connected"] == true)
        .await;
    let mut first_edge = spawn_edge("edge1", &url);
    first_edge.wait_live().await;
    let moving = Watcher::subscribe_all(first_edge.addr, "tickwire.v1").await;
    // Releases the feed.
    let _on_feed = Watcher::subscribe_all(feed.addr, "tickwire.v1").await;
    wait_finished(&feed).await;
    // The feed node's last values, from its own snapshot.
    let want = Watcher::subscribe_all(feed.addr, "tickwire.v1")
        .await
        .latest();
    assert_eq!(want.len(), 3);
    moving.wait_converged(&want).await;
    assert_increasing("first edge", &moving.ticks());

    // After the feed has run: a new edge, and its first subscriber.
    let new_edge = spawn_edge("edge3", &url);
    new_edge.wait_live().await;
    // `connected` means the snapshot is loaded into the edge's publisher,
    // not yet published: wait for the last value of each symbol (one
    // subject each) to be in.
    eventually_async(PATIENCE, "the edge's snapshot published", || async {
        let n = metric(
            &metrics_text(new_edge.addr).await,
            "tickwire_updates_in_total",
        );
        if n as usize >= want.len() {
            Ok(())
        } else {
            Err(format!("{n} updates in"))
        }
    })
    .await;
    let fresh = Watcher::subscribe_all(new_edge.addr, "tickwire.v1.json").await;
    let from_feed = Watcher::subscribe_all(feed.addr, "tickwire.v1.json").await;
    // One value per symbol, and (if the edge loaded a book's snapshot
    // older than its last event, as happens when it joins within a second
    // of the feed's end) a status for that book.
    assert!(fresh.snapshot >= want.len(), "{}", fresh.snapshot);
    assert_eq!(fresh.latest(), want);
    assert_eq!(fresh.latest(), from_feed.latest());
    assert_eq!(fresh.definitions(), from_feed.definitions());

    // The first edge dies; its client moves to the new one and checks from
    // the sequences that it missed nothing.
    let before = moving.latest();
    first_edge.kill();
    moving.wait_closed().await;
    let moved = Watcher::subscribe_all(new_edge.addr, "tickwire.v1").await;
    for (name, t) in moved.latest() {
        let seen = before[&name].symbol_seq;
        assert_eq!(
            t.symbol_seq, seen,
            "{name}: resumes with no gap and nothing older"
        );
    }
    assert_eq!(moved.latest(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_feed_node_continues_each_symbols_numbering() {
    let nats = NatsServer::start();
    let url = nats.url();
    let recording = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/binance-spot-BTCUSDT-20230405-head300.jsonl"
    );
    let args = feed_args(&url, "max", recording);
    let mut first = Node::spawn("feed-run1", &args);
    first
        .wait_health("feed node connected", |h| h["publish"]["connected"] == true)
        .await;
    let edge = spawn_edge("edge", &url);
    edge.wait_live().await;
    let on_edge = Watcher::subscribe_all(edge.addr, "tickwire.v1").await;
    let _release = Watcher::subscribe_all(first.addr, "tickwire.v1").await;
    let n = wait_finished(&first).await as u64;
    assert!(n > 100, "{n}");
    on_edge.wait_for(|t| t.len() as u64 >= n).await;
    first.kill();

    // The same recording again: a new run of the feed node starts from the
    // stream's last values, and numbers on from there.
    let second = Node::spawn("feed-run2", &args);
    // Its feed is held (--min-subscribers); the restored value is published.
    second.wait_health("restored", |h| h["updates"] == 1).await;
    let on_second = Watcher::subscribe_all(second.addr, "tickwire.v1").await;
    assert_eq!(on_second.snapshot, 1, "the restored last value");
    assert_eq!(on_second.ticks()[0].symbol_seq, n);
    // Restored value plus the replay.
    let published = wait_finished_after(&second, 1).await as u64;
    assert_eq!(published, n + 1);
    on_second.wait_for(|t| t.len() as u64 > n).await;
    let seqs: Vec<u64> = on_second.ticks().iter().map(|t| t.symbol_seq).collect();
    assert_eq!(seqs, (n..=2 * n).collect::<Vec<_>>());
    // The edge, which outlived the first run, takes the second run whole.
    on_edge.wait_for(|t| t.len() as u64 >= 2 * n).await;
    let ticks = on_edge.ticks();
    assert_increasing("edge", &ticks);
    assert_eq!(ticks.last().map(|t| t.symbol_seq), Some(2 * n));
    let metrics = metrics_text(edge.addr).await;
    assert_eq!(metric(&metrics, "tickwire_updates_out_of_order_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sizes_stay_unknown_from_the_feed_node_to_the_edges() {
    let nats = NatsServer::start();
    let url = nats.url();
    let recording = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/coinbase-sizes-unknown.jsonl"
    );
    let (feed, _edges, on_edges, on_feed) =
        feed_and_two_edges(&url, &feed_args(&url, "max", recording)).await;
    let total = wait_finished(&feed).await;
    on_feed.wait_for(|t| t.len() >= total).await;
    let want = on_feed.ticks();
    let values: Vec<&str> = want.iter().map(|t| t.values.as_str()).collect();
    // What the feed node serves (tests/server.rs checks it against the
    // recording): unknown is `None`, a real 0 is 0.
    assert_eq!(
        values,
        [
            "61.83000000xNone/61.85000000xNone",
            r#"31.21000000xSome("4.20000000")/31.23000000xNone"#,
            r#"31.21000000xSome("0.00000000")/31.23000000xSome("12.50000000")"#,
            r#"0.12330000xNone/0.12350000xSome("1500.50000000")"#,
        ]
    );
    // TC0: live, to a binary and a JSON client of the edges.
    for (i, w) in on_edges.iter().enumerate() {
        w.wait_for(|t| t.len() >= total).await;
        assert_eq!(w.ticks(), want, "edge {i}");
    }
    // TC1: from the JetStream snapshot, to an edge started afterwards.
    let late = spawn_edge("edge3", &url);
    late.wait_live().await;
    let fresh = Watcher::subscribe_all(late.addr, "tickwire.v1").await;
    assert_eq!(fresh.latest(), on_feed.latest());
}

/// Every symbol's book as a new subscriber to `node` gets it: the
/// `book` channel's snapshot of each (levels as text, best first).
async fn books_of(
    node: &Node,
    symbols: usize,
) -> BTreeMap<String, (u64, Vec<(String, String)>, Vec<(String, String)>)> {
    let mut c = Client::connect(node.addr, "tickwire.v1.json").await;
    c.send(r#"{"op":"subscribe","symbols":["*"],"channels":["book"]}"#)
        .await;
    let mut books = BTreeMap::new();
    while books.len() < symbols {
        if let Msg::Book {
            id,
            book_seq,
            snapshot: true,
            bids,
            asks,
            ..
        } = c.next().await
        {
            books.insert(c.name(id).to_owned(), (book_seq, bids, asks));
        }
    }
    books
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn books_reach_edges_and_a_late_edge_starts_from_the_newest_snapshot() {
    let nats = NatsServer::start();
    let url = nats.url();
    let recording = bundled_path();
    let (feed, edges, _on_edges, _on_feed) =
        feed_and_two_edges(&url, &feed_args(&url, "8", &recording)).await;
    wait_finished(&feed).await;
    // TC0: the edges that followed the whole run serve the feed node's
    // books, at its book_seq, once they have taken its last events.
    let want = books_of(&feed, 3).await;
    assert_eq!(want.len(), 3);
    for e in &edges {
        eventually_async(
            PATIENCE,
            "an edge's books equal the feed node's",
            || async {
                let got = books_of(e, 3).await;
                if got == want {
                    Ok(())
                } else {
                    Err(format!(
                        "{:?}",
                        got.values().map(|b| b.0).collect::<Vec<_>>()
                    ))
                }
            },
        )
        .await;
    }
    // TC1: an edge that starts after the feed went quiet gets the newest
    // snapshot of every book (the feed node sends a changed book's state
    // within a second), so the same books.
    let late = spawn_edge("late", &url);
    late.wait_live().await;
    eventually_async(
        PATIENCE,
        "a late edge's books equal the feed node's",
        || async {
            let got = books_of(&late, 3).await;
            if got == want {
                Ok(())
            } else {
                Err(format!(
                    "{:?}",
                    got.values().map(|b| b.0).collect::<Vec<_>>()
                ))
            }
        },
    )
    .await;

    // TC2: the edges that followed the whole run computed the feed node's
    // candles from the trades it published, bar for bar.
    for interval in ["1s", "1m"] {
        let want = candles_of(&feed, interval).await;
        assert_eq!(want.len(), 3, "{interval}: every symbol traded");
        for e in &edges {
            assert_eq!(candles_of(e, interval).await, want, "{interval}");
        }
        // TC3: the late edge joined after the trades: it has no bar rather
        // than bars with trades missing.
        assert!(candles_of(&late, interval).await.is_empty(), "{interval}");
    }
}

/// Each symbol's candle bars at `interval` on `node`, from the snapshot
/// of a `*` subscription (the ack says how many messages it holds).
async fn candles_of(node: &Node, interval: &str) -> BTreeMap<String, Vec<BarText>> {
    let mut c = Client::connect(node.addr, "tickwire.v1.json").await;
    c.send(&format!(
        r#"{{"op":"subscribe","symbols":["*"],"channels":["candles.{interval}"]}}"#
    ))
    .await;
    let ack = c.next_control().await;
    let mut left = ack["snapshot"].as_u64().unwrap();
    let mut out = BTreeMap::new();
    // The snapshot's messages: candles, and any symbol's status (which
    // comes whatever the channels).
    while left > 0 {
        match c.next().await {
            Msg::Candle {
                id,
                list: true,
                snapshot: true,
                bars,
                ..
            } => {
                out.insert(c.name(id).to_owned(), bars);
            }
            Msg::Status { .. } => {}
            Msg::Symbol { .. } => continue,
            other => panic!("{other:?} in a candle snapshot"),
        }
        left -= 1;
    }
    out
}
