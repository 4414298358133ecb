//! The local host's configuration: the environment (and `--listen`), checked at start-up.

use std::{net::SocketAddr, ops::RangeInclusive, path::PathBuf, sync::Arc};

use anyhow::bail;

pub use crate::config::ConfigError;

use crate::api::{ApiToken, Auth};
use crate::webhook::{
    guard::{LOCAL_DEFAULT_ALLOWED, TargetGuard},
    signing::StandardWebhooksSigner,
};

/// Where `serve` listens when neither `--listen` nor `PORT` says: loopback, so an
/// unauthenticated API is never reachable from another machine by default.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
/// The data directory when `SCHEDULER_DATA_DIR` is unset: beside where `make dev` runs.
pub(crate) const DEFAULT_DATA_DIR: &str = ".scheduler";
/// Deliveries in flight at once (`SCHEDULER_MAX_CONCURRENCY`): enough to keep a slow
/// receiver from holding up the rest, few enough for the default open-files limit.
pub(crate) const DEFAULT_MAX_CONCURRENCY: usize = 256;
const MAX_CONCURRENCY: RangeInclusive<usize> = 1..=10_000;
/// Wake-ups the timer keeps in memory (`SCHEDULER_TIMER_CAPACITY`); the rest wait on disk.
pub(crate) const DEFAULT_TIMER_CAPACITY: usize = 100_000;
const TIMER_CAPACITY: RangeInclusive<usize> = 100..=10_000_000;
/// Requests per second per owner (`SCHEDULER_RATE_LIMIT`); 0 turns the limit off.
pub(crate) const DEFAULT_RATE_LIMIT: u32 = 1000;
const RATE_LIMIT: RangeInclusive<usize> = 0..=1_000_000;
/// Seconds between sweeps (`SCHEDULER_SWEEP_INTERVAL_SECONDS`): once a minute, as on AWS.
/// Shorter is for tests that want recovery within seconds.
pub(crate) const DEFAULT_SWEEP_INTERVAL_SECONDS: usize = 60;
const SWEEP_INTERVAL_SECONDS: RangeInclusive<usize> = 1..=3600;

/// Configuration of `serve`, from the environment (and `--listen`).
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) tokens: Vec<ApiToken>,
    pub(crate) max_concurrency: usize,
    pub(crate) timer_capacity: usize,
    /// Which non-public targets may be called (`SCHEDULER_ALLOWED_TARGETS`).
    pub(crate) targets: TargetGuard,
    /// `SCHEDULER_SIGNING_SECRET`; when unset a secret is generated into the data directory.
    pub(crate) signing_secret: Option<Arc<StandardWebhooksSigner>>,
    /// Requests per second per owner (`SCHEDULER_RATE_LIMIT`, 0 = unlimited); burst twice that.
    pub(crate) rate_limit: u32,
    /// How often the sweeper looks for stalled tasks (`SCHEDULER_SWEEP_INTERVAL_SECONDS`).
    pub(crate) sweep_interval: std::time::Duration,
}

/// An integer variable within `range`, or `default` when unset.
fn number(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: usize,
    range: RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    match get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| ConfigError::Invalid {
                name,
                reason: format!(
                    "must be an integer between {} and {}",
                    range.start(),
                    range.end()
                ),
            }),
    }
}

impl LocalConfig {
    pub fn from_env(listen: Option<String>) -> Result<Self, ConfigError> {
        let mut config = Self::from_lookup(listen, |name| std::env::var(name).ok())?;
        // A path need not be UTF-8.
        if let Some(dir) = std::env::var_os("SCHEDULER_DATA_DIR") {
            config.data_dir = dir.into();
        }
        Ok(config)
    }

