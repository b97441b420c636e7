//! The one place that emits to other sockets than the caller: it drains the fan-out queue (fed by
//! the bus) and emits to the local sockets of each target, in queue order.

use std::sync::Arc;

use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::operators::BroadcastOperators;
use socketioxide::{BroadcastError, SocketError};

use crate::domain::bus::{FanoutCmd, FanoutReceiver, JoinReplay};
use crate::domain::events::{BusMessage, Delivery, Target};
use crate::domain::ids::{presence_adapter_room, tenant_adapter_room, user_adapter_room};
use crate::socket::deadlines::parse_sid;
use crate::socket::rooms::leave_room;
use crate::socket::session::Session;
use crate::socket::{NAMESPACE, reply};

pub fn spawn(io: SocketIo, rx: FanoutReceiver) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(io, rx))
}

async fn run(io: SocketIo, mut rx: FanoutReceiver) {
    while let Some(cmd) = rx.recv().await {
        let Some(ns) = io.of(NAMESPACE) else {
            // The server is closing: nothing local to deliver to.
            if let FanoutCmd::JoinReplay(j) = cmd {
                let _ = j.done.send(false);
            }
            continue;
        };
        match cmd {
            FanoutCmd::Bus(BusMessage::Deliver(d)) => deliver(ns, d).await,
            FanoutCmd::Bus(BusMessage::DisconnectUser { user }) => {
                let _ = ns.to(user_adapter_room(&user)).disconnect().await;
            }
            FanoutCmd::Bus(BusMessage::RevokeRoom { key, user }) => {
                for s in ns.to(user_adapter_room(&user)).sockets() {
                    // A socket whose token names the room keeps it: only the grant went away.
                    if let Some(session) = s.extensions.get::<Arc<Session>>()
                        && session.is_in(&key)
                        && !session
                            .principal()
                            .rooms
                            .iter()
                            .any(|r| r == key.room.as_str())
                    {
                        leave_room(&s, &session, &key);
                    }
                }
            }
            FanoutCmd::JoinReplay(j) => join_replay(ns, j),
        }
    }
}

async fn deliver(ns: BroadcastOperators<LocalAdapter>, d: Delivery) {
    if d.event == "chat_message" {
        crate::metrics::delivery_latency(&d.data);
    }
    let ops = match &d.target {
        Target::Room { key } => ns.to(key.adapter_room()),
        Target::User { user } => ns.to(user_adapter_room(user)),
        Target::Tenant { tenant } => ns.to(tenant_adapter_room(tenant)),
        Target::Presence { tenant, user } => ns.to(presence_adapter_room(tenant, user)),
        Target::All => ns,
    };
    if let Err(BroadcastError::Socket(errs)) = ops.emit(&d.event, &d.data).await {
        let full = errs
            .iter()
            .filter(|e| matches!(e, SocketError::InternalChannelFull))
            .count();
        if full > 0 {
            tracing::warn!(dropped = full, event = %d.event, "socket buffers full; packets dropped");
            crate::metrics::dropped_packets(full as u64);
        }
    }
}

/// Replays, then joins, so the socket's first live message comes after its last replayed one.
fn join_replay(ns: BroadcastOperators<LocalAdapter>, j: JoinReplay) {
    let found = parse_sid(&j.socket_id).and_then(|sid| {
        let s = ns.get_socket(sid)?;
        let session = s.extensions.get::<Arc<Session>>()?;
        Some((s, session))
    });
    let Some((s, session)) = found else {
        let _ = j.done.send(false);
        return;
    };
    let mut joined = json!({ "roomId": j.key.room });
    if j.truncated {
        joined["truncated"] = true.into();
    }
    reply::emit(&s, "joined_room", &joined);
    for m in &j.messages {
        match serde_json::to_value(m) {
            Ok(v) => reply::emit(&s, "chat_message", &v),
            Err(e) => tracing::error!(error = %e, "cannot encode replayed message"),
        }
    }
    s.join(j.key.adapter_room());
    if session.add_room(j.key.clone()) {
        crate::metrics::room_joined(&j.key);
    }
    let _ = j.done.send(true);
}
