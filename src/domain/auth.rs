//! Tokens → principals. The algorithm is pinned by configuration, never read from the token
//! header, so `alg: none` and algorithm-confusion tokens are refused by construction.

use std::collections::HashSet;

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

/// Verifies tokens with one pinned algorithm and key.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(
        algorithm: Algorithm,
        key: DecodingKey,
        issuer: Option<&str>,
        audience: Option<&str>,
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
        Self { key, validation }
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid,
        })?;
        principal_from_claims(&data.claims)
    }
}

fn principal_from_claims(c: &Map<String, Value>) -> Result<Principal, AuthError> {
    let user_id = c
        .get("sub")
        .and_then(Value::as_str)
        .and_then(UserId::parse)
        .ok_or(AuthError::Invalid)?;
    let tenant = match c.get("tenantId") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => {
            TenantId::parse_optional(Some(t)).map_err(|_| AuthError::Invalid)?
        }
        Some(_) => return Err(AuthError::Invalid),
    };
    let text = |k: &str| c.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let list = |k: &str| -> Vec<String> {
        c.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let email = text("email").map(str::to_owned);
    let name = text("name")
        .or(email.as_deref())
        .unwrap_or(user_id.as_str())
        .to_owned();
    Ok(Principal {
        tenant,
        name,
        email,
        roles: list("roles"),
        permissions: list("permissions"),
        rooms: list("rooms"),
        exp: c.get("exp").and_then(Value::as_i64),
        user_id,
    })
}

/// Mints tokens (the `token` subcommand, `serve --dev`, tests and benchmarks).
pub struct TokenIssuer {
    algorithm: Algorithm,
    key: EncodingKey,
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
        Self { algorithm, key }
    }

    pub fn mint(&self, spec: &TokenSpec) -> Result<String, jsonwebtoken::errors::Error> {
        let now = crate::domain::time::unix_now();
        let mut claims = Map::new();
        claims.insert("sub".into(), spec.sub.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + spec.ttl_secs).into());
        let optional = [
            ("tenantId", &spec.tenant),
            ("name", &spec.name),
            ("email", &spec.email),
            ("iss", &spec.issuer),
            ("aud", &spec.audience),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                claims.insert(k.into(), v.clone().into());
            }
        }
        if !spec.roles.is_empty() {
            claims.insert("roles".into(), spec.roles.clone().into());
        }
        if !spec.rooms.is_empty() {
            claims.insert("rooms".into(), spec.rooms.clone().into());
        }
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"unit-test-secret-unit-test-secret";

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(
            Algorithm::HS256,
            DecodingKey::from_secret(SECRET),
            None,
            None,
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

    #[test]
    fn valid_token_gives_principal_with_name_fallbacks() {
        let p = verifier()
            .verify(&sign(
                json!({"sub": "u1", "email": "u1@x.io", "tenantId": "acme"}),
            ))
            .unwrap();
        assert_eq!(p.user_id.as_str(), "u1");
        assert_eq!(p.name, "u1@x.io");
        assert_eq!(p.tenant.unwrap().as_str(), "acme");
        let p = verifier().verify(&sign(json!({"sub": "u2"}))).unwrap();
        assert_eq!(p.name, "u2");
        assert_eq!(p.tenant, None);
    }

    #[test]
    fn bad_sub_is_invalid() {
        for claims in [
            json!({}),
            json!({"sub": ""}),
            json!({"sub": 7}),
            json!({"sub": "x".repeat(129)}),
        ] {
            assert_eq!(verifier().verify(&sign(claims)), Err(AuthError::Invalid));
        }
    }

    #[test]
    fn expiry_beyond_leeway_is_expired_and_nbf_is_invalid() {
        let now = crate::domain::time::unix_now();
        let t = sign(json!({"sub": "u", "exp": now - 31}));
        assert_eq!(verifier().verify(&t), Err(AuthError::Expired));
        let t = sign(json!({"sub": "u", "exp": now - 5}));
        assert!(verifier().verify(&t).is_ok(), "within the 30 s leeway");
        let t = sign(json!({"sub": "u", "nbf": now + 120}));
        assert_eq!(verifier().verify(&t), Err(AuthError::Invalid));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(r#"{"sub":"u"}"#)
        );
        assert_eq!(verifier().verify(&none), Err(AuthError::Invalid));
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub": "u"}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(verifier().verify(&hs384), Err(AuthError::Invalid));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let v = TokenVerifier::new(
            Algorithm::HS256,
            DecodingKey::from_secret(SECRET),
            Some("iss-a"),
            Some("aud-a"),
        );
        assert!(
            v.verify(&sign(json!({"sub": "u", "iss": "iss-a", "aud": "aud-a"})))
                .is_ok()
        );
        assert_eq!(
            v.verify(&sign(json!({"sub": "u", "iss": "iss-b", "aud": "aud-a"}))),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            v.verify(&sign(json!({"sub": "u", "iss": "iss-a", "aud": "aud-b"}))),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn wrong_signature_is_invalid() {
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "u"}),
            &EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert_eq!(verifier().verify(&t), Err(AuthError::Invalid));
        assert_eq!(verifier().verify("garbage"), Err(AuthError::Invalid));
    }
}
