//! Cluster mode from outside: two or three real `callbridge` binaries on
//! 127.0.0.1 sharing one real `redis-server` (Debian's, started per test).
//! A number registered on one node is answered on another; a call whose
//! webhook hit node A and whose stream hit node B is listed on A and C, and
//! `hangup` sent to C ends it on B; a killed node's calls leave the view
//! within the TTL and routing to it says `owner_gone`; a Redis restart
//! mid-call leaves the call running and the cluster recovers. With a shared
//! PostgreSQL (Debian's, per test) an ended call's transcript is read on any
//! node even after the node that ran it is gone, and a node's restart ends
//! only the calls it left open.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::FakeBackend;
use common::binary::*;
use common::calls::*;
use common::net::*;
use common::pg::PgServer;
use common::redis::{RedisServer, available};
use serde_json::{Value, json};
use tokio::time::Instant;

const ADMIN: &str = "cluster-admin-token";

/// A node of the cluster at `redis` named `name`, tenant A declared in its
/// config, with fast heartbeats.
async fn node(backend: &FakeBackend, redis: &RedisServer, name: &str) -> Binary {
    node_with(backend, redis, name, "").await
}

/// [`node`] with more config.
async fn node_with(backend: &FakeBackend, redis: &RedisServer, name: &str, more: &str) -> Binary {
    let dir = test_dir(&format!("cluster-{name}"));
    // A Redis with TLS is reached over it (rediss://, the test CA).
    let (url, ca) = if redis.tls.is_some() { redis.tls_url() } else { (redis.url(), String::new()) };
    let extra = format!(
        "[cluster]\nredis_url = \"{url}\"\nredis_ca_file = \"{ca}\"\nnode_id = \"{name}\"\nheartbeat_ms = 200\ncall_ttl_ms = 1500\nadvertise_url = \"http://{{ADDR}}\"\n{more}"
    );
    Binary::start_env(&dir, &tenant_config(&dir, &backend.url(), &extra), &[("CALLBRIDGE_ADMIN_TOKEN", ADMIN)]).await
}

