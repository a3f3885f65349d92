//! The `tickwire` binary: parses flags, sets up logging and the allocator,
//! loads and validates the configuration, and calls the library.

mod cli;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::cli::bench::{run_bench, run_plot, BenchArgs, PlotArgs};
use crate::cli::record::{run_convert, run_record, ConvertArgs, RecordArgs};
use crate::cli::serve::ServeArgs;
use crate::cli::token::{run_token, TokenArgs};

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
    Bench(Box<BenchArgs>),
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
        Some(Command::Bench(args)) => return run_bench(*args),
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
        .on_thread_park(release_idle_memory)
        .build()
        .context("starting the tokio runtime")?;
    Ok(runtime.block_on(tickwire::server::serve_until_signal(validated))?)
}

/// A tokio worker going idle hands its allocator's free pages back to the
/// system, at most once a second. mimalloc frees pages lazily, on the
/// owning thread's next allocations; since the writer threads took the
/// fan-out off the workers, a worker can sit idle after a burst (say, a
/// thousand connections that timed out in their handshake) holding
/// megabytes it no longer uses.
fn release_idle_memory() {
    use std::cell::Cell;
    use std::time::{Duration, Instant};
    thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
    let now = Instant::now();
    let due = LAST.with(|last| {
        let due = last.get().is_none_or(|t| now - t >= Duration::from_secs(1));
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: mi_collect takes no pointers and has no preconditions; it
        // collects the calling thread's own heap (`false`: without forcing
        // the release of pages other threads may still free into).
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
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
