//! `chat-ack`: C clients, each in its own room, sending acked `send_message`
//! (`42/ws,N["message",{...}]` → `43/ws,N[{ok,id,seq}]`) with up to W unanswered at a time.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::sio::{self, Frame, Ws};
use crate::stats::{self, CpuMeter, Hist};
use crate::{Common, Outcome, say};

#[derive(Args, Debug)]
pub struct ChatAckArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clients, each in a room of its own.
    #[arg(long, short = 'c', default_value_t = 50)]
    pub clients: usize,
    /// Unanswered acked messages per client.
    #[arg(long, short = 'w', default_value_t = 32)]
    pub window: usize,
    /// Seconds to send for (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of sending before the measurement starts (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds to wait for the last acks.
    #[arg(long, default_value_t = 5.0)]
    pub drain_secs: f64,
    /// Padding characters added to each message text.
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Idle,
    Send { end: Instant },
    Stop,
}

#[derive(Default)]
struct Shared {
    measuring: Cell<bool>,
    hist: RefCell<Hist>,
    sent: Cell<u64>,
    acked: Cell<u64>,
    acked_total: Cell<u64>,
    sent_total: Cell<u64>,
    /// `chat_message`s the senders got back (sender included in the room).
    delivered: Cell<u64>,
    inflight: Cell<u64>,
    failed_acks: Cell<u64>,
    errors: stats::Errors,
    disconnects: Cell<u64>,
    joins: sio::Joins,
}

