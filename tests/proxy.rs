//! Behind a proxy, through the real server: 127.0.0.1 is the trusted proxy
//! (`--trusted-proxy 127.0.0.1/32`), 127.0.0.2 an untrusted peer. The
//! per-address connection limit (2 here) shows whose address a connection
//! counts as: the forwarded one when the proxy is trusted, the peer's when
//! it is not.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::raw;
use common::*;
use tickwire::config::ServeConfig;
use tickwire::server::guard::proxy_header::ProxyHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn config() -> ServeConfig {
    ServeConfig {
        feeds: vec!["synthetic:symbols=5,rate=200".into()],
        trusted_proxies: vec!["127.0.0.1/32".into()],
        max_connections_per_ip: 2,
        limit_loopback: true,
        ..ServeConfig::default()
    }
}

/// A PROXY header saying the client is `source`.
fn proxy_header(version: u8, source: &str) -> Vec<u8> {
    let source: SocketAddr = source.parse().unwrap();
    let destination = if source.is_ipv4() {
        "192.0.2.1:443"
    } else {
        "[2001:db8::443]:443"
    };
    let h = ProxyHeader {
        version,
        source: Some(source),
        destination: Some(destination.parse().unwrap()),
    };
    if version == 1 {
        h.to_v1()
    } else {
        h.to_v2(&[])
    }
}

/// The upgrade of `/ws` with `extra` header lines.
fn upgrade(extra: &str) -> String {
    let req = raw::upgrade_request("/ws");
    format!("{}{extra}\r\n", &req[..req.len() - 2])
}

/// Connects from `source`, sends `preamble` and an upgrade with `extra`
/// headers; returns the response head, with the socket (open while the
/// WebSocket is).
async fn open(
    source: IpAddr,
    addr: SocketAddr,
    preamble: &[u8],
    extra: &str,
) -> (String, TcpStream) {
    let mut s = raw::connect_from(source, addr).await.unwrap();
    let mut bytes = preamble.to_vec();
    bytes.extend_from_slice(upgrade(extra).as_bytes());
    s.write_all(&bytes).await.unwrap();
    let (head, _) = raw::read_head(&mut s).await.unwrap();
    (head, s)
}

fn xff(addresses: &str) -> String {
    format!("X-Forwarded-For: {addresses}\r\n")
}

