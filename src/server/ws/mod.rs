//! One WebSocket connection: its [`connection`] (the reader task and the
//! vectored writer), what the client sends ([`inbound`]: reassembly within
//! the limits) and the check that closes on an unmasked frame
//! ([`mask_check`]).

pub mod connection;
pub mod inbound;
pub mod mask_check;
