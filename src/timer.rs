//! One timer per connection, kept from request to request.
//!
//! A timer made for every head's deadline and dropped when the head has come is put in
//! tokio's timer wheel and taken out again (a lock and a wheel operation each way, and an
//! allocation). A [`ConnTimer`] keeps one tokio
//! timer for its connection and lends it to each timeout in turn. A later deadline than the
//! one the timer is set for is only noted: when the timer goes off at its old deadline, the
//! borrower sees that its own has not come and sets the timer again. A connection's timeouts
//! are seconds long and most end early: one later than the last costs no wheel operation, one
//! earlier (a head's deadline after a longer poll's) costs one, where a new timer cost two.
//!
//! The price: a timer given back before it goes off stays in the wheel and wakes the
//! connection's task once, for nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::time::{Instant, Sleep};

/// A connection's timer, for its timeouts ([`crate::conn`]'s read deadlines, a held poll's
/// wait). Clones share the timer.
#[derive(Clone, Default)]
pub struct ConnTimer {
    /// The timer when it is not lent. Boxed, as tokio's timer must not move once it is in the
    /// wheel.
    idle: Arc<Mutex<Option<Pin<Box<Sleep>>>>>,
}

impl ConnTimer {
    /// A future that ends at `deadline`: the connection's timer if no other timeout of the
    /// connection has it (there is one at a time, but nothing relies on it), a new one if not.
    pub fn sleep_until(&self, deadline: Instant) -> Lent {
        let idle = self.idle.lock().take();
        let sleep = idle.unwrap_or_else(|| Box::pin(tokio::time::sleep_until(deadline)));
        let mut lent = Lent { sleep: Some(sleep), deadline, home: self.idle.clone() };
        lent.reset(deadline);
        lent
    }
}

/// The connection's timer, lent to one timeout; given back when dropped.
pub struct Lent {
    /// Always `Some` until the drop takes it. Set for `deadline` or earlier.
    sleep: Option<Pin<Box<Sleep>>>,
    /// When this timeout ends.
    deadline: Instant,
    home: Arc<Mutex<Option<Pin<Box<Sleep>>>>>,
}

impl Lent {
    fn sleep(&mut self) -> Pin<&mut Sleep> {
        self.sleep.as_mut().expect("a lent timer is given back only when dropped").as_mut()
    }

    /// Ends this timeout at `deadline`; the timer is set again only for an earlier one (a
    /// later one is only noted: see the module's docs).
    fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if deadline < self.sleep().deadline() {
            self.sleep().reset(deadline);
        }
    }
}

impl Future for Lent {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            std::task::ready!(self.sleep().poll(cx));
            // The timer went off at a deadline before ours: set it for ours.
            let deadline = self.deadline;
            if self.sleep().deadline() >= deadline {
                return Poll::Ready(());
            }
            self.sleep().reset(deadline);
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(sleep) = self.sleep.take() {
            let mut idle = self.home.lock();
            if idle.is_none() {
                *idle = Some(sleep);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // Real time (the crate's tokio has no test-util), short durations.

    /// Polls once, as a task would (tokio registers a timer when it is first polled).
    fn poll_once(lent: &mut Lent) -> Poll<()> {
        Pin::new(lent).poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test]
    async fn a_lent_timer_ends_at_its_deadline_and_is_lent_again() {
        let timer = ConnTimer::default();
        let start = Instant::now();
        timer.sleep_until(start + Duration::from_millis(50)).await;
        assert!(start.elapsed() >= Duration::from_millis(50), "{:?}", start.elapsed());
        assert!(timer.idle.lock().is_some(), "given back when dropped");
        // The same timer again, with a later deadline.
        let again = Instant::now();
        timer.sleep_until(again + Duration::from_millis(50)).await;
        assert!(again.elapsed() >= Duration::from_millis(50), "{:?}", again.elapsed());
    }

    /// A timer given back before its deadline and lent again with a later one ends at the
    /// later one, not at the first (which tokio still has in its wheel).
    #[tokio::test]
    async fn a_deadline_moved_later_holds() {
        let timer = ConnTimer::default();
        let start = Instant::now();
        let mut first = timer.sleep_until(start + Duration::from_millis(30));
        // Polled once, so tokio has it in its wheel; then given back.
        assert!(poll_once(&mut first).is_pending());
        drop(first);
        timer.sleep_until(start + Duration::from_millis(150)).await;
        assert!(start.elapsed() >= Duration::from_millis(150), "{:?}", start.elapsed());
    }

    /// An earlier deadline than the one in the wheel is kept as well.
    #[tokio::test]
    async fn a_deadline_moved_earlier_holds() {
        let timer = ConnTimer::default();
        let start = Instant::now();
        let mut first = timer.sleep_until(start + Duration::from_secs(30));
        assert!(poll_once(&mut first).is_pending());
        drop(first);
        timer.sleep_until(start + Duration::from_millis(50)).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(50) && took < Duration::from_secs(30), "{took:?}");
    }

    /// Two timeouts at once (nothing relies on there being one) each get a timer of their own.
    #[tokio::test]
    async fn two_at_once_do_not_share() {
        let timer = ConnTimer::default();
        let start = Instant::now();
        let long = timer.sleep_until(start + Duration::from_secs(30));
        timer.sleep_until(start + Duration::from_millis(50)).await;
        assert!(start.elapsed() < Duration::from_secs(30));
        let mut long = long;
        assert!(poll_once(&mut long).is_pending(), "the first keeps its own deadline");
    }
}
