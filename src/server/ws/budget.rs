//! The inbound rate's token bucket ([`super::inbound`], "The inbound
//! rate"): every message a client sends is charged to it.

use tokio::time::Instant;

use super::inbound::InboundRate;

/// What the bucket says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Take,
    /// Drop it and tell the client (the first of a run).
    Warn,
    Drop,
    Close,
}

/// The token bucket of the module docs.
#[derive(Debug)]
pub(super) struct Budget {
    pub(super) rate: InboundRate,
    /// Negative: messages owed.
    tokens: f64,
    refilled: Instant,
    /// In a run of dropped messages (told already).
    limited: bool,
}

impl Budget {
    pub(super) fn new(rate: InboundRate, now: Instant) -> Self {
        Budget {
            rate,
            tokens: f64::from(rate.burst),
            refilled: now,
            limited: false,
        }
    }

    pub(super) fn charge(&mut self, now: Instant) -> Verdict {
        let burst = f64::from(self.rate.burst);
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(self.rate.per_sec)).min(burst);
        self.refilled = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            self.limited = false;
            Verdict::Take
        } else if self.tokens < -burst {
            Verdict::Close
        } else if !self.limited {
            self.limited = true;
            Verdict::Warn
        } else {
            Verdict::Drop
        }
    }
}
