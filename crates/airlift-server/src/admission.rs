//! Bounds on devices the server does not know yet.
//!
//! Anyone who can reach the device API can make up a key and ask to be
//! admitted, so first contact is the one device route open to strangers.
//! Each such request adds a pending device to the admission queue; left
//! unbounded, a script fills the queue (and the operator's screen) with
//! thousands a second. Two limits hold it: a rate per source address
//! ([`FirstContactLimiter`]) and a cap on pending devices
//! ([`AdmissionLimits::max_pending_devices`]); both answer 429 with
//! `Retry-After`. Known devices are never limited here.

use crate::config::AdmissionLimits;
use crate::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::IpAddr;
use std::num::NonZeroU32;

/// How long a refused newcomer is told to wait when the queue is full.
const QUEUE_FULL_RETRY_SECS: u64 = 60;

/// First contacts per source address: a token bucket per address (GCRA),
/// refilled at the configured rate per minute, holding at most that many.
pub struct FirstContactLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl std::fmt::Debug for FirstContactLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FirstContactLimiter({} addresses)", self.limiter.len())
    }
}

impl FirstContactLimiter {
    /// A limiter allowing `per_minute` first contacts per address.
    pub fn new(per_minute: NonZeroU32) -> Self {
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(per_minute)),
            clock: DefaultClock::default(),
        }
    }

    /// Counts a first contact from `address`: refused, with the seconds
    /// until one more is allowed, when the address has used its share.
    pub fn check(&self, address: IpAddr) -> Result<(), ApiError> {
        self.limiter.check_key(&address).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            metrics::counter!("airlift_first_contacts_refused_total", "reason" => "rate")
                .increment(1);
            ApiError::TooManyRequests(
                wait.as_secs() + 1,
                "too many new devices from this address; try again later".into(),
            )
        })
    }

    /// Forgets addresses whose bucket is full again, so memory follows the
    /// addresses seen in the last minute, not all ever seen.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Refuses a newcomer when `pending` devices already wait for a decision.
pub fn check_queue(limits: &AdmissionLimits, pending: u64) -> Result<(), ApiError> {
    if pending >= limits.max_pending_devices {
        metrics::counter!("airlift_first_contacts_refused_total", "reason" => "queue_full")
            .increment(1);
        return Err(ApiError::TooManyRequests(
            QUEUE_FULL_RETRY_SECS,
            format!(
                "the admission queue is full ({} devices wait for an operator); try again later",
                limits.max_pending_devices
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_share_and_then_waits_while_others_go_on() {
        let limiter = FirstContactLimiter::new(NonZeroU32::new(3).expect("non-zero"));
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        for _ in 0..3 {
            limiter.check(a).expect("within the share");
        }
        let refused = limiter.check(a).expect_err("the fourth in a minute");
        let ApiError::TooManyRequests(wait, _) = refused else {
            panic!("429 expected, got {refused:?}");
        };
        assert!(
            (1..=21).contains(&wait),
            "a third of a minute at most: {wait}"
        );
        limiter.check(b).expect("another address is not held back");
    }

    #[test]
    fn a_full_queue_refuses_newcomers() {
        let limits = AdmissionLimits {
            first_contact_per_minute: None,
            max_pending_devices: 2,
        };
        assert!(check_queue(&limits, 1).is_ok());
        assert!(matches!(
            check_queue(&limits, 2),
            Err(ApiError::TooManyRequests(60, _))
        ));
    }
}
