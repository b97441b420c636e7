//! The library's ceiling: socketioxide 0.18.9 + axum doing only the routing of the gateway's
//! events. Same wire behaviour as the gateway for what the load generator uses, nothing more:
//!
//! - namespace `/ws`, HS256 JWT from the CONNECT `auth.token` (connect middleware; refusal
//!   `{message: "No token provided" | "Invalid token"}`), socket joins `user:{sub}`, `connected`;
//! - `join_room {roomId}` → join, `joined_room {roomId}`, ack `{ok, roomId}`;
//!   `leave_room {roomId}` → `left_room`;
//! - `message {type: "send_message", data: {roomId, message}}` → `chat_message
//!   {id, seq, roomId, userId, userName, message, timestamp}` to the room (sender included), ack
//!   `{ok, id, seq}`; `seq` from an in-memory counter per room; no storage, no rate limit, no
//!   membership check;
//! - `POST /api/v1/notifications {userId, title, message, type}` (Bearer key from `API_KEYS`) →
//!   `notification {id, title, message, type, timestamp}` to the user's sockets, 201.
//!
//! Env: `PORT` (default 3000), `HOST` (default 127.0.0.1), `JWT_SECRET`, `API_KEYS`.
//! Prints `listening on HOST:PORT` once bound.
//!
//! Experiments for bench/FINDINGS.md (off by default, the benchmark runs without them):
//! `BARE_WS_READ_BUFFER=N` sets engineioxide's websocket read buffer (default 4096);
//! `BARE_COMPACT_REQUEST=1` copies the handshake request's header values and URI into their own
//! small allocations and drops axum's `OriginalUri` before socketioxide keeps the request head
//! (hyper parses them as slices of its 8 KiB read buffer, so keeping any of them keeps the whole
//! buffer alive); `BARE_HTTP1=1` serves with
//! hyper's HTTP/1 connection builder (as the gateway does) instead of `axum::serve`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;

const NS: &str = "/ws";

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    name: Option<String>,
    /// Routing only: the socket joins `tenant:{tenantId}` (the gateway's audience for tenant
    /// events), and there is no presence (the benchmarks' `user_status` count is 0 here).
    #[serde(default, rename = "tenantId")]
    tenant_id: Option<String>,
}

#[derive(Clone)]
struct User {
    id: Arc<str>,
    name: Arc<str>,
    tenant: Option<Arc<str>>,
}

struct Inner {
    key: DecodingKey,
    validation: Validation,
    seqs: Mutex<HashMap<String, u64>>,
    ids: AtomicU64,
    api_keys: Vec<String>,
}

#[derive(Clone)]
struct App(Arc<Inner>);

