//! Chat: sending a message (validate → store durably → deliver → ack), history, and the
//! stored messages a `join_room { since }` replays.
//!
//! All chat writes go through one writer task. It commits messages in groups (one transaction,
//! so one fsync, per burst: "durable before ack" without one fsync each), then publishes them in
//! `seq` order. A batch the database refuses is retried message by message, so one message the
//! store cannot hold never fails the others. Replay reads do not go through the writer: they
//! run concurrently (at most `max_concurrent_replays` at once), the last one of each room is
//! kept for the joins after it (`replay_cache`), and the fan-out's hold on the joining socket
//! keeps replayed and live messages from overlapping (see `socket/rooms.rs`).

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::domain::bus::Bus;
use crate::domain::error::DomainError;
use crate::domain::events::{BusMessage, ChatMessage, Delivery, Target};
use crate::domain::ids::{RoomKey, UserId};
use crate::domain::replay_cache::{CachedReplay, ReplayCache};
use crate::domain::store::{NewMessage, Store};
use crate::domain::time::now_rfc3339;

/// Most messages committed in one transaction.
const MAX_BATCH: usize = 1024;

#[derive(Debug, Clone, Copy)]
pub struct ChatLimits {
    pub max_message_len: usize,
    pub max_replay: u32,
    /// Replay reads running at once, node-wide (each holds up to `max_replay` messages).
    pub max_concurrent_replays: usize,
}

enum WriterCmd {
    Append {
        msg: NewMessage,
        reply: oneshot::Sender<Result<ChatMessage, DomainError>>,
    },
    /// Answered once everything queued before it is committed and handed to the fan-out.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct ChatService {
    // Bounded: a sender waits for room instead of queueing without end; the rate limit keeps
    // honest clients far below it.
    writer: mpsc::Sender<WriterCmd>,
    store: Arc<dyn Store>,
    /// For what is not stored (typing indicators); stored messages go out from the writer.
    bus: Arc<dyn Bus>,
    limits: ChatLimits,
    replays: Arc<Semaphore>,
    cache: Arc<ReplayCache>,
}

/// A queued chat message.
pub struct Pending(oneshot::Receiver<Result<ChatMessage, DomainError>>);

impl Pending {
    /// The stored message, once durable and handed to the fan-out.
    pub async fn stored(self) -> Result<ChatMessage, DomainError> {
        self.0.await.map_err(|_| DomainError::Busy)?
    }
}

/// Stored messages for a replay, in `seq` order.
#[derive(Debug)]
pub struct Replay {
    pub messages: CachedReplay,
    /// More messages matched than `MAX_REPLAY`: only the first ones are here.
    pub truncated: bool,
}

/// The right to run one replay read (see `ChatService::replay_slot`).
pub struct ReplaySlot {
    _permit: OwnedSemaphorePermit,
    store: Arc<dyn Store>,
    cache: Arc<ReplayCache>,
    max_replay: u32,
}

