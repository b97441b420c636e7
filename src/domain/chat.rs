//! Chat: sending a message (validate → store durably → deliver → ack), history, and joining a
//! room with replay.
//!
//! All chat writes and replay reads go through one writer task. It commits messages in groups
//! (one transaction, so one fsync, per burst: "durable before ack" without one fsync each), then
//! publishes them in `seq` order, then answers replay requests. Because a replay read runs after
//! every earlier write is committed *and* queued to the fan-out, and its join is queued behind
//! them, a joining socket sees each message exactly once: replayed or live, never both.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::domain::bus::{Bus, FanoutCmd, FanoutSender, JoinReplay};
use crate::domain::error::DomainError;
use crate::domain::events::{BusMessage, ChatMessage, Delivery, Target};
use crate::domain::ids::{RoomKey, UserId};
use crate::domain::store::{NewMessage, Store};
use crate::domain::time::now_rfc3339;

/// Most messages committed in one transaction.
const MAX_BATCH: usize = 1024;

#[derive(Debug, Clone, Copy)]
pub struct ChatLimits {
    pub max_message_len: usize,
    pub max_replay: u32,
}

enum WriterCmd {
    Append {
        msg: NewMessage,
        reply: oneshot::Sender<Result<ChatMessage, DomainError>>,
    },
    /// Answered once everything queued before it is committed and handed to the fan-out.
    Flush(oneshot::Sender<()>),
    Replay {
        socket_id: String,
        key: RoomKey,
        since: i64,
        reply: oneshot::Sender<Result<oneshot::Receiver<bool>, DomainError>>,
    },
}

#[derive(Clone)]
pub struct ChatService {
    // Bounded: a sender waits for room instead of queueing without end; the rate limit keeps
    // honest clients far below it.
    writer: mpsc::Sender<WriterCmd>,
    store: Arc<dyn Store>,
    limits: ChatLimits,
}

/// A queued chat message.
pub struct Pending(oneshot::Receiver<Result<ChatMessage, DomainError>>);

impl Pending {
    /// The stored message, once durable and handed to the fan-out.
    pub async fn stored(self) -> Result<ChatMessage, DomainError> {
        self.0.await.map_err(|_| DomainError::Busy)?
    }
}

/// What a replayed join did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    Yes,
    /// The socket disconnected before it could be joined.
    SocketGone,
}

impl ChatService {
    /// Longest message accepted, in characters (`MAX_MESSAGE_LENGTH`).
    pub fn max_message_len(&self) -> usize {
        self.limits.max_message_len
    }

    /// Starts the writer task. It ends when every `ChatService` clone is dropped, after
    /// finishing what was queued (so a graceful shutdown loses no acknowledged write).
    pub fn start(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        fanout: FanoutSender,
        limits: ChatLimits,
        queue: usize,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue);
        let task = tokio::spawn(writer_loop(rx, store.clone(), bus, fanout, limits));
        (
            Self {
                writer: tx,
                store,
                limits,
            },
            task,
        )
    }

    /// Messages (and replays) waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.writer.max_capacity() - self.writer.capacity()
    }

    /// Validates a message and queues it for storage, in call order. The returned `Pending`
    /// resolves once the message is durable and delivered. The sender's membership is the
    /// caller's to check (socket path) or waived (trusted HTTP API).
    pub async fn submit(
        &self,
        key: RoomKey,
        user_id: UserId,
        user_name: String,
        message: String,
    ) -> Result<Pending, DomainError> {
        let len = message.chars().count();
        if len == 0 || len > self.limits.max_message_len {
            return Err(DomainError::invalid(format!(
                "message must be 1 to {} characters",
                self.limits.max_message_len
            )));
        }
        let msg = NewMessage {
            id: uuid::Uuid::now_v7().to_string(),
            key,
            user_id,
            user_name,
            message,
            timestamp: now_rfc3339(),
        };
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(WriterCmd::Append { msg, reply })
            .await
            .map_err(|_| DomainError::Busy)?;
        Ok(Pending(rx))
    }

    /// `submit`, then wait until the message is durable and delivered.
    pub async fn send(
        &self,
        key: RoomKey,
        user_id: UserId,
        user_name: String,
        message: String,
    ) -> Result<ChatMessage, DomainError> {
        self.submit(key, user_id, user_name, message)
            .await?
            .stored()
            .await
    }

    /// Replays the stored messages after `since` to the socket, then joins it to the room.
    /// Returns once the socket is in the room.
    pub async fn join_with_replay(
        &self,
        socket_id: String,
        key: RoomKey,
        since: i64,
    ) -> Result<Joined, DomainError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(WriterCmd::Replay {
                socket_id,
                key,
                since,
                reply,
            })
            .await
            .map_err(|_| DomainError::Busy)?;
        let joined = rx.await.map_err(|_| DomainError::Busy)??;
        Ok(match joined.await {
            Ok(true) => Joined::Yes,
            _ => Joined::SocketGone,
        })
    }

    /// Waits until every message queued so far is committed (graceful shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(WriterCmd::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stored history: the `limit` most recent messages before `before`, ascending.
    pub async fn history(
        &self,
        key: &RoomKey,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, DomainError> {
        Ok(self.store.messages_before(key, before, limit).await?)
    }
}

