//! What a WebSocket client sends, as whole messages, within the limits of
//! its connection: the size of a message (its frames together), the number
//! of frames it may arrive in, the rate of messages, and the heartbeat (a
//! client must send something, at least the pong to our ping, within the
//! heartbeat timeout).
//!
//! Frames come from fastwebsockets' reader; reassembly is ours, not its
//! `FragmentCollectorRead`, to count fragments and bound the whole
//! message's size (its limit applies to each frame alone).
//!
//! ## The inbound rate
//!
//! Every message counts (requests, binary messages, pings, pongs) against a
//! token bucket of `burst` messages refilled at `per_sec`. A message that
//! finds the bucket empty is dropped: the first of a run gets error 4005
//! `rate_limited`, the rest of the run nothing. The bucket goes into debt
//! for dropped messages; once `burst` messages are owed the connection is
//! closed with 1008. A client that slows down to the rate pays the debt
//! back and is served again.

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Role, WebSocket, WebSocketError};
use tokio::time::Instant;

use super::budget::{Budget, Verdict};
pub use super::close::InboundError;
use crate::metrics::Metrics;
use crate::server::ws::mask_check::{is_unmasked, MaskCheck, Progress};
use crate::server::ws::socket::ReadReady;
use crate::wire::deflate::inflate;

/// The inbound rate: on average `per_sec` messages, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundRate {
    pub per_sec: u32,
    pub burst: u32,
}

/// The limits one connection's input is read within.
#[derive(Debug, Clone, Copy)]
pub struct InboundLimits {
    pub max_message_bytes: usize,
    pub max_fragments: usize,
    /// None: not rate-limited (the echo service of conformance suites).
    pub rate: Option<InboundRate>,
    pub heartbeat_timeout: Duration,
    /// permessage-deflate was negotiated: messages may come compressed.
    pub deflate: bool,
}

/// A whole message, or what the reader owes the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    /// A ping within the rate: answer with a pong carrying this payload.
    Ping(Vec<u8>),
    /// The client closed; the echo of its close went out through the
    /// reader's `send_fn`.
    Close,
    /// A message was dropped for the rate, the first of a run: answer with
    /// error 4005.
    RateLimited,
}

/// A message being reassembled from its frames.
struct Partial {
    text: bool,
    /// Its frames are deflated (permessage-deflate): inflated, and checked
    /// for UTF-8, once whole.
    compressed: bool,
    data: Vec<u8>,
    frames: usize,
    /// Bytes of `data` known to be valid UTF-8 (text only).
    checked: usize,
}

/// Reads whole messages from a client within [`InboundLimits`].
pub struct MessageReader<R> {
    /// Between messages, with nothing buffered: the stream alone.
    /// fastwebsockets allocates an 8 KiB read buffer with its reader, so a
    /// connection that is not sending holds none: the reader is built when
    /// the socket turns readable and taken apart again after a message
    /// that left nothing behind.
    idle: Option<MaskCheck<R>>,
    ws: Option<WebSocket<MaskCheck<R>>>,
    /// What the mask check has passed up, against `frames` taken.
    progress: Arc<Progress>,
    frames: u64,
    limits: InboundLimits,
    budget: Option<Budget>,
    partial: Option<Partial>,
    metrics: Arc<Metrics>,
    /// When the client was last heard from, if before this reader was
    /// made (a connection that waited quiet first): its first heartbeat
    /// deadline counts from then.
    heard_at: Option<Instant>,
}

/// fastwebsockets' reader for a server, with our limits and with its
/// automatic replies off.
fn server_reader<R: ReadReady>(
    reader: MaskCheck<R>,
    limits: &InboundLimits,
) -> WebSocket<MaskCheck<R>> {
    let mut ws = WebSocket::after_handshake(reader, Role::Server);
    // fastwebsockets refuses a frame of `max` bytes or more; ours is "more
    // than max_message_bytes", so a frame of exactly the limit passes.
    ws.set_max_message_size(limits.max_message_bytes.saturating_add(1));
    // Pings are answered by us, within the rate; closes are checked and
    // echoed by us, so that a bad one gets our reason, not its own text.
    ws.set_auto_pong(false);
    ws.set_auto_close(false);
    ws
}

impl<R: ReadReady> MessageReader<R> {
    pub fn new(reader: R, limits: InboundLimits, metrics: Arc<Metrics>) -> Self {
        let reader = MaskCheck::new(reader).deflating(limits.deflate);
        MessageReader {
            progress: reader.progress(),
            idle: Some(reader),
            ws: None,
            frames: 0,
            limits,
            budget: limits.rate.map(|r| Budget::new(r, Instant::now())),
            partial: None,
            metrics,
            heard_at: None,
        }
    }

