//! What a feed node and its edge nodes agree on over NATS: the URLs, the
//! subject of each symbol, the JetStream stream that keeps the last value of
//! each, the reconnect backoff, and the binary payload of one update.
//!
//! The feed node ([`crate::nats::publish`]) publishes every update it
//! publishes to its own clients on `<prefix>.<symbol>` (core NATS); a
//! JetStream stream over `<prefix>.>` keeps the last message of every subject.
//! An edge node ([`crate::feed::nats`]) subscribes to a filter, loads the
//! stream's last message of every matching subject (the snapshot), and feeds
//! both into its own publisher. Payloads carry the feed node's `symbol_seq`
//! and `publish_ts`, which every edge serves unchanged.

pub(crate) mod book;
pub(crate) mod publish;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::update::{Sequenced, Side, Update, UpdateKind};
use crate::wire::encode::quote_flags;

/// The subject prefix when the URL names none.
pub const DEFAULT_PREFIX: &str = "tickwire";

/// Payload layout version, byte 0 of every payload.
pub const PAYLOAD_VERSION: u8 = 1;
/// Fixed part of a payload before the quote's or trade's numbers.
const HEADER_LEN: usize = 40;
/// Payload length of a quote and a trade, without the symbol name.
pub const QUOTE_PAYLOAD_LEN: usize = HEADER_LEN + 32;
pub const TRADE_PAYLOAD_LEN: usize = HEADER_LEN + 16;

/// A `nats://` URL that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatsUrlError {
    #[error("`{0}`: expected nats://HOST:PORT[/SUBJECT]")]
    Form(String),
    #[error("`{url}`: subject `{subject}` {reason}")]
    Subject {
        url: String,
        subject: String,
        reason: &'static str,
    },
}

/// Splits `nats://HOST[:PORT][/SUBJECT]` into the server URL async-nats
/// connects to and the subject part, if any.
fn split_url(url: &str) -> Result<(String, Option<&str>), NatsUrlError> {
    let rest = url
        .strip_prefix("nats://")
        .ok_or_else(|| NatsUrlError::Form(url.to_owned()))?;
    let (authority, subject) = match rest.split_once('/') {
        Some((a, s)) => (a, Some(s).filter(|s| !s.is_empty())),
        None => (rest, None),
    };
    if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
        return Err(NatsUrlError::Form(url.to_owned()));
    }
    Ok((format!("nats://{authority}"), subject))
}

/// Checks a NATS subject: dot-separated non-empty tokens without
/// whitespace; `*` a whole token and `>` the whole last one, if
/// `wildcards`.
fn check_subject(subject: &str, wildcards: bool) -> Result<(), &'static str> {
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err("has an empty token");
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("has whitespace");
        }
        let wildcard = *t == "*" || (*t == ">" && i == tokens.len() - 1);
        if t.contains(['*', '>']) && !(wildcards && wildcard) {
            return Err(if wildcards {
                "has a misplaced wildcard (`*` is a whole token, `>` the last)"
            } else {
                "is a prefix and may not have wildcards"
            });
        }
    }
    Ok(())
}

/// Where a feed node publishes: `--publish nats://HOST:PORT[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishTarget {
    /// `nats://HOST:PORT`, for async-nats.
    pub server: String,
    /// Subjects are `<prefix>.<symbol>`.
    pub prefix: String,
}

impl std::str::FromStr for PublishTarget {
    type Err = NatsUrlError;

    fn from_str(url: &str) -> Result<Self, NatsUrlError> {
        let (server, prefix) = split_url(url)?;
        let prefix = prefix.unwrap_or(DEFAULT_PREFIX);
        check_subject(prefix, false).map_err(|reason| NatsUrlError::Subject {
            url: url.to_owned(),
            subject: prefix.to_owned(),
            reason,
        })?;
        Ok(PublishTarget {
            server,
            prefix: prefix.to_owned(),
        })
    }
}

