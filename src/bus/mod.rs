//! Node-to-node delivery behind the domain's `Bus` port (its contract is written there).
//! `local` serves one node; `memory` is a cluster of in-process nodes (the cross-node rules,
//! tested fast); `redis` is the cluster bus over Redis or Redis Cluster sharded pub/sub;
//! `ingest` routes the blueprint's `websocket:events` channel into the domain services.

pub mod ingest;
pub mod interest;
pub mod local;
pub mod memory;
pub mod redis;

use serde::{Deserialize, Serialize};

use crate::domain::events::BusMessage;

/// A message between nodes, with the node that published it (so that node drops its echo).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub origin: String,
    pub msg: BusMessage,
}

/// What a node does with a message from the other nodes: its own come back as echoes and are
/// dropped (it delivered them locally already).
pub fn accept(me: &str, env: Envelope) -> Option<BusMessage> {
    if env.origin == me {
        crate::metrics::bus_message("echo");
        return None;
    }
    crate::metrics::bus_message("in");
    Some(env.msg)
}
