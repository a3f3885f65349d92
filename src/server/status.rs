//! The status endpoints: `/metrics` (Prometheus text) and `/healthz` (JSON:
//! feeds, connections, ring, NATS).

use std::sync::atomic::Ordering::Relaxed;

use hyper::{Response, StatusCode};

use super::routes::{respond, Body};
use super::{AppState, FeedState};
use crate::feed::FeedStats;
use crate::metrics::Counter;
use crate::update::now_ns;
use crate::wire::encode::write_json_str;

pub(super) fn render_metrics(state: &AppState) -> String {
    use std::fmt::Write as _;
    let mut out = state.market.metrics.render();
    let _ = writeln!(
        out,
        "# HELP tickwire_symbols Symbols interned.\n# TYPE tickwire_symbols gauge"
    );
    let _ = writeln!(out, "tickwire_symbols {}", state.market.symbols.len());
    let _ = writeln!(out, "# HELP tickwire_ring_tail Next ring position (updates published).\n# TYPE tickwire_ring_tail counter");
    let _ = writeln!(out, "tickwire_ring_tail {}", state.market.ring.tail());
    type Field = fn(&FeedStats) -> &Counter;
    let counters: [(&str, &str, Field); 11] = [
        ("records", "Records (lines, rows) read by a feed.", |s| {
            &s.records
        }),
        ("updates", "Updates a feed sent to the publisher.", |s| {
            &s.updates
        }),
        (
            "skipped",
            "Records skipped as not quotes or trades (depth, snapshots, notes).",
            |s| &s.skipped,
        ),
        ("rejected", "Malformed records a feed rejected.", |s| {
            &s.rejected
        }),
        ("loops", "Times a looped recording restarted.", |s| &s.loops),
        (
            "reconnects",
            "Times a network feed connected again to its upstream.",
            |s| &s.reconnects,
        ),
        (
            "gaps",
            "Sequence gaps a network feed detected upstream.",
            |s| &s.gaps,
        ),
        (
            "outdated",
            "Upstream messages dropped as not newer than what the feed already published.",
            |s| &s.outdated,
        ),
        (
            "refusals",
            "Subscriptions a network feed's upstream refused.",
            |s| &s.refusals,
        ),
        (
            "book_levels",
            "Order-book levels a feed sent to the publisher (runs of them make book events; not in updates).",
            |s| &s.book_levels,
        ),
        (
            "snapshot_failures",
            "Order-book snapshots a live feed could not fetch from the venue's REST endpoint (retried with backoff).",
            |s| &s.snapshot_failures,
        ),
    ];
    for (metric, help, counter) in counters {
        let name = format!("tickwire_feed_{metric}_total");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for f in &state.feeds {
            let v = counter(&f.stats).get();
            let mut label = Vec::new();
            write_json_str(&mut label, &f.name);
            let _ = writeln!(
                out,
                "{name}{{feed={}}} {v}",
                String::from_utf8_lossy(&label)
            );
        }
    }
    out
}

pub(super) fn healthz(state: &AppState) -> Response<Body> {
    let mut body = Vec::with_capacity(256);
    let mut failed = 0;
    body.extend_from_slice(b"{\"feeds\":[");
    for (i, f) in state.feeds.iter().enumerate() {
        let st = *f.state.lock().unwrap_or_else(|e| e.into_inner());
        failed += usize::from(st == FeedState::Failed);
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"name\":");
        write_json_str(&mut body, &f.name);
        let st = match st {
            FeedState::Running => "running",
            FeedState::Finished => "finished",
            FeedState::Failed => "failed",
        };
        let stats = &f.stats;
        body.extend_from_slice(
            format!(",\"state\":\"{st}\",\"updates\":{}", stats.updates.get()).as_bytes(),
        );
        if stats.network.load(Relaxed) {
            let last = stats.last_message_ns.load(Relaxed);
            let age_ms = if last == 0 {
                "null".to_owned()
            } else {
                (now_ns().saturating_sub(last) / 1_000_000).to_string()
            };
            body.extend_from_slice(
                format!(
                    ",\"connected\":{},\"last_message_age_ms\":{age_ms},\"reconnects\":{},\"gaps\":{}",
                    stats.connected.load(Relaxed),
                    stats.reconnects.get(),
                    stats.gaps.get(),
                )
                .as_bytes(),
            );
        }
        body.push(b'}');
    }
    let healthy = failed < state.feeds.len() && !state.sessions.shutting_down();
    let m = &state.market.metrics;
    body.push(b']');
    if let Some(url) = &state.publish {
        body.extend_from_slice(b",\"publish\":{\"url\":");
        write_json_str(&mut body, url);
        body.extend_from_slice(
            format!(
                ",\"connected\":{},\"reconnects\":{},\"published\":{},\"republished\":{},\"conflated\":{}}}",
                m.nats_publish_connected.get() == 1,
                m.nats_publish_reconnects_total.get(),
                m.nats_published_total.get(),
                m.nats_republished_total.get(),
                m.nats_publish_conflated_total.get(),
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            ",\"status\":\"{}\",\"connections\":{},\"updates\":{},\"uptime_ms\":{}}}\n",
            if healthy { "ok" } else { "unavailable" },
            m.connections.get(),
            m.updates_in_total.get(),
            state.started.elapsed().as_millis()
        )
        .as_bytes(),
    );
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond(status, "application/json", body)
}
