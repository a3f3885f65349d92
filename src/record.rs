//! `tickwire record`: runs feeds through the same publisher the server uses
//! and writes every update it publishes, as published (both sequences, all
//! three timestamps), to a tickwire log ([`crate::feed::recording::log`]).
//!
//! The publisher hands each batch to a writer thread over an unbounded
//! channel (a [`PublishSink`]), so it never waits for the disk. The
//! writer closes a block by size and by time ([`RecordOptions::flush`]), so
//! a crash loses at most that much; on a stop signal the feeds are stopped,
//! the publisher drains what they sent, and the last block is written whole.

use std::fs::File;
use std::future::Future;
use std::io::{self, BufWriter};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::feed::recording::log::{LogSymbol, LogWriter};
use crate::feed::{self, FeedError, FeedSpec, FeedStats, ReplayOptions};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::publish::PublishSink;
use crate::symbols::SymbolTable;
use crate::update::{now_ns, Sequenced};

/// The publisher's ring: nobody reads it here, so it only needs to exist.
const RING_CAPACITY: usize = 1024;

#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub feeds: Vec<FeedSpec>,
    pub replay: ReplayOptions,
    /// The log to create; an existing file is never overwritten.
    pub out: PathBuf,
    /// Longest time an update waits in memory before its block is written.
    pub flush: Duration,
}

/// What a recording wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordSummary {
    pub updates: u64,
    pub blocks: u64,
    pub symbols: usize,
    /// Feeds that stopped with an error, with the error.
    pub failed: Vec<String>,
}

/// Why a recording could not be made. The cause is a source, not repeated
/// in the message.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: cannot create the log")]
    Create { path: PathBuf, source: io::Error },
    #[error("{path}: writing the log failed")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot start a thread")]
    Thread(#[source] io::Error),
    /// A recorded-file feed that cannot be opened or recognized: refused
    /// before the log is created, as `serve` refuses it before it starts.
    #[error(transparent)]
    Feed(#[from] FeedError),
}

/// Hands what the publisher published to the writer thread, a batch at a
/// time, over an unbounded channel: the publisher never waits for the disk.
struct RecorderSink {
    batch: Vec<Sequenced>,
    /// `None` once the writer has hung up (it failed): publishing goes on.
    tx: Option<std::sync::mpsc::Sender<Vec<Sequenced>>>,
}

impl PublishSink for RecorderSink {
    fn send(&mut self, update: &Sequenced) {
        if self.tx.is_some() {
            self.batch.push(*update);
        }
    }

    fn flush(&mut self) {
        let Some(tx) = &self.tx else { return };
        if self.batch.is_empty() {
            return;
        }
        if tx.send(std::mem::take(&mut self.batch)).is_err() {
            tracing::error!("the recorder stopped; publishing goes on unrecorded");
            self.tx = None;
        }
    }
}

/// Records until every feed has ended or `stop` completes, then writes the
/// last block and returns. A recorded-file feed is opened and recognized
/// first ([`feed::probe`]): one that could only fail stops the recording
/// before the log is created.
pub async fn record(
    opts: RecordOptions,
    stop: impl Future<Output = ()>,
) -> Result<RecordSummary, RecordError> {
    for spec in &opts.feeds {
        if let FeedSpec::File(_) = spec {
            feed::probe(spec)?;
        }
    }
    let file = File::create_new(&opts.out).map_err(|source| RecordError::Create {
        path: opts.out.clone(),
        source,
    })?;
    let pipeline = Pipeline::new(RING_CAPACITY, Arc::new(Metrics::default()));
    let symbols = Arc::clone(&pipeline.market.symbols);
    let (rec_tx, rec_rx) = std::sync::mpsc::channel();
    let writer = {
        let symbols = Arc::clone(&symbols);
        let flush = opts.flush;
        std::thread::Builder::new()
            .name("tickwire-recorder".into())
            .spawn(move || write_log(file, rec_rx, &symbols, flush))
            .map_err(RecordError::Thread)?
    };
    let feeds = pipeline
        .with_sink(Box::new(RecorderSink {
            batch: Vec::new(),
            tx: Some(rec_tx),
        }))
        .start()
        .map_err(RecordError::Thread)?;
    let mut tasks = Vec::new();
    for spec in opts.feeds {
        let name = spec.name();
        let run = feeds.run(spec, opts.replay, Arc::new(FeedStats::default()));
        tasks.push(tokio::spawn(async move {
            run.await
                .map_err(|e| format!("{name}: {}", e.with_causes()))
        }));
    }
    drop(feeds);
    let mut failed = Vec::new();
    let all_done = async {
        for task in &mut tasks {
            if let Ok(Err(e)) = task.await {
                tracing::error!("feed stopped: {e}");
                failed.push(e);
            }
        }
    };
    tokio::select! {
        _ = all_done => {}
        _ = stop => {
            tracing::info!("stopping: writing the last block");
        }
    }
    // Dropping the feeds' senders ends the publisher, which drops the
    // recorder's channel, which ends the writer after its last block.
    for task in &tasks {
        task.abort();
    }
    let written = tokio::task::spawn_blocking(move || writer.join())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| Err(io::Error::other("the recorder thread panicked")));
    let (blocks, updates) = written.map_err(|source| RecordError::Write {
        path: opts.out.clone(),
        source,
    })?;
    Ok(RecordSummary {
        updates,
        blocks,
        symbols: symbols.len(),
        failed,
    })
}

/// The writer thread: appends every published batch, closing a block at
/// most `flush` after its first update. Returns (blocks, updates).
fn write_log(
    file: File,
    rx: Receiver<Vec<Sequenced>>,
    symbols: &SymbolTable,
    flush: Duration,
) -> io::Result<(u64, u64)> {
    let mut log = LogWriter::new(BufWriter::with_capacity(1 << 16, file), now_ns())?;
    let mut defs: Vec<Option<LogSymbol>> = Vec::new();
    let mut deadline: Option<Instant> = None;
    loop {
        let batch = match deadline {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match batch {
            Ok(batch) => {
                for s in &batch {
                    let def = symbol(&mut defs, symbols, s.update.symbol)?;
                    log.push(def, s)?;
                }
                if log.pending() == 0 {
                    deadline = None;
                } else if deadline.is_none() {
                    deadline = Some(Instant::now() + flush);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                log.finish_block()?;
                deadline = None;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let (blocks, updates) = {
        log.finish_block()?;
        (log.blocks_written, log.updates_written)
    };
    let file = log.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((blocks, updates))
}

/// The log's definition of a published symbol; the publisher only
/// publishes symbols the table has.
fn symbol<'d>(
    defs: &'d mut Vec<Option<LogSymbol>>,
    table: &SymbolTable,
    id: u32,
) -> io::Result<&'d LogSymbol> {
    let i = id as usize;
    if defs.len() <= i {
        defs.resize(i + 1, None);
    }
    if defs[i].is_none() {
        let def = table.get(id).ok_or_else(|| {
            io::Error::other(format!("published symbol {id} is not in the table"))
        })?;
        defs[i] = Some(LogSymbol {
            id,
            name: def.name.to_string(),
            price_decimals: def.price_decimals,
            size_decimals: def.size_decimals,
        });
    }
    defs[i]
        .as_ref()
        .ok_or_else(|| io::Error::other("symbol definition missing"))
}
