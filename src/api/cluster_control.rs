//! The control API across nodes: a request for a call this node does not
//! hold goes to the node that does ([`crate::cluster::routing`]), and the
//! requests other nodes route here run exactly as if taken here. The answer
//! is the owner's status and body; when routing fails the error says why
//! (`owner_gone` 503, `owner_timeout` 504, `cluster_unavailable` 503).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::control::{CallOp, error, run_local};
use crate::cluster::routing::{Reply, Request, RouteError};
use crate::cluster::{Cluster, Requests};
use crate::ids::CallId;
use crate::tenant::Tenant;

/// Largest body a routed answer carries back.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Send `op` for the tenant's call `id` to the node holding it.
pub(super) async fn route(s: &Arc<AppState>, t: &Tenant, id: &str, op: CallOp) -> Response {
    let c = s.cluster.as_ref().expect("routing runs in cluster mode");
    let Ok(call) = id.parse::<CallId>() else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such call");
    };
    // A read needs no owner: the call view has it.
    if let CallOp::Get = op {
        return match c.find_call(call).await {
            Ok(Some(r)) if r.tenant == t.id => Json(r.json()).into_response(),
            Ok(_) => not_live(c, call, t).await,
            Err(e) => unavailable(&e.to_string()),
        };
    }
    // Longer than the owner may take itself, so an answer in time is never
    // given up on while the action still happens: a `say` waits up to 3 s for
    // the call (+10 s fetching audio), a `transfer` for the carrier's API.
    let budget = c.route_timeout
        + match &op {
            CallOp::Say(b) if b.has_audio_url() => Duration::from_secs(13),
            CallOp::Say(_) => Duration::from_secs(3),
            CallOp::Transfer(_) => Duration::from_secs(10),
            _ => Duration::ZERO,
        };
    let json = serde_json::to_value(&op).expect("serializes");
    match c.route(&t.id, &t.number, call, json, budget).await {
        Ok(reply) => {
            let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, Json(reply.body)).into_response()
        }
        Err(RouteError::NotFound) => not_live(c, call, t).await,
        Err(RouteError::OwnerGone) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "owner_gone",
            "the node holding the call is gone; the call drops out of the cluster within its heartbeat TTL",
        ),
        Err(RouteError::Timeout) => {
            error(StatusCode::GATEWAY_TIMEOUT, "owner_timeout", "the node holding the call did not answer in time")
        }
        Err(RouteError::Unavailable(e)) => unavailable(&e.to_string()),
    }
}

/// No node holds call `id`: 410 if it ended lately (as its own node would
/// answer), else 404.
async fn not_live(c: &crate::cluster::Cluster, id: CallId, t: &Tenant) -> Response {
    match c.ended_recently(id, &t.id).await {
        Ok(true) => error(StatusCode::GONE, "call_ended", "the call has ended"),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such call"),
    }
}

pub(super) fn unavailable(why: &str) -> Response {
    tracing::warn!(error = %why, "cluster: request for another node's call not routed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster_unavailable",
        "the cluster cannot reach the node holding this call right now; retry",
    )
}

/// Run the requests other nodes route here, each in its own task, and
/// answer them. Runs until the process ends.
pub async fn serve(s: Arc<AppState>, cluster: Arc<Cluster>, mut requests: Requests) {
    while let Some(req) = requests.recv().await {
        let (s, c) = (s.clone(), cluster.clone());
        tokio::spawn(async move {
            let reply = answer(&s, &req).await;
            if let Err(e) = c.reply(&req.reply_to, &reply).await {
                tracing::warn!(error = %e, "cluster: answer to a routed request lost");
            }
        });
    }
}

async fn answer(s: &Arc<AppState>, req: &Request) -> Reply {
    let fail = |status: u16, code: &str, message: &str| Reply {
        id: req.id,
        status,
        body: serde_json::json!({"error": code, "message": message}),
    };
    // The requesting node authenticated the tenant; the number must still be its here.
    let Some(t) = s.tenants.get(&req.number).filter(|t| t.id == req.tenant) else {
        return fail(404, "not_found", "no such call");
    };
    let op: CallOp = match serde_json::from_value(req.op.clone()) {
        Ok(op) => op,
        Err(e) => return fail(400, "invalid", &format!("routed request: {e}")),
    };
    let resp = run_local(s, t, &req.call, op).await;
    let status = resp.status().as_u16();
    let body = match axum::body::to_bytes(resp.into_body(), MAX_REPLY_BYTES).await {
        Ok(b) if b.is_empty() => serde_json::Value::Null,
        Ok(b) => serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::Value::Null,
    };
    Reply { id: req.id, status, body }
}

/// Marks a request one node proxied to another (never proxied again).
pub(super) const PROXIED: &str = "x-callbridge-proxied";

/// Headers a proxied call-data answer keeps.
const KEPT: [axum::http::HeaderName; 5] = [
    axum::http::header::CONTENT_TYPE,
    axum::http::header::CONTENT_LENGTH,
    axum::http::header::CONTENT_RANGE,
    axum::http::header::ACCEPT_RANGES,
    axum::http::header::LAST_MODIFIED,
];

/// An ended call's data (`transcript`, `recording`, or the call itself for
/// `DELETE`) this node does not keep: proxied from the node that does, with
/// the request's own token (the owner checks it) and `Range`. `None`: no
/// other node has it (the caller answers 404).
pub(super) async fn proxy_call_data(
    s: &Arc<AppState>,
    method: axum::http::Method,
    headers: &axum::http::HeaderMap,
    id: &str,
    rest: &str,
) -> Option<Response> {
    let c = s.cluster.as_ref()?;
    if headers.contains_key(PROXIED) {
        return None;
    }
    let call = id.parse::<CallId>().ok()?;
    let (node, url) = match c.data_node(call).await {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(e) => return Some(unavailable(&e.to_string())),
    };
    if url.is_empty() {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "data_node_unreachable",
            format!("node {node} keeps this call's data and is down or advertises no address (cluster.advertise_url)"),
        ));
    }
    let mut req = s.cluster_http.request(method, format!("{url}/v1/calls/{id}{rest}")).header(PROXIED, "1");
    for h in [axum::http::header::AUTHORIZATION, axum::http::header::RANGE, axum::http::header::IF_RANGE] {
        if let Some(v) = headers.get(&h) {
            req = req.header(h, v);
        }
    }
    match req.send().await {
        Ok(resp) => {
            let mut out = Response::builder().status(resp.status().as_u16());
            for h in &KEPT {
                if let Some(v) = resp.headers().get(h) {
                    out = out.header(h, v);
                }
            }
            Some(
                out.body(axum::body::Body::from_stream(resp.bytes_stream()))
                    .unwrap_or_else(|_| error(StatusCode::BAD_GATEWAY, "proxy", "bad answer from the data's node")),
            )
        }
        Err(e) => {
            tracing::warn!(node = %node, error = %e.without_url(), "cluster: call data not fetched from its node");
            Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "data_node_unreachable",
                format!("node {node} keeps this call's data and did not answer"),
            ))
        }
    }
}
