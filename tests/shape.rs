//! The shape of `src/` (docs/ARCHITECTURE.md, "The layout"), held by a test
//! so that it stays: no file over 500 lines outside its test module, no
//! function over 80 lines, and no import cycle between modules.
//!
//! The reading is lexical: strings, character literals and comments are
//! skipped when braces are counted, and a module's imports are the
//! `crate::` paths in its code (doc comments and test modules aside).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;

/// Every `.rs` file under `src/`, but test files.
fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = path.file_name().unwrap().to_str().unwrap();
                if name != "tests.rs" && !name.ends_with("_tests.rs") {
                    out.push(path);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

/// The lines before the file's `#[cfg(test)] mod tests {`, if it has one.
fn code_lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].starts_with("#[cfg(") && w[1].starts_with("mod tests"))
        .unwrap_or(lines.len());
    lines[..end].to_vec()
}

/// Brace depth at the end of each line, outside strings, character
/// literals and comments.
fn depths(lines: &[&str]) -> Vec<i32> {
    #[derive(PartialEq)]
    enum State {
        Code,
        Str,
        Raw(usize),
        Block,
    }
    let mut state = State::Code;
    let mut depth = 0;
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match state {
                State::Str => {
                    if b[i] == b'\\' {
                        i += 1;
                    } else if b[i] == b'"' {
                        state = State::Code;
                    }
                }
                State::Raw(hashes) => {
                    if b[i] == b'"'
                        && b[i + 1..].iter().take_while(|&&c| c == b'#').count() >= hashes
                    {
                        state = State::Code;
                        i += hashes;
                    }
                }
                State::Block => {
                    if b[i..].starts_with(b"*/") {
                        state = State::Code;
                        i += 1;
                    }
                }
                State::Code => {
                    let word_before =
                        i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
                    if b[i..].starts_with(b"//") {
                        break;
                    } else if b[i..].starts_with(b"/*") {
                        state = State::Block;
                        i += 1;
                    } else if !word_before
                        && (b[i..].starts_with(b"r#")
                            || b[i..].starts_with(b"r\"")
                            || b[i..].starts_with(b"br"))
                        && raw_start(&b[i..]).is_some()
                    {
                        let (len, hashes) = raw_start(&b[i..]).unwrap();
                        state = State::Raw(hashes);
                        i += len - 1;
                    } else if b[i] == b'"' {
                        state = State::Str;
                    } else if b[i] == b'\'' {
                        // A character literal ('x', '\n', '\u{..}'), or a lifetime.
                        if let Some(len) = char_literal(&b[i..]) {
                            i += len - 1;
                        }
                    } else if b"{([".contains(&b[i]) {
                        depth += 1;
                    } else if b"})]".contains(&b[i]) {
                        depth -= 1;
                    }
                }
            }
            i += 1;
        }
        out.push(depth);
    }
    out
}

/// `r"`, `r#"`, `br##"`...: the opening's length and its `#`s.
fn raw_start(b: &[u8]) -> Option<(usize, usize)> {
    let rest = b.strip_prefix(b"b").unwrap_or(b);
    let rest = rest.strip_prefix(b"r")?;
    let hashes = rest.iter().take_while(|&&c| c == b'#').count();
    (rest.get(hashes) == Some(&b'"')).then_some((b.len() - rest.len() + hashes + 1, hashes))
}

fn char_literal(b: &[u8]) -> Option<usize> {
    if b.get(1) == Some(&b'\\') {
        let close = b[2..].iter().position(|&c| c == b'\'')?;
        return Some(close + 3);
    }
    // `b` starts at a `'`, so what follows it is whole UTF-8.
    let ch = std::str::from_utf8(&b[1..]).ok()?.chars().next()?;
    (b.get(1 + ch.len_utf8()) == Some(&b'\'')).then_some(ch.len_utf8() + 2)
}

/// `fn name` at the start of a line (after visibility and qualifiers).
fn fn_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some(&rest[..end])
}

fn rel(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn no_source_file_is_over_500_lines_outside_its_tests() {
    let long: Vec<String> = sources()
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let n = code_lines(&text).len();
            (n > MAX_FILE_LINES).then(|| format!("{} ({n} lines)", rel(p)))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_FILE_LINES} lines: {long:?}");
}