pub async fn run(a: ChatAckArgs) -> anyhow::Result<Outcome> {
    let c = &a.common;
    let t = c.target();
    let prefix = c.prefix();
    let minter = c.minter();
    say!("chat-ack: opening {} connections to {}", a.clients, c.addr);
    let tokens: Vec<String> = (0..a.clients)
        .map(|i| c.token(&minter, &prefix, i))
        .collect();
    let opened = sio::open_many(&t, a.clients, c.connect_rate, c.connect_inflight, |i| {
        tokens[i].clone()
    })
    .await;
    opened.ensure_all()?;
    let connect = opened.summary();
    let sh = Rc::new(Shared::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
    let ns: Rc<str> = t.ns_prefix().into();
    let pad: Rc<str> = "x".repeat(a.pad).into();
    let epoch = Instant::now();
    let join_timeout = Duration::from_secs(30);
    let mut tasks = Vec::new();
    for (i, ws) in opened.sockets.into_iter().enumerate() {
        let ws = ws.expect("every connect succeeded");
        let room: Rc<str> = format!("{prefix}-ack{i}").into();
        tasks.push(tokio::task::spawn_local(client(
            ws,
            room,
            sh.clone(),
            ns.clone(),
            pad.clone(),
            a.window.max(1),
            epoch,
            phase_rx.clone(),
            join_timeout,
        )));
    }
    let deadline = Instant::now() + join_timeout + Duration::from_secs(1);
    if let Err(e) = sh.joins.wait_all(a.clients, deadline, &sh.errors).await {
        let _ = phase_tx.send(Phase::Stop);
        return Err(e);
    }
    sh.errors.reset_count();
    let warm_end = Instant::now() + Duration::from_secs_f64(a.warmup);
    let end = warm_end + Duration::from_secs_f64(a.duration);
    let _ = phase_tx.send(Phase::Send { end });
    tokio::time::sleep_until(warm_end.into()).await;
    sh.measuring.set(true);
    let me = CpuMeter::start(std::process::id());
    let server = c.server_pid.map(CpuMeter::start);
    let core = c.server_core.map(stats::CoreMeter::start);
    let measure_start = Instant::now();
    tokio::time::sleep_until(end.into()).await;
    let measured = measure_start.elapsed().as_secs_f64();
    sh.measuring.set(false);
    let (cpu_me, cpu_server) = (me.percent(), server.as_ref().and_then(CpuMeter::percent));
    let core_busy = core.as_ref().and_then(stats::CoreMeter::percent);
    let _ = phase_tx.send(Phase::Idle);
    let drain_deadline = Instant::now() + Duration::from_secs_f64(a.drain_secs);
    while sh.inflight.get() > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unanswered = sh.inflight.get();
    let _ = phase_tx.send(Phase::Stop);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    let acked = sh.acked.get();
    let rate = acked as f64 / measured;
    let hist = sh.hist.borrow();
    say!(
        "chat-ack: {:.0} acked/s, ack p50 {:.2} p99 {:.2} ms, unanswered {unanswered}, failed acks {}, errors {}",
        rate,
        hist.quantile_ms(0.5),
        hist.quantile_ms(0.99),
        sh.failed_acks.get(),
        sh.errors.count()
    );
    let clean = unanswered == 0
        && sh.failed_acks.get() == 0
        && sh.errors.count() == 0
        && sh.disconnects.get() == 0;
    Ok(Outcome {
        json: json!({
            "clients": a.clients,
            "window": a.window,
            "duration_s": a.duration,
            "connect": connect,
            "acked_per_s": stats::round1(rate),
            "acked": acked,
            "sent_in_window": sh.sent.get(),
            "sent_total": sh.sent_total.get(),
            "acked_total": sh.acked_total.get(),
            "delivered_back_total": sh.delivered.get(),
            "unanswered": unanswered,
            "failed_acks": sh.failed_acks.get(),
            "errors": sh.errors.count(),
            "disconnects": sh.disconnects.get(),
            "ack_latency_ms": hist.summary_ms(),
            "loadgen_cpu_pct": cpu_me,
            "server_cpu_pct": cpu_server,
            "server_core_busy_pct": core_busy,
            "first_error": sh.errors.first(),
        }),
        clean,
        unavailable: false,
    })
}

#[allow(clippy::too_many_arguments)]
async fn client(
    mut ws: Ws,
    room: Rc<str>,
    sh: Rc<Shared>,
    ns: Rc<str>,
    pad: Rc<str>,
    window: usize,
    epoch: Instant,
    mut phase: watch::Receiver<Phase>,
    join_timeout: Duration,
) {
    if let Err(e) = sio::join_room(&mut ws, &ns, &room, join_timeout).await {
        sh.joins.record(false);
        sh.errors.note(&format!("join_room: {e:#}"));
        return;
    }
    sh.joins.record(true);
    let ok = memchr::memmem::Finder::new(b"\"ok\":true");
    let mut outstanding: HashMap<u64, Instant> = HashMap::with_capacity(window * 2);
    let mut next_id: u64 = 0;
    let mut end: Option<Instant> = None;
    loop {
        // Keep the window full while sending.
        if let Some(e) = end {
            let now = Instant::now();
            if now < e && outstanding.len() < window {
                let mut failed = false;
                while outstanding.len() < window {
                    next_id += 1;
                    let t_us = (now - epoch).as_micros();
                    let text = format!(
                        "42{ns}{next_id}[\"message\",{{\"type\":\"send_message\",\"data\":{{\"roomId\":\"{room}\",\"message\":\"t={t_us};k=0;n={next_id}{pad}\"}}}}]"
                    );
                    if ws.feed(Message::text(text)).await.is_err() {
                        failed = true;
                        break;
                    }
                    outstanding.insert(next_id, now);
                    sh.inflight.set(sh.inflight.get() + 1);
                    sh.sent_total.set(sh.sent_total.get() + 1);
                    if sh.measuring.get() {
                        sh.sent.set(sh.sent.get() + 1);
                    }
                }
                if failed || ws.flush().await.is_err() {
                    sh.disconnects.set(sh.disconnects.get() + 1);
                    break;
                }
            }
        }
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
                let p = *phase.borrow_and_update();
                match p {
                    Phase::Send { end: e } => end = Some(e),
                    Phase::Idle => end = None,
                    Phase::Stop => break,
                }
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(s))) => match sio::classify(s.as_str(), &ns) {
                    Frame::Ping => {
                        let _ = ws.send(Message::text("3")).await;
                    }
                    Frame::Ack(id, body) => {
                        if let Some(t0) = outstanding.remove(&id) {
                            sh.inflight.set(sh.inflight.get() - 1);
                            if ok.find(body.as_bytes()).is_some() {
                                sh.acked_total.set(sh.acked_total.get() + 1);
                                if sh.measuring.get() {
                                    sh.acked.set(sh.acked.get() + 1);
                                    sh.hist.borrow_mut().record_us(t0.elapsed().as_micros() as u64);
                                }
                            } else {
                                sh.failed_acks.set(sh.failed_acks.get() + 1);
                                sh.errors.note(body);
                            }
                        }
                    }
                    Frame::Event(body) => {
                        sio::count_event(body);
                        if body.starts_with("[\"chat_message\"") {
                            sh.delivered.set(sh.delivered.get() + 1);
                        } else if body.starts_with("[\"error\"") {
                            sh.errors.note(body);
                        }
                    }
                    Frame::Disconnect => {
                        sh.disconnects.set(sh.disconnects.get() + 1);
                        sh.errors.note("server sent DISCONNECT");
                        break;
                    }
                    Frame::Other => {}
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    sh.disconnects.set(sh.disconnects.get() + 1);
                    sh.errors.note("connection closed by the server");
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
    }
}
