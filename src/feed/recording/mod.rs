//! Recorded feeds: [`replay`] reads every capture format and tickwire's own
//! [`log`], detected from the content, paced by the recorded clock.

pub mod log;
pub mod replay;

pub use replay::{probe, read_all, FileReader};
