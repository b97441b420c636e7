//! An identity provider's published keys (JWKS): fetched at start, cached, refreshed on a
//! schedule (`Cache-Control: max-age`, bounded) and at once when a token names an unknown `kid`
//! (at most once per `min_refresh`, and concurrent callers share one fetch, so a flood of random
//! `kid`s cannot make the gateway hammer the provider). A failed fetch keeps the cached keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::watch;

use crate::domain::auth::{KeySource, KeySourceStatus};
use crate::settings::SettingsError;

/// Largest JWKS document read; providers publish a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Most keys kept from one document.
const MAX_KEYS: usize = 100;
/// Longest `kid` that may trigger a fetch (longer ones are never a provider's).
const MAX_KID_LEN: usize = 256;

pub struct JwksConfig {
    pub url: String,
    pub algorithm: Algorithm,
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    pub timeout: Duration,
}

/// The usable keys of one fetched document.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<DecodingKey>>,
    /// Every key in document order (tried in turn for a token without `kid`).
    all: Vec<Arc<DecodingKey>>,
    kids: Vec<String>,
}

#[derive(Default)]
struct FetchState {
    in_flight: bool,
    /// The last fetch made for an unknown `kid`.
    last_kid_fetch: Option<Instant>,
    last_success: Option<SystemTime>,
    last_error: Option<String>,
    failures: u32,
}

pub struct Jwks {
    config: JwksConfig,
    client: reqwest::Client,
    // std locks: held for a pointer swap or a field update, never across an await.
    keys: RwLock<Arc<KeySet>>,
    state: Mutex<FetchState>,
    /// Bumped after each fetch attempt; waiters for an in-flight fetch watch it.
    attempts: watch::Sender<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Schedule,
    UnknownKid,
}

/// Why a fetch failed (kept for `/readyz` and the log).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("document larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("not a JWKS document: {0}")]
    Format(String),
    #[error("no usable {0:?} signing key in the document")]
    NoKey(Algorithm),
}

