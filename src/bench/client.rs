//! One load thread: many WebSocket connections on one current-thread tokio
//! runtime, and the minimal client they speak.
//!
//! The client writes the HTTP upgrade by hand and parses server frames
//! (unmasked, RFC 6455 §5.2) straight out of one read buffer per *thread*:
//! a connection waits for readiness, then `try_read`s into the shared buffer
//! behind whatever partial frame it had left over, with no `.await` while
//! the buffer is borrowed. So a frame costs no allocation and 10,000
//! connections do not each hold a large buffer; only a partial frame (tens
//! of bytes) is kept per connection between reads.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
// Relaxed for `head_seq`, as for the progress counters: see Shared.
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use super::samples::{FrameError, ThreadStats, MAX_FRAME};
use super::{BenchError, Phase, Protocol, Shared, SlowPattern, Target};

/// Bytes read per `try_read`: large enough that one read carries thousands
/// of small frames, small enough to stay in L2.
const READ_BUFFER: usize = 256 * 1024;
/// Largest HTTP upgrade response accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// What one load thread is asked to do.
pub(crate) struct ThreadPlan {
    /// Global client indexes this thread runs.
    pub clients: Vec<usize>,
    /// Subscribe request per client (same order), `None` for peers.
    pub subscribe: Vec<Option<String>>,
    pub connect_permits: usize,
}

/// Runs one load thread to completion: connects its clients, reads until
/// the shared phase says stop, and returns what it measured.
pub(crate) fn run_thread(plan: ThreadPlan, shared: Arc<Shared>) -> ThreadStats {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            shared.fail(format!("cannot start a load thread runtime: {e}"));
            return ThreadStats::new(plan.clients.len(), shared.config.protocol);
        }
    };
    let stats = Rc::new(RefCell::new(ThreadStats::new(
        plan.clients.len(),
        shared.config.protocol,
    )));
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let permits = Rc::new(Semaphore::new(plan.connect_permits.max(1)));
        let buffer = Rc::new(RefCell::new(vec![0u8; READ_BUFFER]));
        for (slot, request) in plan.subscribe.into_iter().enumerate() {
            let conn = Connection {
                slot,
                shared: Arc::clone(&shared),
                stats: Rc::clone(&stats),
                buffer: Rc::clone(&buffer),
                client: plan.clients[slot],
                slow: plan.clients[slot] < shared.config.slow_clients,
                source: shared.config.source_addrs.for_client(plan.clients[slot]),
            };
            let permits = Rc::clone(&permits);
            tokio::task::spawn_local(async move {
                let stream = {
                    let _permit = permits.acquire().await;
                    conn.open(request.as_deref()).await
                };
                match stream {
                    Ok((stream, leftover)) => conn.read_loop(stream, leftover).await,
                    Err(e) => conn.shared.fail(e.to_string()),
                }
            });
        }
        while shared.phase() != Phase::Stop {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // Dropping the runtime cancels the connection tasks; their results are
    // already in `stats`.
    drop(local);
    drop(runtime);
    Rc::try_unwrap(stats)
        .map(RefCell::into_inner)
        .unwrap_or_else(|rc| rc.borrow().clone())
}

struct Connection {
    slot: usize,
    shared: Arc<Shared>,
    stats: Rc<RefCell<ThreadStats>>,
    buffer: Rc<RefCell<Vec<u8>>>,
    /// Which client of the run this is (slots count within a thread).
    client: usize,
    slow: bool,
    /// The local address to connect from (`--source-addrs`), if any.
    source: Option<IpAddr>,
}

impl Connection {
    /// The receive buffer this client asks for: a slow client's, if set.
    fn rcvbuf(&self) -> Option<u32> {
        self.shared.config.slow_rcvbuf.filter(|_| self.slow)
    }

