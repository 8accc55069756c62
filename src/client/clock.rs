//! The estimate of the server's clock offset, from the `Date` header of every response.
//!
//! `Date` has a resolution of one second, so one response only says that the server's
//! clock read some time in `[D, D + 1 s)` at a moment between sending the request and
//! receiving the response: the offset (server time minus local time) lies in
//! `[D - received, D + 1 s - sent]`. Each response narrows the interval (the intersection
//! of all of them); responses that land at different points of the server's second bring
//! the width down towards the round-trip time. The estimate is the interval's midpoint and
//! its precision half its width. A response outside the interval (a clock was stepped)
//! starts a new one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// The estimated offset of the server's clock: add `offset_ms` to the local time to get
/// the server's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockOffset {
    /// Server time minus local time, in milliseconds (midpoint of the possible range).
    pub offset_ms: i64,
    /// The true offset lies within `offset_ms ± precision_ms` (half the range's width),
    /// assuming neither clock was stepped meanwhile.
    pub precision_ms: i64,
}

/// Shared by both connections of a session; the lock is held for a few comparisons only.
#[derive(Default)]
pub(crate) struct Clock {
    /// The offset range `[lo, hi]` in milliseconds, `None` before the first response.
    range: Mutex<Option<(i64, i64)>>,
}

fn millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

impl Clock {
    /// A response dated `date` (whole seconds) to a request sent at `sent` and answered at
    /// `received`, both local times.
    pub(crate) fn observe(&self, date: SystemTime, sent: SystemTime, received: SystemTime) {
        let server = millis(date);
        let lo = server - millis(received);
        let hi = server + 999 - millis(sent);
        let mut range = self.range.lock();
        *range = match *range {
            Some((l, h)) if lo.max(l) <= hi.min(h) => Some((lo.max(l), hi.min(h))),
            _ => Some((lo, hi)),
        };
    }

    pub(crate) fn offset(&self) -> Option<ClockOffset> {
        let (lo, hi) = (*self.range.lock())?;
        Some(ClockOffset { offset_ms: lo + (hi - lo) / 2, precision_ms: (hi - lo + 1) / 2 })
    }
}

impl ClockOffset {
    /// The server's clock now, by this estimate.
    pub fn server_now(&self) -> SystemTime {
        let now = SystemTime::now();
        if self.offset_ms >= 0 {
            now + Duration::from_millis(self.offset_ms as u64)
        } else {
            now - Duration::from_millis(self.offset_ms.unsigned_abs())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn one_response_gives_a_second_wide_range() {
        let clock = Clock::default();
        assert_eq!(clock.offset(), None);
        // Server 2 s ahead: local 10.300..10.310 s, server said 12 s.
        clock.observe(at(12_000), at(10_300), at(10_310));
        let o = clock.offset().unwrap();
        assert!(o.offset_ms - o.precision_ms <= 2000 && 2000 <= o.offset_ms + o.precision_ms, "{o:?}");
        assert!(o.precision_ms <= 505, "{o:?}");
    }

    #[test]
    fn responses_at_different_phases_narrow_the_range() {
        let clock = Clock::default();
        // True offset +2000 ms; the server's second changes at local x.000.
        for (sent, received) in [(10_300, 10_310), (10_995, 11_005), (11_990, 12_002), (12_600, 12_605)] {
            let server_ms = (sent + 5 + 2000) / 1000 * 1000;
            clock.observe(at(server_ms), at(sent), at(received));
        }
        let o = clock.offset().unwrap();
        assert!(o.precision_ms <= 20, "{o:?}");
        assert!((o.offset_ms - 2000).abs() <= o.precision_ms, "{o:?}");
    }

    #[test]
    fn a_stepped_clock_starts_over() {
        let clock = Clock::default();
        clock.observe(at(12_000), at(10_300), at(10_310));
        // The local clock jumped back a minute: inconsistent with the range so far.
        clock.observe(at(12_000), at(70_300), at(70_310));
        let o = clock.offset().unwrap();
        assert!((o.offset_ms + 58_000).abs() <= o.precision_ms, "{o:?}");
    }
}
