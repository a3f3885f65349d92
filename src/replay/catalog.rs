//! The recordings a server offers for replay: every file directly in
//! `recordings_dir` that tickwire reads (its logs, the capture formats,
//! Tardis CSV; plain, gzip or zstd), described once per file identity.
//!
//! A client names a recording by its file name, and that is all it can
//! name: no separator, no `..`, no hidden file, and the file must resolve
//! (symbolic links followed) to a regular file inside the directory.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

use crate::feed::recording::log::{self, BlockIndex};
use crate::feed::recording::FileReader;
use crate::feed::FeedSpec;
use crate::symbols::{Normalizer, SymbolTable};
use crate::update::UpdateKind;

/// What `GET /recordings` says of one recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub name: String,
    /// `tickwire-log`, `json-lines` or `tardis-csv`.
    pub format: &'static str,
    /// `none`, `gzip` or `zstd`.
    pub compression: &'static str,
    /// Bytes on disk.
    pub size: u64,
    /// Symbols, in the order they first appear.
    pub symbols: Vec<String>,
    /// Recorded time of the first and last update (ns since the epoch):
    /// a record's capture time, else its exchange time; the `from` and
    /// `to` of a replay are on this clock.
    pub first_ts: u64,
    pub last_ts: u64,
    /// Quotes, trades and statuses.
    pub updates: u64,
    /// Order-book levels (a book event is a run of them).
    pub book_levels: u64,
    /// Where a replay from a time may start reading, instead of reading
    /// up to it.
    #[serde(skip)]
    pub index: Option<Arc<StartIndex>>,
}

/// Where a replay from a time may start reading a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartIndex {
    /// A plain log's blocks, by byte offset: the file is opened there.
    LogBlocks(BlockIndex),
    /// A line format's runs of [`INDEX_LINES`] lines, by line number: the
    /// lines before are read past unparsed (decompressed if need be).
    Lines(BlockIndex),
}

/// Lines in a run of a line format's [`StartIndex`].
pub const INDEX_LINES: u64 = 4096;

/// Why a recording name is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("{0:?} is not a recording name (a file name in the recordings directory)")]
    BadName(String),
    #[error("no recording {0:?}")]
    NotFound(String),
    #[error("{0:?} is not inside the recordings directory")]
    Outside(String),
}

impl CatalogError {
    pub fn status(&self) -> u16 {
        match self {
            CatalogError::BadName(_) => 400,
            CatalogError::NotFound(_) => 404,
            CatalogError::Outside(_) => 403,
        }
    }
}

/// A file's identity: the description is reused while it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId {
    len: u64,
    modified: Option<SystemTime>,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> FileId {
        FileId {
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// What was found of a file, while it is that file: its description, or
/// `None` if tickwire does not read it.
type Known = (FileId, Option<Arc<Entry>>);

/// The recordings directory and what is known of its files.
#[derive(Debug)]
pub struct Catalog {
    /// Canonical.
    dir: PathBuf,
    known: Mutex<HashMap<String, Known>>,
}

impl Catalog {
    /// The catalog of `dir`, which must be a directory.
    pub fn open(dir: &Path) -> std::io::Result<Catalog> {
        let dir = fs::canonicalize(dir)?;
        if !dir.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(Catalog {
            dir,
            known: Mutex::new(HashMap::new()),
        })
    }

    /// The file a client's `name` names, checked.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, CatalogError> {
        let bad = || CatalogError::BadName(name.chars().take(80).collect());
        if name.is_empty()
            || name.len() > 255
            || name.starts_with('.')
            || name.contains(['/', '\\', '\0'])
        {
            return Err(bad());
        }
        let path = self.dir.join(name);
        let real = fs::canonicalize(&path).map_err(|_| CatalogError::NotFound(name.to_owned()))?;
        if !real.starts_with(&self.dir) {
            return Err(CatalogError::Outside(name.to_owned()));
        }
        if !real.is_file() {
            return Err(CatalogError::NotFound(name.to_owned()));
        }
        Ok(real)
    }

    /// The start index of the recording at `path`, named `name`, if a
    /// listing has read it and it is still that file. Never reads the file.
    pub fn index_of(&self, name: &str, path: &Path) -> Option<Arc<StartIndex>> {
        let id = FileId::of(&fs::metadata(path).ok()?);
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let (k, entry) = known.get(name)?;
        if *k != id {
            return None;
        }
        entry.as_ref()?.index.clone()
    }

    /// Every readable recording, by name. Blocking: a new or changed file
    /// is read whole once (a caller on an async runtime runs this on a
    /// blocking thread).
    pub fn list(&self) -> Vec<Arc<Entry>> {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for name in names {
            let Ok(path) = self.resolve(&name) else {
                continue;
            };
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            let id = FileId::of(&meta);
            let cached = {
                let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
                known
                    .get(&name)
                    .filter(|(k, _)| *k == id)
                    .map(|(_, e)| e.clone())
            };
            let entry = match cached {
                Some(entry) => entry,
                None => {
                    let entry = describe(&name, &path, id.len).map(Arc::new);
                    self.known
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.clone(), (id.clone(), entry.clone()));
                    entry
                }
            };
            seen.insert(name, ());
            out.extend(entry);
        }
        // Files gone from the directory are forgotten.
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| seen.contains_key(name));
        out
    }
}

