//! The live call dashboard: `/dashboard` (the page) and
//! `GET /v1/dashboard/events` (its feed, server-sent events).
//!
//! The feed needs a bearer token: the admin token sees every call and the
//! process (CPU, memory); a tenant's token sees that tenant's calls and
//! figures only, never another's, nor the process. With `server.admin_listen`
//! set, the admin view is served on the admin listener only (as `/metrics`
//! and `/v1/numbers` are); the public listener then takes tenants' tokens. The page asks for the
//! token and sends it in the `Authorization` header (never in a URL, which
//! would reach access logs).
//!
//! Events: one `history` first (the scope's last [`HISTORY`] seconds, oldest
//! first), then one `tick` a second: that second's figures, the live calls
//! (at most [`MAX_LISTED`], oldest first, with their total), and the process
//! for the admin. Figures come from [`crate::runtime::dashboard`].
//!
//! [`HISTORY`]: crate::runtime::dashboard::HISTORY

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::control::{call_json, error, is_admin, tenant};
use crate::runtime::dashboard::Tick;

/// Live calls listed per tick at most (the total is always given).
pub const MAX_LISTED: usize = 200;

/// Whose view a feed is.
#[derive(Debug, Clone)]
enum Scope {
    Admin,
    Tenant(String),
}

impl Scope {
    fn of(s: &AppState, headers: &HeaderMap, admin_here: bool) -> Option<Self> {
        if admin_here && is_admin(s, headers).is_ok() {
            return Some(Self::Admin);
        }
        tenant(s, headers).ok().map(|t| Self::Tenant(t.id.clone()))
    }

    fn tenant(&self) -> Option<&str> {
        match self {
            Self::Admin => None,
            Self::Tenant(t) => Some(t),
        }
    }

    fn second(&self, t: &Tick) -> serde_json::Value {
        let sec = match self {
            Self::Admin => t.all.clone(),
            Self::Tenant(id) => t.of_tenant(id),
        };
        let mut v = serde_json::to_value(sec).unwrap_or_default();
        if let (Self::Admin, Some(o)) = (self, v.as_object_mut()) {
            o.insert("process".into(), serde_json::to_value(t.process).unwrap_or_default());
        }
        v
    }
}

/// One `tick` event's body for `scope`.
fn tick_json(s: &AppState, scope: &Scope, t: &Tick) -> String {
    let calls = s.call.registry.live_calls(scope.tenant());
    let listed: Vec<_> = calls
        .iter()
        .take(MAX_LISTED)
        .map(|(id, d, state)| {
            let mut v = call_json(*id, d, *state);
            if let (Scope::Admin, Some(o)) = (scope, v.as_object_mut()) {
                o.insert("tenant".into(), json!(d.tenant));
            }
            v
        })
        .collect();
    json!({
        "scope": if scope.tenant().is_some() { "tenant" } else { "admin" },
        "second": scope.second(t),
        "calls_total": calls.len(),
        "calls": listed,
    })
    .to_string()
}

/// `GET /v1/dashboard/events` on the public listener: the feed for a
/// tenant, or for the admin unless the admin listener is apart.
pub async fn events(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let admin_here = s.config.server.admin_listen.trim().is_empty();
    feed(s, headers, admin_here)
}

/// The same on the admin listener: the admin token is taken.
pub async fn admin_events(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    feed(s, headers, true)
}

fn feed(s: Arc<AppState>, headers: HeaderMap, admin_here: bool) -> Response {
    let Some(scope) = Scope::of(&s, &headers, admin_here) else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "the admin token or a tenant's token is required");
    };
    let (history, rx) = s.call.dashboard.subscribe();
    // A tick published between the subscription and the history's copy is in both.
    let last = history.last().map_or(0, |t| t.all.t_ms);
    let first = json!({
        "scope": if scope.tenant().is_some() { "tenant" } else { "admin" },
        "seconds": history.iter().map(|t| scope.second(t)).collect::<Vec<_>>(),
    })
    .to_string();
    let first = futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(Event::default().event("history").data(first))
    });
    let ticks = futures_util::stream::unfold((rx, s, scope, last), |(mut rx, s, scope, mut last)| async move {
        let tick = loop {
            rx.changed().await.ok()?;
            let tick = rx.borrow_and_update().clone()?;
            if tick.all.t_ms > last {
                break tick;
            }
        };
        last = tick.all.t_ms;
        let body = tick_json(&s, &scope, &tick);
        Some((Ok(Event::default().event("tick").data(body)), (rx, s, scope, last)))
    });
    use futures_util::StreamExt as _;
    Sse::new(first.chain(ticks)).keep_alive(KeepAlive::default()).into_response()
}

/// `GET /dashboard`: the page (no build step, no external service).
pub async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        include_str!("pages/dashboard.html"),
    )
        .into_response()
}
