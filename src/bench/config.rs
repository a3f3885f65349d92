//! What a bench run is told: the target, the protocol, the clients and
//! their subscriptions, the slow-client pattern and the timeouts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use super::BenchError;

/// What the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// tickwire, subprotocol `tickwire.v1` (binary market data).
    TickwireBinary,
    /// tickwire, subprotocol `tickwire.v1.json`.
    TickwireJson,
    /// Any server whose binary messages start with a little-endian u64 ns
    /// timestamp and a u64 sequence (the peers' workload).
    TsPrefix,
    /// No handshake, frames counted only: the raw-TCP blaster.
    RawTcp,
}

/// Which symbols each client subscribes to (tickwire only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// No subscription: idle connections (for memory per connection).
    None,
    All,
    List(Vec<String>),
    /// `k` symbols per client, chosen at random (seeded by the client
    /// index) from `SYN0000..SYN{m-1}`, the synthetic feed's names.
    RandomSynthetic {
        k: usize,
        m: usize,
    },
}

impl FromStr for Subscription {
    type Err = String;

    /// `*`, `A,B,C`, `random:K/M` or `none`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "*" => return Ok(Subscription::All),
            "none" => return Ok(Subscription::None),
            _ => {}
        }
        if let Some(spec) = s.strip_prefix("random:") {
            let (k, m) = spec
                .split_once('/')
                .ok_or_else(|| format!("{s:?}: expected random:K/M"))?;
            let k: usize = k.parse().map_err(|_| format!("{s:?}: K is not a number"))?;
            let m: usize = m.parse().map_err(|_| format!("{s:?}: M is not a number"))?;
            if k == 0 || k > m {
                return Err(format!("{s:?}: need 1 <= K <= M"));
            }
            return Ok(Subscription::RandomSynthetic { k, m });
        }
        Ok(Subscription::List(
            s.split(',').map(str::to_owned).collect(),
        ))
    }
}

/// How a slow client reads: `read` of normal reading, then `stall` of none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowPattern {
    pub read: Duration,
    pub stall: Duration,
}

impl FromStr for SlowPattern {
    type Err = String;

    /// `READ_MS:STALL_MS`, e.g. `1000:2000`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (r, st) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected READ_MS:STALL_MS"))?;
        let ms = |v: &str| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{s:?}: {v:?} is not a number of ms"))
        };
        Ok(SlowPattern {
            read: ms(r)?,
            stall: ms(st)?,
        })
    }
}

/// Where to connect: `ws://host:port/path` (or `tcp://host:port` for raw).
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    pub host_header: String,
    pub path: String,
}

impl FromStr for Target {
    type Err = BenchError;

