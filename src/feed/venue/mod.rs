//! One file per venue format, each with its raw message structs and their
//! normalization.

pub mod binance;
pub(crate) mod coinbase;
pub mod tardis;

/// The order-book state a feed keeps across messages: one per recording
/// file or live session, since a venue's book sync is in the order of its
/// own messages.
#[derive(Debug, Default)]
pub(crate) struct BookSync {
    pub binance: binance::DepthBooks,
}
