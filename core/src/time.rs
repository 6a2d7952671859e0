//! Time as the core sees it: a monotonic instant chosen by the driver, and a wall-clock anchor.
//!
//! The core never reads a clock. Drivers pass `now` into every call; tests and recorded sessions
//! use any values they like, so a conversation replays exactly.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on the driver's monotonic clock, as the time since an origin the driver chose
/// (typically when it started). Only differences between instants matter to the core.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(Duration);

impl Instant {
    /// The origin.
    pub const ZERO: Self = Self(Duration::ZERO);

    /// The instant `d` after the origin.
    pub const fn from_origin(d: Duration) -> Self {
        Self(d)
    }

    /// The instant `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// Time since the origin.
    pub const fn since_origin(self) -> Duration {
        self.0
    }

    /// Milliseconds since the origin (saturating at `u64::MAX`).
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    /// Time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Instant {
    type Output = Self;

    /// Saturates instead of overflowing: a deadline past the end of time never fires.
    fn add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d))
    }
}

impl Sub for Instant {
    type Output = Duration;

    fn sub(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{}ms", self.as_millis())
    }
}

/// Anchors the monotonic clock to wall-clock time: at `at`, the unix time was `unix_ms`. Given
/// at connect; the core derives wall time from it (for certificate validity, the server clock
/// offset) without reading a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// The monotonic instant of the reading.
    pub at: Instant,
    /// Unix time in milliseconds at `at`.
    pub unix_ms: u64,
}

impl Clock {
    /// Unix time in milliseconds at `now`.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let delta =
            u64::try_from(now.saturating_duration_since(self.at).as_millis()).unwrap_or(u64::MAX);
        self.unix_ms.saturating_add(delta)
    }

    /// Unix time in whole seconds at `now`.
    pub fn unix_secs(&self, now: Instant) -> u64 {
        self.unix_ms(now) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        let t = Instant::from_millis(1500);
        assert_eq!((t + Duration::from_millis(500)).as_millis(), 2000);
        assert_eq!(t - Instant::from_millis(2000), Duration::ZERO);
        assert_eq!(
            Instant::from_origin(Duration::MAX) + Duration::from_secs(1),
            Instant::from_origin(Duration::MAX)
        );
        let c = Clock {
            at: t,
            unix_ms: 1_700_000_000_000,
        };
        assert_eq!(c.unix_ms(Instant::from_millis(2500)), 1_700_000_001_000);
        assert_eq!(c.unix_secs(Instant::ZERO), 1_700_000_000);
    }
}