    /// Connects, upgrades and subscribes; returns the stream and any frame
    /// bytes that came with the upgrade response.
    async fn open(&self, subscribe: Option<&str>) -> Result<(TcpStream, Vec<u8>), BenchError> {
        let cfg = &self.shared.config;
        let timeout = cfg.connect_timeout;
        let target = &cfg.target;
        let stream =
            tokio::time::timeout(timeout, connect(self.source, self.rcvbuf(), target.addr))
                .await
                .map_err(|_| BenchError::Timeout {
                    what: format!("connecting to {}", target.addr),
                    after: timeout,
                })??;
        let _ = stream.set_nodelay(true);
        let mut stream = stream;
        let leftover = if cfg.protocol == Protocol::RawTcp {
            Vec::new()
        } else {
            let handshake = handshake(
                &mut stream,
                target,
                (cfg.protocol, cfg.deflate),
                self.shared.key(self.slot),
            );
            tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| BenchError::Timeout {
                    what: format!("the WebSocket upgrade at {}", target.url),
                    after: timeout,
                })??
        };
        if let Some(text) = subscribe {
            let frame = masked_text_frame(text.as_bytes(), self.shared.key(self.slot) as u32);
            stream.write_all(&frame).await.map_err(BenchError::Io)?;
        }
        self.shared.connected.inc();
        Ok((stream, leftover))
    }

    /// Reads until the peer closes or the run stops. Slow clients pause
    /// reading as their pattern says once warm-up begins.
    async fn read_loop(self, stream: TcpStream, mut leftover: Vec<u8>) {
        let pattern = self.shared.config.slow_pattern;
        let mut next_stall = None;
        loop {
            if self.slow {
                next_stall = self.maybe_stall(pattern, next_stall).await;
            }
            if stream.readable().await.is_err() {
                break;
            }
            // `readable` returns at once while the socket has data and
            // `try_read` never yields: without these a socket that is always
            // full (the raw-TCP blaster) would hold the thread and starve its
            // other connections, connects included. A read that filled the
            // buffer (256 KiB, a few ms of parsing in a debug build) goes to
            // the back of the queue at once, not after tokio's budget of 128.
            tokio::task::coop::consume_budget().await;
            match self.read_ready(&stream, &mut leftover) {
                Ok(Some(full)) => {
                    if full {
                        tokio::task::yield_now().await;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.shared.fail(e.to_string());
                    self.stats.borrow_mut().protocol_error(self.slot, e);
                    break;
                }
            }
        }
        let mut stats = self.stats.borrow_mut();
        stats.clients[self.slot].disconnected = true;
        if self.shared.phase() != Phase::Stop {
            self.shared.disconnects.inc();
        }
    }

    async fn maybe_stall(
        &self,
        pattern: SlowPattern,
        next_stall: Option<tokio::time::Instant>,
    ) -> Option<tokio::time::Instant> {
        if self.shared.phase() < Phase::Warmup {
            return None;
        }
        let now = tokio::time::Instant::now();
        match next_stall {
            None => {
                let slow = self.shared.config.slow_clients;
                Some(now + first_stall(pattern, self.client, slow))
            }
            Some(at) if now >= at => {
                tokio::time::sleep(pattern.stall).await;
                Some(tokio::time::Instant::now() + pattern.read)
            }
            keep => keep,
        }
    }

    /// One `try_read` into the thread's buffer and the frames in it.
    /// `Ok(None)` when the connection is finished, else whether the read
    /// filled the buffer (more is likely waiting).
    fn read_ready(
        &self,
        stream: &TcpStream,
        leftover: &mut Vec<u8>,
    ) -> Result<Option<bool>, FrameError> {
        let mut buffer = self.buffer.borrow_mut();
        let carried = leftover.len();
        if buffer.len() < carried * 2 {
            buffer.resize(carried * 2, 0);
        }
        buffer[..carried].copy_from_slice(leftover);
        let n = match stream.try_read(&mut buffer[carried..]) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Some(false)),
            Err(_) => return Ok(None),
        };
        let full = carried + n == buffer.len();
        let filled = carried + n;
        let phase = self.shared.phase();
        let mut stats = self.stats.borrow_mut();
        let parsed = stats.parse_frames(self.slot, &buffer[..filled], phase, self.slow)?;
        if parsed.pong_needed {
            // Rare (peers do not ping): answer outside the hot path.
            let _ = stream.try_write(&masked_frame(0x8A, &[], 0));
        }
        leftover.clear();
        leftover.extend_from_slice(&buffer[parsed.consumed..filled]);
        if leftover.len() > MAX_FRAME {
            return Err(FrameError::TooLarge(leftover.len()));
        }
        self.shared.frames.add(parsed.frames);
        if parsed.max_seq > self.shared.head_seq.load(Relaxed) {
            self.shared.head_seq.fetch_max(parsed.max_seq, Relaxed);
        }
        Ok((!parsed.closed).then_some(full))
    }
}

