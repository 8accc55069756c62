//! The back channel: a background task that long-polls (`sync` with `wait` and `ack`) on a
//! connection of its own and feeds the session's [`Incoming`](super::Incoming) stream.
//!
//! Every sync acknowledges the last packet handed to the stream, so a lost response is
//! simply asked for again: the server re-serves what came after, nothing is lost or repeated.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pipeline::{is_invalid_state, Call, Caller, CLOSE_COMMAND};
use super::{wait_closed, CloseReason, Error, Packet, Shared};

/// An empty answer sooner than this after a long-poll started did not wait: the connector
/// may be unknown to the server (which answers `[]` at once then), so the poller asks.
const EARLY: Duration = Duration::from_millis(500);

/// What to do after one poll.
enum Step {
    /// Poll again at once.
    Again,
    /// The connector is alive but the poll did not wait (it was superseded, or the server
    /// capped the wait): poll again after `retry_timeout`, so as not to spin.
    Idle,
    /// The poll failed: count it, wait `retry_timeout`, poll again.
    Failed(Error),
    /// The session closed.
    Stop,
}

pub(crate) async fn run(shared: Arc<Shared>, mut caller: Caller) {
    let mut closed = shared.closed.subscribe();
    let mut failures = 0;
    let wait = caller.config.poll_wait;
    loop {
        let step = tokio::select! {
            biased;
            _ = wait_closed(&mut closed) => Step::Stop,
            step = poll_once(&shared, &mut caller, wait) => step,
        };
        match step {
            Step::Again => failures = 0,
            Step::Idle => {
                failures = 0;
                pause(&mut closed, caller.config.retry_timeout).await;
            }
            Step::Stop => break,
            Step::Failed(error) => {
                failures += 1;
                if failures > caller.config.max_retries {
                    let error = Error::RetriesExhausted(Box::new(error));
                    shared.close(CloseReason::Failed(Box::new(error)));
                    break;
                }
                tracing::debug!(retry = failures, error = %error, "sync failed, retrying");
                pause(&mut closed, caller.config.retry_timeout).await;
            }
        }
    }
    // The stream ends once what it holds is read.
    shared.poll.lock().await.deliver = None;
}

/// Sleeps, or returns early when the session closes.
async fn pause(closed: &mut tokio::sync::watch::Receiver<Option<CloseReason>>, duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = wait_closed(closed) => {}
    }
}

/// One long-poll under the poll lock. The pipeline takes the lock to re-open the connector
/// (or close it); it cancels the poll through the token stored in `poll_control`, and
/// `pausing` keeps the poller from starting a new one until the pipeline is done.
async fn poll_once(shared: &Shared, caller: &mut Caller, wait: Duration) -> Step {
    let mut poll = shared.poll.lock().await;
    let cancel = {
        let mut control = shared.poll_control.lock();
        if control.pausing {
            None
        } else {
            control.cancel = CancellationToken::new();
            Some(control.cancel.clone())
        }
    };
    let Some(cancel) = cancel else {
        // The pipeline is about to take the lock: let it.
        drop(poll);
        tokio::time::sleep(Duration::from_millis(10)).await;
        return Step::Again;
    };
    let started = Instant::now();
    let form = format!("action=sync&wait={}&ack={}", wait.as_millis(), poll.acked);
    let limit = wait + caller.config.timeout;
    let attempt = tokio::select! {
        attempt = tokio::time::timeout(limit, caller.transport.post_form(form)) => attempt,
        _ = cancel.cancelled() => {
            caller.transport.reset();
            return Step::Again;
        }
    };
    let reply = match attempt {
        Err(_) => {
            caller.transport.reset();
            return Step::Failed(Error::Timeout);
        }
        Ok(Err(e)) => return Step::Failed(e),
        Ok(Ok(reply)) => reply,
    };
    if reply.status >= 500 || reply.status == 408 {
        return Step::Failed(Error::Status { status: reply.status, body: reply.text() });
    }
    if reply.status != 200 {
        // An `ack` above the server's last sequence number: the connector's queue is not the
        // one we acknowledged (it was replaced). Anything else is as unexpected.
        let error = if reply.status == 400 && reply.body.starts_with(b"Invalid 'ack'") {
            Error::UnknownConnector
        } else {
            Error::Status { status: reply.status, body: reply.text() }
        };
        shared.close(CloseReason::Failed(Box::new(error)));
        return Step::Stop;
    }
    let Some(seq) = reply.seq else {
        return Step::Failed(Error::Protocol("a sync without X-Pollgate-Seq".into()));
    };
    let packets: Vec<String> = match serde_json::from_slice(&reply.body) {
        Ok(packets) => packets,
        Err(e) => return Step::Failed(Error::Protocol(format!("a sync body that is not a list of strings: {e}"))),
    };
    if packets.is_empty() {
        if started.elapsed() >= EARLY.min(wait / 2) {
            return Step::Again;
        }
        // Still under the lock: the pipeline cannot be re-opening the connector meanwhile,
        // which would make a live session look unknown.
        let deadline = Instant::now() + caller.config.timeout;
        let active = Call::Form("action=active".into());
        let probe = tokio::select! {
            probe = caller.call(&active, deadline) => probe,
            _ = cancel.cancelled() => {
                caller.transport.reset();
                return Step::Again;
            }
        };
        return match probe {
            Ok(answer) if is_invalid_state(&answer.reply) => {
                shared.close(CloseReason::Failed(Box::new(Error::UnknownConnector)));
                Step::Stop
            }
            Ok(answer) if (200..300).contains(&answer.reply.status) => Step::Idle,
            Ok(answer) => Step::Failed(Error::Status { status: answer.reply.status, body: answer.reply.text() }),
            Err(e) => Step::Failed(e),
        };
    }
    let first = seq + 1 - packets.len() as u64;
    for (i, text) in packets.into_iter().enumerate() {
        let seq = first + i as u64;
        if text == CLOSE_COMMAND {
            poll.acked = seq;
            shared.close(CloseReason::Server(reply.close_reason.clone()));
            return Step::Stop;
        }
        if let Some(tx) = &poll.deliver {
            // Waits while the stream's buffer is full (back-pressure: the server keeps the
            // rest queued). A pipeline that wants the lock meanwhile gets it: the packets
            // not yet handed over are not acknowledged and come again.
            tokio::select! {
                sent = tx.send(Packet { seq, text }) => {
                    if sent.is_err() {
                        // The stream was dropped: nobody wants the packets any more.
                        poll.deliver = None;
                    }
                }
                _ = cancel.cancelled() => return Step::Again,
            }
        }
        poll.acked = seq;
    }
    Step::Again
}
