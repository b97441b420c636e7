//! Tokens → principals. The algorithm is pinned by configuration, never read from the token
//! header, so `alg: none` and algorithm-confusion tokens are refused by construction.

use std::collections::HashSet;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use crate::domain::ids::{TenantId, UserId};

/// Seconds of clock skew tolerated on `exp` and `nbf`, and added to `exp` for live sockets.
pub const LEEWAY_SECS: u64 = 30;

/// Why a token was refused. The `Display` strings are the contract's refusal messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("No token provided")]
    NoToken,
    #[error("Invalid token")]
    Invalid,
    #[error("Token expired")]
    Expired,
}

/// The authenticated identity of a connection, from the token's claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub user_id: UserId,
    pub tenant: Option<TenantId>,
    /// Display name: `name`, else `email`, else `sub`.
    pub name: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    /// Private rooms the token lets the user join (the `rooms` claim).
    pub rooms: Vec<String>,
    /// `exp` (seconds since the epoch), when the token has one.
    pub exp: Option<i64>,
}

impl Principal {
    pub fn tenant_label(&self) -> &str {
        self.tenant.as_ref().map_or("unknown", TenantId::as_str)
    }
}

/// Where verification keys come from: fixed keys (`keys.rs`), or an identity provider's
/// published set (`keys/jwks.rs`), which may fetch on an unknown `kid`.
#[async_trait::async_trait]
pub trait KeySource: Send + Sync {
    /// The keys to try, in order, for a token whose header names `kid` (empty: none fits).
    async fn keys_for(&self, kid: Option<&str>) -> Vec<Arc<DecodingKey>>;

    /// For a source that can be without keys (a provider's set): its state, for `/readyz`.
    fn status(&self) -> Option<KeySourceStatus> {
        None
    }
}

/// The state of a fetched key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySourceStatus {
    /// Keys are held: tokens can be verified.
    pub ready: bool,
    /// `ok`, `stale` (the last fetch failed; cached keys in use) or `unavailable` (no keys).
    pub state: &'static str,
    pub keys: usize,
    /// Seconds since the last successful fetch.
    pub age_secs: Option<u64>,
    pub error: Option<String>,
}

/// Fixed keys, each optionally named by a key id. A token naming a known `kid` is tried with
/// that key only; one without a `kid` (or when no key is named) with every key in order, so
/// a key can be rolled without disconnecting anyone.
pub struct StaticKeys {
    keys: Vec<(Option<String>, Arc<DecodingKey>)>,
}

impl StaticKeys {
    pub fn new(keys: Vec<(Option<String>, DecodingKey)>) -> Self {
        Self {
            keys: keys.into_iter().map(|(k, d)| (k, Arc::new(d))).collect(),
        }
    }

    pub fn single(key: DecodingKey) -> Self {
        Self::new(vec![(None, key)])
    }
}

#[async_trait::async_trait]
impl KeySource for StaticKeys {
    async fn keys_for(&self, kid: Option<&str>) -> Vec<Arc<DecodingKey>> {
        let named = self.keys.iter().any(|(k, _)| k.is_some());
        match kid {
            Some(kid) if named => self
                .keys
                .iter()
                .filter(|(k, _)| k.as_deref() == Some(kid))
                .map(|(_, d)| d.clone())
                .collect(),
            _ => self.keys.iter().map(|(_, d)| d.clone()).collect(),
        }
    }
}

/// Where one principal field is read from: a top-level claim name (`tenantId`,
/// `https://example.com/tenant`, `custom:tenant`) or, starting with `/`, a JSON pointer into
/// nested claims (`/realm_access/roles`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimPath {
    Name(String),
    Pointer(String),
}

impl ClaimPath {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" => None,
            p if p.starts_with('/') => Some(Self::Pointer(p.to_owned())),
            n => Some(Self::Name(n.to_owned())),
        }
    }

    fn get<'a>(&self, claims: &'a Value) -> Option<&'a Value> {
        match self {
            Self::Name(n) => claims.get(n),
            Self::Pointer(p) => claims.pointer(p),
        }
        .filter(|v| !v.is_null())
    }
}

impl ClaimPath {
    /// Sets the claim, creating the objects a pointer goes through (for minting).
    fn insert(&self, claims: &mut Value, v: Value) {
        let tokens: Vec<String> = match self {
            Self::Name(n) => vec![n.clone()],
            Self::Pointer(p) => p
                .split('/')
                .skip(1)
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect(),
        };
        let Some((last, path)) = tokens.split_last() else {
            return;
        };
        let mut at = claims;
        for t in path {
            if !at.get(t).is_some_and(Value::is_object) {
                at[t.as_str()] = Value::Object(Map::new());
            }
            at = &mut at[t.as_str()];
        }
        at[last.as_str()] = v;
    }
}

