//! One request head checked the way hyper will parse it (httparse with
//! hyper's settings, the method, the target, `Content-Length` and
//! `Transfer-Encoding`) and against tickwire's limits; the refusals, their
//! statuses and their metric labels.

use hyper::StatusCode;

/// Longest request line (method, target, version and its line end); 414
/// past it. A `/sse?symbols=...` list or an `access_token` in the query
/// must fit.
pub const MAX_REQUEST_LINE_BYTES: usize = 32 * 1024;
/// Longest request head, request line and headers up to the blank line;
/// 431 past it.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a request (hyper's own limit); 431 past it.
pub const MAX_HEADER_FIELDS: usize = 100;

/// Why a request head was refused; the label of
/// `tickwire_http_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRefusal {
    /// The request line is longer than [`MAX_REQUEST_LINE_BYTES`] (414).
    RequestLineTooLong,
    /// The head is longer than [`MAX_HEAD_BYTES`] (431).
    HeadersTooLarge,
    /// More than [`MAX_HEADER_FIELDS`] header fields (431).
    TooManyHeaders,
    /// Not an HTTP/1.x request head (400); says what was wrong.
    Malformed(&'static str),
    /// A PROXY protocol header from a peer that is not a trusted proxy
    /// (400).
    UntrustedProxyHeader,
}

impl HttpRefusal {
    /// The metric labels, by [`HttpRefusal::index`].
    pub const REASONS: [&'static str; 4] = crate::metrics::HTTP_REJECTION_REASONS;

    pub fn status(self) -> StatusCode {
        match self {
            HttpRefusal::RequestLineTooLong => StatusCode::URI_TOO_LONG,
            HttpRefusal::HeadersTooLarge | HttpRefusal::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HttpRefusal::Malformed(_) | HttpRefusal::UntrustedProxyHeader => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    /// The one-line plain-text reason the client gets.
    pub fn reason(self) -> String {
        match self {
            HttpRefusal::RequestLineTooLong => {
                format!("request line longer than {MAX_REQUEST_LINE_BYTES} bytes")
            }
            HttpRefusal::HeadersTooLarge => {
                format!(
                    "request head (request line and headers) longer than {MAX_HEAD_BYTES} bytes"
                )
            }
            HttpRefusal::TooManyHeaders => {
                format!("more than {MAX_HEADER_FIELDS} header fields")
            }
            HttpRefusal::Malformed(what) => format!("not an HTTP/1.1 request: {what}"),
            HttpRefusal::UntrustedProxyHeader => "a PROXY protocol header from an address \
                                                  that is not a trusted proxy (--trusted-proxy)"
                .to_owned(),
        }
    }
}

/// What a look at the buffered bytes found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Check {
    Partial,
    Complete { len: usize, last: bool },
    Refuse(HttpRefusal),
}

/// Parses a head the way hyper will (httparse with hyper's settings, the
/// method, the target, `Content-Length` and `Transfer-Encoding`) and says
/// whether the gate must stop checking after it.
pub(super) fn check_head(buf: &[u8]) -> Check {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADER_FIELDS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Check::Partial,
        Err(httparse::Error::TooManyHeaders) => return Check::Refuse(HttpRefusal::TooManyHeaders),
        Err(e) => return Check::Refuse(HttpRefusal::Malformed(describe(e))),
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Check::Refuse(HttpRefusal::Malformed("incomplete request line"));
    };
    let Ok(method) = hyper::Method::from_bytes(method.as_bytes()) else {
        return Check::Refuse(HttpRefusal::Malformed("invalid method"));
    };
    if hyper::Uri::try_from(path.as_bytes()).is_err() {
        return Check::Refuse(HttpRefusal::Malformed("invalid request target"));
    }
    let mut last = method == hyper::Method::CONNECT;
    let (mut te, mut te_chunked, mut length) = (false, false, None);
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            if version == 0 {
                return Check::Refuse(HttpRefusal::Malformed(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            te = true;
            te_chunked = is_chunked(h.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            // hyper ignores Content-Length after Transfer-Encoding.
            if te {
                continue;
            }
            let Some(n) = digits(h.value) else {
                return Check::Refuse(HttpRefusal::Malformed("invalid Content-Length"));
            };
            if length.is_some_and(|l| l != n) {
                return Check::Refuse(HttpRefusal::Malformed(
                    "Content-Length given twice with different values",
                ));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("upgrade")
            || (name.eq_ignore_ascii_case("connection") && has_token(h.value, "upgrade"))
        {
            last = true;
        }
    }
    if te && !te_chunked {
        return Check::Refuse(HttpRefusal::Malformed(
            "Transfer-Encoding does not end in chunked",
        ));
    }
    last |= te || length.is_some_and(|n| n > 0);
    Check::Complete { len, last }
}

fn describe(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line end",
        httparse::Error::Token => "invalid method or request target",
        httparse::Error::Version => "invalid HTTP version",
        httparse::Error::Status | httparse::Error::TooManyHeaders => "invalid request",
    }
}

/// hyper's `Content-Length`: decimal digits only, no sign, no list, and
/// not beyond what its body length can hold.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut n = 0u64;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (n <= u64::MAX - 2).then_some(n)
}

/// hyper's test: visible ASCII, and the last coding is `chunked`.
fn is_chunked(v: &[u8]) -> bool {
    let visible = v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    visible
        && v.rsplit(|&b| b == b',')
            .next()
            .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

fn has_token(v: &[u8], token: &str) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

impl crate::metrics::Labelled for HttpRefusal {
    fn index(self) -> usize {
        match self {
            HttpRefusal::RequestLineTooLong => 0,
            HttpRefusal::HeadersTooLarge | HttpRefusal::TooManyHeaders => 1,
            HttpRefusal::Malformed(_) => 2,
            HttpRefusal::UntrustedProxyHeader => 3,
        }
    }
}
