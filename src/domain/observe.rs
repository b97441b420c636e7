//! What the domain reports to operators, without knowing how: `crate::metrics` implements
//! `Observer` (Prometheus), tests use `Quiet`. Keeps metric names out of the domain.

use std::sync::atomic::{AtomicBool, Ordering};

/// A cluster port the domain falls back from when it fails (`aegisx_cluster_fallback_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Registry,
    RateLimit,
    Presence,
}

impl Port {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::RateLimit => "rate_limit",
            Self::Presence => "presence",
        }
    }
}

pub trait Observer: Send + Sync + 'static {
    /// A presence transition was announced: to the whole tenant, or to the user's watchers.
    fn presence_announced(&self, tenant_wide: bool);
    /// A call on a cluster port failed and the node decided locally instead.
    fn cluster_fallback(&self, port: Port);
}

/// Reports nothing.
pub struct Quiet;

impl Observer for Quiet {
    fn presence_announced(&self, _: bool) {}
    fn cluster_fallback(&self, _: Port) {}
}

/// Whether a cluster port is failing, so an outage is logged once when it starts and once when
/// it ends, however many calls fail in between (each is still counted by the observer).
#[derive(Debug, Default)]
pub struct Outage(AtomicBool);

impl Outage {
    /// A call failed; logs when this starts an outage.
    pub fn failed(&self, port: Port, error: &dyn std::fmt::Display) {
        if !self.0.swap(true, Ordering::AcqRel) {
            tracing::warn!(port = port.as_str(), %error, "cluster state unavailable; counting on this node until it is back");
        }
    }

    /// A call succeeded; logs when this ends an outage. Returns whether one ended.
    pub fn succeeded(&self, port: Port) -> bool {
        let ended = self.0.swap(false, Ordering::AcqRel);
        if ended {
            tracing::info!(port = port.as_str(), "cluster state reachable again");
        }
        ended
    }

    pub fn is_down(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_starts_and_ends_once() {
        let o = Outage::default();
        assert!(!o.succeeded(Port::Registry));
        o.failed(Port::Registry, &"down");
        o.failed(Port::Registry, &"down");
        assert!(o.is_down());
        assert!(o.succeeded(Port::Registry));
        assert!(!o.succeeded(Port::Registry));
    }
}
