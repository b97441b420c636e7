//! `replay-flood`: a room is seeded with `--stored` messages over HTTP; one user's
//! `--flood-sockets` sockets then loop `join_room { since: 0 }` on it (each waits for its ack,
//! leaves the room, waits for that ack, then joins again: a socket still in the room would be
//! replayed only what it missed, which is nothing) while `--others` users, each in a room of its own, send acked
//! `send_message` at `--rate` each. Figures: the others' ack latency, the flood's joins/s and
//! replayed messages/s, and the flood's events the server refused (`RATE_LIMITED` or any other code):
//! refusals are a figure, not a failure. `--no-flood`: the same run without the flood.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::sio::{self, Frame, Ws};
use crate::stats::{self, CpuMeter, Hist};
use crate::{Common, Outcome, say};

#[derive(Args, Debug)]
pub struct ReplayFloodArgs {
    #[command(flatten)]
    pub common: Common,
    /// Users chatting with acks, each in a room of its own.
    #[arg(long, default_value_t = 100)]
    pub others: usize,
    /// Acked messages per second each of them sends.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Sockets of the flooding user.
    #[arg(long, default_value_t = 10)]
    pub flood_sockets: usize,
    /// Messages stored in the flooded room before the run (over HTTP).
    #[arg(long, default_value_t = 1000)]
    pub stored: usize,
    /// Seconds to measure for.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Run without the flood (the baseline).
    #[arg(long)]
    pub no_flood: bool,
    /// API key (`Authorization: Bearer`), to seed the room.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Seconds to wait for the last acks.
    #[arg(long, default_value_t = 5.0)]
    pub drain_secs: f64,
}

#[derive(Default)]
struct Shared {
    measuring: Cell<bool>,
    acks: RefCell<Hist>,
    acked: Cell<u64>,
    failed_acks: Cell<u64>,
    inflight: Cell<u64>,
    joins_ok: Cell<u64>,
    joins_refused: Cell<u64>,
    refused_rate_limited: Cell<u64>,
    replayed: Cell<u64>,
    errors: stats::Errors,
    flood_errors: Cell<u64>,
    disconnects: Cell<u64>,
    joins: sio::Joins,
}

