//! Client message ids: a client that resends a `send_message` (its ack was lost to a
//! disconnect) gets the original `{ id, seq }` back instead of a second stored copy.
//!
//! Remembered per (tenant, room, user, client id) for a bounded window and a bounded number of
//! entries, in this node's memory: a resend reaches the same node after a reconnect in the
//! common case (one node, or sticky sessions). The oldest entries are forgotten first when the
//! table is full, so memory stays bounded whatever clients send.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::domain::error::DomainError;
use crate::domain::ids::{RoomKey, UserId};

/// Longest client message id, in characters.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// What the original send was acknowledged with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub id: String,
    pub seq: i64,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    room: RoomKey,
    user: UserId,
    client_id: String,
}

enum Entry {
    /// The first send is being stored; `None` until it is, and the sender dropped if it failed.
    InFlight(watch::Receiver<Option<Sent>>),
    Done(Sent),
}

struct Table {
    entries: HashMap<Key, (u64, Entry)>,
    /// Insertion order with each entry's generation, so a re-inserted key is not evicted by its
    /// predecessor's slot.
    order: VecDeque<(Instant, u64, Key)>,
    next_gen: u64,
}

pub struct Dedupe {
    table: Mutex<Table>,
    window: Duration,
    capacity: usize,
}

/// The outcome of `claim`.
pub enum Claim<'a> {
    /// A first send: store it, then `complete` the guard (dropping it forgets the id).
    First(Guard<'a>),
    /// A resend of a stored message.
    Resent(Sent),
}

/// Held while the first send of an id is being stored.
pub struct Guard<'a> {
    dedupe: &'a Dedupe,
    key: Key,
    generation: u64,
    tx: Option<watch::Sender<Option<Sent>>>,
}

impl Guard<'_> {
    pub fn complete(mut self, sent: Sent) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(sent.clone()));
        }
        let mut t = self.dedupe.lock();
        if let Some((g, entry)) = t.entries.get_mut(&self.key)
            && *g == self.generation
        {
            *entry = Entry::Done(sent);
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // Not completed: the send failed (or was cancelled), so a retry must be stored anew.
        if self.tx.is_some() {
            let mut t = self.dedupe.lock();
            if t.entries
                .get(&self.key)
                .is_some_and(|(g, _)| *g == self.generation)
            {
                t.entries.remove(&self.key);
            }
        }
    }
}

/// A client message id from the `clientMessageId` field: absent is `None`; present, a string
/// of 1 to `MAX_CLIENT_ID_LEN` characters.
pub fn parse_client_id(v: Option<&serde_json::Value>) -> Result<Option<String>, DomainError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s))
            if !s.is_empty() && s.chars().count() <= MAX_CLIENT_ID_LEN =>
        {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(DomainError::invalid(format!(
            "clientMessageId must be a string of 1 to {MAX_CLIENT_ID_LEN} characters"
        ))),
    }
}

impl Dedupe {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            table: Mutex::new(Table {
                entries: HashMap::new(),
                order: VecDeque::new(),
                next_gen: 0,
            }),
            window,
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries remembered now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Claims `client_id` for this user in this room. A resend that arrives while the first
    /// send is still being stored waits for it; if that one fails, the resend becomes the first.
    pub async fn claim(&self, room: RoomKey, user: UserId, client_id: String) -> Claim<'_> {
        let key = Key {
            room,
            user,
            client_id,
        };
        loop {
            let mut rx = {
                let mut t = self.lock();
                self.expire(&mut t, Instant::now());
                match t.entries.get(&key) {
                    Some((_, Entry::Done(sent))) => return Claim::Resent(sent.clone()),
                    Some((_, Entry::InFlight(rx))) => rx.clone(),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        let generation = t.next_gen;
                        t.next_gen += 1;
                        t.entries
                            .insert(key.clone(), (generation, Entry::InFlight(rx)));
                        t.order.push_back((Instant::now(), generation, key.clone()));
                        return Claim::First(Guard {
                            dedupe: self,
                            key,
                            generation,
                            tx: Some(tx),
                        });
                    }
                }
            };
            // No lock held here. Err: the first send failed and its entry is gone; claim again.
            if let Ok(sent) = rx.wait_for(Option::is_some).await
                && let Some(sent) = sent.clone()
            {
                return Claim::Resent(sent);
            }
        }
    }

    /// Forgets entries older than the window, and the oldest beyond the capacity.
    fn expire(&self, t: &mut Table, now: Instant) {
        while let Some((at, generation, key)) = t.order.front() {
            let too_old = now.duration_since(*at) >= self.window;
            let too_many = t.order.len() > self.capacity;
            if !(too_old || too_many) {
                break;
            }
            if t.entries.get(key).is_some_and(|(g, _)| g == generation) {
                t.entries.remove(key);
            }
            t.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::RoomId;

    fn room() -> RoomKey {
        RoomKey::new(None, RoomId::parse("general").unwrap())
    }

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn sent(seq: i64) -> Sent {
        Sent {
            id: format!("m{seq}"),
            seq,
        }
    }

    #[tokio::test]
    async fn a_resend_gets_the_original_and_other_users_do_not_collide() {
        let d = Dedupe::new(Duration::from_secs(60), 100);
        let Claim::First(g) = d.claim(room(), user("a"), "c1".into()).await else {
            panic!("first")
        };
        g.complete(sent(1));
        assert!(
            matches!(d.claim(room(), user("a"), "c1".into()).await, Claim::Resent(s) if s == sent(1))
        );
        assert!(matches!(
            d.claim(room(), user("b"), "c1".into()).await,
            Claim::First(_)
        ));
    }

    #[tokio::test]
    async fn a_failed_send_is_forgotten_and_a_concurrent_resend_waits() {
        let d = Dedupe::new(Duration::from_secs(60), 100);
        let Claim::First(g) = d.claim(room(), user("a"), "c1".into()).await else {
            panic!("first")
        };
        drop(g);
        let Claim::First(g) = d.claim(room(), user("a"), "c1".into()).await else {
            panic!("retry after failure is a first send")
        };
        let waiter = d.claim(room(), user("a"), "c1".into());
        let (claim, ()) = tokio::join!(waiter, async { g.complete(sent(7)) });
        assert!(matches!(claim, Claim::Resent(s) if s == sent(7)));
    }

    #[tokio::test]
    async fn memory_is_bounded_by_capacity_and_window() {
        let d = Dedupe::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            if let Claim::First(g) = d.claim(room(), user("a"), format!("c{i}")).await {
                g.complete(sent(i));
            }
        }
        assert!(d.len() <= 4, "{}", d.len());
        let d = Dedupe::new(Duration::ZERO, 100);
        if let Claim::First(g) = d.claim(room(), user("a"), "x".into()).await {
            g.complete(sent(1));
        }
        assert!(matches!(
            d.claim(room(), user("a"), "x".into()).await,
            Claim::First(_)
        ));
    }

    #[test]
    fn client_ids_are_short_strings() {
        use serde_json::json;
        assert_eq!(parse_client_id(None).unwrap(), None);
        assert_eq!(
            parse_client_id(Some(&json!("a"))).unwrap(),
            Some("a".into())
        );
        assert!(parse_client_id(Some(&json!(""))).is_err());
        assert!(parse_client_id(Some(&json!(5))).is_err());
        assert!(parse_client_id(Some(&json!("x".repeat(129)))).is_err());
    }
}
