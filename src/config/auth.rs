//! `[auth]`: the authentication mode, the tiers' limits and JWT verification.

use serde::{Deserialize, Serialize};

use std::path::PathBuf;

use super::Secret;

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthMode {
    /// No credentials (allowed on a loopback address, or with `--insecure`).
    #[default]
    #[serde(rename = "disabled")]
    Disabled,
    #[serde(rename = "api_key")]
    ApiKey,
    #[serde(rename = "jwt")]
    Jwt,
    #[serde(rename = "api_key+jwt")]
    ApiKeyOrJwt,
}

impl AuthMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMode::Disabled => "disabled",
            AuthMode::ApiKey => "api_key",
            AuthMode::Jwt => "jwt",
            AuthMode::ApiKeyOrJwt => "api_key+jwt",
        }
    }
    pub fn keys(&self) -> bool {
        matches!(self, AuthMode::ApiKey | AuthMode::ApiKeyOrJwt)
    }
    pub fn jwt(&self) -> bool {
        matches!(self, AuthMode::Jwt | AuthMode::ApiKeyOrJwt)
    }
}

impl std::str::FromStr for AuthMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disabled" => Ok(AuthMode::Disabled),
            "api_key" => Ok(AuthMode::ApiKey),
            "jwt" => Ok(AuthMode::Jwt),
            "api_key+jwt" => Ok(AuthMode::ApiKeyOrJwt),
            other => Err(format!(
                "unknown auth mode `{other}` (disabled, api_key, jwt, api_key+jwt)"
            )),
        }
    }
}

/// Limits of one tier.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierLimits {
    pub requests_per_hour: u32,
    pub concurrent: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Paths served without credentials or rate limits; an entry ending in `/*` covers
    /// everything below it.
    pub public_paths: Vec<String>,
    /// Tiers by name; keys and JWTs name one of them.
    pub tiers: std::collections::BTreeMap<String, TierLimits>,
    /// The limits of unauthenticated clients (auth disabled), per client IP.
    pub anonymous: TierLimits,
    /// Seconds between saves of the rate-limit counters (they survive restarts); idle
    /// subjects are evicted at each save.
    pub persist_interval_s: u64,
    /// Most subjects whose spent quota is saved across restarts (the oldest are dropped
    /// first, and get a fresh quota after a restart).
    pub max_tracked_subjects: usize,
    pub jwt: JwtConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let tier = |requests_per_hour, concurrent| TierLimits {
            requests_per_hour,
            concurrent,
        };
        Self {
            mode: AuthMode::Disabled,
            public_paths: [
                "/health",
                "/health/ready",
                "/metrics",
                "/openapi.json",
                "/docs",
                "/docs/*",
            ]
            .map(String::from)
            .to_vec(),
            tiers: [
                ("free".to_string(), tier(100, 5)),
                ("standard".to_string(), tier(1_000, 20)),
                ("premium".to_string(), tier(10_000, 100)),
            ]
            .into_iter()
            .collect(),
            anonymous: tier(100_000, 256),
            persist_interval_s: 10,
            max_tracked_subjects: 100_000,
            jwt: JwtConfig::default(),
        }
    }
}

/// OAuth2 bearer tokens (JWT).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// HS256 shared secret (or `CAIRN_JWT_SECRET`). Never logged.
    pub hs256_secret: Secret,
    /// JWKS file with the RS256/ES256 public keys.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL, fetched once at start (e.g. an identity provider's `/.well-known/jwks.json`).
    pub jwks_url: Option<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Claim naming the tier.
    pub tier_claim: String,
    /// Claim with the scopes (a space-separated string or an array).
    pub scopes_claim: String,
    /// Tier of tokens without the tier claim.
    pub default_tier: String,
    /// Clock skew allowed on `exp`/`nbf`, seconds.
    pub leeway_s: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            hs256_secret: Secret::default(),
            jwks_file: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            tier_claim: "tier".into(),
            scopes_claim: "scope".into(),
            default_tier: "free".into(),
            leeway_s: 30,
        }
    }
}