/// Reads the whole recording for its description; `None` if tickwire does
/// not read it. A plain log is read by blocks, which also indexes it.
fn describe(name: &str, path: &Path, size: u64) -> Option<Entry> {
    let compression = compression(path);
    if compression == "none" {
        let mut file = BufReader::new(fs::File::open(path).ok()?);
        if log::is_log(file.fill_buf().ok()?) {
            let scan = log::scan(file).ok()?;
            return Some(Entry {
                name: name.to_owned(),
                format: "tickwire-log",
                compression,
                size,
                symbols: scan.symbols,
                first_ts: scan.first_ts.unwrap_or(0),
                last_ts: scan.last_ts.unwrap_or(0),
                updates: scan.updates,
                book_levels: scan.book_levels,
                index: Some(Arc::new(StartIndex::LogBlocks(scan.index))),
            })
            .filter(|e| e.updates + e.book_levels > 0);
        }
    }
    let symbols = SymbolTable::new();
    let mut normalizer = Normalizer::new(Arc::clone(&symbols));
    let spec = FeedSpec::File(path.to_owned());
    let mut reader = FileReader::open(&spec, &mut normalizer, Arc::default())
        .ok()?
        .quiet();
    let (mut first, mut last, mut updates, mut levels) = (u64::MAX, 0, 0, 0);
    // The latest time in each run of INDEX_LINES lines (0: none yet).
    let mut runs: Vec<u64> = Vec::new();
    while let Some(item) = reader.next() {
        let timed = item.ok()?;
        if let Some(t) = timed.pace_ns {
            first = first.min(t);
            last = last.max(t);
        }
        let run = (reader.line_no().saturating_sub(1) / INDEX_LINES) as usize;
        if runs.len() <= run {
            runs.resize(run + 1, 0);
        }
        // No time: never passed over.
        runs[run] = runs[run].max(timed.pace_ns.unwrap_or(u64::MAX));
        match timed.update.kind {
            UpdateKind::Level { .. } => levels += 1,
            _ => updates += 1,
        }
    }
    let format = reader.format_name();
    let mut index = BlockIndex::default();
    for (i, &latest) in runs.iter().enumerate() {
        index.push(i as u64 * INDEX_LINES, latest);
    }
    index.set_end(reader.line_no());
    drop(reader);
    if updates + levels == 0 {
        return None;
    }
    Some(Entry {
        name: name.to_owned(),
        format,
        compression,
        size,
        symbols: (0..symbols.len() as u32)
            .filter_map(|id| symbols.get(id).map(|d| d.name.to_string()))
            .collect(),
        first_ts: if first == u64::MAX { 0 } else { first },
        last_ts: last,
        updates,
        book_levels: levels,
        index: Some(Arc::new(StartIndex::Lines(index))),
    })
}

fn compression(path: &Path) -> &'static str {
    let mut head = [0u8; 4];
    let n = fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    match &head[..n] {
        [0x1f, 0x8b, ..] => "gzip",
        [0x28, 0xb5, 0x2f, 0xfd] => "zstd",
        _ => "none",
    }
}
