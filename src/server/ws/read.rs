//! A connection's reader task: whole messages from the client, within the
//! connection's limits, turned into what the writer must do
//! ([`Inbound`]): requests, refusals, echoes, obligated frames, the close.

use std::io;
use std::sync::Arc;

use fastwebsockets::Frame;
use tokio::sync::mpsc;

use super::connection::{ConnectionConfig, Inbound};
use super::inbound::{InboundLimits, Message, MessageReader};
use super::socket::ReadReady;
use crate::metrics::Metrics;
use crate::wire::encode;
use crate::wire::{self, ErrorCode, Refusal};

/// What a client may send. The echo service is for conformance suites,
/// which send large messages in many fragments as fast as they can.
pub(crate) fn inbound_limits(config: &ConnectionConfig, echo: bool) -> InboundLimits {
    if echo {
        InboundLimits {
            max_message_bytes: ECHO_MAX_MESSAGE_BYTES,
            max_fragments: usize::MAX,
            rate: None,
            heartbeat_timeout: config.heartbeat_timeout,
            deflate: false,
        }
    } else {
        InboundLimits {
            max_message_bytes: config.max_message_bytes,
            max_fragments: config.max_fragments,
            rate: Some(config.inbound_rate),
            heartbeat_timeout: config.heartbeat_timeout,
            deflate: false,
        }
    }
}

/// Largest message the echo service takes: the conformance suite sends
/// messages of up to 16 MiB.
const ECHO_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Reads client messages until the client closes or breaks the protocol;
/// `heard_at` is when the client was last heard from (the heartbeat
/// timeout counts from it). After a protocol error it keeps reading, and discards, until the client
/// closes: a socket closed with unread input is reset, and the reset can
/// destroy the close frame we sent before the client reads it.
pub(crate) async fn read_loop<R: ReadReady>(
    reader: R,
    limits: InboundLimits,
    metrics: Arc<Metrics>,
    tx: mpsc::Sender<Box<Inbound>>,
    max_symbols: usize,
    echo: (bool, Option<usize>),
    heard_at: tokio::time::Instant,
) {
    let mut ws = MessageReader::new(reader, limits, Arc::clone(&metrics)).heard_at(heard_at);
    if read_messages(&mut ws, tx, max_symbols, echo, &metrics).await {
        // Past the mask check: after an unmasked frame it would fail at once.
        if let Some(mut reader) = ws.into_inner() {
            let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
        }
    }
}

/// Returns whether it stopped on a protocol error (and so should drain).
async fn read_messages<R: ReadReady>(
    ws: &mut MessageReader<R>,
    tx: mpsc::Sender<Box<Inbound>>,
    max_symbols: usize,
    (echo, echo_deflate): (bool, Option<usize>),
    metrics: &Metrics,
) -> bool {
    // The echo of a message: compressed if the client negotiated it and
    // the message is large enough.
    let echoed = |opcode: u8, p: &[u8]| match echo_deflate {
        Some(min) if p.len() >= min => {
            encode::deflated_frame(opcode, &crate::wire::deflate::compress(p))
        }
        _ => encode::frame(opcode, p),
    };
    let obligated = tx.clone();
    let mut send_fn = move |frame: Frame<'_>| {
        let bytes = encode::frame(frame.opcode as u8, &frame.payload);
        let tx = obligated.clone();
        async move {
            tx.send(Box::new(Inbound::Obligated(bytes)))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
        }
    };
    loop {
        let inbound = match ws.next(&mut send_fn).await {
            Ok(Message::Text(p)) if echo => Inbound::Echo(echoed(encode::OPCODE_TEXT, &p)),
            Ok(Message::Binary(p)) if echo => Inbound::Echo(echoed(encode::OPCODE_BINARY, &p)),
            Ok(Message::Text(p)) => match wire::parse_request(&p, max_symbols) {
                Ok(req) => Inbound::Request(req),
                Err(refusal) => Inbound::Refused(refusal),
            },
            Ok(Message::Binary(_)) => Inbound::Refused(Refusal::new(
                None,
                ErrorCode::BinaryNotAccepted,
                "requests are JSON text messages; binary messages are not accepted",
            )),
            Ok(Message::Ping(p)) => Inbound::Obligated(encode::frame(encode::OPCODE_PONG, &p)),
            Ok(Message::RateLimited) => Inbound::Refused(Refusal::new(
                None,
                ErrorCode::RateLimited,
                "too many messages: this and further messages are dropped until you slow down",
            )),
            // The echo of the client's close went out through send_fn.
            Ok(Message::Close) => Inbound::Close(None),
            Err(e) => {
                let close = e.close(metrics);
                if let Some((code, reason)) = &close {
                    tracing::debug!(code, "closing a client: {reason}");
                }
                Inbound::Close(close)
            }
        };
        let errored = matches!(inbound, Inbound::Close(Some(_)));
        let last = matches!(inbound, Inbound::Close(_));
        if tx.send(Box::new(inbound)).await.is_err() {
            return false;
        }
        if last {
            return errored;
        }
    }
}
