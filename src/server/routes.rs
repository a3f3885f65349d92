//! Routing a request that passed the head gate: `/ws`, `/sse`, `/metrics`,
//! `/healthz` and the dashboard's files; the Origin and token checks that
//! `/ws` and `/sse` share; a trusted proxy's requests as its client's.

use crate::server::guard::proxy::{ConnectionClient, LogClient};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::Notify;

use super::status::{healthz, render_metrics};
use super::upgrade::upgrade;
use super::{poll, replay, replay_ws, sse, web, AppState};
use crate::metrics::Labelled;
use crate::server::guard::access::{self, Grant};
use crate::server::guard::admission::Admitted;
use crate::server::guard::auth::AuthError;
use crate::server::guard::head_gate::HttpRefusal;

/// Routes a request a trusted proxy passed on, as its client's: the
/// connection is attributed to the client its `X-Forwarded-For` names (so
/// that the per-IP limits count it), and the request's log lines carry
/// that client.
pub(super) fn forwarded(
    req: Request<Incoming>,
    (hop, conn): (std::net::IpAddr, ConnectionClient),
    state: &Arc<AppState>,
    admitted: Arc<Admitted>,
    close_connection: Arc<Notify>,
) -> Response<Body> {
    let values = req.headers().get_all("x-forwarded-for");
    let client = state
        .trusted_proxies
        .forwarded_client(hop, values.iter().map(|v| v.as_bytes()));
    tracing::info_span!("req", client = %client).in_scope(|| match admitted.attribute(client) {
        Ok(()) => {
            let who = LogClient {
                conn,
                forwarded: Some(client),
            };
            route(req, state, (admitted, who), close_connection)
        }
        Err(refused) => {
            tracing::debug!(?refused, "request refused");
            let (status, retry_after, reason) = refused.answer(state.admission.limits());
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            let mut r = respond(status, "text/plain", format!("{reason}\n"));
            let h = r.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    })
}

/// Answers a request head the [`HeadGate`] refused: its status, a
/// one-line reason, and the end of the connection.
pub(super) fn refuse_head(state: &AppState, refusal: HttpRefusal) -> Response<Body> {
    state.market.metrics.http_rejection(refusal);
    tracing::debug!(
        reason = HttpRefusal::REASONS[Labelled::index(refusal)],
        "refused a request head ({})",
        refusal.status().as_u16()
    );
    let mut r = respond(
        refusal.status(),
        "text/plain",
        format!("{}\n", refusal.reason()),
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

pub(super) type Body = Either<Full<Bytes>, sse::EventStream>;

pub(super) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(body.into())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub(super) fn route(
    req: Request<Incoming>,
    state: &Arc<AppState>,
    (admitted, who): (Arc<Admitted>, LogClient),
    close_connection: Arc<Notify>,
) -> Response<Body> {
    match req.uri().path() {
        "/ws" => upgrade(req, state, false, (admitted, who)),
        "/echo" if state.echo => upgrade(req, state, true, (admitted, who)),
        "/replay" => replay_ws::upgrade(req, state, admitted),
        "/sse" => {
            let grant = match admit(&req, state) {
                Ok(grant) => grant,
                Err(refused) => return *refused,
            };
            match sse::open(
                req.method(),
                req.uri(),
                req.headers(),
                &state.market,
                *state.connection,
                grant,
                sse::StreamControl {
                    sessions: state.sessions.clone(),
                    close_connection,
                },
            ) {
                Ok(r) => {
                    let mut r = r.map(Either::Right);
                    // An allowed cross-origin page may read the stream.
                    if let Some(origin) = req.headers().get(header::ORIGIN) {
                        let h = r.headers_mut();
                        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                        h.insert(header::VARY, HeaderValue::from_static("Origin"));
                    }
                    r
                }
                Err(e) => respond(e.status(), "text/plain", format!("{e}\n")),
            }
        }
        "/poll" => poll_route(&req, state),
        "/recordings" | "/replay.ndjson" => {
            if let Err(refused) = admit(&req, state) {
                return *refused;
            }
            if req.uri().path() == "/recordings" {
                replay::recordings(req.method(), state)
            } else {
                replay::ndjson(req.method(), req.uri(), state, admitted.ip())
            }
        }
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            render_metrics(state),
        ),
        "/healthz" => healthz(state),
        path => match web::asset(path) {
            Some((content_type, body)) if req.method() == Method::GET => {
                respond(StatusCode::OK, content_type, Bytes::from_static(body))
            }
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        },
    }
}

/// `/poll`: the Origin and token checks, then the answer (or its
/// refusal).
fn poll_route(req: &Request<Incoming>, state: &Arc<AppState>) -> Response<Body> {
    let grant = match admit(req, state) {
        Ok(grant) => grant,
        Err(refused) => return *refused,
    };
    let answer = poll::open(
        req.method(),
        req.uri(),
        &state.market,
        *state.connection,
        grant,
        &state.sessions,
    );
    match answer {
        Ok(r) => {
            let mut r = r.map(Either::Right);
            // An allowed cross-origin page may read the answer.
            if let Some(origin) = req.headers().get(header::ORIGIN) {
                let h = r.headers_mut();
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                h.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
            r
        }
        Err(poll::PollError(status, reason)) => {
            respond(status, "text/plain", format!("{reason}\n"))
        }
    }
}

/// Checks a request for `/ws` or `/sse` against the Origin policy (403)
/// and, when auth is on, its access token (401); returns what the token
/// allows. The refusal is boxed: a cold path, and a large type.
pub(super) fn admit(
    req: &Request<Incoming>,
    state: &AppState,
) -> Result<Grant, Box<Response<Body>>> {
    let metrics = &state.market.metrics;
    if let Err(e) = state.origins.check(req.headers()) {
        metrics.origin_rejections_total.inc();
        tracing::info!(origin = %e.0, path = req.uri().path(), "refused a cross-origin request (403)");
        let refused = respond(StatusCode::FORBIDDEN, "text/plain", format!("{e}\n"));
        return Err(Box::new(refused));
    }
    access::authorize(state.auth.as_ref(), req.headers(), req.uri()).map_err(|e| {
        metrics.auth_rejection(e);
        tracing::info!(
            reason = e.name(),
            path = req.uri().path(),
            "refused an access token (401)"
        );
        Box::new(refuse_token(e))
    })
}

/// 401 with the RFC 6750 challenge.
pub(super) fn refuse_token(e: AuthError) -> Response<Body> {
    let mut r = respond(StatusCode::UNAUTHORIZED, "text/plain", format!("{e}\n"));
    if let Ok(v) = HeaderValue::from_str(&access::www_authenticate(e)) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}