impl ReplaySlot {
    /// The messages of the room with `since < seq <= upto` (no upper bound when `None`), at
    /// most `MAX_REPLAY` of them, the first ones. Read from the store, and kept for the next
    /// joins of the room (`ChatService::cached_replay`).
    pub async fn read(
        &self,
        key: &RoomKey,
        since: i64,
        upto: Option<i64>,
    ) -> Result<Replay, DomainError> {
        let mut messages = if upto.is_some_and(|u| u <= since) {
            Vec::new()
        } else {
            self.store
                .messages_after(key, since, self.max_replay + 1)
                .await?
        };
        let max = self.max_replay as usize;
        // The first message past `MAX_REPLAY`, if any: the replay is cut if it is due too.
        let over = messages.get(max).map(|m| m.seq);
        messages.truncate(max);
        let all: Arc<[ChatMessage]> = messages.into();
        self.cache.put(key, since, all.clone());
        let end = upto.map_or(all.len(), |u| all.partition_point(|m| m.seq <= u));
        Ok(Replay {
            messages: CachedReplay { all, range: 0..end },
            truncated: over.is_some_and(|seq| upto.is_none_or(|u| seq <= u)),
        })
    }
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
        limits: ChatLimits,
        queue: usize,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue);
        let task = tokio::spawn(writer_loop(rx, store.clone(), bus.clone()));
        (
            Self {
                writer: tx,
                store,
                bus,
                limits,
                replays: Arc::new(Semaphore::new(limits.max_concurrent_replays.max(1))),
                cache: Arc::default(),
            },
            task,
        )
    }

    /// `user_typing { userId, roomId, typing }` to the room. Not stored, not sequenced; the
    /// sender's membership is the caller's to check.
    pub async fn typing(
        &self,
        key: RoomKey,
        user: &UserId,
        typing: bool,
    ) -> Result<(), DomainError> {
        let data = serde_json::json!({ "userId": user, "roomId": key.room, "typing": typing });
        self.bus
            .publish(BusMessage::Deliver(Delivery {
                target: Target::Room { key },
                event: "user_typing".into(),
                data,
            }))
            .await
            .map_err(|_| DomainError::Busy)
    }

    /// Messages waiting for the writer.
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
        // PostgreSQL text cannot hold NUL: refused here rather than failing in the store.
        if message.contains('\0') {
            return Err(DomainError::invalid(
                "message must not contain NUL characters",
            ));
        }
        let msg = NewMessage {
            id: uuid::Uuid::now_v7().to_string(),
            key,
            user_id,
            // A display name (from the token or a trusted backend): made storable, not refused.
            user_name: if user_name.contains('\0') {
                user_name.replace('\0', "\u{FFFD}")
            } else {
                user_name
            },
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

    /// Waits for one of the node's replay slots: replays read concurrently, but only so many
    /// at once, so a reconnect storm cannot hold thousands of replays in memory.
    pub async fn replay_slot(&self) -> Result<ReplaySlot, DomainError> {
        let permit = self
            .replays
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DomainError::Busy)?;
        Ok(ReplaySlot {
            _permit: permit,
            store: self.store.clone(),
            cache: self.cache.clone(),
            max_replay: self.limits.max_replay,
        })
    }

    /// The replay `(since, upto]` from the room's last store read, when it holds all of it:
    /// no slot and no store read needed.
    pub fn cached_replay(&self, key: &RoomKey, since: i64, upto: i64) -> Option<CachedReplay> {
        if upto <= since {
            return None;
        }
        self.cache.get(key, since, upto)
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

type Reply = oneshot::Sender<Result<ChatMessage, DomainError>>;

async fn writer_loop(mut rx: mpsc::Receiver<WriterCmd>, store: Arc<dyn Store>, bus: Arc<dyn Bus>) {
    let mut cmds = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut cmds, MAX_BATCH).await > 0 {
        let mut appends = Vec::new();
        let mut replies = Vec::new();
        let mut flushes = Vec::new();
        for cmd in cmds.drain(..) {
            match cmd {
                WriterCmd::Append { msg, reply } => {
                    appends.push(msg);
                    replies.push(reply);
                }
                WriterCmd::Flush(done) => flushes.push(done),
            }
        }
        if !appends.is_empty() {
            commit_and_publish(&*store, &*bus, appends, replies).await;
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Commits the batch, publishes it in order, answers each sender. A batch the database refused
/// (as opposed to one it could not be reached for) is retried one message at a time, so one bad
/// message fails alone.
async fn commit_and_publish(
    store: &dyn Store,
    bus: &dyn Bus,
    batch: Vec<NewMessage>,
    replies: Vec<Reply>,
) {
    let e = match append(store, &batch).await {
        Ok(stored) => return publish(bus, stored, &batch, replies).await,
        Err(e) => e,
    };
    if batch.len() > 1 && e.is_refusal() {
        tracing::warn!(error = %e, count = batch.len(), "chat batch refused; retrying one by one");
        for (m, reply) in batch.into_iter().zip(replies) {
            let one = std::slice::from_ref(&m);
            match append(store, one).await {
                Ok(stored) => publish(bus, stored, one, vec![reply]).await,
                Err(e) => fail(&e, vec![reply]),
            }
        }
        return;
    }
    fail(&e, replies);
}

async fn append(
    store: &dyn Store,
    batch: &[NewMessage],
) -> Result<Vec<ChatMessage>, crate::domain::store::StoreError> {
    store.append_messages(batch).await
}

async fn publish(
    bus: &dyn Bus,
    stored: Vec<ChatMessage>,
    batch: &[NewMessage],
    replies: Vec<Reply>,
) {
    for ((m, new), reply) in stored.into_iter().zip(batch).zip(replies) {
        // Delivery before the ack: the sender sees its own message in room order.
        if bus.publish(chat_delivery(&m, &new.key)).await.is_err() {
            tracing::warn!("fan-out stopped; stored message not delivered live");
        }
        let _ = reply.send(Ok(m));
    }
}

fn fail(e: &crate::domain::store::StoreError, replies: Vec<Reply>) {
    tracing::error!(error = %e, count = replies.len(), "storing chat messages failed");
    let msg = e.to_string();
    for reply in replies {
        let _ = reply.send(Err(DomainError::Unavailable(msg.clone())));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::domain::events::Notification;
    use crate::domain::ids::{RoomId, TenantId};
    use crate::domain::store::{MarkRead, NewNotification, StoreError};
    use crate::fanout::{FanoutCmd, fanout_queue};

    /// Refuses (as PostgreSQL refuses a NUL) every batch holding a message that says "bad";
    /// records the batch sizes it was asked to append.
    #[derive(Default)]
    struct PickyStore {
        seq: Mutex<i64>,
        batches: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl Store for PickyStore {
        async fn append_messages(
            &self,
            batch: &[NewMessage],
        ) -> Result<Vec<ChatMessage>, StoreError> {
            self.batches.lock().unwrap().push(batch.len());
            if batch.iter().any(|m| m.message == "bad") {
                return Err(StoreError::Refused(
                    "invalid byte sequence for encoding \"UTF8\": 0x00".into(),
                ));
            }
            let mut seq = self.seq.lock().unwrap();
            Ok(batch
                .iter()
                .map(|m| {
                    *seq += 1;
                    ChatMessage {
                        id: m.id.clone(),
                        seq: *seq,
                        room_id: m.key.room.to_string(),
                        user_id: m.user_id.to_string(),
                        user_name: m.user_name.clone(),
                        message: m.message.clone(),
                        timestamp: m.timestamp.clone(),
                    }
                })
                .collect())
        }
        async fn messages_after(
            &self,
            _: &RoomKey,
            _: i64,
            _: u32,
        ) -> Result<Vec<ChatMessage>, StoreError> {
            Ok(vec![])
        }
        async fn messages_before(
            &self,
            _: &RoomKey,
            _: Option<i64>,
            _: u32,
        ) -> Result<Vec<ChatMessage>, StoreError> {
            Ok(vec![])
        }
        async fn insert_notification(
            &self,
            _: &NewNotification,
        ) -> Result<Notification, StoreError> {
            unreachable!("the batch test stores chat messages only")
        }
        async fn mark_notification_read(
            &self,
            _: &UserId,
            _: Option<&TenantId>,
            _: &str,
            _: &str,
        ) -> Result<MarkRead, StoreError> {
            unreachable!("the batch test stores chat messages only")
        }
        async fn list_notifications(
            &self,
            _: &UserId,
            _: bool,
            _: u32,
        ) -> Result<Vec<Notification>, StoreError> {
            unreachable!("the batch test stores chat messages only")
        }
        async fn grant_room(&self, _: &RoomKey, _: &UserId, _: &str) -> Result<bool, StoreError> {
            unreachable!("the batch test stores chat messages only")
        }
        async fn revoke_room(&self, _: &RoomKey, _: &UserId) -> Result<bool, StoreError> {
            unreachable!("the batch test stores chat messages only")
        }
        async fn has_grant(&self, _: &RoomKey, _: &UserId) -> Result<bool, StoreError> {
            unreachable!("the batch test stores chat messages only")
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_refused_batch_is_retried_one_by_one_so_only_the_bad_message_fails() {
        let store = Arc::new(PickyStore::default());
        let (fanout, mut delivered) = fanout_queue(64);
        let bus: Arc<dyn Bus> = Arc::new(crate::bus::local::LocalBus::new(fanout));
        let limits = ChatLimits {
            max_message_len: 100,
            max_replay: 10,
            max_concurrent_replays: 1,
        };
        let (chat, _task) = ChatService::start(store.clone(), bus, limits, 64);
        let key = RoomKey::new(None, RoomId::parse("r").unwrap());
        let user = UserId::parse("u").unwrap();
        // Queued before the writer runs, so the three land in one batch.
        let mut pending = Vec::new();
        for text in ["one", "bad", "two"] {
            let p = chat
                .submit(key.clone(), user.clone(), "U".into(), text.into())
                .await
                .unwrap();
            pending.push(p);
        }
        let mut results = Vec::new();
        for p in pending {
            results.push(p.stored().await);
        }
        assert_eq!(store.batches.lock().unwrap().as_slice(), [3, 1, 1, 1]);
        assert_eq!(results[0].as_ref().unwrap().seq, 1);
        assert!(matches!(results[1], Err(DomainError::Unavailable(_))));
        assert_eq!(results[2].as_ref().unwrap().seq, 2);
        let mut live = Vec::new();
        while let Ok(FanoutCmd::Bus(BusMessage::Deliver(d))) = delivered.try_recv() {
            live.push(d.data["message"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            live,
            ["one", "two"],
            "the good ones are delivered, in order"
        );
    }

    #[tokio::test]
    async fn nul_in_a_message_is_refused_before_the_store() {
        let store = Arc::new(PickyStore::default());
        let (fanout, _rx) = fanout_queue(8);
        let bus: Arc<dyn Bus> = Arc::new(crate::bus::local::LocalBus::new(fanout));
        let limits = ChatLimits {
            max_message_len: 100,
            max_replay: 10,
            max_concurrent_replays: 1,
        };
        let (chat, _task) = ChatService::start(store.clone(), bus, limits, 8);
        let key = RoomKey::new(None, RoomId::parse("r").unwrap());
        let user = UserId::parse("u").unwrap();
        let res = chat
            .submit(key.clone(), user.clone(), "U".into(), "a\0b".into())
            .await;
        assert!(matches!(res, Err(DomainError::InvalidPayload(_))));
        // A NUL in the display name is made storable instead.
        let m = chat
            .send(key, user, "U\0V".into(), "ok".into())
            .await
            .unwrap();
        assert_eq!(m.user_name, "U\u{FFFD}V");
        assert_eq!(store.batches.lock().unwrap().as_slice(), [1]);
    }
}