pub async fn run(a: ReplayFloodArgs) -> anyhow::Result<Outcome> {
    let c = &a.common;
    let t = c.target();
    let prefix = c.prefix();
    let minter = c.minter();
    let ns: Rc<str> = t.ns_prefix().into();
    // Users 0..others chat; user `others` floods (all its sockets share its token).
    let flooder = a.others;
    let flood_room: Rc<str> = format!("{prefix}-flood").into();
    let tenant = c.tenant(&prefix, flooder);
    say!("replay-flood: seeding {} messages", a.stored);
    let seed_start = Instant::now();
    let mut http = crate::http::Client::new(c.addr);
    let body = |j: usize| {
        json!({ "tenantId": tenant, "userId": format!("{prefix}-seed"), "message": format!("seed {j}") })
            .to_string()
    };
    let path = format!("/api/v1/rooms/{flood_room}/messages");
    for j in 0..a.stored {
        let (status, resp) = http.post(&path, &a.api_key, &body(j)).await?;
        if status == 404 {
            return Ok(Outcome {
                json: json!({ "status": "unavailable (HTTP 404)" }),
                clean: false,
                unavailable: true,
            });
        }
        anyhow::ensure!(
            status == 201,
            "seeding: HTTP {status}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    let seed_s = seed_start.elapsed().as_secs_f64();
    let flood_n = if a.no_flood { 0 } else { a.flood_sockets };
    let total = a.others + flood_n;
    let tokens: Vec<String> = (0..total)
        .map(|i| c.token(&minter, &prefix, i.min(flooder)))
        .collect();
    let opened = sio::open_many(&t, total, c.connect_rate, c.connect_inflight, |i| {
        tokens[i].clone()
    })
    .await;
    opened.ensure_all()?;
    let connect = opened.summary();
    let sh = Rc::new(Shared::default());
    let (phase_tx, phase_rx) = watch::channel(0u8); // 0 wait, 1 run, 2 idle, 3 stop
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for (i, ws) in opened.sockets.into_iter().enumerate() {
        let ws = ws.expect("every connect succeeded");
        if i < a.others {
            let room: Rc<str> = format!("{prefix}-fo{i}").into();
            tasks.push(tokio::task::spawn_local(chatter(
                ws,
                room,
                i,
                sh.clone(),
                ns.clone(),
                a.rate,
                epoch,
                phase_rx.clone(),
            )));
        } else {
            let (sh2, fut) = (
                sh.clone(),
                flood(
                    ws,
                    flood_room.clone(),
                    sh.clone(),
                    ns.clone(),
                    phase_rx.clone(),
                ),
            );
            tasks.push(tokio::task::spawn_local(async move {
                if let Err(e) = fut.await {
                    sh2.errors.note(&format!("{e:#}"));
                }
            }));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(31);
    if let Err(e) = sh.joins.wait_all(a.others, deadline, &sh.errors).await {
        let _ = phase_tx.send(3);
        return Err(e);
    }
    sh.errors.reset_count();
    let _ = phase_tx.send(1);
    // A short warm-up, not counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (joins0, replayed0, refused0) =
        (sh.joins_ok.get(), sh.replayed.get(), sh.joins_refused.get());
    sh.measuring.set(true);
    let server = c.server_pid.map(CpuMeter::start);
    let core = c.server_core.map(stats::CoreMeter::start);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    let measured = start.elapsed().as_secs_f64();
    sh.measuring.set(false);
    let (joins, replayed, refused) = (
        sh.joins_ok.get() - joins0,
        sh.replayed.get() - replayed0,
        sh.joins_refused.get() - refused0,
    );
    let cpu_server = server.as_ref().and_then(CpuMeter::percent);
    let core_busy = core.as_ref().and_then(stats::CoreMeter::percent);
    let _ = phase_tx.send(2);
    let drain = Instant::now() + Duration::from_secs_f64(a.drain_secs);
    while sh.inflight.get() > 0 && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unanswered = sh.inflight.get();
    let _ = phase_tx.send(3);
    for t in tasks {
        t.abort();
        let _ = t.await;
    }
    let acks = sh.acks.borrow();
    say!(
        "replay-flood{}: others' ack p50 {:.2} p99 {:.2} ms; flood {:.0} joins/s ({:.0} replayed/s), {refused} refused",
        if a.no_flood { " (no flood)" } else { "" },
        acks.quantile_ms(0.5),
        acks.quantile_ms(0.99),
        joins as f64 / measured,
        replayed as f64 / measured
    );
    let clean = unanswered == 0
        && sh.failed_acks.get() == 0
        && sh.errors.count() == 0
        && sh.disconnects.get() == 0;
    Ok(Outcome {
        json: json!({
            "status": "ran",
            "flood": !a.no_flood,
            "others": a.others,
            "rate_per_other": a.rate,
            "flood_sockets": flood_n,
            "stored": a.stored,
            "seed_s": stats::round3(seed_s),
            "duration_s": a.duration,
            "connect": connect,
            "ack_latency_ms": acks.summary_ms(),
            "acked": sh.acked.get(),
            "failed_acks": sh.failed_acks.get(),
            "unanswered": unanswered,
            "flood_joins": joins,
            "flood_joins_per_s": stats::round1(joins as f64 / measured),
            "flood_replayed_per_s": stats::round1(replayed as f64 / measured),
            "flood_refused": refused,
            "flood_refused_per_s": stats::round1(refused as f64 / measured),
            "flood_refused_rate_limited_total": sh.refused_rate_limited.get(),
            "flood_error_events": sh.flood_errors.get(),
            "errors": sh.errors.count(),
            "disconnects": sh.disconnects.get(),
            "server_cpu_pct": cpu_server,
            "server_core_busy_pct": core_busy,
            "first_error": sh.errors.first(),
        }),
        clean,
        unavailable: false,
    })
}

/// One of the others: in its own room, an acked `send_message` every 1/rate s while running.
async fn chatter(
    mut ws: Ws,
    room: Rc<str>,
    index: usize,
    sh: Rc<Shared>,
    ns: Rc<str>,
    rate: f64,
    epoch: Instant,
    mut phase: watch::Receiver<u8>,
) {
    if let Err(e) = sio::join_room(&mut ws, &ns, &room, Duration::from_secs(30)).await {
        sh.joins.record(false);
        sh.errors.note(&format!("join_room: {e:#}"));
        return;
    }
    sh.joins.record(true);
    let ok = memchr::memmem::Finder::new(b"\"ok\":true");
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let mut outstanding: HashMap<u64, Instant> = HashMap::new();
    let mut next_id = 0u64;
    let mut running = false;
    let timer = tokio::time::sleep(Duration::from_secs(86_400));
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() {
                    return;
                }
                match *phase.borrow_and_update() {
                    1 => {
                        running = true;
                        // Spread the first sends over one interval, by the golden ratio of
                        // the chatter's index. (This used the room name's length, which is
                        // the same for 90 of 100 chatters: they all sent at once, and the
                        // burst's queueing was the baseline's latency.)
                        let f = (index as f64 * 0.618_033_988_75).fract();
                        timer.as_mut().reset((Instant::now() + interval.mul_f64(f)).into());
                    }
                    3 => return,
                    _ => running = false,
                }
            }
            () = &mut timer, if running => {
                next_id += 1;
                let now = Instant::now();
                let t_us = (now - epoch).as_micros();
                let text = format!(
                    "42{ns}{next_id}[\"message\",{{\"type\":\"send_message\",\"data\":{{\"roomId\":\"{room}\",\"message\":\"t={t_us};k=0;n={next_id}\"}}}}]"
                );
                if ws.send(Message::text(text)).await.is_err() {
                    sh.disconnects.set(sh.disconnects.get() + 1);
                    return;
                }
                outstanding.insert(next_id, now);
                sh.inflight.set(sh.inflight.get() + 1);
                timer.as_mut().reset((now + interval).into());
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
                                if sh.measuring.get() {
                                    sh.acked.set(sh.acked.get() + 1);
                                    sh.acks.borrow_mut().record_us(t0.elapsed().as_micros() as u64);
                                }
                            } else {
                                sh.failed_acks.set(sh.failed_acks.get() + 1);
                                sh.errors.note(body);
                            }
                        }
                    }
                    Frame::Event(body) => {
                        sio::count_event(body);
                        if body.starts_with("[\"error\"") {
                            sh.errors.note(body);
                        }
                    }
                    Frame::Disconnect => {
                        sh.disconnects.set(sh.disconnects.get() + 1);
                        sh.errors.note("server sent DISCONNECT");
                        return;
                    }
                    Frame::Other => {}
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    sh.disconnects.set(sh.disconnects.get() + 1);
                    sh.errors.note("connection closed by the server");
                    return;
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

/// One flooding socket: `join_room { since: 0 }` with an ack, then `leave_room` with an ack,
/// again as soon as each is answered. A refusal (`ok: false`, e.g. `RATE_LIMITED`) is counted
/// and the loop goes on.
async fn flood(
    mut ws: Ws,
    room: Rc<str>,
    sh: Rc<Shared>,
    ns: Rc<str>,
    mut phase: watch::Receiver<u8>,
) -> anyhow::Result<()> {
    let ok = memchr::memmem::Finder::new(b"\"ok\":true");
    let rate_limited = memchr::memmem::Finder::new(b"RATE_LIMITED");
    let mut id = 0u64;
    // The unanswered event's ack id, and whether it is a join (else a leave).
    let mut waiting: Option<(u64, bool)> = None;
    let mut joined = false;
    let mut running = false;
    loop {
        if running && waiting.is_none() {
            id += 1;
            let (event, since) = if joined {
                ("leave_room", "")
            } else {
                ("join_room", ",\"since\":0")
            };
            let text = format!("42{ns}{id}[\"{event}\",{{\"roomId\":\"{room}\"{since}}}]");
            ws.send(Message::text(text)).await.context("flood send")?;
            waiting = Some((id, !joined));
        }
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                match *phase.borrow_and_update() {
                    1 => running = true,
                    3 => return Ok(()),
                    _ => running = false,
                }
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(s))) => match sio::classify(s.as_str(), &ns) {
                    Frame::Ping => {
                        let _ = ws.send(Message::text("3")).await;
                    }
                    Frame::Ack(a, body) if waiting.is_some_and(|(w, _)| w == a) => {
                        let is_join = waiting.take().is_some_and(|(_, j)| j);
                        let accepted = ok.find(body.as_bytes()).is_some();
                        if accepted {
                            joined = is_join;
                            if is_join {
                                sh.joins_ok.set(sh.joins_ok.get() + 1);
                            }
                        } else {
                            sh.joins_refused.set(sh.joins_refused.get() + 1);
                            if rate_limited.find(body.as_bytes()).is_some() {
                                sh.refused_rate_limited.set(sh.refused_rate_limited.get() + 1);
                            }
                        }
                    }
                    Frame::Event(body) => {
                        sio::count_event(body);
                        if body.starts_with("[\"chat_message\"") {
                            sh.replayed.set(sh.replayed.get() + 1);
                        } else if body.starts_with("[\"error\"") {
                            // The ack carries the refusal; the error event repeats it.
                            sh.flood_errors.set(sh.flood_errors.get() + 1);
                        }
                    }
                    Frame::Disconnect => {
                        sh.disconnects.set(sh.disconnects.get() + 1);
                        sh.errors.note("flood socket: server sent DISCONNECT");
                        return Ok(());
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    sh.disconnects.set(sh.disconnects.get() + 1);
                    sh.errors.note("flood socket: closed by the server");
                    return Ok(());
                }
                Some(Ok(_)) => {}
            }
        }
    }
}
