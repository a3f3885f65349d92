//! A run's result: built from the load threads' records, printed as a
//! one-screen summary, written as JSON and as HdrHistogram's percentile
//! distribution (`.hgrm`, the format its plotter reads).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::samples::{latency_histogram, ConnStats, ThreadStats};
use super::{BenchConfig, BenchError, Protocol, Subscription, Window};

/// Latency percentiles in µs.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Percentiles {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    /// Receive time − the server's publish timestamp (normal clients).
    pub publish: Option<Percentiles>,
    /// Receive time − the feed's receive timestamp (tickwire; for a replayed
    /// recording this includes the recording's age).
    pub receive: Option<Percentiles>,
    /// Receive time − publish timestamp, slow clients only.
    pub slow_publish: Option<Percentiles>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Messages {
    /// Market-data messages in the measured window, all clients.
    pub measured: u64,
    pub per_sec: f64,
    /// Those messages' bytes on the wire (WebSocket headers included), per second.
    pub bytes_per_sec: f64,
    /// What the server should have sent in the window: the nominal rate
    /// (`--rate`) or else what it published (the highest sequence seen
    /// advanced by this much), times the clients; `None` for symbol subsets
    /// and raw TCP, where it cannot be known from the stream.
    pub demand: Option<u64>,
    pub demand_pct: Option<f64>,
    pub publish_rate_per_sec: Option<f64>,
    /// Market-data messages over the whole run (subscribe to stop), all
    /// clients, and the least and most one client got.
    pub total: u64,
    pub per_client_total_min: u64,
    pub per_client_total_max: u64,
    pub definitions: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sequence {
    /// Per-symbol sequence jumps: conflation (tickwire) or drops (peers).
    pub gaps: u64,
    /// Updates those jumps skipped.
    pub missed: u64,
    /// Bugs if non-zero.
    pub reorders: u64,
    pub duplicates: u64,
    pub conflated_notices: u64,
    /// Stale / live statuses (not updates, not counted in the above).
    pub status_notices: u64,
    /// permessage-deflate (`--deflate`): compressed messages, and those
    /// inflated for their latency and sequence.
    pub compressed: u64,
    pub inflated: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientCpu {
    pub user_secs: f64,
    pub system_secs: f64,
    /// CPU time over wall time: 1.0 is one core busy.
    pub cores: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub url: String,
    pub protocol: Protocol,
    pub subscription: String,
    pub clients: usize,
    pub threads: usize,
    pub slow_clients: usize,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub disconnects: u64,
    /// Close codes the server sent, with how many clients got each.
    pub close_codes: Vec<(u16, u64)>,
    pub messages: Messages,
    pub sequence: Sequence,
    pub latency_us: Latencies,
    /// Timestamps ahead of this machine's clock (recorded as 0 µs).
    pub negative_latencies: u64,
    pub client_cpu: ClientCpu,
    pub server_errors: u64,
    pub errors: Vec<String>,
    /// The publish-latency histogram of normal clients (µs), for `.hgrm` and SVG.
    #[serde(skip)]
    pub publish_histogram: Histogram<u64>,
    #[serde(skip)]
    pub receive_histogram: Histogram<u64>,
}

pub(crate) fn build(
    cfg: &BenchConfig,
    threads: Vec<ThreadStats>,
    w: Window,
    disconnects: u64,
) -> Result<BenchResult, BenchError> {
    let all = Merged::of(threads);
    if let Some(first) = all.clients.iter().find_map(|c| c.protocol_error.clone()) {
        return Err(BenchError::Protocol {
            protocol: cfg.protocol,
            first,
        });
    }
    let clients = &all.clients;
    Ok(BenchResult {
        url: cfg.target.url.clone(),
        protocol: cfg.protocol,
        subscription: subscription_text(&cfg.subscription),
        clients: cfg.clients,
        threads: cfg.threads,
        slow_clients: cfg.slow_clients,
        warmup_secs: cfg.warmup.as_secs_f64(),
        duration_secs: w.wall.as_secs_f64(),
        disconnects,
        close_codes: close_codes(clients),
        messages: Messages::of(cfg, clients, &w),
        sequence: Sequence::of(clients),
        latency_us: Latencies {
            publish: Percentiles::of(&all.publish),
            receive: Percentiles::of(&all.receive),
            slow_publish: Percentiles::of(&all.slow_publish),
        },
        negative_latencies: all.negative_latency,
        client_cpu: ClientCpu::of(&w),
        server_errors: total(clients, |c| c.server_errors),
        errors: all.errors,
        publish_histogram: all.publish,
        receive_histogram: all.receive,
    })
}

/// Every load thread's measurements together.
struct Merged {
    publish: Histogram<u64>,
    receive: Histogram<u64>,
    slow_publish: Histogram<u64>,
    clients: Vec<ConnStats>,
    errors: Vec<String>,
    negative_latency: u64,
}

impl Merged {
    fn of(threads: Vec<ThreadStats>) -> Merged {
        let mut all = Merged {
            publish: latency_histogram(),
            receive: latency_histogram(),
            slow_publish: latency_histogram(),
            clients: Vec::new(),
            errors: Vec::new(),
            negative_latency: 0,
        };
        for t in threads {
            // The histograms share bounds, so adding cannot fail.
            let _ = all.publish.add(&t.publish);
            let _ = all.receive.add(&t.receive);
            let _ = all.slow_publish.add(&t.slow_publish);
            all.negative_latency += t.negative_latency;
            all.errors.extend(t.errors);
            all.clients.extend(t.clients);
        }
        all
    }
}

/// One counter summed over every connection.
fn total(clients: &[ConnStats], counter: fn(&ConnStats) -> u64) -> u64 {
    clients.iter().map(counter).sum()
}

impl Messages {
    fn of(cfg: &BenchConfig, clients: &[ConnStats], w: &Window) -> Messages {
        let measured = total(clients, |c| c.updates_measured);
        let secs = w.wall.as_secs_f64();
        // Every client sees the whole stream only with `*` (peers: always).
        // Every global sequence reaches a client of every symbol's default
        // channels; one that named channels sees a share of them.
        let sequenced = cfg.subscription == Subscription::All
            && cfg.channels.is_none()
            && cfg.throttle_ms.is_none()
            && cfg.protocol != Protocol::RawTcp;
        let published = w.head_seq_end.saturating_sub(w.head_seq_start);
        let per_client = match cfg.nominal_rate {
            Some(rate) => (rate * secs) as u64,
            None => published,
        };
        let demand = sequenced.then_some(per_client * cfg.clients as u64);
        let per_client_totals = || clients.iter().map(|c| c.updates_total);
        Messages {
            measured,
            per_sec: measured as f64 / secs,
            bytes_per_sec: total(clients, |c| c.bytes_measured) as f64 / secs,
            demand,
            demand_pct: demand
                .filter(|&d| d > 0)
                .map(|d| 100.0 * measured as f64 / d as f64),
            publish_rate_per_sec: sequenced.then_some(published as f64 / secs),
            total: total(clients, |c| c.updates_total),
            per_client_total_min: per_client_totals().min().unwrap_or(0),
            per_client_total_max: per_client_totals().max().unwrap_or(0),
            definitions: total(clients, |c| c.definitions),
        }
    }
}

impl Sequence {
    fn of(clients: &[ConnStats]) -> Sequence {
        Sequence {
            gaps: total(clients, |c| c.gaps),
            missed: total(clients, |c| c.missed),
            reorders: total(clients, |c| c.reorders),
            duplicates: total(clients, |c| c.duplicates),
            conflated_notices: total(clients, |c| c.conflated_notices),
            status_notices: total(clients, |c| c.status_notices),
            compressed: total(clients, |c| c.compressed),
            inflated: total(clients, |c| c.inflated),
        }
    }
}

impl ClientCpu {
    fn of(w: &Window) -> ClientCpu {
        let cpu_secs = (w.cpu_user + w.cpu_system).as_secs_f64();
        ClientCpu {
            user_secs: w.cpu_user.as_secs_f64(),
            system_secs: w.cpu_system.as_secs_f64(),
            cores: cpu_secs / w.wall.as_secs_f64(),
        }
    }
}

/// The close codes the server sent, in the order first seen, with how many
/// clients got each.
fn close_codes(clients: &[ConnStats]) -> Vec<(u16, u64)> {
    let mut codes: Vec<(u16, u64)> = Vec::new();
    for code in clients.iter().filter_map(|c| c.close_code) {
        match codes.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => codes.push((code, 1)),
        }
    }
    codes
}

fn subscription_text(s: &Subscription) -> String {
    match s {
        Subscription::None => "none".into(),
        Subscription::All => "*".into(),
        Subscription::List(names) => names.join(","),
        Subscription::RandomSynthetic { k, m } => format!("random:{k}/{m}"),
    }
}

/// `1234567.0` as `1.23M`.
pub fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// µs as a short human duration.
fn dur(us: u64) -> String {
    match us {
        u if u >= 1_000_000 => format!("{:.2} s", u as f64 / 1e6),
        u if u >= 1_000 => format!("{:.2} ms", u as f64 / 1e3),
        u => format!("{u} µs"),
    }
}

impl BenchResult {
    /// The one-screen summary.
    pub fn summary(&self) -> String {
        let m = &self.messages;
        let s = &self.sequence;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} ({:?}, subscribe {}), {} clients ({} slow) on {} thread(s), {:.1} s after {:.1} s warm-up",
            self.url, self.protocol, self.subscription, self.clients, self.slow_clients,
            self.threads, self.duration_secs, self.warmup_secs
        );
        let demand = match (m.demand_pct, m.publish_rate_per_sec) {
            (Some(pct), Some(rate)) => {
                format!(", {pct:.1}% of demand (server published {}/s)", si(rate))
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  delivered     {} msgs/s = {}B/s{demand}",
            si(m.per_sec),
            si(m.bytes_per_sec)
        );
        let _ = writeln!(
            out,
            "  messages      {} in window, {} in run (per client {}..{}), {} definitions",
            m.measured, m.total, m.per_client_total_min, m.per_client_total_max, m.definitions
        );
        for (name, p) in [
            ("publish→recv", &self.latency_us.publish),
            ("feed→recv", &self.latency_us.receive),
            ("slow clients", &self.latency_us.slow_publish),
        ] {
            if let Some(p) = p {
                let _ = writeln!(
                    out,
                    "  {name:<13} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                    dur(p.p50),
                    dur(p.p90),
                    dur(p.p99),
                    dur(p.p999),
                    dur(p.max)
                );
            }
        }
        let _ = writeln!(
            out,
            "  sequence      {} gaps ({} missed, {} conflated notices), {} reorders, {} duplicates",
            s.gaps, s.missed, s.conflated_notices, s.reorders, s.duplicates
        );
        if s.compressed > 0 {
            let _ = writeln!(
                out,
                "  deflate       {} compressed messages, {} of them inflated for their latency",
                s.compressed, s.inflated
            );
        }
        let _ = writeln!(
            out,
            "  connections   {} disconnects, close codes {:?}, {} server errors",
            self.disconnects, self.close_codes, self.server_errors
        );
        let _ = writeln!(
            out,
            "  client CPU    {:.2} cores ({:.1} s user, {:.1} s sys)",
            self.client_cpu.cores, self.client_cpu.user_secs, self.client_cpu.system_secs
        );
        if self.negative_latencies > 0 {
            let _ = writeln!(
                out,
                "  warning       {} timestamps ahead of the local clock",
                self.negative_latencies
            );
        }
        out
    }

    /// The lines of this run's SVG plot: publish→receive, and feed→receive
    /// where the protocol carries it.
    pub fn plot_series(&self) -> Vec<super::plot::Series> {
        let mut out = vec![super::plot::Series {
            label: "publish→receive".into(),
            points: points(&self.publish_histogram),
        }];
        if !self.receive_histogram.is_empty() {
            out.push(super::plot::Series {
                label: "feed→receive".into(),
                points: points(&self.receive_histogram),
            });
        }
        out
    }

    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// HdrHistogram's percentile distribution of `h` (values as recorded, µs),
/// five steps per halving of the remaining percentile range, as Java's
/// `outputPercentileDistribution` writes it.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64;
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.3} {q:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
        }
    }
    let sub_buckets = 2u64.pow((2.0 * 10f64.powi(h.sigfig() as i32)).log2().ceil() as u32);
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean(),
        h.stdev()
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    );
    out
}

/// The (quantile, value) points of an `.hgrm` text, for plotting.
pub fn parse_hgrm(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let value = f.next()?.parse::<f64>().ok()?;
            let q = f.next()?.parse::<f64>().ok()?;
            Some((q, value))
        })
        .collect()
}

/// The points of a histogram as [`parse_hgrm`] would return them.
pub fn points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    parse_hgrm(&hgrm(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_round_trips_through_the_parser() {
        let mut h = latency_histogram();
        for v in 1..=1000u64 {
            h.saturating_record(v * 10);
        }
        let text = hgrm(&h);
        assert!(text.starts_with("       Value     Percentile TotalCount"));
        assert!(text.contains("Total count    =         1000]"), "{text}");
        let pts = parse_hgrm(&text);
        assert!(pts.len() > 20);
        assert!(pts[0].0 < 0.01, "{:?}", pts[0]);
        assert_eq!(pts.last().map(|p| p.0), Some(1.0));
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    }
}