impl PublishTarget {
    /// The subject of one symbol's updates.
    pub fn subject(&self, symbol: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + 1 + symbol.len());
        s.push_str(&self.prefix);
        s.push('.');
        push_subject_token(&mut s, symbol);
        s
    }

    /// The subject of one symbol's book events (`<prefix>.book.<symbol>`).
    pub fn book_subject(&self, symbol: &str) -> String {
        let mut s = format!("{}.book.", self.prefix);
        push_subject_token(&mut s, symbol);
        s
    }

    /// The subject of one symbol's whole-book snapshots
    /// (`<prefix>.booksnap.<symbol>`): the stream keeps the newest.
    pub fn snapshot_subject(&self, symbol: &str) -> String {
        let mut s = format!("{}.booksnap.", self.prefix);
        push_subject_token(&mut s, symbol);
        s
    }

    /// The JetStream stream that keeps the last update of each symbol.
    pub fn stream_config(&self) -> async_nats::jetstream::stream::Config {
        use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
        Config {
            name: stream_name(&self.prefix),
            description: Some("tickwire: the last update of every symbol".into()),
            subjects: vec![format!("{}.>", self.prefix)],
            max_messages_per_subject: 1,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            num_replicas: 1,
            allow_direct: true,
            ..Default::default()
        }
    }
}

/// Where an edge node takes its updates: `--feed nats://HOST:PORT[/FILTER]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSource {
    /// The URL as given, for messages.
    pub url: String,
    /// `nats://HOST:PORT`, for async-nats.
    pub server: String,
    /// Subject filter; wildcards allowed. Default `tickwire.>`.
    pub filter: String,
}

impl std::str::FromStr for NatsSource {
    type Err = NatsUrlError;

    fn from_str(url: &str) -> Result<Self, NatsUrlError> {
        let (server, filter) = split_url(url)?;
        let filter = filter.map_or_else(|| format!("{DEFAULT_PREFIX}.>"), str::to_owned);
        check_subject(&filter, true).map_err(|reason| NatsUrlError::Subject {
            url: url.to_owned(),
            subject: filter.clone(),
            reason,
        })?;
        Ok(NatsSource {
            url: url.to_owned(),
            server,
            filter,
        })
    }
}

/// Appends a symbol name as one subject token: bytes a token may not hold
/// (`.`, `*`, `>`, whitespace, anything outside printable ASCII) and `%`
/// itself as `%XX`. The payload carries the real name; the token only has
/// to be distinct per name and usable in a filter (`tickwire.BTCUSDT`).
pub fn push_subject_token(out: &mut String, name: &str) {
    for &b in name.as_bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>' | b'%') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The stream name for a prefix: upper case, anything but letters, digits,
/// `-` and `_` as `_` (`tickwire` is `TICKWIRE`, `tickwire.eu` `TICKWIRE_EU`).
pub fn stream_name(prefix: &str) -> String {
    prefix
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c.to_ascii_uppercase(),
            _ => '_',
        })
        .collect()
}

/// Delay before reconnect attempt `attempt` (1, 2, ...): none for the
/// first, then 100 ms doubling to at most 2 s.
pub fn backoff(attempt: usize) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempt - 2).unwrap_or(u32::MAX).min(5);
    Duration::from_millis(100 << exp).min(Duration::from_secs(2))
}

/// Connection options both sides use: a name, retry from the first
/// connection on, unlimited reconnects with [`backoff`], and the events
/// (connected, disconnected) sent to `events`.
pub fn connect_options(
    name: &str,
    events: tokio::sync::mpsc::UnboundedSender<async_nats::Event>,
) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(backoff)
        .connection_timeout(Duration::from_secs(2))
        .event_callback(move |event| {
            let _ = events.send(event);
            async {}
        })
}

/// Most snapshot messages asked for in one pull request.
const SNAPSHOT_BATCH: usize = 1024;

