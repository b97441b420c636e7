//! Reaps registry entries of connections that died while connecting. A transport that closes
//! while its CONNECT is still in the middleware is gone before the socket joins the namespace,
//! so no disconnect handler ever runs for it; without this its user would keep a phantom
//! connection (counted against `MAX_CONNECTIONS_PER_USER`).

use std::time::Duration;

use socketioxide::SocketIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::operators::BroadcastOperators;

use crate::domain::ids::UserId;
use crate::socket::NAMESPACE;
use crate::socket::deadlines::parse_sid;
use crate::state::AppState;

/// Entries younger than this may belong to a CONNECT still in its middleware (registered, not
/// yet in the namespace: a window of microseconds, without an await).
pub const GRACE: Duration = Duration::from_millis(50);
const EVERY: Duration = Duration::from_secs(10);

pub fn spawn(io: SocketIo, app: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            if let Some(ns) = io.of(NAMESPACE) {
                reap(&ns, &app, None).await;
            }
        }
    })
}

/// Removes the registry entries (of `only`, or all) whose socket is not in the namespace.
pub async fn reap(ns: &BroadcastOperators<LocalAdapter>, app: &AppState, only: Option<&UserId>) {
    let alive = |sid: &str| parse_sid(sid).is_some_and(|sid| ns.get_socket(sid).is_some());
    let reaped = app.connections.reap(only, GRACE, &alive).await;
    // Never in presence: a connection is counted there only once `connected` was sent.
    for conn in &reaped {
        tracing::info!(sid = %conn.socket_id, user = %conn.user, "reaped a connection that closed while connecting");
    }
}
