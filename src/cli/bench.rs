//! `tickwire bench` and `tickwire plot`: their flags, turned into a
//! [`bench::BenchConfig`], and the files they write.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tickwire::bench;

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Server to measure: ws://HOST:PORT/PATH (tcp://HOST:PORT for --protocol raw-tcp).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Subscriber connections.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Measured seconds (after warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of reading before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// tickwire (binary), tickwire-json, ts-prefix (payload starts with u64
    /// ns timestamp and u64 sequence, little-endian) or raw-tcp (no
    /// handshake, frames only counted).
    #[arg(long, default_value = "tickwire")]
    protocol: String,
    /// Symbols per client (tickwire): `*`, `A,B,C`, `random:K/M` (K of
    /// the synthetic feed's M symbols) or `none` (idle connections).
    #[arg(long, default_value = "*")]
    symbols: String,
    /// Channels of each subscription (tickwire), comma separated, e.g.
    /// `book.10` or `quotes,book.10`; the server's default (quotes and
    /// trades) when absent.
    #[arg(long)]
    channels: Option<String>,
    /// `throttle_ms` of each subscription (tickwire): per symbol at most
    /// one quote or book per this many milliseconds, every trade.
    #[arg(long)]
    throttle_ms: Option<u16>,
    /// Offer permessage-deflate (tickwire): compressed messages are
    /// counted as they come, one in 32 is inflated for its latency.
    #[arg(long)]
    deflate: bool,
    /// Load threads, each a current-thread runtime with its share of the clients.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Clients that read in bursts (see --slow-pattern); their latency is
    /// reported apart.
    #[arg(long, default_value_t = 0)]
    slow: usize,
    /// Slow clients' pattern: READ_MS:STALL_MS, repeated.
    #[arg(long, default_value = "1000:2000")]
    slow_pattern: String,
    /// Slow clients' kernel receive buffer (SO_RCVBUF, which Linux
    /// doubles), so that a stall closes their TCP window, and the server
    /// sees it, as over a network. 0: the kernel's autotuning, which on
    /// loopback grows to hold seconds of data (tcp_rmem's maximum), so that
    /// a stall never reaches the server.
    #[arg(long, default_value_t = 64 * 1024)]
    slow_rcvbuf: u32,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Seconds a connect or upgrade may take.
    #[arg(long, default_value_t = 5.0)]
    connect_timeout: f64,
    /// Local addresses to connect from, round-robin over the clients:
    /// `127.0.0.2-127.0.0.9` or a comma list (each address has about 28,000
    /// ephemeral ports; more connections than that to one server port need
    /// several). Default: the system picks.
    #[arg(long)]
    source_addrs: Option<String>,
    /// Fail if no data arrives this many seconds after subscribing.
    #[arg(long, default_value_t = 10.0)]
    first_data_timeout: f64,
    /// The update rate the server was told to publish (updates/s): demand
    /// is then rate × clients, not only what the clients saw published.
    #[arg(long)]
    rate: Option<f64>,
    /// Write the result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the publish→receive latency distribution (µs) in HdrHistogram's `.hgrm` format.
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Write a latency-by-percentile SVG plot.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
pub(crate) struct PlotArgs {
    /// The SVG to write.
    #[arg(long)]
    svg: PathBuf,
    /// Plot title.
    #[arg(long, default_value = "latency by percentile")]
    title: String,
    /// Runs to overlay, as LABEL=FILE.hgrm.
    #[arg(required = true)]
    runs: Vec<String>,
}

impl BenchArgs {
    pub(crate) fn into_config(self) -> anyhow::Result<(bench::BenchConfig, Outputs)> {
        use anyhow::anyhow;
        let protocol = match self.protocol.as_str() {
            "tickwire" => bench::Protocol::TickwireBinary,
            "tickwire-json" => bench::Protocol::TickwireJson,
            "ts-prefix" => bench::Protocol::TsPrefix,
            "raw-tcp" => bench::Protocol::RawTcp,
            other => anyhow::bail!("unknown --protocol {other:?}"),
        };
        let secs = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v).map_err(|_| anyhow!("--{name} {v}: not a duration"))
        };
        let mut c = bench::BenchConfig::new(
            self.url.parse()?,
            protocol,
            self.clients,
            secs("duration", self.duration)?,
        );
        c.warmup = secs("warmup", self.warmup)?;
        c.threads = self.threads;
        c.subscription = self
            .symbols
            .parse()
            .map_err(|e: String| anyhow!("--symbols {e}"))?;
        c.channels = self.channels.clone();
        c.throttle_ms = self.throttle_ms;
        c.deflate = self.deflate;
        c.slow_clients = self.slow;
        c.slow_pattern = self
            .slow_pattern
            .parse()
            .map_err(|e: String| anyhow!("--slow-pattern {e}"))?;
        c.slow_rcvbuf = (self.slow_rcvbuf > 0).then_some(self.slow_rcvbuf);
        c.connect_concurrency = self.connect_concurrency;
        c.connect_timeout = secs("connect-timeout", self.connect_timeout)?;
        if let Some(spec) = &self.source_addrs {
            c.source_addrs = spec.parse()?;
        }
        c.first_data_timeout = secs("first-data-timeout", self.first_data_timeout)?;
        c.progress = !self.quiet;
        c.nominal_rate = self.rate;
        let outputs = Outputs {
            json: self.json,
            hgrm: self.hgrm,
            svg: self.svg,
        };
        Ok((c, outputs))
    }
}

pub(crate) struct Outputs {
    json: Option<PathBuf>,
    hgrm: Option<PathBuf>,
    svg: Option<PathBuf>,
}

pub(crate) fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    let (config, outputs) = args.into_config()?;
    let result = bench::run(config)?;
    print!("{}", result.summary());
    if let Some(path) = outputs.json {
        std::fs::write(&path, result.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = outputs.hgrm {
        std::fs::write(&path, bench::report::hgrm(&result.publish_histogram))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = outputs.svg {
        std::fs::write(&path, bench::plot::svg(&result.url, &result.plot_series()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

pub(crate) fn run_plot(args: PlotArgs) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for run in &args.runs {
        let (label, file) = run
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{run:?}: expected LABEL=FILE.hgrm"))?;
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        series.push(bench::plot::Series {
            label: label.to_owned(),
            points: bench::report::parse_hgrm(&text),
        });
    }
    std::fs::write(&args.svg, bench::plot::svg(&args.title, &series))
        .with_context(|| format!("writing {}", args.svg.display()))
}
