//! The blueprint's event bus: backends `PUBLISH` a `WebSocketEvent` JSON
//! `{ type, data, userId?, tenantId?, roomId?, timestamp }` to `websocket:events`, and the
//! gateway routes it (PROTOCOL §8) through the same domain services as the HTTP API:
//! `chat_message` with a `roomId` is stored and sequenced like `POST /rooms/{roomId}/messages`
//! (`ChatService`), everything else is published like `POST /publish` (`PublishService`).
//!
//! **Exactly one node handles each event.** Plain pub/sub gives every node a copy. Before
//! acting, a node claims the event with `SET aegisx:ingest:<sha256 of the payload> NX EX 300`;
//! only the node whose `SET` succeeds stores or publishes it (the bus then brings it to every
//! node with recipients), the others count it `duplicate`. So an event is identified by its
//! bytes: a backend that publishes the very same payload twice within five minutes gets it
//! handled once (the blueprint's events carry a `timestamp`, which tells real repeats apart).
//! A node that wins the claim and dies before storing loses that event (at most once), and a
//! claim that cannot be made (Redis just went away) is not acted on: both are counted
//! (`failed`). Events claimed by different nodes are handled concurrently, so two events of one
//! room published back to back may get their `seq`s in either order.
//!
//! Malformed events (not JSON, missing or wrong fields, unknown types, no route) are counted
//! (`aegisx_ingest_events_total{outcome="malformed"}`) and logged as untrusted text; never fatal.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::domain::chat::ChatService;
use crate::domain::events::Target;
use crate::domain::ids::{RoomId, RoomKey, TenantId, UserId};
use crate::domain::publish::{MAX_EVENT_LEN, PublishService};

/// How long a claim is kept: far longer than any node takes to see a pub/sub message.
pub const CLAIM_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
#[error("claim failed: {0}")]
pub struct ClaimError(pub String);

/// "Only one node acts on this event": the first `claim` of a key wins, for `ttl`.
#[async_trait]
pub trait Claims: Send + Sync + 'static {
    async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, ClaimError>;
}

/// What an event asks for.
#[derive(Debug, PartialEq)]
pub enum Route {
    /// Stored and sequenced, then delivered to the room.
    Chat {
        key: RoomKey,
        user: UserId,
        user_name: String,
        message: String,
    },
    /// Delivered as published.
    Deliver {
        target: Target,
        event: String,
        data: Value,
    },
}

/// Why an event cannot be routed (logged, counted).
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(String);

fn malformed(why: impl Into<String>) -> Malformed {
    Malformed(why.into())
}

fn text<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Malformed> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(format!("{key} must be a string"))),
    }
}

fn user(s: &str, field: &str) -> Result<UserId, Malformed> {
    UserId::parse(s).ok_or_else(|| malformed(format!("{field} is not a valid user id")))
}

/// The blueprint's routing (PROTOCOL §8).
pub fn route(raw: &[u8]) -> Result<Route, Malformed> {
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(raw) else {
        return Err(malformed("not a JSON object"));
    };
    let kind = match obj.get("type") {
        Some(Value::String(t)) if !t.is_empty() && t.chars().count() <= MAX_EVENT_LEN => t.clone(),
        _ => return Err(malformed("type must be a string of 1 to 64 characters")),
    };
    let tenant = TenantId::parse_optional(text(&obj, "tenantId")?)
        .map_err(|_| malformed("tenantId is too long"))?;
    let user_id = text(&obj, "userId")?
        .map(|u| user(u, "userId"))
        .transpose()?;
    let room = text(&obj, "roomId")?
        .map(|r| RoomId::parse(r).ok_or_else(|| malformed("roomId is not a valid room id")))
        .transpose()?;
    let data = obj.remove("data").unwrap_or(Value::Null);
    let deliver = |target| {
        Ok(Route::Deliver {
            target,
            event: kind.clone(),
            data: data.clone(),
        })
    };
    match (kind.as_str(), tenant, user_id, room) {
        ("chat_message", tenant, _, Some(room)) => {
            if room.reserved().is_some() {
                return Err(malformed("user: and tenant: rooms have no chat"));
            }
            let Value::Object(d) = &data else {
                return Err(malformed("chat_message data must be an object"));
            };
            let sender = text(d, "userId")?.ok_or_else(|| malformed("data.userId is required"))?;
            let sender = user(sender, "data.userId")?;
            let message = text(d, "message")?
                .ok_or_else(|| malformed("data.message is required"))?
                .to_owned();
            let user_name = text(d, "userName")?
                .filter(|n| !n.is_empty())
                .map_or_else(|| sender.to_string(), str::to_owned);
            Ok(Route::Chat {
                key: RoomKey::new(tenant, room),
                user: sender,
                user_name,
                message,
            })
        }
        ("chat_message", Some(tenant), _, None) | ("user_status", Some(tenant), _, _) => {
            deliver(Target::Tenant { tenant })
        }
        ("notification", Some(tenant), Some(user), _) => {
            // What carries a tenant stays in it, as for stored notifications.
            deliver(Target::UserInTenant { user, tenant })
        }
        ("notification", None, Some(user), _) => deliver(Target::User { user }),
        ("notification", Some(tenant), None, _) => deliver(Target::Tenant { tenant }),
        ("broadcast", _, _, _) => deliver(Target::All),
        ("chat_message" | "user_status" | "notification", ..) => Err(malformed(format!(
            "{kind} has no target (tenantId, userId or roomId)"
        ))),
        _ => Err(malformed(format!(
            "unknown type {}",
            crate::telemetry::untrusted(&kind)
        ))),
    }
}

