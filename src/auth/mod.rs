//! Who may call what, and how often: API keys (`keys`), JWT bearer tokens, scopes, and
//! per-tier rate and concurrency limits (`limits`). Transport-neutral: the HTTP middleware
//! hands in the presented credential and the route's scope, and maps [`AuthError`] and
//! [`limits::Rejection`] to statuses.

pub mod keys;
pub mod limits;

use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, AuthMode};
use crate::error::{Error, Result};

/// What a credential allows.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Search, list sources, stats, embeddings, models.
    Search,
    /// Answers: `/query`, `/v1/chat/completions`.
    Query,
    /// Add and delete sources.
    Ingest,
    /// Manage keys.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Search, Scope::Query, Scope::Ingest, Scope::Admin];

    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Search => "search",
            Scope::Query => "query",
            Scope::Ingest => "ingest",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "search" => Ok(Scope::Search),
            "query" => Ok(Scope::Query),
            "ingest" => Ok(Scope::Ingest),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope `{other}` (search, query, ingest, admin)"
            )),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// For logs: the key's name or the token's subject (never a secret).
    pub name: String,
    /// What rate limits are counted against (`key:<id>`, `jwt:<sub>`, `ip:<addr>`).
    pub subject: String,
    pub tier: String,
    pub scopes: Vec<Scope>,
}

/// Why a request is refused before it runs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// No credential where one is required → 401.
    #[error("this endpoint needs credentials: send `Authorization: Bearer <key or token>` or `X-API-Key`")]
    Missing,
    /// A credential that does not verify (unknown, wrong, expired, revoked, bad token) → 401.
    #[error("{0}")]
    Invalid(String),
    /// Valid credential without the route's scope → 403.
    #[error("this credential lacks the `{}` scope", .0.as_str())]
    Forbidden(Scope),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    pub fn code(&self) -> crate::error::Code {
        use crate::error::Code;
        match self {
            AuthError::Missing => Code::Unauthorized,
            AuthError::Invalid(_) => Code::InvalidCredentials,
            AuthError::Forbidden(_) => Code::Forbidden,
            AuthError::Internal(_) => Code::Internal,
        }
    }
}

/// The authentication side of the server: mode, key store and JWT verification.
pub struct Auth {
    pub mode: AuthMode,
    pub keys: keys::KeyStore,
    jwt: Option<JwtVerifier>,
    tiers: Vec<String>,
}

struct JwtVerifier {
    hs256: Option<DecodingKey>,
    jwks: Option<JwkSet>,
    validation: Validation,
    tier_claim: String,
    scopes_claim: String,
    default_tier: String,
}

impl Auth {
    /// Loads keys from the data dir and JWT keys from the configuration (fetching a JWKS URL
    /// once).
    pub async fn open(cfg: &AuthConfig, data_dir: &Path) -> Result<Self> {
        let keys = keys::KeyStore::open(data_dir)?;
        let jwt = if cfg.mode.jwt() {
            Some(JwtVerifier::load(cfg).await?)
        } else {
            None
        };
        Ok(Self {
            mode: cfg.mode,
            keys,
            jwt,
            tiers: cfg.tiers.keys().cloned().collect(),
        })
    }

    /// Tier names keys may be given.
    pub fn check_tier(&self, tier: &str) -> Result<()> {
        if self.tiers.iter().any(|t| t == tier) {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "unknown tier `{tier}` (configured: {})",
                self.tiers.join(", ")
            )))
        }
    }

    /// Verifies a presented credential (an API key or a JWT) and checks the scope.
    pub fn authenticate(
        &self,
        credential: Option<&str>,
        scope: Option<Scope>,
    ) -> std::result::Result<Principal, AuthError> {
        let cred = credential.map(str::trim).filter(|c| !c.is_empty());
        let Some(cred) = cred else {
            return Err(AuthError::Missing);
        };
        let p = if cred.starts_with("cairn_") && self.mode.keys() {
            self.keys.verify(cred)?
        } else if let (true, Some(j)) = (self.mode.jwt(), &self.jwt) {
            j.verify(cred)?
        } else {
            return Err(AuthError::Invalid(format!(
                "credentials of this kind are not accepted (auth mode {})",
                self.mode.as_str()
            )));
        };
        if !self.tiers.contains(&p.tier) {
            return Err(AuthError::Invalid(format!(
                "the credential names tier `{}`, which this server does not have",
                p.tier
            )));
        }
        if let Some(scope) = scope.filter(|s| !p.scopes.contains(s)) {
            return Err(AuthError::Forbidden(scope));
        }
        Ok(p)
    }
}

