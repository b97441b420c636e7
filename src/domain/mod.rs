//! Vocabulary and rules of the gateway. Knows no Socket.IO, HTTP, SQL or Redis: transports call
//! these services, and the services reach storage and other nodes only through the ports
//! (`Store`, `Bus`, `RateLimiter`, `ConnectionRegistry`, `PresenceDirectory`), and report to
//! operators through `observe::Observer`.

pub mod auth;
pub mod bus;
pub mod chat;
pub mod connections;
pub mod dedupe;
pub mod error;
pub mod events;
pub mod failure_limit;
pub mod ids;
pub mod notifications;
pub mod observe;
pub mod presence;
pub mod presence_directory;
pub mod publish;
pub mod rate_limit;
pub mod replay_cache;
pub mod rooms;
pub mod store;
pub mod time;
