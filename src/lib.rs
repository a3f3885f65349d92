//! tickwire: a real-time market-data ticker server.
pub mod decimal;
pub mod encode;
pub mod ring;
pub mod symbols;
pub mod update;
