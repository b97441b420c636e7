//! A node's interest: how many local members each topic has, and whether the node is subscribed
//! to it where the other nodes publish. Shared by the cluster buses: callers change the counts
//! synchronously (`add`, `remove`), one task per bus turns the changes into subscribe and
//! unsubscribe commands (`plan`, `settled`), and a join waits for its topic's confirmation.
//!
//! Per topic at most one command is in flight, and the next one is planned only once it settled,
//! so a topic's subscribes and unsubscribes reach the server in the order the counts asked for
//! them; different topics go concurrently.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{Notify, oneshot};

use crate::domain::bus::{BusError, Subscription, Topic};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Off,
    Subscribing,
    On,
    Unsubscribing,
}

struct Entry {
    members: usize,
    server: Server,
    /// Joins waiting for the subscription to be confirmed.
    waiters: Vec<oneshot::Sender<Result<(), BusError>>>,
}

struct Inner {
    topics: HashMap<Topic, Entry>,
    /// Whether commands can reach the server now. While not, a join is answered at once
    /// (`Unavailable`) instead of waiting for a connection that may take long to come back.
    reachable: bool,
    /// Topics whose counts or state changed since the last `plan` (the only ones it looks at,
    /// so a join costs the same with a thousand topics or a million).
    dirty: Vec<Topic>,
    /// Every topic needs a look (after a reconnection).
    rescan: bool,
}

/// What the bus task should send now.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub subscribe: Vec<Topic>,
    pub unsubscribe: Vec<Topic>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

pub struct Interests {
    inner: Mutex<Inner>,
    changed: Notify,
}

impl Default for Interests {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                topics: HashMap::new(),
                reachable: false,
                dirty: Vec::new(),
                rescan: false,
            }),
            changed: Notify::new(),
        }
    }
}

impl Interests {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more member of `topic`. Resolves once the node is subscribed to it; at once with
    /// `Unavailable` when the server cannot be reached (the interest stays, and is subscribed
    /// when the server is back).
    pub fn add(&self, topic: &Topic) -> Subscription {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let reachable = inner.reachable;
        let entry = inner.topics.entry(topic.clone()).or_insert(Entry {
            members: 0,
            server: Server::Off,
            waiters: Vec::new(),
        });
        entry.members += 1;
        if entry.server == Server::On {
            return Box::pin(std::future::ready(Ok(())));
        }
        if entry.members == 1 || entry.server == Server::Unsubscribing {
            inner.dirty.push(topic.clone());
            self.changed.notify_one();
        }
        if !reachable {
            return Box::pin(std::future::ready(Err(unreachable())));
        }
        let (tx, rx) = oneshot::channel();
        entry.waiters.push(tx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(unreachable())) })
    }

    /// One member of `topic` fewer.
    pub fn remove(&self, topic: &Topic) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(entry) = inner.topics.get_mut(topic) else {
            return;
        };
        entry.members = entry.members.saturating_sub(1);
        if entry.members > 0 {
            return;
        }
        match entry.server {
            Server::Off => {
                for w in entry.waiters.drain(..) {
                    let _ = w.send(Err(unreachable()));
                }
                inner.topics.remove(topic);
            }
            Server::On => {
                inner.dirty.push(topic.clone());
                self.changed.notify_one();
            }
            // Settled later; `settled` looks at the count again.
            Server::Subscribing | Server::Unsubscribing => {}
        }
    }

    /// Whether the node has members of `topic` (what a hub delivers on).
    pub fn wants(&self, topic: &Topic) -> bool {
        matches!(topic, Topic::All) || self.lock().topics.get(topic).is_some_and(|e| e.members > 0)
    }

    /// Resolves when counts changed since the last `plan`.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The commands to send now; each planned topic is in flight until `settled`.
    pub fn plan(&self) -> Plan {
        let mut inner = self.lock();
        if !inner.reachable {
            return Plan::default();
        }
        let inner = &mut *inner;
        let candidates: Vec<Topic> = if std::mem::take(&mut inner.rescan) {
            inner.dirty.clear();
            inner.topics.keys().cloned().collect()
        } else {
            std::mem::take(&mut inner.dirty)
        };
        let mut plan = Plan::default();
        for topic in candidates {
            let Some(e) = inner.topics.get_mut(&topic) else {
                continue;
            };
            match e.server {
                Server::Off if e.members > 0 => {
                    e.server = Server::Subscribing;
                    plan.subscribe.push(topic);
                }
                Server::On if e.members == 0 => {
                    e.server = Server::Unsubscribing;
                    plan.unsubscribe.push(topic);
                }
                _ => {}
            }
        }
        plan.subscribe.sort();
        plan.unsubscribe.sort();
        plan
    }

    /// The outcome of a planned command. A failed subscribe leaves the topic off (its waiters
    /// get `Unavailable`; the next `plan` tries again); a failed unsubscribe counts as done (the
    /// server's state is unknown, and a stray subscription only costs traffic that is dropped).
    pub fn settled(&self, topic: &Topic, subscribed: Result<bool, BusError>) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(entry) = inner.topics.get_mut(topic) else {
            return;
        };
        let failed = subscribed.is_err();
        match subscribed {
            Ok(true) => {
                entry.server = Server::On;
                for w in entry.waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
            Ok(false) => entry.server = Server::Off,
            Err(e) => {
                entry.server = Server::Off;
                for w in entry.waiters.drain(..) {
                    let _ = w.send(Err(e.clone()));
                }
            }
        }
        let again = match entry.server {
            Server::On => entry.members == 0,
            _ => entry.members > 0,
        };
        if entry.server == Server::Off && entry.members == 0 {
            inner.topics.remove(topic);
        } else if again {
            inner.dirty.push(topic.clone());
            // A failed subscribe waits for the bus task's next look, not a hot retry loop.
            if !failed {
                self.changed.notify_one();
            }
        }
    }

    /// The connection to the server was lost or replaced: it forgot every subscription. Joins
    /// waiting are answered `Unavailable`; every topic with members is subscribed again once
    /// `set_reachable(true)`.
    pub fn lost(&self) {
        let mut inner = self.lock();
        inner.reachable = false;
        inner.topics.retain(|_, e| {
            e.server = Server::Off;
            for w in e.waiters.drain(..) {
                let _ = w.send(Err(unreachable()));
            }
            e.members > 0
        });
    }

    pub fn set_reachable(&self, reachable: bool) {
        let mut inner = self.lock();
        inner.reachable = reachable;
        if reachable {
            inner.rescan = true;
            self.changed.notify_one();
        }
    }

    /// Topics with members, and how many topics are subscribed (for metrics and tests).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        let wanted = inner.topics.values().filter(|e| e.members > 0).count();
        let on = inner
            .topics
            .values()
            .filter(|e| e.server == Server::On)
            .count();
        (wanted, on)
    }
}

