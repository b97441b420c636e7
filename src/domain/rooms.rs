//! The room access policy (PROTOCOL.md §4): tenant scope, reserved rooms, private rooms.

use std::sync::Arc;

use crate::domain::auth::Principal;
use crate::domain::bus::Bus;
use crate::domain::error::DomainError;
use crate::domain::events::BusMessage;
use crate::domain::ids::{Reserved, RoomId, RoomKey, UserId};
use crate::domain::store::Store;

/// What a join request amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinDecision {
    /// The socket's own `user:`/`tenant:` room: it is already in it; succeed, do nothing.
    AlreadyMember,
    /// Join this tenant-scoped room.
    Join(RoomKey),
}

#[derive(Clone)]
pub struct RoomPolicy {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
}

impl RoomPolicy {
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>) -> Self {
        Self { store, bus }
    }

    /// Lets `user` join the private room. Returns false when the grant existed already.
    pub async fn grant(&self, key: &RoomKey, user: &UserId) -> Result<bool, DomainError> {
        Self::require_private(key)?;
        Ok(self
            .store
            .grant_room(key, user, &crate::domain::time::now_rfc3339())
            .await?)
    }

    /// Withdraws the grant; the user's sockets that lose access leave the room at once.
    pub async fn revoke(&self, key: &RoomKey, user: &UserId) -> Result<bool, DomainError> {
        Self::require_private(key)?;
        let existed = self.store.revoke_room(key, user).await?;
        self.bus
            .publish(BusMessage::RevokeRoom {
                key: key.clone(),
                user: user.clone(),
            })
            .await
            .map_err(|_| DomainError::Busy)?;
        Ok(existed)
    }

    fn require_private(key: &RoomKey) -> Result<(), DomainError> {
        if key.room.is_private() {
            Ok(())
        } else {
            Err(DomainError::invalid(
                "only private: rooms have members; other rooms are open to the tenant",
            ))
        }
    }

    /// Parses a client-supplied room id; anything outside the alphabet is `INVALID_ROOM`.
    pub fn parse(room: &str) -> Result<RoomId, DomainError> {
        RoomId::parse(room).ok_or(DomainError::InvalidRoom)
    }

    /// May this principal join `room`? Private rooms need the token's `rooms` claim or a
    /// stored grant; reserved rooms only the principal's own.
    pub async fn authorize_join(
        &self,
        who: &Principal,
        room: RoomId,
    ) -> Result<JoinDecision, DomainError> {
        match room.reserved() {
            Some(Reserved::User(u)) if u == who.user_id.as_str() => {
                return Ok(JoinDecision::AlreadyMember);
            }
            Some(Reserved::Tenant(t)) if Some(t) == who.tenant.as_ref().map(|t| t.as_str()) => {
                return Ok(JoinDecision::AlreadyMember);
            }
            Some(_) => return Err(DomainError::AccessDenied),
            None => {}
        }
        let key = RoomKey::new(who.tenant.clone(), room);
        if key.room.is_private()
            && !who.rooms.iter().any(|r| r == key.room.as_str())
            && !self.store.has_grant(&key, &who.user_id).await?
        {
            return Err(DomainError::AccessDenied);
        }
        Ok(JoinDecision::Join(key))
    }

    /// May this principal still be in the room? Asked again once a join is applied, so a revoke
    /// that landed between `authorize_join` and the join cannot be overtaken by it.
    pub async fn may_stay(&self, who: &Principal, key: &RoomKey) -> Result<bool, DomainError> {
        if !key.room.is_private() || who.rooms.iter().any(|r| r == key.room.as_str()) {
            return Ok(true);
        }
        Ok(self.store.has_grant(key, &who.user_id).await?)
    }

    /// The key of a room a socket wants to leave or use; reserved rooms are never "joined"
    /// rooms, so naming them here is `INVALID_ROOM`.
    pub fn scoped(who: &Principal, room: RoomId) -> Result<RoomKey, DomainError> {
        if room.reserved().is_some() {
            return Err(DomainError::InvalidRoom);
        }
        Ok(RoomKey::new(who.tenant.clone(), room))
    }
}
