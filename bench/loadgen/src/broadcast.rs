//! `fanout` and `rooms`: clients in rooms, some of them sending `send_message` at a rate with a
//! timestamp inside the text (`t=<µs since start>;k=<step>;c=<client>`), every member counting
//! and timing the `chat_message`s it receives. The rate is stepped; each step runs for a fixed
//! time, then the run drains and checks loss before the next step.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::sio::{self, Frame, Ws};
use crate::stats::{self, CpuMeter, Hist};
use crate::{Common, Outcome, say};

/// How the rate is stepped and when a step counts as sustained.
#[derive(Args, Clone, Debug)]
pub struct Steps {
    /// Rates to step through, comma separated (msgs/s per sender), ascending.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    pub rates: Vec<f64>,
    /// Seconds each step sends for.
    #[arg(long, default_value_t = 5.0)]
    pub step_secs: f64,
    /// Seconds to wait for the last deliveries of a step before counting the rest lost.
    #[arg(long, default_value_t = 3.0)]
    pub drain_secs: f64,
    /// A step is sustained when its p99 is at most this (ms), nothing is lost and no error came.
    #[arg(long, default_value_t = 50.0)]
    pub slo_p99_ms: f64,
    /// Stop after this many steps in a row are not sustained (a single step can miss on an
    /// outlier: a slow fsync, another process on the core).
    #[arg(long, default_value_t = 2)]
    pub max_fails: u32,
    /// Run every step even after some are not sustained.
    #[arg(long)]
    pub no_stop: bool,
    /// Padding characters added to each message text.
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
    /// Seconds of sending at the first rate before the first step, not counted (JIT, caches).
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,
    /// Seconds to wait for all clients to join their rooms.
    #[arg(long, default_value_t = 60.0)]
    pub join_timeout: f64,
}

#[derive(Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Subscribers in the room (the publisher is one more member, not counted).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub subscribers: usize,
    /// Further nodes of a cluster (comma list of 127.0.0.x:port): the subscribers are spread
    /// round-robin over `--addr` and these, the publisher stays on `--addr`, and latency is
    /// also reported apart for receivers on the publisher's node and on the others.
    #[arg(long, value_delimiter = ',')]
    pub node_addrs: Vec<std::net::SocketAddr>,
    #[command(flatten)]
    pub steps: Steps,
}

#[derive(Args, Debug)]
pub struct RoomsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clients.
    #[arg(long, short = 'n', default_value_t = 5000)]
    pub clients: usize,
    /// Clients per room.
    #[arg(long, short = 'k', default_value_t = 10)]
    pub room_size: usize,
    #[command(flatten)]
    pub steps: Steps,
}

/// One client's part.
struct Role {
    room: Rc<str>,
    /// Index of the node it connects to (0: `--addr`).
    node: usize,
    sends: bool,
    /// Counts and times the `chat_message`s it receives.
    records: bool,
    /// Deliveries each of its messages should make (members of its room that record).
    fan: u64,
    /// Where in the send interval its first message goes (0..1), to spread senders.
    phase: f64,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Idle,
    Send {
        step: u32,
        start: Instant,
        end: Instant,
        rate: f64,
    },
    Stop,
}

#[derive(Default)]
struct StepStats {
    hist: Hist,
    /// Receivers on the sender's node, and on other nodes (cluster runs).
    same_node: Hist,
    cross_node: Hist,
    sent: u64,
    expected: u64,
    received: u64,
}

#[derive(Default)]
struct Shared {
    step: Cell<u32>,
    stats: RefCell<StepStats>,
    /// Deliveries of an earlier step that came after its drain.
    late: Cell<u64>,
    errors: stats::Errors,
    disconnects: Cell<u64>,
    joins: sio::Joins,
}

/// Rooms are scoped by tenant: every member of a room must be in the same one.
fn check_tenants(c: &Common, members: &[std::ops::Range<usize>]) -> anyhow::Result<()> {
    for r in members {
        let t = c.tenants.of(r.start);
        anyhow::ensure!(
            r.clone().all(|i| c.tenants.of(i) == t),
            "--tenants {} puts members of one room in different tenants (rooms are per tenant)",
            c.tenants.name()
        );
    }
    Ok(())
}

