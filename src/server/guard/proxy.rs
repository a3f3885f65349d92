//! Behind a proxy: which peers may say who the client is
//! ([`TrustedProxies`], from `--trusted-proxy CIDR`), and the two ways they
//! say it: a PROXY protocol header before anything else on the connection
//! ([`proxy_header`](crate::server::guard::proxy_header)), and `X-Forwarded-For` on each
//! request.
//!
//! The client is the right-most address of the chain `X-Forwarded-For
//! entries…, PROXY source, TCP peer` that is not a trusted proxy: each
//! address is believed only when the hop that reported it is trusted.
//! Nothing from a peer outside the list is read: its PROXY header is
//! refused like any non-HTTP bytes (see `head_gate`), its
//! `X-Forwarded-For` ignored.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;

use crate::server::guard::proxy_header::{read_header, ProxyError};

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDRESS/PREFIX` (`10.0.0.0/8`, `2001:db8::/32`), or an address
    /// alone for that one host. Host bits must be zero: `10.0.0.1/8` is
    /// more likely a typo than a network.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: `u8::from_str` would take a `+`.
            Some(p) => p
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| p.parse::<u8>().ok())
                .flatten()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("prefix length {p:?} is not 0 to {max}"))?,
        };
        let cidr = Cidr { network, prefix };
        let canonical = Cidr {
            network: masked(network, prefix),
            prefix,
        };
        if cidr != canonical {
            return Err(format!("host bits are set (the network is {canonical})"));
        }
        Ok(cidr)
    }
}

fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The peers trusted to report the client's address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parses every entry; lists every bad one.
    pub fn parse(entries: &[String]) -> Result<Self, Vec<String>> {
        let mut cidrs = Vec::new();
        let mut errors = Vec::new();
        for e in entries {
            match e.trim().parse::<Cidr>() {
                Ok(c) => cidrs.push(c),
                Err(why) => errors.push(format!(
                    "trusted_proxies {e:?}: {why}; expected an address or ADDRESS/PREFIX"
                )),
            }
        }
        if errors.is_empty() {
            Ok(TrustedProxies(cidrs))
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client of a request that trusted proxy `hop` passed on, from
    /// its `X-Forwarded-For` values (every header line, in order): the
    /// right-most entry that is not a trusted proxy. Every entry trusted:
    /// the left-most. An entry that is not an address stops the walk, and
    /// the trusted hop that passed it on is the client.
    pub fn forwarded_client<'a>(
        &self,
        hop: IpAddr,
        values: impl Iterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let entries: Vec<&[u8]> = values.flat_map(|v| v.split(|&b| b == b',')).collect();
        let mut client = hop;
        for entry in entries.into_iter().rev() {
            let Some(ip) = forwarded_address(entry.trim_ascii()) else {
                return client;
            };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:80` (some proxies add ports).
fn forwarded_address(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?;
    let ip = if let Ok(ip) = s.parse::<IpAddr>() {
        ip
    } else if let Ok(sa) = s.parse::<SocketAddr>() {
        sa.ip()
    } else {
        s.strip_prefix('[')?
            .strip_suffix(']')?
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6)?
    };
    Some(ip.to_canonical())
}

/// Who a connection's client is, as far as the connection tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionClient {
    /// The TCP peer itself.
    Peer(SocketAddr),
    /// The source of a trusted proxy's PROXY header.
    Proxied {
        source: SocketAddr,
        proxy: SocketAddr,
    },
    /// Each request's, from the `X-Forwarded-For` that trusted hop `hop`
    /// passed on (the peer, or the source of its PROXY header when that
    /// is a trusted proxy too).
    Forwarded { hop: IpAddr, proxy: SocketAddr },
}

impl ConnectionClient {
    /// The span a connection's log lines carry: `client`, and `proxy` when
    /// a proxy passed the connection on. A forwarded connection's requests
    /// each have a `req` span with their `client`.
    pub fn span(&self) -> tracing::Span {
        use tracing::field::{display, Empty};
        let span = tracing::info_span!("conn", client = Empty, proxy = Empty);
        match *self {
            ConnectionClient::Peer(peer) => span.record("client", display(peer)),
            ConnectionClient::Proxied { source, proxy } => span
                .record("client", display(source))
                .record("proxy", display(proxy)),
            ConnectionClient::Forwarded { proxy, .. } => span.record("proxy", display(proxy)),
        };
        span
    }
}

