//! What a connection subscribes to and what it may: requests
//! (`subscribe`, `unsubscribe`, `ping`) and their replies, the
//! `max_subscriptions` limit (where `*` counts every symbol it covers), and
//! the symbols an access token restricts it to.

use std::collections::HashSet;

use crate::update::{now_ns, SymbolId};
use crate::wire::channel;
use crate::wire::{self, Channels, ErrorCode, Op, Refusal, Request, Symbols};

use super::{Folded, Outbox, Subscriber};

/// A growable set of small integers.
#[derive(Default, Debug, Clone)]
pub(super) struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    pub(super) fn contains(&self, i: SymbolId) -> bool {
        let i = i as usize;
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// The set folded onto 1,024 bits ([`Folded`]).
    pub(super) fn fold(&self) -> Folded {
        let mut folded = Folded::default();
        for (j, &word) in self.words.iter().enumerate() {
            folded.add_word(j, word);
        }
        folded
    }

    /// Returns whether `i` was newly added.
    pub(super) fn insert(&mut self, i: SymbolId) -> bool {
        let i = i as usize;
        if self.words.len() <= i / 64 {
            self.words.resize(i / 64 + 1, 0);
        }
        let was = self.words[i / 64] & (1 << (i % 64)) != 0;
        self.words[i / 64] |= 1 << (i % 64);
        !was
    }

    pub(super) fn remove(&mut self, i: SymbolId) -> bool {
        let i = i as usize;
        match self.words.get_mut(i / 64) {
            Some(w) if *w & (1 << (i % 64)) != 0 => {
                *w &= !(1 << (i % 64));
                true
            }
            _ => false,
        }
    }

    /// Adds every member to `words`, a set of as many words or fewer (the
    /// rest of `self` is left out).
    pub(super) fn add_to(&self, words: &mut [u64]) {
        for (w, o) in words.iter_mut().zip(&self.words) {
            *w |= o;
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = SymbolId> + '_ {
        self.words
            .iter()
            .enumerate()
            .flat_map(|(wi, &w)| Ones(w).map(move |b| (wi * 64 + b) as SymbolId))
    }
}

/// The positions of the ones of a word, lowest first.
pub(super) struct Ones(pub(super) u64);

impl Iterator for Ones {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let b = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(b)
    }
}

/// The symbols an access token restricts a connection to, by name (as the
/// token says) and by id (as the ring says), resolved as symbols appear.
pub(super) struct Allowed {
    names: HashSet<String>,
    ids: BitSet,
    /// Symbol ids below this have been looked up in `names`.
    resolved: usize,
}

impl Subscriber {
    /// Restricts the connection to `names` (an access token's `symbols`
    /// claim): subscribing to another is refused with `forbidden`, and `*`
    /// means every symbol among them.
    pub fn restrict(&mut self, names: HashSet<String>) {
        self.allowed = Some(Allowed {
            names,
            ids: BitSet::default(),
            resolved: 0,
        });
    }

    /// Whether the token allows symbol `id`.
    pub(super) fn allowed(&self, id: SymbolId) -> bool {
        match &self.allowed {
            None => true,
            Some(a) if (id as usize) < a.resolved => a.ids.contains(id),
            // Interned since the last refresh: look it up by name.
            Some(a) => self
                .market
                .symbols
                .get(id)
                .is_some_and(|d| a.names.contains(&*d.name)),
        }
    }

    /// Resolves the allowed names of symbols interned since the last call,
    /// so that `allowed` is a bit test on the hot path.
    pub(super) fn refresh_allowed(&mut self) {
        let Some(a) = &mut self.allowed else {
            return;
        };
        let known = self.market.symbols.len();
        for id in a.resolved..known {
            let id = id as SymbolId;
            if self
                .market
                .symbols
                .get(id)
                .is_some_and(|d| a.names.contains(&*d.name))
            {
                a.ids.insert(id);
            }
        }
        a.resolved = a.resolved.max(known);
    }

    /// Answers one request, queueing the reply (and for a subscribe, the
    /// snapshot) in `out`; a refused request gets an error reply instead.
    pub fn handle(&mut self, req: Request, out: &mut Outbox) {
        if let Err(refusal) = self.request(req, out) {
            // Counted by `request` already.
            out.push(wire::error_reply(&refusal));
        }
    }

