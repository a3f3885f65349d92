//! The load harness behind `tickwire bench`: many WebSocket subscribers on
//! a few threads, end-to-end latency into HdrHistograms, per-symbol
//! sequence checks, and the reports.
//!
//! # Layout
//!
//! - this file: the run (connect, warm up, measure, stop) and the
//!   progress line; [`config`]: what a run is told;
//! - [`client`]: one load thread: connections on a current-thread runtime,
//!   the hand-written upgrade, the reads;
//! - [`samples`]: what a thread takes from the bytes it reads: the server's
//!   frames, sequence checks, counters, latency histograms;
//! - [`report`]: the result, the one-screen summary, JSON and `.hgrm`;
//!   [`plot`]: the SVG latency-by-percentile plot.

pub mod client;
pub mod config;
pub mod plot;
pub mod report;
pub mod samples;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicU8};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::Counter;

pub use config::{BenchConfig, Protocol, SlowPattern, SourceAddrs, Subscription, Target};
pub use report::BenchResult;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bad URL {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("bad --source-addrs {spec:?}: {reason}")]
    SourceAddrs { spec: String, reason: String },
    #[error("cannot bind a client socket to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid bench settings: {0}")]
    Invalid(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("WebSocket upgrade refused by {url}: {reason}")]
    Refused { url: String, reason: String },
    #[error("timed out after {after:?} {what}")]
    Timeout { what: String, after: Duration },
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{failed} of {clients} connections failed; first: {first}")]
    Connections {
        failed: usize,
        clients: usize,
        first: String,
    },
    #[error("no market data within {0:?} of subscribing (wrong --protocol or subscription?)")]
    NoData(Duration),
    #[error("the server's messages do not fit --protocol {protocol:?}: {first}")]
    Protocol { protocol: Protocol, first: String },
    #[error("a load thread panicked")]
    ThreadPanicked,
}

/// The stage of a run, shared by every load thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    Connect,
    Warmup,
    Measure,
    Stop,
}

/// What the coordinating thread and the load threads share.
pub(crate) struct Shared {
    pub config: BenchConfig,
    phase: AtomicU8,
    pub connected: Counter,
    pub failed: Counter,
    pub disconnects: Counter,
    /// Frames read, all threads (for the progress line).
    pub frames: Counter,
    /// Highest global sequence any client has seen. A high-water mark
    /// (`fetch_max`), not a count, so a plain atomic; `Relaxed` for the
    /// reason [`Counter`]'s are: it is read on its own.
    pub head_seq: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn phase(&self) -> Phase {
        // Relaxed: the phase only gates what is counted; nothing is published through it.
        match self.phase.load(Relaxed) {
            0 => Phase::Connect,
            1 => Phase::Warmup,
            2 => Phase::Measure,
            _ => Phase::Stop,
        }
    }

    fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Relaxed);
    }

    pub fn fail(&self, error: String) {
        self.failed.inc();
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(error);
    }

    pub fn first_failure(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// An error if a connection has failed since connecting (a protocol
    /// error: the server is not what `--protocol` says).
    fn check_protocol(&self) -> Result<(), BenchError> {
        match self.first_failure() {
            Some(first) => Err(BenchError::Protocol {
                protocol: self.config.protocol,
                first,
            }),
            None => Ok(()),
        }
    }

    /// A per-client number for the WebSocket key and mask.
    pub fn key(&self, slot: usize) -> u64 {
        (slot as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// Runs a benchmark to completion. Blocks the calling thread; starts
/// `threads` load threads of its own.
pub fn run(config: BenchConfig) -> Result<BenchResult, BenchError> {
    if config.clients == 0 || config.threads == 0 || config.duration.is_zero() {
        return Err(BenchError::Invalid(
            "clients, threads and duration must be greater than 0".into(),
        ));
    }
    let target_v4 = config.target.addr.is_ipv4();
    if let Some(ip) = config
        .source_addrs
        .0
        .iter()
        .find(|ip| ip.is_ipv4() != target_v4)
    {
        return Err(BenchError::Invalid(format!(
            "source address {ip} and target {} are of different IP families",
            config.target.addr
        )));
    }
    let _ = crate::os::raise_open_files_limit();
    let shared = Arc::new(Shared {
        config: config.clone(),
        phase: AtomicU8::new(Phase::Connect as u8),
        connected: Counter::new(),
        failed: Counter::new(),
        disconnects: Counter::new(),
        frames: Counter::new(),
        head_seq: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let mut handles = Vec::new();
    for plan in plans(&config) {
        let shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("bench-load".into())
            .spawn(move || client::run_thread(plan, shared))
            .map_err(BenchError::Io)?;
        handles.push(handle);
    }
    let outcome = coordinate(&shared);
    shared.set_phase(Phase::Stop);
    let mut threads = Vec::new();
    for h in handles {
        threads.push(h.join().map_err(|_| BenchError::ThreadPanicked)?);
    }
    let window = outcome?;
    report::build(&config, threads, window, shared.disconnects.get())
}

/// Splits the clients over the threads, round-robin so that slow clients
/// (the first ones) are spread too.
fn plans(config: &BenchConfig) -> Vec<client::ThreadPlan> {
    let mut plans: Vec<client::ThreadPlan> = (0..config.threads)
        .map(|_| client::ThreadPlan {
            clients: Vec::new(),
            subscribe: Vec::new(),
            connect_permits: config.connect_concurrency.div_ceil(config.threads),
        })
        .collect();
    for i in 0..config.clients {
        let plan = &mut plans[i % config.threads];
        plan.clients.push(i);
        plan.subscribe.push(subscribe_request(config, i));
    }
    plans
}

fn subscribe_request(config: &BenchConfig, client: usize) -> Option<String> {
    if !matches!(
        config.protocol,
        Protocol::TickwireBinary | Protocol::TickwireJson
    ) {
        return None;
    }
    let names: Vec<String> = match &config.subscription {
        Subscription::None => return None,
        Subscription::All => vec!["*".into()],
        Subscription::List(names) => names.clone(),
        Subscription::RandomSynthetic { k, m } => {
            // A partial Fisher-Yates shuffle of 0..m with a per-client xorshift.
            let mut ids: Vec<usize> = (0..*m).collect();
            let mut x = (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for i in 0..*k {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let j = i + (x % (*m - i) as u64) as usize;
                ids.swap(i, j);
            }
            ids[..*k].iter().map(|i| format!("SYN{i:04}")).collect()
        }
    };
    let quote = |list: &mut dyn Iterator<Item = &str>| {
        list.map(|n| format!("{n:?}")).collect::<Vec<_>>().join(",")
    };
    let symbols = quote(&mut names.iter().map(String::as_str));
    let channels = match &config.channels {
        None => String::new(),
        Some(channels) => format!(
            r#","channels":[{}]"#,
            quote(&mut channels.split(',').map(str::trim))
        ),
    };
    let throttle = match config.throttle_ms {
        None => String::new(),
        Some(ms) => format!(r#","throttle_ms":{ms}"#),
    };
    Some(format!(
        r#"{{"op":"subscribe","symbols":[{symbols}]{channels}{throttle}}}"#
    ))
}

/// The measured window as the coordinator saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub wall: Duration,
    pub cpu_user: Duration,
    pub cpu_system: Duration,
    pub head_seq_start: u64,
    pub head_seq_end: u64,
}

/// Waits for every connection, then runs warm-up and the measured window.
fn coordinate(shared: &Shared) -> Result<Window, BenchError> {
    let cfg = &shared.config;
    let clients = cfg.clients as u64;
    let started = Instant::now();
    // Every connect has its own timeout; this bounds the whole connect phase.
    let connect_limit = cfg.connect_timeout * 2
        + cfg.connect_timeout * (cfg.clients.div_ceil(cfg.connect_concurrency.max(1))) as u32;
    loop {
        let (ok, failed) = (shared.connected.get(), shared.failed.get());
        if failed > 0 && (ok + failed >= clients || started.elapsed() > connect_limit) {
            return Err(BenchError::Connections {
                failed: failed as usize,
                clients: cfg.clients,
                first: shared.first_failure().unwrap_or_default(),
            });
        }
        if ok >= clients {
            break;
        }
        if started.elapsed() > connect_limit {
            return Err(BenchError::Timeout {
                what: format!("waiting for {clients} connections ({ok} connected)"),
                after: connect_limit,
            });
        }
        progress(cfg, format_args!("connecting {ok}/{clients}"));
        std::thread::sleep(Duration::from_millis(20));
    }
    shared.set_phase(Phase::Warmup);
    let warm_start = Instant::now();
    let expect_data = cfg.subscription != Subscription::None;
    while warm_start.elapsed() < cfg.warmup || expect_data && shared.frames.get() == 0 {
        if warm_start.elapsed() > cfg.warmup.max(cfg.first_data_timeout) {
            return Err(BenchError::NoData(cfg.first_data_timeout));
        }
        shared.check_protocol()?;
        progress(cfg, format_args!("warming up, {clients} connected"));
        std::thread::sleep(Duration::from_millis(10));
    }
    measure(shared)
}

fn measure(shared: &Shared) -> Result<Window, BenchError> {
    let cfg = &shared.config;
    let cpu0 = cpu_times();
    let head_seq_start = shared.head_seq.load(Relaxed);
    shared.set_phase(Phase::Measure);
    let t0 = Instant::now();
    let mut last = (t0, shared.frames.get());
    while t0.elapsed() < cfg.duration {
        std::thread::sleep(
            Duration::from_millis(50).min(cfg.duration.saturating_sub(t0.elapsed())),
        );
        shared.check_protocol()?;
        if last.0.elapsed() >= Duration::from_secs(1) {
            let frames = shared.frames.get();
            let rate = (frames - last.1) as f64 / last.0.elapsed().as_secs_f64();
            last = (Instant::now(), frames);
            progress(
                cfg,
                format_args!(
                    "{:>5.1}/{} s  {} msgs/s  {} disconnects",
                    t0.elapsed().as_secs_f64(),
                    cfg.duration.as_secs(),
                    report::si(rate),
                    shared.disconnects.get()
                ),
            );
        }
    }
    let wall = t0.elapsed();
    let head_seq_end = shared.head_seq.load(Relaxed);
    let cpu1 = cpu_times();
    if cfg.progress {
        eprintln!();
    }
    Ok(Window {
        wall,
        cpu_user: cpu1.0.saturating_sub(cpu0.0),
        cpu_system: cpu1.1.saturating_sub(cpu0.1),
        head_seq_start,
        head_seq_end,
    })
}

fn progress(cfg: &BenchConfig, line: std::fmt::Arguments<'_>) {
    if cfg.progress {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }
}

/// User and system CPU time of this process.
fn cpu_times() -> (Duration, Duration) {
    // SAFETY: all-zero is a valid `rusage` (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into the struct we pass.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_subscriptions_are_k_distinct_names() {
        let target: Target = "ws://127.0.0.1:9/ws".parse().unwrap();
        let mut cfg = BenchConfig::new(target, Protocol::TickwireBinary, 2, Duration::from_secs(1));
        cfg.subscription = Subscription::RandomSynthetic { k: 5, m: 1000 };
        let req = subscribe_request(&cfg, 0).unwrap();
        let v: serde_json::Value = serde_json::from_str(&req).unwrap();
        let mut names: Vec<&str> = v["symbols"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        names.dedup();
        assert_eq!(names.len(), 5);
        assert_ne!(subscribe_request(&cfg, 1), Some(req));
        cfg.throttle_ms = Some(100);
        cfg.channels = Some("quotes, book.10".into());
        let v: serde_json::Value =
            serde_json::from_str(&subscribe_request(&cfg, 0).unwrap()).unwrap();
        assert_eq!(v["throttle_ms"], 100);
        assert_eq!(v["channels"], serde_json::json!(["quotes", "book.10"]));
    }
}
