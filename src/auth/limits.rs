//! Per-tier limits: an hourly request quota (GCRA, `governor`: the quota refills smoothly,
//! one request every `3600 / requests_per_hour` seconds, with the whole hour's quota as
//! burst) and a cap on concurrent requests, both per subject (key, JWT subject or client IP).
//!
//! Counters survive restarts cheaply: every `persist_interval_s` (and at shutdown) the used
//! part of each subject's quota is written to `<data_dir>/ratelimits.json`; on start it is
//! charged again, minus what refilled while the server was down. The trade-off: requests
//! made in the last interval before a crash are forgotten (a subject can get at most one
//! interval's worth of extra requests per crash), in exchange for no disk write per request.
//!
//! Subjects are evicted when idle: on every save, a subject whose quota has refilled and that
//! has no request in flight is forgotten (governor's `retain_recent`, semaphores with no
//! holder, saved counters that refilled), and at most `auth.max_tracked_subjects` saved
//! counters are kept (the oldest go first). Without it every client address (auth off) or JWT
//! `sub` stayed in memory and in `ratelimits.json` forever.

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

type Limiter<C> =
    RateLimiter<String, DefaultKeyedStateStore<String>, C, StateInformationMiddleware>;

struct Tier<C: Clock> {
    limits: TierLimits,
    limiter: Limiter<C>,
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

/// The limiters of every tier. Generic over the clock so that tests can move time.
pub struct Limits<C: Clock = DefaultClock> {
    tiers: HashMap<String, Tier<C>>,
    concurrency: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Last known use per subject, for persistence.
    used: Mutex<BTreeMap<String, Saved>>,
    max_tracked: usize,
    path: PathBuf,
}

fn tier<C: Clock + Clone>(limits: TierLimits, clock: &C) -> Tier<C> {
    let per_hour = NonZeroU32::new(limits.requests_per_hour).unwrap_or(NonZeroU32::MIN);
    Tier {
        limits,
        limiter:
            RateLimiter::<String, _, C, governor::middleware::NoOpMiddleware<C::Instant>>::new(
                Quota::per_hour(per_hour),
                Default::default(),
                clock.clone(),
            )
            .with_middleware::<StateInformationMiddleware>(),
    }
}

impl Limits {
    /// Builds the limiters and charges the counters saved by the previous run.
    pub fn open(cfg: &AuthConfig, data_dir: &Path) -> Result<Self> {
        Self::open_with_clock(cfg, data_dir, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// [`Limits::open`] on a given clock.
    pub fn open_with_clock(cfg: &AuthConfig, data_dir: &Path, clock: C) -> Result<Self> {
        let mut tiers: HashMap<String, Tier<C>> = cfg
            .tiers
            .iter()
            .map(|(n, l)| (n.clone(), tier(*l, &clock)))
            .collect();
        tiers.insert("anonymous".into(), tier(cfg.anonymous, &clock));
        let s = Self {
            tiers,
            concurrency: Default::default(),
            used: Default::default(),
            max_tracked: cfg.max_tracked_subjects.max(1),
            path: data_dir.join("ratelimits.json"),
        };
        s.restore();
        Ok(s)
    }

    /// Forgets idle subjects (see the module doc); `now` is the Unix time in seconds. Called
    /// before every save.
    pub fn evict_idle(&self, now: i64) {
        for t in self.tiers.values() {
            t.limiter.retain_recent();
            t.limiter.shrink_to_fit();
        }
        // A permit holds a clone of its semaphore: only the map's own reference means idle.
        let mut conc = self.concurrency.lock().unwrap_or_else(|p| p.into_inner());
        conc.retain(|_, sem| Arc::strong_count(sem) > 1);
        conc.shrink_to_fit();
        drop(conc);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.retain(|_, s| self.unrefilled(s, now) > 0);
        if used.len() > self.max_tracked {
            let mut ages: Vec<i64> = used.values().map(|s| s.at).collect();
            let cut = ages.len() - self.max_tracked;
            let (_, oldest_kept, _) = ages.select_nth_unstable(cut);
            let oldest_kept = *oldest_kept;
            let mut over = used.len() - self.max_tracked;
            used.retain(|_, s| {
                let drop = over > 0 && s.at <= oldest_kept;
                over -= drop as usize;
                !drop
            });
        }
    }

    /// Subjects tracked: (rate-limiter entries over all tiers, concurrency entries, saved
    /// counters).
    pub fn tracked(&self) -> (usize, usize, usize) {
        let limiter = self.tiers.values().map(|t| t.limiter.len()).sum();
        let conc = self
            .concurrency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner()).len();
        (limiter, conc, used)
    }

    /// The part of a saved counter that has not refilled by `now`.
    fn unrefilled(&self, s: &Saved, now: i64) -> u32 {
        let Some(t) = self.tiers.get(&s.tier) else {
            return 0;
        };
        let per_s = t.limits.requests_per_hour as f64 / 3600.0;
        let refilled = ((now - s.at).max(0) as f64 * per_s) as u32;
        s.used.saturating_sub(refilled)
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
            let Some(n) = NonZeroU32::new(self.unrefilled(&s, now)) else {
                continue;
            };
            let _ = t.limiter.check_key_n(&subject, n);
            self.used
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(subject, s);
        }
    }