/// When slow client `client` of `slow` first stalls, from warm-up: after
/// one read phase, and then in turn, spread over one period as independent
/// clients would be. Stalling all at once, they would all catch up at once:
/// a burst of reading stale data on the load client's threads, which the
/// fast clients beside them would wait for, and their latency would show
/// (at 1,000 × 2,000 with 100 slow, a fast p99 of 8-18 ms against 4.6
/// without slow clients; spread, 4.8).
fn first_stall(pattern: SlowPattern, client: usize, slow: usize) -> Duration {
    let period = pattern.read + pattern.stall;
    pattern.read + period.mul_f64(client as f64 / slow.max(1) as f64)
}

/// Connects to `to`, from a socket bound to `from` (port chosen by the
/// system) if given, with a fixed receive buffer if `rcvbuf` is given.
async fn connect(
    from: Option<IpAddr>,
    rcvbuf: Option<u32>,
    to: SocketAddr,
) -> Result<TcpStream, BenchError> {
    let connect_error = |source| BenchError::Connect { addr: to, source };
    if from.is_none() && rcvbuf.is_none() {
        return TcpStream::connect(to).await.map_err(connect_error);
    }
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(connect_error)?;
    if let Some(bytes) = rcvbuf {
        // Before connecting, so that the window scale fits the buffer.
        socket.set_recv_buffer_size(bytes).map_err(connect_error)?;
    }
    if let Some(ip) = from {
        let local = SocketAddr::new(ip, 0);
        socket.bind(local).map_err(|source| BenchError::Bind {
            addr: local,
            source,
        })?;
    }
    socket.connect(to).await.map_err(connect_error)
}

async fn handshake(
    stream: &mut TcpStream,
    target: &Target,
    (protocol, deflate): (Protocol, bool),
    key_seed: u64,
) -> Result<Vec<u8>, BenchError> {
    let offer = match protocol {
        Protocol::TickwireBinary => "Sec-WebSocket-Protocol: tickwire.v1\r\n",
        Protocol::TickwireJson => "Sec-WebSocket-Protocol: tickwire.v1.json\r\n",
        Protocol::TsPrefix | Protocol::RawTcp => "",
    };
    let extensions = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n{offer}{extensions}\r\n",
        target.path,
        target.host_header,
        websocket_key(key_seed)
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(BenchError::Io)?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut chunk).await.map_err(BenchError::Io)?;
        if n == 0 {
            return Err(BenchError::Refused {
                url: target.url.clone(),
                reason: "the server closed the connection during the upgrade".into(),
            });
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(BenchError::Refused {
                url: target.url.clone(),
                reason: "no end to the HTTP response head".into(),
            });
        }
    };
    check_upgrade(&head[..end], target, protocol)?;
    if deflate {
        let answered = String::from_utf8_lossy(&head[..end])
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions: permessage-deflate");
        if !answered {
            return Err(BenchError::Refused {
                url: target.url.clone(),
                reason: "--deflate: the server did not take permessage-deflate".into(),
            });
        }
    }
    Ok(head[end..].to_vec())
}

