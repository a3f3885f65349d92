//! Why a client's input ended, and the close it gets for it: a code, our
//! own reason, and the metric of its cause.

use std::time::Duration;

use fastwebsockets::WebSocketError;

use crate::metrics::Metrics;
use crate::wire::close_code;
use crate::wire::deflate::InflateError;

/// Why a client's input ended.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error(transparent)]
    Ws(#[from] WebSocketError),
    #[error("message too big: more than {0} bytes")]
    TooBig(usize),
    #[error("too many fragments: more than {0} frames in one message")]
    TooManyFragments(usize),
    #[error("rate limit exceeded: more than {0} messages per second")]
    RateExceeded(u32),
    #[error("ping timeout: nothing received for {} ms", .0.as_millis())]
    Silent(Duration),
    /// RFC 6455 §5.1 (found by [`crate::server::ws::mask_check`]).
    #[error("unmasked client frame")]
    Unmasked,
    /// A close frame whose code a peer may not send (RFC 6455 §7.4).
    #[error("invalid close code {0}")]
    CloseCode(u16),
    /// A compressed message that inflates past the limit, or not at all.
    #[error(transparent)]
    Inflate(#[from] InflateError),
}

impl InboundError {
    /// The close frame owed to the client, if any (a vanished peer gets
    /// nothing), counted in the metric of its cause.
    pub fn close(&self, metrics: &Metrics) -> Option<(u16, String)> {
        let code = match self {
            InboundError::Unmasked => {
                metrics.unmasked_frame_closes_total.inc();
                close_code::PROTOCOL_ERROR
            }
            InboundError::Ws(
                WebSocketError::IoError(_)
                | WebSocketError::UnexpectedEOF
                | WebSocketError::ConnectionClosed,
            ) => return None,
            InboundError::TooBig(_) => {
                metrics.message_too_big_closes_total.inc();
                close_code::MESSAGE_TOO_BIG
            }
            InboundError::Ws(WebSocketError::InvalidUTF8) => {
                metrics.protocol_error_closes_total.inc();
                close_code::INVALID_PAYLOAD
            }
            InboundError::Ws(_) | InboundError::CloseCode(_) => {
                metrics.protocol_error_closes_total.inc();
                close_code::PROTOCOL_ERROR
            }
            InboundError::TooManyFragments(_) => {
                metrics.too_many_fragments_closes_total.inc();
                close_code::POLICY_VIOLATION
            }
            InboundError::RateExceeded(_) => {
                metrics.rate_limit_closes_total.inc();
                close_code::POLICY_VIOLATION
            }
            InboundError::Silent(_) => {
                metrics.heartbeat_timeouts_total.inc();
                close_code::GOING_AWAY
            }
            InboundError::Inflate(InflateError::TooBig(_)) => {
                metrics.inflated_too_big_closes_total.inc();
                close_code::MESSAGE_TOO_BIG
            }
            InboundError::Inflate(InflateError::Corrupt) => {
                metrics.protocol_error_closes_total.inc();
                close_code::INVALID_PAYLOAD
            }
        };
        Some((code, self.reason()))
    }

    /// The close reason: ours, saying what was wrong, never a library's
    /// wording (nor text the client sent).
    fn reason(&self) -> String {
        let InboundError::Ws(e) = self else {
            return self.to_string();
        };
        match e {
            WebSocketError::InvalidFragment => {
                "a data frame arrived while a fragmented message was unfinished"
            }
            WebSocketError::InvalidContinuationFrame => {
                "a continuation frame with no fragmented message to continue"
            }
            WebSocketError::InvalidUTF8 => "a text message or close reason is not valid UTF-8",
            WebSocketError::InvalidCloseFrame => "a close frame with a 1-byte payload",
            WebSocketError::ReservedBitsNotZero => {
                "RSV1, RSV2 or RSV3 set, and no extension was negotiated"
            }
            WebSocketError::ControlFrameFragmented => "a control frame without FIN",
            WebSocketError::PingFrameTooLarge => "a control frame over 125 bytes",
            WebSocketError::InvalidValue => "a frame with a reserved opcode (3-7 or 11-15)",
            _ => "framing error",
        }
        .to_owned()
    }
}
