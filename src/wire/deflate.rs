//! permessage-deflate (RFC 7692): the offer a client makes and the answer
//! we give, and compressing and inflating one message.
//!
//! Every message is compressed on its own, without the context of the ones
//! before (`server_no_context_takeover`, which we always answer), so that a
//! compressed frame is the same bytes for every connection that negotiated
//! the extension, and is made once ([`crate::wire::encode::EncodedUpdate`]).
//! We ask clients not to take context over either
//! (`client_no_context_takeover`, which RFC 7692 §7.1.1.2 lets a server
//! answer whether or not it was offered): a connection then holds no
//! inflate state between messages, which at 100,000 connections is the
//! difference between nothing and 4 GB of windows.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The smallest payload compressed for clients that negotiated the
/// extension (`compress_min_bytes`; 0: never); smaller ones go as they are,
/// RSV1 clear, which RFC 7692 allows message by message. One setting for
/// the process: the encoders read it, the server sets it at start.
static MIN_BYTES: AtomicUsize = AtomicUsize::new(256);

/// [`MIN_BYTES`].
pub fn min_bytes() -> usize {
    // Relaxed: a setting, ordering nothing.
    MIN_BYTES.load(Ordering::Relaxed)
}

/// Sets [`MIN_BYTES`].
pub fn set_min_bytes(n: usize) {
    // Relaxed: as in `min_bytes`.
    MIN_BYTES.store(n, Ordering::Relaxed);
}

/// The extension as negotiated with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The largest LZ77 window our messages may use (`server_max_window_bits`,
    /// 15 unless the client asked for less). Below 15 we send every message
    /// uncompressed: our shared frames use the whole window, and RFC 7692
    /// lets any message go uncompressed.
    pub server_max_window_bits: u8,
}

impl Deflate {
    /// Whether our compressed frames (whole window) suit this client.
    pub fn takes_shared_frames(self) -> bool {
        self.server_max_window_bits == 15
    }
}

/// Picks the first permessage-deflate offer in `header` (the values of the
/// client's `Sec-WebSocket-Extensions`, joined by commas) that we can
/// accept, and the response header value for it. None: no offer we accept
/// (another extension, a malformed offer, or none), and the connection
/// goes on without compression.
pub fn negotiate(header: &str) -> Option<(Deflate, String)> {
    for offer in header.split(',') {
        let mut parts = offer.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
        {
            continue;
        }
        if let Some(accepted) = accept(parts) {
            return Some(accepted);
        }
    }
    None
}

/// The answer to one offer's parameters, if we accept them: each known at
/// most once, with a valid value (RFC 7692 §7.1).
fn accept<'a>(params: impl Iterator<Item = &'a str>) -> Option<(Deflate, String)> {
    let mut seen = [false; 4];
    let mut window = 15u8;
    for p in params.filter(|p| !p.is_empty()) {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        let at = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                window = bits(value?)?;
                2
            }
            "client_max_window_bits" => {
                // Without a value: the client may limit its own window if
                // we say so; we inflate with the whole window whatever it
                // uses, so we say nothing.
                if let Some(v) = value {
                    bits(v)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[at], true) {
            return None;
        }
    }
    let mut answer =
        String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    if seen[2] {
        answer.push_str(&format!("; server_max_window_bits={window}"));
    }
    Some((
        Deflate {
            server_max_window_bits: window,
        },
        answer,
    ))
}