    /// The client was last heard from at `at`: the first heartbeat deadline
    /// counts from then, not from now.
    pub fn heard_at(mut self, at: Instant) -> Self {
        self.heard_at = Some(at);
        self
    }

    /// The stream (to drain what the client still sends after an error).
    pub fn into_inner(self) -> Option<R> {
        match (self.idle, self.ws) {
            (Some(idle), _) => Some(idle.into_inner()),
            (None, Some(ws)) => Some(ws.into_inner().into_inner()),
            (None, None) => None,
        }
    }

    /// The reader, built when the socket has something to read.
    async fn reader(
        &mut self,
        deadline: Instant,
    ) -> Result<&mut WebSocket<MaskCheck<R>>, InboundError> {
        if self.ws.is_none() {
            let mut idle = self
                .idle
                .take()
                .ok_or(InboundError::Ws(WebSocketError::ConnectionClosed))?;
            let ready = poll_fn(|cx| idle.get_mut().poll_read_ready(cx));
            let ready = tokio::time::timeout_at(deadline, ready).await;
            let failed = match ready {
                Err(_) => InboundError::Silent(self.limits.heartbeat_timeout),
                Ok(Err(e)) => WebSocketError::IoError(e).into(),
                Ok(Ok(())) => return Ok(self.ws.insert(server_reader(idle, &self.limits))),
            };
            self.idle = Some(idle);
            return Err(failed);
        }
        self.ws
            .as_mut()
            .ok_or(InboundError::Ws(WebSocketError::ConnectionClosed))
    }

    /// Takes the reader apart if it holds nothing: between messages, with
    /// every frame the check passed up taken.
    fn release_if_drained(&mut self) {
        if self.partial.is_none() && self.progress.all_taken(self.frames) {
            if let Some(ws) = self.ws.take() {
                self.idle = Some(ws.into_inner());
            }
        }
    }

    /// The next message; `send_fn` takes what the protocol obliges us to
    /// send at once (the echo of a close).
    pub async fn next<F, E>(
        &mut self,
        send_fn: &mut impl FnMut(fastwebsockets::Frame<'_>) -> F,
    ) -> Result<Message, InboundError>
    where
        F: Future<Output = Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        let message = self.next_message(send_fn).await;
        if message.is_ok() {
            self.release_if_drained();
        }
        message
    }

    async fn next_message<F, E>(
        &mut self,
        send_fn: &mut impl FnMut(fastwebsockets::Frame<'_>) -> F,
    ) -> Result<Message, InboundError>
    where
        F: Future<Output = Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        loop {
            // One deadline for the wait for bytes and the frame's read.
            let since = self.heard_at.take().unwrap_or_else(Instant::now);
            let deadline = since + self.limits.heartbeat_timeout;
            let read = self.reader(deadline).await?.read_frame();
            let frame = match tokio::time::timeout_at(deadline, read).await {
                Err(_) => return Err(InboundError::Silent(self.limits.heartbeat_timeout)),
                Ok(Err(WebSocketError::IoError(e))) if is_unmasked(&e) => {
                    return Err(InboundError::Unmasked)
                }
                Ok(Err(WebSocketError::FrameTooLarge)) => {
                    return Err(InboundError::TooBig(self.limits.max_message_bytes))
                }
                Ok(frame) => frame?,
            };
            self.frames += 1;
            let message = match frame.opcode {
                OpCode::Close => {
                    check_close(&frame.payload)?;
                    // RFC 6455 §5.5.1: echo the close. A peer gone already
                    // is no error: the connection ends either way.
                    let echo = Frame::close_raw(frame.payload.to_vec().into());
                    let _ = send_fn(echo).await;
                    return Ok(Message::Close);
                }
                OpCode::Ping => Message::Ping(frame.payload.to_vec()),
                OpCode::Pong => {
                    // Counts for the rate; otherwise only proves liveness.
                    match self.charge()? {
                        Verdict::Warn => return Ok(Message::RateLimited),
                        _ => continue,
                    }
                }
                OpCode::Text | OpCode::Binary => {
                    let compressed = match self.limits.deflate {
                        true => self.progress.take_compressed(self.frames - 1),
                        false => None,
                    };
                    match first_frame(&mut self.partial, &self.limits, &frame, compressed)? {
                        Some(message) => message,
                        None => continue,
                    }
                }
                OpCode::Continuation => {
                    match continuation(&mut self.partial, &self.limits, &frame)? {
                        Some(message) => message,
                        None => continue,
                    }
                }
            };
            match self.charge()? {
                Verdict::Take => return Ok(message),
                Verdict::Warn => return Ok(Message::RateLimited),
                Verdict::Drop | Verdict::Close => continue,
            }
        }
    }