    /// Evicts idle subjects and writes the counters (cheap: one small file).
    pub fn persist(&self) -> Result<()> {
        self.evict_idle(chrono::Utc::now().timestamp());
        let snapshot = {
            let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            serde_json::to_vec(&*used)?
        };
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, snapshot)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }

    fn quotas(t: &Tier<C>, remaining: u32) -> Quotas {
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

    fn tier_cfg(requests_per_hour: u32, max_tracked: usize) -> AuthConfig {
        AuthConfig {
            anonymous: TierLimits {
                requests_per_hour,
                concurrent: 4,
            },
            max_tracked_subjects: max_tracked,
            ..Default::default()
        }
    }

    fn client(n: usize) -> Principal {
        Principal {
            name: "anonymous".into(),
            subject: format!("ip:10.0.{}.{}", n / 256, n % 256),
            tier: "anonymous".into(),
            scopes: vec![],
        }
    }

    #[test]
    fn idle_subjects_are_evicted_from_memory_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let clock = governor::clock::FakeRelativeClock::default();
        // 3,600 an hour: one request refills in a second.
        let limits =
            Limits::open_with_clock(&tier_cfg(3600, 100_000), dir.path(), clock.clone()).unwrap();
        let now = chrono::Utc::now().timestamp();
        let held = limits.admit(&client(0)).unwrap();
        for n in 1..100_000 {
            drop(limits.admit(&client(n)).unwrap());
        }
        assert_eq!(limits.tracked(), (100_000, 100_000, 100_000));
        // Nothing has refilled yet: everything stays (and the file holds every counter).
        limits.evict_idle(now);
        assert_eq!(limits.tracked(), (100_000, 1, 100_000));
        // Later every quota has refilled; only the request in flight is kept.
        clock.advance(std::time::Duration::from_secs(2));
        limits.evict_idle(now + 60);
        assert_eq!(limits.tracked(), (0, 1, 0));
        drop(held);
        limits.evict_idle(now + 60);
        assert_eq!(limits.tracked(), (0, 0, 0));
        limits.persist().unwrap();
        let file = std::fs::metadata(dir.path().join("ratelimits.json"))
            .unwrap()
            .len();
        assert!(file < 16, "an empty map, not 100,000 entries: {file} bytes");
        // An evicted subject starts afresh.
        assert_eq!(limits.admit(&client(7)).unwrap().quotas.remaining, 3599);
    }

    #[test]
    fn saved_counters_are_capped_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let clock = governor::clock::FakeRelativeClock::default();
        let limits =
            Limits::open_with_clock(&tier_cfg(10, 1_000), dir.path(), clock.clone()).unwrap();
        for n in 0..5_000 {
            drop(limits.admit(&client(n)).unwrap());
        }
        // An hour's quota of 10 refills one request per 6 minutes: nothing is idle yet.
        let now = chrono::Utc::now().timestamp();
        limits.evict_idle(now);
        let (limiter, conc, used) = limits.tracked();
        assert_eq!((limiter, conc, used), (5_000, 0, 1_000));
        limits.persist().unwrap();
        let bytes = std::fs::read(dir.path().join("ratelimits.json")).unwrap();
        let saved: BTreeMap<String, Saved> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(saved.len(), 1_000);
    }
}