impl std::fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name(s) | Self::Pointer(s) => f.write_str(s),
        }
    }
}

/// Which claims hold the principal's fields (identity providers each name them their own way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMap {
    pub user_id: ClaimPath,
    pub tenant: ClaimPath,
    pub name: ClaimPath,
    pub email: ClaimPath,
    pub roles: ClaimPath,
    pub permissions: ClaimPath,
    pub rooms: ClaimPath,
}

impl Default for ClaimMap {
    fn default() -> Self {
        let n = |s: &str| ClaimPath::Name(s.to_owned());
        Self {
            user_id: n("sub"),
            tenant: n("tenantId"),
            name: n("name"),
            email: n("email"),
            roles: n("roles"),
            permissions: n("permissions"),
            rooms: n("rooms"),
        }
    }
}

/// Verifies tokens with one pinned algorithm and the keys of a `KeySource`.
pub struct TokenVerifier {
    algorithm: Algorithm,
    keys: Arc<dyn KeySource>,
    validation: Validation,
    claims: ClaimMap,
}

impl TokenVerifier {
    pub fn new(
        algorithm: Algorithm,
        keys: Arc<dyn KeySource>,
        issuer: Option<&str>,
        audience: Option<&str>,
        claims: ClaimMap,
    ) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        // `exp` and `nbf` are checked when present, not required (PROTOCOL.md §2).
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured issuer or audience is required, not only compared when present.
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        match audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        Self {
            algorithm,
            keys,
            validation,
            claims,
        }
    }

    pub fn key_status(&self) -> Option<KeySourceStatus> {
        self.keys.status()
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        // Before any key lookup, so a token of another algorithm never makes a JWKS fetch.
        if header.alg != self.algorithm {
            return Err(AuthError::Invalid);
        }
        for key in self.keys.keys_for(header.kid.as_deref()).await {
            match jsonwebtoken::decode::<Value>(token, &key, &self.validation) {
                Ok(data) => return principal_from_claims(&data.claims, &self.claims),
                // Claims are validated after the signature: this key signed it.
                Err(e) if *e.kind() == ErrorKind::ExpiredSignature => {
                    return Err(AuthError::Expired);
                }
                Err(_) => continue,
            }
        }
        Err(AuthError::Invalid)
    }
}

/// A NumericDate claim as the verifier reads it: an integer or a float (rounded), saturated
/// into `i64`; `None` when absent or not a non-negative number.
fn numeric_date(v: &Value) -> Option<i64> {
    if let Some(u) = v.as_u64() {
        return Some(i64::try_from(u).unwrap_or(i64::MAX));
    }
    let f = v.as_f64()?;
    // `as` saturates, and NaN is excluded by the comparison.
    (f >= 0.0).then(|| f.round() as i64)
}

fn principal_from_claims(c: &Value, map: &ClaimMap) -> Result<Principal, AuthError> {
    let user_id = map
        .user_id
        .get(c)
        .and_then(Value::as_str)
        .and_then(UserId::parse)
        .ok_or(AuthError::Invalid)?;
    let tenant = match map.tenant.get(c) {
        None => None,
        Some(Value::String(t)) => {
            TenantId::parse_optional(Some(t)).map_err(|_| AuthError::Invalid)?
        }
        Some(_) => return Err(AuthError::Invalid),
    };
    let text = |p: &ClaimPath| p.get(c).and_then(Value::as_str).filter(|s| !s.is_empty());
    // A string array, or a space-separated string (an OAuth `scope` as permissions).
    let list = |p: &ClaimPath| -> Vec<String> {
        match p.get(c) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    };
    let email = text(&map.email).map(str::to_owned);
    let name = text(&map.name)
        .or(email.as_deref())
        .unwrap_or(user_id.as_str())
        .to_owned();
    Ok(Principal {
        tenant,
        name,
        email,
        roles: list(&map.roles),
        permissions: list(&map.permissions),
        rooms: list(&map.rooms),
        exp: c.get("exp").and_then(numeric_date),
        user_id,
    })
}

/// Mints tokens (the `token` subcommand, `serve --dev`, tests and benchmarks).
pub struct TokenIssuer {
    algorithm: Algorithm,
    key: EncodingKey,
    /// Written to the header, so a verifier holding several keys picks this one.
    kid: Option<String>,
    /// Where the claims go, so minted tokens fit the verifier's claim mapping.
    claims: ClaimMap,
}

