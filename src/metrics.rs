//! Every metric the gateway exports, emitted through the named functions here so names and
//! label values stay bounded and in one place. Prometheus text comes from `render`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::ids::RoomKey;

const CONNECTION_BUCKETS: [f64; 9] = [1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0];
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Every family the gateway exports through the recorder: name, Prometheus type, help text.
/// Each is described at install and its `# HELP`/`# TYPE` lines are rendered from the start,
/// before its first sample (PROTOCOL §10): the exporter prints a family only once it has a
/// series, so `render` adds the families it left out. A metric emitted below must be listed
/// here (a unit test checks it).
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "aegisx_cluster_fallback_total",
        "counter",
        "Calls on the shared cluster state (Redis) that failed, decided on this node instead, by port",
    ),
    (
        "websocket_connections_total",
        "gauge",
        "Live Socket.IO connections on this node, by tenant",
    ),
    (
        "websocket_messages_total",
        "counter",
        "Accepted `message` events, by type and tenant",
    ),
    (
        "websocket_connection_duration_seconds",
        "histogram",
        "How long closed connections lasted",
    ),
    (
        "websocket_connect_refused_total",
        "counter",
        "Refused CONNECTs to /ws, by reason",
    ),
    (
        "aegisx_handshakes_refused_total",
        "counter",
        "Engine.IO opens refused with 503 because MAX_HANDSHAKES_IN_PROGRESS were in progress",
    ),
    (
        "aegisx_handshakes_in_progress",
        "gauge",
        "Handshakes between the Engine.IO open and `connected`",
    ),
    (
        "websocket_errors_total",
        "counter",
        "Errors answered to clients, by code",
    ),
    (
        "websocket_rate_limited_total",
        "counter",
        "Events dropped by the per-user rate limit",
    ),
    (
        "websocket_dropped_packets_total",
        "counter",
        "Packets dropped because a socket's send buffer was full",
    ),
    (
        "websocket_delivery_latency_seconds",
        "histogram",
        "From a chat message's creation to its hand-off to the sockets' buffers",
    ),
    (
        "aegisx_http_errors_total",
        "counter",
        "Errors answered by the HTTP API, by code",
    ),
    (
        "aegisx_storage_latency_seconds",
        "histogram",
        "Latency of store calls, by operation and result",
    ),
    (
        "aegisx_bus_connected",
        "gauge",
        "1 when the bus is connected, by bus kind",
    ),
    (
        "aegisx_bus_messages_total",
        "counter",
        "Messages between nodes: published to the other nodes (out), received from them (in), own echoes dropped (echo)",
    ),
    (
        "aegisx_bus_dropped_total",
        "counter",
        "Messages between nodes that were lost, by reason (local delivery is never dropped)",
    ),
    (
        "aegisx_ingest_events_total",
        "counter",
        "Events from the websocket:events channel, by outcome (routed, duplicate: another node took it, malformed, refused, failed)",
    ),
    (
        "aegisx_fanout_queue_depth",
        "gauge",
        "Deliveries waiting in the fan-out queue",
    ),
    (
        "aegisx_chat_write_queue_depth",
        "gauge",
        "Chat messages waiting for the chat writer",
    ),
    (
        "aegisx_http_connections",
        "gauge",
        "HTTP connections being served (long-polling and API; websockets not)",
    ),
    (
        "aegisx_presence_announcements_total",
        "counter",
        "Presence announcements published, by audience (tenant-wide or watchers)",
    ),
    (
        "websocket_slow_consumer_disconnects_total",
        "counter",
        "Sockets disconnected because their send buffer was full",
    ),
    (
        "aegisx_auth_throttled_total",
        "counter",
        "Credentials turned away unchecked because their client IP failed too often, by surface",
    ),
    (
        "aegisx_events_refused_total",
        "counter",
        "Client events refused by the per-connection budgets, by reason",
    ),
    (
        "aegisx_replay_reads_total",
        "counter",
        "Replays of join_room with since, by where they were read from",
    ),
    (
        "aegisx_jwks_up",
        "gauge",
        "1 when the last JWKS fetch succeeded (JWKS mode only)",
    ),
    (
        "aegisx_jwks_keys",
        "gauge",
        "Usable keys held from the JWKS",
    ),
    (
        "aegisx_jwks_fetches_total",
        "counter",
        "JWKS fetches, by result",
    ),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
