//! `idle`: N authenticated connections opened at a set rate and held.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::sio::{self, Frame};
use crate::stats::{self, CpuMeter};
use crate::{Common, Outcome, say};

#[derive(Args, Debug)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub connections: usize,
    /// Seconds to hold them once all are open.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    /// Seconds to wait after the last connect before reading the server's RSS.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
}

pub async fn run(a: IdleArgs) -> anyhow::Result<Outcome> {
    let c = &a.common;
    let t = c.target();
    let prefix = c.prefix();
    let minter = c.minter();
    let rss_before = c.server_pid.and_then(stats::rss_kib);
    let server_cpu = c.server_pid.map(CpuMeter::start);
    let server_core = c.server_core.map(stats::CoreMeter::start);
    say!("idle: opening {} connections to {}", a.connections, c.addr);
    let tokens: Vec<String> = (0..a.connections)
        .map(|i| c.token(&minter, &prefix, i))
        .collect();
    let opened = sio::open_many(&t, a.connections, c.connect_rate, c.connect_inflight, |i| {
        tokens[i].clone()
    })
    .await;
    drop(tokens);
    let connect_cpu = server_cpu.as_ref().and_then(CpuMeter::percent);
    let connect_core = server_core.as_ref().and_then(stats::CoreMeter::percent);
    say!(
        "idle: {} open, {} failed, {:.0}/s",
        opened.ok,
        opened.failed,
        opened.rate()
    );
    let summary = opened.summary();
    let (ok, failed, rate) = (opened.ok, opened.failed, opened.rate());

    // Hold: answer pings, count the sockets the server closes.
    let dropped = Rc::new(Cell::new(0u64));
    let ns: Rc<str> = t.ns_prefix().into();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut holders = Vec::new();
    for ws in opened.sockets.into_iter().flatten() {
        let (dropped, ns, mut stop) = (dropped.clone(), ns.clone(), stop_rx.clone());
        holders.push(tokio::task::spawn_local(async move {
            let mut ws = ws;
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(s))) => match sio::classify(s.as_str(), &ns) {
                            Frame::Ping => { let _ = ws.send(Message::text("3")).await; }
                            Frame::Disconnect => { dropped.set(dropped.get() + 1); break; }
                            Frame::Event(body) => sio::count_event(body),
                            _ => {}
                        },
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            dropped.set(dropped.get() + 1);
                            break;
                        }
                        Some(Ok(_)) => {}
                    }
                }
            }
            ws
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    let rss_after = c.server_pid.and_then(stats::rss_kib);
    tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    let rss_end = c.server_pid.and_then(stats::rss_kib);
    let _ = stop_tx.send(true);
    let mut kept = Vec::with_capacity(holders.len());
    for h in holders {
        if let Ok(ws) = h.await {
            kept.push(ws);
        }
    }
    // Close politely and quickly; the process exit closes whatever is left.
    drop(kept);

    let per_conn = |rss: Option<u64>| match (rss_before, rss) {
        (Some(b), Some(a)) if ok > 0 => Some(stats::round3((a as f64 - b as f64) / ok as f64)),
        _ => None,
    };
    let clean = failed == 0 && dropped.get() == 0;
    Ok(Outcome {
        json: json!({
            "connections": a.connections,
            "connect": summary,
            "connect_rate_per_s": stats::round1(rate),
            "failures": failed,
            "dropped_while_held": dropped.get(),
            "hold_s": a.hold,
            "server_rss_kib": { "before": rss_before, "after_connect": rss_after, "end_of_hold": rss_end },
            "rss_per_conn_kib": per_conn(rss_after),
            "rss_per_conn_kib_end_of_hold": per_conn(rss_end),
            "server_cpu_pct_while_connecting": connect_cpu,
            "server_core_busy_pct_while_connecting": connect_core,
        }),
        clean,
        unavailable: false,
    })
}
