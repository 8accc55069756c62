//! Panic isolation: [`guard`] runs a request (or a reaper pass) so that a panic in it ends
//! that request only, and [`install_hook`] makes the process log each panic once, at error,
//! with its location and without its message.
//!
//! # What a caught panic leaves behind
//!
//! The panicking future is dropped where it stood; every other request, held poll and
//! background task goes on. What it had done stays done, as after a store failure half-way:
//!
//! - Locks: the memory store's `parking_lot` mutexes do not poison and are never held across
//!   an `.await`, and no plugin code runs while one is held, so a panic in a plugin or in the
//!   engine's own code cannot leave a map half-updated. A panic inside a store method (a bug
//!   there, not a client's doing) could; it is not repaired.
//! - Packets the request queued before it panicked stay queued (as with a store failure).
//! - An idempotent send's claim (`seq`) is given back by a drop guard in
//!   [`crate::engine::Engine::send`], so its retry runs again instead of answering 409
//!   forever. On Redis what it queued carries `once` keys, so the retry doubles nothing; the
//!   memory store keeps no `once` keys, so there a retry re-queues what the send had queued
//!   before it panicked (a panicking plugin is a bug to fix; a duplicate is the lesser harm
//!   than a send that can never run).
//! - A held poll's gauge is decremented by its own drop guard.
//! - A panic in a plugin's `connector_started` leaves the connector open (the client got a
//!   500 for its `open`); it is closed like any other, by `close` or by the reaper.
//! - A panic in `connector_stopped` during a reaper pass ends that pass; the connector was
//!   already closed in the store, and the next pass goes on with the rest.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::Poll;

thread_local! {
    /// True while a [`guard`]ed future is polled on this thread: its panic will be caught,
    /// and the guard logs it, so the hook only records where it happened.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// Where the last guarded panic on this thread happened (set by the hook, taken by the
    /// guard right after, on the same thread: an unwind does not cross threads).
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic caught by [`guard`].
#[derive(Debug)]
pub struct Panicked {
    /// `file:line:column`, when [`install_hook`] ran (the message is never kept: a plugin's
    /// panic message may quote the token it was handling, a password included).
    pub location: Option<String>,
}

/// Polls the future `make` makes to its end; a panic in any of its polls becomes `Err`, and
/// the future is dropped (its drop guards run) as it stood. The future is boxed, and freed as
/// soon as it ends: an `async fn` would hold it twice (its argument and the pinned copy), and
/// the caller's future would be sized for it even after it ended. It is made once the box is
/// there, so the compiler writes it in place: a future made first and then boxed was copied
/// whole (a request's routing future is over a kilobyte).
pub fn guard<F: Future>(make: impl FnOnce() -> F) -> impl Future<Output = Result<F::Output, Panicked>> {
    let mut future = Some(Box::into_pin(Box::write(Box::new_uninit(), make())));
    std::future::poll_fn(move |cx| {
        let Some(running) = future.as_mut() else { panic!("a guarded future polled after it ended") };
        let outer = GUARDED.replace(true);
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| running.as_mut().poll(cx)));
        GUARDED.set(outer);
        let result = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => Ok(output),
            Err(_payload) => Err(Panicked { location: LOCATION.take() }),
        };
        future = None;
        Poll::Ready(result)
    })
}

/// Replaces the default panic hook (which prints the message to stderr): a panic inside a
/// `guard` is logged by whoever caught it, any other (a spawned task, the runtime) is
/// logged here, once, at error, with the thread and location but not the message.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        if GUARDED.get() {
            LOCATION.set(location);
            return;
        }
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location = location.as_deref().unwrap_or("unknown"),
            "panic outside a request (its message is not logged)"
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_a_guarded_future_is_an_error_and_the_next_one_runs() {
        let caught = guard(|| async {
            tokio::task::yield_now().await;
            panic!("boom");
        })
        .await;
        assert!(caught.is_err());
        assert_eq!(guard(|| async { 7 }).await.unwrap(), 7);
        assert!(!GUARDED.get(), "the flag is reset after a panic");
    }
}