    /// [`handle`](Self::handle), but returns a refusal to the caller
    /// instead of queueing it: for the SSE stream, which refuses a bad
    /// subscription with an HTTP status.
    pub fn request(&mut self, req: Request, out: &mut Outbox) -> Result<(), Refusal> {
        let (before, was_idle) = (self.subscribed_count, self.is_idle());
        if self.throttle.is_some() {
            self.now_ms = self.now_ms.max(super::clock_ms());
        }
        let result = match &req.op {
            Op::Ping => {
                out.push(wire::pong_reply(req.id, now_ns()));
                Ok(())
            }
            Op::Subscribe(symbols) => {
                self.subscribe(req.id, symbols, req.channels, req.throttle_ms, out)
            }
            Op::Unsubscribe(symbols) => self.unsubscribe(req.id, symbols, req.channels, out),
            Op::Replay(control) => Err(Refusal::new(
                req.id,
                wire::ErrorCode::UnknownOp,
                format!("{} is a replay session's control (/replay)", control.name()),
            )),
        };
        self.plan_reads();
        let metrics = &self.market.metrics;
        metrics.subscriptions.add(self.subscribed_count as u64);
        metrics.subscriptions.sub(before as u64);
        match (was_idle, self.is_idle()) {
            (true, false) => metrics.subscribers.inc(),
            (false, true) => metrics.subscribers.dec(),
            _ => {}
        }
        if let Err(refusal) = &result {
            self.market.metrics.protocol_error(refusal.code);
        }
        result
    }

    /// Queues an error reply and counts it.
    pub fn refuse(&self, refusal: &Refusal, out: &mut Outbox) {
        self.market.metrics.protocol_error(refusal.code);
        out.push(wire::error_reply(refusal));
    }

    fn resolve(&self, id: Option<u64>, names: &[String]) -> Result<Vec<SymbolId>, Refusal> {
        let mut ids = Vec::with_capacity(names.len());
        let mut unknown = Vec::new();
        for name in names {
            match self.market.symbols.get_by_name(name) {
                Some(def) => ids.push(def.id),
                None => unknown.push(name.as_str()),
            }
        }
        if !unknown.is_empty() {
            return Err(Refusal::new(
                id,
                ErrorCode::UnknownSymbol,
                format!("unknown symbol(s): {}", unknown.join(", ")),
            ));
        }
        Ok(ids)
    }

    fn subscribe(
        &mut self,
        id: Option<u64>,
        symbols: &Symbols,
        channels: Option<Channels>,
        throttle_ms: Option<u16>,
        out: &mut Outbox,
    ) -> Result<(), Refusal> {
        let want = channels.unwrap_or(Channels::DEFAULT);
        let throttle = throttle_ms.unwrap_or(0);
        let was_idle = self.is_idle();
        // Symbols new to `*` join it now, with its channels, so that the
        // ones this request names count as subscribed and take its channels.
        self.follow(self.market.symbols.len() as SymbolId);
        // Symbols already subscribed that this request names (or `*`
        // covers): they may take more channels.
        let named_before: Vec<SymbolId> = match symbols {
            Symbols::All => self.subscribed.iter().collect(),
            Symbols::Names(names) => names
                .iter()
                .filter_map(|n| self.market.symbols.get_by_name(n))
                .map(|d| d.id)
                .filter(|&s| self.subscribed.contains(s))
                .collect(),
        };
        let new = match symbols {
            Symbols::All => self.new_with_all(id)?,
            Symbols::Names(names) => self.new_by_name(id, names)?,
        };
        if matches!(symbols, Symbols::All) {
            self.all_channels.0 |= want.0;
        }
        let all = matches!(symbols, Symbols::All);
        let mut released = self.set_throttle(throttle, all, new.iter().chain(&named_before));
        for &s in &new {
            self.subscribed.insert(s);
        }
        self.subscribed_count += new.len();
        if was_idle {
            // Nothing before now is of interest; the snapshot covers it.
            self.cursor = self.market.ring.tail();
        }
        let mut snapshot = Vec::with_capacity(new.len());
        let (quotes, trades) = (want.has(channel::QUOTES), want.has(channel::TRADES));
        for &s in &new {
            snapshot.extend(self.market.lvc.values(s).in_order(quotes, trades));
            self.add_channels(s, want, &mut snapshot);
        }
        for s in named_before {
            self.add_channels(s, want, &mut snapshot);
        }
        out.push(wire::ack_reply(
            "subscribe",
            id,
            symbols,
            channels,
            throttle_ms,
            snapshot.len(),
        ));
        released.sort_unstable();
        self.send_held(&released, out, false);
        for &s in &new {
            self.define(s, out);
        }
        for p in &snapshot {
            self.send_latest(p, out);
        }
        Ok(())
    }

