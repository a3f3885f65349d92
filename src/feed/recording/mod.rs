//! Recorded feeds: open, decompress, read lines, recognize each line's shape
//! and venue, pace by the recorded clock, and loop.
//!
//! Everything is decided from the content, never from the file name:
//!
//! - compression by magic bytes: gzip `1f 8b`, zstd `28 b5 2f fd`, else plain;
//! - after that, [`log::MAGIC`] makes the file a tickwire log, read by blocks
//!   (`LogFeed`); its recorded symbol sequences go on as `origin_seq`,
//!   raised on every loop so that a pass never goes back (`LoopedSequences`);
//! - a first line starting with
//!   [`tardis::HEADER_PREFIX`](crate::feed::venue::tardis::HEADER_PREFIX)
//!   makes the file a Tardis CSV; anything else is JSON lines, where each
//!   line may be a bare JSON object, `<integer epoch ns|µs|ms> <json>`
//!   (hftbacktest), `<epoch seconds.fraction>: <json>`, or a cryptofeed v2
//!   capture record `{"t":"recv","ts":<epoch s>,"data":"<json text>"}`, and
//!   the JSON may be wrapped in Binance's `{"stream":..,"data":{..}}`.
//!
//! Lines a capture tool writes around the data are skipped, not rejected:
//! cryptofeed's raw capture (`AsyncFileCallback`) starts with
//! `configuration: {...}` and notes REST responses
//! (`https://… -> <ts>: {...}`), messages it sent (`wss://… <- <ts>: {...}`)
//! and connections (`wss://… <-> <ts>`) among the `<ts>: <json>` it received
//! (`capture_note`). They do not count towards recognizing the file.
//!
//! If none of the first [`DETECT_LINES`](reader::DETECT_LINES) non-empty
//! lines is a known record, the file is refused; after that a bad line is
//! counted and skipped. The log of rejections has a budget per reason
//! (`RejectTally` in `feed::normalize`), and every pass over a file ends with
//! a summary line: records, updates, skipped, and the rejections by reason
//! with the first line of each.
//!
//! # Layout
//!
//! In the order of the data path:
//!
//! - [`reader`]: [`FileReader`], one pass over a recording: opening,
//!   decompression, format detection, capped line reading, each line to its
//!   parser, the detection window; [`probe`] and [`read_all`] over it.
//! - `jsonl`: the line shapes of JSON lines (timestamp prefixes, cryptofeed
//!   records, Binance's envelope) and a capture tool's notes.
//! - [`log`]: tickwire's own binary log, read by blocks.
//! - `replay`: a recording as a feed: passes on a reader thread, looping,
//!   batches to the async side; and `PassReport`, what each pass says in
//!   the log.
//! - `pacer`: recorded time to wall time at `--speed`.

mod jsonl;
pub(crate) mod lines;
pub mod log;
mod pacer;
pub(crate) mod reader;
pub(crate) mod replay;

pub(crate) use pacer::Pacer;
pub use reader::{probe, read_all, FileReader};

#[cfg(test)]
mod tests;