fn refused_per_ip(text: &str) -> u64 {
    metric(
        text,
        "tickwire_connections_refused_total{reason=\"max_connections_per_ip\"}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_names_the_client_only_from_a_trusted_proxy() {
    let server = start(config()).await;
    let addr = server.addr;
    let mut open_ws = Vec::new();
    // TC0: through the trusted proxy, two clients' connections, two each:
    // each forwarded address has its own two places.
    for client in ["203.0.113.7", "203.0.113.8"] {
        for _ in 0..2 {
            let (head, s) = open(PROXY, addr, b"", &xff(client)).await;
            assert_eq!(raw::status(&head), 101, "{client}: {head}");
            open_ws.push(s);
        }
    }
    // TC1: a third for 203.0.113.7 is over its limit, with the reason.
    let (head, _) = open(PROXY, addr, b"", &xff("203.0.113.7")).await;
    assert_eq!(raw::status(&head), 429, "{head}");
    assert_eq!(raw::header(&head, "retry-after"), Some("5"));
    // TC2: entries a client wrote in front are not believed: the proxy
    // appended the real one (right-most), which is full.
    let (head, _) = open(PROXY, addr, b"", &xff("198.51.100.1, 203.0.113.7")).await;
    assert_eq!(raw::status(&head), 429, "spoofed: {head}");
    // TC3: a header split over two lines is one list.
    let lines = format!("{}{}", xff("198.51.100.1"), xff("203.0.113.8"));
    let (head, _) = open(PROXY, addr, b"", &lines).await;
    assert_eq!(raw::status(&head), 429, "two lines: {head}");
    // TC4: from an untrusted peer the header is ignored: every connection
    // is the peer's, whatever it claims.
    for (i, claimed) in ["198.51.100.2", "198.51.100.3"].into_iter().enumerate() {
        let (head, s) = open(STRANGER, addr, b"", &xff(claimed)).await;
        assert_eq!(raw::status(&head), 101, "stranger {i}: {head}");
        open_ws.push(s);
    }
    let (head, _) = open(STRANGER, addr, b"", &xff("198.51.100.4")).await;
    assert_eq!(raw::status(&head), 429, "stranger: {head}");
    let text = metrics_text(addr).await;
    assert_eq!(refused_per_ip(&text), 4);
    // TC5: a forwarded client's place is given back when its connection
    // closes.
    drop(open_ws.remove(0));
    let given_back = eventually_async(
        Duration::from_secs(10),
        "the place was not given back",
        || async move {
            let (head, s) = open(PROXY, addr, b"", &xff("203.0.113.7")).await;
            if raw::status(&head) == 101 {
                Ok(s)
            } else {
                Err(head)
            }
        },
    )
    .await;
    open_ws.push(given_back);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_moves_a_kept_alive_connection_between_clients() {
    let server = start(ServeConfig {
        max_connections_per_ip: 1,
        ..config()
    })
    .await;
    let addr = server.addr;
    // 203.0.113.7 holds its one place with a WebSocket.
    let (head, _ws) = open(PROXY, addr, b"", &xff("203.0.113.7")).await;
    assert_eq!(raw::status(&head), 101);
    // One kept-alive proxy connection carries requests of two clients in
    // turn: 203.0.113.9's is answered, 203.0.113.7's is refused (its place
    // is taken), and the connection is closed after the refusal.
    let get = |client: &str| format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n", xff(client));
    let mut s = raw::connect_from(PROXY, addr).await.unwrap();
    let both = format!("{}{}", get("203.0.113.9"), get("203.0.113.7"));
    s.write_all(both.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer));
    read.await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let second = &answer[answer.rfind("HTTP/1.1 ").unwrap()..];
    assert!(second.starts_with("HTTP/1.1 429 "), "{answer}");
    assert!(
        second
            .ends_with("too many connections from your address: 1 open (max_connections_per_ip)\n"),
        "{second}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_protocol_header_names_the_client_only_from_a_trusted_proxy() {
    let server = start(config()).await;
    let addr = server.addr;
    let mut open_ws = Vec::new();
    for version in [1, 2] {
        // TC0: two connections of one client through the trusted proxy, then
        // a third refused; another client still gets in.
        let client = format!("203.0.113.{}:5000", 10 + version);
        for _ in 0..2 {
            let (head, s) = open(PROXY, addr, &proxy_header(version, &client), "").await;
            assert_eq!(raw::status(&head), 101, "v{version}: {head}");
            open_ws.push(s);
        }
        let (head, _) = open(PROXY, addr, &proxy_header(version, &client), "").await;
        assert_eq!(raw::status(&head), 429, "v{version}: {head}");
        // TC1: the connection's client is the header's, whatever its
        // requests' X-Forwarded-For say.
        let (head, _) = open(
            PROXY,
            addr,
            &proxy_header(version, &client),
            &xff("198.51.100.50"),
        )
        .await;
        assert_eq!(raw::status(&head), 429, "v{version} with XFF: {head}");
        // TC2: IPv6 clients.
        let (head, s) = open(
            PROXY,
            addr,
            &proxy_header(version, "[2001:db8::7]:5000"),
            "",
        )
        .await;
        assert_eq!(raw::status(&head), 101, "v{version} IPv6: {head}");
        open_ws.push(s);
    }
    // TC3: an untrusted peer's PROXY header is refused like any non-HTTP
    // bytes (400, with why), in either version.
    for version in [1, 2] {
        let mut s = raw::connect_from(STRANGER, addr).await.unwrap();
        let mut bytes = proxy_header(version, "203.0.113.99:5000");
        bytes.extend_from_slice(upgrade("").as_bytes());
        s.write_all(&bytes).await.unwrap();
        let mut answer = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer));
        read.await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 "), "v{version}: {answer}");
        assert!(
            answer.ends_with(
                "\r\n\r\na PROXY protocol header from an address that is not a trusted proxy \
                 (--trusted-proxy)\n"
            ),
            "v{version}: {answer}"
        );
    }
    let text = metrics_text(addr).await;
    assert_eq!(
        metric(
            &text,
            "tickwire_http_rejections_total{reason=\"proxy_header_untrusted\"}"
        ),
        2
    );
    assert_eq!(refused_per_ip(&text), 4);
    // TC4: the untrusted peer's connections are its own: it fills its own
    // two places, not 203.0.113.99's (once its refused ones have closed on
    // the server's side too, which may come a moment after the client saw
    // them end).
    let still_open = open_ws.len() as u64;
    eventually(
        Duration::from_secs(10),
        "the refused connections closed",
        || server.market.metrics.tcp_connections.get() == still_open,
    )
    .await;
    for _ in 0..2 {
        let (head, s) = open(STRANGER, addr, b"", "").await;
        assert_eq!(raw::status(&head), 101, "{head}");
        open_ws.push(s);
    }
    let (head, _) = open(STRANGER, addr, b"", "").await;
    assert_eq!(raw::status(&head), 429, "{head}");
    server.stop().await;
}

