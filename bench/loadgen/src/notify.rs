//! `notify`: U connected users; notifications created over `POST /api/v1/notifications` at R/s
//! (round robin over the users, over P keep-alive HTTP connections); the end-to-end latency is
//! from just before the request is written to the `notification` event's arrival.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::sio::{self, Frame, Ws};
use crate::stats::{self, CpuMeter, Hist};
use crate::{Common, Outcome, say};

#[derive(Args, Debug)]
pub struct NotifyArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connected users (one connection each).
    #[arg(long, short = 'u', default_value_t = 1000)]
    pub users: usize,
    /// Notifications created per second (all users together).
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Seconds to create notifications for.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Keep-alive HTTP connections used to create them.
    #[arg(long, default_value_t = 16)]
    pub http_connections: usize,
    /// API key (`Authorization: Bearer`).
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Path of the endpoint.
    #[arg(long, default_value = "/api/v1/notifications")]
    pub path: String,
    /// Seconds to wait for the last notifications.
    #[arg(long, default_value_t = 3.0)]
    pub drain_secs: f64,
}

#[derive(Default)]
struct Shared {
    e2e: RefCell<Hist>,
    http: RefCell<Hist>,
    created: Cell<u64>,
    received: Cell<u64>,
    status_404: Cell<u64>,
    http_other: Cell<u64>,
    http_errors: Cell<u64>,
    errors: stats::Errors,
    unmarked: Cell<u64>,
    disconnects: Cell<u64>,
}