pub async fn run_fanout(a: FanoutArgs) -> anyhow::Result<Outcome> {
    let all = 0..a.subscribers + 1;
    check_tenants(&a.common, std::slice::from_ref(&all))?;
    let prefix = a.common.prefix();
    let room: Rc<str> = format!("{prefix}-fanout").into();
    let n = a.subscribers as u64;
    let nodes = 1 + a.node_addrs.len();
    let mut roles: Vec<Role> = (0..a.subscribers)
        .map(|i| Role {
            room: room.clone(),
            node: i % nodes,
            sends: false,
            records: true,
            fan: n,
            phase: 0.0,
        })
        .collect();
    roles.push(Role {
        room,
        node: 0,
        sends: true,
        records: false,
        fan: n,
        phase: 0.0,
    });
    let params = json!({
        "subscribers": a.subscribers,
        "publishers": 1,
        "nodes": nodes,
        "node_addrs": a.node_addrs.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
    });
    run(&a.common, &a.node_addrs, &a.steps, roles, &prefix, params).await
}

pub async fn run_rooms(a: RoomsArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(a.room_size >= 1, "--room-size must be at least 1");
    let prefix = a.common.prefix();
    let rooms = a.clients.div_ceil(a.room_size);
    let ranges: Vec<_> = (0..rooms)
        .map(|r| r * a.room_size..((r + 1) * a.room_size).min(a.clients))
        .collect();
    check_tenants(&a.common, &ranges)?;
    let names: Vec<Rc<str>> = (0..rooms)
        .map(|r| format!("{prefix}-r{r}").into())
        .collect();
    let roles = (0..a.clients)
        .map(|i| {
            let r = i / a.room_size;
            let members = a.room_size.min(a.clients - r * a.room_size) as u64;
            Role {
                room: names[r].clone(),
                node: 0,
                sends: true,
                records: true,
                fan: members,
                // Spread the senders evenly over the interval.
                phase: (i as f64 * 0.618_033_988_75).fract(),
            }
        })
        .collect();
    let params = json!({ "clients": a.clients, "room_size": a.room_size, "rooms": rooms });
    run(&a.common, &[], &a.steps, roles, &prefix, params).await
}