/// A window size parameter: 8 to 15, in decimal without leading zeros.
fn bits(v: &str) -> Option<u8> {
    if v.len() > 2 || v.starts_with('0') {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// The four bytes every sync-flushed deflate stream ends with, which RFC
/// 7692 §7.2.1 takes off the message and §7.2.2 puts back to inflate it.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

thread_local! {
    /// One compressor and one inflater per thread, reset for each message
    /// (no context between messages): their state is large (miniz's
    /// compressor is some 300 KB), so it is made once per thread, not once
    /// per message or per connection.
    static COMPRESS: RefCell<Compress> = RefCell::new(Compress::new(Compression::new(1), false));
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// `payload` compressed as one permessage-deflate message: raw deflate,
/// sync-flushed, its four-byte tail taken off.
pub fn compress(payload: &[u8]) -> Vec<u8> {
    COMPRESS.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        // Room for the worst case (stored blocks: 5 bytes per 64 KiB, and
        // the flush's own), so that one call compresses and flushes all.
        let mut out = Vec::with_capacity(payload.len() + payload.len() / 64 + 64);
        loop {
            let read = c.total_in() as usize;
            // Sync flush: the stream ends on a byte boundary, with TAIL.
            let status = c
                .compress_vec(&payload[read..], &mut out, FlushCompress::Sync)
                .unwrap_or(Status::StreamEnd);
            // Done when all is read and the flush has ended the stream.
            // Room left over is no sign of that: miniz can stop a flush
            // short of a buffer's end and go on with it on the next call
            // (Autobahn 12.2.9 lost 4 KB of 64 that way), which also makes
            // a second empty block, and that is still valid deflate.
            let flushed = c.total_in() as usize == payload.len() && out.ends_with(&TAIL);
            if flushed || status == Status::StreamEnd {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        out
    })
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates to more than the limit (a small message can expand a
    /// thousandfold: the limit is on what it becomes, not what it is).
    #[error("a compressed message inflates to more than {0} bytes")]
    TooBig(usize),
    #[error("a compressed message that does not inflate")]
    Corrupt,
}

/// Inflates one message (RFC 7692 §7.2.2) to at most `limit` bytes.
pub fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    INFLATE.with(|d| {
        let mut d = d.borrow_mut();
        d.reset(false);
        let mut out = Vec::with_capacity((data.len() * 4).min(limit) + 64);
        for input in [data, &TAIL[..]] {
            let mut read = 0;
            loop {
                let before = d.total_in();
                let status = d
                    .decompress_vec(&input[read..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                read += (d.total_in() - before) as usize;
                if out.len() > limit {
                    return Err(InflateError::TooBig(limit));
                }
                if status == Status::StreamEnd
                    || (read == input.len() && out.len() < out.capacity())
                {
                    break;
                }
                if out.len() == out.capacity() {
                    // Grow, but never far past the limit.
                    let room = (out.capacity().max(1024)).min(limit + 1 - out.len());
                    out.reserve(room.max(1));
                } else if read == input.len() {
                    break;
                }
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers() {
        let full = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        // TC0: browsers' offer.
        let (d, answer) = negotiate("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(d.server_max_window_bits, 15);
        assert_eq!(answer, full);
        // TC1: a smaller server window is accepted and said back.
        let (d, answer) = negotiate("permessage-deflate; server_max_window_bits=9").unwrap();
        assert_eq!(d.server_max_window_bits, 9);
        assert!(!d.takes_shared_frames());
        assert_eq!(answer, format!("{full}; server_max_window_bits=9"));
        // TC2: the first acceptable of several.
        let (d, _) = negotiate(
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=16, permessage-deflate; client_no_context_takeover",
        )
        .unwrap();
        assert_eq!(d.server_max_window_bits, 15);
        // TC3: nothing acceptable.
        for bad in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; mystery",
        ] {
            assert_eq!(negotiate(bad), None, "{bad}");
        }
    }

    /// Half random bytes, half one letter: deflate keeps under a
    /// quarter off it, so its output outgrows a guess of half the input,
    /// where miniz once stopped a flush short (Autobahn 12.2.9 and 12.5.x).
    fn half_compressible(n: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(2) {
                    (x >> 8) as u8
                } else {
                    b'a'
                }
            })
            .collect()
    }

    #[test]
    fn compressed_messages_are_whole_at_every_size() {
        for n in [1 << 10, 40_000, 1 << 16, 1 << 17, 1 << 20] {
            let payload = half_compressible(n);
            let c = compress(&payload);
            assert!(c.len() < n, "{n}: {} bytes compressed", c.len());
            assert_eq!(inflate(&c, n).unwrap(), payload, "{n}");
            // And by an inflater not ours: the stream, its tail put back
            // and an empty final block after it (RFC 1951: 0x03 0x00).
            let stream = [&c[..], &TAIL, &[0x03, 0x00]].concat();
            let mut whole = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::DeflateDecoder::new(&stream[..]),
                &mut whole,
            )
            .unwrap();
            assert_eq!(whole, payload, "{n}");
        }
    }

    #[test]
    fn compressed_messages_inflate_to_what_they_were() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("{{\"px\":\"{}.{:02}\"}}", 60_000 + i % 7, i % 100).into_bytes())
            .collect();
        for payload in [&b""[..], b"a", &text[..100], &text] {
            let c = compress(payload);
            assert!(!c.ends_with(&TAIL) || payload.is_empty());
            assert_eq!(inflate(&c, payload.len()).unwrap(), payload);
        }
        assert!(compress(&text).len() < text.len() / 5);
        // TC1: the limit is on the inflated size.
        let c = compress(&text);
        assert_eq!(
            inflate(&c, text.len() - 1),
            Err(InflateError::TooBig(text.len() - 1))
        );
        // A small bomb: 10 MB of zeros in a few KB.
        let zeros = vec![0u8; 10 << 20];
        let bomb = compress(&zeros);
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        assert_eq!(inflate(&bomb, 1 << 16), Err(InflateError::TooBig(1 << 16)));
        // TC2: garbage.
        assert_eq!(inflate(&[0xff; 16], 1 << 16), Err(InflateError::Corrupt));
    }
}
