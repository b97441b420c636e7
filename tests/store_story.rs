//! The storage story, run on SQLite (always) and PostgreSQL (`TEST_POSTGRES_URL`, default the
//! local server; required under `CI=true`, skipped loudly elsewhere when it does not answer).

use std::collections::BTreeSet;
use std::sync::Arc;

use aegisx_realtime::domain::ids::{RoomId, RoomKey, TenantId, UserId};
use aegisx_realtime::domain::store::{MarkRead, NewMessage, NewNotification, Store};

#[path = "support/postgres.rs"]
mod pg;

const STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn key(tenant: Option<&str>, room: &str) -> RoomKey {
    RoomKey::new(
        TenantId::parse_optional(tenant).unwrap(),
        RoomId::parse(room).unwrap(),
    )
}

fn user(u: &str) -> UserId {
    UserId::parse(u).unwrap()
}

fn msg(k: &RoomKey, text: &str) -> NewMessage {
    NewMessage {
        id: uuid::Uuid::now_v7().to_string(),
        key: k.clone(),
        user_id: user("alice"),
        user_name: "Alice".into(),
        message: text.into(),
        timestamp: "2026-01-01T00:00:00.000Z".into(),
    }
}

/// Opens a fresh, empty store of each backend. PostgreSQL gets its own schema per call.
struct Backend {
    name: &'static str,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/story.db", dir.path().display());
    Backend {
        name: "sqlite",
        url,
        _dir: Some(dir),
    }
}

async fn postgres() -> Option<Backend> {
    let (admin, base) = pg::admin("PostgreSQL store story").await?;
    // Schema names carry their creation time, so old runs' schemas are dropped here.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT schema_name::text FROM information_schema.schemata WHERE schema_name LIKE 'story\\_%'",
    )
    .fetch_all(&admin)
    .await
    .unwrap_or_default();
    for s in old {
        let created: u64 = s
            .split('_')
            .nth(1)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if created + 3600 < now {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                .execute(&admin)
                .await;
        }
    }
    let schema = format!("story_{now}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = pg::in_schema(&base, &schema);
    Some(Backend {
        name: "postgres",
        url,
        _dir: None,
    })
}

async fn open(b: &Backend) -> Arc<dyn Store> {
    aegisx_realtime::store::connect(&b.url, STORE_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", b.name))
}

async fn backends() -> Vec<Backend> {
    let mut v = vec![sqlite().await];
    v.extend(postgres().await);
    v
}

#[tokio::test]
async fn seq_is_per_room_per_tenant_and_strictly_increasing() {
    for b in backends().await {
        let store = open(&b).await;
        let (a_gen, b_gen, none_gen) = (
            key(Some("a"), "general"),
            key(Some("b"), "general"),
            key(None, "general"),
        );
        let batch = vec![
            msg(&a_gen, "1"),
            msg(&a_gen, "2"),
            msg(&b_gen, "x"),
            msg(&none_gen, "y"),
            msg(&a_gen, "3"),
        ];
        let stored = store.append_messages(&batch).await.unwrap();
        let seqs: Vec<i64> = stored.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![1, 2, 1, 1, 3], "{}", b.name);
        assert_eq!(stored[0].room_id, "general");
        let a = store.messages_after(&a_gen, 0, 100).await.unwrap();
        assert_eq!(
            a.iter().map(|m| m.message.as_str()).collect::<Vec<_>>(),
            ["1", "2", "3"],
            "{}",
            b.name
        );
        let only_b = store.messages_after(&b_gen, 0, 100).await.unwrap();
        assert_eq!(only_b.len(), 1, "tenants never share a room ({})", b.name);
        assert_eq!(
            store.messages_after(&a_gen, 2, 100).await.unwrap()[0].message,
            "3"
        );
    }
}

