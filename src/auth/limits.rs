//! Per-tier limits: an hourly request quota (GCRA, `governor`: the quota refills smoothly,
//! one request every `3600 / requests_per_hour` seconds, with the whole hour's quota as
//! burst) and a cap on concurrent requests, both per subject (key, JWT subject or client IP).
//!
//! Counters survive restarts cheaply: every `persist_interval_s` (and at shutdown) the used
//! part of each subject's quota is written to `<data_dir>/ratelimits.json`; on start it is
//! charged again, minus what refilled while the server was down. The trade-off: requests
//! made in the last interval before a crash are forgotten (a subject can get at most one
//! interval's worth of extra requests per crash), in exchange for no disk write per request.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Principal;
use crate::config::{AuthConfig, TierLimits};
use crate::error::Result;

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

struct Tier {
    limits: TierLimits,
    limiter: Limiter,
}

/// What the caller may tell the client on every response (`RateLimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quotas {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the quota is full again.
    pub reset_s: u64,
}

/// A request let through: hold it until the response is done.
pub struct Admission {
    pub quotas: Quotas,
    _permit: OwnedSemaphorePermit,
}

/// A request refused → 429.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub tier: String,
    /// `rate` (hourly quota spent) or `concurrency`.
    pub reason: &'static str,
    pub retry_after_s: u64,
    pub quotas: Quotas,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    tier: String,
    used: u32,
    at: i64,
}

pub struct Limits {
    tiers: HashMap<String, Tier>,
    concurrency: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Last known use per subject, for persistence.
    used: Mutex<BTreeMap<String, Saved>>,
    path: PathBuf,
}

fn tier(limits: TierLimits) -> Tier {
    let per_hour = NonZeroU32::new(limits.requests_per_hour).unwrap_or(NonZeroU32::MIN);
    Tier {
        limits,
        limiter: RateLimiter::keyed(Quota::per_hour(per_hour))
            .with_middleware::<StateInformationMiddleware>(),
    }
}

impl Limits {
    /// Builds the limiters and charges the counters saved by the previous run.
    pub fn open(cfg: &AuthConfig, data_dir: &Path) -> Result<Self> {
        let mut tiers: HashMap<String, Tier> = cfg
            .tiers
            .iter()
            .map(|(n, l)| (n.clone(), tier(*l)))
            .collect();
        tiers.insert("anonymous".into(), tier(cfg.anonymous));
        let s = Self {
            tiers,
            concurrency: Default::default(),
            used: Default::default(),
            path: data_dir.join("ratelimits.json"),
        };
        s.restore();
        Ok(s)
    }

    fn restore(&self) {
        let Ok(bytes) = std::fs::read(&self.path) else {
            return;
        };
        let Ok(saved) = serde_json::from_slice::<BTreeMap<String, Saved>>(&bytes) else {
            tracing::warn!(path = %self.path.display(), "ignoring an unreadable rate-limit file");
            return;
        };
        let now = chrono::Utc::now().timestamp();
        for (subject, s) in saved {
            let Some(t) = self.tiers.get(&s.tier) else {
                continue;
            };
            let per_s = t.limits.requests_per_hour as f64 / 3600.0;
            let refilled = ((now - s.at).max(0) as f64 * per_s) as u32;
            if let Some(n) = NonZeroU32::new(s.used.saturating_sub(refilled)) {
                let _ = t.limiter.check_key_n(&subject, n);
            }
            self.used
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(subject, s);
        }
    }

    /// Writes the counters (cheap: one small file).
    pub fn persist(&self) -> Result<()> {
        let snapshot = {
            let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            serde_json::to_vec(&*used)?
        };
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, snapshot)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }

    fn quotas(t: &Tier, remaining: u32) -> Quotas {
        let limit = t.limits.requests_per_hour;
        let per_cell = 3600.0 / limit as f64;
        Quotas {
            limit,
            remaining,
            reset_s: ((limit - remaining.min(limit)) as f64 * per_cell).ceil() as u64,
        }
    }

    /// Counts one request of `p` against its tier; refuses over the hourly quota or the
    /// concurrency cap.
    pub fn admit(&self, p: &Principal) -> std::result::Result<Admission, Rejection> {
        let t = self
            .tiers
            .get(&p.tier)
            .or_else(|| self.tiers.get("anonymous"))
            .expect("the anonymous tier always exists");
        let sem = {
            let mut map = self.concurrency.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(p.subject.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(t.limits.concurrent as usize)))
                .clone()
        };
        let Ok(permit) = sem.try_acquire_owned() else {
            return Err(Rejection {
                tier: p.tier.clone(),
                reason: "concurrency",
                retry_after_s: 1,
                quotas: Self::quotas(t, t.limits.requests_per_hour),
            });
        };
        match t.limiter.check_key(&p.subject) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                self.used.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    p.subject.clone(),
                    Saved {
                        tier: p.tier.clone(),
                        used: t.limits.requests_per_hour - remaining,
                        at: chrono::Utc::now().timestamp(),
                    },
                );
                Ok(Admission {
                    quotas: Self::quotas(t, remaining),
                    _permit: permit,
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(t.limiter.clock().now());
                Err(Rejection {
                    tier: p.tier.clone(),
                    reason: "rate",
                    retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
                    quotas: Self::quotas(t, 0),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(tier: &str) -> Principal {
        Principal {
            name: "t".into(),
            subject: "key:t".into(),
            tier: tier.into(),
            scopes: vec![],
        }
    }

    #[test]
    fn quota_and_concurrency_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = AuthConfig::default();
        cfg.tiers.insert(
            "tiny".into(),
            TierLimits {
                requests_per_hour: 3,
                concurrent: 2,
            },
        );
        let limits = Limits::open(&cfg, dir.path()).unwrap();
        let a = limits.admit(&who("tiny")).unwrap();
        assert_eq!(a.quotas.limit, 3);
        assert_eq!(a.quotas.remaining, 2);
        let b = limits.admit(&who("tiny")).unwrap();
        // Two in flight: the third concurrent one is refused without spending quota.
        let c = limits.admit(&who("tiny")).err().unwrap();
        assert_eq!(c.reason, "concurrency");
        drop((a, b));
        let d = limits.admit(&who("tiny")).unwrap();
        assert_eq!(d.quotas.remaining, 0);
        drop(d);
        let e = limits.admit(&who("tiny")).err().unwrap();
        assert_eq!(e.reason, "rate");
        assert!(e.retry_after_s > 0 && e.retry_after_s <= 1200, "{e:?}");
        // A restart remembers the spent quota.
        limits.persist().unwrap();
        let again = Limits::open(&cfg, dir.path()).unwrap();
        assert_eq!(again.admit(&who("tiny")).err().unwrap().reason, "rate");
        // Another subject is unaffected.
        let mut other = who("tiny");
        other.subject = "key:other".into();
        assert!(again.admit(&other).is_ok());
    }
}
