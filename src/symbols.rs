//! Symbol interning: names to small ids, each with its fixed-point scales.
//!
//! Feeds intern through a [`Normalizer`], which keeps a private cache so that
//! the shared table is locked only the first time a feed sees a name.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::decimal::{self, DecimalError, DEFAULT_DECIMALS};
use crate::update::SymbolId;
use crate::wire::encode;

/// Most symbols the server will intern; a feed that names more is refusing
/// to be a market-data feed, and the per-connection bitmaps stay small.
pub const MAX_SYMBOLS: usize = 65_536;

/// Longest symbol name, in bytes (it travels in a u8 length on the wire).
pub const MAX_NAME_LEN: usize = 64;

/// A symbol as clients learn it, with its definition pre-encoded once in both
/// wire formats.
#[derive(Debug, Clone)]
pub struct SymbolDef {
    pub id: SymbolId,
    pub name: Arc<str>,
    pub price_decimals: u8,
    pub size_decimals: u8,
    pub frame_binary: Bytes,
    pub frame_json: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SymbolError {
    #[error("symbol table is full ({MAX_SYMBOLS} symbols)")]
    Full,
    #[error("symbol name is empty, longer than {MAX_NAME_LEN} bytes, or has control characters")]
    BadName,
}

#[derive(Default)]
struct Inner {
    by_name: HashMap<Arc<str>, SymbolId>,
    defs: Vec<SymbolDef>,
}

/// All symbols this server has seen. Ids are dense, from 0, never reused.
#[derive(Default)]
pub struct SymbolTable {
    inner: RwLock<Inner>,
}

impl SymbolTable {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Interns `name`, fixing its scales on first sight.
    pub fn intern(
        &self,
        name: &str,
        price_decimals: u8,
        size_decimals: u8,
    ) -> Result<SymbolDef, SymbolError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(SymbolError::BadName);
        }
        if let Some(def) = self.get_by_name(name) {
            return Ok(def);
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = inner.by_name.get(name) {
            return Ok(inner.defs[id as usize].clone());
        }
        if inner.defs.len() >= MAX_SYMBOLS {
            return Err(SymbolError::Full);
        }
        let id = inner.defs.len() as SymbolId;
        let name: Arc<str> = Arc::from(name);
        let def = SymbolDef {
            id,
            frame_binary: encode::symbol_binary(id, &name, price_decimals, size_decimals),
            frame_json: encode::symbol_json(id, &name, price_decimals, size_decimals),
            name: name.clone(),
            price_decimals,
            size_decimals,
        };
        inner.by_name.insert(name, id);
        inner.defs.push(def.clone());
        Ok(def)
    }

    pub fn get(&self, id: SymbolId) -> Option<SymbolDef> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.defs.get(id as usize).cloned()
    }

    pub fn get_by_name(&self, name: &str) -> Option<SymbolDef> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let id = *inner.by_name.get(name)?;
        inner.defs.get(id as usize).cloned()
    }

    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .defs
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every symbol, in id order.
    pub fn all(&self) -> Vec<SymbolDef> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .defs
            .clone()
    }
}

/// The scales and id a feed needs to turn decimal strings into an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub id: SymbolId,
    pub price_decimals: u8,
    pub size_decimals: u8,
}

impl Scale {
    pub fn price(&self, s: &[u8]) -> Result<i64, DecimalError> {
        decimal::parse_scaled(s, self.price_decimals)
    }

    pub fn size(&self, s: &[u8]) -> Result<i64, DecimalError> {
        decimal::parse_scaled(s, self.size_decimals)
    }
}

/// A feed's view of the symbol table, with a private cache of the names it
/// has already interned.
pub struct Normalizer {
    table: Arc<SymbolTable>,
    cache: HashMap<Box<str>, Scale>,
}

impl Normalizer {
    pub fn new(table: Arc<SymbolTable>) -> Self {
        Normalizer {
            table,
            cache: HashMap::new(),
        }
    }

    pub fn table(&self) -> &Arc<SymbolTable> {
        &self.table
    }

    /// The scale of `name`, interning it if this is the first time any feed
    /// names it. The scales are fixed then: at least
    /// [`DEFAULT_DECIMALS`], more if the sample price or size needs more.
    pub fn scale(
        &mut self,
        name: &str,
        price_sample: &[u8],
        size_sample: &[u8],
    ) -> Result<Scale, NormalizeError> {
        if let Some(scale) = self.cache.get(name) {
            return Ok(*scale);
        }
        let pd = decimal::significant_decimals(price_sample)?.max(DEFAULT_DECIMALS);
        let sd = decimal::significant_decimals(size_sample)?.max(DEFAULT_DECIMALS);
        let def = self.table.intern(name, pd, sd)?;
        let scale = Scale {
            id: def.id,
            price_decimals: def.price_decimals,
            size_decimals: def.size_decimals,
        };
        self.cache.insert(name.into(), scale);
        Ok(scale)
    }
}

/// Why a record could not become an update.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NormalizeError {
    #[error("bad decimal: {0}")]
    Decimal(#[from] DecimalError),
    #[error("{0}")]
    Symbol(#[from] SymbolError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_dense() {
        let table = SymbolTable::new();
        let mut a = Normalizer::new(table.clone());
        let mut b = Normalizer::new(table.clone());
        let x = a.scale("BTCUSDT", b"61837.63", b"0.1").unwrap();
        let y = b.scale("ETHUSDT", b"2500.1", b"1").unwrap();
        let x2 = b.scale("BTCUSDT", b"1", b"1").unwrap();
        assert_eq!((x.id, y.id), (0, 1));
        assert_eq!(x, x2);
        assert_eq!(table.len(), 2);
        assert_eq!(&*table.get(1).unwrap().name, "ETHUSDT");
    }

    #[test]
    fn scale_widens_for_fine_first_values() {
        let table = SymbolTable::new();
        let mut n = Normalizer::new(table);
        let s = n.scale("PEPE", b"0.0000012345678", b"100").unwrap();
        assert_eq!((s.price_decimals, s.size_decimals), (13, 8));
        assert_eq!(s.price(b"0.0000012345678"), Ok(12_345_678));
    }

    #[test]
    fn bad_names_are_refused() {
        let table = SymbolTable::new();
        assert_eq!(table.intern("", 8, 8).unwrap_err(), SymbolError::BadName);
        assert_eq!(
            table.intern("a\nb", 8, 8).unwrap_err(),
            SymbolError::BadName
        );
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(table.intern(&long, 8, 8).unwrap_err(), SymbolError::BadName);
    }
}
