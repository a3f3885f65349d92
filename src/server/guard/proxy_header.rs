//! The PROXY protocol header a proxy puts before a connection's own bytes
//! to say whose connection it is: version 1 (a text line) and version 2
//! (binary), as HAProxy's specification defines them
//! (<https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>).
//!
//! [`parse`] takes whatever bytes have arrived and says whether they are a
//! header, the start of one, or not one at all, so that [`read_header`]
//! can read one off a socket without reading past what a proxy may send:
//! a version 1 line is refused past 107 bytes, a version 2 header past
//! [`MAX_PROXY_HEADER_BYTES`], from its length field, before the rest is
//! read. Only trusted proxies' connections are read this way (see
//! [`proxy`](crate::server::guard::proxy)).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest PROXY header read: a version 1 line is at most 107 bytes; a
/// version 2 header, 16 bytes and its addresses and TLVs, is refused past
/// this (proxies send tens to a few hundred bytes).
pub const MAX_PROXY_HEADER_BYTES: usize = 4096;

/// Longest version 1 line, `PROXY` to the CRLF (the specification's
/// bound).
const MAX_V1_BYTES: usize = 107;

const V1_SIGNATURE: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED_BYTES: usize = 16;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 (text) or 2 (binary).
    pub version: u8,
    /// The client's address as the proxy saw it. None when the proxy
    /// speaks for itself (a version 2 `LOCAL` health check) or does not say
    /// (`UNKNOWN`, an unspecified or Unix socket address): the peer is then
    /// the client.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when given.
    pub destination: Option<SocketAddr>,
}

impl ProxyHeader {
    /// The header as a version 1 line (`PROXY UNKNOWN` without a source).
    pub fn to_v1(&self) -> Vec<u8> {
        match (self.source, self.destination) {
            (Some(s), Some(d)) if s.is_ipv4() == d.is_ipv4() => {
                let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
                format!(
                    "PROXY {family} {} {} {} {}\r\n",
                    s.ip(),
                    d.ip(),
                    s.port(),
                    d.port()
                )
                .into_bytes()
            }
            _ => b"PROXY UNKNOWN\r\n".to_vec(),
        }
    }

    /// The header in version 2, with `tlvs` (already encoded) after the
    /// addresses; `LOCAL` without a source.
    pub fn to_v2(&self, tlvs: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        let mut addrs = Vec::new();
        let (command, family) = match (self.source, self.destination) {
            (Some(SocketAddr::V4(s)), Some(SocketAddr::V4(d))) => {
                addrs.extend_from_slice(&s.ip().octets());
                addrs.extend_from_slice(&d.ip().octets());
                addrs.extend_from_slice(&s.port().to_be_bytes());
                addrs.extend_from_slice(&d.port().to_be_bytes());
                (0x21, 0x11)
            }
            (Some(SocketAddr::V6(s)), Some(SocketAddr::V6(d))) => {
                addrs.extend_from_slice(&s.ip().octets());
                addrs.extend_from_slice(&d.ip().octets());
                addrs.extend_from_slice(&s.port().to_be_bytes());
                addrs.extend_from_slice(&d.port().to_be_bytes());
                (0x21, 0x21)
            }
            _ => (0x20, 0x00),
        };
        out.push(command);
        out.push(family);
        let len = u16::try_from(addrs.len() + tlvs.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&addrs);
        out.extend_from_slice(tlvs);
        out
    }
}

/// Why a trusted peer's PROXY header was refused (the connection is
/// closed); the label of `tickwire_proxy_header_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    #[error("PROXY header longer than its limit")]
    TooLarge,
    #[error("no complete PROXY header within handshake_timeout_ms")]
    Timeout,
    #[error("the connection ended inside the PROXY header")]
    Truncated,
}

