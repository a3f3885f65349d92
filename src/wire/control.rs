//! A replay session's in-band controls (`/replay`, docs/PROTOCOL.md
//! "Replay"): `pause`, `resume` and `speed`, parsed with the other
//! requests and acknowledged like them; refused on `/ws`.

use bytes::Bytes;
use simd_json::prelude::*;

use super::encode::write_json_str;
use super::{put_id, text_frame, ErrorCode, Refusal};

/// What a client of a replay session may ask of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplayControl {
    Pause,
    Resume,
    /// The pace from the next update on: the recorded pace times this, or
    /// `None` for as fast as the client reads.
    Speed(Option<f64>),
    /// The recording from this time on (ns since the epoch, on its clock).
    Seek(u64),
}

impl ReplayControl {
    pub fn name(self) -> &'static str {
        match self {
            ReplayControl::Pause => "pause",
            ReplayControl::Resume => "resume",
            ReplayControl::Speed(_) => "speed",
            ReplayControl::Seek(_) => "seek",
        }
    }
}

/// A `speed` control's `"speed"`: `"max"`, or a positive number (or its
/// text).
pub(super) fn parse_speed(
    value: Option<&simd_json::BorrowedValue<'_>>,
    id: Option<u64>,
) -> Result<Option<f64>, Refusal> {
    let invalid = || {
        Refusal::new(
            id,
            ErrorCode::InvalidOption,
            "\"speed\" must be \"max\" or a positive number",
        )
    };
    let value = value.ok_or_else(invalid)?;
    let k = match value.as_str() {
        Some(s) if s.eq_ignore_ascii_case("max") => return Ok(None),
        Some(s) => s.trim().parse::<f64>().map_err(|_| invalid())?,
        // An integer is a number too.
        None => value
            .as_f64()
            .or_else(|| value.as_i64().map(|i| i as f64))
            .or_else(|| value.as_u64().map(|u| u as f64))
            .ok_or_else(invalid)?,
    };
    if k.is_finite() && k > 0.0 {
        Ok(Some(k))
    } else {
        Err(invalid())
    }
}

/// A `seek` control's `"to"`: ns since the epoch (a number, or its text),
/// or an RFC 3339 time.
pub(super) fn parse_seek(
    value: Option<&simd_json::BorrowedValue<'_>>,
    id: Option<u64>,
) -> Result<u64, Refusal> {
    let invalid = || {
        Refusal::new(
            id,
            ErrorCode::InvalidOption,
            "\"to\" must be a time: RFC 3339, or ns since the epoch",
        )
    };
    let value = value.ok_or_else(invalid)?;
    match value.as_str() {
        Some(s) => crate::timestamp::time_ns(s).ok_or_else(invalid),
        None => value.as_u64().ok_or_else(invalid),
    }
}

/// `{"type":"ack","op":"pause","id":7}`: a replay control taken.
pub fn control_ack(op: &str, id: Option<u64>) -> Bytes {
    text_frame(|p| {
        p.extend_from_slice(b"{\"type\":\"ack\",\"op\":");
        write_json_str(p, op);
        put_id(p, id);
        p.push(b'}');
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse_request, Op};

    #[test]
    fn controls_parse_and_bad_speeds_are_refused() {
        let op = |t: &str| parse_request(t.as_bytes(), 10).map(|r| r.op);
        assert_eq!(
            op(r#"{"op":"pause"}"#),
            Ok(Op::Replay(ReplayControl::Pause))
        );
        assert_eq!(
            op(r#"{"op":"resume","id":2}"#),
            Ok(Op::Replay(ReplayControl::Resume))
        );
        for (text, speed) in [
            (r#"{"op":"speed","speed":"max"}"#, None),
            (r#"{"op":"speed","speed":2.5}"#, Some(2.5)),
            (r#"{"op":"speed","speed":10}"#, Some(10.0)),
            (r#"{"op":"speed","speed":"0.5"}"#, Some(0.5)),
        ] {
            assert_eq!(
                op(text),
                Ok(Op::Replay(ReplayControl::Speed(speed))),
                "{text}"
            );
        }
        for (text, to) in [
            (
                r#"{"op":"seek","to":1723161260000000000}"#,
                1_723_161_260_000_000_000,
            ),
            (
                r#"{"op":"seek","to":"2024-08-08T23:54:20Z"}"#,
                1_723_161_260_000_000_000,
            ),
        ] {
            assert_eq!(op(text), Ok(Op::Replay(ReplayControl::Seek(to))), "{text}");
        }
        for bad in [
            r#"{"op":"seek"}"#,
            r#"{"op":"seek","to":"noon"}"#,
            r#"{"op":"seek","to":-5}"#,
            r#"{"op":"speed"}"#,
            r#"{"op":"speed","speed":0}"#,
            r#"{"op":"speed","speed":-1}"#,
            r#"{"op":"speed","speed":"fast"}"#,
            r#"{"op":"speed","speed":[1]}"#,
        ] {
            let refused = parse_request(bad.as_bytes(), 10).unwrap_err();
            assert_eq!(refused.code, ErrorCode::InvalidOption, "{bad}");
        }
    }
}
