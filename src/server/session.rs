//! What a WebSocket connection and an SSE stream share while they serve a
//! subscriber: the market they read, the server's shutdown signal, when the
//! access token expires, the open-sessions gauge, and their part in the
//! shutdown's wait.
//!
//! Shutdown waits the way mini-redis does: every [`Session`] holds a clone
//! of one sender; the server drops its own after the accept loop ends and
//! waits, up to its shutdown timeout, for the channel to close, which it
//! does when the last session ends ([`Drained::wait`]). Nothing polls a
//! gauge.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

use crate::market::Market;
use crate::server::guard::proxy::LogClient;

/// Opens sessions; cloned into whatever accepts them.
#[derive(Clone)]
pub struct Sessions {
    market: Arc<Market>,
    shutdown: watch::Receiver<bool>,
    /// Weak: the server's own sender is the strong one that shutdown drops.
    done: mpsc::WeakSender<()>,
}

/// The server's side of the sessions' completion channel.
pub struct Drained {
    done: mpsc::Sender<()>,
    closed: mpsc::Receiver<()>,
}

/// One subscriber's session, open until dropped: dropping it lowers the
/// gauge and lets go of the completion sender, however the session ends.
pub struct Session {
    pub market: Arc<Market>,
    pub shutdown: watch::Receiver<bool>,
    /// When the access token expires; `None`: never.
    pub expiry: Option<Instant>,
    /// Who the session's log lines name, if it makes its own span.
    pub client: Option<LogClient>,
    /// `None` for a session opened after shutdown dropped the server's
    /// sender: it sees the shutdown signal at once and closes.
    _done: Option<mpsc::Sender<()>>,
}

impl Sessions {
    pub fn new(market: Arc<Market>, shutdown: watch::Receiver<bool>) -> (Sessions, Drained) {
        // Nothing is ever sent: the channel only closes.
        let (done, closed) = mpsc::channel(1);
        let sessions = Sessions {
            market,
            shutdown,
            done: done.downgrade(),
        };
        (sessions, Drained { done, closed })
    }

    /// Opens a session whose access token expires in `expires_in` (never,
    /// if `None` or later than the clock can count).
    pub fn open(&self, expires_in: Option<Duration>) -> Session {
        let metrics = &self.market.metrics;
        metrics.connections.inc();
        metrics.connections_total.inc();
        Session {
            market: Arc::clone(&self.market),
            shutdown: self.shutdown.clone(),
            expiry: expires_in.and_then(|d| Instant::now().checked_add(d)),
            client: None,
            _done: self.done.upgrade(),
        }
    }

    /// Whether the server has been told to shut down.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

impl Session {
    /// Completes when the access token expires; never without one.
    pub fn expired(&self) -> impl Future<Output = ()> + Send + 'static {
        let expiry = self.expiry;
        async move {
            match expiry {
                Some(at) => sleep_until(at).await,
                None => std::future::pending().await,
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.market.metrics.connections.dec();
    }
}

impl Drained {
    /// Waits until every session has ended, or `timeout`; says whether they
    /// all did.
    pub async fn wait(self, timeout: Duration) -> bool {
        let Drained { done, mut closed } = self;
        drop(done);
        tokio::time::timeout(timeout, closed.recv()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::symbols::SymbolTable;

    fn sessions() -> (Sessions, Drained, watch::Sender<bool>) {
        let (market, _writer) = Market::new(16, SymbolTable::new(), Arc::new(Metrics::default()));
        let (tx, rx) = watch::channel(false);
        let (sessions, drained) = Sessions::new(market, rx);
        (sessions, drained, tx)
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_the_last_session_and_no_longer() {
        let (sessions, drained, _tx) = sessions();
        let a = sessions.open(None);
        let b = sessions.open(None);
        assert_eq!(a.market.metrics.connections.get(), 2);
        let ends = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(a);
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(b);
        });
        let started = Instant::now();
        assert!(drained.wait(Duration::from_secs(10)).await);
        // On the paused clock: exactly when the second session ended.
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        ends.await.unwrap();
        assert_eq!(sessions.market.metrics.connections.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_gives_up_at_its_timeout() {
        let (sessions, drained, _tx) = sessions();
        let _stuck = sessions.open(None);
        let started = Instant::now();
        assert!(!drained.wait(Duration::from_secs(3)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_expires_on_time_and_none_never_does() {
        let (sessions, _drained, _tx) = sessions();
        let s = sessions.open(Some(Duration::from_secs(30)));
        let started = Instant::now();
        s.expired().await;
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        let forever = sessions.open(None);
        let waited = tokio::time::timeout(Duration::from_secs(86_400), forever.expired()).await;
        assert!(waited.is_err());
        let far = sessions.open(Some(Duration::MAX));
        assert_eq!(far.expiry, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_opened_after_shutdown_is_not_waited_for() {
        let (sessions, drained, _tx) = sessions();
        assert!(drained.wait(Duration::from_secs(1)).await);
        let late = sessions.open(None);
        assert_eq!(late.market.metrics.connections.get(), 1);
    }
}