/// The claims a minted token carries.
#[derive(Debug, Default, Clone)]
pub struct TokenSpec {
    pub sub: String,
    pub tenant: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub rooms: Vec<String>,
    pub ttl_secs: i64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl TokenIssuer {
    pub fn new(algorithm: Algorithm, key: EncodingKey) -> Self {
        Self {
            algorithm,
            key,
            kid: None,
            claims: ClaimMap::default(),
        }
    }

    pub fn with_claims(mut self, claims: ClaimMap) -> Self {
        self.claims = claims;
        self
    }

    pub fn with_kid(mut self, kid: Option<String>) -> Self {
        self.kid = kid;
        self
    }

    pub fn mint(&self, spec: &TokenSpec) -> Result<String, jsonwebtoken::errors::Error> {
        let now = crate::domain::time::unix_now();
        let mut claims = Value::Object(Map::new());
        let m = &self.claims;
        claims["sub"] = spec.sub.clone().into();
        claims["iat"] = now.into();
        claims["exp"] = (now + spec.ttl_secs).into();
        m.user_id.insert(&mut claims, spec.sub.clone().into());
        let optional = [
            (&m.tenant, &spec.tenant),
            (&m.name, &spec.name),
            (&m.email, &spec.email),
        ];
        for (path, v) in optional {
            if let Some(v) = v {
                path.insert(&mut claims, v.clone().into());
            }
        }
        for (k, v) in [("iss", &spec.issuer), ("aud", &spec.audience)] {
            if let Some(v) = v {
                claims[k] = v.clone().into();
            }
        }
        if !spec.roles.is_empty() {
            m.roles.insert(&mut claims, spec.roles.clone().into());
        }
        if !spec.rooms.is_empty() {
            m.rooms.insert(&mut claims, spec.rooms.clone().into());
        }
        let mut header = Header::new(self.algorithm);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"unit-test-secret-unit-test-secret";

    fn verifier() -> TokenVerifier {
        with_keys(StaticKeys::single(DecodingKey::from_secret(SECRET)))
    }

    fn with_keys(keys: StaticKeys) -> TokenVerifier {
        TokenVerifier::new(
            Algorithm::HS256,
            Arc::new(keys),
            None,
            None,
            ClaimMap::default(),
        )
    }

    fn sign(claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn valid_token_gives_principal_with_name_fallbacks() {
        let p = verifier()
            .verify(&sign(
                json!({"sub": "u1", "email": "u1@x.io", "tenantId": "acme"}),
            ))
            .await
            .unwrap();
        assert_eq!(p.user_id.as_str(), "u1");
        assert_eq!(p.name, "u1@x.io");
        assert_eq!(p.tenant.unwrap().as_str(), "acme");
        let p = verifier()
            .verify(&sign(json!({"sub": "u2"})))
            .await
            .unwrap();
        assert_eq!(p.name, "u2");
        assert_eq!(p.tenant, None);
    }

    #[tokio::test]
    async fn bad_sub_is_invalid() {
        for claims in [
            json!({}),
            json!({"sub": ""}),
            json!({"sub": 7}),
            json!({"sub": "x".repeat(129)}),
        ] {
            assert_eq!(
                verifier().verify(&sign(claims)).await,
                Err(AuthError::Invalid)
            );
        }
    }

    #[tokio::test]
    async fn expiry_beyond_leeway_is_expired_and_nbf_is_invalid() {
        let now = crate::domain::time::unix_now();
        let t = sign(json!({"sub": "u", "exp": now - 31}));
        assert_eq!(verifier().verify(&t).await, Err(AuthError::Expired));
        let t = sign(json!({"sub": "u", "exp": now - 5}));
        assert!(
            verifier().verify(&t).await.is_ok(),
            "within the 30 s leeway"
        );
        let t = sign(json!({"sub": "u", "nbf": now + 120}));
        assert_eq!(verifier().verify(&t).await, Err(AuthError::Invalid));
    }

    #[tokio::test]
    async fn alg_none_and_other_algorithms_are_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(r#"{"sub":"u"}"#)
        );
        assert_eq!(verifier().verify(&none).await, Err(AuthError::Invalid));
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub": "u"}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(verifier().verify(&hs384).await, Err(AuthError::Invalid));
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
        let v = TokenVerifier::new(
            Algorithm::HS256,
            Arc::new(StaticKeys::single(DecodingKey::from_secret(SECRET))),
            Some("iss-a"),
            Some("aud-a"),
            ClaimMap::default(),
        );
        assert!(
            v.verify(&sign(json!({"sub": "u", "iss": "iss-a", "aud": "aud-a"})))
                .await
                .is_ok()
        );
        assert_eq!(
            v.verify(&sign(json!({"sub": "u", "iss": "iss-b", "aud": "aud-a"})))
                .await,
            Err(AuthError::Invalid)
        );
        assert_eq!(
            v.verify(&sign(json!({"sub": "u", "iss": "iss-a", "aud": "aud-b"})))
                .await,
            Err(AuthError::Invalid)
        );
    }

    #[tokio::test]
    async fn wrong_signature_is_invalid() {
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "u"}),
            &EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert_eq!(verifier().verify(&t).await, Err(AuthError::Invalid));
        assert_eq!(verifier().verify("garbage").await, Err(AuthError::Invalid));
    }

