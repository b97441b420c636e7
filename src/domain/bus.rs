//! The delivery port: domain services publish `BusMessage`s; the bus brings each one to the
//! fan-out of every node (this node's first, without waiting on anything remote).

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::domain::events::BusMessage;
use crate::domain::ids::RoomKey;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The local fan-out has stopped (the node is shutting down).
    #[error("the fan-out has stopped")]
    Closed,
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, msg: BusMessage) -> Result<(), BusError>;

    /// What operators see of the bus (`aegisx_bus_*` metrics).
    fn state(&self) -> BusState;
}

#[derive(Debug, Clone, Copy)]
pub struct BusState {
    /// `local` or `redis`.
    pub kind: &'static str,
    /// Whether deliveries reach the other nodes (always true for the local bus).
    pub connected: bool,
    /// Deliveries waiting for this node's fan-out.
    pub fanout_queue_depth: usize,
}

/// Work for this node's fan-out task, in the order it must happen. Joins are applied here, in
/// delivery order, so "which room messages a socket gets" has one exact answer: those the
/// fan-out delivers after it joined.
#[derive(Debug)]
pub enum FanoutCmd {
    Bus(BusMessage),
    /// Join a socket to a room: it gets every room delivery after this point.
    Join(JoinRoom),
    /// Start a join with replay: the socket is counted in the room, but the room's deliveries to
    /// it are held (in order, bounded) until `Release`, while its replay is read elsewhere.
    Hold(JoinRoom),
    /// Emit what was held (skipping what the replay already sent), then join for real.
    Release(Release),
}

#[derive(Debug)]
pub struct JoinRoom {
    pub socket_id: String,
    pub key: RoomKey,
    /// For a `Hold`: the replay starts after this `seq`.
    pub since: i64,
    pub done: oneshot::Sender<Joined>,
}

/// What a `Join` or `Hold` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Joined {
    Yes {
        /// For a `Hold` of a socket already in the room: `Some(seq)` when it has every message
        /// after `seq`, so only older ones need replaying. `None`: replay as for a new member.
        had_after: Option<i64>,
        /// For a `Hold`: the whole replay (`chat_message` payloads), when the fan-out's recent
        /// messages of the room cover it, so no store read is needed.
        recent: Option<Vec<serde_json::Value>>,
    },
    /// The socket is gone (disconnected, or closing).
    SocketGone,
}

#[derive(Debug)]
pub struct Release {
    pub socket_id: String,
    pub key: RoomKey,
    /// `None`: drop the hold and the membership (the join was refused after all).
    pub join: Option<ReleaseJoin>,
    pub done: oneshot::Sender<Released>,
}

#[derive(Debug, Clone, Copy)]
pub struct ReleaseJoin {
    /// Held `chat_message`s with `seq <= skip_upto` were replayed (or were the client's already).
    pub skip_upto: i64,
    /// What the socket has of the room once the held messages are out; `None`: only what the
    /// fan-out delivered from the hold on.
    pub has_after: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    Joined,
    SocketGone,
    /// The user lost access while the replay was read (a revoke reached the fan-out).
    Revoked,
    /// More room deliveries arrived during the hold than a socket buffers: the socket was
    /// disconnected, as any client that cannot keep up.
    Overflowed,
}

/// The sending half of the fan-out queue. Bounded: publishers wait when the fan-out falls
/// behind, so memory stays flat and the pressure reaches the senders (who are rate-limited).
pub type FanoutSender = mpsc::Sender<FanoutCmd>;
pub type FanoutReceiver = mpsc::Receiver<FanoutCmd>;

pub fn fanout_queue(capacity: usize) -> (FanoutSender, FanoutReceiver) {
    mpsc::channel(capacity)
}
