//! The server's security pieces, together: who may connect and how much
//! ([`admission`], checked at accept; [`head_gate`], request heads checked
//! against their limits before hyper reads them), who they are ([`proxy`],
//! [`proxy_header`]: the client address behind a trusted proxy), whether
//! they may ([`access`]: the Origin allowlist and the handshake's token
//! check; [`auth`]: HS256 tokens), and the encryption ([`tls`]: HTTPS and
//! wss with certificate reload).

pub(crate) mod access;
pub(crate) mod admission;
pub mod auth;
pub(crate) mod head_gate;
pub mod proxy;
pub mod proxy_header;
pub(crate) mod tls;