    fn sign_with(secret: &[u8], kid: Option<&str>, claims: Value) -> String {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[tokio::test]
    async fn several_static_keys_by_kid_or_in_order() {
        const OLD: &[u8] = b"old-secret-old-secret-old-secret!";
        let unnamed = with_keys(StaticKeys::new(vec![
            (None, DecodingKey::from_secret(SECRET)),
            (None, DecodingKey::from_secret(OLD)),
        ]));
        let claims = json!({"sub": "u"});
        assert!(
            unnamed
                .verify(&sign_with(OLD, None, claims.clone()))
                .await
                .is_ok()
        );
        assert!(
            unnamed
                .verify(&sign_with(OLD, Some("x"), claims.clone()))
                .await
                .is_ok()
        );
        let named = with_keys(StaticKeys::new(vec![
            (Some("new".into()), DecodingKey::from_secret(SECRET)),
            (Some("old".into()), DecodingKey::from_secret(OLD)),
        ]));
        assert!(
            named
                .verify(&sign_with(OLD, Some("old"), claims.clone()))
                .await
                .is_ok()
        );
        assert!(
            named
                .verify(&sign_with(OLD, None, claims.clone()))
                .await
                .is_ok()
        );
        for kid in ["new", "other"] {
            assert_eq!(
                named
                    .verify(&sign_with(OLD, Some(kid), claims.clone()))
                    .await,
                Err(AuthError::Invalid)
            );
        }
    }

    #[tokio::test]
    async fn claims_are_read_by_name_or_json_pointer() {
        let p = |s: &str| ClaimPath::parse(s).unwrap();
        let map = ClaimMap {
            user_id: p("preferred_username"),
            tenant: p("https://example.com/tenant"),
            roles: p("/realm_access/roles"),
            permissions: p("scope"),
            rooms: p("/app/rooms"),
            ..ClaimMap::default()
        };
        let v = TokenVerifier::new(
            Algorithm::HS256,
            Arc::new(StaticKeys::single(DecodingKey::from_secret(SECRET))),
            None,
            None,
            map,
        );
        let t = sign(json!({
            "sub": "ignored",
            "preferred_username": "alice",
            "https://example.com/tenant": "acme",
            "realm_access": {"roles": ["admin", "user"]},
            "scope": "read write",
            "app": {"rooms": ["private:x"]},
        }));
        let got = v.verify(&t).await.unwrap();
        assert_eq!(got.user_id.as_str(), "alice");
        assert_eq!(got.tenant.unwrap().as_str(), "acme");
        assert_eq!(got.roles, ["admin", "user"]);
        assert_eq!(got.permissions, ["read", "write"]);
        assert_eq!(got.rooms, ["private:x"]);
        let missing = sign(json!({"sub": "u"}));
        assert_eq!(v.verify(&missing).await, Err(AuthError::Invalid));
        let bad_tenant = sign(json!({"preferred_username": "a", "https://example.com/tenant": 5}));
        assert_eq!(v.verify(&bad_tenant).await, Err(AuthError::Invalid));
    }

    #[test]
    fn numeric_dates_round_floats_and_saturate() {
        assert_eq!(numeric_date(&json!(1767225600.0)), Some(1767225600));
        assert_eq!(numeric_date(&json!(1767225600.6)), Some(1767225601));
        assert_eq!(numeric_date(&json!(u64::MAX)), Some(i64::MAX));
        assert_eq!(numeric_date(&json!(1e300)), Some(i64::MAX));
        assert_eq!(numeric_date(&json!(-1)), None);
        assert_eq!(numeric_date(&json!("1767225600")), None);
    }
}
