//! The delivery port: domain services publish `BusMessage`s; the bus brings each one to the
//! fan-out of every node (this node's first, without waiting on anything remote).

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::domain::events::{BusMessage, ChatMessage};
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

/// Work for this node's fan-out task, in the order it must happen.
#[derive(Debug)]
pub enum FanoutCmd {
    Bus(BusMessage),
    /// Join a socket to a room after replaying stored messages to it. Queued behind every
    /// delivery of messages the replay contains, so live and replayed never overlap or miss.
    JoinReplay(JoinReplay),
}

#[derive(Debug)]
pub struct JoinReplay {
    pub socket_id: String,
    pub key: RoomKey,
    pub messages: Vec<ChatMessage>,
    pub truncated: bool,
    /// Answered once the socket is in the room (false when the socket had gone).
    pub done: oneshot::Sender<bool>,
}

/// The sending half of the fan-out queue. Bounded: publishers wait when the fan-out falls
/// behind, so memory stays flat and the pressure reaches the senders (who are rate-limited).
pub type FanoutSender = mpsc::Sender<FanoutCmd>;
pub type FanoutReceiver = mpsc::Receiver<FanoutCmd>;

pub fn fanout_queue(capacity: usize) -> (FanoutSender, FanoutReceiver) {
    mpsc::channel(capacity)
}
