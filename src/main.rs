//! The `tickwire` binary: parses flags, sets up logging and the allocator,
//! loads and validates the configuration, and calls the library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgMatches, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use tickwire::bench;
use tickwire::config::ServeConfig;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tickwire",
    version,
    about = "Real-time market-data ticker server"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve feeds to WebSocket subscribers (the default command).
    Serve(Box<ServeArgs>),
    /// Measure a server with many WebSocket subscribers: throughput,
    /// end-to-end latency, sequence gaps.
    Bench(BenchArgs),
    /// Overlay latency distributions (`.hgrm` files) in one SVG plot.
    Plot(PlotArgs),
    /// Print an access token (an HS256 JWT) for a server that requires
    /// them (`serve --auth-secret-file`).
    Token(TokenArgs),
    /// Record what the publisher publishes from the feeds to a tickwire
    /// log, until the feeds end or SIGINT/SIGTERM.
    Record(RecordArgs),
    /// Convert a recording: any feed format to a tickwire log, or a log
    /// (or any format) to Tardis CSV when OUT ends in `.csv`.
    Convert(ConvertArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// File with the server's secret; or set TICKWIRE_AUTH_SECRET.
    #[arg(long, env = "TICKWIRE_AUTH_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// Seconds from now until the token expires.
    #[arg(long, default_value_t = 3600)]
    exp_secs: u64,
    /// Seconds from now until the token becomes valid (the nbf claim).
    #[arg(long)]
    nbf_secs: Option<u64>,
    /// The only symbols the token lets its holder subscribe to,
    /// comma-separated. Without it, every symbol.
    #[arg(long, value_delimiter = ',')]
    symbols: Vec<String>,
}

fn run_token(args: TokenArgs) -> anyhow::Result<()> {
    use tickwire::server::guard::auth::{self, Secret};
    let secret = match (&args.secret_file, std::env::var("TICKWIRE_AUTH_SECRET")) {
        (Some(path), _) => Secret::from_file(path),
        (None, Ok(text)) => Secret::new(text.as_bytes()),
        (None, Err(_)) => Err("give --secret-file or set TICKWIRE_AUTH_SECRET".to_owned()),
    }
    .map_err(|e| anyhow::anyhow!(e))?;
    let now = auth::now_secs();
    let mut claims = serde_json::json!({ "exp": now + args.exp_secs });
    if let Some(nbf) = args.nbf_secs {
        claims["nbf"] = (now + nbf).into();
    }
    if !args.symbols.is_empty() {
        claims["symbols"] = args.symbols.into();
    }
    println!("{}", auth::sign(&secret, &claims));
    Ok(())
}

#[derive(Args)]
struct RecordArgs {
    /// A feed, as for `serve --feed`. Repeatable.
    #[arg(long = "feed", required = true, value_delimiter = ';')]
    feeds: Vec<String>,
    /// The log to create (never overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Replay speed of recorded feeds: 1, 10, 0.5, or max.
    #[arg(long, default_value = "1")]
    speed: String,
    /// Restart recorded files when they end (stop with SIGINT/SIGTERM).
    #[arg(long = "loop")]
    looped: bool,
    /// Longest time an update is held before its block is written.
    #[arg(long, default_value_t = 1000)]
    flush_ms: u64,
}

#[derive(Args)]
struct ConvertArgs {
    /// Any recording tickwire reads (a tickwire log, Tardis CSV, Binance
    /// or Coinbase JSON lines; plain, gzip or zstd).
    input: PathBuf,
    /// A tickwire log, or Tardis CSV if it ends in `.csv` (quotes and
    /// trades both present: STEM.quotes.csv and STEM.trades.csv).
    output: PathBuf,
    /// The `exchange` column of CSV output.
    #[arg(long, default_value = "")]
    exchange: String,
}