    /// Charges one message to the budget; `Close` comes back as the error.
    fn charge(&mut self) -> Result<Verdict, InboundError> {
        let Some(budget) = &mut self.budget else {
            return Ok(Verdict::Take);
        };
        let verdict = budget.charge(Instant::now());
        match verdict {
            Verdict::Take => {}
            Verdict::Close => return Err(InboundError::RateExceeded(budget.rate.per_sec)),
            Verdict::Warn | Verdict::Drop => {
                self.metrics.rate_limited_messages_total.inc();
            }
        }
        Ok(verdict)
    }
}

/// Checks a client's close frame (RFC 6455 §5.5.1, §7.4): no payload, or a
/// code a peer may send followed by a UTF-8 reason.
fn check_close(payload: &[u8]) -> Result<(), InboundError> {
    match payload {
        [] => Ok(()),
        [_] => Err(WebSocketError::InvalidCloseFrame.into()),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !fastwebsockets::CloseCode::from(code).is_allowed() {
                return Err(InboundError::CloseCode(code));
            }
            std::str::from_utf8(reason).map_err(|_| WebSocketError::InvalidUTF8)?;
            Ok(())
        }
    }
}

/// Checks the UTF-8 of a text message as its fragments arrive, so that an
/// invalid one fails at the first bad byte; a character split between
/// fragments is checked when its end arrives.
fn check_utf8(p: &mut Partial, fin: bool) -> Result<(), InboundError> {
    if !p.text || p.compressed {
        return Ok(());
    }
    match std::str::from_utf8(&p.data[p.checked..]) {
        Ok(_) => p.checked = p.data.len(),
        Err(e) if e.error_len().is_none() && !fin => p.checked += e.valid_up_to(),
        Err(_) => return Err(WebSocketError::InvalidUTF8.into()),
    }
    Ok(())
}

/// The first frame of a text or binary message: the message, or `None`
/// while more fragments are to come.
fn first_frame(
    partial: &mut Option<Partial>,
    limits: &InboundLimits,
    frame: &Frame<'_>,
    compressed: Option<bool>,
) -> Result<Option<Message>, InboundError> {
    if partial.is_some() {
        return Err(WebSocketError::InvalidFragment.into());
    }
    let text = compressed.unwrap_or(frame.opcode == OpCode::Text);
    if let Some(text) = compressed {
        let p = Partial {
            text,
            compressed: true,
            data: frame.payload.to_vec(),
            frames: 1,
            checked: 0,
        };
        if !frame.fin {
            *partial = Some(p);
            return Ok(None);
        }
        return whole(p, limits).map(Some);
    }
    if !frame.fin {
        // Text frames with FIN were checked for UTF-8 by fastwebsockets.
        let mut p = Partial {
            text,
            compressed: false,
            data: frame.payload.to_vec(),
            frames: 1,
            checked: 0,
        };
        check_utf8(&mut p, false)?;
        *partial = Some(p);
        return Ok(None);
    }
    let data = frame.payload.to_vec();
    Ok(Some(if text {
        Message::Text(data)
    } else {
        Message::Binary(data)
    }))
}

/// A continuation frame, within the fragment and size limits: the
/// reassembled message once it is complete.
fn continuation(
    partial: &mut Option<Partial>,
    limits: &InboundLimits,
    frame: &Frame<'_>,
) -> Result<Option<Message>, InboundError> {
    let Some(p) = partial.as_mut() else {
        return Err(WebSocketError::InvalidContinuationFrame.into());
    };
    p.frames += 1;
    if p.frames > limits.max_fragments {
        return Err(InboundError::TooManyFragments(limits.max_fragments));
    }
    if p.data.len() + frame.payload.len() > limits.max_message_bytes {
        return Err(InboundError::TooBig(limits.max_message_bytes));
    }
    p.data.extend_from_slice(&frame.payload);
    check_utf8(p, frame.fin)?;
    if !frame.fin {
        return Ok(None);
    }
    partial.take().map(|p| whole(p, limits)).transpose()
}

