//! Access control on /ws and /sse, through the real server with real
//! clients: the Origin allowlist (cross-site WebSocket hijacking) and HS256
//! access tokens checked before the upgrade.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::TempDir;
use common::*;
use hmac::{KeyInit, Mac};
use tickwire::config::ServeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

const SECRET: &[u8] = b"a test secret of more than thirty-two bytes";

/// A JWT made here, from its parts, with HMAC-SHA256 over
/// `header.claims`: independent of the server's own signing code.
fn jwt(header: &str, claims: &str, secret: &[u8]) -> String {
    let h = URL_SAFE_NO_PAD.encode(header);
    let c = URL_SAFE_NO_PAD.encode(claims);
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    m.update(format!("{h}.{c}").as_bytes());
    format!(
        "{h}.{c}.{}",
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: &str) -> String {
    jwt(r#"{"alg":"HS256","typ":"JWT"}"#, claims, SECRET)
}

/// A server with the synthetic feed; with `auth`, tokens are required.
async fn server(auth: Option<&TempDir>, allow_origins: &[&str]) -> tickwire::server::Running {
    let auth_secret_file = auth.map(|dir| {
        let path = dir.path("secret");
        std::fs::write(&path, [SECRET, b"\n"].concat()).unwrap();
        path
    });
    start(ServeConfig {
        feeds: vec!["synthetic:symbols=3,rate=500".into()],
        allow_origins: allow_origins.iter().map(|s| s.to_string()).collect(),
        auth_secret_file,
        ..ServeConfig::default()
    })
    .await
}

/// Opens /ws`query` with `headers`; the refusal's status, headers and body
/// if the server refuses the upgrade.
async fn open(
    addr: SocketAddr,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Client, (u16, String, String)> {
    let mut req = format!("ws://{addr}/ws{query}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "tickwire.v1.json".parse().unwrap(),
    );
    for (k, v) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes());
        req.headers_mut().insert(name.unwrap(), v.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => {
            assert_eq!(resp.status(), 101);
            Ok(Client::new(ws))
        }
        Err(WsError::Http(resp)) => {
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            Err((resp.status().as_u16(), challenge, body.into_owned()))
        }
        Err(e) => panic!("handshake failed unexpectedly: {e}"),
    }
}

/// The symbol names of the next `n` quotes and trades.
async fn data_symbols(c: &mut Client, n: usize) -> Vec<String> {
    let data = c.data(n).await;
    data.iter()
        .map(|m| c.name(m.symbol_seq().unwrap().0).to_owned())
        .collect()
}

async fn subscribed(mut c: Client, symbols: &str) -> Client {
    c.send(&format!(r#"{{"op":"subscribe","symbols":{symbols}}}"#))
        .await;
    assert_eq!(c.next_control().await["type"], "ack");
    c
}

/// GET /poll`query`: the whole response.
async fn poll(addr: SocketAddr, query: &str, headers: &str) -> String {
    let req = format!("GET /poll{query} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n");
    http_get(addr, &req).await.1
}

/// GET /sse`query`: the response head and whatever body came with it, read
/// until the first event (or the end).
async fn sse(addr: SocketAddr, query: &str, headers: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /sse{query} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            if !head.starts_with("HTTP/1.1 200") || body.contains("data: ") {
                return text.into_owned();
            }
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return text.into_owned(),
        }
    }
}

fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_websocket_hijack_is_refused_and_allowed_origins_connect() {
    let server = server(None, &[]).await;
    let addr = server.addr;
    let own = format!("http://{addr}");

    // TC0: a page on another site opens the feed with the user's cookies:
    // 403, no upgrade, no data.
    let hijack = open(
        addr,
        "",
        &[
            ("Origin", "https://evil.example"),
            ("Cookie", "session=abc"),
        ],
    )
    .await;
    let Err((code, _, body)) = hijack else {
        panic!("a cross-site upgrade was accepted");
    };
    assert_eq!(code, 403);
    assert!(
        body.contains("\"https://evil.example\" is not allowed"),
        "{body}"
    );
    // TC1: the same over SSE, and a sandboxed page (Origin: null).
    let r = sse(addr, "?symbols=*", "Origin: https://evil.example\r\n").await;
    assert_eq!(status(&r), 403, "{r}");
    let Err((code, ..)) = open(addr, "", &[("Origin", "null")]).await else {
        panic!("Origin: null was accepted");
    };
    assert_eq!(code, 403);
    // TC1b: and over long-polling.
    let r = poll(addr, "?symbols=*", "Origin: https://evil.example\r\n").await;
    assert_eq!(status(&r), 403, "{r}");
    let m = metrics_text(addr).await;
    assert_eq!(metric(&m, "tickwire_origin_rejections_total"), 4);
    assert_eq!(metric(&m, "tickwire_connections_total"), 0);

    // TC2: the server's own page (the dashboard), and a non-browser client.
    let c = open(addr, "", &[("Origin", &own)]).await.unwrap();
    let mut c = subscribed(c, r#"["*"]"#).await;
    data_symbols(&mut c, 5).await;
    let c = open(addr, "", &[]).await.unwrap();
    let mut c = subscribed(c, r#"["*"]"#).await;
    data_symbols(&mut c, 5).await;
    let r = sse(addr, "?symbols=*", &format!("Origin: {own}\r\n")).await;
    assert_eq!(status(&r), 200, "{r}");
    server.stop().await;

    // TC3: a listed origin is allowed, others still are not.
    let server = server_with_list(&["https://app.example"]).await;
    let addr = server.addr;
    let c = open(addr, "", &[("Origin", "https://app.example")]).await;
    assert!(c.is_ok());
    let r = sse(addr, "?symbols=*", "Origin: https://app.example\r\n").await;
    assert_eq!(status(&r), 200, "{r}");
    // The browser may read the stream of an allowed origin.
    assert!(
        r.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://app.example"),
        "{r}"
    );
    let Err((code, ..)) = open(addr, "", &[("Origin", "https://evil.example")]).await else {
        panic!("an unlisted origin was accepted");
    };
    assert_eq!(code, 403);
    server.stop().await;

    // TC4: `*` lets any page in (documented as unsafe).
    let server = server_with_list(&["*"]).await;
    assert!(open(server.addr, "", &[("Origin", "https://evil.example")])
        .await
        .is_ok());
    server.stop().await;
}

async fn server_with_list(list: &[&str]) -> tickwire::server::Running {
    server(None, list).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_before_the_upgrade() {
    let dir = TempDir::new("auth");
    let server = server(Some(&dir), &[]).await;
    let addr = server.addr;
    let exp = now() + 3600;
    let good = token(&format!(r#"{{"exp":{exp}}}"#));

    // TC0: a valid token in the header, and in the query (browsers).
    let bearer = format!("Bearer {good}");
    let c = open(addr, "", &[("Authorization", &bearer)]).await.unwrap();
    let mut by_header = subscribed(c, r#"["*"]"#).await;
    data_symbols(&mut by_header, 5).await;
    let c = open(addr, &format!("?access_token={good}"), &[])
        .await
        .unwrap();
    let mut by_query = subscribed(c, r#"["*"]"#).await;
    data_symbols(&mut by_query, 5).await;

    // TC1: every bad token gets 401 and a challenge, and no connection.
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#))
    );
    let cases = [
        (
            "signature",
            jwt(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{{"exp":{exp}}}"#),
                b"another secret, also long enough to be used",
            ),
        ),
        ("algorithm", alg_none),
        ("expired", token(&format!(r#"{{"exp":{}}}"#, now() - 10))),
        (
            "not_yet_valid",
            token(&format!(r#"{{"exp":{exp},"nbf":{}}}"#, now() + 600)),
        ),
        ("claims", token(r#"{"symbols":["SYN0000"]}"#)),
        ("malformed", "not-a-token".to_owned()),
    ];
    for (reason, t) in &cases {
        let auth = format!("Bearer {t}");
        let Err((code, challenge, body)) = open(addr, "", &[("Authorization", &auth)]).await else {
            panic!("{reason}: upgraded");
        };
        assert_eq!(code, 401, "{reason}");
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
            "{reason}: {challenge}"
        );
        assert!(challenge.contains("error_description=\""), "{challenge}");
        assert!(!body.is_empty());
        // The same token in the query.
        let Err((code, ..)) = open(addr, &format!("?access_token={t}"), &[]).await else {
            panic!("{reason}: upgraded by query");
        };
        assert_eq!(code, 401, "{reason}");
    }
    // TC2: no token at all: 401, a challenge without an error code.
    let Err((code, challenge, body)) = open(addr, "", &[]).await else {
        panic!("upgraded without a token");
    };
    assert_eq!(code, 401);
    assert_eq!(challenge, "Bearer realm=\"tickwire\"");
    assert!(body.contains("no access token"), "{body}");
    // TC3: /sse too.
    let r = sse(addr, "?symbols=*", "").await;
    assert_eq!(status(&r), 401, "{r}");
    let r = sse(addr, &format!("?symbols=*&access_token={good}"), "").await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.contains("data: {\"type\":\"ack\""), "{r}");

    let m = metrics_text(addr).await;
    for (reason, _) in &cases {
        let name = format!("tickwire_auth_rejections_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&m, &name), 2, "{name}");
    }
    assert_eq!(
        metric(&m, "tickwire_auth_rejections_total{reason=\"missing\"}"),
        2
    );
    // Only the two valid WebSockets and the valid stream were connections.
    assert_eq!(metric(&m, "tickwire_connections_total"), 3);
    // The clients let in were not disturbed.
    data_symbols(&mut by_header, 5).await;
    data_symbols(&mut by_query, 5).await;

    // TC4: `tickwire token` makes tokens this server accepts.
    let out = binary::run(
        binary::tickwire()
            .args(["token", "--exp-secs", "60", "--symbols", "SYN0002"])
            .arg("--secret-file")
            .arg(dir.path("secret")),
    );
    assert!(out.status.success(), "{out:?}");
    let cli_token = String::from_utf8(out.stdout).unwrap();
    let auth = format!("Bearer {}", cli_token.trim());
    let c = open(addr, "", &[("Authorization", &auth)]).await.unwrap();
    let mut c = subscribed(c, r#"["*"]"#).await;
    assert!(data_symbols(&mut c, 10)
        .await
        .iter()
        .all(|s| s == "SYN0002"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_symbols_claim_restricts_subscriptions() {
    let dir = TempDir::new("auth");
    let server = server(Some(&dir), &[]).await;
    let addr = server.addr;
    let exp = now() + 3600;
    let only_1 = format!(
        "Bearer {}",
        token(&format!(r#"{{"exp":{exp},"symbols":["SYN0001"]}}"#))
    );
    let c = open(addr, "", &[("Authorization", &only_1)]).await.unwrap();
    let mut c = c;
    // TC0: another symbol, alone or with an allowed one: 4006.
    for req in [r#"["SYN0000"]"#, r#"["SYN0001","SYN0002"]"#] {
        c.send(&format!(r#"{{"op":"subscribe","id":7,"symbols":{req}}}"#))
            .await;
        let e = c.next_control().await;
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["code"], 4006, "{e}");
        assert_eq!(e["id"], 7, "{e}");
        assert!(
            e["reason"].as_str().unwrap().contains("does not allow"),
            "{e}"
        );
    }
    // TC1: `*` is every symbol the token allows.
    let mut c = subscribed(c, r#"["*"]"#).await;
    assert!(data_symbols(&mut c, 20)
        .await
        .iter()
        .all(|s| s == "SYN0001"));
    // TC2: the allowed symbol by name.
    let c2 = open(addr, "", &[("Authorization", &only_1)]).await.unwrap();
    let mut c2 = subscribed(c2, r#"["SYN0001"]"#).await;
    assert!(data_symbols(&mut c2, 5)
        .await
        .iter()
        .all(|s| s == "SYN0001"));
    // TC3: a token whose symbols claim is ["*"] allows everything.
    let star = format!(
        "Bearer {}",
        token(&format!(r#"{{"exp":{exp},"symbols":["*"]}}"#))
    );
    let c3 = open(addr, "", &[("Authorization", &star)]).await.unwrap();
    let mut c3 = subscribed(c3, r#"["SYN0000","SYN0002"]"#).await;
    let names = data_symbols(&mut c3, 30).await;
    assert!(names.iter().any(|s| s == "SYN0000") && names.iter().any(|s| s == "SYN0002"));
    // TC4: /sse with the restricted token: another symbol is 403, `*` is
    // the allowed one only.
    let t = only_1.trim_start_matches("Bearer ");
    let r = sse(addr, &format!("?symbols=SYN0000&access_token={t}"), "").await;
    assert_eq!(status(&r), 403, "{r}");
    assert!(r.contains("does not allow"), "{r}");
    let r = sse(addr, "?symbols=*", &format!("Authorization: {only_1}\r\n")).await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.contains("\"symbol\":\"SYN0001\""), "{r}");
    assert!(!r.contains("SYN0000") && !r.contains("SYN0002"), "{r}");
    // TC5: /poll: no token is 401, another symbol 403, `*` the allowed one.
    let r = poll(addr, "?symbols=*", "").await;
    assert_eq!(status(&r), 401, "{r}");
    let r = poll(addr, &format!("?symbols=SYN0000&access_token={t}"), "").await;
    assert_eq!(status(&r), 403, "{r}");
    let r = poll(addr, &format!("?symbols=*&access_token={t}"), "").await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.contains("\"symbol\":\"SYN0001\""), "{r}");
    assert!(!r.contains("SYN0000") && !r.contains("SYN0002"), "{r}");

    let m = metrics_text(addr).await;
    assert_eq!(
        metric(
            &m,
            "tickwire_protocol_errors_total{code=\"4006\",reason=\"forbidden\"}"
        ),
        4
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_closes_its_connection_with_1008_and_no_other() {
    let dir = TempDir::new("auth");
    let server = server(Some(&dir), &[]).await;
    let addr = server.addr;
    let short_exp = now() + 2;
    let short = format!("Bearer {}", token(&format!(r#"{{"exp":{short_exp}}}"#)));
    let long = format!(
        "Bearer {}",
        token(&format!(r#"{{"exp":{}}}"#, now() + 3600))
    );
    let c = open(addr, "", &[("Authorization", &short)]).await.unwrap();
    let mut expiring = subscribed(c, r#"["*"]"#).await;
    let c = open(addr, "", &[("Authorization", &long)]).await.unwrap();
    let mut staying = subscribed(c, r#"["*"]"#).await;
    // An SSE stream on the short token as well.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let t = short.trim_start_matches("Bearer ");
    stream
        .write_all(format!("GET /sse?symbols=*&access_token={t} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();

    let close = expiring.until_closed(Duration::from_secs(10)).await;
    assert_eq!(close, Some((1008, "token expired".to_owned())));
    // Not before the token's time.
    assert!(now() >= short_exp);
    // The client's close reply goes out as it reads on; the server then
    // lets the connection go.
    assert!(matches!(expiring.next().await, Msg::Closed(None)));
    // The SSE stream ends too: the chunked body's last chunk, then EOF.
    let mut body = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut body)).await;
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.ends_with("\r\n0\r\n\r\n"), "{body}");
    // The other client keeps receiving.
    data_symbols(&mut staying, 20).await;
    let m = metrics_text(addr).await;
    assert_eq!(metric(&m, "tickwire_token_expired_closes_total"), 2);
    // Both expired connections are gone (the WebSocket once its close
    // handshake is done).
    eventually_async(
        Duration::from_secs(10),
        "connections not released",
        || async {
            match metric(&metrics_text(addr).await, "tickwire_connections") {
                1 => Ok(()),
                n => Err(format!("{n} open")),
            }
        },
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_secret_and_origins_from_flags_and_environment() {
    let dir = TempDir::new("auth-bin");
    let secret_file = dir.path("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let secret_file = secret_file.to_str().unwrap();
    let mut bin = Binary::serve_synthetic(
        &[
            "--auth-secret-file",
            secret_file,
            "--allow-origin",
            "https://a.example",
            "--allow-origin",
            "https://b.example",
        ],
        &[],
    );
    let addr = bin.addr();
    let Err((code, ..)) = open(addr, "", &[]).await else {
        panic!("no token needed");
    };
    assert_eq!(code, 401);
    // A token from `tickwire token` with the secret in the environment.
    let secret_text = std::str::from_utf8(SECRET).unwrap();
    let out = binary::run(
        binary::tickwire()
            .args(["token", "--exp-secs", "600"])
            .env("TICKWIRE_AUTH_SECRET", secret_text),
    );
    assert!(out.status.success(), "{out:?}");
    let bearer = format!("Bearer {}", String::from_utf8(out.stdout).unwrap().trim());
    let c = open(
        addr,
        "",
        &[("Authorization", &bearer), ("Origin", "https://b.example")],
    )
    .await
    .unwrap();
    let mut c = subscribed(c, r#"["*"]"#).await;
    data_symbols(&mut c, 5).await;
    let Err((code, ..)) = open(
        addr,
        "",
        &[("Authorization", &bearer), ("Origin", "https://c.example")],
    )
    .await
    else {
        panic!("an unlisted origin was accepted");
    };
    assert_eq!(code, 403);
    drop(c);
    bin.stop();

    // The secret from the environment instead of a file.
    let mut bin = Binary::serve_synthetic(&[], &[("TICKWIRE_AUTH_SECRET", secret_text)]);
    let addr = bin.addr();
    let Err((code, ..)) = open(addr, "", &[]).await else {
        panic!("no token needed");
    };
    assert_eq!(code, 401);
    assert!(open(addr, "", &[("Authorization", &bearer)]).await.is_ok());
    bin.stop();
}