impl ProxyError {
    /// The metric labels, by [`ProxyError::index`].
    pub const REASONS: [&'static str; 4] = crate::metrics::PROXY_HEADER_REASONS;
}

impl crate::metrics::Labelled for ProxyError {
    fn index(self) -> usize {
        match self {
            ProxyError::Malformed(_) => 0,
            ProxyError::TooLarge => 1,
            ProxyError::Timeout => 2,
            ProxyError::Truncated => 3,
        }
    }
}

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough bytes yet to tell, or the header is not complete.
    Incomplete,
    /// The connection does not start with a PROXY header.
    NotProxy,
    /// A header of this many bytes.
    Header(ProxyHeader, usize),
}

/// Parses a PROXY header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.starts_with(V1_SIGNATURE) {
        parse_v1(buf)
    } else if buf.starts_with(V2_SIGNATURE) {
        parse_v2(buf)
    } else if V1_SIGNATURE.starts_with(buf) || V2_SIGNATURE.starts_with(buf) {
        // Too few bytes to tell (none at all, too).
        Ok(Parsed::Incomplete)
    } else {
        Ok(Parsed::NotProxy)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let mut end = None;
    for (i, &b) in buf.iter().enumerate().take(MAX_V1_BYTES) {
        if b == b'\r' {
            match buf.get(i + 1) {
                Some(b'\n') => {
                    end = Some(i);
                    break;
                }
                Some(_) => return Err(ProxyError::Malformed("CR without LF")),
                None => return Ok(Parsed::Incomplete),
            }
        }
        if !(0x20..0x7f).contains(&b) {
            return Err(ProxyError::Malformed("a byte that is not printable ASCII"));
        }
    }
    let Some(end) = end else {
        return if buf.len() >= MAX_V1_BYTES {
            Err(ProxyError::TooLarge)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let len = end + 2;
    // Checked printable ASCII above.
    let line = std::str::from_utf8(&buf[V1_SIGNATURE.len()..end])
        .map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        let header = ProxyHeader {
            version: 1,
            source: None,
            destination: None,
        };
        return Ok(Parsed::Header(header, len));
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => {
            return Err(ProxyError::Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let parts: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = parts[..] else {
        return Err(ProxyError::Malformed(
            "not four fields (addresses and ports) after the protocol",
        ));
    };
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        let ip = if v6 {
            s.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            s.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        ip.map_err(|_| ProxyError::Malformed("an address that is not of its protocol"))
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProxyError::Malformed("a port that is not 0 to 65535"));
        }
        s.parse()
            .map_err(|_| ProxyError::Malformed("a port that is not 0 to 65535"))
    };
    let header = ProxyHeader {
        version: 1,
        source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
        destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
    };
    Ok(Parsed::Header(header, len))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < V2_FIXED_BYTES {
        return Ok(Parsed::Incomplete);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(ProxyError::Malformed("version is not 2"));
    }
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = V2_FIXED_BYTES + len;
    if total > MAX_PROXY_HEADER_BYTES {
        return Err(ProxyError::TooLarge);
    }
    // The command and family are checked before the rest arrives.
    let address_bytes = match family {
        0x00 => 0,
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        _ => return Err(ProxyError::Malformed("unknown address family or transport")),
    };
    let local = match command {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::Malformed("command is not LOCAL or PROXY")),
    };
    if len < address_bytes {
        return Err(ProxyError::Malformed("shorter than its addresses"));
    }
    if buf.len() < total {
        return Ok(Parsed::Incomplete);
    }
    let body = &buf[V2_FIXED_BYTES..total];
    let (addrs, mut tlvs) = body.split_at(address_bytes);
    while !tlvs.is_empty() {
        let [_, hi, lo, ..] = tlvs[..] else {
            return Err(ProxyError::Malformed("a TLV cut short"));
        };
        let value = usize::from(u16::from_be_bytes([hi, lo]));
        if tlvs.len() < 3 + value {
            return Err(ProxyError::Malformed("a TLV longer than the header"));
        }
        tlvs = &tlvs[3 + value..];
    }
    let (source, destination) = match family {
        _ if local => (None, None),
        0x11 | 0x12 => {
            let ip = |at: usize| {
                let octets: [u8; 4] = addrs[at..at + 4].try_into().unwrap_or_default();
                IpAddr::V4(Ipv4Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([addrs[at], addrs[at + 1]]);
            (
                Some(SocketAddr::new(ip(0), port(8))),
                Some(SocketAddr::new(ip(4), port(10))),
            )
        }
        0x21 | 0x22 => {
            let ip = |at: usize| {
                let octets: [u8; 16] = addrs[at..at + 16].try_into().unwrap_or_default();
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([addrs[at], addrs[at + 1]]);
            (
                Some(SocketAddr::new(ip(0), port(32))),
                Some(SocketAddr::new(ip(16), port(34))),
            )
        }
        // Unspecified, or Unix sockets: no IP to take.
        _ => (None, None),
    };
    let header = ProxyHeader {
        version: 2,
        source,
        destination,
    };
    Ok(Parsed::Header(header, total))
}

/// Reads a PROXY header if the stream starts with one, never more than
/// [`MAX_PROXY_HEADER_BYTES`]. What was read past the header (or
/// everything read, when there is none) is left in `buf`, so that a caller
/// that times this out can tell a silent peer (`buf` empty) from a header
/// cut short.
pub async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
) -> Result<Option<ProxyHeader>, ProxyError> {
    let mut chunk = [0u8; 512];
    loop {
        match parse(buf)? {
            Parsed::NotProxy => return Ok(None),
            Parsed::Header(header, len) => {
                buf.advance(len);
                return Ok(Some(header));
            }
            Parsed::Incomplete => {}
        }
        let want = chunk.len().min(MAX_PROXY_HEADER_BYTES - buf.len());
        let n = io
            .read(&mut chunk[..want])
            .await
            .map_err(|_| ProxyError::Truncated)?;
        if n == 0 {
            // A peer that closes before sending anything is no header.
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ProxyError::Truncated)
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(source: &str, destination: &str, version: u8) -> ProxyHeader {
        ProxyHeader {
            version,
            source: Some(source.parse().unwrap()),
            destination: Some(destination.parse().unwrap()),
        }
    }

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 203.0.113.9 192.0.2.1 56324 443\r\nGET /";
        assert_eq!(
            parse(h),
            Ok(Parsed::Header(
                header("203.0.113.9:56324", "192.0.2.1:443", 1),
                44
            ))
        );
        let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
        let Ok(Parsed::Header(p, 44)) = parse(h6) else {
            panic!("{:?}", parse(h6));
        };
        assert_eq!(p.source, Some("[2001:db8::1]:1".parse().unwrap()));
        assert_eq!(p.to_v1(), h6);
        let unknown = b"PROXY UNKNOWN ffff:f...f:ffff 127.0.0.1 65535 80\r\n";
        assert!(matches!(
            parse(unknown),
            Ok(Parsed::Header(ProxyHeader { source: None, .. }, 50))
        ));
        // Every prefix of a header is incomplete, never an error.
        for n in 0..h6.len() {
            assert_eq!(parse(&h6[..n]), Ok(Parsed::Incomplete), "{n}");
        }
        for (bad, why) in [
            (
                &b"PROXY TCP4 203.0.113.9 192.0.2.1 56324\r\n"[..],
                "not four fields",
            ),
            (
                b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",
                "not of its protocol",
            ),
            (b"PROXY TCP4 1.2.3.4 1.2.3.5 65536 2\r\n", "port"),
            (b"PROXY TCP4 1.2.3.4  1.2.3.5 1 2\r\n", "not four fields"),
            (b"PROXY UDP4 1.2.3.4 1.2.3.5 1 2\r\n", "protocol"),
            (b"PROXY TCP4 1.2.3.4\r1.2.3.5 1 2\r\n", "CR without LF"),
            (b"PROXY TCP4 1.2.3.4 1.2.3.5 1 2\n", "printable"),
        ] {
            match parse(bad) {
                Err(ProxyError::Malformed(m)) => assert!(m.contains(why), "{m}"),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat();
        assert_eq!(parse(&long), Err(ProxyError::TooLarge));
    }

    #[test]
    fn v2_headers() {
        let h = header("203.0.113.9:56324", "192.0.2.1:443", 2);
        // PP2_TYPE_AUTHORITY and a NOOP.
        let tlvs = [&[0x02, 0, 3][..], b"a.b", &[0x04, 0, 0]].concat();
        let bytes = h.to_v2(&tlvs);
        assert_eq!(parse(&bytes), Ok(Parsed::Header(h, bytes.len())));
        let h6 = header("[2001:db8::1]:1", "[2001:db8::2]:2", 2);
        let bytes6 = h6.to_v2(&[]);
        assert_eq!(bytes6.len(), 16 + 36);
        assert_eq!(parse(&bytes6), Ok(Parsed::Header(h6, bytes6.len())));
        for n in 0..bytes.len() {
            assert_eq!(parse(&bytes[..n]), Ok(Parsed::Incomplete), "{n}");
        }
        // LOCAL: the proxy speaks for itself, whatever the addresses.
        let mut local = bytes.clone();
        local[12] = 0x20;
        let Ok(Parsed::Header(p, _)) = parse(&local) else {
            panic!();
        };
        assert_eq!(p.source, None);
        // Unix sockets: no IP.
        let mut unix = V2_SIGNATURE.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0, 216]);
        unix.extend_from_slice(&[b'/'; 216]);
        assert!(matches!(
            parse(&unix),
            Ok(Parsed::Header(ProxyHeader { source: None, .. }, 232))
        ));
        let set = |at: usize, v: u8| {
            let mut b = bytes.clone();
            b[at] = v;
            b
        };
        for (bad, why) in [
            (set(12, 0x11), "version"),
            (set(12, 0x22), "command"),
            (set(13, 0x41), "family"),
            (set(13, 0x13), "family"),
            (set(15, 11), "shorter than its addresses"),
            (set(15, bytes[15] - 1), "TLV"),
            (set(bytes.len() - 2, 9), "TLV"),
        ] {
            match parse(&bad) {
                Err(ProxyError::Malformed(m)) => assert!(m.contains(why), "{why}: {m}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        // Longer than the limit, refused from its length alone.
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0x10, 0x00]);
        assert_eq!(parse(&huge), Err(ProxyError::TooLarge));
        let at_limit = (MAX_PROXY_HEADER_BYTES - 16 - 12 - 3) as u16;
        let mut tlv = vec![0x04];
        tlv.extend_from_slice(&at_limit.to_be_bytes());
        tlv.resize(3 + usize::from(at_limit), 0);
        let max = h.to_v2(&tlv);
        assert_eq!(max.len(), MAX_PROXY_HEADER_BYTES);
        assert_eq!(parse(&max), Ok(Parsed::Header(h, max.len())));
    }

    #[test]
    fn what_is_not_a_proxy_header() {
        for first in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01",
            b"PROXX",
            b"\r\n\r\nX",
        ] {
            assert_eq!(parse(first), Ok(Parsed::NotProxy));
        }
        for prefix in [&b""[..], b"P", b"PROXY", b"\r\n\r\n\0"] {
            assert_eq!(parse(prefix), Ok(Parsed::Incomplete));
        }
    }

    #[tokio::test]
    async fn reading_leaves_what_follows() {
        let h = header("203.0.113.9:56324", "192.0.2.1:443", 1);
        let mut input = h.to_v1();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let mut buf = BytesMut::new();
        let got = read_header(&mut &input[..], &mut buf).await;
        assert_eq!(got, Ok(Some(h)));
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n\r\n");
        // No header: everything read stays.
        let mut buf = BytesMut::new();
        let got = read_header(&mut &b"GET / HTTP/1.1\r\n"[..], &mut buf).await;
        assert_eq!(got, Ok(None));
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
        // Cut short.
        let mut buf = BytesMut::new();
        let got = read_header(&mut &h.to_v2(&[])[..20], &mut buf).await;
        assert_eq!(got, Err(ProxyError::Truncated));
    }
}
