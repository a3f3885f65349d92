//! `ws://HOST/replay?recording=…`: a replay session over a WebSocket, in
//! the subprotocol the client asks for (`tickwire.v1` or
//! `tickwire.v1.json`), the same frames `/ws` sends, and in-band controls
//! (`pause`, `resume`, `speed`) acknowledged like requests. It ends with a
//! `replay_end` message and a close (1000) when the window is replayed.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::replay::{ended, open_session};
use super::routes::{admit, Body};
use super::upgrade::{check_handshake, refuse_upgrade};
use super::AppState;
use crate::replay::{self, Output, Summary};
use crate::server::guard::admission::Admitted;
use crate::server::ws::connection::Inbound;
use crate::server::ws::read::{inbound_limits, read_loop};
use crate::wire::encode::{close_frame, PING_FRAME};
use crate::wire::{self, Format, Op};

/// Answers a request on `/replay`: the handshake's checks, the Origin and
/// token checks, the session's parameters and limits, then 101 and the
/// session.
pub(super) fn upgrade(
    mut req: Request<Incoming>,
    state: &Arc<AppState>,
    admitted: Arc<Admitted>,
) -> Response<Body> {
    let format = match check_handshake(&req, state) {
        Ok(format) => format.unwrap_or(Format::Binary),
        Err(refused) => return *refused,
    };
    if let Err(refused) = admit(&req, state) {
        return *refused;
    }
    let (request, slot) = match open_session(req.uri(), state, admitted.ip()) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(u) => u,
        Err(e) => return refuse_upgrade(state, StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let state = Arc::clone(state);
    let session = async move {
        let _held = (admitted, slot);
        let Ok(ws) = fut.await else {
            return;
        };
        let io = TokioIo::new(ws.into_inner().into_inner());
        let summary = serve(io, request, format, &state).await;
        ended(&state, summary);
    };
    tokio::spawn(session.in_current_span());
    let (mut parts, _) = response.into_parts();
    if req.headers().contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        parts.headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(format.subprotocol()),
        );
    }
    Response::from_parts(parts, Either::Left(Full::new(Bytes::new())))
}

/// Runs the session on the upgraded stream until the window is replayed or
/// the client leaves.
async fn serve<S>(
    io: S,
    request: replay::ReplayRequest,
    format: Format,
    state: &AppState,
) -> Result<Summary, crate::feed::FeedError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let config = *state.connection;
    let metrics = Arc::clone(&state.market.metrics);
    let (read, mut write) = tokio::io::split(io);
    let (inbound_tx, mut inbound) = mpsc::channel(16);
    let reader = tokio::spawn(read_loop(
        read,
        inbound_limits(&config, false),
        Arc::clone(&metrics),
        inbound_tx,
        config.limits.max_subscriptions,
        (false, None),
        tokio::time::Instant::now(),
    ));
    let (chunk_tx, mut chunks) = mpsc::channel::<Bytes>(1);
    let (control_tx, control_rx) = mpsc::channel(16);
    let mut session = tokio::spawn(replay::run(
        request,
        Output::Frames(format),
        chunk_tx,
        Some(control_rx),
    ));
    let mut ping = tokio::time::interval(config.heartbeat_interval);
    ping.tick().await;
    let mut done = false;
    let result = loop {
        tokio::select! {
            chunk = chunks.recv(), if !done => match chunk {
                Some(chunk) => {
                    if write.write_all(&chunk).await.is_err() {
                        break None;
                    }
                }
                // The session sent everything: its summary comes next.
                None => done = true,
            },
            summary = &mut session, if done => {
                let summary = summary.unwrap_or_else(|e| Err(crate::feed::FeedError::Reader {
                    file: "replay".into(),
                    reason: e.to_string(),
                }));
                say_end(&summary, &mut write).await;
                break Some(summary);
            },
            message = inbound.recv() => {
                let Some(message) = message else { break None };
                if !answer(*message, &control_tx, &mut write, &metrics).await {
                    break None;
                }
            },
            _ = ping.tick() => {
                metrics.heartbeat_pings_total.inc();
                if write.write_all(&PING_FRAME).await.is_err() {
                    break None;
                }
            }
        }
    };
    let _ = write.shutdown().await;
    reader.abort();
    match result {
        Some(summary) => summary,
        None => {
            session.abort();
            Ok(Summary {
                cut: true,
                ..Summary::default()
            })
        }
    }
}

/// Answers one message from the client's reader: a control goes to the
/// session and is acknowledged, a ping is answered, anything else refused;
/// frames the protocol owes (pong, close echo) are sent. False when the
/// connection is over (the client closed, or the socket failed).
async fn answer<W: tokio::io::AsyncWrite + Unpin>(
    message: Inbound,
    controls: &mpsc::Sender<wire::ReplayControl>,
    write: &mut W,
    metrics: &crate::metrics::Metrics,
) -> bool {
    match message {
        Inbound::Request(req) => {
            let reply = match req.op {
                Op::Replay(control) => {
                    let _ = controls.send(control).await;
                    wire::control_ack(control.name(), req.id)
                }
                Op::Ping => wire::pong_reply(req.id, crate::update::now_ns()),
                _ => wire::error_reply(&wire::Refusal::new(
                    req.id,
                    wire::ErrorCode::UnknownOp,
                    "a replay session's subscription is its URL; it takes pause, resume, speed, seek and ping",
                )),
            };
            write.write_all(&reply).await.is_ok()
        }
        Inbound::Refused(refusal) => {
            metrics.protocol_error(refusal.code);
            let _ = write.write_all(&wire::error_reply(&refusal)).await;
            true
        }
        Inbound::Obligated(frame) => {
            let is_close = frame.first().is_some_and(|b| b & 0x0f == 0x8);
            let _ = write.write_all(&frame).await;
            !is_close
        }
        Inbound::Close(close) => {
            if let Some((code, reason)) = close {
                let _ = write.write_all(&close_frame(code, &reason)).await;
            }
            false
        }
        Inbound::Echo(_) => true,
    }
}

/// The session's last words: `replay_end` (its counts, or its error), then
/// a 1000 close.
async fn say_end<W: tokio::io::AsyncWrite + Unpin>(
    summary: &Result<Summary, crate::feed::FeedError>,
    write: &mut W,
) {
    let end = match summary {
        Ok(s) => format!(
            r#"{{"type":"replay_end","updates":{},"messages":{}}}"#,
            s.updates, s.messages
        ),
        Err(e) => serde_json::json!({"type": "replay_end", "error": e.to_string()}).to_string(),
    };
    let _ = write.write_all(&wire::text_frame_of(end.as_bytes())).await;
    let _ = write.write_all(&close_frame(1000, "replayed")).await;
}