#[test]
fn no_function_is_over_80_lines() {
    let mut long = Vec::new();
    for path in sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines = code_lines(&text);
        let depth = depths(&lines);
        for (start, line) in lines.iter().enumerate() {
            let Some(name) = fn_name(line) else { continue };
            let before = if start == 0 { 0 } else { depth[start - 1] };
            // The body ends at the `}` that brings the depth back to the
            // line's own; a declaration without a body, at its `;`. Lines
            // back at that depth on the way (the `)` or `) -> T` closing a
            // long parameter list, a `where`) are still the signature.
            for end in start..lines.len() {
                if depth[end] != before {
                    continue;
                }
                let line = lines[end].trim_end();
                if line.ends_with(';') {
                    break;
                }
                if line.ends_with('}') {
                    let n = end - start + 1;
                    if n > MAX_FN_LINES {
                        long.push(format!("{}: {name} ({n} lines)", rel(&path)));
                    }
                    break;
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines: {long:?}"
    );
}

/// The module a file is (`server::guard::auth` for
/// `src/server/guard/auth.rs`); None for the crate roots and the binary's
/// own modules.
fn module_of(path: &Path) -> Option<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rel = path.strip_prefix(&src).ok()?.with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_str().unwrap().to_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    match parts.first().map(String::as_str) {
        None | Some("lib" | "main" | "cli") => None,
        _ => Some(parts.join("::")),
    }
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let files: BTreeMap<String, PathBuf> = sources()
        .into_iter()
        .filter_map(|p| Some((module_of(&p)?, p)))
        .collect();
    // The longest known module a `crate::` path names.
    let resolve = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|k| parts[..k].join("::"))
            .find(|m| files.contains_key(m))
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        for line in code_lines(&text) {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let path: String = line[at + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let Some(target) = resolve(path.trim_end_matches(':')) else {
                    continue;
                };
                // A module may use its own children and its ancestors'
                // items; those are not imports between modules.
                if &target != module
                    && !module.starts_with(&format!("{target}::"))
                    && !target.starts_with(&format!("{module}::"))
                {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
        }
    }
    // At every depth of the tree: files, and the folders they are in.
    for depth in 1..=4 {
        let cut = |m: &str| m.split("::").take(depth).collect::<Vec<_>>().join("::");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, tos) in &edges {
            for to in tos {
                let (a, b) = (cut(from), cut(to));
                if a != b && !a.starts_with(&format!("{b}::")) && !b.starts_with(&format!("{a}::"))
                {
                    graph.entry(a).or_default().insert(b);
                }
            }
        }
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "import cycle between modules (depth {depth}): {}",
                cycle.join(" -> ")
            );
        }
    }
}

/// A cycle in `graph`, as the path around it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut done, &mut Vec::new()))
}

/// The readers above must be able to fail: each one on a file made to break
/// its rule.
#[test]
fn the_checks_see_what_they_look_for() {
    let body: Vec<String> = (0..81)
        .map(|i| format!("    let _x{i} = \"}}\";"))
        .collect();
    let text = format!(
        "fn long() {{\n{}\n}}\nfn short() {{ '{{'; }}\n",
        body.join("\n")
    );
    let lines: Vec<&str> = text.lines().collect();
    let depth = depths(&lines);
    assert_eq!(depth[0], 1, "the opening brace counts");
    assert_eq!(depth[81], 1, "braces inside strings do not");
    assert_eq!(depth[82], 0, "the body ends at its closing brace");
    assert_eq!(
        depth[83], 0,
        "a brace in a character literal does not count"
    );
    assert_eq!(fn_name(lines[0]), Some("long"));
    assert_eq!(fn_name("    pub(crate) async fn run(x: u8) {"), Some("run"));
    let raw = ["let s = r#\"{ \"# ;", "let t = b'{';", "/* { */ let u = 1;"];
    assert_eq!(depths(&raw), [0, 0, 0]);
    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(find_cycle(&graph).map(|c| c.len()), Some(3));
    graph.remove("b");
    assert_eq!(find_cycle(&graph), None);
    let tested = "fn a() {}\n#[cfg(test)]\nmod tests {\n}\n";
    assert_eq!(code_lines(tested), ["fn a() {}"]);
}
