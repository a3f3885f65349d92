//! Who may open a connection: the server-wide and per-IP limits, checked
//! when a TCP connection is accepted, before hyper or any per-connection
//! state exists. A refused connection gets a fixed HTTP answer (503 or 429
//! with `Retry-After`) and costs one small task for at most
//! [`REFUSAL_LINGER`].
//!
//! An admitted connection holds an [`Admitted`] for as long as it lives (the
//! HTTP connection, and the WebSocket or SSE stream it became); dropping it
//! gives the connection's place back.
//!
//! A connection from a trusted proxy is admitted against the server-wide
//! limit only, and counts against a client's limits once the proxy says
//! who the client is ([`Admitted::attribute`]): from its PROXY header, or
//! request by request from `X-Forwarded-For`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::metrics::Metrics;

// Defined in metrics, which keeps a counter per reason, so that metrics
// need not import this module, which counts into it.
pub use crate::metrics::Refused;

/// The limits, from the server config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub attempts_per_ip_per_min: u32,
    /// Whether loopback clients are subject to the per-IP limits.
    pub limit_loopback: bool,
}

impl Refused {
    /// The status, the `Retry-After` seconds and the one-line reason.
    pub fn answer(self, limits: &AdmissionLimits) -> (u16, u64, String) {
        match self {
            Refused::ServerFull => (
                503,
                SERVER_FULL_RETRY_SECS,
                format!(
                    "server full: {} connections open (max_connections)",
                    limits.max_connections
                ),
            ),
            Refused::IpFull => (
                429,
                IP_FULL_RETRY_SECS,
                format!(
                    "too many connections from your address: {} open (max_connections_per_ip)",
                    limits.max_per_ip
                ),
            ),
            Refused::IpRate { retry_after_secs } => (
                429,
                retry_after_secs,
                format!(
                    "too many connection attempts from your address: more than {} per minute",
                    limits.attempts_per_ip_per_min
                ),
            ),
        }
    }

    /// The whole HTTP response.
    fn response(self, limits: &AdmissionLimits) -> String {
        let (code, retry_after, reason) = self.answer(limits);
        let status = match code {
            503 => "503 Service Unavailable",
            _ => "429 Too Many Requests",
        };
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\nretry-after: {retry_after}\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n{reason}\n",
            reason.len() + 1
        )
    }
}

/// `Retry-After` for a full server: connections come and go within seconds.
const SERVER_FULL_RETRY_SECS: u64 = 5;
/// `Retry-After` when an IP has too many open: one of them must close first.
const IP_FULL_RETRY_SECS: u64 = 5;
/// How long a refused connection is kept to read what the client sent:
/// closing a socket with unread input resets it, and the reset can destroy
/// the answer before the client reads it.
pub const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// One client IP's connections and attempt bucket.
#[derive(Debug)]
struct IpState {
    open: usize,
    /// Attempts left, refilled at `attempts_per_ip_per_min / 60` per second
    /// up to `attempts_per_ip_per_min`.
    tokens: f64,
    refilled: Instant,
}

/// The admission state the accept loop consults.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    metrics: Arc<Metrics>,
    per_ip: Mutex<PerIp>,
    /// Refused connections still lingering (see [`refuse`]). Not a
    /// [`Gauge`](crate::metrics::Gauge): nothing exports it, it is only
    /// a bound on descriptors.
    lingering: AtomicUsize,
}

/// Most refused connections that linger at once; past it, a refusal is
/// written if the socket takes it at once and the socket is closed, so that
/// a flood of refused connections cannot pile up descriptors.
const MAX_LINGERING: usize = 1024;

#[derive(Debug)]
struct PerIp {
    ips: HashMap<IpAddr, IpState>,
    swept: Instant,
}

/// How often idle entries (nothing open, bucket full again) are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    /// Set when the connection counts against a client IP's limits (its
    /// key: see [`client_key`]).
    ip: Mutex<Option<IpAddr>>,
}

