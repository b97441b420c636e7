//! The presence port: per-(tenant, user) connection counts and the state each user shows
//! (`online`, `away`, …, since when), and who is online in a tenant. The presence task calls
//! `apply` once per tenant per tick with that tick's net changes, so a cluster implementation
//! (Redis: one script per tenant) costs a round trip per tenant per tick, not per connection.
//! Delivery is not its business: the presence service publishes what `apply` reports.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;

use crate::domain::ids::{TenantId, UserId};

/// What observers see of one user: `{ status, since }` (`since`: RFC 3339, when it began).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UserPresence {
    /// `online`, `away`, `busy` or `offline`.
    pub status: String,
    /// When this status began; null when the gateway has not seen it begin (offline users).
    #[schema(required = true)]
    pub since: Option<String>,
}

impl UserPresence {
    /// A user with no live connection in the tenant.
    pub fn offline() -> Self {
        Self {
            status: "offline".into(),
            since: None,
        }
    }
}

/// One tick's net change of one user in one tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub user: UserId,
    /// Connections opened minus connections closed.
    pub delta: i64,
    /// A status the user set (applied after `delta`; ignored when the user ends up offline).
    pub status: Option<&'static str>,
}

/// What one change did: the status shown before, and the state after (`None`: offline).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub user: UserId,
    pub before: &'static str,
    pub after: Option<UserPresence>,
}