#[tokio::test]
async fn history_pages_backwards_in_ascending_order() {
    for b in backends().await {
        let store = open(&b).await;
        let k = key(Some("t"), "hist");
        let batch: Vec<_> = (1..=10).map(|i| msg(&k, &i.to_string())).collect();
        store.append_messages(&batch).await.unwrap();
        let last3 = store.messages_before(&k, None, 3).await.unwrap();
        assert_eq!(
            last3.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [8, 9, 10],
            "{}",
            b.name
        );
        let before8 = store.messages_before(&k, Some(8), 3).await.unwrap();
        assert_eq!(
            before8.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [5, 6, 7],
            "{}",
            b.name
        );
        let after = store.messages_after(&k, 7, 2).await.unwrap();
        assert_eq!(
            after.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [8, 9],
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn concurrent_writers_on_several_nodes_get_distinct_gap_free_seqs() {
    for b in backends().await {
        // Separate stores (pools) stand for separate nodes sharing the database.
        let mut nodes: Vec<Arc<dyn Store>> = Vec::new();
        for _ in 0..4 {
            nodes.push(open(&b).await);
        }
        let k = key(Some("t"), "busy");
        let mut tasks = Vec::new();
        for (n, store) in nodes.iter().enumerate() {
            for w in 0..2 {
                let (store, k) = (store.clone(), k.clone());
                tasks.push(tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for i in 0..20 {
                        let size = 1 + (n + w + i) % 4;
                        let batch: Vec<_> = (0..size).map(|_| msg(&k, "m")).collect();
                        seqs.extend(
                            store
                                .append_messages(&batch)
                                .await
                                .unwrap()
                                .into_iter()
                                .map(|m| m.seq),
                        );
                    }
                    seqs
                }));
            }
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let unique: BTreeSet<i64> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "no seq given twice ({})", b.name);
        let expected: BTreeSet<i64> = (1..=all.len() as i64).collect();
        assert_eq!(unique, expected, "no gap ({})", b.name);
        let read = nodes[0].messages_after(&k, 0, 10_000).await.unwrap();
        assert_eq!(
            read.len(),
            all.len(),
            "every committed message is visible ({})",
            b.name
        );
        assert!(
            read.windows(2).all(|w| w[0].seq + 1 == w[1].seq),
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn notifications_are_listed_newest_first_and_read_by_their_recipient_only() {
    for b in backends().await {
        let store = open(&b).await;
        let u = user("bob");
        let mut ids = Vec::new();
        for i in 0..3 {
            let n = store
                .insert_notification(&NewNotification {
                    id: uuid::Uuid::now_v7().to_string(),
                    user_id: u.clone(),
                    tenant: TenantId::parse_optional(Some("t")).unwrap(),
                    title: format!("t{i}"),
                    message: "m".into(),
                    kind: "info".into(),
                    timestamp: format!("2026-01-01T00:00:0{i}.000Z"),
                })
                .await
                .unwrap();
            assert_eq!(n.read_at, None);
            ids.push(n.id);
        }
        let list = store.list_notifications(&u, false, 50).await.unwrap();
        assert_eq!(
            list.iter().map(|n| n.title.as_str()).collect::<Vec<_>>(),
            ["t2", "t1", "t0"],
            "{}",
            b.name
        );
        assert_eq!(list[0].tenant_id.as_deref(), Some("t"));
        let at = "2026-01-02T00:00:00.000Z";
        let t = TenantId::parse_optional(Some("t")).unwrap();
        let t = t.as_ref();
        assert_eq!(
            store
                .mark_notification_read(&user("eve"), t, &ids[0], at)
                .await
                .unwrap(),
            MarkRead::NotFound
        );
        assert_eq!(
            store
                .mark_notification_read(&u, t, &ids[0], at)
                .await
                .unwrap(),
            MarkRead::Marked { scoped: true }
        );
        assert_eq!(
            store
                .mark_notification_read(&u, t, &ids[0], at)
                .await
                .unwrap(),
            MarkRead::AlreadyRead { scoped: true }
        );
        assert_eq!(
            store
                .mark_notification_read(&u, t, "nope", at)
                .await
                .unwrap(),
            MarkRead::NotFound
        );
        let unread = store.list_notifications(&u, true, 50).await.unwrap();
        assert_eq!(unread.len(), 2, "{}", b.name);
        let all = store.list_notifications(&u, false, 1).await.unwrap();
        assert_eq!(all.len(), 1, "limit applies ({})", b.name);
    }
}

#[tokio::test]
async fn private_room_grants_are_scoped_and_revocable() {
    for b in backends().await {
        let store = open(&b).await;
        let k = key(Some("t"), "private:ops");
        let other_tenant = key(Some("u"), "private:ops");
        let at = "2026-01-01T00:00:00.000Z";
        assert!(!store.has_grant(&k, &user("carol")).await.unwrap());
        assert!(store.grant_room(&k, &user("carol"), at).await.unwrap());
        assert!(
            !store.grant_room(&k, &user("carol"), at).await.unwrap(),
            "granting twice is a no-op"
        );
        assert!(store.has_grant(&k, &user("carol")).await.unwrap());
        assert!(
            !store
                .has_grant(&other_tenant, &user("carol"))
                .await
                .unwrap(),
            "{}",
            b.name
        );
        assert!(store.revoke_room(&k, &user("carol")).await.unwrap());
        assert!(!store.revoke_room(&k, &user("carol")).await.unwrap());
        assert!(!store.has_grant(&k, &user("carol")).await.unwrap());
        store.ping().await.unwrap();
    }
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    for b in backends().await {
        let k = key(None, "keep");
        open(&b)
            .await
            .append_messages(&[msg(&k, "durable")])
            .await
            .unwrap();
        let again = open(&b).await;
        let read = again.messages_after(&k, 0, 10).await.unwrap();
        assert_eq!(read.len(), 1, "{}", b.name);
        assert_eq!(read[0].message, "durable");
        assert_eq!(
            again.append_messages(&[msg(&k, "next")]).await.unwrap()[0].seq,
            2
        );
    }
}

#[tokio::test]
async fn unsupported_urls_are_refused_with_the_password_redacted() {
    let err = aegisx_realtime::store::connect("mysql://u:hunter2@h/db", STORE_TIMEOUT)
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(text.contains("unsupported"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn a_notification_with_a_tenant_is_read_only_from_that_tenant() {
    for b in backends().await {
        let store = open(&b).await;
        let u = user("carol");
        let (ta, tb) = (
            TenantId::parse_optional(Some("a")).unwrap(),
            TenantId::parse_optional(Some("b")).unwrap(),
        );
        let new = |tenant: Option<TenantId>| NewNotification {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: u.clone(),
            tenant,
            title: "t".into(),
            message: "m".into(),
            kind: "info".into(),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
        };
        let scoped = store.insert_notification(&new(ta.clone())).await.unwrap();
        let global = store.insert_notification(&new(None)).await.unwrap();
        let at = "2026-01-02T00:00:00.000Z";
        for from in [tb.as_ref(), None] {
            assert_eq!(
                store
                    .mark_notification_read(&u, from, &scoped.id, at)
                    .await
                    .unwrap(),
                MarkRead::NotFound,
                "{} from {from:?}",
                b.name
            );
        }
        assert_eq!(
            store
                .mark_notification_read(&u, ta.as_ref(), &scoped.id, at)
                .await
                .unwrap(),
            MarkRead::Marked { scoped: true },
            "{}",
            b.name
        );
        assert_eq!(
            store
                .mark_notification_read(&u, tb.as_ref(), &global.id, at)
                .await
                .unwrap(),
            MarkRead::Marked { scoped: false },
            "{}",
            b.name
        );
    }
}

/// PostgreSQL text cannot hold NUL: the whole batch fails, as a refusal (the database answered),
/// which is why the domain refuses NUL up front and the chat writer retries a refused batch
/// message by message. The same messages without the NUL commit.
#[tokio::test]
async fn postgres_refuses_a_batch_holding_a_nul_and_the_others_commit_alone() {
    let Some(b) = postgres().await else { return };
    let store = open(&b).await;
    let k = key(Some("nul"), "general");
    let batch = vec![msg(&k, "fine"), msg(&k, "bad\0nul"), msg(&k, "fine too")];
    let err = store.append_messages(&batch).await.unwrap_err();
    assert!(err.is_refusal(), "a refusal, not an outage: {err}");
    assert!(store.messages_after(&k, 0, 10).await.unwrap().is_empty());
    for m in [&batch[0], &batch[2]] {
        store
            .append_messages(std::slice::from_ref(m))
            .await
            .unwrap();
    }
    let seqs: Vec<i64> = store
        .messages_after(&k, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, [1, 2], "the refused batch used no seq");
}

/// A database that stops answering without closing the connection: every call fails with
/// `Timeout` within the store deadline instead of hanging, and works again once it answers.
#[tokio::test]
async fn a_silent_postgres_gives_timeouts_not_hangs() {
    let Some(b) = postgres().await else { return };
    // postgres://user@host:port/db…: route host:port through the proxy.
    let start = b
        .url
        .find('@')
        .map_or(b.url.find("://").unwrap() + 3, |i| i + 1);
    let end = start + b.url[start..].find('/').unwrap();
    let upstream = b.url[start..end].to_owned();
    let proxy = FreezableProxy::start(upstream).await;
    let url = format!("{}{}{}", &b.url[..start], proxy.addr, &b.url[end..]);
    let timeout = std::time::Duration::from_millis(500);
    let store = aegisx_realtime::store::connect(&url, timeout)
        .await
        .unwrap();
    let k = key(Some("frozen"), "general");
    store.append_messages(&[msg(&k, "before")]).await.unwrap();
    proxy.freeze(true);
    let started = std::time::Instant::now();
    // Our deadline or the pool's (a pooled connection is pinged first): either way, an outage.
    let err = store
        .append_messages(&[msg(&k, "during")])
        .await
        .unwrap_err();
    assert!(!err.is_refusal(), "{err}");
    assert!(store.messages_after(&k, 0, 10).await.is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    proxy.freeze(false);
    let mut ok = false;
    for _ in 0..20 {
        // The connections cut mid-call are replaced; a fresh one answers.
        if store.append_messages(&[msg(&k, "after")]).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "the store recovers once the database answers again");
}

/// A TCP proxy that can stop forwarding (both ways) without closing anything.
struct FreezableProxy {
    addr: String,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl FreezableProxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (frozen, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, rx.clone()));
                tokio::spawn(pipe(sr, cw, rx.clone()));
            }
        });
        Self { addr, frozen }
    }

    fn freeze(&self, on: bool) {
        let _ = self.frozen.send(on);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        // Frozen: hold the bytes until thawed (the peer sees silence, not a close).
        while *frozen.borrow_and_update() {
            if frozen.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