async fn run(
    c: &Common,
    node_addrs: &[std::net::SocketAddr],
    steps: &Steps,
    roles: Vec<Role>,
    prefix: &str,
    params: Value,
) -> anyhow::Result<Outcome> {
    let t = c.target();
    let minter = c.minter();
    let total = roles.len();
    say!("opening {total} connections to {}", c.addr);
    let tokens: Vec<String> = (0..total).map(|i| c.token(&minter, prefix, i)).collect();
    let mut targets = vec![t.clone()];
    targets.extend(
        node_addrs
            .iter()
            .map(|&addr| sio::Target { addr, ..t.clone() }),
    );
    let node_of: Vec<usize> = roles.iter().map(|r| r.node).collect();
    let opened = sio::open_spread(
        &targets,
        |i| node_of[i],
        total,
        c.connect_rate,
        c.connect_inflight,
        |i| tokens[i].clone(),
    )
    .await;
    say!(
        "{} open, {} failed, {:.0}/s",
        opened.ok,
        opened.failed,
        opened.rate()
    );
    opened.ensure_all()?;
    let connect = opened.summary();
    let epoch = Instant::now();
    let sh = Rc::new(Shared::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
    let ns: Rc<str> = t.ns_prefix().into();
    let join_timeout = Duration::from_secs_f64(steps.join_timeout);
    let pad: Rc<str> = "x".repeat(steps.pad).into();
    let senders = roles.iter().filter(|r| r.sends).count() as u64;
    let mut tasks = Vec::with_capacity(total);
    for (i, (ws, role)) in opened.sockets.into_iter().zip(roles).enumerate() {
        let ws = ws.expect("every connect succeeded");
        let ctx = Ctx {
            sh: sh.clone(),
            ns: ns.clone(),
            pad: pad.clone(),
            id: i,
            epoch,
        };
        tasks.push(tokio::task::spawn_local(client(
            ws,
            role,
            ctx,
            phase_rx.clone(),
            join_timeout,
        )));
    }
    // Every client in its room before the first step.
    let deadline = Instant::now() + join_timeout + Duration::from_secs(1);
    if let Err(e) = sh.joins.wait_all(total, deadline, &sh.errors).await {
        let _ = phase_tx.send(Phase::Stop);
        return Err(e);
    }
    say!("all {total} clients joined");
    // Errors while joining (none expected) are not counted against the steps.
    sh.errors.reset_count();

    if steps.warmup_secs > 0.0 && !steps.rates.is_empty() {
        // Step 0: counted nowhere.
        sh.step.set(0);
        *sh.stats.borrow_mut() = StepStats::default();
        let start = Instant::now() + Duration::from_millis(20);
        let end = start + Duration::from_secs_f64(steps.warmup_secs);
        let _ = phase_tx.send(Phase::Send {
            step: 0,
            start,
            end,
            rate: steps.rates[0],
        });
        tokio::time::sleep_until(end.into()).await;
        let _ = phase_tx.send(Phase::Idle);
        let drain_deadline = Instant::now() + Duration::from_secs_f64(steps.drain_secs);
        while Instant::now() < drain_deadline {
            let done = {
                let s = sh.stats.borrow();
                s.received >= s.expected
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let warm = std::mem::take(&mut *sh.stats.borrow_mut());
        say!(
            "warm-up: sent {} received {}/{} p99 {:.2} ms",
            warm.sent,
            warm.received,
            warm.expected,
            warm.hist.quantile_ms(0.99)
        );
        sh.errors.reset_count();
        sh.late.set(0);
    }

    let mut results = Vec::new();
    let mut best: Option<Value> = None;
    let mut fails_in_a_row = 0u32;
    let mut misses_below = 0u32;
    let mut all_clean = true;
    for (si, &rate) in steps.rates.iter().enumerate() {
        let step = si as u32 + 1;
        sh.step.set(step);
        *sh.stats.borrow_mut() = StepStats::default();
        let (errors0, disc0, late0) = (sh.errors.count(), sh.disconnects.get(), sh.late.get());
        let start = Instant::now() + Duration::from_millis(20);
        let end = start + Duration::from_secs_f64(steps.step_secs);
        let me = CpuMeter::start(std::process::id());
        let server = c.server_pid.map(CpuMeter::start);
        let core = c.server_core.map(stats::CoreMeter::start);
        let _ = phase_tx.send(Phase::Send {
            step,
            start,
            end,
            rate,
        });
        tokio::time::sleep_until(end.into()).await;
        let _ = phase_tx.send(Phase::Idle);
        let (cpu_me, cpu_server) = (me.percent(), server.as_ref().and_then(CpuMeter::percent));
        let core_busy = core.as_ref().and_then(stats::CoreMeter::percent);
        let drain_deadline = Instant::now() + Duration::from_secs_f64(steps.drain_secs);
        loop {
            let done = {
                let s = sh.stats.borrow();
                s.received >= s.expected
            };
            if done || Instant::now() >= drain_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let s = std::mem::take(&mut *sh.stats.borrow_mut());
        sh.step.set(0);
        let planned = (senders as f64 * rate * steps.step_secs).round() as u64;
        let lost = s.expected.saturating_sub(s.received);
        let errors = sh.errors.count() - errors0;
        let disconnects = sh.disconnects.get() - disc0;
        let p99 = s.hist.quantile_ms(0.99);
        let kept_up = s.sent as f64 >= 0.99 * planned as f64;
        let sustained =
            lost == 0 && errors == 0 && disconnects == 0 && kept_up && p99 <= steps.slo_p99_ms;
        all_clean &= lost == 0 && errors == 0 && disconnects == 0;
        let r = json!({
            "step": step,
            "rate_per_sender": rate,
            "planned": planned,
            "sent": s.sent,
            "sent_per_s": stats::round1(s.sent as f64 / steps.step_secs),
            "expected": s.expected,
            "received": s.received,
            "delivered_per_s": stats::round1(s.received as f64 / steps.step_secs),
            "lost": lost,
            "duplicates": s.received.saturating_sub(s.expected),
            "late_from_earlier_steps": sh.late.get() - late0,
            "errors": errors,
            "disconnects": disconnects,
            "latency_ms": s.hist.summary_ms(),
            "latency_same_node_ms": s.same_node.summary_ms(),
            "latency_cross_node_ms": (!node_addrs.is_empty()).then(|| s.cross_node.summary_ms()),
            "sustained": sustained,
            "loadgen_cpu_pct": cpu_me,
            // The load generator's own core was (nearly) full: the figure is a lower bound.
            "loadgen_bound": cpu_me.is_some_and(|c| c >= 90.0),
            "server_cpu_pct": cpu_server,
            "server_core_busy_pct": core_busy,
        });
        say!(
            "step {step}: rate {rate}/s/sender sent {} delivered {:.0}/s p50 {:.2} p99 {:.2} max {:.2} ms lost {lost} errors {errors} loadgen {:?}% server {:?}% (core {:?}%) → {}",
            s.sent,
            s.received as f64 / steps.step_secs,
            s.hist.quantile_ms(0.5),
            p99,
            s.hist.max_ms(),
            cpu_me,
            cpu_server,
            core_busy,
            if sustained {
                "sustained"
            } else {
                "NOT sustained"
            }
        );
        if sustained {
            // The highest rate sustained before `max_fails` steps in a row were not; a single
            // miss below it is tolerated and counted (`misses_below_max`).
            misses_below += fails_in_a_row;
            best = Some(r.clone());
            fails_in_a_row = 0;
        } else {
            fails_in_a_row += 1;
        }
        results.push(r);
        if fails_in_a_row >= steps.max_fails.max(1) && !steps.no_stop {
            break;
        }
    }
    let _ = phase_tx.send(Phase::Stop);
    for t in tasks {
        t.abort();
        let _ = t.await;
    }
    let first_error = sh.errors.first();
    let max_sustained = best.as_ref().map(|b| {
        json!({
            "rate_per_sender": b["rate_per_sender"],
            "sent_per_s": b["sent_per_s"],
            "delivered_per_s": b["delivered_per_s"],
            "p99_ms": b["latency_ms"]["p99"],
        })
    });
    let mut out = json!({
        "connect": connect,
        "slo_p99_ms": steps.slo_p99_ms,
        "step_secs": steps.step_secs,
        "steps": results,
        "max_sustained": max_sustained,
        "misses_below_max": misses_below,
        "first_error": first_error,
    });
    if let (Value::Object(o), Value::Object(p)) = (&mut out, params) {
        for (k, v) in p {
            o.insert(k, v);
        }
    }
    Ok(Outcome {
        json: out,
        clean: all_clean,
        unavailable: false,
    })
}

struct Ctx {
    sh: Rc<Shared>,
    ns: Rc<str>,
    pad: Rc<str>,
    id: usize,
    epoch: Instant,
}

/// Far enough to never fire.
fn never() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}

async fn client(
    mut ws: Ws,
    role: Role,
    ctx: Ctx,
    mut phase: watch::Receiver<Phase>,
    join_timeout: Duration,
) {
    let sh = &ctx.sh;
    if let Err(e) = sio::join_room(&mut ws, &ctx.ns, &role.room, join_timeout).await {
        sh.joins.record(false);
        sh.errors.note(&format!("join_room: {e:#}"));
        return;
    }
    sh.joins.record(true);
    let finder = memchr::memmem::Finder::new(b"\"message\":\"t=");
    if !role.sends {
        // Receivers only read (the run aborts them at the end): no watch to poll per frame.
        drop(phase);
        while let Some(m) = ws.next().await {
            if !on_frame(&mut ws, m, &role, &ctx, &finder).await {
                return;
            }
        }
        sh.disconnects.set(sh.disconnects.get() + 1);
        sh.errors.note("connection closed by the server");
        return;
    }
    let timer = tokio::time::sleep_until(never());
    tokio::pin!(timer);
    // (step, next send, interval, end)
    let mut sched: Option<(u32, Instant, Duration, Instant)> = None;
    loop {
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
                let p = *phase.borrow_and_update();
                match p {
                    Phase::Send { step, start, end, rate } if role.sends && rate > 0.0 => {
                        let interval = Duration::from_secs_f64(1.0 / rate);
                        let first = start + interval.mul_f64(role.phase);
                        sched = Some((step, first, interval, end));
                        timer.as_mut().reset(first.into());
                    }
                    Phase::Stop => break,
                    _ => {
                        sched = None;
                        timer.as_mut().reset(never());
                    }
                }
            }
            () = &mut timer, if sched.is_some() => {
                let (step, mut next, interval, end) = sched.expect("scheduled");
                let now = Instant::now();
                let mut burst = 0;
                let mut failed = false;
                while next <= now && next < end && burst < 512 {
                    let t_us = (next - ctx.epoch).as_micros();
                    let text = format!(
                        "42{}[\"message\",{{\"type\":\"send_message\",\"data\":{{\"roomId\":\"{}\",\"message\":\"t={t_us};k={step};c={}{}\"}}}}]",
                        ctx.ns, role.room, ctx.id, ctx.pad
                    );
                    if ws.feed(Message::text(text)).await.is_err() {
                        failed = true;
                        break;
                    }
                    {
                        let mut s = sh.stats.borrow_mut();
                        s.sent += 1;
                        s.expected += role.fan;
                    }
                    next += interval;
                    burst += 1;
                }
                if failed || ws.flush().await.is_err() {
                    sh.disconnects.set(sh.disconnects.get() + 1);
                    break;
                }
                if next >= end {
                    sched = None;
                    timer.as_mut().reset(never());
                } else {
                    sched = Some((step, next, interval, end));
                    timer.as_mut().reset(next.max(now).into());
                }
            }
            m = ws.next() => {
                let Some(m) = m else {
                    sh.disconnects.set(sh.disconnects.get() + 1);
                    sh.errors.note("connection closed by the server");
                    break;
                };
                if !on_frame(&mut ws, m, &role, &ctx, &finder).await {
                    break;
                }
            }
        }
    }
}

type WsItem = Result<Message, tokio_tungstenite::tungstenite::Error>;

/// Handles one incoming frame; false when the connection is over.
async fn on_frame(
    ws: &mut Ws,
    m: WsItem,
    role: &Role,
    ctx: &Ctx,
    finder: &memchr::memmem::Finder<'_>,
) -> bool {
    let sh = &ctx.sh;
    match m {
        Ok(Message::Text(s)) => match sio::classify(s.as_str(), &ctx.ns) {
            Frame::Ping => {
                let _ = ws.send(Message::text("3")).await;
            }
            Frame::Event(body) => {
                sio::count_event(body);
                if body.starts_with("[\"chat_message\"") {
                    if role.records {
                        match sio::marker(body, finder) {
                            Some((t, k)) => {
                                let now = ctx.epoch.elapsed().as_micros() as u64;
                                if k == sh.step.get() {
                                    let mut st = sh.stats.borrow_mut();
                                    st.received += 1;
                                    let us = now.saturating_sub(t);
                                    st.hist.record_us(us);
                                    // Only the fan-out's publisher sends from a fixed node (0).
                                    if role.node == 0 {
                                        st.same_node.record_us(us);
                                    } else {
                                        st.cross_node.record_us(us);
                                    }
                                } else {
                                    sh.late.set(sh.late.get() + 1);
                                }
                            }
                            None => sh
                                .errors
                                .note(&format!("chat_message without a marker: {body}")),
                        }
                    }
                } else if body.starts_with("[\"error\"") {
                    sh.errors.note(body);
                }
            }
            Frame::Disconnect => {
                sh.disconnects.set(sh.disconnects.get() + 1);
                sh.errors.note("server sent DISCONNECT");
                return false;
            }
            _ => {}
        },
        Ok(Message::Close(_)) | Err(_) => {
            sh.disconnects.set(sh.disconnects.get() + 1);
            sh.errors.note("connection closed by the server");
            return false;
        }
        Ok(_) => {}
    }
    true
}
