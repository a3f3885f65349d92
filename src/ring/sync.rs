//! The atomics the ring is built from, routed through one place so that the
//! same code runs under `loom::model` and on real hardware, as tokio does
//! with its `loom` facade. The switch is `--cfg tickwire_loom` rather than
//! `--cfg loom`, because tokio reads the latter too and drops `tokio::net`.

#[cfg(tickwire_loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
#[cfg(tickwire_loom)]
pub use loom::sync::Arc;

#[cfg(not(tickwire_loom))]
pub(crate) use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
#[cfg(not(tickwire_loom))]
pub use std::sync::Arc;