// Local socket count per room. The room gauge is rendered from it at scrape time, bounded to
// the largest rooms, so rooms that empty out leave no stale series behind.
static ROOMS: OnceLock<Mutex<HashMap<RoomKey, u64>>> = OnceLock::new();
// Live connections per `tenant_id` label, rendered at scrape time like the room gauge. In the
// recorder every tenant would be a label set for good (its key, label vector, value string and
// atomic: about 0.25 KiB, per connection when every user is a tenant of its own, and a series
// left at 0 after its last connection); here a tenant is one map entry while it has one.
static TENANTS: OnceLock<Mutex<HashMap<Box<str>, u64>>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process).
pub fn install() -> anyhow::Result<()> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("websocket_connection_duration_seconds".into()),
            &CONNECTION_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Suffix("latency_seconds".into()), &LATENCY_BUCKETS)?
        .install_recorder()?;
    let _ = HANDLE.set(handle);
    for &(name, kind, help) in FAMILIES {
        match kind {
            "counter" => describe_counter!(name, help),
            "gauge" => describe_gauge!(name, help),
            _ => describe_histogram!(name, help),
        }
    }
    // Label-less series exist from the start, so `rate()` sees their first increment.
    counter!("websocket_rate_limited_total").absolute(0);
    counter!("websocket_dropped_packets_total").absolute(0);
    for audience in ["tenant", "watchers"] {
        counter!("aegisx_presence_announcements_total", "audience" => audience).absolute(0);
    }
    counter!("websocket_slow_consumer_disconnects_total").absolute(0);
    counter!("aegisx_handshakes_refused_total").absolute(0);
    for outcome in ["routed", "duplicate", "malformed", "refused", "failed"] {
        counter!("aegisx_ingest_events_total", "outcome" => outcome).absolute(0);
    }
    for surface in ["socket", "api"] {
        counter!("aegisx_auth_throttled_total", "surface" => surface).absolute(0);
    }
    Ok(())
}

fn tenants() -> std::sync::MutexGuard<'static, HashMap<Box<str>, u64>> {
    TENANTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn rooms() -> std::sync::MutexGuard<'static, HashMap<RoomKey, u64>> {
    ROOMS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The Prometheus text exposition, with the `top_rooms` largest rooms.
pub fn render(top_rooms: usize) -> String {
    let mut out = HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    render_tenants(&mut out);
    add_empty_families(&mut out);
    let mut largest: Vec<(String, u64)> = rooms()
        .iter()
        .map(|(k, n)| (k.metric_label(), *n))
        .collect();
    largest.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    largest.truncate(top_rooms);
    out.push_str(
        "# HELP websocket_room_connections Number of connections per room (largest rooms only)\n",
    );
    out.push_str("# TYPE websocket_room_connections gauge\n");
    for (label, n) in largest {
        out.push_str(&format!(
            "websocket_room_connections{{room_id=\"{}\"}} {n}\n",
            escape_label(&label)
        ));
    }
    out
}

/// `websocket_connections_total`, from the live per-tenant counts (sorted, for stable output).
fn render_tenants(out: &mut String) {
    let mut live: Vec<(String, u64)> = tenants()
        .iter()
        .map(|(t, n)| (escape_label(t), *n))
        .collect();
    if live.is_empty() {
        // `add_empty_families` gives it its `# HELP`/`# TYPE`.
        return;
    }
    live.sort_unstable();
    let name = "websocket_connections_total";
    let help = FAMILIES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or("", |(_, _, h)| *h);
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
    for (tenant, n) in live {
        out.push_str(&format!("{name}{{tenant_id=\"{tenant}\"}} {n}\n"));
    }
    out.push('\n');
}