pub fn chat_delivery(m: &ChatMessage, key: &RoomKey) -> BusMessage {
    BusMessage::Deliver(Delivery {
        target: Target::Room { key: key.clone() },
        event: "chat_message".into(),
        data: serde_json::to_value(m).unwrap_or(Value::Null),
    })
}

async fn writer_loop(
    mut rx: mpsc::Receiver<WriterCmd>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    fanout: FanoutSender,
    limits: ChatLimits,
) {
    let mut cmds = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut cmds, MAX_BATCH).await > 0 {
        let mut appends = Vec::new();
        let mut replies = Vec::new();
        let mut replays = Vec::new();
        let mut flushes = Vec::new();
        for cmd in cmds.drain(..) {
            match cmd {
                WriterCmd::Append { msg, reply } => {
                    appends.push(msg);
                    replies.push(reply);
                }
                WriterCmd::Flush(done) => flushes.push(done),
                WriterCmd::Replay { .. } => replays.push(cmd),
            }
        }
        if !appends.is_empty() {
            commit_and_publish(&*store, &*bus, &appends, replies).await;
        }
        for cmd in replays {
            if let WriterCmd::Replay {
                socket_id,
                key,
                since,
                reply,
            } = cmd
            {
                let res = replay(&*store, &fanout, socket_id, key, since, limits.max_replay).await;
                let _ = reply.send(res);
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

async fn commit_and_publish(
    store: &dyn Store,
    bus: &dyn Bus,
    batch: &[NewMessage],
    replies: Vec<oneshot::Sender<Result<ChatMessage, DomainError>>>,
) {
    let started = std::time::Instant::now();
    let stored = store.append_messages(batch).await;
    crate::metrics::storage_latency("append_messages", started.elapsed(), stored.is_ok());
    match stored {
        Ok(stored) => {
            for ((m, new), reply) in stored.into_iter().zip(batch).zip(replies) {
                // Delivery before the ack: the sender sees its own message in room order.
                if bus.publish(chat_delivery(&m, &new.key)).await.is_err() {
                    tracing::warn!("fan-out stopped; stored message not delivered live");
                }
                let _ = reply.send(Ok(m));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, count = batch.len(), "storing chat messages failed");
            let msg = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(DomainError::Unavailable(msg.clone())));
            }
        }
    }
}

async fn replay(
    store: &dyn Store,
    fanout: &FanoutSender,
    socket_id: String,
    key: RoomKey,
    since: i64,
    max_replay: u32,
) -> Result<oneshot::Receiver<bool>, DomainError> {
    let started = std::time::Instant::now();
    let read = store.messages_after(&key, since, max_replay + 1).await;
    crate::metrics::storage_latency("messages_after", started.elapsed(), read.is_ok());
    let mut messages = read?;
    let truncated = messages.len() > max_replay as usize;
    messages.truncate(max_replay as usize);
    let (done, rx) = oneshot::channel();
    fanout
        .send(FanoutCmd::JoinReplay(JoinReplay {
            socket_id,
            key,
            messages,
            truncated,
            done,
        }))
        .await
        .map_err(|_| DomainError::Busy)?;
    Ok(rx)
}
