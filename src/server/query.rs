//! Query parameters of `/ws` and `/sse` requests (`symbols`,
//! `access_token`): found by name and percent-decoded, in one place.

/// The value of parameter `name` in `query`, percent-decoded; None if it is
/// absent or does not decode.
pub(crate) fn param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(percent_decode)
}

/// RFC 3986 percent-decoding (`+` is a plus, not a space); None if the
/// result is not UTF-8 or an escape is cut short.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