/// Appends `# HELP`/`# TYPE` for each family the exporter left out for want of a series.
fn add_empty_families(out: &mut String) {
    let rendered: std::collections::HashSet<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let missing: Vec<_> = FAMILIES
        .iter()
        .filter(|(name, _, _)| !rendered.contains(name))
        .collect();
    for (name, kind, help) in missing {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n\n"));
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Queue and bus gauges, set just before a scrape renders them.
pub fn queues(bus: crate::domain::bus::BusState, write_queue_depth: usize) {
    gauge!("aegisx_bus_connected", "bus" => bus.kind).set(if bus.connected { 1.0 } else { 0.0 });
    gauge!("aegisx_fanout_queue_depth").set(bus.fanout_queue_depth as f64);
    gauge!("aegisx_chat_write_queue_depth").set(write_queue_depth as f64);
}

/// An Engine.IO open refused by admission control (`MAX_HANDSHAKES_IN_PROGRESS`).
pub fn handshake_refused() {
    counter!("aegisx_handshakes_refused_total").increment(1);
}

/// Handshakes holding a slot, set just before a scrape renders it.
pub fn handshakes_in_progress(n: usize) {
    gauge!("aegisx_handshakes_in_progress").set(n as f64);
}

/// A message between nodes: `out` (published), `in` (received), `echo` (own, dropped).
pub fn bus_message(direction: &'static str) {
    counter!("aegisx_bus_messages_total", "direction" => direction).increment(1);
}

/// Messages between nodes lost: `queue_full`, `disconnected`, `redis_error`, `lagged`,
/// `undecodable`.
pub fn bus_dropped(reason: &'static str, n: u64) {
    counter!("aegisx_bus_dropped_total", "reason" => reason).increment(n);
}

/// One `websocket:events` event: `routed`, `duplicate`, `malformed`, `refused`, `failed`.
pub fn ingest_event(outcome: &'static str) {
    counter!("aegisx_ingest_events_total", "outcome" => outcome).increment(1);
}

/// HTTP connections being served (long-polling and API included, websockets not).
pub fn http_connections(n: usize) {
    gauge!("aegisx_http_connections").set(n as f64);
}

pub fn connection_opened(tenant: &str) {
    let mut live = tenants();
    match live.get_mut(tenant) {
        Some(n) => *n += 1,
        None => {
            live.insert(tenant.into(), 1);
        }
    }
}

pub fn connection_closed(tenant: &str, lasted: Duration) {
    {
        let mut live = tenants();
        if let Some(n) = live.get_mut(tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.remove(tenant);
            }
        }
    }
    histogram!("websocket_connection_duration_seconds").record(lasted.as_secs_f64());
}

/// A CONNECT refused; `reason` is one of the few refusal messages.
pub fn connect_refused(reason: &str) {
    counter!("websocket_connect_refused_total", "reason" => reason.to_owned()).increment(1);
}

/// An accepted `message` event, by type (`unknown` for unknown types).
pub fn message(kind: &str, tenant: &str) {
    const KNOWN: [&str; 5] = [
        "send_message",
        "typing_start",
        "typing_stop",
        "mark_notification_read",
        "user_status",
    ];
    let kind: &'static str = KNOWN.into_iter().find(|k| *k == kind).unwrap_or("unknown");
    counter!("websocket_messages_total", "type" => kind, "tenant_id" => tenant.to_owned())
        .increment(1);
}

/// A presence announcement, by audience: the whole tenant, or the sockets watching the user.
/// The domain's `Observer`, reporting to the Prometheus recorder.
pub struct Prometheus;

impl crate::domain::observe::Observer for Prometheus {
    fn presence_announced(&self, tenant_wide: bool) {
        presence_announced(tenant_wide);
    }

    fn cluster_fallback(&self, port: crate::domain::observe::Port) {
        cluster_fallback(port.as_str());
    }
}

/// A call on the shared cluster state (Redis) failed and the node counted locally instead.
pub fn cluster_fallback(port: &'static str) {
    counter!("aegisx_cluster_fallback_total", "port" => port).increment(1);
}

pub fn presence_announced(tenant_wide: bool) {
    let audience = if tenant_wide { "tenant" } else { "watchers" };
    counter!("aegisx_presence_announcements_total", "audience" => audience).increment(1);
}

/// An error answered to a client, by wire code.
pub fn error(code: &'static str) {
    counter!("websocket_errors_total", "code" => code).increment(1);
}

/// An error answered by the HTTP API, by code.
pub fn api_error(code: &'static str) {
    counter!("aegisx_http_errors_total", "code" => code).increment(1);
}

pub fn rate_limited() {
    counter!("websocket_rate_limited_total").increment(1);
}

/// A client event refused by the connection's budget: `rate`, `in_flight` or `replay`.
pub fn event_refused(reason: &'static str) {
    counter!("aegisx_events_refused_total", "reason" => reason).increment(1);
}

/// A replay answered from the fan-out's `recent` messages or read from the `store`.
pub fn replay_read(source: &'static str) {
    counter!("aegisx_replay_reads_total", "source" => source).increment(1);
}

/// Packets dropped because a socket's buffer was full (a client that cannot keep up).
pub fn dropped_packets(n: u64) {
    counter!("websocket_dropped_packets_total").increment(n);
}

pub fn storage_latency(op: &'static str, took: Duration, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    histogram!("aegisx_storage_latency_seconds", "op" => op, "result" => result)
        .record(took.as_secs_f64());
}

/// From a chat message's creation to its hand-off to the sockets' buffers.
pub fn delivery_latency(chat_message: &serde_json::Value) {
    use time::{OffsetDateTime, format_description::well_known::Rfc3339};
    let created = chat_message
        .get("timestamp")
        .and_then(|t| t.as_str())
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
    if let Some(created) = created {
        let secs = (OffsetDateTime::now_utc() - created)
            .as_seconds_f64()
            .max(0.0);
        histogram!("websocket_delivery_latency_seconds").record(secs);
    }
}

pub fn room_joined(key: &RoomKey) {
    *rooms().entry(key.clone()).or_default() += 1;
}

pub fn room_left(key: &RoomKey) {
    let mut rooms = rooms();
    if let Some(n) = rooms.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            rooms.remove(key);
        }
    }
}

