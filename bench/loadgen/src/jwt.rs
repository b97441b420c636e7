//! HS256 tokens, minted the way the gateway expects them (PROTOCOL.md §2).

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    name: &'a str,
    #[serde(rename = "tenantId", skip_serializing_if = "Option::is_none")]
    tenant_id: Option<&'a str>,
    iat: u64,
    exp: u64,
}

pub struct Minter {
    key: EncodingKey,
    header: Header,
    iat: u64,
    ttl: u64,
}

impl Minter {
    pub fn new(secret: &str, ttl_secs: u64) -> Self {
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            header: Header::new(Algorithm::HS256),
            iat,
            ttl: ttl_secs,
        }
    }

    pub fn mint(&self, sub: &str) -> String {
        self.mint_in(sub, None)
    }

    /// A token whose `tenantId` claim is `tenant` (none: a user without a tenant).
    pub fn mint_in(&self, sub: &str, tenant: Option<&str>) -> String {
        let claims = Claims {
            sub,
            name: sub,
            tenant_id: tenant,
            iat: self.iat,
            exp: self.iat + self.ttl,
        };
        encode(&self.header, &claims, &self.key).expect("HS256 encoding cannot fail")
    }
}
