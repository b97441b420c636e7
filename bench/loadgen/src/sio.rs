//! Engine.IO v4 / Socket.IO v5 over websocket, by hand: only what the scenarios need.
//!
//! Frames (text): `0{...}` open, `2`/`3` ping/pong, `40/ws,{"token":..}` connect,
//! `40/ws,{"sid":..}` connected, `44/ws,{...}` connect error, `41/ws,` disconnect,
//! `42/ws,[event,data]` event, `42/ws,N[...]` event with ack id, `43/ws,N[...]` ack.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub namespace: String,
    /// Client sockets are spread over 127.0.0.1 ..= 127.0.0.<sources>.
    pub sources: u8,
    pub connect_timeout: Duration,
    /// Where this run's explicit client ports start (see `source_port`).
    pub port_offset: u16,
}

/// Client ports are chosen here, not by the kernel: with tens of thousands of sockets of earlier
/// runs in TIME_WAIT, `bind(ip, 0)` searches the ephemeral range for a free port on every call
/// (seconds per thousand connects, in the load generator's only thread), which showed up as a
/// tenfold drop of the measured connect rate on the second run. Ports 10000..60000.
const PORT_BASE: u16 = 10_000;
const PORT_SPAN: u32 = 50_000;

impl Target {
    fn source_port(&self, i: usize, attempt: u32) -> u16 {
        let per_ip = (i / self.sources.max(1) as usize) as u32;
        let p = (self.port_offset as u32 + per_ip + attempt * 7919) % PORT_SPAN;
        PORT_BASE + p as u16
    }

    fn source(&self, i: usize) -> IpAddr {
        let n = (i % self.sources.max(1) as usize) as u8 + 1;
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
    }

    /// The prefix of every packet of the namespace, e.g. `/ws,` (empty for `/`).
    pub fn ns_prefix(&self) -> String {
        if self.namespace == "/" {
            String::new()
        } else {
            format!("{},", self.namespace)
        }
    }
}

/// Small buffers: the load generator holds up to 19,000 sockets in one process.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(64 << 20)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

thread_local! {
    /// `user_status` events received by every client of this (single-threaded) run.
    static USER_STATUS: Cell<u64> = const { Cell::new(0) };
}

/// Counts the events every scenario reports (today: `user_status`, the cost of presence).
pub fn count_event(body: &str) {
    if body.starts_with("[\"user_status\"") {
        USER_STATUS.with(|c| c.set(c.get() + 1));
    }
}

pub fn user_status_seen() -> u64 {
    USER_STATUS.with(Cell::get)
}

/// Opens the websocket, reads the Engine.IO open packet, joins the namespace with the token.
/// Returns the socket once the server answered CONNECT (`40<ns>,{sid}`) and sent the
/// `connected` event (the first event of every server under test), so a connect's latency is
/// connect → `connected`.
pub async fn connect(t: &Target, i: usize, token: &str) -> anyhow::Result<Ws> {
    tokio::time::timeout(t.connect_timeout, connect_inner(t, i, token))
        .await
        .map_err(|_| anyhow!("connect timed out after {:?}", t.connect_timeout))?
}

async fn connect_inner(t: &Target, i: usize, token: &str) -> anyhow::Result<Ws> {
    let stream = tcp_connect(t, i).await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", t.addr);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .context("websocket handshake")?;
    // Engine.IO open packet.
    match ws.next().await {
        Some(Ok(Message::Text(s))) if s.as_str().starts_with('0') => {}
        other => bail!("expected the Engine.IO open packet, got {other:?}"),
    }
    let ns = t.ns_prefix();
    let connect = format!("40{ns}{{\"token\":\"{token}\"}}");
    ws.send(Message::text(connect)).await?;
    let ok = format!("40{ns}");
    let err = format!("44{ns}");
    let event = format!("42{ns}");
    let mut acked = false;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(s))) => {
                let s = s.as_str();
                if s == "2" {
                    ws.send(Message::text("3")).await?;
                } else if s.starts_with(&ok) {
                    acked = true;
                } else if let Some(body) = s.strip_prefix(&event) {
                    count_event(body);
                    if acked && body.starts_with("[\"connected\"") {
                        return Ok(ws);
                    }
                } else if let Some(rest) = s.strip_prefix(&err) {
                    bail!("connect refused: {rest}");
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(m)) => bail!("unexpected frame during connect: {m:?}"),
            Some(Err(e)) => return Err(e).context("websocket read during connect"),
            None => bail!("closed during connect"),
        }
    }
}

