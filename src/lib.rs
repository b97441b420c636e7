//! AegisX Realtime: a Socket.IO-compatible real-time gateway. See `ARCHITECTURE.md` for the map.

pub mod app;
pub mod bus;
pub mod cli;
pub mod cluster;
pub mod domain;
pub mod fanout;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod redis;
pub mod server;
pub mod settings;
pub mod socket;
pub mod state;
pub mod store;
pub mod supervisor;
pub mod telemetry;