pub async fn run(a: NotifyArgs) -> anyhow::Result<Outcome> {
    let c = &a.common;
    let t = c.target();
    let prefix = c.prefix();
    let minter = c.minter();
    say!("notify: opening {} connections to {}", a.users, c.addr);
    let users: Vec<String> = (0..a.users).map(|i| format!("{prefix}-{i}")).collect();
    let opened = sio::open_many(&t, a.users, c.connect_rate, c.connect_inflight, |i| {
        c.token(&minter, &prefix, i)
    })
    .await;
    opened.ensure_all()?;
    let connect = opened.summary();
    let sh = Rc::new(Shared::default());
    let epoch = Instant::now();
    let ns: Rc<str> = t.ns_prefix().into();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for ws in opened.sockets.into_iter().flatten() {
        tasks.push(tokio::task::spawn_local(receiver(
            ws,
            sh.clone(),
            ns.clone(),
            epoch,
            stop_rx.clone(),
        )));
    }

    // HTTP workers take (user, t_us) jobs from one queue.
    let (job_tx, job_rx) = mpsc::channel::<(usize, u64)>(a.http_connections.max(1) * 64);
    let job_rx = Rc::new(tokio::sync::Mutex::new(job_rx));
    let users = Rc::new(users);
    let mut workers = Vec::new();
    for _ in 0..a.http_connections.max(1) {
        let (rx, sh, users) = (job_rx.clone(), sh.clone(), users.clone());
        let (addr, key, path) = (c.addr, a.api_key.clone(), a.path.clone());
        workers.push(tokio::task::spawn_local(async move {
            let mut http = crate::http::Client::new(addr);
            loop {
                let job = rx.lock().await.recv().await;
                let Some((u, t_us)) = job else { break };
                let body = json!({
                    "userId": users[u],
                    "title": "bench",
                    "message": format!("t={t_us};k=0;u={u}"),
                    "type": "info",
                })
                .to_string();
                let began = Instant::now();
                match http.post(&path, &key, &body).await {
                    Ok((status, resp)) => {
                        sh.http
                            .borrow_mut()
                            .record_us(began.elapsed().as_micros() as u64);
                        match status {
                            200..=299 => sh.created.set(sh.created.get() + 1),
                            404 => {
                                sh.status_404.set(sh.status_404.get() + 1);
                                sh.errors.note(&format!(
                                    "HTTP 404 from {path}: {}",
                                    String::from_utf8_lossy(&resp)
                                ));
                            }
                            s => {
                                sh.http_other.set(sh.http_other.get() + 1);
                                sh.errors.note(&format!(
                                    "HTTP {s} from {path}: {}",
                                    String::from_utf8_lossy(&resp)
                                ));
                            }
                        }
                    }
                    Err(e) => {
                        sh.http_errors.set(sh.http_errors.get() + 1);
                        sh.errors.note(&format!("HTTP request failed: {e:#}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    let me = CpuMeter::start(std::process::id());
    let server = c.server_pid.map(CpuMeter::start);
    let core = c.server_core.map(stats::CoreMeter::start);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.duration);
    let total = (a.rate * a.duration).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / a.rate.max(1e-3));
    let mut queued = 0u64;
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        // Stop early when the endpoint is missing: every request would be a 404.
        if sh.status_404.get() >= 10 && sh.created.get() == 0 {
            break;
        }
        let t_us = epoch.elapsed().as_micros() as u64;
        if job_tx
            .send(((i as usize) % users.len().max(1), t_us))
            .await
            .is_err()
        {
            break;
        }
        queued += 1;
    }
    drop(job_tx);
    for w in workers {
        let _ = w.await;
    }
    let sending_secs = start.elapsed().as_secs_f64();
    let (cpu_me, cpu_server) = (me.percent(), server.as_ref().and_then(CpuMeter::percent));
    let core_busy = core.as_ref().and_then(stats::CoreMeter::percent);
    let drain_deadline = Instant::now() + Duration::from_secs_f64(a.drain_secs);
    while sh.received.get() < sh.created.get() && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    let created = sh.created.get();
    let received = sh.received.get();
    let lost = created.saturating_sub(received);
    let unavailable = sh.status_404.get() > 0 && created == 0;
    let e2e = sh.e2e.borrow();
    if unavailable {
        say!(
            "notify: {} answered 404: the server has no notifications API",
            a.path
        );
    } else {
        say!(
            "notify: created {created} received {received} e2e p50 {:.2} p99 {:.2} ms",
            e2e.quantile_ms(0.5),
            e2e.quantile_ms(0.99)
        );
    }
    let clean = !unavailable
        && lost == 0
        && sh.http_other.get() == 0
        && sh.status_404.get() == 0
        && sh.http_errors.get() == 0
        && sh.disconnects.get() == 0
        && sh.unmarked.get() == 0;
    Ok(Outcome {
        json: json!({
            "status": if unavailable { "unavailable (HTTP 404)" } else { "ran" },
            "users": a.users,
            "rate_per_s": a.rate,
            "duration_s": a.duration,
            "connect": connect,
            "queued": queued,
            "created": created,
            "created_per_s": stats::round1(created as f64 / sending_secs),
            "received": received,
            "lost": lost,
            "http_404": sh.status_404.get(),
            "http_other_status": sh.http_other.get(),
            "http_errors": sh.http_errors.get(),
            "disconnects": sh.disconnects.get(),
            "e2e_latency_ms": e2e.summary_ms(),
            "http_latency_ms": sh.http.borrow().summary_ms(),
            "loadgen_cpu_pct": cpu_me,
            "server_cpu_pct": cpu_server,
            "server_core_busy_pct": core_busy,
            "first_error": sh.errors.first(),
        }),
        clean,
        unavailable,
    })
}

async fn receiver(
    mut ws: Ws,
    sh: Rc<Shared>,
    ns: Rc<str>,
    epoch: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let finder = memchr::memmem::Finder::new(b"\"message\":\"t=");
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(s))) => match sio::classify(s.as_str(), &ns) {
                    Frame::Ping => {
                        let _ = ws.send(Message::text("3")).await;
                    }
                    Frame::Event(body) if body.starts_with("[\"notification\"") => {
                        match sio::marker(body, &finder) {
                            Some((t, _)) => {
                                let now = epoch.elapsed().as_micros() as u64;
                                sh.received.set(sh.received.get() + 1);
                                sh.e2e.borrow_mut().record_us(now.saturating_sub(t));
                            }
                            None => sh.unmarked.set(sh.unmarked.get() + 1),
                        }
                    }
                    Frame::Event(body) => sio::count_event(body),
                    Frame::Disconnect => {
                        sh.disconnects.set(sh.disconnects.get() + 1);
                        break;
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    sh.disconnects.set(sh.disconnects.get() + 1);
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
    }
}