impl JwtVerifier {
    async fn load(cfg: &AuthConfig) -> Result<Self> {
        let j = &cfg.jwt;
        let hs256 = (!j.hs256_secret.expose().is_empty())
            .then(|| DecodingKey::from_secret(j.hs256_secret.expose().as_bytes()));
        let mut jwks: Option<JwkSet> = None;
        if let Some(f) = &j.jwks_file {
            let text = std::fs::read_to_string(f).map_err(|e| {
                Error::InvalidInput(format!("auth.jwt.jwks_file {}: {e}", f.display()))
            })?;
            jwks = Some(serde_json::from_str(&text).map_err(|e| {
                Error::InvalidInput(format!(
                    "auth.jwt.jwks_file {} is not a JWKS: {e}",
                    f.display()
                ))
            })?);
        } else if let Some(url) = &j.jwks_url {
            let set = reqwest::Client::new()
                .get(url)
                .timeout(std::time::Duration::from_secs(10))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| Error::InvalidInput(format!("fetching auth.jwt.jwks_url: {e}")))?
                .json::<JwkSet>()
                .await
                .map_err(|e| {
                    Error::InvalidInput(format!("auth.jwt.jwks_url is not a JWKS: {e}"))
                })?;
            jwks = Some(set);
        }
        let mut algs = Vec::new();
        if hs256.is_some() {
            algs.push(Algorithm::HS256);
        }
        if jwks.is_some() {
            algs.extend([Algorithm::RS256, Algorithm::ES256]);
        }
        let mut validation = Validation::new(algs[0]);
        validation.algorithms = algs;
        validation.leeway = j.leeway_s;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        match &j.audience {
            Some(a) => validation.set_audience(&[a]),
            None => validation.validate_aud = false,
        }
        if let Some(i) = &j.issuer {
            validation.set_issuer(&[i]);
        }
        Ok(Self {
            hs256,
            jwks,
            validation,
            tier_claim: j.tier_claim.clone(),
            scopes_claim: j.scopes_claim.clone(),
            default_tier: j.default_tier.clone(),
        })
    }

    fn verify(&self, token: &str) -> std::result::Result<Principal, AuthError> {
        let bad = |m: String| AuthError::Invalid(format!("invalid token: {m}"));
        let header = jsonwebtoken::decode_header(token).map_err(|e| bad(e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 => self
                .hs256
                .clone()
                .ok_or_else(|| bad("HS256 tokens are not accepted".into()))?,
            Algorithm::RS256 | Algorithm::ES256 => {
                let set = self
                    .jwks
                    .as_ref()
                    .ok_or_else(|| bad("no JWKS is configured".into()))?;
                let jwk = match &header.kid {
                    Some(kid) => set.find(kid),
                    None if set.keys.len() == 1 => set.keys.first(),
                    None => None,
                }
                .ok_or_else(|| bad("no key in the JWKS matches the token's kid".into()))?;
                DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?
            }
            other => return Err(bad(format!("algorithm {other:?} is not accepted"))),
        };
        // One algorithm per check: jsonwebtoken refuses a validation that lists algorithms of
        // another family than the key's.
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| bad(e.to_string()))?;
        let c = data.claims;
        let sub = c["sub"].as_str().unwrap_or("anonymous").to_string();
        let tier = c[&self.tier_claim]
            .as_str()
            .unwrap_or(&self.default_tier)
            .to_string();
        let scopes: Vec<Scope> = match &c[&self.scopes_claim] {
            serde_json::Value::String(s) => s
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect(),
            serde_json::Value::Array(a) => {
                a.iter().filter_map(|x| x.as_str()?.parse().ok()).collect()
            }
            _ => Vec::new(),
        };
        Ok(Principal {
            name: format!("jwt:{sub}"),
            subject: format!("jwt:{sub}"),
            tier,
            scopes,
        })
    }
}
