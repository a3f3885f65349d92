//! RFC 6455 §5.2 frame headers, read in one place.
//!
//! A header is two bytes (FIN, RSV1-3, opcode; mask bit, 7-bit length), a
//! 16- or 64-bit extended length when the 7-bit one is 126 or 127, and a
//! 4-byte masking key when the mask bit is set. [`parse`] reads a whole
//! header; [`prefix`] reads what the first two bytes already tell (enough
//! for a caller that rejects masked, unmasked or fragmented frames as soon
//! as it can). Neither judges: what a caller does with a masked frame, a
//! reserved bit or a length not written in its shortest form
//! ([`FrameHeader::minimal_length`]) is its own policy. No allocation, no
//! copy of the payload: a few branches on the bytes given.

/// Longest header: 2 bytes, a 64-bit length and a masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// What the first two header bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub fin: bool,
    /// RSV1-3 as the low three bits (0 unless an extension was agreed).
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    /// The whole header's length: 2, 4 or 10, plus 4 when masked.
    pub header_len: usize,
}

/// A whole frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1-3 as the low three bits (0 unless an extension was agreed).
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    /// The masking key, when `masked`.
    pub mask: Option<[u8; 4]>,
    /// As written: a 64-bit length is not checked against 2^63.
    pub payload_len: u64,
    /// Bytes before the payload.
    pub header_len: usize,
}

impl FrameHeader {
    /// Whether the length is written in the fewest bytes it fits (§5.2:
    /// "the minimal number of bytes MUST be used").
    #[inline]
    pub fn minimal_length(&self) -> bool {
        let key = if self.masked { 4 } else { 0 };
        match self.header_len - key {
            2 => true,
            4 => self.payload_len >= 126,
            _ => self.payload_len > u64::from(u16::MAX),
        }
    }
}

/// The first two bytes of the header at the start of `bytes`; `None` if
/// fewer than two are here.
#[inline]
pub fn prefix(bytes: &[u8]) -> Option<Prefix> {
    let (&b0, &b1) = (bytes.first()?, bytes.get(1)?);
    let masked = b1 & 0x80 != 0;
    let len_bytes = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    Some(Prefix {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x07,
        opcode: b0 & 0x0f,
        masked,
        header_len: 2 + len_bytes + if masked { 4 } else { 0 },
    })
}

/// The most a client's pong can take: a 6-byte masked header and the
/// 125 bytes of payload a control frame may carry (RFC 6455 §5.5).
pub const MAX_PONG_LEN: usize = 6 + 125;

/// The length of the pong `bytes` begin with, if they hold all of one as a
/// client sends it: final, masked, no RSV bits, at most 125 bytes of
/// payload, its length in one byte. Anything else is for the reader.
pub fn whole_pong(bytes: &[u8]) -> Option<usize> {
    let h = parse(bytes)?;
    let len = h.header_len + usize::try_from(h.payload_len).ok()?;
    let pong = h.fin
        && h.rsv == 0
        && h.opcode == 0xA // pong (RFC 6455 §5.5.3)
        && h.masked
        && h.header_len == 6
        && bytes.len() >= len;
    pong.then_some(len)
}

/// The header at the start of `bytes`; `None` if it is not all here yet.
#[inline]
pub fn parse(bytes: &[u8]) -> Option<FrameHeader> {
    let p = prefix(bytes)?;
    let header = bytes.get(..p.header_len)?;
    let key_at = p.header_len - if p.masked { 4 } else { 0 };
    let payload_len = match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[2..10]);
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mask = if p.masked {
        let mut k = [0u8; 4];
        k.copy_from_slice(&header[key_at..]);
        Some(k)
    } else {
        None
    };
    Some(FrameHeader {
        fin: p.fin,
        rsv: p.rsv,
        opcode: p.opcode,
        masked: p.masked,
        mask,
        payload_len,
        header_len: p.header_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A header written by hand: `ext` 0, 2 or 8 length bytes.
    fn header(b0: u8, len: u64, ext: u8, mask: Option<[u8; 4]>) -> Vec<u8> {
        let m = if mask.is_some() { 0x80 } else { 0 };
        let mut h = vec![b0];
        match ext {
            0 => h.push(m | len as u8),
            2 => {
                h.push(m | 126);
                h.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                h.push(m | 127);
                h.extend_from_slice(&len.to_be_bytes());
            }
        }
        if let Some(k) = mask {
            h.extend_from_slice(&k);
        }
        h
    }

    #[test]
    fn every_length_form_masked_or_not_and_cut_at_every_byte() {
        // (first byte, length, length bytes, minimal?)
        let table: [(u8, u64, u8, bool); 14] = [
            (0x81, 0, 0, true),
            (0x82, 1, 0, true),
            (0x89, 125, 0, true),
            (0x01, 126, 2, true),
            (0x82, 300, 2, true),
            (0x80, 65535, 2, true),
            (0x82, 65536, 8, true),
            (0x82, u64::MAX, 8, true),
            (0x82, 1 << 63, 8, true),
            // Not in the shortest form: read as written.
            (0x81, 5, 2, false),
            (0x81, 125, 2, false),
            (0x82, 126, 8, false),
            (0x82, 65535, 8, false),
            // Every RSV bit, a reserved opcode.
            (0xFB, 7, 0, true),
        ];
        for (b0, len, ext, minimal) in table {
            for mask in [None, Some(KEY)] {
                let h = header(b0, len, ext, mask);
                let want = FrameHeader {
                    fin: b0 & 0x80 != 0,
                    rsv: (b0 >> 4) & 7,
                    opcode: b0 & 0x0f,
                    masked: mask.is_some(),
                    mask,
                    payload_len: len,
                    header_len: h.len(),
                };
                let case = format!("{b0:#x} {len} {ext} {mask:?}");
                assert!(h.len() <= MAX_HEADER_LEN);
                // Whole, and with payload bytes after it.
                assert_eq!(parse(&h), Some(want), "{case}");
                let mut more = h.clone();
                more.extend_from_slice(&[0x81, 0x00, 0xff]);
                assert_eq!(parse(&more), Some(want), "{case}");
                assert_eq!(want.minimal_length(), minimal, "{case}");
                // Cut at every byte: nothing until it is all here; the
                // prefix from the second byte on.
                for cut in 0..h.len() {
                    assert_eq!(parse(&h[..cut]), None, "{case} cut at {cut}");
                    let p = prefix(&h[..cut]);
                    if cut < 2 {
                        assert_eq!(p, None, "{case} cut at {cut}");
                    } else {
                        let p = p.expect("two bytes");
                        assert_eq!(
                            (p.fin, p.rsv, p.opcode, p.masked, p.header_len),
                            (want.fin, want.rsv, want.opcode, want.masked, h.len()),
                            "{case} cut at {cut}"
                        );
                    }
                }
            }
        }
    }
}