impl Admitted {
    /// The client address the connection counts against, if it is
    /// attributed to one.
    pub fn ip(&self) -> Option<IpAddr> {
        *self.ip.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Admission {
    pub fn new(limits: AdmissionLimits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            metrics,
            per_ip: Mutex::new(PerIp {
                ips: HashMap::new(),
                swept: Instant::now(),
            }),
            lingering: AtomicUsize::new(0),
        })
    }

    /// Admits a connection from `ip`, or says why not (and counts it).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let r = self.try_admit(ip, Instant::now());
        if let Err(refused) = r {
            self.count(refused);
        }
        r
    }

    /// Admits a connection from a trusted proxy against `max_connections`
    /// only; its client's limits apply once [`Admitted::attribute`] says
    /// who the client is.
    pub fn admit_unattributed(self: &Arc<Self>) -> Result<Admitted, Refused> {
        let r = self.place();
        if let Err(refused) = r {
            self.count(refused);
        }
        r
    }

    /// The limits, for the text of a refusal.
    pub fn limits(&self) -> &AdmissionLimits {
        &self.limits
    }

    fn count(&self, refused: Refused) {
        self.metrics.connections_refused[refused.index()].inc();
    }

    fn try_admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Admitted, Refused> {
        let admitted = self.place()?;
        // Refused: dropping `admitted` gives its place back.
        admitted.attribute_at(ip, now)?;
        Ok(admitted)
    }

    /// A place against `max_connections`, counting against no client yet.
    fn place(self: &Arc<Self>) -> Result<Admitted, Refused> {
        let max = self.limits.max_connections as u64;
        if !self.metrics.tcp_connections.inc_below(max) {
            return Err(Refused::ServerFull);
        }
        Ok(Admitted {
            admission: Arc::clone(self),
            ip: Mutex::new(None),
        })
    }

    fn admit_ip(&self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        let capacity = f64::from(self.limits.attempts_per_ip_per_min);
        let per_sec = capacity / 60.0;
        let mut guard = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let per_ip = &mut *guard;
        if now.duration_since(per_ip.swept) >= SWEEP_EVERY {
            per_ip.swept = now;
            per_ip
                .ips
                .retain(|_, s| s.open > 0 || refill(s, now, per_sec, capacity) < capacity);
            if per_ip.ips.capacity() > 4 * per_ip.ips.len().max(16) {
                per_ip.ips.shrink_to_fit();
            }
        }
        let state = per_ip.ips.entry(ip).or_insert(IpState {
            open: 0,
            tokens: capacity,
            refilled: now,
        });
        let tokens = refill(state, now, per_sec, capacity);
        if tokens < 1.0 {
            state.tokens = tokens;
            state.refilled = now;
            let retry_after_secs = ((1.0 - tokens) / per_sec).ceil().max(1.0) as u64;
            return Err(Refused::IpRate { retry_after_secs });
        }
        state.tokens = tokens - 1.0;
        state.refilled = now;
        if state.open >= self.limits.max_per_ip {
            return Err(Refused::IpFull);
        }
        state.open += 1;
        Ok(())
    }

    /// Gives back a client's open-connection place.
    fn release_ip(&self, ip: IpAddr) {
        let capacity = f64::from(self.limits.attempts_per_ip_per_min);
        let now = Instant::now();
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = per_ip.ips.get_mut(&ip) {
            state.open = state.open.saturating_sub(1);
            if state.open == 0 && refill(state, now, capacity / 60.0, capacity) >= capacity {
                per_ip.ips.remove(&ip);
            }
        }
    }

    /// Client IPs with state held (open connections or a bucket still
    /// refilling).
    #[cfg(test)]
    pub fn tracked_ips(&self) -> usize {
        self.per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ips
            .len()
    }
}

/// The per-IP limits' key: an IPv4 address, or an IPv6 /64 (one host's
/// usual allocation: an attacker gets 2^64 addresses with it).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
    }
}

