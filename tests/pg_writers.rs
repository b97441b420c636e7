//! PostgreSQL under several writers: two store instances (two pools, as two gateway nodes would
//! have) append batches that touch the same rooms in opposite orders, concurrently. No batch may
//! fail (a deadlock aborts one) and every room's `seq`s must be exactly 1..N.
//!
//! Needs PostgreSQL (`TEST_POSTGRES_URL`, default the local server): required under `CI=true`,
//! skipped loudly elsewhere when it does not answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aegisx_realtime::domain::ids::{RoomId, RoomKey, TenantId, UserId};
use aegisx_realtime::domain::store::{NewMessage, Store};

#[path = "support/postgres.rs"]
mod postgres;

const STORE_TIMEOUT: Duration = Duration::from_secs(10);
const ROOMS: usize = 6;
const TASKS_PER_NODE: usize = 4;
const BATCHES_PER_TASK: usize = 30;

/// A fresh schema on the test server, dropped when the guard goes; `None` when PostgreSQL does
/// not answer outside CI.
struct Schema {
    admin: sqlx::PgPool,
    name: String,
    url: String,
}

impl Schema {
    async fn create() -> Option<Self> {
        let (admin, base) = postgres::admin("PostgreSQL writers test").await?;
        let name = format!("writers_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&admin)
            .await
            .expect("create schema");
        let url = postgres::in_schema(&base, &name);
        Some(Self { admin, name, url })
    }

    async fn drop(self) {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .execute(&self.admin)
            .await;
    }
}

fn room(i: usize) -> RoomKey {
    RoomKey::new(
        TenantId::parse_optional(Some("acme")).expect("tenant id"),
        RoomId::parse(&format!("room-{i}")).expect("room id"),
    )
}

fn message(key: &RoomKey, node: usize, task: usize, batch: usize, n: usize) -> NewMessage {
    NewMessage {
        id: uuid::Uuid::now_v7().to_string(),
        key: key.clone(),
        user_id: UserId::parse("writer").expect("user id"),
        user_name: "Writer".into(),
        message: format!("{node}/{task}/{batch}/{n}"),
        timestamp: "2026-01-01T00:00:00.000Z".into(),
    }
}

/// One batch touching every room, twice each, in ascending room order for node 0 and descending
/// for node 1: without a stable lock order, two such batches in flight deadlock.
fn batch(node: usize, task: usize, b: usize) -> Vec<NewMessage> {
    let order: Vec<usize> = if node == 0 {
        (0..ROOMS).collect()
    } else {
        (0..ROOMS).rev().collect()
    };
    let mut out = Vec::new();
    for round in 0..2 {
        for &r in &order {
            out.push(message(&room(r), node, task, b, round));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_writing_the_same_rooms_in_opposite_orders_never_deadlock_and_leave_no_gap() {
    let Some(schema) = Schema::create().await else {
        return;
    };
    // Migrations run on the first connect; the second store then finds the schema in place,
    // as a second node started after the first does.
    let node_a = aegisx_realtime::store::connect(&schema.url, STORE_TIMEOUT)
        .await
        .expect("node A store");
    let node_b = aegisx_realtime::store::connect(&schema.url, STORE_TIMEOUT)
        .await
        .expect("node B store");
    let nodes: [Arc<dyn Store>; 2] = [node_a, node_b];

    let mut tasks = tokio::task::JoinSet::new();
    for (n, store) in nodes.iter().enumerate() {
        for t in 0..TASKS_PER_NODE {
            let store = store.clone();
            tasks.spawn(async move {
                let mut failures = Vec::new();
                for b in 0..BATCHES_PER_TASK {
                    let batch = batch(n, t, b);
                    match store.append_messages(&batch).await {
                        Ok(stored) => {
                            // The store answers in batch order, and within a room a batch's
                            // messages get consecutive, increasing seqs.
                            assert_eq!(stored.len(), batch.len());
                            let mut last: BTreeMap<String, i64> = BTreeMap::new();
                            for (m, s) in batch.iter().zip(&stored) {
                                assert_eq!(m.id, s.id, "answer in batch order");
                                if let Some(prev) = last.insert(s.room_id.clone(), s.seq) {
                                    assert_eq!(s.seq, prev + 1, "consecutive within a batch");
                                }
                            }
                        }
                        Err(e) => failures.push(format!("node {n} task {t} batch {b}: {e}")),
                    }
                }
                failures
            });
        }
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failures.extend(done.expect("writer task panicked"));
    }

    // Every room holds 1..N exactly: no gap, no duplicate, nothing lost from a refused batch.
    let per_room = 2 * 2 * TASKS_PER_NODE * BATCHES_PER_TASK;
    let mut rooms_report = Vec::new();
    for r in 0..ROOMS {
        let key = room(r);
        let mut seqs = Vec::new();
        let mut after = 0;
        loop {
            let page = nodes[0]
                .messages_after(&key, after, 500)
                .await
                .expect("read back");
            let Some(last) = page.last() else { break };
            after = last.seq;
            seqs.extend(page.iter().map(|m| m.seq));
        }
        rooms_report.push((r, seqs));
    }
    schema.drop().await;

    assert!(
        failures.is_empty(),
        "{} of {} batches failed, first: {}",
        failures.len(),
        2 * TASKS_PER_NODE * BATCHES_PER_TASK,
        failures[0]
    );
    for (r, seqs) in rooms_report {
        let expected: Vec<i64> = (1..=per_room as i64).collect();
        assert_eq!(
            seqs, expected,
            "room-{r}: seqs must be exactly 1..{per_room}"
        );
    }
}
