//! Key material for tokens: loads the configured keys (one or several secrets, a PEM key or
//! bundle, or an identity provider's JWKS) into a verifier and, where possible, an issuer.
//! An ephemeral secret is made for `--dev`.

pub mod jwks;

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::RngCore;
use secrecy::SecretString;

use crate::domain::auth::{KeySource, StaticKeys, TokenIssuer, TokenVerifier};
use crate::settings::{JwtAlgorithm, JwtSettings, SettingsError};

/// Shortest accepted HS256 secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Which verification mode is active (`check-config` prints it).
#[derive(Debug, Clone)]
pub enum KeyMode {
    Secrets { count: usize },
    PublicKeys { count: usize },
    Jwks { url: String },
}

pub struct Keys {
    pub algorithm: JwtAlgorithm,
    pub mode: KeyMode,
    pub verifier: TokenVerifier,
    /// `None` when only public keys are configured (no `JWT_PRIVATE_KEY_FILE`).
    pub issuer: Option<TokenIssuer>,
    /// The provider's key set, which `serve` must start (`Jwks::spawn_refresher`).
    pub jwks: Option<Arc<jwks::Jwks>>,
}

/// A fresh random HS256 secret for `serve --dev`.
pub fn ephemeral_secret() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn read(var: &'static str, path: &Path) -> Result<Vec<u8>, SettingsError> {
    std::fs::read(path).map_err(|e| SettingsError::KeyFile {
        var,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The PEM blocks of a file, in order (a bundle holds several).
fn pem_blocks(pem: &[u8]) -> Vec<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
    };
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(begin) = find(pem, BEGIN, at) {
        let Some(end) = find(pem, END, begin) else {
            break;
        };
        // The END line's closing dashes.
        let close = find(pem, b"-----", end + END.len()).map_or(pem.len(), |i| i + 5);
        out.push(&pem[begin..close]);
        at = close;
    }
    out
}

/// Key ids from JWT_KEY_IDS, one per key (or none at all).
fn key_ids(jwt: &JwtSettings, keys: usize) -> Result<Vec<Option<String>>, SettingsError> {
    let ids: Vec<String> = jwt
        .jwt_key_ids
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    match ids.len() {
        0 => Ok(vec![None; keys]),
        n if n == keys => Ok(ids.into_iter().map(Some).collect()),
        n => Err(SettingsError::KeyIds { ids: n, keys }),
    }
}

fn verifier(jwt: &JwtSettings, alg: JwtAlgorithm, keys: Arc<dyn KeySource>) -> TokenVerifier {
    TokenVerifier::new(
        alg.into(),
        keys,
        jwt.jwt_issuer.as_deref(),
        jwt.jwt_audience.as_deref(),
        jwt.claim_map(),
    )
}

pub fn load(jwt: &JwtSettings) -> Result<Keys, SettingsError> {
    let configured = [
        jwt.jwt_secret.is_some(),
        jwt.jwt_public_key_file.is_some(),
        jwt.jwt_jwks_url.is_some(),
    ];
    match configured.iter().filter(|c| **c).count() {
        0 => return Err(SettingsError::NoKey),
        1 => {}
        _ => return Err(SettingsError::TwoKeys),
    }
    if let Some(secrets) = jwt.secrets() {
        return load_secrets(jwt, &secrets);
    }
    if let Some(path) = &jwt.jwt_public_key_file {
        return load_public_keys(jwt, path);
    }
    let url = jwt.jwt_jwks_url.as_deref().unwrap_or_default();
    load_jwks(jwt, url)
}

fn load_secrets(jwt: &JwtSettings, secrets: &[&[u8]]) -> Result<Keys, SettingsError> {
    if let Some(a) = jwt.jwt_algorithm.filter(|a| *a != JwtAlgorithm::HS256) {
        return Err(SettingsError::AlgorithmMismatch(a));
    }
    if secrets.iter().any(|s| s.len() < MIN_SECRET_BYTES) {
        return Err(SettingsError::ShortSecret);
    }
    let ids = key_ids(jwt, secrets.len())?;
    let keys = ids
        .iter()
        .zip(secrets)
        .map(|(id, s)| (id.clone(), DecodingKey::from_secret(s)))
        .collect();
    let alg = JwtAlgorithm::HS256;
    Ok(Keys {
        algorithm: alg,
        mode: KeyMode::Secrets {
            count: secrets.len(),
        },
        verifier: verifier(jwt, alg, Arc::new(StaticKeys::new(keys))),
        issuer: Some(
            TokenIssuer::new(alg.into(), EncodingKey::from_secret(secrets[0]))
                .with_kid(ids[0].clone())
                .with_claims(jwt.claim_map()),
        ),
        jwks: None,
    })
}

/// Parses one PEM public key for `alg`, or (unpinned) as whichever type it is.
fn public_key(
    pem: &[u8],
    alg: Option<JwtAlgorithm>,
) -> Result<(JwtAlgorithm, DecodingKey), String> {
    let as_alg = |a: JwtAlgorithm| match a {
        JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(pem),
        JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(pem),
        JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        JwtAlgorithm::HS256 => unreachable!("refused before"),
    };
    match alg {
        Some(a) => as_alg(a).map(|k| (a, k)).map_err(|e| e.to_string()),
        None => [
            JwtAlgorithm::RS256,
            JwtAlgorithm::ES256,
            JwtAlgorithm::EdDSA,
        ]
        .into_iter()
        .find_map(|a| as_alg(a).ok().map(|k| (a, k)))
        .ok_or_else(|| "neither an RSA, an EC nor an Ed25519 public key in PEM".into()),
    }
}

fn load_public_keys(jwt: &JwtSettings, path: &Path) -> Result<Keys, SettingsError> {
    if jwt.jwt_algorithm == Some(JwtAlgorithm::HS256) {
        return Err(SettingsError::AlgorithmMismatch(JwtAlgorithm::HS256));
    }
    let pem = read("JWT_PUBLIC_KEY_FILE", path)?;
    let bad = |reason: String| SettingsError::KeyFile {
        var: "JWT_PUBLIC_KEY_FILE",
        path: path.to_owned(),
        reason,
    };
    let blocks = pem_blocks(&pem);
    if blocks.is_empty() {
        return Err(bad("no PEM key in the file".into()));
    }
    // The first key fixes the algorithm (when not pinned); every other must be of that type.
    let (algorithm, first) = public_key(blocks[0], jwt.jwt_algorithm).map_err(&bad)?;
    let mut decoded = vec![first];
    for (i, block) in blocks.iter().enumerate().skip(1) {
        let (_, k) = public_key(block, Some(algorithm))
            .map_err(|e| bad(format!("key {} of the bundle: {e}", i + 1)))?;
        decoded.push(k);
    }
    let ids = key_ids(jwt, decoded.len())?;
    let issuer = private_issuer(jwt, algorithm, ids[0].clone())?;
    Ok(Keys {
        algorithm,
        mode: KeyMode::PublicKeys {
            count: decoded.len(),
        },
        verifier: verifier(
            jwt,
            algorithm,
            Arc::new(StaticKeys::new(ids.into_iter().zip(decoded).collect())),
        ),
        issuer,
        jwks: None,
    })
}

fn private_issuer(
    jwt: &JwtSettings,
    algorithm: JwtAlgorithm,
    kid: Option<String>,
) -> Result<Option<TokenIssuer>, SettingsError> {
    let Some(p) = &jwt.jwt_private_key_file else {
        return Ok(None);
    };
    let pem = read("JWT_PRIVATE_KEY_FILE", p)?;
    let key = match algorithm {
        JwtAlgorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        JwtAlgorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        JwtAlgorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        JwtAlgorithm::HS256 => return Err(SettingsError::AlgorithmMismatch(algorithm)),
    }
    .map_err(|e| SettingsError::KeyFile {
        var: "JWT_PRIVATE_KEY_FILE",
        path: p.clone(),
        reason: e.to_string(),
    })?;
    Ok(Some(
        TokenIssuer::new(algorithm.into(), key)
            .with_kid(kid)
            .with_claims(jwt.claim_map()),
    ))
}

fn load_jwks(jwt: &JwtSettings, url: &str) -> Result<Keys, SettingsError> {
    // Providers sign with RS256 unless told otherwise; a JWKS never carries HS256 secrets.
    let algorithm = jwt.jwt_algorithm.unwrap_or(JwtAlgorithm::RS256);
    if algorithm == JwtAlgorithm::HS256 {
        return Err(SettingsError::AlgorithmMismatch(algorithm));
    }
    let (min_refresh, max_refresh) = jwt.jwks_refresh_bounds();
    let jwks = Arc::new(jwks::Jwks::new(jwks::JwksConfig {
        url: url.to_owned(),
        algorithm: algorithm.into(),
        min_refresh,
        max_refresh,
        timeout: std::time::Duration::from_secs(jwt.jwt_jwks_timeout_secs.max(1)),
    })?);
    // `token` can still mint for development with the provider's private key, when given.
    let kid = jwt.jwt_key_ids.first().cloned();
    Ok(Keys {
        algorithm,
        mode: KeyMode::Jwks {
            url: crate::store::redact_url(url),
        },
        verifier: verifier(jwt, algorithm, jwks.clone()),
        issuer: private_issuer(jwt, algorithm, kid)?,
        jwks: Some(jwks),
    })
}

#[cfg(test)]
mod tests {
    use super::pem_blocks;

    #[test]
    fn a_bundle_splits_into_its_blocks() {
        let a = "-----BEGIN PUBLIC KEY-----\nAAA\n-----END PUBLIC KEY-----";
        let b = "-----BEGIN PUBLIC KEY-----\nBBB\n-----END PUBLIC KEY-----";
        let bundle = format!("# rotated 2026\n{a}\n\n{b}\n");
        let got: Vec<&[u8]> = pem_blocks(bundle.as_bytes());
        assert_eq!(got, [a.as_bytes(), b.as_bytes()]);
        assert!(pem_blocks(b"no pem here").is_empty());
    }
}
