//! One file per venue format, each with its raw message structs and their
//! normalization.

pub mod binance;
pub(crate) mod coinbase;
pub mod tardis;
