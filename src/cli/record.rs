//! `tickwire record` and `tickwire convert`: their flags, and what they
//! print.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

#[derive(Args)]
pub(crate) struct RecordArgs {
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
pub(crate) struct ConvertArgs {
    /// Any recording tickwire reads (a tickwire log, Tardis CSV, Binance
    /// or Coinbase JSON lines; plain, gzip or zstd).
    input: PathBuf,
    /// A tickwire log, or Tardis CSV if it ends in `.csv` (quotes and
    /// trades both present: STEM.quotes.csv and STEM.trades.csv; books:
    /// STEM.incremental_book_L2.csv).
    output: PathBuf,
    /// The `exchange` column of CSV output.
    #[arg(long, default_value = "")]
    exchange: String,
}

pub(crate) fn run_record(args: RecordArgs) -> anyhow::Result<()> {
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

pub(crate) fn run_convert(args: ConvertArgs) -> anyhow::Result<()> {
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