/// Writes `bytes` from the trusted proxy and waits for the server to
/// close; returns what it answered (nothing, for a bad PROXY header).
async fn closed_after(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut s = raw::connect_from(PROXY, addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    if half_close {
        s.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer));
    let _ = read.await.expect("the server closed the connection");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_proxy_headers_from_a_trusted_proxy_are_closed_and_counted() {
    let server = start(ServeConfig {
        handshake_timeout_ms: 300,
        ..config()
    })
    .await;
    let addr = server.addr;
    let m = &server.market.metrics;
    let mut by = Client::connect(addr, "tickwire.v1").await;
    by.send(r#"{"op":"subscribe","symbols":["*"],"id":1}"#)
        .await;
    assert_eq!(by.next_control().await["type"], "ack");
    let v2 = proxy_header(2, "203.0.113.5:5000");
    let mut too_long = v2.clone();
    too_long[14..16].copy_from_slice(&5000u16.to_be_bytes());
    let cases: [(&[u8], bool, &str); 5] = [
        // TC0: an address that is not one.
        (
            b"PROXY TCP4 999.0.0.1 192.0.2.1 5000 443\r\nGET / HTTP/1.1\r\n\r\n",
            false,
            "malformed",
        ),
        // TC1: a v1 line with no end within 107 bytes.
        (
            &[b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat(),
            false,
            "too_large",
        ),
        // TC2: a v2 length past the limit, refused before it is read.
        (&too_long, false, "too_large"),
        // TC3: half a header, then nothing until the handshake timeout.
        (&v2[..20], false, "timeout"),
        // TC4: half a header, then the end of the stream.
        (&v2[..20], true, "truncated"),
    ];
    for (i, (bytes, half_close, reason)) in cases.into_iter().enumerate() {
        let answer = closed_after(addr, bytes, half_close).await;
        assert!(
            answer.is_empty(),
            "TC{i}: {:?}",
            String::from_utf8_lossy(&answer)
        );
        let text = m.render();
        let count = metric(
            &text,
            &format!("tickwire_proxy_header_errors_total{{reason=\"{reason}\"}}"),
        );
        assert!(count >= 1, "TC{i}: {reason} not counted");
    }
    let text = m.render();
    let errors = |reason: &str| {
        metric(
            &text,
            &format!("tickwire_proxy_header_errors_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(
        [
            errors("malformed"),
            errors("too_large"),
            errors("timeout"),
            errors("truncated")
        ],
        [1, 2, 1, 1]
    );
    // TC5: a trusted proxy that sends nothing at all is a handshake
    // timeout, as any silent client.
    let before = m.handshake_timeouts_total.get();
    assert!(closed_after(addr, b"", false).await.is_empty());
    let after = m.handshake_timeouts_total.get();
    assert_eq!(after, before + 1);
    // The bystander kept receiving.
    by.data(5).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_protocol_header_comes_before_tls() {
    use common::tls::{client_config, self_signed, write_pair};
    let dir = TempDir::new("proxy-tls");
    let cert = self_signed();
    let (cert_file, key_file) = write_pair(&dir.0, &cert);
    let server = start(ServeConfig {
        tls_cert: Some(cert_file),
        tls_key: Some(key_file),
        max_connections_per_ip: 1,
        ..config()
    })
    .await;
    let addr = server.addr;
    let connector = tokio_rustls::TlsConnector::from(client_config(&cert.der));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let wss = |version: u8| {
        let (connector, name) = (connector.clone(), name.clone());
        let upgraded = async move {
            let mut tcp = raw::connect_from(PROXY, addr).await.unwrap();
            tcp.write_all(&proxy_header(version, "203.0.113.30:5000"))
                .await
                .unwrap();
            let mut tls = connector.connect(name, tcp).await?;
            tls.write_all(upgrade("").as_bytes()).await?;
            let mut head = vec![0u8; 1024];
            let n = tls.read(&mut head).await?;
            head.truncate(n);
            Ok::<_, std::io::Error>((String::from_utf8_lossy(&head).into_owned(), tls))
        };
        async {
            tokio::time::timeout(Duration::from_secs(10), upgraded)
                .await
                .expect("an answer within 10 s")
        }
    };
    // TC0: the header, then the TLS handshake, then the upgrade: 101.
    let (head, _first) = wss(2).await.unwrap();
    assert_eq!(raw::status(&head), 101, "{head}");
    // TC1: the client named in the header has its one place taken: the
    // next is refused (in plain text, before TLS, as every refusal at
    // accept), so the TLS handshake fails.
    let refused = wss(1).await;
    assert!(refused.is_err(), "{:?}", refused.map(|r| r.0));
    let text = metrics_text_tls(addr, &cert).await;
    assert_eq!(refused_per_ip(&text), 1);
    server.stop().await;
}

async fn metrics_text_tls(addr: SocketAddr, cert: &common::tls::TestCert) -> String {
    let config = common::tls::client_config(&cert.der);
    common::tls::https_get(addr, config, "/metrics").await.1
}

/// The binary: `--trusted-proxy` (repeatable) and `TICKWIRE_TRUSTED_PROXY`
/// are read, a bad CIDR stops it at start, and its log lines name the
/// client a trusted proxy gave, never one an untrusted peer claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_trusted_proxies_and_logs_their_clients() {
    let mut child = Binary::serve_synthetic(
        &[
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "127.0.0.1",
        ],
        &[],
    );
    let addr = child.addr();
    let evil = "Origin: https://evil.example\r\n";
    // A refused origin is logged at info, with the connection's client.
    let (head, _) = open(PROXY, addr, &proxy_header(1, "203.0.113.77:5000"), evil).await;
    assert_eq!(raw::status(&head), 403, "{head}");
    let (head, _) = open(PROXY, addr, b"", &format!("{}{evil}", xff("198.51.100.66"))).await;
    assert_eq!(raw::status(&head), 403, "{head}");
    let (head, _) = open(
        STRANGER,
        addr,
        b"",
        &format!("{}{evil}", xff("198.51.100.99")),
    )
    .await;
    assert_eq!(raw::status(&head), 403, "{head}");
    let refusals =
        child.wait_for_lines("refused a cross-origin request", 3, Duration::from_secs(10));
    assert!(refusals[0].contains("203.0.113.77:5000"), "{refusals:?}");
    assert!(
        refusals[0].contains("127.0.0.1:"),
        "the proxy too: {refusals:?}"
    );
    assert!(refusals[1].contains("198.51.100.66"), "{refusals:?}");
    assert!(refusals[2].contains("127.0.0.2:"), "{refusals:?}");
    assert!(!refusals[2].contains("198.51.100.99"), "{refusals:?}");
    child.stop();

    // The environment, comma-separated; the untrusted peer's PROXY header
    // is refused.
    let mut child =
        Binary::serve_synthetic(&[], &[("TICKWIRE_TRUSTED_PROXY", "10.0.0.0/8,127.0.0.1")]);
    let addr = child.addr();
    let (head, _) = open(PROXY, addr, &proxy_header(2, "203.0.113.78:5000"), "").await;
    assert_eq!(raw::status(&head), 101, "{head}");
    let (head, _) = open(STRANGER, addr, &proxy_header(2, "203.0.113.78:5000"), "").await;
    assert_eq!(raw::status(&head), 400, "{head}");
    child.stop();

    // Bad entries stop it at start, each named.
    let out = binary::run(binary::tickwire().args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--trusted-proxy",
        "10.0.0.1/8",
        "--trusted-proxy",
        "proxy.example",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("trusted_proxies \"10.0.0.1/8\": host bits are set"),
        "{err}"
    );
    assert!(err.contains("trusted_proxies \"proxy.example\""), "{err}");
}
