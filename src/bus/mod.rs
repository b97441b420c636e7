//! Node-to-node delivery behind the domain's `Bus` port. `local` serves one node; a Redis bus
//! (clusters) publishes to the other nodes as well, after handing the message to the local
//! fan-out, so a local delivery never waits on Redis.

pub mod local;