/// The outcome of each change (in order), and how many users the tenant has online after them.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub outcomes: Vec<Outcome>,
    pub online: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The directory cannot be reached (a cluster implementation's backend is down).
    #[error("presence directory unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait PresenceDirectory: Send + Sync + 'static {
    /// Applies one tick's changes of one tenant; `now` (RFC 3339) is the `since` of every state
    /// that begins with them.
    async fn apply(
        &self,
        tenant: &TenantId,
        changes: &[Change],
        now: &str,
    ) -> Result<Applied, PresenceError>;

    /// The state of each user, in the order asked (offline users included).
    async fn lookup(
        &self,
        tenant: &TenantId,
        users: &[UserId],
    ) -> Result<Vec<(UserId, UserPresence)>, PresenceError>;

    /// Up to `limit` users online in the tenant (those showing `offline` left out), and whether
    /// there were more.
    async fn online(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<(Vec<(UserId, UserPresence)>, bool), PresenceError>;

    /// Takes out every connection a dead node had counted; per tenant, the outcome of each
    /// user it had (those left with no connection go offline). Calling it again for the same
    /// node finds nothing. A single node has no other node: nothing to do.
    async fn purge_node(&self, _node: &str) -> Result<Vec<(TenantId, Applied)>, PresenceError> {
        Ok(Vec::new())
    }

    /// States this node's counts again when the directory may not hold them: `force` (it lost
    /// them: a Redis that restarted empty), or changes it could not take (they were counted on
    /// this node meanwhile). Per tenant, the outcome for each user; nothing when there was
    /// nothing to state. In-process, nothing is ever lost.
    async fn resync(&self, _force: bool) -> Result<Vec<(TenantId, Applied)>, PresenceError> {
        Ok(Vec::new())
    }
}

/// The in-process directory (one node).
#[derive(Default)]
pub struct LocalDirectory {
    // A std Mutex: every critical section is a map update, never held across an await.
    tenants: Mutex<HashMap<TenantId, HashMap<UserId, Entry>>>,
}

struct Entry {
    conns: u64,
    status: &'static str,
    since: String,
}

impl Entry {
    fn shown(&self) -> UserPresence {
        UserPresence {
            status: self.status.into(),
            since: Some(self.since.clone()),
        }
    }
}

impl LocalDirectory {
    fn tenants(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, HashMap<UserId, Entry>>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PresenceDirectory for LocalDirectory {
    async fn apply(
        &self,
        tenant: &TenantId,
        changes: &[Change],
        now: &str,
    ) -> Result<Applied, PresenceError> {
        let mut tenants = self.tenants();
        let users = tenants.entry(tenant.clone()).or_default();
        let mut outcomes = Vec::with_capacity(changes.len());
        for c in changes {
            let before = users.get(&c.user).map_or("offline", |e| e.status);
            let conns = users.get(&c.user).map_or(0, |e| e.conns as i64) + c.delta;
            if conns < 0 {
                // A close counted without its open: a bug upstream; never go below zero.
                tracing::error!(user = %c.user, %tenant, "presence count below zero");
            }
            let after = if conns <= 0 {
                users.remove(&c.user);
                None
            } else {
                let e = users.entry(c.user.clone()).or_insert_with(|| Entry {
                    conns: 0,
                    status: "online",
                    since: now.to_owned(),
                });
                e.conns = conns as u64;
                if let Some(s) = c.status {
                    e.status = s;
                    e.since = now.to_owned();
                }
                Some(e.shown())
            };
            outcomes.push(Outcome {
                user: c.user.clone(),
                before,
                after,
            });
        }
        let online = users.len();
        if online == 0 {
            tenants.remove(tenant);
        }
        Ok(Applied { outcomes, online })
    }

    async fn lookup(
        &self,
        tenant: &TenantId,
        users: &[UserId],
    ) -> Result<Vec<(UserId, UserPresence)>, PresenceError> {
        let tenants = self.tenants();
        let known = tenants.get(tenant);
        Ok(users
            .iter()
            .map(|u| {
                let p = known
                    .and_then(|t| t.get(u))
                    .map_or_else(UserPresence::offline, Entry::shown);
                (u.clone(), p)
            })
            .collect())
    }

    async fn online(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<(Vec<(UserId, UserPresence)>, bool), PresenceError> {
        let tenants = self.tenants();
        let Some(users) = tenants.get(tenant) else {
            return Ok((Vec::new(), false));
        };
        let mut visible = users.iter().filter(|(_, e)| e.status != "offline");
        let list: Vec<_> = visible
            .by_ref()
            .take(limit)
            .map(|(u, e)| (u.clone(), e.shown()))
            .collect();
        let truncated = visible.next().is_some();
        Ok((list, truncated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse_optional(Some(s)).unwrap().unwrap()
    }
    fn u(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }
    fn change(user: &str, delta: i64, status: Option<&'static str>) -> Change {
        Change {
            user: u(user),
            delta,
            status,
        }
    }

    #[tokio::test]
    async fn counts_are_per_tenant_and_user() {
        let d = LocalDirectory::default();
        let a = d
            .apply(&t("A"), &[change("x", 2, None)], "t1")
            .await
            .unwrap();
        assert_eq!(a.online, 1);
        assert_eq!(a.outcomes[0].before, "offline");
        assert_eq!(a.outcomes[0].after.as_ref().unwrap().status, "online");
        d.apply(&t("B"), &[change("x", 1, None)], "t1")
            .await
            .unwrap();
        let a = d
            .apply(&t("A"), &[change("x", -1, None)], "t2")
            .await
            .unwrap();
        assert_eq!(
            a.outcomes[0].after.as_ref().unwrap().since.as_deref(),
            Some("t1")
        );
        let a = d
            .apply(&t("A"), &[change("x", -1, None)], "t3")
            .await
            .unwrap();
        assert_eq!(
            (a.outcomes[0].before, a.outcomes[0].after.clone(), a.online),
            ("online", None, 0)
        );
        let b = d.lookup(&t("B"), &[u("x"), u("y")]).await.unwrap();
        assert_eq!(b[0].1.status, "online");
        assert_eq!(b[1].1, UserPresence::offline());
    }

    #[tokio::test]
    async fn a_set_status_shows_until_the_user_goes_offline() {
        let d = LocalDirectory::default();
        d.apply(&t("A"), &[change("x", 1, Some("busy"))], "t1")
            .await
            .unwrap();
        let got = d.lookup(&t("A"), &[u("x")]).await.unwrap();
        assert_eq!(got[0].1.status, "busy");
        d.apply(
            &t("A"),
            &[change("y", 1, None), change("x", 0, Some("offline"))],
            "t2",
        )
        .await
        .unwrap();
        let (list, truncated) = d.online(&t("A"), 10).await.unwrap();
        assert_eq!(
            list.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(),
            ["y"]
        );
        assert!(!truncated, "a user showing offline is not listed");
        let a = d
            .apply(&t("A"), &[change("x", -1, Some("away"))], "t3")
            .await
            .unwrap();
        assert_eq!(
            (a.outcomes[0].before, a.outcomes[0].after.clone()),
            ("offline", None)
        );
    }

    #[tokio::test]
    async fn online_lists_are_limited() {
        let d = LocalDirectory::default();
        let changes: Vec<_> = ["a", "b", "c"].iter().map(|x| change(x, 1, None)).collect();
        d.apply(&t("A"), &changes, "t").await.unwrap();
        let (list, truncated) = d.online(&t("A"), 2).await.unwrap();
        assert_eq!((list.len(), truncated), (2, true));
        let (list, truncated) = d.online(&t("A"), 3).await.unwrap();
        assert_eq!((list.len(), truncated), (3, false));
        assert_eq!(d.online(&t("B"), 3).await.unwrap(), (vec![], false));
    }
}