/// The upgrade succeeded if the status is 101 and, when we offered a
/// subprotocol, the server picked it. `Sec-WebSocket-Accept` is not
/// verified: this is a load client talking to a server we started.
fn check_upgrade(head: &[u8], target: &Target, protocol: Protocol) -> Result<(), BenchError> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line.split(' ').nth(1).unwrap_or("");
    let refused = |reason: String| BenchError::Refused {
        url: target.url.clone(),
        reason,
    };
    if status != "101" {
        return Err(refused(format!("the server answered {status_line:?}")));
    }
    let wanted = match protocol {
        Protocol::TickwireBinary => "tickwire.v1",
        Protocol::TickwireJson => "tickwire.v1.json",
        Protocol::TsPrefix | Protocol::RawTcp => return Ok(()),
    };
    let picked = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-protocol")
            .then(|| value.trim().to_owned())
    });
    match picked {
        Some(p) if p == wanted => Ok(()),
        other => Err(refused(format!(
            "subprotocol {wanted} not accepted (server picked {other:?}); not a tickwire server?"
        ))),
    }
}

/// A base64 `Sec-WebSocket-Key`: 16 bytes from the seed.
fn websocket_key(seed: u64) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = [0u8; 18];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(
        &seed
            .rotate_left(29)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .to_le_bytes(),
    );
    let mut out = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16 | (chunk[1] as u32) << 8 | chunk[2] as u32;
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[(n >> shift & 63) as usize] as char);
        }
    }
    // 16 bytes encode to 22 characters and `==`.
    out.truncate(22);
    out.push_str("==");
    out
}

fn masked_text_frame(payload: &[u8], mask: u32) -> Vec<u8> {
    masked_frame(0x81, payload, mask)
}

/// A client frame: FIN, `opcode`, masked with `mask` as RFC 6455 §5.3 requires.
fn masked_frame(opcode: u8, payload: &[u8], mask: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | (opcode & 0x0f));
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = mask.to_be_bytes();
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_key_is_16_bytes_of_base64() {
        let k = websocket_key(42);
        assert_eq!(k.len(), 24);
        assert!(k.ends_with("=="));
        assert_ne!(k, websocket_key(43));
    }

    #[test]
    fn masked_frame_unmasks_to_the_payload() {
        let f = masked_text_frame(b"hello", 0x0102_0304);
        assert_eq!(f[0], 0x81);
        assert_eq!(f[1], 0x80 | 5);
        let key = &f[2..6];
        let plain: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(plain, b"hello");
    }

    #[test]
    fn slow_clients_first_stall_in_turn_over_one_period() {
        let pattern = SlowPattern {
            read: Duration::from_millis(1000),
            stall: Duration::from_millis(2000),
        };
        let at = |client| first_stall(pattern, client, 4);
        assert_eq!(at(0), Duration::from_millis(1000));
        assert_eq!(at(1), Duration::from_millis(1750));
        assert_eq!(at(3), Duration::from_millis(3250));
        // Never later than one period after the first.
        assert!(at(3) < at(0) + pattern.read + pattern.stall);
    }

    #[tokio::test]
    async fn a_slow_client_asks_for_its_receive_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = listener.local_addr().unwrap();
        let fixed = connect(None, Some(48 * 1024), to).await.unwrap();
        // Linux doubles what is asked for, for its bookkeeping (and starts
        // an autotuned buffer at tcp_rmem's default, 128 KiB here).
        let got = socket2::SockRef::from(&fixed).recv_buffer_size().unwrap();
        assert_eq!(got, 96 * 1024);
        let from = "127.0.0.1".parse().ok();
        let bound = connect(from, Some(32 * 1024), to).await.unwrap();
        assert_eq!(
            socket2::SockRef::from(&bound).recv_buffer_size().unwrap(),
            64 * 1024
        );
    }
}
