//! The binary's commands: each one's flags and what it prints, around a
//! call into the library. Part of the `tickwire` binary, not of the library
//! (`main.rs` declares this module; `lib.rs` does not): `anyhow` is used
//! here and nowhere in the library.

pub(crate) mod bench;
pub(crate) mod record;
pub(crate) mod serve;
pub(crate) mod token;