/// The bucket's level at `now`, without storing it.
fn refill(s: &IpState, now: Instant, per_sec: f64, capacity: f64) -> f64 {
    let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
    (s.tokens + elapsed * per_sec).min(capacity)
}

impl Admitted {
    /// Makes the connection count as `ip`'s: an attempt of `ip` and one of
    /// its open connections (as if it had connected itself), and no longer
    /// the previous client's. Nothing changes when `ip` is already its
    /// client; when `ip` is refused (and counted), it stays as it was.
    pub fn attribute(&self, ip: IpAddr) -> Result<(), Refused> {
        let r = self.attribute_at(ip, Instant::now());
        if let Err(refused) = r {
            self.admission.count(refused);
        }
        r
    }

    fn attribute_at(&self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        let ip = ip.to_canonical();
        let limits = &self.admission.limits;
        let key = (limits.limit_loopback || !ip.is_loopback()).then(|| client_key(ip));
        let mut current = self.ip.lock().unwrap_or_else(|e| e.into_inner());
        if *current == key {
            return Ok(());
        }
        if let Some(key) = key {
            self.admission.admit_ip(key, now)?;
        }
        if let Some(old) = std::mem::replace(&mut *current, key) {
            self.admission.release_ip(old);
        }
        Ok(())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.metrics.tcp_connections.dec();
        let ip = self.ip.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = ip.take() {
            self.admission.release_ip(ip);
        }
    }
}

/// Answers a refused connection and closes it: the response goes out at
/// once, then whatever the client sends is read and discarded for up to
/// [`REFUSAL_LINGER`] so that the close does not reset the answer away.
/// Past [`MAX_LINGERING`] refusals at once, it does not linger.
pub fn refuse(admission: &Arc<Admission>, stream: TcpStream, refused: Refused) {
    let response = refused.response(&admission.limits);
    // Relaxed: an independent count, only compared with a bound.
    if admission.lingering.fetch_add(1, Relaxed) >= MAX_LINGERING {
        admission.lingering.fetch_sub(1, Relaxed);
        let _ = stream.try_write(response.as_bytes());
        return;
    }
    let admission = Arc::clone(admission);
    tokio::spawn(async move {
        linger(stream, response).await;
        admission.lingering.fetch_sub(1, Relaxed);
    });
}

