//! The last replay read from the store per room, shared by the joins after it: sockets of one
//! room rejoining with nearby `since` (a reconnect storm, or one client looping `join_room`)
//! cost one store read, not one each.
//!
//! An entry is the stored messages of a room with `since < seq <= last`, all of them: seqs
//! are given in commit order under the room's write lock, so once `last` is visible every
//! earlier one is too, and stored messages never change. It can answer a replay
//! `(since', upto]` with `since' >= since` and `upto <= last`; what the room got after `last`
//! is the fan-out's to deliver (the joining socket's deliveries are held from `upto` on).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use crate::domain::events::ChatMessage;
use crate::domain::ids::RoomKey;

/// Messages kept over all rooms (a few MB); past it the rooms read longest ago are dropped.
const MAX_CACHED_MESSAGES: usize = 16_384;

struct Entry {
    since: i64,
    /// Ascending `seq`, every message of the room in `(since, last]`.
    messages: Arc<[ChatMessage]>,
}

#[derive(Default)]
struct Inner {
    rooms: HashMap<RoomKey, Entry>,
    /// Rooms in the order their entries were made, oldest first (a room appears once).
    order: VecDeque<RoomKey>,
    total: usize,
}

/// Part of a cached read: `all[range]`.
#[derive(Debug, Clone)]
pub struct CachedReplay {
    pub all: Arc<[ChatMessage]>,
    pub range: Range<usize>,
}

impl CachedReplay {
    pub fn messages(&self) -> &[ChatMessage] {
        &self.all[self.range.clone()]
    }
}

#[derive(Default)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
}

impl ReplayCache {
    /// The room's messages with `since < seq <= upto`, if a cached read holds all of them.
    pub fn get(&self, key: &RoomKey, since: i64, upto: i64) -> Option<CachedReplay> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = inner.rooms.get(key)?;
        let last = entry.messages.last()?.seq;
        if since < entry.since || upto > last {
            return None;
        }
        let start = entry.messages.partition_point(|m| m.seq <= since);
        let end = entry.messages.partition_point(|m| m.seq <= upto);
        Some(CachedReplay {
            all: entry.messages.clone(),
            range: start..end.max(start),
        })
    }

    /// Keeps a store read of the room: `messages` are every stored message with `seq > since`
    /// up to the last of them, ascending (a read cut at `MAX_REPLAY` qualifies: it holds all
    /// of them up to where it was cut). An empty read says nothing and is not kept.
    pub fn put(&self, key: &RoomKey, since: i64, messages: Arc<[ChatMessage]>) {
        if messages.is_empty() || messages.len() > MAX_CACHED_MESSAGES {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *inner;
        let added = messages.len();
        if let Some(old) = inner.rooms.insert(key.clone(), Entry { since, messages }) {
            inner.total -= old.messages.len();
            inner.order.retain(|k| k != key);
        }
        inner.order.push_back(key.clone());
        inner.total += added;
        while inner.total > MAX_CACHED_MESSAGES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(e) = inner.rooms.remove(&oldest) {
                inner.total -= e.messages.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::RoomId;

    fn room(name: &str) -> RoomKey {
        RoomKey::new(None, RoomId::parse(name).unwrap())
    }

    fn msgs(seqs: std::ops::RangeInclusive<i64>) -> Arc<[ChatMessage]> {
        seqs.map(|seq| ChatMessage {
            id: format!("m{seq}"),
            seq,
            room_id: "r".into(),
            user_id: "u".into(),
            user_name: "U".into(),
            message: format!("{seq}"),
            timestamp: String::new(),
        })
        .collect()
    }

    fn seqs(r: &CachedReplay) -> Vec<i64> {
        r.messages().iter().map(|m| m.seq).collect()
    }

    #[test]
    fn answers_only_ranges_the_read_holds_whole() {
        let cache = ReplayCache::default();
        let r = room("r");
        cache.put(&r, 10, msgs(11..=20));
        assert_eq!(
            seqs(&cache.get(&r, 10, 20).unwrap()),
            (11..=20).collect::<Vec<_>>()
        );
        assert_eq!(seqs(&cache.get(&r, 15, 18).unwrap()), vec![16, 17, 18]);
        assert_eq!(seqs(&cache.get(&r, 20, 20).unwrap()), Vec::<i64>::new());
        // Older than the read: it may have missed messages below its `since`.
        assert!(cache.get(&r, 9, 20).is_none());
        // Past its last: later messages were not read.
        assert!(cache.get(&r, 10, 21).is_none());
        assert!(cache.get(&room("other"), 10, 20).is_none());
    }

    #[test]
    fn a_new_read_replaces_the_rooms_entry_and_the_oldest_rooms_go_first() {
        let cache = ReplayCache::default();
        let (a, b) = (room("a"), room("b"));
        cache.put(&a, 0, msgs(1..=5));
        cache.put(&a, 3, msgs(4..=8));
        assert!(cache.get(&a, 0, 5).is_none());
        assert_eq!(seqs(&cache.get(&a, 3, 8).unwrap()), vec![4, 5, 6, 7, 8]);
        let big = MAX_CACHED_MESSAGES as i64 - 2;
        cache.put(&b, 0, msgs(1..=big));
        assert!(
            cache.get(&a, 3, 8).is_none(),
            "a was read first, so it makes room"
        );
        assert!(cache.get(&b, 0, big).is_some());
        // Empty reads say nothing about the room.
        cache.put(&a, 8, Arc::from(Vec::new()));
        assert!(cache.get(&a, 8, 8).is_none());
    }
}
