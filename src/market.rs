//! What the publisher shares with every connection: the ring of encoded
//! updates, the last-value cache, the symbol table and the wake-up signal.

use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::encode::EncodedUpdate;
use crate::metrics::Metrics;
use crate::protocol::Format;
use crate::ring::{Ring, RingWriter};
use crate::symbols::SymbolTable;
use crate::update::SymbolId;

/// One update as it sits in the ring and the last-value cache: sequenced,
/// stamped, and encoded once in both wire formats.
#[derive(Debug, Clone)]
pub struct Published {
    /// Global sequence; also the entry's position in the ring plus one.
    pub seq: u64,
    pub symbol: SymbolId,
    pub symbol_seq: u64,
    pub frames: EncodedUpdate,
}

impl Published {
    pub fn frame(&self, format: Format) -> &Bytes {
        match format {
            Format::Binary => &self.frames.binary,
            Format::Json => &self.frames.json,
        }
    }
}

/// The newest update of every symbol, for snapshots and for slow clients
/// that catch up.
///
/// Each symbol has its own mutex, held only for the clone of two `Bytes`
/// (two refcount increments): the publisher can be delayed by a reader only
/// for that long, and only on the one symbol the reader is copying. The
/// outer `RwLock` is write-locked only to add a symbol.
#[derive(Default)]
pub struct LastValueCache {
    slots: RwLock<Vec<Mutex<Option<Published>>>>,
}

impl LastValueCache {
    pub fn store(&self, p: &Published) {
        let index = p.symbol as usize;
        {
            let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = slots.get(index) {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
                return;
            }
        }
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        if slots.len() <= index {
            slots.resize_with(index + 1, || Mutex::new(None));
        }
        *slots[index].lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
    }

    pub fn get(&self, symbol: SymbolId) -> Option<Published> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        let slot = slots.get(symbol as usize)?;
        let value = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        value
    }

    /// Number of symbol slots (the highest symbol id seen, plus one).
    pub fn len(&self) -> usize {
        self.slots.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shared half of the data path.
pub struct Market {
    // The ring's own `Arc`: loom's under the `loom` feature.
    pub ring: crate::ring::Arc<Ring<Published>>,
    pub lvc: LastValueCache,
    pub symbols: Arc<SymbolTable>,
    /// Signalled once per batch the publisher appends. Connections that are
    /// idle wait on it; connections that are busy writing are not woken at
    /// all and find the new entries when they next drain the ring.
    pub wakeup: Notify,
    pub metrics: Arc<Metrics>,
}

impl Market {
    /// An empty market with a ring of `ring_capacity` entries (a power of
    /// two), and the ring's one writer, for the [`Publisher`](crate::publish::Publisher).
    pub fn new(
        ring_capacity: usize,
        symbols: Arc<SymbolTable>,
        metrics: Arc<Metrics>,
    ) -> (Arc<Market>, RingWriter<Published>) {
        let (writer, ring) = Ring::with_capacity(ring_capacity);
        let market = Arc::new(Market {
            ring,
            lvc: LastValueCache::default(),
            symbols,
            wakeup: Notify::new(),
            metrics,
        });
        (market, writer)
    }
}
