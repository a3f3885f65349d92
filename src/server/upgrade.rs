//! The WebSocket handshake on `/ws` (RFC 6455 §4.2): every check with the
//! status and reason docs/PROTOCOL.md lists, subprotocol negotiation, and
//! the hand-over of the upgraded stream to the connection's tasks.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::accept::Prefixed;
use super::routes::{admit, respond, Body};
use super::AppState;
use crate::server::guard::access::Grant;
use crate::server::guard::admission::Admitted;
use crate::server::guard::head_gate::HeadGate;
use crate::server::guard::proxy::LogClient;
use crate::server::ws::connection::{self, Service};
use crate::server::ws::socket::SharedTcp;
use crate::wire::deflate::{self, Deflate};
use crate::wire::Format;

/// Refuses a request on `/ws` that is not a valid WebSocket upgrade, with
/// the status and reason docs/PROTOCOL.md lists.
pub(super) fn refuse_upgrade(state: &AppState, status: StatusCode, reason: &str) -> Response<Body> {
    state.market.metrics.upgrade_rejections_total.inc();
    let mut r = respond(status, "text/plain", format!("{reason}\n"));
    if status == StatusCode::UPGRADE_REQUIRED {
        let h = r.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
    }
    r
}

/// Answers a request on `/ws` (or `/echo`): the handshake's checks, the
/// Origin and token checks, then 101 and a task that serves the upgraded
/// connection, holding its place against the connection limits
/// (`admitted`) until it ends.
pub(super) fn upgrade(
    mut req: Request<Incoming>,
    state: &Arc<AppState>,
    echo: bool,
    (admitted, who): (Arc<Admitted>, LogClient),
) -> Response<Body> {
    let format = match check_handshake(&req, state) {
        Ok(format) => format,
        Err(refused) => return *refused,
    };
    // The echo route serves no market data and is for conformance suites.
    let grant = if echo {
        Grant::default()
    } else {
        match admit(&req, state) {
            Ok(grant) => grant,
            Err(refused) => return *refused,
        }
    };
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(u) => u,
        Err(e) => return refuse_upgrade(state, StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let service = if echo {
        Service::Echo
    } else {
        // Several updates per message: for browsers, which pay per message.
        let batch =
            crate::server::query::param(req.uri().query(), "batch").is_some_and(|v| v == "1");
        Service::Market {
            format: format.unwrap_or(Format::Binary),
            batch,
        }
    };
    // permessage-deflate, if the client offers it and compression is on.
    let offers = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let deflate = (state.connection.compress_min_bytes > 0)
        .then(|| deflate::negotiate(&offers))
        .flatten();
    let negotiated = deflate.as_ref().map(|(d, _)| *d);
    let state = Arc::clone(state);
    let connection = async move {
        let _admitted = admitted;
        // Taken apart before the connection is served, so that the task
        // does not keep room for the upgrade's result for its whole life.
        let io = match fut.await {
            Ok(ws) => ws.into_inner().into_inner(),
            Err(e) => {
                return who
                    .span()
                    .in_scope(|| tracing::debug!("upgrade failed: {e}"))
            }
        };
        serve_upgraded(io, (service, negotiated), &state, (grant, who)).await
    };
    // Not in the request's span: the connection makes its own when it
    // wakes (`LogClient`), so that its log lines carry its client.
    tokio::spawn(connection);
    let (mut parts, _) = response.into_parts();
    if let Some((_, answer)) = &deflate {
        if let Ok(v) = HeaderValue::from_str(answer) {
            parts.headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
        }
    }
    if let Some(f) = format {
        parts.headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(f.subprotocol()),
        );
    }
    Response::from_parts(parts, Either::Left(Full::new(Bytes::new())))
}

/// The handshake's own checks, in the order docs/PROTOCOL.md lists their
/// refusals; returns the negotiated subprotocol (`None`: none offered).
/// The refusal is boxed: a cold path, and a large type.
pub(super) fn check_handshake(
    req: &Request<Incoming>,
    state: &AppState,
) -> Result<Option<Format>, Box<Response<Body>>> {
    let refuse = |status, reason: &str| Box::new(refuse_upgrade(state, status, reason));
    if req.method() != Method::GET {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade must be a GET",
        ));
    }
    if !fastwebsockets::upgrade::is_upgrade_request(req) {
        return Err(refuse(
            StatusCode::UPGRADE_REQUIRED,
            "/ws is a WebSocket endpoint: send Connection: Upgrade and Upgrade: websocket",
        ));
    }
    let headers = req.headers();
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(refuse(
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version must be 13",
        ));
    }
    let key_ok = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .is_some_and(|k| is_valid_key(k.as_bytes()));
    if !key_ok {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ));
    }
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    Format::negotiate((!offered.is_empty()).then_some(offered.as_str()))
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, &e.to_string()))
}

/// Serves an upgraded connection as a session of its own until it ends.
/// Not an `async fn`: the connection's task holds the connection's own
/// small future for its life, not this function's locals beside it.
fn serve_upgraded(
    upgraded: Upgraded,
    service: (Service, Option<Deflate>),
    state: &AppState,
    (grant, who): (Grant, LogClient),
) -> impl Future<Output = ()> + Send {
    let mut session = state.sessions.open(grant.expires_in);
    session.client = Some(who);
    let config = Arc::clone(&state.connection);
    match upgraded.downcast::<TokioIo<HeadGate<TcpStream>>>() {
        Ok(parts) => {
            // Owned halves of the TCP stream: no lock between reader and
            // writer. Bytes hyper read past the handshake come first, then
            // any the gate read and hyper did not.
            // Copied out, and the buffers dropped now: an empty `Bytes`
            // split from hyper's or the gate's read buffer would keep that
            // whole buffer for the life of the connection.
            let (tcp, unread) = parts.io.into_inner().into_parts();
            let prefix = match (parts.read_buf.is_empty(), unread.is_empty()) {
                (true, true) => Bytes::new(),
                _ => Bytes::from([&parts.read_buf[..], &unread[..]].concat()),
            };
            drop((unread, parts.read_buf));
            let (read, write) = tcp.into_split();
            let read = Prefixed {
                prefix,
                inner: read,
            };
            let write = SharedTcp(Arc::new(write));
            let shards = Some(Arc::clone(&state.shards));
            future::Either::Left(connection::serve(
                read, write, service, config, grant, session, shards,
            ))
        }
        Err(upgraded) => {
            // TLS (or any other stream): one object, shared by the halves.
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            future::Either::Right(connection::serve(
                read, write, service, config, grant, session, None,
            ))
        }
    }
}

/// RFC 6455 §4.1: the key is a base64-encoded 16-byte value (24 characters
/// ending in `==`).
pub(super) fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZ!=="));
        assert!(!is_valid_key(b""));
    }
}