/// JWKS mode: the series exist from the start (no key yet: `aegisx_jwks_up` is 0).
pub fn jwks_installed() {
    for result in ["ok", "error"] {
        counter!("aegisx_jwks_fetches_total", "result" => result).absolute(0);
    }
    gauge!("aegisx_jwks_up").set(0.0);
    gauge!("aegisx_jwks_keys").set(0.0);
}

/// A JWKS fetch ended; `keys` is how many keys are in use after it (cached ones on failure).
pub fn jwks_fetched(ok: bool, keys: usize) {
    let result = if ok { "ok" } else { "error" };
    counter!("aegisx_jwks_fetches_total", "result" => result).increment(1);
    gauge!("aegisx_jwks_up").set(if ok { 1.0 } else { 0.0 });
    gauge!("aegisx_jwks_keys").set(keys as f64);
}

/// Credentials turned away unchecked because their client IP failed too often; `surface` is
/// `socket` (CONNECT) or `api` (API key).
pub fn auth_throttled(surface: &'static str) {
    counter!("aegisx_auth_throttled_total", "surface" => surface).increment(1);
}

/// Sockets disconnected because their send buffer was full (a client that cannot keep up).
pub fn slow_consumer_disconnects(n: u64) {
    counter!("websocket_slow_consumer_disconnects_total").increment(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name given to `counter!`, `gauge!` or `histogram!` in this file.
    fn emitted() -> Vec<String> {
        let src = include_str!("metrics.rs");
        let mut names = Vec::new();
        for mac in ["counter!(\"", "gauge!(\"", "histogram!(\""] {
            for (i, _) in src.match_indices(mac) {
                let rest = &src[i + mac.len()..];
                if let Some(end) = rest.find('"') {
                    names.push(rest[..end].to_owned());
                }
            }
        }
        names
    }

    #[test]
    fn every_emitted_metric_is_described() {
        let names = emitted();
        assert!(
            names.len() >= 10,
            "the scan found too few metrics: {names:?}"
        );
        for name in names {
            assert!(
                FAMILIES.iter().any(|(n, _, _)| *n == name),
                "{name} is emitted but not listed in FAMILIES"
            );
        }
    }

    #[test]
    fn the_tenant_gauge_counts_live_connections_and_drops_an_emptied_tenant() {
        let (a, b) = ("metrics-test-tenant-a", "metrics-test-tenant-\"b\"");
        connection_opened(a);
        connection_opened(a);
        connection_opened(b);
        connection_closed(a, Duration::ZERO);
        let mut out = String::new();
        render_tenants(&mut out);
        assert!(out.contains("# TYPE websocket_connections_total gauge\n"));
        assert!(out.contains(&format!(
            "websocket_connections_total{{tenant_id=\"{a}\"}} 1\n"
        )));
        assert!(out.contains(
            "websocket_connections_total{tenant_id=\"metrics-test-tenant-\\\"b\\\"\"} 1\n"
        ));
        connection_closed(a, Duration::ZERO);
        connection_closed(b, Duration::ZERO);
        let mut out = String::new();
        render_tenants(&mut out);
        assert!(!out.contains("metrics-test-tenant-"), "{out}");
    }

    #[test]
    fn families_without_a_series_still_get_help_and_type() {
        let mut out =
            "# HELP websocket_errors_total x\n# TYPE websocket_errors_total counter\n".to_owned();
        add_empty_families(&mut out);
        assert_eq!(out.matches("# TYPE websocket_errors_total ").count(), 1);
        for (name, kind, _) in FAMILIES {
            assert!(out.contains(&format!("# HELP {name} ")), "{name}");
            assert!(out.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
        }
    }
}