impl Jwks {
    pub fn new(config: JwksConfig) -> Result<Self, SettingsError> {
        let url =
            reqwest::Url::parse(&config.url).map_err(|e| SettingsError::JwksUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SettingsError::JwksUrl(format!(
                "scheme {} is not supported",
                url.scheme()
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("aegisx-realtime/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SettingsError::JwksUrl(e.to_string()))?;
        Ok(Self {
            config,
            client,
            keys: RwLock::new(Arc::new(KeySet::default())),
            state: Mutex::new(FetchState::default()),
            attempts: watch::channel(0).0,
        })
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FetchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Key ids currently held, in document order.
    pub fn kids(&self) -> Vec<String> {
        self.current().kids.clone()
    }

    /// Fetches now (used by `check-config`): Ok with the number of usable keys.
    pub async fn refresh_once(&self) -> Result<usize, String> {
        self.refresh(Trigger::Schedule).await;
        let st = self.state();
        match &st.last_error {
            Some(e) => Err(e.clone()),
            None => Ok(self.current().all.len()),
        }
    }

    /// Starts the schedule: a first fetch at once, then again at `max-age` (bounded), sooner
    /// after a failure.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        crate::metrics::jwks_installed();
        // Claimed before the task runs, so a token arriving first waits for this fetch rather
        // than making one of its own.
        self.state().in_flight = true;
        let this = self.clone();
        tokio::spawn(async move {
            let mut next = this.fetch_claimed().await;
            loop {
                tokio::time::sleep(next).await;
                next = this.refresh(Trigger::Schedule).await;
            }
        })
    }

    /// One fetch, shared with any other caller meanwhile. For an unknown `kid`, nothing is
    /// fetched when the last such fetch is younger than `min_refresh`: with the schedule, the
    /// provider sees at most two fetches per `min_refresh`. Returns when to fetch next.
    async fn refresh(&self, trigger: Trigger) -> Duration {
        let mut seen = self.attempts.subscribe();
        let claimed = {
            let mut st = self.state();
            let recent = st
                .last_kid_fetch
                .is_some_and(|t| t.elapsed() < self.config.min_refresh);
            if st.in_flight {
                false
            } else if trigger == Trigger::UnknownKid && recent {
                return self.config.min_refresh;
            } else {
                st.in_flight = true;
                if trigger == Trigger::UnknownKid {
                    st.last_kid_fetch = Some(Instant::now());
                }
                true
            }
        };
        if !claimed {
            // Bounded: the fetch itself is bounded by the client's timeout.
            let _ = tokio::time::timeout(self.config.timeout * 2, seen.changed()).await;
            return self.config.min_refresh;
        }
        self.fetch_claimed().await
    }

    /// Fetches (the caller set `in_flight`), stores the outcome, wakes the waiters.
    async fn fetch_claimed(&self) -> Duration {
        let result = self.fetch().await;
        let next = {
            let mut st = self.state();
            st.in_flight = false;
            match result {
                Ok((set, max_age)) => {
                    let n = set.all.len();
                    *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
                    if st.last_error.is_some() || st.last_success.is_none() {
                        tracing::info!(keys = n, "JWKS fetched");
                    }
                    st.last_success = Some(SystemTime::now());
                    st.last_error = None;
                    st.failures = 0;
                    crate::metrics::jwks_fetched(true, n);
                    max_age
                        .unwrap_or(self.config.max_refresh)
                        .clamp(self.config.min_refresh, self.config.max_refresh)
                }
                Err(e) => {
                    let held = self.current().all.len();
                    tracing::warn!(error = %e, cached_keys = held, "JWKS fetch failed");
                    st.last_error = Some(e.to_string());
                    st.failures = st.failures.saturating_add(1);
                    crate::metrics::jwks_fetched(false, held);
                    // 1 s, 2 s, 4 s, … up to `min_refresh`: a provider that comes back is
                    // noticed soon, one that stays down is not hammered.
                    let backoff = Duration::from_secs(1 << st.failures.min(16).saturating_sub(1));
                    backoff.min(self.config.min_refresh)
                }
            }
        };
        self.attempts.send_modify(|n| *n += 1);
        next
    }

    async fn fetch(&self) -> Result<(KeySet, Option<Duration>), FetchError> {
        let mut res = self
            .client
            .get(&self.config.url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(reqwest::Error::without_url)?;
        if !res.status().is_success() {
            return Err(FetchError::Status(res.status().as_u16()));
        }
        let max_age = res
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(reqwest::Error::without_url)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let set = parse(&body, self.config.algorithm)?;
        Ok((set, max_age))
    }
}

/// `max-age` of a `Cache-Control` value (`no-cache`/`no-store`: refresh as soon as allowed).
fn max_age(cc: &str) -> Option<Duration> {
    let mut age = None;
    for d in cc.split(',').map(str::trim) {
        let lower = d.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            age = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

/// Whether a published key may verify tokens of the configured algorithm: its `use`, `key_ops`
/// and `alg` (when present) must agree, and its type must be the algorithm's.
fn usable(jwk: &Jwk, alg: Algorithm) -> bool {
    let c = &jwk.common;
    let use_ok = matches!(c.public_key_use, None | Some(PublicKeyUse::Signature));
    let ops_ok = c
        .key_operations
        .as_ref()
        .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
    let alg_ok = c
        .key_algorithm
        .is_none_or(|a| a.to_string() == format!("{alg:?}"));
    let type_ok = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    use_ok && ops_ok && alg_ok && type_ok
}

fn parse(body: &[u8], alg: Algorithm) -> Result<KeySet, FetchError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| FetchError::Format(e.to_string()))?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| FetchError::Format("no \"keys\" array".into()))?;
    let mut set = KeySet::default();
    // Each key on its own: one the gateway cannot use (another type, curve or purpose) is
    // skipped, not a reason to refuse the whole document.
    for entry in entries {
        if set.all.len() == MAX_KEYS {
            break;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        if !usable(&jwk, alg) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let key = Arc::new(key);
        if let Some(kid) = &jwk.common.key_id {
            if set.by_kid.contains_key(kid) {
                continue;
            }
            set.by_kid.insert(kid.clone(), key.clone());
            set.kids.push(kid.clone());
        }
        set.all.push(key);
    }
    if set.all.is_empty() {
        return Err(FetchError::NoKey(alg));
    }
    Ok(set)
}

#[async_trait::async_trait]
impl KeySource for Jwks {
    async fn keys_for(&self, kid: Option<&str>) -> Vec<Arc<DecodingKey>> {
        let Some(kid) = kid else {
            return self.current().all.clone();
        };
        if let Some(k) = self.current().by_kid.get(kid) {
            return vec![k.clone()];
        }
        if kid.len() > MAX_KID_LEN {
            return Vec::new();
        }
        // A key the provider may have published since: look once (rate-limited).
        self.refresh(Trigger::UnknownKid).await;
        self.current()
            .by_kid
            .get(kid)
            .cloned()
            .into_iter()
            .collect()
    }

    fn status(&self) -> Option<KeySourceStatus> {
        let st = self.state();
        let keys = self.current().all.len();
        let state = match (keys, &st.last_error) {
            (0, _) => "unavailable",
            (_, Some(_)) => "stale",
            (_, None) => "ok",
        };
        Some(KeySourceStatus {
            ready: keys > 0,
            state,
            keys,
            age_secs: st
                .last_success
                .and_then(|t| t.elapsed().ok())
                .map(|d| d.as_secs()),
            error: st.last_error.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=x"), None);
    }

    #[test]
    fn only_keys_fitting_the_configured_algorithm_are_kept() {
        let rsa = serde_json::json!({"kty": "RSA", "kid": "r", "use": "sig", "alg": "RS256",
            "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
            "e": "AQAB"});
        let set = parse(
            serde_json::json!({"keys": [rsa]}).to_string().as_bytes(),
            Algorithm::RS256,
        )
        .unwrap();
        assert_eq!(set.kids, ["r"]);
        for alg in [Algorithm::ES256, Algorithm::EdDSA] {
            let doc = serde_json::json!({"keys": [rsa]}).to_string();
            assert!(matches!(
                parse(doc.as_bytes(), alg),
                Err(FetchError::NoKey(_))
            ));
        }
        let mut enc = rsa.clone();
        enc["use"] = "enc".into();
        let mut other_alg = rsa.clone();
        other_alg["alg"] = "RS512".into();
        let oct = serde_json::json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"});
        for k in [enc, other_alg, oct] {
            let doc = serde_json::json!({"keys": [k]}).to_string();
            assert!(parse(doc.as_bytes(), Algorithm::RS256).is_err());
        }
    }
}