/// The claim key of a payload.
pub fn claim_key(raw: &[u8]) -> String {
    let digest = Sha256::digest(raw);
    let mut key = String::with_capacity(14 + 64);
    key.push_str("aegisx:ingest:");
    for b in digest {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

#[derive(Clone)]
pub struct Ingest {
    pub chat: ChatService,
    pub publisher: PublishService,
    pub claims: Arc<dyn Claims>,
}

impl Ingest {
    /// Handles payloads until the bus stops.
    pub fn spawn(self, mut rx: mpsc::Receiver<Vec<u8>>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(raw) = rx.recv().await {
                self.handle(&raw).await;
            }
        })
    }

    /// Routes, claims and acts on one event. A chat message is queued here (in arrival order)
    /// and its storage awaited elsewhere, so the writer batches ingested messages as it does
    /// the others.
    pub async fn handle(&self, raw: &[u8]) -> Outcome {
        let outcome = self.act(raw).await;
        crate::metrics::ingest_event(outcome.label());
        outcome
    }

    async fn act(&self, raw: &[u8]) -> Outcome {
        let route = match route(raw) {
            Ok(r) => r,
            Err(e) => {
                let text = String::from_utf8_lossy(raw);
                tracing::warn!(
                    error = %e,
                    event = %crate::telemetry::untrusted(&text),
                    "malformed websocket:events event"
                );
                return Outcome::Malformed;
            }
        };
        match self.claims.claim(&claim_key(raw), CLAIM_TTL).await {
            Ok(true) => {}
            Ok(false) => return Outcome::Duplicate,
            Err(e) => {
                tracing::warn!(error = %e, "websocket:events event not handled: no claim");
                return Outcome::Failed;
            }
        }
        match route {
            Route::Chat {
                key,
                user,
                user_name,
                message,
            } => match self.chat.submit(key, user, user_name, message).await {
                Ok(pending) => {
                    tokio::spawn(async move {
                        if let Err(e) = pending.stored().await {
                            crate::metrics::ingest_event("failed");
                            tracing::warn!(error = %e, "ingested chat message not stored");
                        }
                    });
                    Outcome::Routed
                }
                Err(e) => {
                    tracing::info!(error = %e, "ingested chat message refused");
                    Outcome::Refused
                }
            },
            Route::Deliver {
                target,
                event,
                data,
            } => match self.publisher.publish_routed(target, event, data).await {
                Ok(()) => Outcome::Routed,
                Err(e) => {
                    tracing::warn!(error = %e, "ingested event not published");
                    Outcome::Failed
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Routed,
    Duplicate,
    Malformed,
    /// Refused by the domain (e.g. a message too long): the sender's mistake.
    Refused,
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Routed => "routed",
            Outcome::Duplicate => "duplicate",
            Outcome::Malformed => "malformed",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::domain::bus::Bus;
    use crate::domain::chat::ChatLimits;
    use crate::domain::events::BusMessage;
    use crate::fanout::{FanoutCmd, fanout_queue};

    fn r(v: Value) -> Result<Route, Malformed> {
        route(v.to_string().as_bytes())
    }

    fn tenant(t: &str) -> TenantId {
        TenantId::parse_optional(Some(t)).unwrap().unwrap()
    }

    fn uid(u: &str) -> UserId {
        UserId::parse(u).unwrap()
    }

    #[test]
    fn events_are_routed_as_the_blueprint_routes_them() {
        let ts = "2026-01-01T00:00:00.000Z";
        assert_eq!(
            r(
                json!({ "type": "chat_message", "tenantId": "t", "roomId": "general",
                      "data": { "userId": "bot", "message": "hi" }, "timestamp": ts })
            ),
            Ok(Route::Chat {
                key: RoomKey::new(Some(tenant("t")), RoomId::parse("general").unwrap()),
                user: uid("bot"),
                user_name: "bot".into(),
                message: "hi".into(),
            })
        );
        let deliver = |target, event: &str| {
            Ok(Route::Deliver {
                target,
                event: event.into(),
                data: json!({ "x": 1 }),
            })
        };
        assert_eq!(
            r(json!({ "type": "chat_message", "tenantId": "t", "data": { "x": 1 } })),
            deliver(
                Target::Tenant {
                    tenant: tenant("t")
                },
                "chat_message"
            )
        );
        assert_eq!(
            r(json!({ "type": "notification", "userId": "u", "data": { "x": 1 } })),
            deliver(Target::User { user: uid("u") }, "notification")
        );
        assert_eq!(
            r(
                json!({ "type": "notification", "userId": "u", "tenantId": "t", "data": { "x": 1 } })
            ),
            deliver(
                Target::UserInTenant {
                    user: uid("u"),
                    tenant: tenant("t")
                },
                "notification"
            )
        );
        assert_eq!(
            r(json!({ "type": "notification", "tenantId": "t", "data": { "x": 1 } })),
            deliver(
                Target::Tenant {
                    tenant: tenant("t")
                },
                "notification"
            )
        );
        assert_eq!(
            r(json!({ "type": "user_status", "tenantId": "t", "data": { "x": 1 } })),
            deliver(
                Target::Tenant {
                    tenant: tenant("t")
                },
                "user_status"
            )
        );
        assert_eq!(
            r(json!({ "type": "broadcast", "data": { "x": 1 } })),
            deliver(Target::All, "broadcast")
        );
    }

    #[test]
    fn malformed_events_say_why() {
        for bad in [
            "not json".to_owned(),
            "[1]".to_owned(),
            json!({ "data": {} }).to_string(),
            json!({ "type": 5 }).to_string(),
            json!({ "type": "mystery" }).to_string(),
            json!({ "type": "notification" }).to_string(),
            json!({ "type": "user_status", "userId": "u" }).to_string(),
            json!({ "type": "chat_message", "roomId": "general", "data": { "message": "x" } })
                .to_string(),
            json!({ "type": "chat_message", "roomId": "general", "data": "hi" }).to_string(),
            json!({ "type": "chat_message", "roomId": "user:x",
                    "data": { "userId": "u", "message": "x" } })
            .to_string(),
            json!({ "type": "chat_message", "roomId": "bad room", "data": {} }).to_string(),
            json!({ "type": "notification", "userId": 7 }).to_string(),
        ] {
            assert!(route(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[derive(Default)]
    struct SharedClaims(Mutex<HashSet<String>>);

    #[async_trait]
    impl Claims for SharedClaims {
        async fn claim(&self, key: &str, _ttl: Duration) -> Result<bool, ClaimError> {
            Ok(self.0.lock().unwrap().insert(key.to_owned()))
        }
    }

    /// Two nodes get the same event (as plain pub/sub gives it to every node): one stores it,
    /// through the chat writer, and it has a `seq`.
    #[tokio::test]
    async fn of_two_nodes_given_the_same_chat_event_exactly_one_stores_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/i.db", dir.path().display());
        let store = crate::store::connect(&url, Duration::from_secs(5))
            .await
            .unwrap();
        let claims: Arc<dyn Claims> = Arc::new(SharedClaims::default());
        let limits = ChatLimits {
            max_message_len: 100,
            max_replay: 10,
            max_concurrent_replays: 1,
        };
        let (fanout, mut delivered) = fanout_queue(64);
        let bus: Arc<dyn Bus> = Arc::new(crate::bus::local::LocalBus::new(fanout));
        let mut nodes = Vec::new();
        for _ in 0..2 {
            let (chat, _task) = ChatService::start(store.clone(), bus.clone(), limits, 16);
            nodes.push(Ingest {
                chat,
                publisher: PublishService::new(bus.clone()),
                claims: claims.clone(),
            });
        }
        let raw = json!({ "type": "chat_message", "roomId": "general", "timestamp": "x",
                          "data": { "userId": "bot", "message": "hello" } })
        .to_string();
        let outcomes = [
            nodes[0].handle(raw.as_bytes()).await,
            nodes[1].handle(raw.as_bytes()).await,
        ];
        assert_eq!(outcomes, [Outcome::Routed, Outcome::Duplicate]);
        let d = loop {
            match delivered.recv().await {
                Some(FanoutCmd::Bus(BusMessage::Deliver(d))) => break d,
                Some(_) => {}
                None => panic!("nothing delivered"),
            }
        };
        assert_eq!(d.event, "chat_message");
        assert_eq!(d.data["seq"], 1);
        assert_eq!(d.data["message"], "hello");
        let key = RoomKey::new(None, RoomId::parse("general").unwrap());
        let stored = nodes[0].chat.history(&key, None, 10).await.unwrap();
        assert_eq!(stored.len(), 1, "stored once");
        assert_eq!(
            nodes[1].handle(b"{oops").await,
            Outcome::Malformed,
            "and a malformed one is counted, not fatal"
        );
    }
}