/// Hands `each` the stream's last message of every subject matching
/// `filter` and returns how many there were: the snapshot an edge starts
/// from, and what a restarted feed node continues its numbering from. A
/// stream that does not exist yet is an empty snapshot: the feed node
/// creates it before it publishes anything.
///
/// The caller's subscription should be in place first (flushed here):
/// what is published while the snapshot is read then arrives on it, and the
/// per-symbol sequence check drops what both deliver.
pub async fn read_last_values<F>(
    client: &async_nats::Client,
    filter: &str,
    mut each: impl FnMut(Bytes) -> F,
) -> Result<u64, async_nats::Error>
where
    F: std::future::Future<Output = Result<(), async_nats::Error>>,
{
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    use async_nats::jetstream::context::GetStreamByNameErrorKind;
    use futures_util::StreamExt;
    client.flush().await?;
    let js = async_nats::jetstream::new(client.clone());
    let name = match js.stream_by_subject(filter).await {
        Ok(name) => name,
        Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let stream = js.get_stream(&name).await?;
    // An ephemeral consumer, gone 30 s after its last use if the delete
    // below does not get through.
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: filter.to_owned(),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    let mut received = 0;
    let result = async {
        while received < pending {
            let want = usize::try_from(pending - received)
                .map_or(SNAPSHOT_BATCH, |n| n.min(SNAPSHOT_BATCH));
            let mut batch = consumer
                .batch()
                .max_messages(want)
                .expires(Duration::from_secs(2))
                .messages()
                .await?;
            let before = received;
            while let Some(message) = batch.next().await {
                let message = message?;
                received += 1;
                let last = message.info()?.pending == 0;
                each(message.payload.clone()).await?;
                if last {
                    return Ok(received);
                }
            }
            if received == before {
                return Err("the snapshot consumer delivered nothing".into());
            }
        }
        Ok::<u64, async_nats::Error>(received)
    }
    .await;
    let consumer_name = consumer.cached_info().name.clone();
    let _ = stream.delete_consumer(&consumer_name).await;
    result
}

/// Encodes one published update as a NATS payload (docs/ARCHITECTURE.md,
/// "Feed node and edge nodes", has the layout). All integers little-endian.
pub fn encode_payload(s: &Sequenced, name: &str, price_decimals: u8, size_decimals: u8) -> Bytes {
    let name = &name.as_bytes()[..name.len().min(u8::MAX as usize)];
    // An unknown size is flagged as on the wire, its mantissa 0.
    let (kind, side, flags, numbers): (u8, u8, u16, &[i64]) = match &s.update.kind {
        UpdateKind::Quote {
            bid_px,
            bid_sz,
            ask_px,
            ask_sz,
        } => (
            1,
            0,
            quote_flags::of(*bid_sz, *ask_sz),
            &[*bid_px, bid_sz.unwrap_or(0), *ask_px, ask_sz.unwrap_or(0)],
        ),
        UpdateKind::Trade { px, sz, side } => (2, *side as u8, 0, &[*px, *sz]),
        // The feed node's sink never takes a status (see `OutboxSink`);
        // kind 0 is one an edge rejects.
        UpdateKind::Status(_) | UpdateKind::Level { .. } => (0, 0, 0, &[]),
    };
    let mut out = BytesMut::with_capacity(HEADER_LEN + numbers.len() * 8 + name.len());
    out.put_u8(PAYLOAD_VERSION);
    out.put_u8(kind);
    out.put_u8(side);
    out.put_u8(price_decimals);
    out.put_u8(size_decimals);
    out.put_u8(name.len() as u8);
    out.put_u16_le(flags);
    out.put_u64_le(s.symbol_seq);
    out.put_u64_le(s.update.exchange_ts_ns);
    out.put_u64_le(s.update.receive_ts_ns);
    out.put_u64_le(s.publish_ts_ns);
    for n in numbers {
        out.put_i64_le(*n);
    }
    out.put_slice(name);
    out.freeze()
}

/// One payload, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub name: &'a str,
    pub price_decimals: u8,
    pub size_decimals: u8,
    /// The update, with `origin_seq` and `origin_publish_ts_ns` from the
    /// feed node and `symbol` 0: the edge interns the name.
    pub update: Update,
}

