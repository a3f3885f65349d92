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
//! The modules in the order an update passes through them:
//!
//! - [`feed`]: sources: recorded files in every supported format (one file
//!   per venue), and a synthetic generator.
//! - [`decimal`], [`symbols`], [`update`]: normalization: exact fixed-point
//!   prices, interned symbols, the `Copy` update.
//! - [`publish`]: the one writer: sequences, encodes ([`encode`]) and
//!   publishes; [`decode`] is the one reader of what it encodes (tests,
//!   fuzz targets, clients).
//! - [`ring`]: the lock-free single-producer, many-consumer ring; with the
//!   last-value cache it makes up the [`market`] every connection reads.
//! - [`fanout`]: what one connection is sent: subscriptions, the ring
//!   cursor, conflation.
//! - [`connection`]: one WebSocket connection's reader and vectored writer;
//!   [`inbound`] reassembles what the client sends within its limits
//!   (size, fragments, rate, heartbeat); [`mask_check`] closes on an
//!   unmasked client frame. [`ws_frame`] is the one RFC 6455 frame-header
//!   parser (`mask_check`, the bench client, tests and fuzz targets).
//! - [`sse`]: the same frames as Server-Sent Events, for clients that cannot
//!   open a WebSocket.
//! - [`server`]: HTTP routes (`/`, `/ws`, `/sse`, `/metrics`, `/healthz`),
//!   feeds and publisher start-up, graceful shutdown; [`admission`] (the
//!   connection limits, checked at accept), [`head_gate`] (request heads
//!   checked against their limits before hyper reads them), [`config`],
//!   [`metrics`], [`protocol`] (client requests, error and close codes) and
//!   [`web`] (the embedded dashboard) serve it; [`tls`] (HTTPS and wss, certificate
//!   reload), [`access`] (Origin allowlist, the handshake's token check) and
//!   [`auth`] (HS256 tokens) guard it.
//! - [`nats`], [`nats_publish`]: beyond one machine: a feed node publishes
//!   every update to NATS; edge nodes take them back with the
//!   `nats://` feed ([`feed::nats`]).
//! - [`record`], [`convert`]: `tickwire record` writes what the publisher
//!   published to a tickwire log ([`feed::log`]); `tickwire convert` turns
//!   recordings into logs and logs into Tardis CSV.
//! - [`bench`]: the load harness behind `tickwire bench`, a WebSocket
//!   client of its own that measures any server from the outside.
//!
//! Errors: each boundary has its own `thiserror` enum (`FeedError`,
//! `ConfigError`, `DecimalError`, ...); the hot path (fan-out, writes) has
//! no error type beyond `io::Error`, and only the binary uses `anyhow`.

pub mod bench;
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
pub mod ring;
pub mod server;
pub mod symbols;
pub mod update;
pub mod wire;

pub use os::raise_open_files_limit;
