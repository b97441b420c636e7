//! Who the client is. The server loop puts a [`Peer`] (the TCP peer) into every request's
//! extensions; behind configured reverse proxies (`TRUSTED_PROXIES`) the client is the rightmost
//! `X-Forwarded-For` hop that is not one of them. A peer that is not trusted is the client
//! whatever it claims, so the header cannot be forged past a proxy that appends to it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use http::HeaderMap;
use ipnet::IpNet;

/// The connection a request came on. An Engine.IO session keeps the extensions of the request
/// that opened it, so this also holds what is counted per transport.
#[derive(Debug, Clone)]
pub struct Peer(Arc<PeerState>);

#[derive(Debug)]
struct PeerState {
    addr: SocketAddr,
    refused_connects: AtomicU32,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        Self(Arc::new(PeerState {
            addr,
            refused_connects: AtomicU32::new(0),
        }))
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// Counts one refused Socket.IO CONNECT on this transport; returns how many so far.
    pub fn count_refused_connect(&self) -> u32 {
        self.0.refused_connects.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// `TRUSTED_PROXIES`: the peers whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

#[derive(Debug, thiserror::Error)]
#[error("TRUSTED_PROXIES: {0:?} is neither an IP address nor a CIDR (e.g. 10.0.0.0/8)")]
pub struct BadProxy(pub String);

impl TrustedProxies {
    pub fn parse(entries: &[String]) -> Result<Self, BadProxy> {
        let mut nets = Vec::new();
        for e in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let net = match e.parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => e
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| BadProxy(e.to_owned()))?,
            };
            nets.push(net);
        }
        Ok(Self(Arc::new(nets)))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for a request from `peer` with these headers.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        // Every X-Forwarded-For line, in order, as one list; walked from the nearest hop.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                // A hop we cannot read: the proxy after it is the last one we can vouch for.
                None => break,
                Some(ip) => {
                    client = ip;
                    if !self.trusts(ip) {
                        break;
                    }
                }
            }
        }
        client
    }
}

/// The client IP of a request: its `Peer` (absent only outside the server loop) through the
/// trusted proxies.
pub fn of_request(
    trusted: &TrustedProxies,
    extensions: &http::Extensions,
    headers: &HeaderMap,
) -> Option<IpAddr> {
    let peer = extensions.get::<Peer>()?;
    Some(trusted.client_ip(peer.addr().ip(), headers))
}

/// An `X-Forwarded-For` element: an IP, possibly with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, as a dual-stack listener reports IPv4 peers) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let t = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            t.client_ip(ip("1.2.3.4"), &headers(&["9.9.9.9"])),
            ip("1.2.3.4")
        );
        assert_eq!(
            TrustedProxies::default().client_ip(ip("127.0.0.1"), &headers(&["9.9.9.9"])),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t = proxies(&["10.0.0.0/8", "192.168.1.1"]);
        // Forged left part, then the real client, then two trusted proxies.
        let h = headers(&["6.6.6.6, 5.5.5.5", "10.1.1.1"]);
        assert_eq!(t.client_ip(ip("192.168.1.1"), &h), ip("5.5.5.5"));
        assert_eq!(
            t.client_ip(ip("10.0.0.7"), &headers(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.7"), &headers(&["7.7.7.7:1234"])),
            ip("7.7.7.7")
        );
    }

    #[test]
    fn all_trusted_or_unreadable_hops_stop_at_the_last_known_address() {
        let t = proxies(&["10.0.0.0/8"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &headers(&[])), ip("10.0.0.1"));
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &headers(&["10.0.0.2"])),
            ip("10.0.0.2")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &headers(&["1.1.1.1, garbage, 10.0.0.3"])),
            ip("10.0.0.3")
        );
    }

    #[test]
    fn mapped_ipv4_matches_ipv4_rules_and_bad_entries_are_refused() {
        let t = proxies(&["127.0.0.1"]);
        assert_eq!(
            t.client_ip(ip("::ffff:127.0.0.1"), &headers(&["8.8.8.8"])),
            ip("8.8.8.8")
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.local".into()]).is_err());
        assert!(TrustedProxies::parse(&[" ".into()]).is_ok());
    }
}
