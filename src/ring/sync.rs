//! The atomics the ring is built from, routed through one place so that the
//! same code runs under `loom::model` and on real hardware, as tokio does
//! with its `loom` facade. The switch is the `loom` cargo feature rather than
//! `--cfg loom`, because tokio reads that cfg too and drops `tokio::net`.

#[cfg(feature = "loom")]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
#[cfg(feature = "loom")]
pub use loom::sync::Arc;

#[cfg(not(feature = "loom"))]
pub(crate) use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
#[cfg(not(feature = "loom"))]
pub use std::sync::Arc;
