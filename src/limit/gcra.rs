//! GCRA (the generic cell rate algorithm): a bucket is one number, its
//! *theoretical arrival time* (TAT). Each admitted request pushes the TAT one
//! emission interval into the future; a request is admitted while the TAT
//! stays within `burst` intervals of now. There are no windows, so there is
//! no double burst at a window edge: over any interval `d`, at most
//! `burst + d / interval` requests are admitted.
//!
//! The model is unit-agnostic (`u64` time units): the in-process store uses
//! nanoseconds, the Redis script microseconds (Lua numbers are doubles, exact
//! to 2^53). Both stores keep only the TAT and call the same functions here to
//! turn the *occupancy* (`TAT - now`, clamped at 0) into a decision and header
//! values, so they agree by construction.

use crate::plan::limit::Rate;

/// One policy's parameters in some time unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time one request "costs": `period / count`, rounded up so rounding
    /// never admits more than the configured rate.
    pub interval: u64,
    /// `burst × interval`: the most occupancy a bucket may hold.
    pub span: u64,
}

/// What the bucket says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Requests that could be admitted right now (after this one, if it was).
    pub remaining: u64,
    /// Time until `remaining` next grows (0 when the bucket is full).
    pub reset: u64,
}

impl Gcra {
    /// Parameters for `rate` and `burst` in units of `1 / units_per_sec` seconds.
    pub fn new(rate: Rate, burst: u64, units_per_sec: u64) -> Gcra {
        let period = u128::from(rate.period.as_secs()) * u128::from(units_per_sec);
        let count = u128::from(rate.count.max(1));
        let interval = u64::try_from(period.div_ceil(count))
            .unwrap_or(u64::MAX)
            .max(1);
        Gcra {
            interval,
            span: interval.saturating_mul(burst.max(1)),
        }
    }

    /// The occupancy of a bucket whose TAT is `tat` at time `now`.
    pub fn occupancy(tat: u64, now: u64) -> u64 {
        tat.saturating_sub(now)
    }

    /// Whether a request is admitted at this occupancy.
    pub fn admits(&self, occupancy: u64) -> bool {
        occupancy.saturating_add(self.interval) <= self.span
    }

    /// The TAT after admitting a request at `now` with this occupancy.
    pub fn next_tat(&self, occupancy: u64, now: u64) -> u64 {
        now.saturating_add(occupancy).saturating_add(self.interval)
    }

    /// Time until a request would be admitted (0 if it is now).
    pub fn retry_after(&self, occupancy: u64) -> u64 {
        occupancy
            .saturating_add(self.interval)
            .saturating_sub(self.span)
    }

    /// Remaining requests and the time until one more is available, for a
    /// bucket at this occupancy (take it after the request was counted).
    pub fn status(&self, occupancy: u64) -> Status {
        let free = self.span.saturating_sub(occupancy);
        let remaining = free / self.interval;
        let reset = if occupancy == 0 {
            0
        } else {
            (remaining + 1) * self.interval - free
        };
        Status { remaining, reset }
    }
}

/// Whole seconds, rounded up: `Retry-After` and the `t` parameter must never
/// tell a client to come back before its permit is there.
pub fn ceil_secs(units: u64, units_per_sec: u64) -> u64 {
    units.div_ceil(units_per_sec.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn gcra(count: u64, secs: u64, burst: u64) -> Gcra {
        Gcra::new(
            Rate {
                count,
                period: Duration::from_secs(secs),
            },
            burst,
            1_000,
        )
    }

    /// Runs GCRA over arrival times (ms); returns which were admitted.
    fn run(g: &Gcra, arrivals: &[u64]) -> Vec<bool> {
        let mut tat = 0;
        arrivals
            .iter()
            .map(|&now| {
                let occ = Gcra::occupancy(tat, now);
                let ok = g.admits(occ);
                if ok {
                    tat = g.next_tat(occ, now);
                }
                ok
            })
            .collect()
    }

    /// The reference model, written independently of the TAT formulation: a
    /// token bucket whose credit is kept in milliseconds of refill time. A
    /// token costs `per_token` ms of credit (the rounded-up interval the
    /// gateway promises), the bucket holds `burst` tokens' worth, and every
    /// elapsed millisecond adds one millisecond of credit.
    fn token_bucket(count: u64, period_ms: u64, burst: u64, arrivals: &[u64]) -> Vec<bool> {
        let per_token = period_ms.div_ceil(count);
        let cap = burst * per_token;
        let mut credit = cap;
        let mut last = 0;
        arrivals
            .iter()
            .map(|&t| {
                credit = (credit + (t - last)).min(cap);
                last = t;
                if credit >= per_token {
                    credit -= per_token;
                    true
                } else {
                    false
                }
            })
            .collect()
    }

    #[test]
    fn a_full_bucket_admits_burst_then_one_per_interval() {
        let g = gcra(10, 1, 3); // 100 ms per request, 3 at once
        let admitted = run(&g, &[0, 0, 0, 0, 50, 100, 150, 200]);
        assert_eq!(
            admitted,
            [true, true, true, false, false, true, false, true]
        );
    }

    #[test]
    fn status_counts_down_and_reports_the_next_permit() {
        let g = gcra(10, 1, 3);
        assert_eq!(
            g.status(0),
            Status {
                remaining: 3,
                reset: 0
            }
        );
        assert_eq!(
            g.status(100),
            Status {
                remaining: 2,
                reset: 100
            }
        );
        assert_eq!(
            g.status(300),
            Status {
                remaining: 0,
                reset: 100
            }
        );
        // Rejected at occupancy 250: retry in 50 ms; status agrees.
        assert!(!g.admits(250));
        assert_eq!(g.retry_after(250), 50);
        assert_eq!(g.status(250).reset, 50);
        assert_eq!(ceil_secs(50, 1_000), 1);
        assert_eq!(ceil_secs(0, 1_000), 0);
    }

    #[test]
    fn intervals_round_up_never_faster_than_the_rate() {
        let g = gcra(3, 1, 1);
        assert_eq!(g.interval, 334);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Against the brute-force reference: the same decisions as an
        /// independent token bucket, and over every interval between two
        /// admissions no more than `burst + rate × interval` were admitted.
        #[test]
        fn gcra_matches_a_token_bucket_and_never_exceeds_burst_plus_rate(
            count in 1u64..40,
            secs in 1u64..4,
            burst in 1u64..15,
            gaps in proptest::collection::vec(0u64..400, 1..250),
        ) {
            let g = gcra(count, secs, burst);
            let mut t = 0;
            let arrivals: Vec<u64> = gaps.iter().map(|d| { t += d; t }).collect();
            let ours = run(&g, &arrivals);
            let reference = token_bucket(count, secs * 1000, burst, &arrivals);
            prop_assert_eq!(&ours, &reference);
            let admitted: Vec<u64> = arrivals.iter().zip(&ours).filter(|(_, a)| **a).map(|(t, _)| *t).collect();
            for i in 0..admitted.len() {
                for j in i..admitted.len() {
                    let n = (j - i + 1) as u64;
                    let d = admitted[j] - admitted[i];
                    // n <= burst + count/period × d, in integers (ms).
                    prop_assert!(
                        n <= burst || (n - burst) * secs * 1000 <= d * count,
                        "{} admitted within {} ms (burst {}, rate {}/{}s)", n, d, burst, count, secs
                    );
                }
            }
            // Never stricter than promised either: a client that sends one
            // request per interval after the burst is always admitted.
            let steady: Vec<u64> = (0..50).map(|i| i * g.interval).collect();
            prop_assert!(run(&g, &steady).iter().all(|a| *a));
        }
    }
}