    /// `listen` (the `--listen` flag) wins over `PORT`; both default to [`DEFAULT_LISTEN`].
    pub(crate) fn from_lookup(
        listen: Option<String>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let listen = match (listen, get("PORT")) {
            (Some(l), _) => l.parse().map_err(|_| ConfigError::Invalid {
                name: "--listen",
                reason: format!("{l} is not an address like {DEFAULT_LISTEN}"),
            })?,
            (None, Some(p)) => {
                let port: u16 = p.trim().parse().map_err(|_| ConfigError::Invalid {
                    name: "PORT",
                    reason: format!("{p} is not a port number"),
                })?;
                SocketAddr::from(([127, 0, 0, 1], port))
            }
            (None, None) => DEFAULT_LISTEN.parse().expect("the default address parses"),
        };
        let tokens = ApiToken::parse_list(&get("SCHEDULER_API_TOKENS").unwrap_or_default())
            .map_err(|e| ConfigError::Invalid {
                name: "SCHEDULER_API_TOKENS",
                reason: e.message,
            })?;
        // Set, even empty, it replaces the default: "" allows public addresses only.
        let targets = TargetGuard::parse_allowed(
            &get("SCHEDULER_ALLOWED_TARGETS").unwrap_or_else(|| LOCAL_DEFAULT_ALLOWED.into()),
        )
        .map_err(|e| ConfigError::Invalid {
            name: "SCHEDULER_ALLOWED_TARGETS",
            reason: e.to_string(),
        })?;
        let signing_secret = match get("SCHEDULER_SIGNING_SECRET").filter(|s| !s.trim().is_empty())
        {
            None => None,
            Some(s) => Some(Arc::new(StandardWebhooksSigner::parse(&s).map_err(
                |e| ConfigError::Invalid {
                    name: "SCHEDULER_SIGNING_SECRET",
                    reason: e.to_string(),
                },
            )?)),
        };
        let rate_limit = number(
            &get,
            "SCHEDULER_RATE_LIMIT",
            DEFAULT_RATE_LIMIT as usize,
            RATE_LIMIT,
        )?;
        Ok(Self {
            listen,
            data_dir: get("SCHEDULER_DATA_DIR")
                .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from),
            tokens,
            max_concurrency: number(
                &get,
                "SCHEDULER_MAX_CONCURRENCY",
                DEFAULT_MAX_CONCURRENCY,
                MAX_CONCURRENCY,
            )?,
            timer_capacity: number(
                &get,
                "SCHEDULER_TIMER_CAPACITY",
                DEFAULT_TIMER_CAPACITY,
                TIMER_CAPACITY,
            )?,
            targets,
            signing_secret,
            rate_limit: u32::try_from(rate_limit).expect("the range fits in u32"),
            sweep_interval: std::time::Duration::from_secs(number(
                &get,
                "SCHEDULER_SWEEP_INTERVAL_SECONDS",
                DEFAULT_SWEEP_INTERVAL_SECONDS,
                SWEEP_INTERVAL_SECONDS,
            )? as u64),
        })
    }

    /// Without tokens the API is open; that is only acceptable on this machine.
    pub(crate) fn auth(&self) -> anyhow::Result<Auth> {
        if !self.tokens.is_empty() {
            return Ok(Auth::Bearer(self.tokens.clone()));
        }
        if !self.listen.ip().is_loopback() {
            bail!(
                "refusing to listen on {} without authentication: set SCHEDULER_API_TOKENS (name:token pairs) or listen on a loopback address",
                self.listen
            );
        }
        Ok(Auth::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::lookup as env;

    fn with(k: &'static str, v: &str) -> Result<LocalConfig, ConfigError> {
        LocalConfig::from_lookup(None, env(&[(k, v)]))
    }

    const TOKENS: &str = "alice:0123456789abcdef";
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn empty_environment_gives_the_defaults() {
        let c = LocalConfig::from_lookup(None, env(&[])).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.tokens.is_empty());
        assert_eq!(c.max_concurrency, DEFAULT_MAX_CONCURRENCY);
        assert_eq!(c.timer_capacity, DEFAULT_TIMER_CAPACITY);
        assert_eq!(c.rate_limit, DEFAULT_RATE_LIMIT);
        assert_eq!(c.sweep_interval, std::time::Duration::from_secs(60));
        assert!(c.signing_secret.is_none());
        // The local default lets this machine and the private networks be called.
        assert!(c.targets.allows("127.0.0.1".parse().unwrap()));
        assert!(c.targets.allows("10.1.2.3".parse().unwrap()));
        assert!(!c.targets.allows("169.254.169.254".parse().unwrap()));
        assert!(matches!(c.auth().unwrap(), Auth::Open));
    }

    #[test]
    fn valid_values_are_taken() {
        assert_eq!(
            with("PORT", "3998").unwrap().listen,
            "127.0.0.1:3998".parse().unwrap()
        );
        let flag = LocalConfig::from_lookup(Some("127.0.0.1:4000".into()), env(&[("PORT", "1")]));
        assert_eq!(flag.unwrap().listen, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(
            with("SCHEDULER_DATA_DIR", "/tmp/x").unwrap().data_dir,
            PathBuf::from("/tmp/x")
        );
        assert_eq!(
            with("SCHEDULER_API_TOKENS", TOKENS).unwrap().tokens.len(),
            1
        );
        assert_eq!(
            with("SCHEDULER_MAX_CONCURRENCY", " 8 ")
                .unwrap()
                .max_concurrency,
            8
        );
        assert_eq!(
            with("SCHEDULER_TIMER_CAPACITY", "100")
                .unwrap()
                .timer_capacity,
            100
        );
        assert_eq!(with("SCHEDULER_RATE_LIMIT", "0").unwrap().rate_limit, 0);
        assert_eq!(
            with("SCHEDULER_SWEEP_INTERVAL_SECONDS", " 2 ")
                .unwrap()
                .sweep_interval,
            std::time::Duration::from_secs(2)
        );
        let public_only = with("SCHEDULER_ALLOWED_TARGETS", "").unwrap().targets;
        assert!(!public_only.allows("127.0.0.1".parse().unwrap()));
        let narrow = with("SCHEDULER_ALLOWED_TARGETS", "10.9.0.0/16")
            .unwrap()
            .targets;
        assert!(narrow.allows("10.9.1.1".parse().unwrap()));
        assert!(!narrow.allows("10.8.1.1".parse().unwrap()));
        assert!(
            with("SCHEDULER_SIGNING_SECRET", SECRET)
                .unwrap()
                .signing_secret
                .is_some()
        );
        assert!(
            with("SCHEDULER_SIGNING_SECRET", "  ")
                .unwrap()
                .signing_secret
                .is_none()
        );
    }

    #[test]
    fn invalid_values_are_named() {
        for (k, v) in [
            ("PORT", "http"),
            ("PORT", "70000"),
            ("SCHEDULER_API_TOKENS", "alice"),
            ("SCHEDULER_API_TOKENS", "alice:short"),
            ("SCHEDULER_MAX_CONCURRENCY", "0"),
            ("SCHEDULER_MAX_CONCURRENCY", "many"),
            ("SCHEDULER_TIMER_CAPACITY", "99"),
            ("SCHEDULER_RATE_LIMIT", "-1"),
            ("SCHEDULER_RATE_LIMIT", "1000001"),
            ("SCHEDULER_SWEEP_INTERVAL_SECONDS", "0"),
            ("SCHEDULER_SWEEP_INTERVAL_SECONDS", "3601"),
            ("SCHEDULER_SWEEP_INTERVAL_SECONDS", "1m"),
            ("SCHEDULER_ALLOWED_TARGETS", "10.0.0.0/33"),
            ("SCHEDULER_SIGNING_SECRET", "too-short"),
        ] {
            let e = with(k, v).unwrap_err();
            assert!(
                matches!(e, ConfigError::Invalid { name, .. } if name == k),
                "{k}={v}: {e}"
            );
            assert!(e.to_string().contains(k), "{e}");
        }
        let e = LocalConfig::from_lookup(Some("localhost".into()), env(&[])).unwrap_err();
        assert!(e.to_string().contains("--listen"), "{e}");
    }

    #[test]
    fn an_open_api_is_refused_beyond_loopback() {
        let open = LocalConfig::from_lookup(Some("0.0.0.0:3000".into()), env(&[])).unwrap();
        assert!(
            open.auth()
                .unwrap_err()
                .to_string()
                .contains("SCHEDULER_API_TOKENS")
        );
        let closed = LocalConfig::from_lookup(
            Some("0.0.0.0:3000".into()),
            env(&[("SCHEDULER_API_TOKENS", TOKENS)]),
        )
        .unwrap();
        assert!(matches!(closed.auth().unwrap(), Auth::Bearer(_)));
    }
}
