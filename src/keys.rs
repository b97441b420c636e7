//! Key material for tokens: loads the configured key (or makes an ephemeral one for `--dev`)
//! into a verifier and, where possible, an issuer.

use std::path::Path;

use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::RngCore;
use secrecy::SecretString;

use crate::domain::auth::{TokenIssuer, TokenVerifier};
use crate::settings::{JwtAlgorithm, JwtSettings, SettingsError};

/// Shortest accepted HS256 secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

pub struct Keys {
    pub algorithm: JwtAlgorithm,
    pub verifier: TokenVerifier,
    /// `None` when only a public key is configured (no `JWT_PRIVATE_KEY_FILE`).
    pub issuer: Option<TokenIssuer>,
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

pub fn load(jwt: &JwtSettings) -> Result<Keys, SettingsError> {
    let (iss, aud) = (jwt.jwt_issuer.as_deref(), jwt.jwt_audience.as_deref());
    match (jwt.secret_bytes(), &jwt.jwt_public_key_file) {
        (None, None) => Err(SettingsError::NoKey),
        (Some(_), Some(_)) => Err(SettingsError::TwoKeys),
        (Some(secret), None) => {
            if let Some(a) = jwt.jwt_algorithm.filter(|a| *a != JwtAlgorithm::HS256) {
                return Err(SettingsError::AlgorithmMismatch(a));
            }
            if secret.len() < MIN_SECRET_BYTES {
                return Err(SettingsError::ShortSecret);
            }
            let alg = jsonwebtoken::Algorithm::HS256;
            Ok(Keys {
                algorithm: JwtAlgorithm::HS256,
                verifier: TokenVerifier::new(alg, DecodingKey::from_secret(secret), iss, aud),
                issuer: Some(TokenIssuer::new(alg, EncodingKey::from_secret(secret))),
            })
        }
        (None, Some(path)) => {
            let pem = read("JWT_PUBLIC_KEY_FILE", path)?;
            let bad = |reason: String| SettingsError::KeyFile {
                var: "JWT_PUBLIC_KEY_FILE",
                path: path.clone(),
                reason,
            };
            let (algorithm, key) = match jwt.jwt_algorithm {
                Some(JwtAlgorithm::HS256) => {
                    return Err(SettingsError::AlgorithmMismatch(JwtAlgorithm::HS256));
                }
                Some(JwtAlgorithm::RS256) => (
                    JwtAlgorithm::RS256,
                    DecodingKey::from_rsa_pem(&pem).map_err(|e| bad(e.to_string()))?,
                ),
                Some(JwtAlgorithm::ES256) => (
                    JwtAlgorithm::ES256,
                    DecodingKey::from_ec_pem(&pem).map_err(|e| bad(e.to_string()))?,
                ),
                None => match DecodingKey::from_rsa_pem(&pem) {
                    Ok(k) => (JwtAlgorithm::RS256, k),
                    Err(_) => (
                        JwtAlgorithm::ES256,
                        DecodingKey::from_ec_pem(&pem).map_err(|_| {
                            bad("neither an RSA nor an EC public key in PEM".into())
                        })?,
                    ),
                },
            };
            let issuer = match &jwt.jwt_private_key_file {
                None => None,
                Some(p) => {
                    let pem = read("JWT_PRIVATE_KEY_FILE", p)?;
                    let key = match algorithm {
                        JwtAlgorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                        _ => EncodingKey::from_ec_pem(&pem),
                    }
                    .map_err(|e| SettingsError::KeyFile {
                        var: "JWT_PRIVATE_KEY_FILE",
                        path: p.clone(),
                        reason: e.to_string(),
                    })?;
                    Some(TokenIssuer::new(algorithm.into(), key))
                }
            };
            Ok(Keys {
                algorithm,
                verifier: TokenVerifier::new(algorithm.into(), key, iss, aud),
                issuer,
            })
        }
    }
}
