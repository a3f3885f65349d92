//! One file per venue format, each with its raw message structs and their
//! normalization.

pub mod binance;
pub(crate) mod coinbase;
pub mod tardis;

/// What each line became through a venue's parser, for the book tests of
/// each venue: `R` a snapshot's first level, `L<n>` the end of a book event
/// of n levels, `S` a `book_gap` status, `V` a live one, `-` nothing, and
/// `E:<reason>` a rejection.
#[cfg(test)]
pub(crate) fn book_trace(
    lines: &[&str],
    parse: fn(
        &simd_json::BorrowedValue<'_>,
        &mut crate::feed::normalize::Emitter<'_>,
    ) -> Result<crate::feed::normalize::Outcome, crate::feed::normalize::BadRecord>,
) -> Vec<String> {
    use crate::feed::normalize::{BookSync, Emitter, Timed};
    use crate::symbols::{Normalizer, SymbolTable};
    use crate::update::{level_flags, SymbolStatus, UpdateKind};
    let mut normalizer = Normalizer::new(SymbolTable::new());
    let mut books = BookSync::default();
    let mut got = Vec::new();
    for line in lines {
        let mut out: Vec<Timed> = Vec::new();
        let mut emit = Emitter {
            normalizer: &mut normalizer,
            books: &mut books,
            receive_ts_ns: Some(1),
            out: &mut out,
        };
        let mut text = line.as_bytes().to_vec();
        let value = crate::json::parse(&mut text).unwrap();
        let result = parse(&value, &mut emit);
        let (mut seen, mut n) = (String::new(), 0);
        for t in &out {
            match t.update.kind {
                UpdateKind::Level { flags, .. } => {
                    n += 1;
                    if flags & level_flags::RESET != 0 {
                        seen.push('R');
                    }
                    if flags & level_flags::LAST != 0 {
                        seen.push_str(&format!("L{n}"));
                        n = 0;
                    }
                }
                UpdateKind::Status(SymbolStatus::StaleBookGap) => seen.push('S'),
                UpdateKind::Status(SymbolStatus::Live) => seen.push('V'),
                ref other => panic!("{other:?}"),
            }
        }
        match result {
            Err(e) => seen.push_str(&format!("E:{}", e.reason().name())),
            Ok(_) if seen.is_empty() => seen.push('-'),
            Ok(_) => {}
        }
        got.push(seen);
    }
    got
}