/// Binds an explicit source address and port (SO_REUSEADDR: ports of earlier runs may still be
/// in TIME_WAIT), then connects; a port that is taken is skipped.
async fn tcp_connect(t: &Target, i: usize) -> anyhow::Result<TcpStream> {
    let ip = t.source(i);
    let mut last = None;
    for attempt in 0..8 {
        let sock = TcpSocket::new_v4()?;
        sock.set_reuseaddr(true)?;
        let local = SocketAddr::new(ip, t.source_port(i, attempt));
        if let Err(e) = sock.bind(local) {
            last = Some(anyhow!(e).context(format!("bind {local}")));
            continue;
        }
        match sock.connect(t.addr).await {
            Ok(s) => return Ok(s),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrNotAvailable
                    || e.kind() == std::io::ErrorKind::AddrInUse =>
            {
                last = Some(anyhow!(e).context(format!("connect from {local}")));
            }
            Err(e) => return Err(anyhow!(e).context(format!("tcp connect from {local}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no source port")))
}

/// Outcome of opening many connections.
pub struct Opened {
    pub sockets: Vec<Option<Ws>>,
    pub ok: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    /// From the first attempt to the last successful connect.
    pub elapsed: Duration,
    pub latency: crate::stats::Hist,
}

impl Opened {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Scenarios that need every connection (all but `idle`) stop here when one failed.
    pub fn ensure_all(&self) -> anyhow::Result<()> {
        if self.failed > 0 {
            anyhow::bail!(
                "{} of {} connects failed (first: {})",
                self.failed,
                self.ok + self.failed,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
        Ok(())
    }

    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": self.ok,
            "failed": self.failed,
            "seconds": crate::stats::round3(self.elapsed.as_secs_f64()),
            "rate_per_s": crate::stats::round1(self.rate()),
            "latency_ms": self.latency.summary_ms(),
            "first_error": self.first_error,
        })
    }
}

/// Opens `n` connections, starting at most `rate` per second (0: no pacing) with at most
/// `inflight` handshakes at a time. Must run inside a `LocalSet`.
pub async fn open_many(
    t: &Target,
    n: usize,
    rate: f64,
    inflight: usize,
    token: impl Fn(usize) -> String,
) -> Opened {
    open_spread(std::slice::from_ref(t), |_| 0, n, rate, inflight, token).await
}

/// `open_many` over several gateway nodes: connection `i` goes to `targets[node_of(i)]`.
pub async fn open_spread(
    targets: &[Target],
    node_of: impl Fn(usize) -> usize,
    n: usize,
    rate: f64,
    inflight: usize,
    token: impl Fn(usize) -> String,
) -> Opened {
    let slots: Rc<RefCell<Vec<Option<Ws>>>> = Rc::new(RefCell::new((0..n).map(|_| None).collect()));
    let errors: Rc<RefCell<(usize, Option<String>)>> = Rc::new(RefCell::new((0, None)));
    let lat = Rc::new(RefCell::new(crate::stats::Hist::new()));
    let last_ok = Rc::new(RefCell::new(None::<Instant>));
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(inflight.max(1)));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = sem.clone().acquire_owned().await.expect("semaphore closed");
        let (t, tok) = (targets[node_of(i) % targets.len()].clone(), token(i));
        let (slots, errors, lat, last_ok) =
            (slots.clone(), errors.clone(), lat.clone(), last_ok.clone());
        handles.push(tokio::task::spawn_local(async move {
            let began = Instant::now();
            match connect(&t, i, &tok).await {
                Ok(ws) => {
                    let now = Instant::now();
                    lat.borrow_mut().record_us((now - began).as_micros() as u64);
                    *last_ok.borrow_mut() = Some(now);
                    slots.borrow_mut()[i] = Some(ws);
                }
                Err(e) => {
                    let mut er = errors.borrow_mut();
                    er.0 += 1;
                    if er.1.is_none() {
                        er.1 = Some(format!("{e:#}"));
                    }
                }
            }
            drop(permit);
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let elapsed = last_ok.borrow().map(|l| l - start).unwrap_or_default();
    let sockets = std::mem::take(&mut *slots.borrow_mut());
    let ok = sockets.iter().filter(|s| s.is_some()).count();
    let (failed, first_error) = std::mem::take(&mut *errors.borrow_mut());
    let latency = std::mem::take(&mut *lat.borrow_mut());
    Opened {
        sockets,
        ok,
        failed,
        first_error,
        elapsed,
        latency,
    }
}

/// The clients' `join_room` outcomes, so a scenario starts only once every client is in its room.
#[derive(Default)]
pub struct Joins {
    ok: Cell<usize>,
    failed: Cell<usize>,
}

impl Joins {
    pub fn record(&self, joined: bool) {
        let n = if joined { &self.ok } else { &self.failed };
        n.set(n.get() + 1);
    }

    /// Waits until all `total` clients answered or `deadline` passed; an error unless all joined.
    pub async fn wait_all(
        &self,
        total: usize,
        deadline: Instant,
        errors: &crate::stats::Errors,
    ) -> anyhow::Result<()> {
        while self.ok.get() + self.failed.get() < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.ok.get() < total {
            bail!(
                "only {} of {total} clients joined their rooms (first error: {})",
                self.ok.get(),
                errors.first().as_deref().unwrap_or("timeout")
            );
        }
        Ok(())
    }
}

/// Sends `42<ns>["join_room",{"roomId":room}]` and waits for `joined_room` (answering pings).
pub async fn join_room(ws: &mut Ws, ns: &str, room: &str, timeout: Duration) -> anyhow::Result<()> {
    let msg = format!("42{ns}[\"join_room\",{{\"roomId\":\"{room}\"}}]");
    ws.send(Message::text(msg)).await?;
    let joined = format!("42{ns}[\"joined_room\"");
    let error = format!("42{ns}[\"error\"");
    let deadline = Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .map_err(|_| anyhow!("no joined_room within {timeout:?}"))?;
        match next {
            Some(Ok(Message::Text(s))) => {
                let s = s.as_str();
                if s == "2" {
                    ws.send(Message::text("3")).await?;
                } else if s.starts_with(&joined) {
                    return Ok(());
                } else if s.starts_with(&error) {
                    bail!("join_room refused: {s}");
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed while joining"),
        }
    }
}

/// What one incoming text frame is, for the hot loops (no JSON parsing).
pub enum Frame<'a> {
    Ping,
    /// `42<ns>[...]`: the part from `[`.
    Event(&'a str),
    /// `43<ns>N[...]`: id and the part from `[`.
    Ack(u64, &'a str),
    Disconnect,
    Other,
}

pub fn classify<'a>(s: &'a str, ns: &str) -> Frame<'a> {
    let b = s.as_bytes();
    if b.len() == 1 && b[0] == b'2' {
        return Frame::Ping;
    }
    if b.len() < 2 || b[0] != b'4' {
        return Frame::Other;
    }
    let rest = &s[2..];
    let Some(body) = rest.strip_prefix(ns) else {
        return Frame::Other;
    };
    match b[1] {
        b'2' => Frame::Event(body),
        b'3' => {
            let digits = body.bytes().take_while(u8::is_ascii_digit).count();
            match body[..digits].parse() {
                Ok(id) => Frame::Ack(id, &body[digits..]),
                Err(_) => Frame::Other,
            }
        }
        b'1' => Frame::Disconnect,
        _ => Frame::Other,
    }
}

/// Reads the `t=<us>;k=<step>` marker of a message text: the value after `"message":"t=`.
pub fn marker(body: &str, finder: &memchr::memmem::Finder<'_>) -> Option<(u64, u32)> {
    let b = body.as_bytes();
    let at = finder.find(b)? + finder.needle().len();
    let (t, n) = parse_u64(&b[at..])?;
    let rest = &b[at + n..];
    let rest = rest.strip_prefix(b";k=")?;
    let (k, _) = parse_u64(rest)?;
    Some((t, k as u32))
}

fn parse_u64(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
        n += 1;
    }
    (n > 0).then_some((v, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_frames() {
        assert!(matches!(classify("2", "/ws,"), Frame::Ping));
        assert!(matches!(
            classify("42/ws,[\"a\",1]", "/ws,"),
            Frame::Event("[\"a\",1]")
        ));
        assert!(matches!(
            classify("43/ws,17[{}]", "/ws,"),
            Frame::Ack(17, "[{}]")
        ));
        assert!(matches!(classify("41/ws,", "/ws,"), Frame::Disconnect));
        assert!(matches!(classify("42[\"a\"]", "/ws,"), Frame::Other));
    }

    #[test]
    fn reads_markers() {
        let f = memchr::memmem::Finder::new(b"\"message\":\"t=");
        let body = r#"["chat_message",{"id":"x","message":"t=123456;k=7;p=3","seq":4}]"#;
        assert_eq!(marker(body, &f), Some((123456, 7)));
        assert_eq!(marker(r#"["chat_message",{"message":"hello"}]"#, &f), None);
    }
}
