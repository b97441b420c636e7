//! The fan-out's queue and its commands. This is the transport side of delivery: the bus puts
//! deliveries here (local ones, and those other nodes sent), and the Socket.IO adapter puts the
//! joins it needs applied in delivery order. The domain never sees it.

use tokio::sync::{mpsc, oneshot};

use crate::domain::events::BusMessage;
use crate::domain::ids::RoomKey;

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
    /// Deliveries from other nodes may have been lost (the bus lost its connection, or fell
    /// behind): what the fan-out knows of "everything up to `seq` was delivered" no longer
    /// holds, so it forgets it (recent messages, sockets' `HasAfter`) and replays read the store.
    Gap,
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
        /// For a `Hold`: the replay must reach this `seq` (`had_after` for a member, else the
        /// last this fan-out had delivered of the room); later messages are held. `None`: not
        /// known (the room is not tracked), so the replay must be read up to the end.
        upto: Option<i64>,
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
    /// Held `chat_message`s with `seq <= skip_upto` were replayed (or were the client's already):
    /// the join's high-water mark.
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

/// Whether a delivery held during a join goes out at release: not when it is a chat message
/// the replay already gave (`seq <= skip_upto`). Other events of the room always go out.
pub fn passes_mark(seq: Option<i64>, skip_upto: i64) -> bool {
    seq.is_none_or(|s| s > skip_upto)
}

/// The sending half of the fan-out queue. Bounded: publishers wait when the fan-out falls
/// behind, so memory stays flat and the pressure reaches the senders (who are rate-limited).
pub type FanoutSender = mpsc::Sender<FanoutCmd>;
pub type FanoutReceiver = mpsc::Receiver<FanoutCmd>;

pub fn fanout_queue(capacity: usize) -> (FanoutSender, FanoutReceiver) {
    mpsc::channel(capacity)
}
