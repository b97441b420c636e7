//! `storm`: a reconnect storm. N clients of one tenant in rooms of K chat at R msgs/s each; then
//! the load generator stops the chat, sends SIGTERM to the server (`--server-pid`), waits for it
//! to exit and starts it again (`--restart-cmd`, run with `sh -c "exec ..."` so the new pid is
//! the server's). Every client reconnects on its own, with socket.io-client's backoff and
//! jitter, and rejoins its room with `since` = the last `seq` it saw, while a backend posts
//! `--posts-per-room` messages to every room over HTTP (retrying while the server is down).
//! At the end every client's received seqs are compared with the stored history of its room
//! (`GET /api/v1/rooms/{roomId}/messages`): missed and duplicated must both be 0.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::sio::{self, Frame, Target, Ws};
use crate::stats::{self, Hist};
use crate::{Common, Outcome, Tenants, say};

#[derive(Args, Debug)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clients (one user each; `--tenants none` is taken as `one`).
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub clients: usize,
    /// Clients per room.
    #[arg(long, short = 'k', default_value_t = 10)]
    pub room_size: usize,
    /// Messages per second each client sends before the restart.
    #[arg(long, default_value_t = 0.2)]
    pub rate: f64,
    /// Seconds of chat before the restart.
    #[arg(long, default_value_t = 5.0)]
    pub chat_secs: f64,
    /// Shell command that starts the server again on the same address (`exec`ed by `sh -c`;
    /// its stdout is discarded: redirect it in the command to keep the log).
    #[arg(long)]
    pub restart_cmd: String,
    /// Messages the backend posts to every room over HTTP from the restart on.
    #[arg(long, default_value_t = 5)]
    pub posts_per_room: usize,
    /// Keep-alive HTTP connections of the backend.
    #[arg(long, default_value_t = 8)]
    pub http_connections: usize,
    /// Seconds one HTTP request may take before it counts as timed out (and is retried).
    #[arg(long, default_value_t = 10.0)]
    pub http_timeout: f64,
    /// API key (`Authorization: Bearer`).
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Seconds after the restart to give up waiting for recovery.
    #[arg(long, default_value_t = 60.0)]
    pub recover_timeout: f64,
    /// Recovery is over when everyone rejoined, every post was stored and no message came for
    /// this long (ms).
    #[arg(long, default_value_t = 1000)]
    pub quiet_ms: u64,
    /// socket.io-client `reconnectionDelay` (ms): the first delay, doubled per failed attempt.
    #[arg(long, default_value_t = 1000)]
    pub reconnect_delay_ms: u64,
    /// socket.io-client `reconnectionDelayMax` (ms).
    #[arg(long, default_value_t = 5000)]
    pub reconnect_delay_max_ms: u64,
    /// socket.io-client `randomizationFactor`: each delay is scaled by 1 ± this, at random.
    #[arg(long, default_value_t = 0.5)]
    pub jitter: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Wait,
    Chat,
    Quiet,
    Stop,
}

/// What one client saw, for the final comparison with the stored history.
#[derive(Default)]
struct Rec {
    seqs: RefCell<BTreeSet<u64>>,
    dups: Cell<u64>,
    last_new: Cell<Option<Instant>>,
    rejoined: Cell<Option<Instant>>,
}

#[derive(Default)]
struct Shared {
    joins: sio::Joins,
    errors: stats::Errors,
    /// Successful reconnects: attempt start → `connected`.
    storm_connect: RefCell<Hist>,
    attempts: Cell<u64>,
    refused: Cell<u64>,
    timeouts: Cell<u64>,
    other_failures: Cell<u64>,
    rejoined: Cell<usize>,
    server_disconnects: Cell<u64>,
    sent: Cell<u64>,
    last_receipt: Cell<Option<Instant>>,
    posts_ok: Cell<u64>,
    posts_retried: Cell<u64>,
    post_timeouts: Cell<u64>,
    post_bad_status: Cell<u64>,
}

struct Cfg {
    ns: Rc<str>,
    target: Target,
    rate: f64,
    base: Duration,
    max: Duration,
    jitter: f64,
    sem: Rc<Semaphore>,
    epoch: Instant,
    n: usize,
}