fn unreachable() -> BusError {
    BusError::Unavailable("not connected".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::UserId;

    fn user(u: &str) -> Topic {
        Topic::User(UserId::parse(u).unwrap())
    }

    #[tokio::test]
    async fn only_the_first_member_subscribes_and_only_the_last_unsubscribes() {
        let i = Interests::default();
        i.set_reachable(true);
        let first = i.add(&user("a"));
        let second = i.add(&user("a"));
        assert_eq!(i.plan().subscribe, [user("a")]);
        assert!(i.plan().is_empty(), "one command in flight per topic");
        i.settled(&user("a"), Ok(true));
        first.await.unwrap();
        second.await.unwrap();
        i.add(&user("a")).await.unwrap();
        i.remove(&user("a"));
        i.remove(&user("a"));
        assert!(i.plan().is_empty(), "one member is left");
        i.remove(&user("a"));
        assert_eq!(i.plan().unsubscribe, [user("a")]);
        i.settled(&user("a"), Ok(false));
        assert_eq!(i.counts(), (0, 0));
    }

    #[tokio::test]
    async fn a_join_during_an_unsubscribe_waits_for_the_subscribe_that_follows_it() {
        let i = Interests::default();
        i.set_reachable(true);
        drop(i.add(&user("a"))); // counted; only the wait is dropped
        i.plan();
        i.settled(&user("a"), Ok(true));
        i.remove(&user("a"));
        assert_eq!(i.plan().unsubscribe, [user("a")]);
        let mut rejoin = i.add(&user("a"));
        assert!(
            futures::poll!(&mut rejoin).is_pending(),
            "not confirmed by the subscription going away"
        );
        assert!(i.plan().is_empty(), "the unsubscribe settles first");
        i.settled(&user("a"), Ok(false));
        assert_eq!(i.plan().subscribe, [user("a")]);
        i.settled(&user("a"), Ok(true));
        rejoin.await.unwrap();
    }

    #[tokio::test]
    async fn unreachable_answers_at_once_and_the_interest_is_subscribed_when_back() {
        let i = Interests::default();
        i.set_reachable(true);
        drop(i.add(&user("a"))); // counted; only the wait is dropped
        i.plan();
        i.settled(&user("a"), Ok(true));
        i.lost();
        assert!(matches!(
            i.add(&user("b")).await,
            Err(BusError::Unavailable(_))
        ));
        assert!(i.plan().is_empty(), "nothing is sent while unreachable");
        i.set_reachable(true);
        assert_eq!(i.plan().subscribe, [user("a"), user("b")]);
        // A failed subscribe is planned again at the next look.
        i.settled(&user("a"), Err(unreachable()));
        i.settled(&user("b"), Ok(true));
        assert_eq!(i.plan().subscribe, [user("a")]);
        assert!(i.plan().is_empty());
    }
}