/// Why a payload was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload of {0} bytes is shorter than its layout")]
    Length(usize),
    #[error("payload version {0}, expected {PAYLOAD_VERSION}")]
    Version(u8),
    #[error("unknown update kind {0}")]
    Kind(u8),
    #[error("unknown trade side {0}")]
    Side(u8),
    #[error("flags {0:#06x} are not defined for this kind")]
    Flags(u16),
    #[error("symbol name is not UTF-8")]
    Name,
    #[error("symbol sequence 0")]
    Sequence,
}

/// Decodes a payload made by [`encode_payload`].
pub fn decode_payload(p: &[u8]) -> Result<Decoded<'_>, PayloadError> {
    let u64_at = |o: usize| u64::from_le_bytes(p[o..o + 8].try_into().unwrap_or([0; 8]));
    let i64_at = |o: usize| i64::from_le_bytes(p[o..o + 8].try_into().unwrap_or([0; 8]));
    if p.len() < HEADER_LEN {
        return Err(PayloadError::Length(p.len()));
    }
    if p[0] != PAYLOAD_VERSION {
        return Err(PayloadError::Version(p[0]));
    }
    let fixed = match p[1] {
        1 => QUOTE_PAYLOAD_LEN,
        2 => TRADE_PAYLOAD_LEN,
        k => return Err(PayloadError::Kind(k)),
    };
    if p.len() != fixed + p[5] as usize {
        return Err(PayloadError::Length(p.len()));
    }
    let name = std::str::from_utf8(&p[fixed..]).map_err(|_| PayloadError::Name)?;
    let flags = u16::from_le_bytes([p[6], p[7]]);
    let defined = match p[1] {
        1 => quote_flags::BID_SIZE_UNKNOWN | quote_flags::ASK_SIZE_UNKNOWN,
        _ => 0,
    };
    if flags & !defined != 0 {
        return Err(PayloadError::Flags(flags));
    }
    let size = |bit: u16, o: usize| (flags & bit == 0).then(|| i64_at(o));
    let kind = match p[1] {
        1 => UpdateKind::Quote {
            bid_px: i64_at(40),
            bid_sz: size(quote_flags::BID_SIZE_UNKNOWN, 48),
            ask_px: i64_at(56),
            ask_sz: size(quote_flags::ASK_SIZE_UNKNOWN, 64),
        },
        _ => UpdateKind::Trade {
            px: i64_at(40),
            sz: i64_at(48),
            side: match p[2] {
                0 => Side::Unknown,
                1 => Side::Buy,
                2 => Side::Sell,
                s => return Err(PayloadError::Side(s)),
            },
        },
    };
    let symbol_seq = u64_at(8);
    if symbol_seq == 0 {
        return Err(PayloadError::Sequence);
    }
    Ok(Decoded {
        name,
        price_decimals: p[3],
        size_decimals: p[4],
        update: Update {
            symbol: 0,
            kind,
            exchange_ts_ns: u64_at(16),
            receive_ts_ns: u64_at(24),
            origin_seq: symbol_seq,
            origin_publish_ts_ns: u64_at(32),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequenced(kind: UpdateKind) -> Sequenced {
        Sequenced {
            update: Update {
                symbol: 9,
                kind,
                exchange_ts_ns: 1_723_161_255_210_000_000,
                receive_ts_ns: 1_723_161_253_937_000_000,
                origin_seq: 0,
                origin_publish_ts_ns: 0,
            },
            seq: 42,
            symbol_seq: 5,
            publish_ts_ns: 1_900_000_000_000_000_000,
        }
    }

    #[test]
    fn payload_layout_is_pinned() {
        // The quote of docs/PROTOCOL.md's example, as a NATS payload.
        let s = sequenced(UpdateKind::Quote {
            bid_px: 6_183_763_000_000,
            bid_sz: Some(378_826_000),
            ask_px: 6_183_764_000_000,
            ask_sz: Some(154_698_000),
        });
        let p = encode_payload(&s, "BTCUSDT", 8, 8);
        assert_eq!(p.len(), QUOTE_PAYLOAD_LEN + 7);
        assert_eq!(&p[..8], &[1, 1, 0, 8, 8, 7, 0, 0]);
        assert_eq!(u64::from_le_bytes(p[8..16].try_into().unwrap()), 5);
        assert_eq!(
            u64::from_le_bytes(p[32..40].try_into().unwrap()),
            1_900_000_000_000_000_000
        );
        assert_eq!(
            i64::from_le_bytes(p[40..48].try_into().unwrap()),
            6_183_763_000_000
        );
        assert_eq!(&p[72..], b"BTCUSDT");
        // Without its ask size: flag bit 1 at offset 6, the mantissa 0.
        let s = sequenced(UpdateKind::Quote {
            bid_px: 6_183_763_000_000,
            bid_sz: Some(378_826_000),
            ask_px: 6_183_764_000_000,
            ask_sz: None,
        });
        let q = encode_payload(&s, "BTCUSDT", 8, 8);
        assert_eq!(&q[..8], &[1, 1, 0, 8, 8, 7, 2, 0]);
        assert_eq!(&q[48..56], &p[48..56]);
        assert_eq!(&q[64..72], &[0; 8]);
    }

    #[test]
    fn payloads_round_trip() {
        // TC0: quotes, with each size known and unknown (and a real 0);
        // TC1: a trade with each side.
        let mut kinds = Vec::new();
        for (bid_sz, ask_sz) in [
            (Some(i64::MAX), Some(4)),
            (None, Some(0)),
            (Some(0), None),
            (None, None),
        ] {
            kinds.push(UpdateKind::Quote {
                bid_px: -1,
                bid_sz,
                ask_px: 3,
                ask_sz,
            });
        }
        for side in [Side::Unknown, Side::Buy, Side::Sell] {
            kinds.push(UpdateKind::Trade { px: 7, sz: 8, side });
        }
        for kind in kinds {
            let s = sequenced(kind);
            let p = encode_payload(&s, "BTC-USD/é", 2, 9);
            let d = decode_payload(&p).unwrap();
            assert_eq!(
                (d.name, d.price_decimals, d.size_decimals),
                ("BTC-USD/é", 2, 9)
            );
            assert_eq!(d.update.kind, kind);
            assert_eq!(d.update.origin_seq, 5);
            assert_eq!(d.update.origin_publish_ts_ns, s.publish_ts_ns);
            assert_eq!(d.update.exchange_ts_ns, s.update.exchange_ts_ns);
            assert_eq!(d.update.receive_ts_ns, s.update.receive_ts_ns);
        }
    }

    #[test]
    fn bad_payloads_are_rejected() {
        let good = encode_payload(
            &sequenced(UpdateKind::Trade {
                px: 1,
                sz: 1,
                side: Side::Buy,
            }),
            "X",
            8,
            8,
        )
        .to_vec();
        let with = |i: usize, b: u8| {
            let mut p = good.clone();
            p[i] = b;
            p
        };
        // TC0: truncated, too long, empty.
        assert!(matches!(
            decode_payload(&good[..good.len() - 1]),
            Err(PayloadError::Length(_))
        ));
        let mut long = good.clone();
        long.push(b'Y');
        assert!(matches!(
            decode_payload(&long),
            Err(PayloadError::Length(_))
        ));
        assert!(matches!(decode_payload(&[]), Err(PayloadError::Length(0))));
        // TC1: version, kind, side.
        assert_eq!(decode_payload(&with(0, 2)), Err(PayloadError::Version(2)));
        assert_eq!(decode_payload(&with(1, 9)), Err(PayloadError::Kind(9)));
        assert_eq!(decode_payload(&with(2, 3)), Err(PayloadError::Side(3)));
        // TC3: flags on a trade, and a quote flag this version does not
        // define.
        assert_eq!(decode_payload(&with(6, 1)), Err(PayloadError::Flags(1)));
        let quote = encode_payload(
            &sequenced(UpdateKind::Quote {
                bid_px: 1,
                bid_sz: None,
                ask_px: 2,
                ask_sz: Some(3),
            }),
            "X",
            8,
            8,
        );
        let mut bad = quote.to_vec();
        bad[7] = 0x80;
        assert_eq!(decode_payload(&bad), Err(PayloadError::Flags(0x8001)));
        // TC4: a name that is not UTF-8; a zero sequence.
        let last = good.len() - 1;
        assert_eq!(decode_payload(&with(last, 0xff)), Err(PayloadError::Name));
        assert_eq!(decode_payload(&with(8, 0)), Err(PayloadError::Sequence));
    }

    #[test]
    fn urls_parse() {
        // TC0: a feed node's target, default and named prefix.
        let t: PublishTarget = "nats://127.0.0.1:4222".parse().unwrap();
        assert_eq!(
            (t.server.as_str(), t.prefix.as_str()),
            ("nats://127.0.0.1:4222", "tickwire")
        );
        let t: PublishTarget = "nats://h:1/tickwire.eu".parse().unwrap();
        assert_eq!(t.prefix, "tickwire.eu");
        assert_eq!(t.stream_config().name, "TICKWIRE_EU");
        assert_eq!(t.stream_config().subjects, ["tickwire.eu.>"]);
        // TC1: an edge's source, default and with a filter.
        let s: NatsSource = "nats://h:4222".parse().unwrap();
        assert_eq!(s.filter, "tickwire.>");
        let s: NatsSource = "nats://h:4222/tickwire.*".parse().unwrap();
        assert_eq!(
            (s.server.as_str(), s.filter.as_str()),
            ("nats://h:4222", "tickwire.*")
        );
        // TC2: refused, with the reason.
        for (bad, needle) in [
            ("http://h:1", "expected nats://"),
            ("nats://", "expected nats://"),
            ("nats:///x", "expected nats://"),
            ("nats://h:1/a..b", "empty token"),
            ("nats://h:1/a.>.b", "wildcard"),
            ("nats://h:1/a b", "whitespace"),
        ] {
            let err = bad.parse::<NatsSource>().unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        let err = "nats://h:1/a.*".parse::<PublishTarget>().unwrap_err();
        assert!(err.to_string().contains("may not have wildcards"), "{err}");
    }

    #[test]
    fn symbol_names_become_one_token() {
        let t: PublishTarget = "nats://h:1".parse().unwrap();
        // TC0: plain names are kept.
        assert_eq!(t.subject("BTCUSDT"), "tickwire.BTCUSDT");
        assert_eq!(t.subject("BTC-USD"), "tickwire.BTC-USD");
        // TC1: what a token may not hold is escaped, and so is `%`.
        assert_eq!(t.subject("BTC.D"), "tickwire.BTC%2ED");
        assert_eq!(t.subject("a*b>c d%"), "tickwire.a%2Ab%3Ec%20d%25");
        assert_eq!(t.subject("é"), "tickwire.%C3%A9");
        assert!(check_subject(&t.subject("x.*> %"), false).is_ok());
    }

    #[test]
    fn backoff_grows_to_a_cap() {
        let ms: Vec<u128> = (1..=8).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(ms, [0, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff(usize::MAX), Duration::from_secs(2));
    }
}
