//! tickwire: a real-time market-data ticker server.
//!
//! Feeds are normalized into compact updates, sequenced and encoded once by
//! a single publisher, appended to a lock-free broadcast ring, and fanned
//! out to WebSocket subscribers as pre-encoded frames in vectored writes.
//! Slow subscribers are conflated from a last-value cache instead of
//! queued.
//!
//! # Layout
//!
//! The modules in the order an update passes through them, then the server
//! around them, then what reaches past one machine (`docs/ARCHITECTURE.md`,
//! "The layout", says why the tree is cut this way):
//!
//! - **Sources**, [`feed`]: recorded files (`feed::recording`, with
//!   tickwire's own log), one file per venue format (`feed::venue`), live
//!   venue WebSockets (`feed::upstream`), the synthetic generator, and an
//!   edge node's NATS source.
//! - **Normalize**: `feed::normalize` (the step, its rejections), over
//!   [`decimal`] (exact fixed-point), [`symbols`] (interning) and [`update`]
//!   (the `Copy` update), [`timestamp`] (exact times in ns); [`json`]
//!   parses outside JSON with a bound on nesting.
//! - **Publish**: `pipeline` assembles feeds → [`publish`] (the one writer:
//!   sequences, encodes once) → [`ring`] and the last-value cache, which
//!   make up the [`market`]; built once for `serve` and for [`record`].
//!   Beside the updates, the publisher keeps each symbol's order [`book`]
//!   and its [`candle`] bars, published on their own channels.
//! - **Wire**, [`wire`]: the protocol both ways: requests, replies, codes;
//!   `wire::encode` (frames, encoded once), `wire::decode` (their one
//!   reader: tests, fuzz, bench), `wire::frame` (RFC 6455 headers).
//! - **Fan-out**, [`fanout`]: what one connection is sent: the ring cursor,
//!   conflation, subscriptions and their limits, the outbox; and the writer
//!   shards (`fanout::shard`), the threads that write it, woken once per
//!   batch through [`wake`].
//! - **Server**, [`server`]: accept, routes, status endpoints, the upgrade,
//!   the session a WebSocket (`server::ws`) and an SSE stream share, and
//!   its security pieces together in [`server::guard`] (admission, head
//!   gate, proxies, Origin and tokens, TLS).
//! - **Beyond one machine**: `nats` (a feed node publishes every update to
//!   NATS; edges read them back with `feed::nats`).
//! - **Around it**: [`config`] (each setting declared once), [`metrics`]
//!   (one `Counter`/`Gauge`, one writer), [`record`] and [`convert`] (the
//!   commands on recordings), [`bench`] (the load harness), and `os` (the
//!   open-files limit).
//!
//! Modules are private unless a caller outside the crate (the binary,
//! tests, benches, fuzz targets) needs them.
//!
//! Errors: each boundary has its own `thiserror` enum (`FeedError`,
//! `ConfigError`, `ServeError`, `DecimalError`, ...); the hot path
//! (fan-out, writes) has no error type beyond `io::Error`, and only the
//! binary (`main.rs`, `cli/`) uses `anyhow`.

pub mod bench;
pub mod book;
pub mod candle;
pub mod config;
pub mod convert;
pub mod decimal;
pub mod fanout;
pub mod feed;
pub mod json;
pub mod market;
pub mod metrics;
mod nats;
mod os;
mod pipeline;
pub mod publish;
pub mod record;
pub mod replay;
pub mod ring;
pub mod server;
pub mod symbols;
pub mod timestamp;
pub mod update;
pub mod wake;
pub mod wire;

pub use os::raise_open_files_limit;