async fn get_json(addr: SocketAddr, path: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new().get(format!("http://{addr}{path}")).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post_json(addr: SocketAddr, path: &str, token: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Poll `f` every 50 ms until it holds, for at most `within`; how long it took.
async fn within<F: AsyncFnMut() -> bool>(within: Duration, what: &str, mut f: F) -> Duration {
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

/// The tenant's calls as node `addr` lists them.
async fn listed(addr: SocketAddr, token: &str) -> Vec<Value> {
    let (status, v) = get_json(addr, "/v1/calls", token).await;
    assert_eq!(status, 200, "{v}");
    v["calls"].as_array().cloned().unwrap_or_default()
}

/// The id of the one call node `addr` lists for the tenant, waiting up to `within_`.
async fn the_listed_call(addr: SocketAddr, token: &str, within_: Duration) -> String {
    let mut id = String::new();
    within(within_, "the node lists the call", async || {
        if let [one] = listed(addr, token).await.as_slice() {
            id = one["call_id"].as_str().unwrap().to_string();
        }
        !id.is_empty()
    })
    .await;
    id
}

/// Register `NUMBER_B` (callback `backend`) on node `addr` with `secret`: the status and body.
async fn register_b(addr: SocketAddr, backend: &FakeBackend, secret: &str) -> (u16, Value) {
    post_json(addr, "/v1/numbers", ADMIN, json!({"number": NUMBER_B, "callback_url": backend.url(), "secret": secret}))
        .await
}

/// The voice webhook on `webhook`, the media stream on `stream`.
async fn call_across(webhook: SocketAddr, stream: SocketAddr, n: u64, to: &str) -> FakeTwilio {
    let url = format!("ws://{stream}/twilio/stream");
    let mut tw = FakeTwilio::connect_signed(&url, n, Some(&stream_signature())).await.expect("upgrade");
    let (status, twiml) = webhook_at(webhook, &voice_params(&tw, to), None).await;
    assert_eq!(status, 200, "{twiml}");
    let token = token_of(&twiml);
    tw.start_with(&[("from", "+15557770000"), ("to", to), ("cb_token", &token)]).await;
    tw
}

/// Say a short sentence, then stream `frames` × 20 ms of silence; the number
/// of bot media frames heard (the bot has no greeting: it answers speech).
async fn keep_talking(tw: &mut FakeTwilio, frames: usize) -> usize {
    media_count(&talk(tw, &ulaw_fixture("caller_short_8k.wav"), frames).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_registered_on_one_node_is_answered_on_the_others_and_its_deletion_reaches_them() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let backend = FakeBackend::start().await;
    let a = node(&backend, &redis, "a").await;
    let b = node(&backend, &redis, "b").await;
    let (status, created) = register_b(a.addr, &backend, "whsec_tenant_b_0123456789").await;
    assert_eq!(status, 201, "{created}");
    let token = created["api_token"].as_str().unwrap().to_string();
    // Visible on B within a second: the admin sees it, its token works, its calls are answered.
    let took = within(Duration::from_secs(1), "the number reaches node b", async || {
        get_json(b.addr, &format!("/v1/numbers/{NUMBER_B}"), ADMIN).await.0 == 200
    })
    .await;
    eprintln!("registration visible on the other node after {took:?}");
    assert_eq!(get_json(b.addr, "/v1/calls", &token).await.0, 200, "the new token works on b");
    let mut tw = call_across(b.addr, b.addr, 21, NUMBER_B).await;
    assert!(keep_talking(&mut tw, 100).await > 0, "b answers the number a registered");
    let started = backend.wait_received(Duration::from_secs(3), |r| r.iter().any(|e| e.kind() == "call.started")).await;
    assert!(started.iter().any(|e| e.kind() == "call.started" && e.body["to"] == NUMBER_B), "b called its backend");
    // The carrier ends the call (Twilio's `stop`).
    let stop = tw.peer.stop();
    tw.send(stop).await;
    tw.closed(Duration::from_secs(5)).await;
    // One node wins a number: b cannot register it again.
    let (status, v) = register_b(b.addr, &backend, "whsec_other_owner_01234567").await;
    assert_eq!(status, 409, "{v}");
    // A node that joins later finds it.
    let c = node(&backend, &redis, "c").await;
    within(Duration::from_secs(2), "a late node syncs the number", async || {
        get_json(c.addr, &format!("/v1/numbers/{NUMBER_B}"), ADMIN).await.0 == 200
    })
    .await;
    let call_on_b =
        started.iter().find(|e| e.kind() == "call.started").unwrap().body["call_id"].as_str().unwrap().to_string();
    let transcript = format!("/v1/calls/{call_on_b}/transcript");
    within(Duration::from_secs(3), "b stored the call", async || get_json(b.addr, &transcript, &token).await.0 == 200)
        .await;
    // Deleted on a (once b's call is over): gone from b and c within a second,
    // and b erases the call data it keeps.
    within(Duration::from_secs(10), "the number is deleted on a", async || {
        let r = reqwest::Client::new()
            .delete(format!("http://{}/v1/numbers/{NUMBER_B}", a.addr))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert!(status == 204 || body.contains("calls_live"), "{status} {body}");
        status == 204
    })
    .await;
    for n in [&b, &c] {
        within(Duration::from_secs(1), "the deletion reaches every node", async || {
            get_json(n.addr, &format!("/v1/numbers/{NUMBER_B}"), ADMIN).await.0 == 404
        })
        .await;
    }
    assert_eq!(get_json(a.addr, "/v1/calls", &token).await.0, 401, "the old token is dead everywhere");
    // b's copy of the call is gone from its own store (the tenant's token is
    // dead, so look in b's SQLite file directly).
    within(Duration::from_secs(3), "b erased the deleted number's call", async || {
        let db = b.dir().join("cb.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        let n: i64 =
            conn.query_row("SELECT COUNT(*) FROM calls WHERE call_id = ?1", [&call_on_b], |r| r.get(0)).unwrap();
        n == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_taken_at_a_and_streamed_to_b_is_listed_on_a_and_c_and_hung_up_from_c() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let backend = FakeBackend::start().await;
    let a = node(&backend, &redis, "a").await;
    let b = node(&backend, &redis, "b").await;
    let c = node(&backend, &redis, "c").await;
    let tok = "tenant-a-token";
    let mut tw = call_across(a.addr, b.addr, 31, NUMBER_A).await;
    assert!(keep_talking(&mut tw, 60).await > 0, "b runs the call a's webhook decided");
    // Listed on every node, owned by b.
    let mut id = String::new();
    for n in [&a, &c, &b] {
        within(Duration::from_secs(2), "the call is listed", async || {
            let calls = listed(n.addr, tok).await;
            match calls.as_slice() {
                [one] if one["node"] == "b" => {
                    id = one["call_id"].as_str().unwrap().to_string();
                    true
                }
                _ => false,
            }
        })
        .await;
    }
    let (status, one) = get_json(c.addr, &format!("/v1/calls/{id}"), tok).await;
    assert_eq!((status, one["node"].as_str()), (200, Some("b")), "{one}");
    assert_eq!(one["to"], NUMBER_A);
    // Its data is not erased from another node while it runs.
    let r = reqwest::Client::new().delete(format!("http://{}/v1/calls/{id}", c.addr)).bearer_auth(tok).send().await;
    assert_eq!(r.unwrap().status().as_u16(), 409, "a call live on b is not erased from c");
    // A token no tenant has reaches nothing.
    assert_eq!(get_json(c.addr, &format!("/v1/calls/{id}"), "not-a-token").await.0, 401);
    // The owner's answer comes back: a bad say is refused by b's own check, an interrupt accepted.
    let (status, v) = post_json(c.addr, &format!("/v1/calls/{id}/say"), tok, json!({})).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid")), "{v}");
    let (status, v) = post_json(c.addr, &format!("/v1/calls/{id}/interrupt"), tok, json!(null)).await;
    assert_eq!((status, v["status"].as_str()), (202, Some("interrupted")), "{v}");
    // Hang up from c: the stream on b closes, the backend hears the call ended.
    let (status, v) = post_json(c.addr, &format!("/v1/calls/{id}/hangup"), tok, json!(null)).await;
    assert_eq!((status, v["status"].as_str()), (202, Some("hanging_up")), "{v}");
    tw.closed(Duration::from_secs(5)).await;
    let ended = backend
        .wait_received(Duration::from_secs(5), |r| {
            r.iter().any(|e| e.kind() == "call.ended" && e.body["call_id"] == id)
        })
        .await;
    let ended = ended.iter().find(|e| e.kind() == "call.ended").unwrap();
    assert_eq!(ended.body["reason"], "hangup", "{}", ended.body);
    // One event stream across the two nodes: call.started (from a) and b's events number on.
    let seqs: Vec<u64> = backend
        .received()
        .iter()
        .filter(|e| e.body["call_id"] == id)
        .map(|e| e.body["seq"].as_u64().unwrap())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=seqs.len() as u64).collect::<Vec<_>>(), "one sequence, no gap or repeat: {seqs:?}");
    // Gone from the view everywhere.
    for n in [&a, &c] {
        within(Duration::from_secs(2), "the ended call leaves the view", async || listed(n.addr, tok).await.is_empty())
            .await;
    }
    // Its transcript and recording, kept by b, are served through any node (proxied, Range kept).
    let (status, tr) = get_json(c.addr, &format!("/v1/calls/{id}/transcript"), tok).await;
    assert_eq!(status, 200, "{tr}");
    assert!(tr["events"].as_array().is_some_and(|e| e.iter().any(|e| e["type"] == "call.ended")), "{tr}");
    let r = reqwest::Client::new()
        .get(format!("http://{}/v1/calls/{id}/recording", a.addr))
        .bearer_auth(tok)
        .header("Range", "bytes=0-43")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.headers()["content-type"], "audio/wav");
    let head = r.bytes().await.unwrap();
    assert_eq!((head.len(), &head[..4]), (44, &b"RIFF"[..]), "the WAV header, from b's disk");
    let (status, _) = get_json(c.addr, &format!("/v1/calls/{id}/transcript"), "not-a-token").await;
    assert_eq!(status, 401, "a token no node knows is refused before anything is proxied");
    // Commands for it now say it ended, on every node, as b itself does.
    for n in [&a, &b, &c] {
        let (status, v) = post_json(n.addr, &format!("/v1/calls/{id}/hangup"), tok, json!(null)).await;
        assert_eq!((status, v["error"].as_str()), (410, Some("call_ended")), "{v}");
    }
    let (status, v) = get_json(c.addr, &format!("/v1/calls/{id}"), tok).await;
    assert_eq!((status, v["error"].as_str()), (410, Some("call_ended")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_calls_leave_the_view_within_the_ttl_and_routing_to_it_says_owner_gone() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let backend = FakeBackend::start().await;
    let a = node(&backend, &redis, "a").await;
    let mut b = node(&backend, &redis, "b").await;
    let tok = "tenant-a-token";
    let mut tw = call_across(b.addr, b.addr, 41, NUMBER_A).await;
    assert!(keep_talking(&mut tw, 40).await > 0);
    let id = the_listed_call(a.addr, tok, Duration::from_secs(2)).await;
    b.signal("KILL");
    b.wait_exit(Duration::from_secs(5));
    let (status, v) = post_json(a.addr, &format!("/v1/calls/{id}/hangup"), tok, json!(null)).await;
    assert_eq!((status, v["error"].as_str()), (503, Some("owner_gone")), "{v}");
    let gone = within(Duration::from_secs(3), "the dead node's call leaves the view", async || {
        listed(a.addr, tok).await.is_empty()
    })
    .await;
    eprintln!("killed node's call left the view after {gone:?} (ttl 1.5 s)");
    let (status, _) = post_json(a.addr, &format!("/v1/calls/{id}/hangup"), tok, json!(null)).await;
    assert_eq!(status, 404, "after the TTL the call is simply unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_call_leaves_the_call_running_and_the_cluster_recovers() {
    if !available() {
        return;
    }
    let mut redis = RedisServer::start();
    let backend = FakeBackend::start().await;
    let a = node(&backend, &redis, "a").await;
    let b = node(&backend, &redis, "b").await;
    let tok = "tenant-a-token";
    let (status, v) = register_b(a.addr, &backend, "whsec_tenant_b_0123456789").await;
    assert_eq!(status, 201, "{v}");
    let mut tw = call_across(a.addr, b.addr, 51, NUMBER_A).await;
    assert!(keep_talking(&mut tw, 40).await > 0);
    let id = the_listed_call(a.addr, tok, Duration::from_secs(2)).await;
    redis.stop();
    // The call goes on: b still answers the caller.
    let heard = media_count(&talk(&mut tw, &ulaw_fixture("caller_short_8k.wav"), 150).await);
    assert!(heard > 0, "the call kept running with Redis down");
    // The cluster says what it cannot do, clearly.
    let (status, v) = get_json(a.addr, "/v1/calls", tok).await;
    assert_eq!((status, v["partial"].as_bool()), (200, Some(true)), "{v}");
    let (status, v) = post_json(a.addr, &format!("/v1/calls/{id}/interrupt"), tok, json!(null)).await;
    assert_eq!((status, v["error"].as_str()), (503, Some("cluster_unavailable")), "{v}");
    assert_eq!(get_json(b.addr, &format!("/v1/calls/{id}"), tok).await.0, 200, "b still controls its own call");
    // Redis back (empty): b's heartbeat rewrites the call, a routes to it again.
    redis.restart();
    let back = within(Duration::from_secs(6), "routing recovers", async || {
        tw.frame(&[0xFF; 160]).await;
        post_json(a.addr, &format!("/v1/calls/{id}/interrupt"), tok, json!(null)).await.0 == 202
    })
    .await;
    eprintln!("routing recovered {back:?} after Redis came back");
    // The number registered over the API survives Redis coming back empty (the nodes restore it).
    within(Duration::from_secs(3), "the number is restored in Redis", async || {
        redis.command("HEXISTS callbridge:numbers +15550002222").unwrap().starts_with(":1")
    })
    .await;
    for n in [&a, &b] {
        assert_eq!(get_json(n.addr, &format!("/v1/numbers/{NUMBER_B}"), ADMIN).await.0, 200);
    }
    let (status, v) = post_json(a.addr, &format!("/v1/calls/{id}/hangup"), tok, json!(null)).await;
    assert_eq!(status, 202, "{v}");
    tw.closed(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_nodes_and_a_dead_nodes_places_come_back_within_the_ttl() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let backend = FakeBackend::start().await;
    let one_each = "[limits]\nmax_calls_per_tenant = 1\n";
    let a = node_with(&backend, &redis, "a", one_each).await;
    let mut b = node_with(&backend, &redis, "b", one_each).await;
    // The tenant's one call: its webhook (and place) taken on a, its stream run on b.
    let mut tw = call_across(a.addr, b.addr, 61, NUMBER_A).await;
    assert!(keep_talking(&mut tw, 20).await > 0);
    // A second call to the same tenant is busy through either node; a has
    // handed the call (and its place) to b by now.
    let stream_a = format!("ws://{}/twilio/stream", a.addr);
    let mut probe = FakeTwilio::connect_signed(&stream_a, 62, Some(&stream_signature())).await.expect("upgrade");
    for n in [&a, &b] {
        let (status, twiml) = webhook_at(n.addr, &voice_params(&probe, NUMBER_A), None).await;
        assert_eq!(status, 200);
        assert!(twiml.contains(r#"<Reject reason="busy"/>"#), "the tenant's limit counts the running call: {twiml}");
    }
    // b dies with the call: its place comes back within the TTL, and a takes a call again.
    b.signal("KILL");
    b.wait_exit(Duration::from_secs(5));
    let mut answered = String::new();
    let freed = within(Duration::from_secs(4), "the dead node's place is released", async || {
        answered = webhook_at(a.addr, &voice_params(&probe, NUMBER_A), None).await.1;
        answered.contains("cb_token")
    })
    .await;
    eprintln!("a killed node's admission place came back after {freed:?} (ttl 1.5 s)");
    // That call runs on a; when it ends its place comes back at once (no TTL wait).
    let token = token_of(&answered);
    probe.start_with(&[("from", "+15557770000"), ("to", NUMBER_A), ("cb_token", &token)]).await;
    assert!(keep_talking(&mut probe, 20).await > 0);
    let stop = probe.peer.stop();
    probe.send(stop).await;
    probe.closed(Duration::from_secs(5)).await;
    let next = FakeTwilio::connect_signed(&stream_a, 64, Some(&stream_signature())).await.expect("upgrade");
    let after_end = within(Duration::from_secs(3), "an ended call's place is released", async || {
        let (_, twiml) = webhook_at(a.addr, &voice_params(&next, NUMBER_A), None).await;
        twiml.contains("cb_token")
    })
    .await;
    assert!(after_end < Duration::from_millis(1500), "released by the call's end, not by the TTL: {after_end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_takes_no_new_calls_finishes_its_own_and_leaves_nothing_in_redis() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let backend = FakeBackend::start().await;
    let a = node(&backend, &redis, "a").await;
    let mut b =
        node_with(&backend, &redis, "b", "[server]\nshutdown_grace_ms = 20000\n[limits]\nmax_calls_per_tenant = 5\n")
            .await;
    let tok = "tenant-a-token";
    let mut tw = call_across(b.addr, b.addr, 71, NUMBER_A).await;
    assert!(keep_talking(&mut tw, 20).await > 0);
    within(Duration::from_secs(2), "a lists b's call", async || listed(a.addr, tok).await.len() == 1).await;
    let keys = redis.command("KEYS *").unwrap();
    assert!(keys.contains("callbridge:call:") && keys.contains("callbridge:slots"), "the call and its place: {keys}");
    b.signal("TERM");
    // Draining: the load balancer sees b out, b takes no new call, its call goes on.
    within(Duration::from_secs(2), "b reports draining", async || b.get("/healthz", None).await == 503).await;
    let probe = FakeTwilio::connect_signed(&format!("ws://{}/twilio/stream", a.addr), 72, Some(&stream_signature()))
        .await
        .expect("upgrade");
    let (_, twiml) = webhook_at(b.addr, &voice_params(&probe, NUMBER_A), None).await;
    assert!(twiml.contains(r#"<Reject reason="busy"/>"#), "a draining node answers busy: {twiml}");
    assert!(keep_talking(&mut tw, 10).await > 0, "the call goes on while b drains");
    let calls = listed(a.addr, tok).await;
    assert_eq!(calls.len(), 1, "still listed while it runs");
    // The backend hangs up through a; b's last call is over, b exits: nothing of it stays in Redis.
    let id = calls[0]["call_id"].as_str().unwrap();
    assert_eq!(post_json(a.addr, &format!("/v1/calls/{id}/hangup"), tok, json!(null)).await.0, 202);
    tw.closed(Duration::from_secs(8)).await;
    b.wait_exit(Duration::from_secs(10));
    let keys = redis.command("KEYS *").unwrap();
    assert!(!keys.contains(":call:") && !keys.contains(":node:b") && !keys.contains(":slots"), "left behind: {keys}");
    assert!(listed(a.addr, tok).await.is_empty());
}

/// Measurement, not a check (run by hand, numbers in BENCHMARKS.md §10):
/// `cargo test --release --test cluster -- --ignored --nocapture measure_`.
/// The added latency of a control request routed to the node holding the
/// call, against the same request sent to that node; and Redis commands per
/// call, by command, over one call's life at the default 1 s heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_shared_postgresql_call_data_outlives_its_node_and_a_restart_ends_only_its_own_calls() {
    if !available() || !common::pg::available() {
        return;
    }
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let store = format!("[storage]\npostgres_url = \"{}\"\n", pg.database("cb_cluster"));
    let backend = FakeBackend::start().await;
    let a = node_with(&backend, &redis, "a", &store).await;
    let mut b = node_with(&backend, &redis, "b", &store).await;
    let tok = "tenant-a-token";
    // A call on b: still running, a refuses to erase it.
    let mut tw = call_across(b.addr, b.addr, 61, NUMBER_A).await;
    assert!(keep_talking(&mut tw, 40).await > 0);
    let id = the_listed_call(a.addr, tok, Duration::from_secs(2)).await;
    let del = |at: SocketAddr, id: String| async move {
        let r = reqwest::Client::new().delete(format!("http://{at}/v1/calls/{id}")).bearer_auth(tok).send().await;
        r.unwrap().status().as_u16()
    };
    assert_eq!(del(a.addr, id.clone()).await, 409, "a call live on b is not erased from a");
    let stop = tw.peer.stop();
    tw.send(stop).await;
    tw.closed(Duration::from_secs(5)).await;
    backend
        .wait_received(Duration::from_secs(5), |r| {
            r.iter().any(|e| e.kind() == "call.ended" && e.body["call_id"] == id)
        })
        .await;
    // The recording is on b's disk: a fetches it from b.
    let rec = reqwest::Client::new()
        .get(format!("http://{}/v1/calls/{id}/recording", a.addr))
        .bearer_auth(tok)
        .header("Range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(rec.status().as_u16(), 206, "the recording comes from b");
    // A second call on b, left open when b is killed.
    let mut tw2 = call_across(b.addr, b.addr, 62, NUMBER_A).await;
    assert!(keep_talking(&mut tw2, 40).await > 0);
    let open = within(Duration::from_secs(3), "b's second call is stored", async || {
        pg.query("cb_cluster", "SELECT call_id FROM callbridge_calls WHERE ended_at IS NULL").len() == 1
    });
    open.await;
    let open_id = pg.query("cb_cluster", "SELECT call_id, node FROM callbridge_calls WHERE ended_at IS NULL");
    assert_eq!(open_id[0][1].as_deref(), Some("b"), "the row names the node that runs the call");
    let open_id = open_id[0][0].clone().unwrap();
    b.signal("KILL");
    b.wait_exit(Duration::from_secs(5));
    drop(tw2);
    // b is gone: its ended call's transcript is still read on a, from the shared store.
    let (status, tr) = get_json(a.addr, &format!("/v1/calls/{id}/transcript"), tok).await;
    assert_eq!(status, 200, "{tr}");
    assert_eq!(tr["reason"], "caller_hangup", "{tr}");
    assert!(tr["events"].as_array().is_some_and(|e| e.iter().any(|e| e["type"] == "turn.user")), "{tr}");
    assert_eq!(get_json(a.addr, &format!("/v1/calls/{id}/transcript"), "not-a-token").await.0, 401);
    // A node that restarts ends only the calls it left open: a's restart leaves b's.
    drop(a);
    let a = node_with(&backend, &redis, "a", &store).await;
    let (status, tr) = get_json(a.addr, &format!("/v1/calls/{open_id}/transcript"), tok).await;
    assert_eq!((status, tr["ended_at_ms"].is_null()), (200, true), "a did not end b's call: {tr}");
    // b comes back under its id: its call is ended as interrupted, the backend told.
    let _b = node_with(&backend, &redis, "b", &store).await;
    let (status, tr) = get_json(a.addr, &format!("/v1/calls/{open_id}/transcript"), tok).await;
    assert_eq!((status, tr["reason"].as_str()), (200, Some("interrupted")), "{tr}");
    backend
        .wait_received(Duration::from_secs(5), |r| {
            r.iter()
                .any(|e| e.kind() == "call.ended" && e.body["call_id"] == open_id && e.body["reason"] == "interrupted")
        })
        .await;
    // Erased through a: rows from the shared store (the recording with them, by b).
    assert_eq!(del(a.addr, id.clone()).await, 204);
    assert_eq!(get_json(a.addr, &format!("/v1/calls/{id}/transcript"), tok).await.0, 404);
    assert!(pg.query("cb_cluster", &format!("SELECT 1 FROM callbridge_call_events WHERE call_id = '{id}'")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_rediss_shares_numbers_and_calls_and_refuses_an_unknown_certificate() {
    if !available() {
        return;
    }
    let redis = RedisServer::start_tls();
    let backend = FakeBackend::start().await;
    let a = node(&backend, &redis, "a").await;
    let b = node(&backend, &redis, "b").await;
    // Commands and the subscription both go over TLS (the nodes know only the TLS port).
    let (status, created) = register_b(a.addr, &backend, "whsec_tenant_b_0123456789").await;
    assert_eq!(status, 201, "{created}");
    within(Duration::from_secs(2), "the number reaches node b over rediss", async || {
        get_json(b.addr, &format!("/v1/numbers/{NUMBER_B}"), ADMIN).await.0 == 200
    })
    .await;
    let mut tw = call_across(b.addr, b.addr, 71, NUMBER_A).await;
    assert!(keep_talking(&mut tw, 40).await > 0);
    the_listed_call(a.addr, "tenant-a-token", Duration::from_secs(2)).await;
    // A node that does not trust the test CA (public roots only) cannot use this Redis.
    let dir = test_dir("cluster-untrusting");
    let extra = format!("[cluster]\nredis_url = \"{}\"\nnode_id = \"c\"\n", redis.tls_url().0);
    let c = Binary::start_env(&dir, &tenant_config(&dir, &backend.url(), &extra), &[("CALLBRIDGE_ADMIN_TOKEN", ADMIN)])
        .await;
    let (status, v) = post_json(
        c.addr,
        "/v1/numbers",
        ADMIN,
        json!({"number": "+15550003333", "callback_url": backend.url(), "secret": "whsec_tenant_c_0123456789"}),
    )
    .await;
    assert_eq!((status, v["error"].as_str()), (503, Some("cluster_unavailable")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand"]
async fn measure_routed_control_latency_and_redis_commands_per_call() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let backend = FakeBackend::start().await;
    // Default heartbeat; the tenant limit on (admission leases counted), the API rate limit off.
    let beat =
        "heartbeat_ms = 1000\ncall_ttl_ms = 5000\n[limits]\nmax_calls_per_tenant = 100\napi_requests_per_second = 0\n";
    let dflt = |name: &str| format!("[cluster]\nredis_url = \"{}\"\nnode_id = \"{name}\"\n{beat}", redis.url());
    let start = async |name: &str| {
        let dir = test_dir(&format!("cluster-m{name}"));
        Binary::start_env(&dir, &tenant_config(&dir, &backend.url(), &dflt(name)), &[("CALLBRIDGE_ADMIN_TOKEN", ADMIN)])
            .await
    };
    let a = start("a").await;
    let b = start("b").await;
    let tok = "tenant-a-token";
    // Both subscribed (each listens on its control channel), so no subscription lands in the counts.
    for n in ["a", "b"] {
        within(Duration::from_secs(3), "the node subscribed", async || {
            redis.command(&format!("PUBSUB NUMSUB callbridge:node:{n}:control")).unwrap().ends_with(":1\r\n")
        })
        .await;
    }
    // Redis commands over one call's life: the webhook on a, the stream on b, 10 s, hangup.
    redis.command("CONFIG RESETSTAT").unwrap();
    let mut tw = call_across(a.addr, b.addr, 81, NUMBER_A).await;
    let t0 = Instant::now();
    keep_talking(&mut tw, 400).await;
    let (_, one) = get_json(b.addr, "/v1/calls", tok).await;
    let id = one["calls"][0]["call_id"].as_str().unwrap().to_string();
    post_json(b.addr, &format!("/v1/calls/{id}/hangup"), tok, json!(null)).await;
    tw.closed(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lived = t0.elapsed();
    let with_call = redis.command("INFO commandstats").unwrap();
    // The same time with no call: what two idle nodes cost.
    redis.command("CONFIG RESETSTAT").unwrap();
    tokio::time::sleep(lived).await;
    let idle = redis.command("INFO commandstats").unwrap();
    let calls_of = |stats: &str| -> Vec<(String, u64)> {
        stats
            .lines()
            .filter_map(|l| {
                let l = l.strip_prefix("cmdstat_")?;
                let (name, rest) = l.split_once(':')?;
                let n = rest.strip_prefix("calls=")?.split(',').next()?.parse().ok()?;
                Some((name.to_string(), n))
            })
            .filter(|(n, _)| !["config", "info", "ping"].contains(&n.as_str()))
            .collect()
    };
    let (w, i) = (calls_of(&with_call), calls_of(&idle));
    let total = |v: &[(String, u64)]| v.iter().map(|(_, n)| n).sum::<u64>();
    eprintln!("redis commands over {lived:?}: with one call {} {w:?}; idle {} {i:?}", total(&w), total(&i));
    eprintln!("=> per call (call minus idle): {}", total(&w) as i64 - total(&i) as i64);
    // Routed vs direct: 300 interrupts each, alternating, on a second call held by b.
    let mut tw = call_across(b.addr, b.addr, 82, NUMBER_A).await;
    keep_talking(&mut tw, 20).await;
    let id = the_listed_call(a.addr, tok, Duration::from_secs(3)).await;
    let client = reqwest::Client::new();
    let (mut direct, mut routed) = (Vec::new(), Vec::new());
    for i in 0..600 {
        let node = if i % 2 == 0 { b.addr } else { a.addr };
        let t = Instant::now();
        let r = client.post(format!("http://{node}/v1/calls/{id}/interrupt")).bearer_auth(tok).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let us = t.elapsed().as_micros() as u64;
        if i % 2 == 0 { direct.push(us) } else { routed.push(us) }
    }
    let pct = |v: &mut Vec<u64>, p: f64| {
        v.sort_unstable();
        v[((v.len() - 1) as f64 * p) as usize]
    };
    eprintln!(
        "interrupt, 300 each: direct p50 {} µs p99 {} µs; routed p50 {} µs p99 {} µs",
        pct(&mut direct, 0.5),
        pct(&mut direct, 0.99),
        pct(&mut routed, 0.5),
        pct(&mut routed, 0.99)
    );
}