fn run_record(args: RecordArgs) -> anyhow::Result<()> {
    use tickwire::feed::{FeedSpec, ReplayOptions, Speed};
    let feeds = args
        .feeds
        .iter()
        .map(|f| f.parse::<FeedSpec>().with_context(|| format!("--feed {f}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let speed: Speed = args.speed.parse()?;
    let opts = tickwire::record::RecordOptions {
        feeds,
        replay: ReplayOptions {
            speed,
            looped: args.looped,
        },
        out: args.out,
        flush: Duration::from_millis(args.flush_ms.max(1)),
    };
    let out = opts.out.display().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    // The signal handlers are installed inside the runtime, before the
    // feeds start.
    let summary = runtime.block_on(async {
        tickwire::record::record(opts, tickwire::server::shutdown_signal()).await
    })?;
    println!(
        "{out}: {} updates of {} symbols in {} blocks",
        summary.updates, summary.symbols, summary.blocks
    );
    if !summary.failed.is_empty() {
        anyhow::bail!("feed(s) failed: {}", summary.failed.join("; "));
    }
    Ok(())
}

fn run_convert(args: ConvertArgs) -> anyhow::Result<()> {
    let summary = tickwire::convert::convert(&args.input, &args.output, &args.exchange)?;
    let outputs: Vec<String> = summary
        .outputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    // The result on stdout; warnings went to stderr with the log.
    println!(
        "{}: {} read, {} written to {}, {} skipped, {} rejected",
        args.input.display(),
        summary.read,
        summary.updates,
        outputs.join(", "),
        summary.skipped,
        summary.rejected
    );
    if let Some(d) = summary.damage {
        if d.corrupt > 0 || d.torn_tail_bytes > 0 {
            eprintln!(
                "warning: {}: {} corrupt place(s) skipped ({} bytes), torn tail of {} bytes ignored",
                args.input.display(),
                d.corrupt,
                d.skipped_bytes,
                d.torn_tail_bytes
            );
        }
    }
    Ok(())
}

#[derive(Args)]
struct BenchArgs {
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
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Seconds a connect or upgrade may take.
    #[arg(long, default_value_t = 5.0)]
    connect_timeout: f64,
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
struct PlotArgs {
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
    fn into_config(self) -> anyhow::Result<(bench::BenchConfig, Outputs)> {
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
        c.slow_clients = self.slow;
        c.slow_pattern = self
            .slow_pattern
            .parse()
            .map_err(|e: String| anyhow!("--slow-pattern {e}"))?;
        c.connect_concurrency = self.connect_concurrency;
        c.connect_timeout = secs("connect-timeout", self.connect_timeout)?;
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

struct Outputs {
    json: Option<PathBuf>,
    hgrm: Option<PathBuf>,
    svg: Option<PathBuf>,
}

fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
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

fn run_plot(args: PlotArgs) -> anyhow::Result<()> {
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

/// Flags override environment variables, which override the config file,
/// which overrides the defaults.
#[derive(Args, Default)]
struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "TICKWIRE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: ServeConfig,
}

impl ServeArgs {
    /// The layered configuration; `matches` are the `serve` command's, to
    /// tell a setting given by flag or environment from its default.
    fn into_config(self, matches: Option<&ArgMatches>) -> anyhow::Result<ServeConfig> {
        use clap::parser::ValueSource;
        let was_given = |key: &str| {
            matches
                .and_then(|m| m.value_source(key))
                .is_some_and(|source| {
                    matches!(source, ValueSource::CommandLine | ValueSource::EnvVariable)
                })
        };
        let mut c = ServeConfig::layered(self.config.as_deref(), self.settings, was_given)?;
        // From the environment only: a flag would show it in `ps`.
        if let Ok(text) = std::env::var("TICKWIRE_AUTH_SECRET") {
            c.auth_secret = Some(
                tickwire::server::guard::auth::Secret::new(text.as_bytes())
                    .map_err(|e| anyhow::anyhow!(e))?,
            );
        }
        Ok(c)
    }
}

/// An error is printed once by `main`'s return: `Error: <message>` and,
/// for each cause, a `Caused by:` line. The library's error types keep a
/// cause out of their own message when it is their `source`, so that no
/// text appears twice.
fn main() -> anyhow::Result<()> {
    disable_transparent_huge_pages();
    // The log goes to stderr: stdout carries only what a command answers
    // (the address `serve` listens on, `convert`'s summary, a token).
    // Colours only for a terminal, not into a file or a pipe.
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let args = match cli.command {
        Some(Command::Serve(args)) => *args,
        Some(Command::Bench(args)) => return run_bench(args),
        Some(Command::Plot(args)) => return run_plot(args),
        Some(Command::Token(args)) => return run_token(args),
        Some(Command::Record(args)) => return run_record(args),
        Some(Command::Convert(args)) => return run_convert(args),
        None => ServeArgs::default(),
    };
    let validated = args
        .into_config(matches.subcommand_matches("serve"))?
        .validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(tickwire::server::serve_until_signal(validated))
}

/// Opts the process out of transparent huge pages. mimalloc madvises its
/// segments for huge pages, so one touched byte in a 2 MiB region costs
/// 2 MiB of RSS: 10,000 idle connections measured 22 KiB each with them.
/// tickwire's memory is many small per-connection objects, not large hot
/// arrays, so it gains nothing from huge pages.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only and
    // changes a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
