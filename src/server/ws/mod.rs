//! One WebSocket connection: its [`connection`] (the reader task and the
//! vectored writer), [`quiet`] until the client first needs them, what the client sends ([`inbound`]: reassembly within
//! the limits, and [`budget`], the inbound rate) and the check that closes on an unmasked frame
//! ([`mask_check`]), and what each needs of its socket ([`socket`]).

mod budget;
mod close;
pub(crate) mod connection;
pub(crate) mod inbound;
pub(crate) mod mask_check;
mod quiet;
pub(crate) mod read;
pub(crate) mod socket;