pub async fn run(a: StormArgs) -> anyhow::Result<Outcome> {
    let mut c = a.common.clone();
    if c.tenants == Tenants::None {
        c.tenants = Tenants::One;
    }
    let pid = c
        .server_pid
        .context("storm needs --server-pid (the server it restarts)")?;
    anyhow::ensure!(a.room_size >= 1, "--room-size must be at least 1");
    let t = c.target();
    let prefix = c.prefix();
    let minter = c.minter();
    let rooms = a.clients.div_ceil(a.room_size);
    let ranges: Vec<_> = (0..rooms)
        .map(|r| r * a.room_size..((r + 1) * a.room_size).min(a.clients))
        .collect();
    for r in &ranges {
        let first = c.tenants.of(r.start);
        anyhow::ensure!(
            r.clone().all(|i| c.tenants.of(i) == first),
            "--tenants {} splits a room over tenants",
            c.tenants.name()
        );
    }
    let room_of = |i: usize| format!("{prefix}-s{}", i / a.room_size);
    // The fresh server's own footprint: the per-client figure is the peak above it.
    let rss_at_start = stats::rss_kib(pid);
    say!("storm: opening {} connections to {}", a.clients, c.addr);
    let tokens: Vec<String> = (0..a.clients)
        .map(|i| c.token(&minter, &prefix, i))
        .collect();
    let opened = sio::open_many(&t, a.clients, c.connect_rate, c.connect_inflight, |i| {
        tokens[i].clone()
    })
    .await;
    opened.ensure_all()?;
    let initial_connect = opened.summary();
    let sh = Rc::new(Shared::default());
    let cfg = Rc::new(Cfg {
        ns: t.ns_prefix().into(),
        target: t.clone(),
        rate: a.rate,
        base: Duration::from_millis(a.reconnect_delay_ms),
        max: Duration::from_millis(a.reconnect_delay_max_ms.max(a.reconnect_delay_ms)),
        jitter: a.jitter.clamp(0.0, 1.0),
        sem: Rc::new(Semaphore::new(c.connect_inflight.max(1))),
        epoch: Instant::now(),
        n: a.clients,
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Wait);
    let recs: Vec<Rc<Rec>> = (0..a.clients).map(|_| Rc::new(Rec::default())).collect();
    let mut tasks = Vec::with_capacity(a.clients);
    for (i, ws) in opened.sockets.into_iter().enumerate() {
        let ws = ws.expect("every connect succeeded");
        tasks.push(tokio::task::spawn_local(client(
            i,
            ws,
            room_of(i).into(),
            tokens[i].clone().into(),
            sh.clone(),
            recs[i].clone(),
            cfg.clone(),
            phase_rx.clone(),
        )));
    }
    drop(tokens);
    let deadline = Instant::now() + Duration::from_secs(60);
    if let Err(e) = sh.joins.wait_all(a.clients, deadline, &sh.errors).await {
        let _ = phase_tx.send(Phase::Stop);
        return Err(e);
    }
    say!(
        "storm: all {} joined; chatting {} s",
        a.clients,
        a.chat_secs
    );
    let _ = phase_tx.send(Phase::Chat);
    tokio::time::sleep(Duration::from_secs_f64(a.chat_secs)).await;
    let _ = phase_tx.send(Phase::Quiet);
    let rss_before_kib = stats::rss_kib(pid);

    // The restart.
    let sigterm_at = Instant::now();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .context("running kill")?;
    anyhow::ensure!(st.success(), "kill -TERM {pid} failed");
    let exit_deadline = sigterm_at + Duration::from_secs(30);
    while alive(pid) {
        if Instant::now() > exit_deadline {
            bail!("server {pid} still alive 30 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exited_at = Instant::now();
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec {}", a.restart_cmd))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting --restart-cmd")?;
    let restart_at = Instant::now();
    let new_pid = child.id();
    say!(
        "storm: server {pid} exited {:.2} s after SIGTERM; restarted as {new_pid}",
        (exited_at - sigterm_at).as_secs_f64()
    );

    // Peak RSS of the new process, sampled (VmHWM is read at the end as well).
    let peak_rss = Rc::new(Cell::new(0u64));
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampler = {
        let (peak, mut stop) = (peak_rss.clone(), stop_rx.clone());
        tokio::task::spawn_local(async move {
            loop {
                if let Some(r) = stats::rss_kib(new_pid) {
                    peak.set(peak.get().max(r));
                }
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        })
    };

    // The backend: posts_per_room messages to every room, retried until stored.
    let jobs: Rc<RefCell<Vec<(usize, usize)>>> = Rc::new(RefCell::new(
        (0..a.posts_per_room)
            .rev()
            .flat_map(|p| (0..rooms).rev().map(move |r| (r, p)))
            .collect(),
    ));
    let give_up = restart_at + Duration::from_secs_f64(a.recover_timeout);
    let mut posters = Vec::new();
    for _ in 0..a.http_connections.max(1) {
        let (jobs, sh, key) = (jobs.clone(), sh.clone(), a.api_key.clone());
        let (addr, prefix) = (c.addr, prefix.clone());
        let tenants = c.tenants;
        let (room_size, http_timeout) = (a.room_size, Duration::from_secs_f64(a.http_timeout));
        posters.push(tokio::task::spawn_local(async move {
            let mut http = crate::http::Client::new(addr);
            loop {
                let Some((r, p)) = jobs.borrow_mut().pop() else {
                    break;
                };
                let tenant = tenants.of(r * room_size).map(|t| format!("{prefix}-t{t}"));
                let body = json!({
                    "tenantId": tenant,
                    "userId": format!("{prefix}-backend"),
                    "message": format!("storm post {p} to room {r}"),
                })
                .to_string();
                let path = format!("/api/v1/rooms/{prefix}-s{r}/messages");
                loop {
                    if Instant::now() > give_up {
                        return;
                    }
                    match tokio::time::timeout(http_timeout, http.post(&path, &key, &body)).await {
                        Ok(Ok((201, _))) => {
                            sh.posts_ok.set(sh.posts_ok.get() + 1);
                            break;
                        }
                        Ok(Ok((s, resp))) => {
                            sh.post_bad_status.set(sh.post_bad_status.get() + 1);
                            sh.errors.note(&format!(
                                "HTTP {s} from {path}: {}",
                                String::from_utf8_lossy(&resp)
                            ));
                            if (400..500).contains(&s) && s != 429 {
                                break;
                            }
                        }
                        Ok(Err(_)) => {
                            // The server is not up yet (refused) or closed the connection.
                            sh.posts_retried.set(sh.posts_retried.get() + 1);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(_) => {
                            // A timed-out request may still be stored: the history decides.
                            sh.post_timeouts.set(sh.post_timeouts.get() + 1);
                            http = crate::http::Client::new(addr);
                            break;
                        }
                    }
                }
            }
        }));
    }
    let posts_total = (rooms * a.posts_per_room) as u64;
    let quiet = Duration::from_millis(a.quiet_ms);
    let mut posts_done_at = None;
    loop {
        let now = Instant::now();
        if posts_done_at.is_none() && posters.iter().all(|p| p.is_finished()) {
            posts_done_at = Some(now);
        }
        let settled = sh.last_receipt.get().is_none_or(|l| now - l >= quiet);
        if posts_done_at.is_some() && sh.rejoined.get() >= a.clients && settled {
            break;
        }
        if now > give_up {
            say!("storm: recovery timed out after {} s", a.recover_timeout);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in posters {
        p.abort();
    }
    // The stored history of every room (stable now: the chat stopped, the posts are answered).
    let mut http = crate::http::Client::new(c.addr);
    let mut stored_by_room = Vec::with_capacity(rooms);
    for r in 0..rooms {
        let tenant = c
            .tenants
            .of(r * a.room_size)
            .map(|t| format!("{prefix}-t{t}"));
        let stored = history(
            &mut http,
            &a.api_key,
            &format!("{prefix}-s{r}"),
            tenant.as_deref(),
        )
        .await
        .with_context(|| format!("reading the history of room {r}"))?;
        stored_by_room.push(stored);
    }
    let stored_total: u64 = stored_by_room.iter().map(|s| s.len() as u64).sum();
    // Compare each client with its room; a replay still on its way gets until the deadline.
    let compare = || {
        let (mut missed, mut extra, mut dups, mut incomplete) = (0u64, 0u64, 0u64, 0u64);
        let mut recovered: Option<Instant> = Some(restart_at);
        for (r, members) in ranges.iter().enumerate() {
            let stored = &stored_by_room[r];
            for i in members.clone() {
                let rec = &recs[i];
                let got = rec.seqs.borrow();
                let m = stored.difference(&got).count() as u64;
                missed += m;
                extra += got.difference(stored).count() as u64;
                dups += rec.dups.get();
                if m > 0 || rec.rejoined.get().is_none() {
                    incomplete += 1;
                    recovered = None;
                } else if let Some(rc) = recovered.as_mut() {
                    let at = rec
                        .last_new
                        .get()
                        .into_iter()
                        .chain(rec.rejoined.get())
                        .max();
                    if let Some(at) = at {
                        *rc = (*rc).max(at);
                    }
                }
            }
        }
        (missed, extra, dups, incomplete, recovered)
    };
    let (missed, extra, dups, incomplete_clients, recovered) = loop {
        let res = compare();
        if res.3 == 0 || Instant::now() > give_up {
            break res;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = phase_tx.send(Phase::Stop);
    let _ = stop_tx.send(true);
    let _ = sampler.await;
    for t in tasks {
        t.abort();
        let _ = t.await;
    }
    let hwm = vm_hwm_kib(new_pid);
    let secs = |i: Instant| stats::round3((i - restart_at).as_secs_f64());
    let recovery_s = recovered.map(secs);
    let hist = sh.storm_connect.borrow();
    let rss_peak = hwm.unwrap_or(0).max(peak_rss.get());
    say!(
        "storm: recovery {:?} s, missed {missed}, duplicated {dups}, connect p99 {:.1} ms, refused {} timeouts {}, peak RSS {} KiB",
        recovery_s,
        hist.quantile_ms(0.99),
        sh.refused.get(),
        sh.timeouts.get(),
        rss_peak
    );
    let clean = missed == 0
        && dups == 0
        && extra == 0
        && recovery_s.is_some()
        && sh.posts_ok.get() == posts_total;
    Ok(Outcome {
        json: json!({
            "tenants": c.tenants.name(),
            "clients": a.clients,
            "room_size": a.room_size,
            "rooms": rooms,
            "rate_per_client": a.rate,
            "chat_secs": a.chat_secs,
            "initial_connect": initial_connect,
            "sent_before_restart": sh.sent.get(),
            "server_exit_s_after_sigterm": stats::round3((exited_at - sigterm_at).as_secs_f64()),
            "restarted_pid": new_pid,
            "recovery_s": recovery_s,
            "recovery_s_from_sigterm": recovered.map(|r| stats::round3((r - sigterm_at).as_secs_f64())),
            "incomplete_clients": incomplete_clients,
            "stored_messages": stored_total,
            "missed": missed,
            "duplicated": dups,
            "unknown_seqs": extra,
            "storm_connect": {
                "attempts": sh.attempts.get(),
                "ok": hist.count(),
                "refused": sh.refused.get(),
                "timeouts": sh.timeouts.get(),
                "other_failures": sh.other_failures.get(),
                "latency_ms": hist.summary_ms(),
            },
            "rejoined": sh.rejoined.get(),
            "server_disconnect_packets": sh.server_disconnects.get(),
            "posts": {
                "planned": posts_total,
                "stored": sh.posts_ok.get(),
                "retried_while_down": sh.posts_retried.get(),
                "timed_out": sh.post_timeouts.get(),
                "bad_status": sh.post_bad_status.get(),
                "done_s": posts_done_at.map(secs),
            },
            "server_rss_kib_at_start": rss_at_start,
            "server_rss_kib_before_restart": rss_before_kib,
            "restarted_peak_rss_kib": rss_peak,
            "restarted_peak_rss_per_client_kib": stats::round3(rss_peak as f64 / a.clients.max(1) as f64),
            // Above the first server's footprint before any client (as `idle` counts it).
            "restarted_peak_rss_per_client_kib_above_start": rss_at_start.map(|b| {
                stats::round3(rss_peak.saturating_sub(b) as f64 / a.clients.max(1) as f64)
            }),
            "errors": sh.errors.count(),
            "first_error": sh.errors.first(),
        }),
        clean,
        unavailable: false,
    })
}

/// Whether a process still runs (a zombie does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => !s
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) => false,
    }
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Every stored seq of a room, paging backwards over `GET /rooms/{roomId}/messages`.
pub async fn history(
    http: &mut crate::http::Client,
    key: &str,
    room: &str,
    tenant: Option<&str>,
) -> anyhow::Result<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    let mut before: Option<u64> = None;
    for _ in 0..1000 {
        let mut path = format!("/api/v1/rooms/{room}/messages?limit=1000");
        if let Some(t) = tenant {
            path.push_str(&format!("&tenantId={t}"));
        }
        if let Some(b) = before {
            path.push_str(&format!("&before={b}"));
        }
        let (status, body) = http.get(&path, key).await?;
        anyhow::ensure!(
            status == 200,
            "HTTP {status} from {path}: {}",
            String::from_utf8_lossy(&body)
        );
        let v: Value = serde_json::from_slice(&body).context("history JSON")?;
        for m in v["messages"].as_array().into_iter().flatten() {
            if let Some(s) = m["seq"].as_u64() {
                out.insert(s);
            }
        }
        match v["nextBefore"].as_u64() {
            Some(b) => before = Some(b),
            None => return Ok(out),
        }
    }
    bail!("history of {room} did not end")
}

/// A small xorshift: jitter needs no cryptographic randomness, and no dependency.
fn rand01(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

#[allow(clippy::too_many_arguments)]
async fn client(
    i: usize,
    ws: Ws,
    room: Rc<str>,
    token: Rc<str>,
    sh: Rc<Shared>,
    rec: Rc<Rec>,
    cfg: Rc<Cfg>,
    mut phase: watch::Receiver<Phase>,
) {
    let ns = cfg.ns.clone();
    let mut ws = ws;
    if let Err(e) = sio::join_room(&mut ws, &ns, &room, Duration::from_secs(30)).await {
        sh.joins.record(false);
        sh.errors.note(&format!("join_room: {e:#}"));
        return;
    }
    sh.joins.record(true);
    let mut rng = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let seq_finder = memchr::memmem::Finder::new(b"\"seq\":");
    let interval = Duration::from_secs_f64(1.0 / cfg.rate.max(1e-3));
    let mut round = 0u32;
    loop {
        // One session: read, send while chatting, until the connection ends.
        let mut next_send = None::<Instant>;
        let timer = tokio::time::sleep(Duration::from_secs(86_400));
        tokio::pin!(timer);
        let arm = |p: Phase, next: &mut Option<Instant>, rng: &mut u64| {
            *next = (p == Phase::Chat).then(|| Instant::now() + interval.mul_f64(rand01(rng)));
        };
        arm(*phase.borrow(), &mut next_send, &mut rng);
        if let Some(n) = next_send {
            timer.as_mut().reset(n.into());
        }
        let ended = loop {
            tokio::select! {
                biased;
                changed = phase.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let p = *phase.borrow_and_update();
                    if p == Phase::Stop {
                        return;
                    }
                    arm(p, &mut next_send, &mut rng);
                    if let Some(n) = next_send {
                        timer.as_mut().reset(n.into());
                    }
                }
                () = &mut timer, if next_send.is_some() => {
                    if *phase.borrow() != Phase::Chat {
                        next_send = None;
                        continue;
                    }
                    let t_us = cfg.epoch.elapsed().as_micros();
                    let text = format!(
                        "42{ns}[\"message\",{{\"type\":\"send_message\",\"data\":{{\"roomId\":\"{room}\",\"message\":\"t={t_us};k=1;c={i}\"}}}}]"
                    );
                    if ws.send(Message::text(text)).await.is_err() {
                        break "send failed";
                    }
                    sh.sent.set(sh.sent.get() + 1);
                    let n = Instant::now() + interval;
                    next_send = Some(n);
                    timer.as_mut().reset(n.into());
                }
                m = ws.next() => match m {
                    Some(Ok(Message::Text(s))) => match sio::classify(s.as_str(), &ns) {
                        Frame::Ping => {
                            let _ = ws.send(Message::text("3")).await;
                        }
                        Frame::Event(body) => {
                            sio::count_event(body);
                            if body.starts_with("[\"chat_message\"") {
                                let b = body.as_bytes();
                                if let Some(at) = seq_finder.find(b) {
                                    let digits: String = body[at + 6..]
                                        .chars()
                                        .take_while(char::is_ascii_digit)
                                        .collect();
                                    if let Ok(seq) = digits.parse::<u64>() {
                                        let now = Instant::now();
                                        sh.last_receipt.set(Some(now));
                                        if rec.seqs.borrow_mut().insert(seq) {
                                            rec.last_new.set(Some(now));
                                        } else {
                                            rec.dups.set(rec.dups.get() + 1);
                                        }
                                    }
                                }
                            } else if body.starts_with("[\"joined_room\"") {
                                if round > 0 && rec.rejoined.get().is_none() {
                                    rec.rejoined.set(Some(Instant::now()));
                                    sh.rejoined.set(sh.rejoined.get() + 1);
                                }
                            } else if body.starts_with("[\"error\"") {
                                sh.errors.note(body);
                            }
                        }
                        Frame::Disconnect => {
                            sh.server_disconnects.set(sh.server_disconnects.get() + 1);
                            break "server DISCONNECT";
                        }
                        _ => {}
                    },
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break "closed",
                    Some(Ok(_)) => {}
                }
            }
        };
        let _ = ended;
        drop(ws);
        // Reconnect like socket.io-client: delay = min(base·2^attempt, max) · (1 ± jitter).
        let mut attempt = 0u32;
        ws = loop {
            let backoff = cfg
                .base
                .saturating_mul(1u32 << attempt.min(16))
                .min(cfg.max);
            let f = 1.0 + cfg.jitter * (2.0 * rand01(&mut rng) - 1.0);
            let wait = backoff.mul_f64(f.max(0.0));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = phase.changed() => {
                    if changed.is_err() || *phase.borrow_and_update() == Phase::Stop {
                        return;
                    }
                    continue;
                }
            }
            attempt += 1;
            round += 1;
            let Ok(permit) = cfg.sem.acquire().await else {
                return;
            };
            sh.attempts.set(sh.attempts.get() + 1);
            // A new stretch of source ports per attempt.
            let mut t = cfg.target.clone();
            let stride = (cfg.n / t.sources.max(1) as usize + 1) as u32;
            t.port_offset = ((t.port_offset as u32 + round * stride) % 50_000) as u16;
            let began = Instant::now();
            let res = sio::connect(&t, i, &token).await;
            drop(permit);
            match res {
                Ok(w) => {
                    sh.storm_connect
                        .borrow_mut()
                        .record_us(began.elapsed().as_micros() as u64);
                    break w;
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    if msg.contains("timed out") {
                        sh.timeouts.set(sh.timeouts.get() + 1);
                    } else if msg.contains("refused") {
                        sh.refused.set(sh.refused.get() + 1);
                    } else {
                        sh.other_failures.set(sh.other_failures.get() + 1);
                        sh.errors.note(&format!("reconnect: {msg}"));
                    }
                }
            }
        };
        // Rejoin from the last seq seen (0: everything stored).
        let since = rec.seqs.borrow().last().copied().unwrap_or(0);
        let join = format!("42{ns}[\"join_room\",{{\"roomId\":\"{room}\",\"since\":{since}}}]");
        if ws.send(Message::text(join)).await.is_err() {
            continue;
        }
    }
}
