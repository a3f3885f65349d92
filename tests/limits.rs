//! Every limit through the real server, with real clients: the refused or
//! closed client gets the documented answer, the metric counts it, and a
//! client that behaves is not disturbed.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::raw::{self, RawWs};
use common::*;
use tickwire::config::ServeConfig;
use tickwire::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

async fn limited_server(config: ServeConfig) -> tickwire::server::Running {
    start(ServeConfig {
        feeds: vec!["synthetic:symbols=5,rate=200".into()],
        ..config
    })
    .await
}

/// A subscribed client that must keep working whatever the others do.
async fn bystander(addr: std::net::SocketAddr) -> Client {
    let mut c = Client::connect(addr, "tickwire.v1").await;
    c.send(r#"{"op":"subscribe","symbols":["*"],"id":1}"#).await;
    assert_eq!(c.next_control().await["type"], "ack");
    c
}

/// The bystander still gets live data and answers to its requests.
async fn assert_undisturbed(c: &mut Client) {
    let mut quotes = 0;
    while quotes < 5 {
        match c.next().await {
            Msg::Quote { .. } | Msg::Trade { .. } => quotes += 1,
            Msg::Closed(close) => panic!("the bystander was closed: {close:?}"),
            _ => {}
        }
    }
    c.send(r#"{"op":"ping","id":77}"#).await;
    loop {
        let v = c.next_control().await;
        if v["type"] == "pong" {
            assert_eq!(v["id"], 77);
            break;
        }
    }
}

/// Waits (up to 10 s) for the metrics to reach a state; fails with them.
async fn metrics_reach(metrics: &Metrics, what: &str, f: impl Fn(&Metrics) -> bool) {
    let reached = within(Duration::from_secs(10), || f(metrics)).await;
    assert!(reached, "{what}:\n{}", metrics.render());
}

fn refused(metrics: &Metrics, reason: &str) -> u64 {
    metric(
        &metrics.render(),
        &format!("tickwire_connections_refused_total{{reason=\"{reason}\"}}"),
    )
}

/// Sends an upgrade from `source` and returns the response head.
async fn try_upgrade(source: IpAddr, addr: std::net::SocketAddr) -> String {
    let mut s = raw::connect_from(source, addr).await.unwrap();
    s.write_all(raw::upgrade_request("/ws").as_bytes())
        .await
        .unwrap();
    raw::read_head(&mut s).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_answers_503_with_retry_after_before_reading() {
    let server = limited_server(ServeConfig {
        max_connections: 3,
        ..ServeConfig::default()
    })
    .await;
    let m = &server.market.metrics;
    let mut by = bystander(server.addr).await;
    // Two idle TCP connections fill the server: the limit counts sockets,
    // not only upgraded ones.
    let idle1 = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _idle2 = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    metrics_reach(m, "three connections", |m| m.tcp_connections.get() == 3).await;

    let head = try_upgrade(ip(1), server.addr).await;
    assert_eq!(raw::status(&head), 503, "{head}");
    assert_eq!(raw::header(&head, "retry-after"), Some("5"));
    // Loopback is not exempt from the total.
    let mut plain = raw::connect_from(ip(1), server.addr).await.unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.ends_with("(max_connections)\n"), "{answer}");
    assert_eq!(refused(m, "max_connections"), 2);
    assert_eq!(m.connections_total.get(), 1, "nothing was upgraded");

    // A place freed is a place taken.
    drop(idle1);
    metrics_reach(m, "the idle socket released", |m| {
        m.tcp_connections.get() == 2
    })
    .await;
    let mut late = RawWs::connect(ip(1), server.addr).await;
    late.send_text(r#"{"op":"ping","id":5}"#).await;
    let (op, pong) = late.read_frame().await.unwrap();
    assert_eq!(op, raw::TEXT);
    assert!(String::from_utf8(pong).unwrap().contains("\"pong\""));
    assert_undisturbed(&mut by).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_429_past_its_open_connections_others_get_in() {
    let server = limited_server(ServeConfig {
        max_connections_per_ip: 2,
        limit_loopback: true,
        ..ServeConfig::default()
    })
    .await;
    let m = &server.market.metrics;
    let mut by = bystander(server.addr).await; // from 127.0.0.1
    let _a1 = RawWs::connect(ip(2), server.addr).await;
    let a2 = RawWs::connect(ip(2), server.addr).await;
    let head = try_upgrade(ip(2), server.addr).await;
    assert_eq!(raw::status(&head), 429, "{head}");
    assert_eq!(raw::header(&head, "retry-after"), Some("5"));
    assert_eq!(refused(m, "max_connections_per_ip"), 1);
    // Another address is not affected.
    let _b = RawWs::connect(ip(3), server.addr).await;
    // A closed connection gives its address a place back.
    drop(a2);
    metrics_reach(m, "a2 released", |m| m.tcp_connections.get() == 3).await;
    let _a3 = RawWs::connect(ip(2), server.addr).await;
    assert_undisturbed(&mut by).await;
    server.stop().await;

    // By default loopback clients are not limited per address (the bench
    // harness opens thousands from 127.0.0.1).
    let server = limited_server(ServeConfig {
        max_connections_per_ip: 2,
        connection_attempts_per_ip_per_min: 2,
        ..ServeConfig::default()
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..6 {
        open.push(RawWs::connect(ip(2), server.addr).await);
    }
    assert_eq!(refused(&server.market.metrics, "max_connections_per_ip"), 0);
    assert_eq!(refused(&server.market.metrics, "rate"), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_attempts_per_minute_get_429_with_the_wait() {
    let server = limited_server(ServeConfig {
        connection_attempts_per_ip_per_min: 3,
        limit_loopback: true,
        ..ServeConfig::default()
    })
    .await;
    let m = &server.market.metrics;
    for _ in 0..3 {
        drop(RawWs::connect(ip(4), server.addr).await);
    }
    let head = try_upgrade(ip(4), server.addr).await;
    assert_eq!(raw::status(&head), 429, "{head}");
    // One attempt comes back every 20 s at 3 per minute.
    let wait: u64 = raw::header(&head, "retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&wait), "{head}");
    assert!(head.len() < 300, "a small fixed answer: {head}");
    assert_eq!(refused(m, "rate"), 1);
    // Refusals are attempts too: a client hammering stays refused.
    assert_eq!(raw::status(&try_upgrade(ip(4), server.addr).await), 429);
    assert_eq!(refused(m, "rate"), 2);
    // Another address is not affected.
    let mut other = RawWs::connect(ip(5), server.addr).await;
    other.send_text(r#"{"op":"ping"}"#).await;
    assert_eq!(other.read_frame().await.unwrap().0, raw::TEXT);
    metrics_reach(m, "refused sockets released", |m| {
        m.tcp_connections.get() == 1
    })
    .await;
    server.stop().await;
}

fn rate_limited_config() -> ServeConfig {
    ServeConfig {
        // One a second: what a test sends in a burst gains no tokens back
        // unless the machine stalls for a second.
        max_inbound_per_sec: 1,
        inbound_burst: 5,
        ..ServeConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_gets_4005_then_1008() {
    let server = limited_server(rate_limited_config()).await;
    let m = &server.market.metrics;
    let mut by = bystander(server.addr).await;
    let mut flood = RawWs::connect(ip(6), server.addr).await;
    let mut sent = 0;
    for i in 0..11 {
        flood
            .send_text(&format!(r#"{{"op":"ping","id":{i}}}"#))
            .await;
        sent += 1;
    }
    let (close, texts) = flood.read_until_close(Duration::from_secs(10)).await;
    // Closed: it goes away, as a client does once it has its close frame
    // (held open, it would keep stop() waiting out the close timeout).
    drop(flood);
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, 1008);
    assert_eq!(
        reason,
        "rate limit exceeded: more than 1 messages per second"
    );
    let pongs = texts.iter().filter(|t| t.contains("\"pong\"")).count();
    let errors: Vec<_> = texts.iter().filter(|t| t.contains("\"error\"")).collect();
    // The burst is served, the first message past it is answered with 4005,
    // the next ones are dropped, and the 11th (5 owed already) closes.
    assert_eq!(pongs, 5, "{texts:?}");
    assert_eq!(errors.len(), 1, "{texts:?}");
    assert!(errors[0].contains("\"code\":4005"), "{}", errors[0]);
    assert_eq!(sent, 11);
    let text = m.render();
    assert_eq!(
        metric(
            &text,
            "tickwire_protocol_errors_total{code=\"4005\",reason=\"rate_limited\"}"
        ),
        1
    );
    assert_eq!(m.rate_limited_messages_total.get(), 5);
    assert_eq!(m.rate_limit_closes_total.get(), 1);
    assert_undisturbed(&mut by).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_rate_limited_and_a_client_that_slows_down_recovers() {
    let server = limited_server(ServeConfig {
        max_inbound_per_sec: 2,
        ..rate_limited_config()
    })
    .await;
    let m = &server.market.metrics;
    let mut by = bystander(server.addr).await;

    // WebSocket pings count like requests: 5 pongs, then one 4005, then 1008.
    let mut pinger = RawWs::connect(ip(7), server.addr).await;
    for _ in 0..40 {
        pinger.send(true, raw::PING, b"hi").await;
    }
    let mut pongs = 0;
    let mut errors = 0;
    let close = loop {
        match pinger.read_frame().await {
            Ok((raw::PONG, p)) => {
                assert_eq!(p, b"hi");
                pongs += 1;
            }
            Ok((raw::TEXT, t)) => {
                assert!(String::from_utf8(t).unwrap().contains("4005"));
                errors += 1;
            }
            Ok((raw::CLOSE, p)) => break u16::from_be_bytes([p[0], p[1]]),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!((pongs, errors, close), (5, 1, 1008));
    // Closed: it goes away, as a client does once it has its close frame
    // (held open, it would keep stop() waiting out the close timeout).
    drop(pinger);

    // A client over its burst that then slows down is served again.
    let mut eager = RawWs::connect(ip(8), server.addr).await;
    for i in 0..6 {
        eager
            .send_text(&format!(r#"{{"op":"ping","id":{i}}}"#))
            .await;
    }
    let mut replies = Vec::new();
    while replies.len() < 6 {
        let (_, t) = eager.read_frame().await.unwrap();
        replies.push(String::from_utf8(t).unwrap());
    }
    assert!(replies[5].contains("4005"), "{replies:?}");
    // One owed at 2 per second: paid back within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    eager.send_text(r#"{"op":"ping","id":99}"#).await;
    let (_, t) = eager.read_frame().await.unwrap();
    let t = String::from_utf8(t).unwrap();
    assert!(t.contains("\"pong\"") && t.contains("\"id\":99"), "{t}");
    assert_eq!(m.rate_limit_closes_total.get(), 1);
    assert_undisturbed(&mut by).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_or_over_fragmented_messages_are_closed() {
    let server = limited_server(ServeConfig {
        max_message_bytes: 1024,
        max_fragments: 4,
        ..ServeConfig::default()
    })
    .await;
    let m = &server.market.metrics;
    let mut by = bystander(server.addr).await;

    // TC0: one frame over the limit.
    let mut c = RawWs::connect(ip(9), server.addr).await;
    c.send(true, raw::TEXT, &[b' '; 2000]).await;
    let (close, _) = c.read_until_close(Duration::from_secs(10)).await;
    drop(c); // closed: it goes away (see TC3)
    assert_eq!(close.map(|c| c.0), Some(1009));

    // TC1: frames each under the limit, over it together.
    let mut c = RawWs::connect(ip(9), server.addr).await;
    c.send(false, raw::TEXT, &[b' '; 600]).await;
    c.send(false, raw::CONTINUATION, &[b' '; 600]).await;
    let (close, _) = c.read_until_close(Duration::from_secs(10)).await;
    drop(c); // closed: it goes away (see TC3)
    let (code, reason) = close.unwrap();
    assert_eq!(
        (code, reason.as_str()),
        (1009, "message too big: more than 1024 bytes")
    );
    assert_eq!(m.message_too_big_closes_total.get(), 2);

    // TC2: a message within 4 frames is served, with a ping between them.
    let mut c = RawWs::connect(ip(9), server.addr).await;
    let req = br#"{"op":"ping","id":4}"#;
    c.send(false, raw::TEXT, &req[..5]).await;
    c.send(true, raw::PING, b"").await;
    c.send(false, raw::CONTINUATION, &req[5..10]).await;
    c.send(false, raw::CONTINUATION, &req[10..15]).await;
    c.send(true, raw::CONTINUATION, &req[15..]).await;
    assert_eq!(c.read_frame().await.unwrap().0, raw::PONG);
    let (op, t) = c.read_frame().await.unwrap();
    assert_eq!(op, raw::TEXT);
    assert!(String::from_utf8(t).unwrap().contains("\"id\":4"));

    // TC3: the fifth frame of one message closes with 1008.
    let mut c = RawWs::connect(ip(9), server.addr).await;
    c.send(false, raw::TEXT, b"{").await;
    for _ in 0..4 {
        c.send(false, raw::CONTINUATION, b" ").await;
    }
    let (close, _) = c.read_until_close(Duration::from_secs(10)).await;
    // Closed: it goes away, as a client does once it has its close frame
    // (held open, it would keep stop() waiting out the close timeout).
    drop(c);
    let (code, reason) = close.unwrap();
    assert_eq!(
        (code, reason.as_str()),
        (
            1008,
            "too many fragments: more than 4 frames in one message"
        )
    );
    assert_eq!(m.too_many_fragments_closes_total.get(), 1);
    assert_undisturbed(&mut by).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_pings_is_closed_with_1001() {
    let server = limited_server(ServeConfig {
        heartbeat_interval_ms: 200,
        heartbeat_timeout_ms: 1000,
        ..ServeConfig::default()
    })
    .await;
    let m = &server.market.metrics;
    // A client library answers pings while it reads: it outlives many
    // timeouts.
    let mut alive = Client::connect(server.addr, "tickwire.v1").await;
    let alive = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            if let Some(Msg::Closed(c)) = alive.next_within(Duration::from_millis(100)).await {
                panic!("a client that answers pings was closed: {c:?}");
            }
        }
        alive.send(r#"{"op":"ping","id":1}"#).await;
        assert_eq!(alive.next_control().await["type"], "pong");
    });
    // Before the connect: the server hears the upgrade request before the
    // client has the answer, and times out from there.
    let started = Instant::now();
    let mut silent = RawWs::connect(ip(10), server.addr).await;
    let mut pings = 0;
    let closed = async {
        loop {
            match silent.read_frame().await {
                Ok((raw::PING, _)) => pings += 1,
                Ok((raw::CLOSE, p)) => {
                    return (
                        u16::from_be_bytes([p[0], p[1]]),
                        String::from_utf8_lossy(&p[2..]).into_owned(),
                    )
                }
                Ok(_) => {}
                Err(e) => panic!("no close frame: {e}"),
            }
        }
    };
    let close = tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("closed within 10 s");
    assert_eq!(close.0, 1001);
    assert_eq!(close.1, "ping timeout: nothing received for 1000 ms");
    assert!(pings >= 2, "pinged every 200 ms before giving up: {pings}");
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(m.heartbeat_timeouts_total.get(), 1);
    // Sockets read past the close: the server let go of the connection.
    metrics_reach(m, "silent released", |m| m.connections.get() == 1).await;

    // The library client, reading all along, is still there after 4
    // timeouts' worth.
    alive.await.unwrap();
    assert_eq!(m.heartbeat_timeouts_total.get(), 1);
    assert!(m.heartbeat_pings_total.get() >= 15);
    server.stop().await;
}

/// A connection that has sent nothing waits quiet (no reader task,
/// subscriber or outbox: docs/ARCHITECTURE.md, "Memory per connection"),
/// and is pinged from there on time; its first message wakes it into a
/// working connection, and a shutdown closes a quiet one with 1001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_connection_is_pinged_and_wakes_on_its_first_message() {
    let server = limited_server(ServeConfig {
        heartbeat_interval_ms: 100,
        heartbeat_timeout_ms: 10_000,
        ..ServeConfig::default()
    })
    .await;
    let metrics = std::sync::Arc::clone(&server.market.metrics);
    let m = &metrics;
    let mut quiet = RawWs::connect(ip(11), server.addr).await;
    let mut bystander = RawWs::connect(ip(12), server.addr).await;
    metrics_reach(m, "both quiet", |m| m.quiet_connections.get() == 2).await;
    for ws in [&mut quiet, &mut bystander] {
        for _ in 0..3 {
            let (op, payload) = ws.read_frame().await.expect("a ping");
            assert_eq!((op, payload.len()), (raw::PING, 0));
            // A pong, as any client answers: taken while quiet.
            ws.send(true, raw::PONG, &payload).await;
        }
    }
    // Written while quiet, and answered: both still are, and each was
    // pinged (one more ping each proves the pongs were taken by then).
    for ws in [&mut quiet, &mut bystander] {
        assert_eq!(ws.read_frame().await.expect("a ping").0, raw::PING);
    }
    assert_eq!(m.quiet_connections.get(), 2, "{}", m.render());
    assert!(m.heartbeat_pings_total.get() >= 6, "{}", m.render());

    quiet
        .send_text(r#"{"op":"subscribe","id":7,"symbols":["*"]}"#)
        .await;
    let ack = loop {
        let (op, payload) = quiet.read_frame().await.expect("the ack");
        if op == raw::TEXT {
            break serde_json::from_slice::<serde_json::Value>(&payload).unwrap();
        }
    };
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_u64()),
        (Some("ack"), Some(7))
    );
    assert_eq!(m.quiet_connections.get(), 1, "woken by its request");
    assert_eq!(m.subscribers.get(), 1);

    server.stop().await;
    let close = loop {
        match bystander.read_frame().await.expect("a close frame") {
            (raw::CLOSE, p) => break p,
            (op, _) => assert_eq!(op, raw::PING),
        }
    };
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1001);
    assert_eq!(&close[2..], b"server shutting down");
    assert_eq!(m.quiet_connections.get(), 0);
}

/// A quiet connection that answers its pings is heard from: the heartbeat
/// timeout counts from its last pong, and it stays quiet; a silent one
/// beside it is closed at the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_connection_that_answers_pings_outlives_the_heartbeat_timeout() {
    let server = limited_server(ServeConfig {
        heartbeat_interval_ms: 100,
        heartbeat_timeout_ms: 400,
        ..ServeConfig::default()
    })
    .await;
    let m = &server.market.metrics;
    let answering = RawWs::connect(ip(11), server.addr).await;
    let mut silent = RawWs::connect(ip(12), server.addr).await;
    let mut flooding = RawWs::connect(ip(13), server.addr).await;
    metrics_reach(m, "three quiet", |m| m.quiet_connections.get() == 3).await;
    // Pongs beyond one per ping (and one more) wake the connection, whose
    // reader takes them under the inbound rate limit.
    for _ in 0..4 {
        flooding.send(true, raw::PONG, b"").await;
    }
    metrics_reach(m, "the flooding one woken", |m| {
        m.quiet_connections.get() == 2
    })
    .await;
    let answers = tokio::spawn(answering.answer_pings());
    let floods = tokio::spawn(flooding.answer_pings());
    let (close, _) = silent.read_until_close(Duration::from_secs(10)).await;
    assert_eq!(close.map(|(code, _)| code), Some(1001), "the silent one");
    // Three timeouts' worth since the start.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(m.heartbeat_timeouts_total.get(), 1, "{}", m.render());
    assert_eq!(m.quiet_connections.get(), 1, "still quiet");
    assert!(
        !answers.is_finished() && !floods.is_finished(),
        "still open"
    );
    answers.abort();
    floods.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_ends_times_out() {
    let server = limited_server(ServeConfig {
        handshake_timeout_ms: 1_000,
        ..ServeConfig::default()
    })
    .await;
    let m = &server.market.metrics;
    let mut by = bystander(server.addr).await;
    // TC0: headers started, never finished (slowloris).
    let mut slow = raw::connect_from(ip(11), server.addr).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // TC1: connected, nothing sent.
    let mut mute = raw::connect_from(ip(11), server.addr).await.unwrap();
    // TC2: the first byte late, the headers never finished: the time
    // counts from the connection, not from the first byte (the server
    // waits for a first byte before it sets up HTTP).
    let connected = Instant::now();
    let mut late = raw::connect_from(ip(11), server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    late.write_all(b"GET /ws HTTP/1.1\r\n").await.unwrap();
    for s in [&mut slow, &mut mute, &mut late] {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the server closed it");
    }
    // At 1 s; from the first byte it would be 1.8 s.
    let closed = connected.elapsed();
    assert!(closed < Duration::from_millis(1_500), "{closed:?}");
    // Counted once the connection is dropped, which closes the socket
    // first: a client can see the close an instant before the count.
    metrics_reach(m, "all counted", |m| m.handshake_timeouts_total.get() == 3).await;
    metrics_reach(m, "sockets released", |m| m.tcp_connections.get() == 1).await;
    assert_undisturbed(&mut by).await;
    server.stop().await;
}

/// Whether the server answers `GET /healthz` on `s` with a 200, its
/// body read whole; false if it closed the connection instead.
async fn answers_on(s: &mut tokio::net::TcpStream) -> bool {
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let Ok((head, mut body)) = raw::read_head(s).await else {
        return false;
    };
    assert_eq!(raw::status(&head), 200, "{head}");
    let len: usize = raw::header(&head, "content-length")
        .unwrap()
        .parse()
        .unwrap();
    let mut chunk = [0u8; 1024];
    while body.len() < len {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the body ended early");
        body.extend_from_slice(&chunk[..n]);
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_idles_the_whole_timeout_whatever_its_first_byte_took() {
    let server = limited_server(ServeConfig {
        handshake_timeout_ms: 2_000,
        ..ServeConfig::default()
    })
    .await;
    let m = &server.market.metrics;
    // The first byte at 1.4 s leaves the first request 0.6 s: in time.
    let mut kept = raw::connect_from(ip(13), server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_400)).await;
    assert!(answers_on(&mut kept).await, "the first request answered");
    // TC0: idle 1 s, past what the first byte left, within the timeout:
    // the next request is answered, twice over.
    for i in 0..2 {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert!(answers_on(&mut kept).await, "TC0: request {i} answered");
    }
    assert_eq!(m.handshake_timeouts_total.get(), 0);
    // TC1: idle past the timeout, the connection is closed, and counted.
    let idle = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), kept.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the server closed it");
    // The server's 2 s began before the client's clock (its answer was
    // still to be read): some of it may seem gone.
    assert!(
        idle.elapsed() >= Duration::from_millis(1_400),
        "{:?}",
        idle.elapsed()
    );
    metrics_reach(m, "counted", |m| m.handshake_timeouts_total.get() == 1).await;
    server.stop().await;
}

/// Writes `bytes` on a new connection from `source` and reads until the
/// server closes: the last answer's status, head and body, and the whole
/// text.
async fn send_raw(
    source: IpAddr,
    addr: std::net::SocketAddr,
    bytes: &[u8],
) -> (u16, String, String, String) {
    let mut s = raw::connect_from(source, addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer));
    read.await
        .expect("the server closed the connection")
        .expect("no reset: the answer was read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let starts = text.match_indices("HTTP/1.1 ").map(|(i, _)| i);
    let statuses = starts.filter(|&i| text[i + 9..].starts_with(|c: char| c.is_ascii_digit()));
    let last = &text[statuses.last().unwrap_or(0)..];
    let (head, body) = last.split_once("\r\n\r\n").unwrap_or((last, ""));
    (raw::status(head), head.to_owned(), body.to_owned(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_layer_refusals_say_why_and_are_counted() {
    let server = limited_server(ServeConfig::default()).await;
    let mut by = bystander(server.addr).await;
    let pad = |n: usize| "X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(n);
    let long_line = format!(
        "GET /ws?x={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(40_000)
    );
    let big_head = format!("GET /ws HTTP/1.1\r\nHost: x\r\n{}\r\n", pad(1_300));
    let many = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "A: b\r\n".repeat(100)
    );
    let pipelined = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\r\n\r\n";
    let cases: [(&[u8], u16, &str); 6] = [
        // TC0: a 40 kB request line (hyper alone took up to 64 kB of target).
        (
            long_line.as_bytes(),
            414,
            "request line longer than 32768 bytes",
        ),
        // TC1: 71 kB of headers (hyper alone took about 400 kB).
        (
            big_head.as_bytes(),
            431,
            "request head (request line and headers) longer than 65536 bytes",
        ),
        // TC2: 101 header fields, 700 bytes in all.
        (many.as_bytes(), 431, "more than 100 header fields"),
        // TC3: not HTTP: a TLS ClientHello on the plain port, then binary.
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            400,
            "not an HTTP/1.1 request: invalid method or request target",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",
            400,
            "not an HTTP/1.1 request: invalid header name",
        ),
        // TC4: on a keep-alive connection, a good request is answered,
        // then the bad one after it is refused in its turn.
        (
            pipelined.as_bytes(),
            400,
            "not an HTTP/1.1 request: invalid method or request target",
        ),
    ];
    for (i, (bytes, status, reason)) in cases.into_iter().enumerate() {
        let (got, head, body, all) = send_raw(ip(12), server.addr, bytes).await;
        assert_eq!(got, status, "TC{i}: {head}");
        assert_eq!(body, format!("{reason}\n"), "TC{i}");
        assert_eq!(
            raw::header(&head, "content-type"),
            Some("text/plain"),
            "TC{i}"
        );
        assert_eq!(raw::header(&head, "connection"), Some("close"), "TC{i}");
        if i == 5 {
            assert!(
                all.starts_with("HTTP/1.1 200 "),
                "TC{i}: answered first: {all}"
            );
        }
    }
    let text = metrics_text(server.addr).await;
    let rejections = |reason: &str| {
        metric(
            &text,
            &format!("tickwire_http_rejections_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(rejections("request_line_too_long"), 1);
    assert_eq!(rejections("headers_too_large"), 2);
    assert_eq!(rejections("bad_request"), 3);
    assert_eq!(rejections("proxy_header_untrusted"), 0);
    // Refused before routing: not upgrade refusals.
    assert_eq!(metric(&text, "tickwire_upgrade_rejections_total"), 0);
    assert_undisturbed(&mut by).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_limit_holds_per_request_and_per_connection() {
    let server = start(ServeConfig {
        feeds: vec!["synthetic:symbols=5,rate=200".into()],
        max_subscriptions: 3,
        ..ServeConfig::default()
    })
    .await;
    let m = &server.market.metrics;
    eventually(
        Duration::from_secs(10),
        "the feed defined no symbols",
        || server.market.symbols.len() >= 5,
    )
    .await;
    let mut by = Client::connect(server.addr, "tickwire.v1").await;
    by.send(r#"{"op":"subscribe","symbols":["SYN0004"],"id":1}"#)
        .await;
    assert_eq!(by.next_control().await["type"], "ack");
    let mut c = Client::connect(server.addr, "tickwire.v1.json").await;
    // TC0: more than the limit in one request, and as many copies of one
    // name: a request names at most the limit, duplicates included.
    for (i, names) in [
        r#""SYN0000","SYN0001","SYN0002","SYN0003""#,
        r#""SYN0000","SYN0000","SYN0000","SYN0000""#,
    ]
    .iter()
    .enumerate()
    {
        c.send(&format!(
            r#"{{"op":"subscribe","symbols":[{names}],"id":{i}}}"#
        ))
        .await;
        let e = c.next_control().await;
        assert_eq!(
            (e["code"].as_u64(), e["id"].as_u64(), e["reason"].as_str()),
            (
                Some(4003),
                Some(i as u64),
                Some("4 symbols in one request; the limit is 3")
            ),
            "{e}"
        );
    }
    // TC1: `*` counts as every symbol it covers: five, over three.
    c.send(r#"{"op":"subscribe","symbols":["*"],"id":9}"#).await;
    let e = c.next_control().await;
    assert_eq!(
        (e["code"].as_u64(), e["reason"].as_str()),
        (
            Some(4003),
            Some("* covers 5 symbols; the limit is 3 per connection: name the symbols instead")
        ),
        "{e}"
    );
    // TC2: the same rule on /sse: four copies of one name, and `*`.
    for query in ["SYN0000,SYN0000,SYN0000,SYN0000", "*"] {
        let (status, text) = http_get(
            server.addr,
            &format!("GET /sse?symbols={query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{query}: {text}");
        assert!(text.contains("the limit is 3"), "{query}: {text}");
    }
    // TC3: past the limit with what the connection has already.
    c.send(r#"{"op":"subscribe","symbols":["SYN0000","SYN0001"],"id":2}"#)
        .await;
    assert_eq!(c.next_control().await["type"], "ack");
    c.send(r#"{"op":"subscribe","symbols":["SYN0002","SYN0003"],"id":3}"#)
        .await;
    let e = loop {
        let v = c.next_control().await;
        if v["type"] == "error" {
            break v;
        }
    };
    assert_eq!(
        (e["code"].as_u64(), e["id"].as_u64()),
        (Some(4003), Some(3)),
        "{e}"
    );
    // Nothing changed, and the connection lives on: one more fits.
    assert_eq!(m.subscriptions.get(), 1 + 2, "the bystander's one and two");
    c.send(r#"{"op":"subscribe","symbols":["SYN0002"],"id":4}"#)
        .await;
    let ack = loop {
        let v = c.next_control().await;
        if v["type"] == "ack" {
            break v;
        }
    };
    assert_eq!(ack["id"], 4);
    assert_eq!(
        metric(
            &m.render(),
            "tickwire_protocol_errors_total{code=\"4003\",reason=\"too_many_symbols\"}"
        ),
        6
    );
    assert_undisturbed(&mut by).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_is_closed_with_1002() {
    let server = limited_server(ServeConfig::default()).await;
    let m = &server.market.metrics;
    let mut by = bystander(server.addr).await;

    // TC0: a masked request, then the same request unmasked, in one write:
    // the first is answered, the second closes with 1002 (RFC 6455 §5.1).
    let mut c = RawWs::connect(ip(10), server.addr).await;
    let mut bytes = raw::frame(true, raw::TEXT, br#"{"op":"ping","id":1}"#);
    let unmasked = br#"{"op":"ping","id":2}"#;
    bytes.extend_from_slice(&[0x80 | raw::TEXT, unmasked.len() as u8]);
    bytes.extend_from_slice(unmasked);
    c.stream.write_all(&bytes).await.unwrap();
    let (close, texts) = c.read_until_close(Duration::from_secs(10)).await;
    // Closed: it goes away, as a client does once it has its close frame
    // (held open, it would keep stop() waiting out the close timeout).
    drop(c);
    assert_eq!(
        close,
        Some((1002, "unmasked client frame".to_string())),
        "{texts:?}"
    );
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].contains(r#""id":1"#), "{texts:?}");

    // TC1: an unmasked control frame (a ping) as the first frame.
    let mut c = RawWs::connect(ip(10), server.addr).await;
    c.stream.write_all(&[0x80 | raw::PING, 0]).await.unwrap();
    let (close, texts) = c.read_until_close(Duration::from_secs(10)).await;
    drop(c);
    assert_eq!(close.map(|c| c.0), Some(1002), "{texts:?}");

    assert_eq!(m.unmasked_frame_closes_total.get(), 2);
    assert_eq!(
        metric(
            &metrics_text(server.addr).await,
            "tickwire_unmasked_frame_closes_total"
        ),
        2
    );
    assert_undisturbed(&mut by).await;
    server.stop().await;
}

/// What a bystander saw while others misbehaved: every update of every
/// symbol (per-symbol sequences with no gap) and no conflation.
async fn watch(mut by: Client, stop: tokio::sync::oneshot::Receiver<()>) -> (Client, u64) {
    let mut stop = stop;
    let mut last = std::collections::HashMap::new();
    let mut seen = 0;
    loop {
        let msg = tokio::select! {
            _ = &mut stop => return (by, seen),
            m = by.next() => m,
        };
        match msg {
            Msg::Closed(c) => panic!("the bystander was closed: {c:?}"),
            Msg::Control(v) if v["type"] == "conflated" => {
                panic!("the bystander was conflated: {v}")
            }
            m => {
                if let Some((id, seq)) = m.symbol_seq() {
                    if let Some(prev) = last.insert(id, seq) {
                        assert_eq!(seq, prev + 1, "a gap in symbol {id}'s updates");
                    }
                    seen += 1;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_requests_get_4000_and_the_server_lives_on() {
    // Default limits: the deepest nesting that fits in a message is tried.
    let server = limited_server(ServeConfig::default()).await;
    let max = ServeConfig::default().max_message_bytes;
    let m = &server.market.metrics;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let watcher = tokio::spawn(watch(bystander(server.addr).await, stopped));

    let arrays = |d: usize| format!("{}{}", "[".repeat(d), "]".repeat(d));
    let objects = |d: usize| format!("{}{{}}{}", "{\"\":".repeat(d - 1), "}".repeat(d - 1));
    let cases = [
        // TC0: 12,000 levels, where the stack overflowed.
        arrays(12_000),
        // TC1: 30,000 levels, 60 KB, just under the message limit.
        arrays(30_000),
        // TC2: the deepest array nesting that fits in max_message_bytes.
        arrays(max / 2),
        // TC3: objects, 12,000 levels and the deepest that fits.
        objects(12_000),
        objects(max / 5),
        // TC4: a request object whose `symbols` is nested too deep.
        format!(
            r#"{{"op":"subscribe","id":5,"symbols":{}}}"#,
            arrays(20_000)
        ),
    ];
    let mut c = Client::connect(server.addr, "tickwire.v1").await;
    for (i, text) in cases.iter().enumerate() {
        assert!(text.len() <= max, "TC{i} fits in a message");
        c.send(text).await;
        let v = c.next_control().await;
        assert_eq!(v["type"], "error", "TC{i}: {v}");
        assert_eq!(v["code"], 4000, "TC{i}: {v}");
        let reason = v["reason"].as_str().unwrap();
        assert!(reason.contains("nested deeper than 64"), "TC{i}: {reason}");
    }
    // The same connection still works.
    c.send(r#"{"op":"ping","id":9}"#).await;
    assert_eq!(c.next_control().await["id"], 9);
    assert_eq!(
        m.protocol_errors[tickwire::wire::ErrorCode::MalformedMessage.index()].get(),
        cases.len() as u64
    );
    let _ = stop.send(());
    let (mut by, seen) = watcher.await.unwrap();
    assert!(
        seen > 0,
        "the bystander got updates while the attack went on"
    );
    assert_undisturbed(&mut by).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_errors_are_closed_with_tickwire_reasons_not_the_clients() {
    let server = limited_server(ServeConfig::default()).await;
    let m = &server.market.metrics;
    let mut by = bystander(server.addr).await;
    let close = |code: u16, reason: &str| {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        p
    };
    let cases: [(u8, Vec<u8>, u16, &str); 7] = [
        // TC0: close codes a peer may not send get 1002 with our reason,
        // never the client's own text echoed back.
        (
            raw::CLOSE,
            close(999, "my text"),
            1002,
            "invalid close code 999",
        ),
        (
            raw::CLOSE,
            close(1005, "my text"),
            1002,
            "invalid close code 1005",
        ),
        (raw::CLOSE, close(2999, ""), 1002, "invalid close code 2999"),
        // TC1: a reserved opcode, and RSV1 with no extension.
        (
            0x3,
            b"x".to_vec(),
            1002,
            "a frame with a reserved opcode (3-7 or 11-15)",
        ),
        (
            0x40 | raw::TEXT,
            b"{}".to_vec(),
            1002,
            "RSV1, RSV2 or RSV3 set, and no extension was negotiated",
        ),
        // TC2: a continuation with nothing to continue.
        (
            raw::CONTINUATION,
            b"x".to_vec(),
            1002,
            "a continuation frame with no fragmented message to continue",
        ),
        // TC3: a close reason that is not UTF-8.
        (
            raw::CLOSE,
            vec![0x03, 0xe8, 0xff],
            1007,
            "a text message or close reason is not valid UTF-8",
        ),
    ];
    for (i, (opcode, payload, code, reason)) in cases.iter().enumerate() {
        let mut c = RawWs::connect(ip(3), server.addr).await;
        c.send(true, *opcode, payload).await;
        let (got, _) = c.read_until_close(Duration::from_secs(10)).await;
        let (got_code, got_reason) = got.unwrap();
        assert_eq!(
            (got_code, got_reason.as_str()),
            (*code, *reason),
            "case {i}"
        );
    }
    assert_eq!(m.protocol_error_closes_total.get(), cases.len() as u64);
    // A valid close is echoed as it came.
    let mut c = RawWs::connect(ip(3), server.addr).await;
    c.send(true, raw::CLOSE, &close(4321, "bye")).await;
    let (got, _) = c.read_until_close(Duration::from_secs(10)).await;
    assert_eq!(got, Some((4321, "bye".to_owned())));
    assert_eq!(m.protocol_error_closes_total.get(), cases.len() as u64);
    assert_undisturbed(&mut by).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stays_stalled_still_finds_the_1008_close_behind_its_data() {
    let server = start(ServeConfig {
        feeds: vec!["synthetic:symbols=5,rate=20000".into()],
        stall_timeout_ms: 300,
        close_timeout_ms: 100,
        ..ServeConfig::default()
    })
    .await;
    let m = &server.market.metrics;
    // A bystander that reads all the while (at this rate it may be
    // conflated; what matters is that it stays served).
    let mut by = bystander(server.addr).await;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return by,
                m = by.next() => assert!(!matches!(m, Msg::Closed(_)), "the bystander was closed"),
            }
        }
    });
    // The default receive buffer, not a small fixed one: a fixed one of a
    // few KiB can leave the window, after the stall, smaller than the
    // server's segment size, and the server then sends one segment per
    // persist timeout (200 ms), so that reading what was queued took over
    // 10 s (`ss` showed 2 KiB per probe). Not read, the default one still
    // fills in a fraction of a second at this rate.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((ip(4), 0).into()).unwrap();
    let mut c = RawWs::upgrade(socket.connect(server.addr).await.unwrap())
        .await
        .unwrap();
    c.send_text(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    // Not a byte read until the server has declared the stall, waited its
    // close timeout, and let go of the socket.
    metrics_reach(m, "the stall close", |m| {
        m.slow_client_closes_total.get() == 1
    })
    .await;
    let (close, _) = c.read_until_close(Duration::from_secs(10)).await;
    assert_eq!(
        close,
        Some((1008, "slow consumer: no progress for 300 ms".to_owned())),
        "the data ends with the close frame, not a bare end of stream"
    );
    let _ = stop.send(());
    let mut by = reader.await.unwrap();
    assert_undisturbed(&mut by).await;
    server.stop().await;
}