    /// Gives `symbols` (and with `all`, those `*` takes later) the throttle
    /// `ms` (0: none); returns the ring sequences of what they held under
    /// their old one, to go out first.
    fn set_throttle<'a>(
        &mut self,
        ms: u16,
        all: bool,
        symbols: impl Iterator<Item = &'a SymbolId>,
    ) -> Vec<u64> {
        if ms > 0 && self.throttle.is_none() {
            self.throttle = Some(Box::default());
            self.now_ms = self.now_ms.max(super::clock_ms());
        }
        let mut released = Vec::new();
        if let Some(t) = &mut self.throttle {
            if all {
                t.all_ms = ms;
            }
            for &s in symbols {
                released.extend(t.set(s, ms));
            }
        }
        released
    }

    /// The symbols `*` adds now (every allowed one not yet subscribed),
    /// within the limit; from here on `*` follows symbols as they appear.
    fn new_with_all(&mut self, id: Option<u64>) -> Result<Vec<SymbolId>, Refusal> {
        let limit = self.limits.max_subscriptions;
        self.refresh_allowed();
        let every = self.market.symbols.len() as SymbolId;
        let new: Vec<SymbolId> = (0..every)
            .filter(|&s| self.allowed(s) && !self.subscribed.contains(s))
            .collect();
        if self.subscribed_count + new.len() > limit {
            return Err(Refusal::new(
                id,
                ErrorCode::TooManySymbols,
                format!(
                    "* covers {} symbols; the limit is {limit} per connection: name the symbols instead",
                    self.subscribed_count + new.len()
                ),
            ));
        }
        self.all = true;
        self.all_checked = every;
        Ok(new)
    }

    /// The symbols `names` adds, each once, if the token allows them all and
    /// they stay within the limit.
    fn new_by_name(&mut self, id: Option<u64>, names: &[String]) -> Result<Vec<SymbolId>, Refusal> {
        let limit = self.limits.max_subscriptions;
        if names.len() > limit {
            return Err(wire::too_many_in_request(id, names.len(), limit));
        }
        if let Some(a) = &self.allowed {
            let forbidden: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| !a.names.contains(*n))
                .collect();
            if !forbidden.is_empty() {
                return Err(Refusal::new(
                    id,
                    ErrorCode::Forbidden,
                    format!(
                        "the access token does not allow symbol(s): {}",
                        forbidden.join(", ")
                    ),
                ));
            }
        }
        let ids = self.resolve(id, names)?;
        let mut new: Vec<SymbolId> = ids.into_iter().filter(|&s| !self.wants_symbol(s)).collect();
        new.sort_unstable();
        new.dedup();
        if self.subscribed_count + new.len() > limit {
            return Err(Refusal::new(
                id,
                ErrorCode::TooManySymbols,
                format!(
                    "subscribing to {} more symbol(s) would pass the limit of {limit} per connection",
                    new.len(),
                ),
            ));
        }
        Ok(new)
    }

    fn unsubscribe(
        &mut self,
        id: Option<u64>,
        symbols: &Symbols,
        channels: Option<Channels>,
        out: &mut Outbox,
    ) -> Result<(), Refusal> {
        let drop = channels.unwrap_or(Channels::ALL);
        let ids: Vec<SymbolId> = match symbols {
            Symbols::All => {
                self.all_channels.0 &= !drop.0;
                if self.all_channels.is_empty() {
                    self.all = false;
                    self.all_checked = 0;
                }
                self.subscribed.iter().collect()
            }
            Symbols::Names(names) => {
                let ids = self.resolve(id, names)?;
                // Only dropping a whole symbol ends `*`: dropping a channel
                // leaves the symbol, and `*` goes on taking new ones.
                let removes_a_symbol = ids.iter().any(|&s| self.channels_of(s).0 & !drop.0 == 0);
                if self.all && removes_a_symbol {
                    // From "everything" to "everything known now, but these".
                    self.follow(self.market.symbols.len() as SymbolId);
                    self.all = false;
                    self.all_checked = 0;
                }
                ids
            }
        };
        for s in ids {
            if self.subscribed.contains(s) && self.drop_channels(s, drop) {
                self.subscribed.remove(s);
                self.subscribed_count -= 1;
                if let Some(t) = &mut self.throttle {
                    t.forget(s);
                }
            }
        }
        out.push(wire::ack_reply(
            "unsubscribe",
            id,
            symbols,
            channels,
            None,
            0,
        ));
        Ok(())
    }
}