#[derive(Debug)]
struct Refused(&'static str);
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn authenticate(
    s: SocketRef,
    TryData(auth): TryData<Value>,
    State(app): State<App>,
) -> Result<(), Refused> {
    let token = auth
        .ok()
        .and_then(|a| a.get("token").and_then(Value::as_str).map(str::to_owned))
        .filter(|t| !t.is_empty())
        .ok_or(Refused("No token provided"))?;
    let data = decode::<Claims>(&token, &app.0.key, &app.0.validation)
        .map_err(|_| Refused("Invalid token"))?;
    let c = data.claims;
    if c.sub.is_empty() {
        return Err(Refused("Invalid token"));
    }
    let name: Arc<str> = c.name.unwrap_or_else(|| c.sub.clone()).into();
    s.extensions.insert(User {
        id: c.sub.into(),
        name,
        tenant: c.tenant_id.map(Into::into),
    });
    Ok(())
}

async fn on_connect(s: SocketRef, Extension(user): Extension<User>) {
    s.on("join_room", join_room);
    s.on("leave_room", leave_room);
    s.on("message", message);
    s.join(format!("user:{}", user.id));
    if let Some(t) = &user.tenant {
        s.join(format!("tenant:{t}"));
    }
    let _ = s.emit(
        "connected",
        &json!({ "message": "Connected to WebSocket server", "userId": &*user.id, "connectionId": s.id.to_string() }),
    );
}

fn room_of(v: &Value) -> Option<String> {
    v.get("roomId").and_then(Value::as_str).map(str::to_owned)
}

async fn join_room(s: SocketRef, Data(data): Data<Value>, ack: AckSender) {
    let Some(room) = room_of(&data) else {
        let _ = ack.send(&json!({ "ok": false, "error": { "code": "INVALID_ROOM" } }));
        return;
    };
    let _ = s.emit("joined_room", &json!({ "roomId": room }));
    s.join(room.clone());
    let _ = ack.send(&json!({ "ok": true, "roomId": room }));
}

async fn leave_room(s: SocketRef, Data(data): Data<Value>, ack: AckSender) {
    if let Some(room) = room_of(&data) {
        s.leave(room.clone());
        let _ = s.emit("left_room", &json!({ "roomId": room }));
        let _ = ack.send(&json!({ "ok": true, "roomId": room }));
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
}

async fn message(
    s: SocketRef,
    Data(env): Data<Envelope>,
    ack: AckSender,
    State(app): State<App>,
    Extension(user): Extension<User>,
) {
    if env.kind != "send_message" {
        let _ = ack.send(&json!({ "ok": false, "error": { "code": "UNKNOWN_EVENT" } }));
        return;
    }
    let (Some(room), Some(text)) = (
        room_of(&env.data),
        env.data.get("message").and_then(Value::as_str),
    ) else {
        let _ = ack.send(&json!({ "ok": false, "error": { "code": "INVALID_PAYLOAD" } }));
        return;
    };
    let seq = {
        let mut seqs = app.0.seqs.lock().unwrap_or_else(|e| e.into_inner());
        let n = seqs.entry(room.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let id = app.0.ids.fetch_add(1, Ordering::Relaxed).to_string();
    let msg = json!({
        "id": id,
        "seq": seq,
        "roomId": room,
        "userId": &*user.id,
        "userName": &*user.name,
        "message": text,
        "timestamp": now_rfc3339(),
    });
    let _ = s.within(room).emit("chat_message", &msg).await;
    let _ = ack.send(&json!({ "ok": true, "id": id, "seq": seq }));
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewNotification {
    user_id: String,
    title: String,
    message: String,
    #[serde(rename = "type")]
    kind: String,
}

async fn create_notification(
    AxState((app, io)): AxState<(App, SocketIo)>,
    headers: HeaderMap,
    Json(n): Json<NewNotification>,
) -> (StatusCode, Json<Value>) {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !key.is_some_and(|k| app.0.api_keys.iter().any(|a| a == k)) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": { "code": "UNAUTHORIZED" } })),
        );
    }
    let id = app.0.ids.fetch_add(1, Ordering::Relaxed).to_string();
    let event = json!({
        "id": id, "title": n.title, "message": n.message, "type": n.kind, "timestamp": now_rfc3339(),
    });
    if let Some(ns) = io.of(NS) {
        let _ = ns
            .to(format!("user:{}", n.user_id))
            .emit("notification", &event)
            .await;
    }
    let mut stored = event;
    stored["userId"] = n.user_id.into();
    (StatusCode::CREATED, Json(stored))
}

/// Re-allocates the header values and the URI so that they no longer share hyper's read buffer.
async fn compact_request(req: axum::extract::Request) -> axum::extract::Request {
    let (mut parts, body) = req.into_parts();
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (k, v) in parts.headers.iter() {
        if let Ok(v) = axum::http::HeaderValue::from_bytes(v.as_bytes()) {
            headers.append(k.clone(), v);
        }
    }
    parts.headers = headers;
    if let Ok(uri) = parts.uri.to_string().parse() {
        parts.uri = uri;
    }
    // Axum's router keeps a clone of the URI here, a slice of the same buffer.
    parts.extensions.remove::<axum::extract::OriginalUri>();
    axum::extract::Request::from_parts(parts, body)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("JWT_SECRET").map_err(|_| "JWT_SECRET must be set")?;
    let api_keys: Vec<String> = std::env::var("API_KEYS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 30;
    validation.required_spec_claims.clear();
    let app = App(Arc::new(Inner {
        key: DecodingKey::from_secret(secret.as_bytes()),
        validation,
        seqs: Mutex::new(HashMap::new()),
        ids: AtomicU64::new(1),
        api_keys,
    }));
    let mut builder = SocketIo::builder().with_state(app.clone());
    if let Some(n) = std::env::var("BARE_WS_READ_BUFFER")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder = builder.ws_read_buffer_size(n);
    }
    let (layer, io) = builder.build_layer();
    io.ns(NS, on_connect.with(authenticate));
    let mut router = axum::Router::new()
        .route("/api/v1/notifications", post(create_notification))
        .with_state((app, io))
        .layer(layer);
    if std::env::var("BARE_COMPACT_REQUEST").is_ok_and(|v| v == "1") {
        router = router.layer(axum::middleware::map_request(compact_request));
    }
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    println!("listening on {}", listener.local_addr()?);
    if std::env::var("BARE_HTTP1").is_ok_and(|v| v == "1") {
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let svc = hyper_util::service::TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .with_upgrades();
                let _ = conn.await;
            });
        }
    }
    axum::serve(listener, router).await?;
    Ok(())
}