    fn from_str(url: &str) -> Result<Self, BenchError> {
        let bad = |reason: &str| BenchError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| bad("expected ws://HOST:PORT/PATH (wss is not supported)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| bad(&e.to_string()))?
            .next()
            .ok_or_else(|| bad("the host has no address"))?;
        Ok(Target {
            url: url.to_owned(),
            addr,
            host_header: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// Most local addresses one `--source-addrs` may name.
const MAX_SOURCE_ADDRS: u32 = 1 << 16;

/// The local addresses the clients' sockets are bound to before they
/// connect, round-robin by client index, so that more connections than one
/// address has ephemeral ports (about 28,000 on Linux by default) can reach
/// one server port. Empty: the system picks, from one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceAddrs(pub Vec<IpAddr>);

impl SourceAddrs {
    /// The address client `index` binds to, if any.
    pub fn for_client(&self, index: usize) -> Option<IpAddr> {
        (!self.0.is_empty()).then(|| self.0[index % self.0.len()])
    }
}

impl FromStr for SourceAddrs {
    type Err = BenchError;

    /// A comma list of addresses and IPv4 ranges `FIRST-LAST` (inclusive),
    /// e.g. `127.0.0.2-127.0.0.9` or `127.0.0.2,127.0.0.3,::1`.
    fn from_str(spec: &str) -> Result<Self, BenchError> {
        let bad = |reason: String| BenchError::SourceAddrs {
            spec: spec.to_owned(),
            reason,
        };
        let ip = |s: &str| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| bad(format!("{:?} is not an IP address", s.trim())))
        };
        let mut out = Vec::new();
        for item in spec.split(',') {
            let Some((first, last)) = item.split_once('-') else {
                out.push(ip(item)?);
                continue;
            };
            let (IpAddr::V4(a), IpAddr::V4(b)) = (ip(first)?, ip(last)?) else {
                return Err(bad(format!("{item:?}: ranges are IPv4 only")));
            };
            let (a, b) = (u32::from(a), u32::from(b));
            if a > b {
                return Err(bad(format!(
                    "{item:?}: the first address is after the last"
                )));
            }
            if b - a >= MAX_SOURCE_ADDRS || out.len() as u32 + (b - a) >= MAX_SOURCE_ADDRS {
                return Err(bad(format!("more than {MAX_SOURCE_ADDRS} addresses")));
            }
            out.extend((a..=b).map(|v| IpAddr::V4(Ipv4Addr::from(v))));
        }
        Ok(SourceAddrs(out))
    }
}

/// Everything a run is told.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub target: Target,
    pub protocol: Protocol,
    pub clients: usize,
    pub threads: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub subscription: Subscription,
    /// The subscription's `channels`, comma separated; `None`: the
    /// server's default (quotes and trades).
    pub channels: Option<String>,
    /// The subscription's `throttle_ms`; `None`: none.
    pub throttle_ms: Option<u16>,
    /// Offer permessage-deflate; compressed messages are counted as they
    /// come and one in [`INFLATE_ONE_IN`](crate::bench::samples::INFLATE_ONE_IN)
    /// is inflated for its latency.
    pub deflate: bool,
    /// The first `slow_clients` clients read with `slow_pattern`.
    pub slow_clients: usize,
    pub slow_pattern: SlowPattern,
    /// The slow clients' SO_RCVBUF; `None`: the kernel's autotuning.
    pub slow_rcvbuf: Option<u32>,
    /// Handshakes in flight at once, over all threads: spreads connects so
    /// that the server's accept queue is not what is measured.
    pub connect_concurrency: usize,
    pub connect_timeout: Duration,
    /// Local addresses to connect from (see [`SourceAddrs`]).
    pub source_addrs: SourceAddrs,
    /// The run fails if no market data arrives this long after warm-up starts.
    pub first_data_timeout: Duration,
    /// The update rate the server was told to publish, per second, if known:
    /// demand is then that rate × clients × window, not what the clients
    /// saw (a server that falls behind its own rate shows then too).
    pub nominal_rate: Option<f64>,
    /// A progress line on stderr once a second.
    pub progress: bool,
}

impl BenchConfig {
    /// A configuration with the defaults of `tickwire bench`.
    pub fn new(target: Target, protocol: Protocol, clients: usize, duration: Duration) -> Self {
        BenchConfig {
            target,
            protocol,
            clients,
            threads: 1,
            duration,
            warmup: Duration::from_secs(2),
            subscription: Subscription::All,
            channels: None,
            throttle_ms: None,
            deflate: false,
            slow_clients: 0,
            slow_pattern: SlowPattern {
                read: Duration::from_millis(1000),
                stall: Duration::from_millis(2000),
            },
            slow_rcvbuf: None,
            connect_concurrency: 128,
            connect_timeout: Duration::from_secs(5),
            source_addrs: SourceAddrs::default(),
            first_data_timeout: Duration::from_secs(10),
            nominal_rate: None,
            progress: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_parse() {
        // TC0: all; TC1: a list; TC2: random; TC3: random with K > M.
        assert_eq!("*".parse::<Subscription>(), Ok(Subscription::All));
        assert_eq!(
            "A,B".parse::<Subscription>(),
            Ok(Subscription::List(vec!["A".into(), "B".into()]))
        );
        assert_eq!(
            "random:3/10".parse::<Subscription>(),
            Ok(Subscription::RandomSynthetic { k: 3, m: 10 })
        );
        assert!("random:11/10".parse::<Subscription>().is_err());
    }

    #[test]
    fn urls_parse_with_and_without_port_and_path() {
        let t: Target = "ws://127.0.0.1:8080/ws".parse().unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (8080, "/ws"));
        let t: Target = "ws://127.0.0.1".parse().unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (80, "/"));
        assert!("http://x".parse::<Target>().is_err());
    }

    #[test]
    fn source_addrs_parse_as_ranges_and_lists() {
        // TC0: a range; TC1: a list mixing a range, IPv4 and IPv6.
        let r: SourceAddrs = "127.0.0.2-127.0.0.9".parse().unwrap();
        assert_eq!(r.0.len(), 8);
        assert_eq!(r.0[7], "127.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(r.for_client(9), Some("127.0.0.3".parse().unwrap()));
        assert_eq!(SourceAddrs::default().for_client(0), None);
        let l: SourceAddrs = "127.0.0.2, 10.0.0.1-10.0.0.2,::1".parse().unwrap();
        let l: Vec<String> = l.0.iter().map(ToString::to_string).collect();
        assert_eq!(l, ["127.0.0.2", "10.0.0.1", "10.0.0.2", "::1"]);
    }

    #[test]
    fn bad_source_addrs_say_what_is_wrong() {
        // TC0: not an address; TC1: reversed; TC2: IPv6 range; TC3: too many; TC4: empty.
        for (spec, says) in [
            ("127.0.0.2-localhost", "\"localhost\" is not an IP address"),
            ("127.0.0.9-127.0.0.2", "the first address is after the last"),
            ("::1-::2", "ranges are IPv4 only"),
            ("10.0.0.0-10.1.0.0", "more than 65536 addresses"),
            ("", "\"\" is not an IP address"),
        ] {
            let err = spec.parse::<SourceAddrs>().unwrap_err().to_string();
            assert!(
                err.contains("--source-addrs") && err.contains(says),
                "{spec}: {err}"
            );
        }
    }
}
