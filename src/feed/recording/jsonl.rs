//! The shapes of a JSON-lines recording's lines, and what each one holds.
//!
//! A line may be a bare JSON object, `<integer epoch ns|µs|ms> <json>`
//! (hftbacktest), `<epoch seconds.fraction>: <json>`, or a cryptofeed v2
//! capture record `{"t":"recv","ts":<epoch s>,"data":"<json text>"}`, and
//! the JSON may be wrapped in Binance's `{"stream":..,"data":{..}}`; inside
//! is a venue message for [`binance`] or [`coinbase`].
//!
//! Lines a capture tool writes around the data are not records at all:
//! cryptofeed's raw capture (`AsyncFileCallback`) starts with
//! `configuration: {...}` and notes REST responses
//! (`https://… -> <ts>: {...}`), messages it sent (`wss://… <- <ts>: {...}`)
//! and connections (`wss://… <-> <ts>`) among the `<ts>: <json>` it received.
//! [`capture_note`] tells them apart, so the reader skips them instead of
//! rejecting them.
//!
//! Apart from the reader ([`super::reader`]) because this is the part that
//! knows what capture tools write, and grows with each one.

use simd_json::prelude::*;
use simd_json::BorrowedValue;

use crate::feed::normalize::{BadRecord, Emitter, Outcome};
use crate::feed::venue::{binance, coinbase};
use crate::timestamp::{decimal_secs_ns, epoch_int_ns};

/// What kind of capture-tool note `line` is, if it is one: cryptofeed's raw
/// capture (`AsyncFileCallback`) writes `configuration: {...}` as its first
/// line, then beside each received `<ts>: <message>`:
///
/// - `<http(s) URL> -> <ts>: <response>`, a REST response (a depth
///   snapshot);
/// - `<ws(s) URL> <- <ts>: <message>`, a message it sent (a subscribe);
/// - `<ws(s) URL> <-> <ts>`, a connection it opened.
///
/// The shape is checked whole (scheme, arrow, an epoch-seconds timestamp),
/// so that garbage is still rejected; the payload is not parsed.
pub(crate) fn capture_note(line: &[u8], first: bool) -> Option<&'static str> {
    // Every line is asked: data lines (a digit, `{`, `exchange,`) leave at
    // the first byte.
    if !matches!(line.first(), Some(b'c' | b'h' | b'w')) {
        return None;
    }
    if first && line.starts_with(b"configuration:") {
        return Some("capture configuration");
    }
    let scheme = [&b"https://"[..], b"http://", b"wss://", b"ws://"]
        .into_iter()
        .find(|s| line.starts_with(s))?;
    let url_end = line.iter().position(|b| *b == b' ')?;
    if url_end == scheme.len() {
        return None;
    }
    let rest = &line[url_end..];
    let (kind, after, payload) = if let Some(after) = rest.strip_prefix(b" <-> ") {
        ("connection note", after, false)
    } else if let Some(after) = rest.strip_prefix(b" <- ") {
        ("sent message", after, true)
    } else if let Some(after) = rest.strip_prefix(b" -> ") {
        ("REST response", after, true)
    } else {
        return None;
    };
    let ts = match after.iter().position(|b| *b == b':') {
        Some(colon) if payload => &after[..colon],
        None if !payload => after,
        _ => return None,
    };
    decimal_secs_ns(ts).map(|_| kind)
}

/// Splits a JSON-lines line into its capture timestamp, if any, and JSON.
fn split_prefix(line: &mut [u8]) -> Result<(Option<u64>, &mut [u8]), BadRecord> {
    if line.first() == Some(&b'{') {
        return Ok((None, line));
    }
    let Some(end) = line
        .iter()
        .position(|b| *b == b' ' || *b == b':' || *b == b'\t')
    else {
        return Err(BadRecord::Unrecognized(
            "neither JSON nor `<timestamp> <JSON>`".into(),
        ));
    };
    let token = &line[..end];
    let ts = if line[end] == b':' || token.contains(&b'.') {
        decimal_secs_ns(token)
    } else {
        epoch_int_ns(token)
    };
    let Some(ts) = ts else {
        let shown = String::from_utf8_lossy(&token[..token.len().min(40)]).into_owned();
        return Err(BadRecord::Unrecognized(format!(
            "line starts with {shown:?}, neither JSON nor an epoch timestamp"
        )));
    };
    let rest = &mut line[end..];
    let json_start = rest
        .iter()
        .position(|b| *b != b' ' && *b != b':' && *b != b'\t')
        .unwrap_or(rest.len());
    Ok((Some(ts), &mut rest[json_start..]))
}

/// Parses one JSON-lines line: prefix, envelopes, then the venue parsers.
pub(super) fn json_line(
    line: &mut [u8],
    scratch: &mut Vec<u8>,
    emit: &mut Emitter<'_>,
) -> Result<Outcome, BadRecord> {
    let (prefix_ts, json) = split_prefix(line)?;
    // cryptofeed writes `ts` as a float with more digits than an f64 keeps,
    // so its text is taken before simd-json turns it into a number. The
    // record's first key is `t`, which makes the check cheap.
    let capture_ts = if json.starts_with(b"{\"t\":") {
        raw_number(json, b"\"ts\":").and_then(decimal_secs_ns)
    } else {
        None
    };
    let value = crate::json::parse(json).map_err(|e| BadRecord::Json(e.to_string()))?;
    if let Some(kind) = cryptofeed_kind(&value) {
        if kind != "recv" {
            // header, http, connect, send: the capture's own bookkeeping.
            return Ok(Outcome::Skipped);
        }
        let data = value
            .get("data")
            .and_then(|d| d.as_str())
            .ok_or_else(|| BadRecord::fields("cryptofeed recv", "no `data` string"))?;
        scratch.clear();
        scratch.extend_from_slice(data.as_bytes());
        let inner = crate::json::parse(scratch).map_err(|e| BadRecord::Json(e.to_string()))?;
        emit.receive_ts_ns = capture_ts.or(prefix_ts);
        return payload(&inner, emit);
    }
    emit.receive_ts_ns = prefix_ts;
    payload(&value, emit)
}

/// The `t` of a cryptofeed capture record.
fn cryptofeed_kind<'v>(value: &'v BorrowedValue<'_>) -> Option<&'v str> {
    let kind = value.get("t")?.as_str()?;
    let looks_like_capture = value.get("conn").is_some() || value.get("format").is_some();
    looks_like_capture.then_some(kind)
}

fn payload(value: &BorrowedValue<'_>, emit: &mut Emitter<'_>) -> Result<Outcome, BadRecord> {
    if let (Some(stream), Some(data)) = (value.get("stream"), value.get("data")) {
        if stream.is_str() {
            return match binance::parse(data, emit)? {
                Outcome::Foreign => Err(BadRecord::Unrecognized(
                    "Binance combined stream with an unknown payload".into(),
                )),
                known => Ok(known),
            };
        }
    }
    for venue in [binance::parse, coinbase::parse] {
        match venue(value, emit)? {
            Outcome::Foreign => {}
            known => return Ok(known),
        }
    }
    Err(BadRecord::Unrecognized(
        "JSON of no known venue message".into(),
    ))
}

/// The text of the number after `key` in raw JSON.
fn raw_number<'a>(json: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = json.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &json[at..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let len = rest[start..]
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b'.'))
        .unwrap_or(rest.len() - start);
    Some(&rest[start..start + len])
}
