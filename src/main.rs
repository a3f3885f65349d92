//! The `tickwire` binary: parses flags, sets up logging and the allocator,
//! loads and validates the configuration, and calls the library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
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
    Serve(ServeArgs),
}

/// Flags override environment variables, which override the config file,
/// which overrides the defaults.
#[derive(Args, Default)]
struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "TICKWIRE_CONFIG")]
    config: Option<PathBuf>,
    /// Address for HTTP and WebSocket [default: 127.0.0.1:8080].
    #[arg(long, env = "TICKWIRE_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// A feed: a recorded file (Tardis CSV, Binance or Coinbase JSON lines,
    /// plain, gzip or zstd) or `synthetic:symbols=N,rate=R`. Repeatable.
    /// Without any, the bundled recording replays in a loop.
    #[arg(long = "feed", env = "TICKWIRE_FEED", value_delimiter = ';')]
    feeds: Vec<String>,
    /// Replay speed: 1 (recorded pace), 10, 0.5, or max [default: 1].
    #[arg(long, env = "TICKWIRE_SPEED")]
    speed: Option<String>,
    /// Restart recorded files when they end.
    #[arg(long = "loop", env = "TICKWIRE_LOOP")]
    looped: bool,
    /// Entries in the broadcast ring (a power of two) [default: 16384].
    #[arg(long, env = "TICKWIRE_RING_CAPACITY")]
    ring_capacity: Option<usize>,
    /// Bytes a connection may have queued before it stops taking frames [default: 262144].
    #[arg(long, env = "TICKWIRE_MAX_OUTBOX_BYTES")]
    max_outbox_bytes: Option<usize>,
    /// Kernel send buffer per connection, 0 for autotuning [default: 131072].
    #[arg(long, env = "TICKWIRE_SEND_BUFFER_BYTES")]
    send_buffer_bytes: Option<usize>,
    /// Updates a connection may lag before it is conflated [default: 4096].
    #[arg(long, env = "TICKWIRE_MAX_LAG_UPDATES")]
    max_lag_updates: Option<u64>,
    /// Close a client whose socket takes nothing for this long (1008) [default: 30000].
    #[arg(long, env = "TICKWIRE_STALL_TIMEOUT_MS")]
    stall_timeout_ms: Option<u64>,
    /// Time a closing connection gets to send its close frame [default: 2000].
    #[arg(long, env = "TICKWIRE_CLOSE_TIMEOUT_MS")]
    close_timeout_ms: Option<u64>,
    /// Largest message a client may send (1009 past it) [default: 65536].
    #[arg(long, env = "TICKWIRE_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    /// Most symbols one connection may subscribe to [default: 1024].
    #[arg(long, env = "TICKWIRE_MAX_SUBSCRIPTIONS")]
    max_subscriptions: Option<usize>,
    /// Time connections get to close on SIGINT/SIGTERM [default: 5000].
    #[arg(long, env = "TICKWIRE_SHUTDOWN_TIMEOUT_MS")]
    shutdown_timeout_ms: Option<u64>,
    /// Hold the feeds until this many connections have subscribed [default: 0].
    #[arg(long, env = "TICKWIRE_MIN_SUBSCRIBERS")]
    min_subscribers: Option<usize>,
    /// Serve /echo (every message echoed by the /ws connection code), for
    /// conformance testing with Autobahn|Testsuite.
    #[arg(long, env = "TICKWIRE_ECHO")]
    echo: bool,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<ServeConfig> {
        let mut c = match &self.config {
            Some(path) => ServeConfig::from_toml_file(path)?,
            None => ServeConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { c.$field = v; } )* };
        }
        set!(
            listen,
            speed,
            ring_capacity,
            max_outbox_bytes,
            send_buffer_bytes,
            max_lag_updates,
            stall_timeout_ms,
            close_timeout_ms,
            max_message_bytes,
            max_subscriptions,
            shutdown_timeout_ms,
            min_subscribers
        );
        if !self.feeds.is_empty() {
            c.feeds = self.feeds;
        }
        c.r#loop |= self.looped;
        c.echo |= self.echo;
        Ok(c)
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => ServeArgs::default(),
    };
    let validated = args.into_config()?.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(tickwire::server::serve_until_signal(validated))
}
