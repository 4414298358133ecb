use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ValidationError;

/// Attempts in all (the first delivery included): 1..=25.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub(crate) struct MaxAttempts(u32);

impl MaxAttempts {
    pub(crate) const RANGE: std::ops::RangeInclusive<u32> = 1..=25;

    pub(crate) fn parse(n: i64) -> Result<Self, ValidationError> {
        u32::try_from(n)
            .ok()
            .filter(|n| Self::RANGE.contains(n))
            .map(Self)
            .ok_or_else(|| ValidationError::new("retry.max_attempts", "must be between 1 and 25"))
    }

    pub(crate) fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for MaxAttempts {
    type Error = ValidationError;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        Self::parse(n.into())
    }
}

impl From<MaxAttempts> for u32 {
    fn from(m: MaxAttempts) -> Self {
        m.0
    }
}

/// A backoff bound in whole seconds: 1 s ..= 1 day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub(crate) struct BackoffSeconds(u32);

impl BackoffSeconds {
    pub(crate) const MAX: u32 = 86_400;

    pub(crate) fn parse(field: &str, n: i64) -> Result<Self, ValidationError> {
        u32::try_from(n)
            .ok()
            .filter(|n| (1..=Self::MAX).contains(n))
            .map(Self)
            .ok_or_else(|| ValidationError::new(field, "must be between 1 and 86400 seconds"))
    }

    pub(crate) fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for BackoffSeconds {
    type Error = ValidationError;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        Self::parse("backoff", n.into())
    }
}

impl From<BackoffSeconds> for u32 {
    fn from(b: BackoffSeconds) -> Self {
        b.0
    }
}

/// How often and how patiently a failed delivery is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RetryPolicy {
    pub(crate) max_attempts: MaxAttempts,
    pub(crate) initial_backoff_seconds: BackoffSeconds,
    pub(crate) max_backoff_seconds: BackoffSeconds,
}

impl Default for RetryPolicy {
    /// 3 attempts in all, 10 s initial backoff doubling with full jitter, capped at 1 h.
    fn default() -> Self {
        Self {
            max_attempts: MaxAttempts(3),
            initial_backoff_seconds: BackoffSeconds(10),
            max_backoff_seconds: BackoffSeconds(3600),
        }
    }
}

impl RetryPolicy {
    /// Builds a policy from optional request fields, defaults filling the gaps.
    pub(crate) fn parse(
        max_attempts: Option<i64>,
        initial_backoff_seconds: Option<i64>,
        max_backoff_seconds: Option<i64>,
    ) -> Result<Self, ValidationError> {
        let d = Self::default();
        let max_attempts = max_attempts
            .map(MaxAttempts::parse)
            .transpose()?
            .unwrap_or(d.max_attempts);
        let initial = initial_backoff_seconds
            .map(|n| BackoffSeconds::parse("retry.initial_backoff_seconds", n))
            .transpose()?
            .unwrap_or(d.initial_backoff_seconds);
        let max = match max_backoff_seconds {
            Some(n) => BackoffSeconds::parse("retry.max_backoff_seconds", n)?,
            // Only the initial backoff given: keep the default cap, or the initial if larger.
            None => d.max_backoff_seconds.max(initial),
        };
        if max < initial {
            return Err(ValidationError::new(
                "retry.max_backoff_seconds",
                "must not be less than retry.initial_backoff_seconds",
            ));
        }
        Ok(Self {
            max_attempts,
            initial_backoff_seconds: initial,
            max_backoff_seconds: max,
        })
    }

    /// The ceiling of the wait before retry number `failures` (1 after the first failure):
    /// `initial · 2^(failures-1)`, capped at the maximum.
    pub(crate) fn backoff_ceiling(&self, failures: u32) -> Duration {
        let initial = u64::from(self.initial_backoff_seconds.0);
        let exp = failures.saturating_sub(1).min(32);
        let secs = initial
            .saturating_mul(1u64 << exp)
            .min(u64::from(self.max_backoff_seconds.0));
        Duration::from_secs(secs)
    }

    /// The wait before the next attempt: "full jitter" (uniform in `[0, ceiling]`, AWS
    /// Architecture Blog, *Exponential Backoff and Jitter*) so a burst of failures does not
    /// come back as a burst; a receiver's `Retry-After` wins, bounded by the policy's maximum.
    /// `jitter` is a sample of `[0, 1)`, passed in so the arithmetic stays pure.
    pub(crate) fn backoff(
        &self,
        failures: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Duration {
        let max = Duration::from_secs(self.max_backoff_seconds.0.into());
        if let Some(after) = retry_after {
            return after.min(max);
        }
        let ceiling = self.backoff_ceiling(failures);
        ceiling.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(a: i64, i: i64, m: i64) -> RetryPolicy {
        RetryPolicy::parse(Some(a), Some(i), Some(m)).unwrap()
    }

    #[test]
    fn defaults_match_the_api_contract() {
        let p = RetryPolicy::parse(None, None, None).unwrap();
        assert_eq!(p, RetryPolicy::default());
        assert_eq!(
            (
                p.max_attempts.get(),
                p.initial_backoff_seconds.get(),
                p.max_backoff_seconds.get()
            ),
            (3, 10, 3600)
        );
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let p = policy(10, 10, 60);
        let c: Vec<u64> = (1..=5).map(|n| p.backoff_ceiling(n).as_secs()).collect();
        assert_eq!(c, [10, 20, 40, 60, 60]);
        // No overflow far out.
        assert_eq!(
            policy(25, 86_400, 86_400)
                .backoff_ceiling(u32::MAX)
                .as_secs(),
            86_400
        );
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let p = policy(5, 10, 3600);
        assert_eq!(p.backoff(3, None, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(3, None, 0.5), Duration::from_secs(20));
        assert!(p.backoff(3, None, 0.999_999) <= Duration::from_secs(40));
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let p = policy(5, 10, 60);
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(30)), 0.0),
            Duration::from_secs(30)
        );
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(600)), 0.0),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let e = RetryPolicy::parse(Some(0), None, None).unwrap_err();
        assert_eq!(e.field, "retry.max_attempts");
        let e = RetryPolicy::parse(Some(26), None, None).unwrap_err();
        assert_eq!(e.field, "retry.max_attempts");
        let e = RetryPolicy::parse(None, Some(0), None).unwrap_err();
        assert_eq!(e.field, "retry.initial_backoff_seconds");
        let e = RetryPolicy::parse(None, Some(100), Some(10)).unwrap_err();
        assert_eq!(e.field, "retry.max_backoff_seconds");
        // Initial above the default cap lifts the cap rather than failing.
        assert_eq!(
            RetryPolicy::parse(None, Some(7200), None)
                .unwrap()
                .max_backoff_seconds
                .get(),
            7200
        );
    }

    proptest! {
        #[test]
        fn parse_accepts_exactly_the_documented_ranges(a in -5i64..40, i in -5i64..100_000, m in -5i64..100_000) {
            let ok = (1..=25).contains(&a) && (1..=86_400).contains(&i) && (1..=86_400).contains(&m) && m >= i;
            prop_assert_eq!(RetryPolicy::parse(Some(a), Some(i), Some(m)).is_ok(), ok);
        }

        #[test]
        fn backoff_never_exceeds_the_cap(i in 1i64..1000, extra in 0i64..5000, n in 1u32..100, j in 0.0f64..1.0, ra in proptest::option::of(0u64..1_000_000)) {
            let p = policy(25, i, i + extra);
            let d = p.backoff(n, ra.map(Duration::from_secs), j);
            prop_assert!(d <= Duration::from_secs((i + extra) as u64));
        }
    }
}
