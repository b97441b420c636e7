//! Parsed identifiers. A value of these types has passed the contract's rules, so the rest of
//! the code never re-validates strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest user id, tenant id and room id accepted (PROTOCOL.md §2, §4).
pub const MAX_ID_LEN: usize = 128;

/// A user id: the token's `sub`, non-empty, at most 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Option<Self> {
        let n = s.chars().count();
        (n > 0 && n <= MAX_ID_LEN).then(|| Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant id. An empty string is treated as "no tenant" everywhere, so it never exists here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// `None` for an absent or empty tenant (the no-tenant scope); `Err` when it is too long.
    pub fn parse_optional(s: Option<&str>) -> Result<Option<Self>, TenantTooLong> {
        match s {
            None | Some("") => Ok(None),
            Some(s) if s.chars().count() <= MAX_ID_LEN => Ok(Some(Self(s.to_owned()))),
            Some(_) => Err(TenantTooLong),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("tenant id longer than {MAX_ID_LEN} characters")]
pub struct TenantTooLong;

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A room id as a client names it: 1–128 characters of `A-Z a-z 0-9 _ . : -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoomId(String);

impl RoomId {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= MAX_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        ok.then(|| Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// `private:*` rooms need membership (token claim or grant).
    pub fn is_private(&self) -> bool {
        self.0.starts_with("private:")
    }
    /// The reserved per-user and per-tenant rooms a socket may only name for itself.
    pub fn reserved(&self) -> Option<Reserved<'_>> {
        if let Some(u) = self.0.strip_prefix("user:") {
            Some(Reserved::User(u))
        } else {
            self.0.strip_prefix("tenant:").map(Reserved::Tenant)
        }
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Reserved<'a> {
    User(&'a str),
    Tenant(&'a str),
}

/// A room within its tenant scope: `general` of tenant A and of tenant B are two `RoomKey`s.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoomKey {
    pub tenant: Option<TenantId>,
    pub room: RoomId,
}

impl RoomKey {
    pub fn new(tenant: Option<TenantId>, room: RoomId) -> Self {
        Self { tenant, room }
    }

    /// The tenant as stored: the empty string stands for the no-tenant scope.
    pub fn tenant_str(&self) -> &str {
        self.tenant.as_ref().map_or("", TenantId::as_str)
    }

    /// The Socket.IO room this key maps to. Room ids cannot contain `/`, so the part after the
    /// last `/` is always the room, whatever the tenant id holds.
    pub fn adapter_room(&self) -> String {
        format!("r:{}/{}", self.tenant_str(), self.room)
    }

    /// The metric label of the contract: `<tenant>/<room>`.
    pub fn metric_label(&self) -> String {
        format!("{}/{}", self.tenant_str(), self.room)
    }
}

/// The Socket.IO room of every connection of one user.
pub fn user_adapter_room(user: &UserId) -> String {
    format!("u:{user}")
}

/// The Socket.IO room of every connection of one tenant.
pub fn tenant_adapter_room(tenant: &TenantId) -> String {
    format!("t:{tenant}")
}

/// The Socket.IO room of the sockets watching one user's presence in one tenant. The tenant's
/// length comes first, so no (tenant, user) pair can name another pair's room.
pub fn presence_adapter_room(tenant: &TenantId, user: &UserId) -> String {
    format!("p:{}:{tenant}{user}", tenant.as_str().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_follow_the_contract_alphabet() {
        assert!(RoomId::parse("general").is_some());
        assert!(RoomId::parse("a.b:c-d_E9").is_some());
        assert!(RoomId::parse(&"x".repeat(128)).is_some());
        assert!(RoomId::parse(&"x".repeat(129)).is_none());
        assert!(RoomId::parse("").is_none());
        assert!(RoomId::parse("has space").is_none());
        assert!(RoomId::parse("slash/room").is_none());
        assert!(RoomId::parse("é").is_none());
    }

    #[test]
    fn reserved_rooms_are_recognised() {
        let r = RoomId::parse("user:42").unwrap();
        assert_eq!(r.reserved(), Some(Reserved::User("42")));
        let r = RoomId::parse("tenant:acme").unwrap();
        assert_eq!(r.reserved(), Some(Reserved::Tenant("acme")));
        assert_eq!(RoomId::parse("users").unwrap().reserved(), None);
    }

    #[test]
    fn tenants_scope_rooms() {
        let a = RoomKey::new(
            TenantId::parse_optional(Some("a")).unwrap(),
            RoomId::parse("g").unwrap(),
        );
        let b = RoomKey::new(
            TenantId::parse_optional(Some("b")).unwrap(),
            RoomId::parse("g").unwrap(),
        );
        let none = RoomKey::new(None, RoomId::parse("g").unwrap());
        assert_ne!(a.adapter_room(), b.adapter_room());
        assert_ne!(a.adapter_room(), none.adapter_room());
        assert_eq!(none.metric_label(), "/g");
    }

    #[test]
    fn presence_rooms_are_unambiguous() {
        let t = |s: &str| TenantId::parse_optional(Some(s)).unwrap().unwrap();
        let u = |s: &str| UserId::parse(s).unwrap();
        assert_ne!(
            presence_adapter_room(&t("a"), &u("bc")),
            presence_adapter_room(&t("ab"), &u("c"))
        );
    }

    #[test]
    fn empty_tenant_is_no_tenant() {
        assert_eq!(TenantId::parse_optional(Some("")), Ok(None));
        assert!(TenantId::parse_optional(Some(&"t".repeat(129))).is_err());
    }

    #[test]
    fn user_ids_count_characters() {
        assert!(UserId::parse(&"é".repeat(128)).is_some());
        assert!(UserId::parse(&"é".repeat(129)).is_none());
        assert!(UserId::parse("").is_none());
    }
}
