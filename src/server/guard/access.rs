//! Who may open `/ws` and `/sse`: the Origin check that stops cross-site
//! WebSocket hijacking, and the access token (see [`crate::server::guard::auth`]).
//!
//! Both run on the HTTP request, before any upgrade: a refused browser gets
//! 403, a refused token 401, and no connection is created.
//!
//! ## Origins
//!
//! Browsers send `Origin` on every WebSocket handshake and cross-origin
//! request, and a page cannot forge it. Allowed are: requests with no
//! `Origin` (not a browser: trading programs, curl), same-origin requests
//! (the Origin's host and port are the `Host` header's, as for the
//! dashboard tickwire serves itself), and the origins listed with
//! `--allow-origin`. `*` allows every origin, which lets any web page a
//! user visits read the feed with that user's network position and
//! cookies: it is unsafe anywhere but a closed network.

use std::time::Duration;

use hyper::header::{self, HeaderMap};
use hyper::Uri;

use crate::server::guard::auth::{self, AuthError, Claims, Verifier};

/// Which browser origins may connect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OriginPolicy {
    /// Any origin (`*`).
    any: bool,
    /// Allowed origins besides the server's own, normalized
    /// (`scheme://host:port`, lowercase, explicit port).
    allowed: Vec<String>,
}

/// A parsed `scheme://host[:port]`, with the port made explicit.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Splits `host[:port]` (IPv6 in brackets) into lowercase host and port.
fn split_authority(a: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return None,
        };
        (&a[..end + 2], port)
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

impl Origin {
    /// Parses an Origin header value (RFC 6454 §7): scheme, host, optional
    /// port, nothing else. `null` and anything with a path is None.
    fn parse(s: &str) -> Option<Origin> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let (host, port) = split_authority(rest)?;
        let port = port.or_else(|| default_port(&scheme))?;
        Some(Origin { scheme, host, port })
    }

    fn normalized(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Why an origin was refused (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("origin {0:?} is not allowed to connect: the server allows its own origin and those given with --allow-origin")]
pub struct OriginRefused(pub String);

impl OriginPolicy {
    /// A policy from the configured list; the error names the entries
    /// that are not origins.
    pub fn new(list: &[String]) -> Result<OriginPolicy, Vec<String>> {
        let mut policy = OriginPolicy::default();
        let mut errors = Vec::new();
        for o in list {
            if o == "*" {
                policy.any = true;
            } else {
                match Origin::parse(o) {
                    Some(origin) => policy.allowed.push(origin.normalized()),
                    None => errors.push(format!(
                        "allow_origins {o:?}: expected scheme://host[:port] or *"
                    )),
                }
            }
        }
        if errors.is_empty() {
            Ok(policy)
        } else {
            Err(errors)
        }
    }

    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Checks a request's `Origin` against its `Host` and the list.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), OriginRefused> {
        let Some(value) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        if self.any {
            return Ok(());
        }
        let text = value.to_str().unwrap_or("");
        let refused = || OriginRefused(String::from_utf8_lossy(value.as_bytes()).into_owned());
        let origin = Origin::parse(text).ok_or_else(refused)?;
        if self.allowed.contains(&origin.normalized()) {
            return Ok(());
        }
        // Same origin: the browser sends the Host it connected to, without
        // the port when it is the default one for the page's scheme (or a
        // proxy in front of us terminates TLS and passes the Host on).
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(split_authority);
        match host {
            Some((h, port))
                if h == origin.host
                    && port.or_else(|| default_port(&origin.scheme)) == Some(origin.port) =>
            {
                Ok(())
            }
            _ => Err(refused()),
        }
    }
}

/// What a connection may do, from its token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    /// Time left until the token expires; None without auth.
    pub expires_in: Option<Duration>,
    /// Symbols the connection may subscribe to; None for all.
    pub symbols: Option<std::collections::HashSet<String>>,
}

impl Grant {
    fn from_claims(c: Claims, now: u64) -> Grant {
        Grant {
            expires_in: Some(Duration::from_secs(c.exp.saturating_sub(now))),
            symbols: c.symbols,
        }
    }
}

/// The token a request carries: `Authorization: Bearer <token>`, else the
/// `access_token` query parameter (for browsers, which cannot set headers
/// on a WebSocket handshake or an EventSource).
pub fn bearer_token(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    crate::server::query::param(uri.query(), "access_token")
}

/// Checks the request's token when auth is on; without a verifier every
/// request gets an unrestricted, unexpiring grant.
pub fn authorize(
    verifier: Option<&Verifier>,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Grant, AuthError> {
    let Some(verifier) = verifier else {
        return Ok(Grant::default());
    };
    let token = bearer_token(headers, uri).ok_or(AuthError::Missing)?;
    let now = auth::now_secs();
    verifier
        .verify(&token, now)
        .map(|c| Grant::from_claims(c, now))
}

/// The `WWW-Authenticate` value for a refused token (RFC 6750 §3): no error
/// code when the request had no token at all.
pub fn www_authenticate(e: AuthError) -> String {
    match e {
        AuthError::Missing => "Bearer realm=\"tickwire\"".to_owned(),
        e => {
            format!("Bearer realm=\"tickwire\", error=\"invalid_token\", error_description=\"{e}\"")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins() {
        let own = OriginPolicy::new(&[]).unwrap();
        let listed = OriginPolicy::new(&["https://App.example".into()]).unwrap();
        let any = OriginPolicy::new(&["*".into()]).unwrap();
        // TC0: no Origin: not a browser.
        assert!(own.check(&headers(None, "x:1")).is_ok());
        // TC1: same origin, with the port explicit, implied, or in IPv6.
        assert!(own
            .check(&headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"))
            .is_ok());
        assert!(own
            .check(&headers(Some("https://feed.example"), "feed.example"))
            .is_ok());
        assert!(own
            .check(&headers(Some("https://feed.example"), "FEED.example:443"))
            .is_ok());
        assert!(own
            .check(&headers(Some("http://[::1]:9000"), "[::1]:9000"))
            .is_ok());
        // TC2: another site, another port, null, garbage.
        for o in [
            "https://evil.example",
            "http://127.0.0.1:8081",
            "null",
            "http://feed.example.evil.example",
            "feed.example",
        ] {
            assert!(
                own.check(&headers(Some(o), "127.0.0.1:8080")).is_err(),
                "{o}"
            );
        }
        assert!(own
            .check(&headers(Some("http://feed.example:81"), "feed.example"))
            .is_err());
        // TC3: the list (case and default port normalized) and `*`.
        assert!(listed
            .check(&headers(Some("https://app.example:443"), "feed.example"))
            .is_ok());
        assert!(listed
            .check(&headers(Some("http://app.example"), "feed.example"))
            .is_err());
        assert!(any
            .check(&headers(Some("https://evil.example"), "feed.example"))
            .is_ok());
        // TC4: a bad list entry is reported.
        assert!(OriginPolicy::new(&["app.example".into()]).is_err());
    }

    #[test]
    fn tokens_from_header_or_query() {
        let uri: Uri = "/ws?x=1&access_token=a.b%2Ec".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h, &uri).as_deref(), Some("a.b.c"));
        h.insert(header::AUTHORIZATION, "bearer  t.o.k ".parse().unwrap());
        assert_eq!(bearer_token(&h, &uri).as_deref(), Some("t.o.k"));
        h.insert(header::AUTHORIZATION, "Basic dXNlcjpwYXNz".parse().unwrap());
        assert_eq!(bearer_token(&h, &uri), None);
        assert_eq!(
            bearer_token(&HeaderMap::new(), &"/ws".parse().unwrap()),
            None
        );
    }
}
