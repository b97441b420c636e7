//! The presence directory in Redis: per tenant, one hash slot (`aegisx:presence:{tenantId}:…`,
//! the braces a hash tag) holding the cluster's connection count per user (`:conns`), the status
//! shown and since when (`:status`, `:since`), and what each node contributed (`:node:{nodeId}`).
//! `aegisx:node:{nodeId}:tenants` lists the tenants a node contributed to, for its purge.
//!
//! A node states its *own* count per user (not a delta): a call retried after a timeout whose
//! write did land changes nothing, and after Redis lost its data the node states them again.
//!
//! While Redis is away, presence is counted on this node (PROTOCOL §8): every change is applied
//! to an in-process directory of this node's connections too, whose outcomes are announced
//! meanwhile; once Redis answers again, the heartbeat states this node's counts in full and the
//! outcomes (users who came or went elsewhere meanwhile) are announced.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use fred::prelude::{Client, KeysInterface, LuaInterface, SetsInterface};
use fred::types::Value;

use super::{RedisError, connected};
use crate::domain::ids::{TenantId, UserId};
use crate::domain::observe::{Outage, Port};
use crate::domain::presence_directory::{
    Applied, Change, LocalDirectory, Outcome, PresenceDirectory, PresenceError, UserPresence,
};

/// KEYS: conns, status, since, node. ARGV: full ("1": users of the node not listed go to 0),
/// now, then (user, this node's count, status or "") triples. Returns
/// `{ { {user, before, status or "", since or ""}, … }, online }`.
const APPLY: &str = r"
local conns, status, since, node = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = ARGV[2]
local out = {}
local function one(user, target, st)
  local cur = tonumber(redis.call('HGET', node, user) or '0')
  local total = tonumber(redis.call('HGET', conns, user) or '0')
  local before = 'offline'
  if total > 0 then before = redis.call('HGET', status, user) or 'online' end
  total = total + (target - cur)
  if target > 0 then redis.call('HSET', node, user, target) else redis.call('HDEL', node, user) end
  if total <= 0 then
    redis.call('HDEL', conns, user)
    redis.call('HDEL', status, user)
    redis.call('HDEL', since, user)
    out[#out + 1] = {user, before, '', ''}
  else
    redis.call('HSET', conns, user, total)
    if redis.call('HEXISTS', status, user) == 0 then
      redis.call('HSET', status, user, 'online')
      redis.call('HSET', since, user, now)
    end
    if st ~= '' then
      redis.call('HSET', status, user, st)
      redis.call('HSET', since, user, now)
    end
    out[#out + 1] = {user, before, redis.call('HGET', status, user), redis.call('HGET', since, user) or ''}
  end
end
local listed = {}
for i = 3, #ARGV, 3 do
  listed[ARGV[i]] = true
  one(ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2])
end
if ARGV[1] == '1' then
  for _, user in ipairs(redis.call('HKEYS', node)) do
    if not listed[user] then one(user, 0, '') end
  end
end
return {out, redis.call('HLEN', conns)}
";

/// KEYS: conns, status, since. ARGV: users. Returns `{ {user, status, since or ""}, … }`.
const LOOKUP: &str = r"
local out = {}
for _, user in ipairs(ARGV) do
  if tonumber(redis.call('HGET', KEYS[1], user) or '0') > 0 then
    out[#out + 1] = {user, redis.call('HGET', KEYS[2], user) or 'online', redis.call('HGET', KEYS[3], user) or ''}
  else
    out[#out + 1] = {user, 'offline', ''}
  end
end
return out
";

/// KEYS: status, since. ARGV: limit. Users not showing `offline`, at most limit + 1 (the extra
/// one says there are more).
const ONLINE: &str = r"
local limit = tonumber(ARGV[1])
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i + 1] ~= 'offline' then
    out[#out + 1] = {all[i], all[i + 1], redis.call('HGET', KEYS[2], all[i]) or ''}
    if #out > limit then break end
  end
end
return out
";

fn keys(tenant: &str, node: &str) -> Vec<String> {
    let base = format!("aegisx:presence:{{{tenant}}}");
    vec![
        format!("{base}:conns"),
        format!("{base}:status"),
        format!("{base}:since"),
        format!("{base}:node:{node}"),
    ]
}

fn node_tenants_key(node: &str) -> String {
    format!("aegisx:node:{node}:tenants")
}

pub struct RedisDirectory {
    client: Client,
    node: String,
    /// This node's connection count per (tenant, user): what it states in Redis.
    mirror: Mutex<HashMap<TenantId, HashMap<UserId, u64>>>,
    /// This node's presence alone: the answers while Redis is away.
    local: LocalDirectory,
    /// Changes Redis did not take: until a full restatement, answers come from `local`.
    stale: AtomicBool,
    outage: Outage,
    /// One write at a time: a restatement (from the heartbeat task) must not state counts
    /// older than an `apply` (from the presence task) running beside it.
    writes: tokio::sync::Mutex<()>,
}

impl RedisDirectory {
    pub fn new(client: Client, node: String) -> Self {
        Self {
            client,
            node,
            mirror: Mutex::new(HashMap::new()),
            local: LocalDirectory::default(),
            stale: AtomicBool::new(false),
            outage: Outage::default(),
            writes: tokio::sync::Mutex::new(()),
        }
    }

    fn mirror(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, HashMap<UserId, u64>>> {
        self.mirror.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `APPLY` for `node`'s counts in one tenant.
    async fn run(
        &self,
        tenant: &TenantId,
        node: &str,
        full: bool,
        targets: &[(UserId, u64, Option<&str>)],
        now: &str,
    ) -> Result<Applied, RedisError> {
        connected(&self.client)?;
        let mut args = Vec::with_capacity(2 + targets.len() * 3);
        args.push(if full { "1" } else { "0" }.to_owned());
        args.push(now.to_owned());
        for (user, n, status) in targets {
            args.push(user.to_string());
            args.push(n.to_string());
            args.push(status.unwrap_or("").to_owned());
        }
        let reply: Value = self
            .client
            .eval(APPLY, keys(tenant.as_str(), node), args)
            .await?;
        if targets.iter().any(|(_, n, _)| *n > 0) {
            let _: () = self
                .client
                .sadd(node_tenants_key(node), tenant.as_str())
                .await?;
        }
        parse_applied(reply)
    }

    async fn purge(&self, node: &str) -> Result<Vec<(TenantId, Applied)>, RedisError> {
        connected(&self.client)?;
        let tenants: Vec<String> = self.client.smembers(node_tenants_key(node)).await?;
        let now = crate::domain::time::now_rfc3339();
        let mut out = Vec::new();
        for t in tenants {
            let Ok(Some(tenant)) = TenantId::parse_optional(Some(&t)) else {
                continue;
            };
            let applied = self.run(&tenant, node, true, &[], &now).await?;
            out.push((tenant, applied));
        }
        let _: () = self.client.del(node_tenants_key(node)).await?;
        Ok(out)
    }

    async fn restate(&self) -> Result<Vec<(TenantId, Applied)>, RedisError> {
        connected(&self.client)?;
        let _one = self.writes.lock().await;
        let listed: Vec<String> = self.client.smembers(node_tenants_key(&self.node)).await?;
        let mine = self.mirror().clone();
        let mut tenants: HashSet<TenantId> = mine.keys().cloned().collect();
        tenants.extend(
            listed
                .iter()
                .filter_map(|t| TenantId::parse_optional(Some(t)).ok().flatten()),
        );
        let now = crate::domain::time::now_rfc3339();
        let mut out = Vec::new();
        for tenant in tenants {
            let targets: Vec<_> = mine
                .get(&tenant)
                .map(|users| users.iter().map(|(u, n)| (u.clone(), *n, None)).collect())
                .unwrap_or_default();
            let applied = self.run(&tenant, &self.node, true, &targets, &now).await?;
            out.push((tenant, applied));
        }
        Ok(out)
    }
}

fn bad(what: &str) -> RedisError {
    RedisError::Reply(what.to_owned())
}

fn text(v: &Value) -> Option<String> {
    v.as_string()
}

/// `{ user, status, since }` (status `""`: offline).
fn presence_of(status: String, since: String) -> Option<UserPresence> {
    (!status.is_empty()).then(|| UserPresence {
        status,
        since: (!since.is_empty()).then_some(since),
    })
}

fn parse_applied(reply: Value) -> Result<Applied, RedisError> {
    let Value::Array(mut top) = reply else {
        return Err(bad("APPLY: not an array"));
    };
    let online = top
        .pop()
        .and_then(|v| v.as_u64())
        .ok_or_else(|| bad("APPLY: no count"))? as usize;
    let Some(Value::Array(rows)) = top.pop() else {
        return Err(bad("APPLY: no outcomes"));
    };
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in rows {
        let Value::Array(f) = row else {
            return Err(bad("APPLY: outcome not an array"));
        };
        let [user, before, status, since] = f.as_slice() else {
            return Err(bad("APPLY: outcome of the wrong size"));
        };
        let user = text(user)
            .and_then(|u| UserId::parse(&u))
            .ok_or_else(|| bad("APPLY: user"))?;
        let before = text(before).ok_or_else(|| bad("APPLY: before"))?;
        outcomes.push(Outcome {
            user,
            before: crate::domain::presence::status_name(&before),
            after: presence_of(
                text(status).unwrap_or_default(),
                text(since).unwrap_or_default(),
            ),
        });
    }
    Ok(Applied { outcomes, online })
}

fn parse_rows(reply: Value) -> Result<Vec<(UserId, UserPresence)>, RedisError> {
    let Value::Array(rows) = reply else {
        return Err(bad("presence rows: not an array"));
    };
    rows.into_iter()
        .map(|row| {
            let Value::Array(f) = row else {
                return Err(bad("presence row: not an array"));
            };
            let [user, status, since] = f.as_slice() else {
                return Err(bad("presence row of the wrong size"));
            };
            let user = text(user)
                .and_then(|u| UserId::parse(&u))
                .ok_or_else(|| bad("presence row: user"))?;
            let status = text(status).unwrap_or_else(|| "offline".into());
            let p = if status == "offline" {
                UserPresence::offline()
            } else {
                presence_of(status, text(since).unwrap_or_default())
                    .unwrap_or_else(UserPresence::offline)
            };
            Ok((user, p))
        })
        .collect()
}

fn unavailable(e: RedisError) -> PresenceError {
    PresenceError::Unavailable(e.to_string())
}

#[async_trait]
impl PresenceDirectory for RedisDirectory {
    async fn apply(
        &self,
        tenant: &TenantId,
        changes: &[Change],
        now: &str,
    ) -> Result<Applied, PresenceError> {
        let _one = self.writes.lock().await;
        let local = self.local.apply(tenant, changes, now).await?;
        let targets: Vec<(UserId, u64, Option<&str>)> = {
            let mut mirror = self.mirror();
            let mine = mirror.entry(tenant.clone()).or_default();
            let targets = changes
                .iter()
                .map(|c| {
                    let cur = mine.get(&c.user).copied().unwrap_or(0) as i64;
                    let n = cur + c.delta;
                    if n < 0 {
                        // A close counted without its open: a bug upstream; never below zero.
                        tracing::error!(user = %c.user, %tenant, "presence count below zero");
                    }
                    (c.user.clone(), n.max(0) as u64, c.status)
                })
                .collect::<Vec<_>>();
            for (user, n, _) in &targets {
                if *n == 0 {
                    mine.remove(user);
                } else {
                    mine.insert(user.clone(), *n);
                }
            }
            if mine.is_empty() {
                mirror.remove(tenant);
            }
            targets
        };
        if self.stale.load(Ordering::Acquire) {
            crate::metrics::cluster_fallback(Port::Presence.as_str());
            return Ok(local);
        }
        match self.run(tenant, &self.node, false, &targets, now).await {
            Ok(applied) => {
                self.outage.succeeded(Port::Presence);
                Ok(applied)
            }
            Err(e) => {
                // Counted here meanwhile; the next heartbeat that reaches Redis restates all.
                self.stale.store(true, Ordering::Release);
                crate::metrics::cluster_fallback(Port::Presence.as_str());
                self.outage.failed(Port::Presence, &e);
                Ok(local)
            }
        }
    }

    async fn lookup(
        &self,
        tenant: &TenantId,
        users: &[UserId],
    ) -> Result<Vec<(UserId, UserPresence)>, PresenceError> {
        let asked = async {
            connected(&self.client)?;
            let k = keys(tenant.as_str(), &self.node);
            let args: Vec<String> = users.iter().map(ToString::to_string).collect();
            let reply: Value = self.client.eval(LOOKUP, k[..3].to_vec(), args).await?;
            parse_rows(reply)
        };
        match asked.await {
            Ok(rows) => Ok(rows),
            Err(e) => {
                // This node's view meanwhile (PROTOCOL §8: presence counted per node).
                crate::metrics::cluster_fallback(Port::Presence.as_str());
                self.outage.failed(Port::Presence, &e);
                self.local.lookup(tenant, users).await
            }
        }
    }

    async fn online(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<(Vec<(UserId, UserPresence)>, bool), PresenceError> {
        let asked = async {
            connected(&self.client)?;
            let k = keys(tenant.as_str(), &self.node);
            let args = vec![limit.to_string()];
            let reply: Value = self
                .client
                .eval(ONLINE, vec![k[1].clone(), k[2].clone()], args)
                .await?;
            parse_rows(reply)
        };
        match asked.await {
            Ok(mut list) => {
                let truncated = list.len() > limit;
                list.truncate(limit);
                Ok((list, truncated))
            }
            Err(e) => {
                crate::metrics::cluster_fallback(Port::Presence.as_str());
                self.outage.failed(Port::Presence, &e);
                self.local.online(tenant, limit).await
            }
        }
    }

    async fn purge_node(&self, node: &str) -> Result<Vec<(TenantId, Applied)>, PresenceError> {
        self.purge(node).await.map_err(unavailable)
    }

    async fn resync(&self, force: bool) -> Result<Vec<(TenantId, Applied)>, PresenceError> {
        if !force && !self.stale.load(Ordering::Acquire) {
            return Ok(Vec::new());
        }
        let restated = self.restate().await.map_err(unavailable)?;
        self.stale.store(false, Ordering::Release);
        self.outage.succeeded(Port::Presence);
        Ok(restated)
    }
}
