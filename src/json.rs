//! Parsing JSON from outside, with a bound on nesting.
//!
//! Every JSON text tickwire reads from outside (client requests, venue
//! messages, recording lines) goes through [`parse`]. simd-json's own stage 2
//! is iterative, but the step that turns its tape into a [`BorrowedValue`]
//! recurses once per level of nesting, and so does dropping the value: a
//! 24 KB message of `[[[[…]]]]` overflowed a tokio worker's stack and aborted
//! the process. So the tape is checked first, without recursion, and a text
//! nested deeper than [`MAX_DEPTH`] is refused before any value is built.
//!
//! The check costs nothing for ordinary messages: a tape of at most
//! [`MAX_DEPTH`] nodes cannot be nested deeper than that, so only longer
//! tapes are walked, once, with a fixed-size stack.

use simd_json::{BorrowedValue, Node};

/// The deepest nesting accepted, the outermost array or object counting as
/// one level. Venue messages and tickwire's requests nest 4 levels at most; 64 leaves
/// room for any real payload and is far from the thousands of levels that
/// exhaust a thread's stack.
pub const MAX_DEPTH: usize = 64;

/// Why a JSON text was refused.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("not valid JSON: {0}")]
    Syntax(#[from] simd_json::Error),
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Parses `text` (simd-json rewrites it in place to unescape strings),
/// refusing any nesting deeper than [`MAX_DEPTH`].
pub fn parse(text: &mut [u8]) -> Result<BorrowedValue<'_>, JsonError> {
    let tape = simd_json::to_tape(text)?;
    if nests_too_deep(&tape.0) {
        return Err(JsonError::TooDeep);
    }
    Ok(simd_json::value::lazy::Value::from_tape(tape.as_value()).into_value())
}

/// Whether the tape nests arrays and objects more than [`MAX_DEPTH`] deep.
fn nests_too_deep(tape: &[Node<'_>]) -> bool {
    // Each level takes at least one node.
    if tape.len() <= MAX_DEPTH {
        return false;
    }
    // The tape index at which each open container ends, innermost last.
    let mut ends = [0usize; MAX_DEPTH];
    let mut depth = 0;
    for (i, node) in tape.iter().enumerate() {
        while depth > 0 && i >= ends[depth - 1] {
            depth -= 1;
        }
        if let Node::Array { count, .. } | Node::Object { count, .. } = *node {
            if depth == MAX_DEPTH {
                return true;
            }
            // `count` is the nodes inside the container, nested ones included.
            ends[depth] = i + 1 + count;
            depth += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use simd_json::prelude::*;

    fn nested(open: &str, close: &str, depth: usize) -> Vec<u8> {
        format!("{}{}", open.repeat(depth), close.repeat(depth)).into_bytes()
    }

    #[test]
    fn depth_at_the_limit_parses_and_one_more_is_refused() {
        // TC0: arrays, TC1: objects, each at the limit and one past it.
        let mut ok = nested("[", "]", MAX_DEPTH);
        assert!(parse(&mut ok).is_ok());
        let mut deep = nested("[", "]", MAX_DEPTH + 1);
        assert!(matches!(parse(&mut deep), Err(JsonError::TooDeep)));

        let obj = |d| {
            let mut s = "{\"a\":".repeat(d - 1);
            s.push_str("{}");
            s.push_str(&"}".repeat(d - 1));
            s.into_bytes()
        };
        assert!(parse(&mut obj(MAX_DEPTH)).is_ok());
        assert!(matches!(
            parse(&mut obj(MAX_DEPTH + 1)),
            Err(JsonError::TooDeep)
        ));
    }

    #[test]
    fn depth_far_past_a_stack_is_refused_without_recursion() {
        // 1 MiB of nesting: a recursive check or value build would overflow
        // the test thread's stack.
        let mut deep = nested("[", "]", 512 * 1024);
        assert!(matches!(parse(&mut deep), Err(JsonError::TooDeep)));
        let mut unclosed = vec![b'['; 1 << 20];
        assert!(matches!(parse(&mut unclosed), Err(JsonError::Syntax(_))));
    }

    #[test]
    fn wide_and_sibling_containers_are_not_deep() {
        // TC2: many siblings at depth 2 make a long tape with shallow nesting.
        let mut wide = format!("[{}[]]", "[1,[2]],".repeat(10_000)).into_bytes();
        assert!(parse(&mut wide).is_ok());
        // TC3: depth climbs, falls back, and climbs again to exactly the limit.
        let mut s = nested("[", "]", MAX_DEPTH - 1);
        s.insert(0, b'[');
        s.push(b',');
        s.extend(nested("[", "]", MAX_DEPTH - 1));
        s.push(b']');
        assert!(parse(&mut s).is_ok());
    }

    #[test]
    fn values_come_through_whole() {
        let mut text = br#"{"op":"subscribe","symbols":["A","B"],"id":7}"#.to_vec();
        let v = parse(&mut text).unwrap();
        assert_eq!(v.get("op").and_then(|v| v.as_str()), Some("subscribe"));
        assert_eq!(v.get("id").and_then(|v| v.as_u64()), Some(7));
        assert_eq!(
            v.get("symbols").and_then(|v| v.as_array()).unwrap().len(),
            2
        );
    }
}