/// Who a connection's log lines name, kept instead of its span while the
/// connection is quiet: a span held open costs its entry in the log
/// registry (about half a KiB), more than a quiet connection's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogClient {
    pub conn: ConnectionClient,
    /// The client a forwarded request named (its `req` span's).
    pub forwarded: Option<IpAddr>,
}

impl LogClient {
    /// The spans the connection's requests had: `conn`, and under it `req`
    /// for a forwarded one.
    pub fn span(&self) -> tracing::Span {
        let conn = self.conn.span();
        match self.forwarded {
            Some(client) => tracing::info_span!(parent: &conn, "req", client = %client),
            None => conn,
        }
    }
}

/// What the start of a trusted proxy's connection said.
#[derive(Debug, PartialEq, Eq)]
pub enum Identified {
    /// Who the client is, and the bytes read past the PROXY header (or all
    /// those read, without one): the start of TLS or HTTP.
    Client(ConnectionClient, Bytes),
    /// A PROXY header that is malformed, too long, cut short or late: the
    /// connection is to be closed.
    Refused(ProxyError),
    /// Nothing arrived within the timeout.
    Silent,
}

/// Reads the PROXY header a trusted proxy's connection starts with, if it
/// starts with one, within `timeout`; says who the client is.
pub async fn identify<S: AsyncRead + Unpin>(
    io: &mut S,
    peer: SocketAddr,
    trusted: &TrustedProxies,
    timeout: Duration,
) -> Identified {
    let mut buf = BytesMut::new();
    let header = match tokio::time::timeout(timeout, read_header(io, &mut buf)).await {
        Ok(Ok(header)) => header,
        Ok(Err(e)) => return Identified::Refused(e),
        // Cancelling the read loses nothing: `buf` has what arrived.
        Err(_) if buf.is_empty() => return Identified::Silent,
        Err(_) => return Identified::Refused(ProxyError::Timeout),
    };
    let client = match header.and_then(|h| h.source) {
        Some(source) if trusted.contains(source.ip()) => ConnectionClient::Forwarded {
            hop: source.ip().to_canonical(),
            proxy: peer,
        },
        Some(source) => ConnectionClient::Proxied {
            source,
            proxy: peer,
        },
        None => ConnectionClient::Forwarded {
            hop: peer.ip().to_canonical(),
            proxy: peer,
        },
    };
    Identified::Client(client, buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let t = trusted(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "0.0.0.0/0"]);
        assert_eq!(t.0[1].to_string(), "192.0.2.7/32");
        // TC0: inside and outside a v4 network; /0 matches every v4 address.
        let only = trusted(&["10.0.0.0/8", "192.0.2.7"]);
        assert!(only.contains(ip("10.255.1.2")));
        assert!(!only.contains(ip("11.0.0.1")));
        assert!(only.contains(ip("192.0.2.7")));
        assert!(!only.contains(ip("192.0.2.8")));
        assert!(t.contains(ip("11.0.0.1")));
        // TC1: v6, and v4-mapped v6 addresses as their v4 address.
        assert!(t.contains(ip("2001:db8:1::5")));
        assert!(!only.contains(ip("2001:db8:1::5")));
        assert!(only.contains(ip("::ffff:10.1.2.3")));
        // TC2: every bad entry is reported, with why.
        let bad = [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "example.com",
            "::1/129",
            "10.0.0.0/+8",
            "/8",
        ];
        let errors = TrustedProxies::parse(&bad.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap_err();
        assert_eq!(errors.len(), bad.len(), "{errors:?}");
        assert!(errors[0].contains("host bits are set (the network is 10.0.0.0/8)"));
        assert!(errors[1].contains("prefix length \"33\""));
        assert!(errors[2].contains("\"example.com\" is not an IP address"));
    }

    #[test]
    fn forwarded_for_takes_the_rightmost_untrusted_hop() {
        let t = trusted(&["10.0.0.0/8"]);
        let hop = ip("10.0.0.1");
        let client = |values: &[&str]| t.forwarded_client(hop, values.iter().map(|v| v.as_bytes()));
        // TC0: the proxy's own entry is the client.
        assert_eq!(client(&["203.0.113.9"]), ip("203.0.113.9"));
        // TC1: entries a client made up, left of the real one, are not
        // believed; trusted hops right of it are skipped.
        assert_eq!(
            client(&["1.1.1.1, 203.0.113.9, 10.0.0.2"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client(&["1.1.1.1", "203.0.113.9", "10.9.9.9"]),
            ip("203.0.113.9")
        );
        // TC2: every hop trusted: the left-most.
        assert_eq!(client(&["10.0.0.3, 10.0.0.2"]), ip("10.0.0.3"));
        // TC3: none: the proxy itself.
        assert_eq!(client(&[]), hop);
        // TC4: ports and brackets; v4-mapped.
        assert_eq!(client(&["[2001:db8::1]:443"]), ip("2001:db8::1"));
        assert_eq!(client(&["198.51.100.4:5000"]), ip("198.51.100.4"));
        assert_eq!(client(&["::ffff:198.51.100.4"]), ip("198.51.100.4"));
        // TC5: garbage where the proxy wrote: the walk stops at the last
        // trusted hop, never reaching what lies left of it.
        assert_eq!(client(&["203.0.113.9, unknown"]), hop);
        assert_eq!(client(&["203.0.113.9, garbage, 10.0.0.2"]), ip("10.0.0.2"));
    }

    fn header(source: &str, destination: &str) -> crate::server::guard::proxy_header::ProxyHeader {
        crate::server::guard::proxy_header::ProxyHeader {
            version: 1,
            source: Some(source.parse().unwrap()),
            destination: Some(destination.parse().unwrap()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn identify_says_who_the_client_is() {
        let t = &trusted(&["127.0.0.1", "10.0.0.0/8"]);
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let second = Duration::from_secs(1);
        let h = |src: &str| header(src, "192.0.2.1:443").to_v1();
        let identify_bytes = |bytes: Vec<u8>| async move {
            let (mut client, mut server) = tokio::io::duplex(8192);
            tokio::io::AsyncWriteExt::write_all(&mut client, &bytes)
                .await
                .unwrap();
            let got = identify(&mut server, peer, t, second).await;
            drop(client);
            got
        };
        // TC0: an untrusted source is the client; what follows is kept.
        let mut bytes = h("203.0.113.9:5000");
        bytes.extend_from_slice(b"GET /");
        let source = "203.0.113.9:5000".parse().unwrap();
        assert_eq!(
            identify_bytes(bytes).await,
            Identified::Client(
                ConnectionClient::Proxied {
                    source,
                    proxy: peer
                },
                Bytes::from_static(b"GET /")
            )
        );
        // TC1: a trusted source (another proxy in the chain) forwards.
        assert_eq!(
            identify_bytes(h("10.1.1.1:5000")).await,
            Identified::Client(
                ConnectionClient::Forwarded {
                    hop: ip("10.1.1.1"),
                    proxy: peer
                },
                Bytes::new()
            )
        );
        // TC2: no header: the peer forwards, the bytes are the request's.
        assert_eq!(
            identify_bytes(b"GET / HTTP/1.1\r\n".to_vec()).await,
            Identified::Client(
                ConnectionClient::Forwarded {
                    hop: ip("127.0.0.1"),
                    proxy: peer
                },
                Bytes::from_static(b"GET / HTTP/1.1\r\n")
            )
        );
        // TC3: half a header, then nothing: late; nothing at all: silent.
        let half = h("203.0.113.9:5000")[..20].to_vec();
        let (mut client, mut server) = tokio::io::duplex(8192);
        tokio::io::AsyncWriteExt::write_all(&mut client, &half)
            .await
            .unwrap();
        assert_eq!(
            identify(&mut server, peer, t, second).await,
            Identified::Refused(ProxyError::Timeout)
        );
        let (_client, mut server) = tokio::io::duplex(8192);
        assert_eq!(
            identify(&mut server, peer, t, second).await,
            Identified::Silent
        );
        // TC4: malformed.
        assert!(matches!(
            identify_bytes(b"PROXY TCP4 x\r\n".to_vec()).await,
            Identified::Refused(ProxyError::Malformed(_))
        ));
    }
}