/// A whole message: inflated (within the size limit) and checked for UTF-8
/// if it came compressed.
fn whole(p: Partial, limits: &InboundLimits) -> Result<Message, InboundError> {
    let data = if p.compressed {
        let data = inflate(&p.data, limits.max_message_bytes)?;
        if p.text {
            std::str::from_utf8(&data).map_err(|_| WebSocketError::InvalidUTF8)?;
        }
        data
    } else {
        p.data
    };
    Ok(if p.text {
        Message::Text(data)
    } else {
        Message::Binary(data)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_the_burst_warns_once_then_closes() {
        let t0 = Instant::now();
        let mut b = Budget::new(
            InboundRate {
                per_sec: 10,
                burst: 3,
            },
            t0,
        );
        // TC0: the burst goes through at once.
        for _ in 0..3 {
            assert_eq!(b.charge(t0), Verdict::Take);
        }
        // TC1: then one warning, then silent drops, `burst` in debt in all.
        assert_eq!(b.charge(t0), Verdict::Warn);
        assert_eq!(b.charge(t0), Verdict::Drop);
        assert_eq!(b.charge(t0), Verdict::Drop);
        // TC2: one more while the debt is full closes.
        assert_eq!(b.charge(t0), Verdict::Close);
    }

    #[test]
    fn budget_forgives_a_client_that_slows_down() {
        let t0 = Instant::now();
        let rate = InboundRate {
            per_sec: 10,
            burst: 2,
        };
        let mut b = Budget::new(rate, t0);
        for _ in 0..2 {
            assert_eq!(b.charge(t0), Verdict::Take);
        }
        assert_eq!(b.charge(t0), Verdict::Warn);
        // TC0: 100 ms later a message is still owed: dropped, not warned again.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.charge(t1), Verdict::Drop);
        // TC1: at half the rate the debt is paid, messages are taken again,
        // and a new run gets a new warning.
        let mut t = t1;
        let mut verdicts = Vec::new();
        for _ in 0..30 {
            t += Duration::from_millis(200);
            verdicts.push(b.charge(t));
        }
        assert!(verdicts.iter().all(|v| *v != Verdict::Close));
        assert_eq!(verdicts.last(), Some(&Verdict::Take));
        assert_eq!(b.charge(t), Verdict::Take);
        assert_eq!(b.charge(t), Verdict::Warn);
    }

    #[test]
    fn utf8_is_checked_across_fragments() {
        let mut p = Partial {
            text: true,
            compressed: false,
            data: "h\u{e9}".as_bytes()[..2].to_vec(),
            frames: 1,
            checked: 0,
        };
        // TC0: a character cut between fragments waits for its end.
        check_utf8(&mut p, false).unwrap();
        assert_eq!(p.checked, 1);
        p.data.push("\u{e9}".as_bytes()[1]);
        check_utf8(&mut p, true).unwrap();
        // TC1: a bad byte fails at once; a cut character at the end fails.
        p.data.push(0xff);
        assert!(check_utf8(&mut p, false).is_err());
        let mut cut = Partial {
            text: true,
            compressed: false,
            data: vec![b'a', 0xc3],
            frames: 2,
            checked: 0,
        };
        assert!(check_utf8(&mut cut, true).is_err());
    }

    /// A masked client frame (short payloads only).
    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![u8::from(fin) << 7 | opcode, 0x80 | payload.len() as u8];
        f.extend(key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    /// The reader holds fastwebsockets' buffer only while something is
    /// buffered: two messages arriving together are both read, and the
    /// reader is let go after the second; a fragmented message keeps it
    /// until its last frame.
    #[tokio::test]
    async fn the_read_buffer_is_held_only_while_something_is_buffered() {
        use tokio::io::AsyncWriteExt;
        let (server, mut client) = tokio::io::duplex(1 << 12);
        let (read, _write) = tokio::io::split(server);
        let limits = InboundLimits {
            max_message_bytes: 1024,
            max_fragments: 8,
            rate: None,
            heartbeat_timeout: Duration::from_secs(60),
            deflate: false,
        };
        let mut reader = MessageReader::new(read, limits, Arc::new(Metrics::default()));
        let mut send = |_: Frame<'_>| async { Ok::<(), std::io::Error>(()) };
        assert!(
            reader.ws.is_none(),
            "nothing allocated before a byte arrives"
        );
        // TC0: two messages in one write.
        let mut both = masked(0x1, true, b"one");
        both.extend(masked(0x1, true, b"two"));
        client.write_all(&both).await.unwrap();
        assert!(matches!(reader.next(&mut send).await, Ok(Message::Text(t)) if t == b"one"));
        assert!(reader.ws.is_some(), "the second message is still buffered");
        assert!(matches!(reader.next(&mut send).await, Ok(Message::Text(t)) if t == b"two"));
        assert!(reader.ws.is_none(), "let go once nothing is buffered");
        // TC1: a message in two fragments, written apart.
        client.write_all(&masked(0x1, false, b"thr")).await.unwrap();
        {
            let next = reader.next(&mut send);
            tokio::pin!(next);
            assert!(
                tokio::time::timeout(Duration::from_millis(50), &mut next)
                    .await
                    .is_err(),
                "no message from the first fragment alone"
            );
            client.write_all(&masked(0x0, true, b"ee")).await.unwrap();
            assert!(matches!(next.await, Ok(Message::Text(t)) if t == b"three"));
        }
        assert!(reader.ws.is_none());
    }
}