async fn linger(mut stream: TcpStream, response: String) {
    if stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 512];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, per_ip: usize, per_min: u32) -> Arc<Admission> {
        Admission::new(
            AdmissionLimits {
                max_connections: max,
                max_per_ip: per_ip,
                attempts_per_ip_per_min: per_min,
                limit_loopback: false,
            },
            Arc::new(Metrics::default()),
        )
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));
    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn per_ip_and_total_limits_free_their_places() {
        let a = admission(3, 2, 1000);
        let now = Instant::now();
        // TC0: two from A, a third from A is refused, B still gets in.
        let a1 = a.try_admit(A, now).unwrap();
        let _a2 = a.try_admit(A, now).unwrap();
        assert_eq!(a.try_admit(A, now).unwrap_err(), Refused::IpFull);
        let _b1 = a.try_admit(B, now).unwrap();
        // TC1: the server is full, for everyone, loopback included.
        assert_eq!(a.try_admit(B, now).unwrap_err(), Refused::ServerFull);
        assert_eq!(a.try_admit(LOOPBACK, now).unwrap_err(), Refused::ServerFull);
        // TC2: a closed connection frees both its places.
        drop(a1);
        let _a3 = a.try_admit(A, now).unwrap();
        assert_eq!(a.metrics.tcp_connections.get(), 3);
    }

    #[test]
    fn attempts_refill_per_minute_and_idle_ips_are_forgotten() {
        let a = admission(100, 100, 60);
        let t0 = Instant::now();
        // TC0: 60 attempts at once, the 61st is told to wait a second.
        for _ in 0..60 {
            drop(a.try_admit(A, t0).unwrap());
        }
        assert_eq!(
            a.try_admit(A, t0).unwrap_err(),
            Refused::IpRate {
                retry_after_secs: 1
            }
        );
        // TC1: one per second comes back.
        let t1 = t0 + Duration::from_millis(1000);
        drop(a.try_admit(A, t1).unwrap());
        assert!(a.try_admit(A, t1).is_err());
        // TC2: loopback is not limited by default.
        for _ in 0..200 {
            drop(a.try_admit(LOOPBACK, t1).unwrap());
        }
        // TC3: a minute later the bucket is full and the sweep forgets A.
        let t2 = t1 + Duration::from_secs(61);
        drop(a.try_admit(B, t2).unwrap());
        assert_eq!(a.tracked_ips(), 1, "only B, whose bucket is refilling");
        assert_eq!(a.metrics.tcp_connections.get(), 0);
    }

    #[test]
    fn an_ipv6_host_is_its_slash_64() {
        let a = admission(100, 2, 1000);
        let now = Instant::now();
        let host =
            |last: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
        let _one = a.try_admit(host(1), now).unwrap();
        let _two = a.try_admit(host(2), now).unwrap();
        assert_eq!(a.try_admit(host(3), now).unwrap_err(), Refused::IpFull);
        let next_net = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert!(a.try_admit(next_net, now).is_ok());
        // An IPv4-mapped address is its IPv4 address.
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        let _v4 = a.try_admit(mapped, now).unwrap();
        let _v4b = a.try_admit(A, now).unwrap();
        assert_eq!(a.try_admit(A, now).unwrap_err(), Refused::IpFull);
    }

    #[test]
    fn a_proxied_connection_counts_as_its_latest_client() {
        let a = admission(10, 1, 1000);
        let now = Instant::now();
        // TC0: unattributed, only the total counts.
        let p1 = a.place().unwrap();
        let p2 = a.place().unwrap();
        assert_eq!(a.tracked_ips(), 0);
        assert_eq!(a.metrics.tcp_connections.get(), 2);
        // TC1: as A, then a second connection as A is over A's limit and
        // stays unattributed.
        p1.attribute_at(A, now).unwrap();
        assert_eq!(p2.attribute_at(A, now).unwrap_err(), Refused::IpFull);
        assert!(p2.ip.lock().unwrap().is_none());
        // TC2: the first moving to B frees A's place.
        p1.attribute_at(B, now).unwrap();
        p2.attribute_at(A, now).unwrap();
        // TC3: dropping gives back both places.
        drop(p1);
        let _b = a.try_admit(B, now).unwrap();
        drop(p2);
        let _a = a.try_admit(A, now).unwrap();
        assert_eq!(a.metrics.tcp_connections.get(), 2);

        // TC4: the same client again is not another attempt.
        let a = admission(10, 10, 2);
        let p = a.place().unwrap();
        for _ in 0..5 {
            p.attribute_at(A, now).unwrap();
        }
        let _second = a.try_admit(A, now).unwrap();
        assert!(matches!(
            a.try_admit(A, now).unwrap_err(),
            Refused::IpRate { .. }
        ));
        // TC5: loopback is exempt unless limit_loopback, as when direct.
        p.attribute_at(LOOPBACK, now).unwrap();
        assert!(p.ip.lock().unwrap().is_none());
    }

    #[test]
    fn refusals_are_http_responses() {
        let limits = AdmissionLimits {
            max_connections: 1,
            max_per_ip: 1,
            attempts_per_ip_per_min: 1,
            limit_loopback: true,
        };
        let r = Refused::ServerFull.response(&limits);
        assert!(r.starts_with("HTTP/1.1 503 "));
        assert!(r.contains("\r\nretry-after: 5\r\n"));
        let r = Refused::IpRate {
            retry_after_secs: 42,
        }
        .response(&limits);
        assert!(r.starts_with("HTTP/1.1 429 "));
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("retry-after: 42"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
