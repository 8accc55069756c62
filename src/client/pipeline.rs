//! The request pipeline: one background task that takes requests from the session's bounded
//! queue and runs them one at a time, in order, each with its retries and its deadline. It
//! also runs the session's handshakes (open, close, re-open in another session).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::transport::{form_value, Reply, Transport};
use super::{wait_closed, CloseReason, Config, Error, Packet, Shared};

/// The body of a sync or action that delivers the server's close.
pub(crate) const CLOSE_COMMAND: &str = "http.command.close";
/// The plain-text body of 400/411 for a connector the server does not know.
const INVALID_STATE: &str = "Invalid connection state!";
/// The plain-text body of 503 when `open` meets `maxconnections` (`onmaxconnections = reject`).
const TOO_MANY_CONNECTIONS: &str = "Too many connections!";

/// The longest a best-effort close (after a failed handshake, or when every handle is
/// dropped) may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// One queued request and where its result goes.
pub(crate) struct Job {
    pub op: Op,
    /// Answered once by the pipeline; a dropped sender tells the caller the session closed.
    pub reply: oneshot::Sender<Result<Outcome, Error>>,
}

/// What a request does.
pub(crate) enum Op {
    /// An idempotent send (`seq`) of a token.
    Send(Bytes),
    /// `action=whoami`.
    Whoami,
    /// Close the connector and open it again in another (shared) session.
    ChangeSession(Option<String>),
    /// `action=close`, then the session closes.
    Close,
}

/// What a request gives back.
pub(crate) enum Outcome {
    /// A response body.
    Body(String),
    /// The session id before `ChangeSession`.
    Previous(Option<String>),
    Done,
}

/// How one request to the endpoint is made.
pub(crate) enum Call {
    /// A form body (`action=...`).
    Form(String),
    /// A token as the raw body, the (non-secret) parameters in the query string.
    Token { query: String, token: Bytes },
}

/// An answer, and whether it came after a retry (then a refusal may only mean that an
/// earlier attempt, whose response was lost, went through).
pub(crate) struct Answer {
    pub reply: Reply,
    /// Whether an earlier attempt failed (its request may have reached the server).
    pub retried: bool,
}

/// A connection plus the retry policy; the pipeline's and the poller's requests go through one each.
pub(crate) struct Caller {
    /// The owner's own connection.
    pub transport: Transport,
    /// Retries, pauses and deadlines.
    pub config: Arc<Config>,
}

/// A status worth retrying: the server or something in between failed, or a send with the
/// same `seq` is still running. A full server (`Too many connections!`) is an answer, not a
/// failure.
fn retriable(reply: &Reply) -> bool {
    (reply.status >= 500 && reply.body.as_ref() != TOO_MANY_CONNECTIONS.as_bytes())
        || reply.status == 408
        || (reply.status == 409 && reply.body.starts_with(b"A send with this 'seq' is in progress"))
}

pub(crate) fn is_invalid_state(reply: &Reply) -> bool {
    matches!(reply.status, 400 | 411) && reply.body.as_ref() == INVALID_STATE.as_bytes()
}

/// A 2xx answer, or the error it stands for.
pub(crate) fn expect_success(reply: Reply) -> Result<Reply, Error> {
    if (200..300).contains(&reply.status) {
        Ok(reply)
    } else if is_invalid_state(&reply) {
        Err(Error::UnknownConnector)
    } else {
        Err(Error::Status { status: reply.status, body: reply.text() })
    }
}

impl Caller {
    /// Makes `call`, retrying network failures and retriable statuses `max_retries` times,
    /// `retry_timeout` apart, until `deadline` (then [`Error::Timeout`]). Other statuses are
    /// returned for the caller to judge.
    pub(crate) async fn call(&mut self, call: &Call, deadline: Instant) -> Result<Answer, Error> {
        let mut retries = 0;
        loop {
            let attempt = match call {
                Call::Form(form) => tokio::time::timeout_at(deadline, self.transport.post_form(form.clone())).await,
                Call::Token { query, token } => {
                    tokio::time::timeout_at(deadline, self.transport.post_token(query, token.clone())).await
                }
            };
            let failure = match attempt {
                Err(_) => {
                    // Cut short mid-request: the connection is in an unknown state.
                    self.transport.reset();
                    return Err(Error::Timeout);
                }
                Ok(Ok(reply)) if !retriable(&reply) => return Ok(Answer { reply, retried: retries > 0 }),
                Ok(Ok(reply)) => Error::Status { status: reply.status, body: reply.text() },
                Ok(Err(e)) => e,
            };
            retries += 1;
            if retries > self.config.max_retries {
                return Err(Error::RetriesExhausted(Box::new(failure)));
            }
            tracing::debug!(retry = retries, error = %failure, "request failed, retrying");
            if Instant::now() + self.config.retry_timeout >= deadline {
                tokio::time::sleep_until(deadline).await;
                return Err(Error::Timeout);
            }
            tokio::time::sleep(self.config.retry_timeout).await;
        }
    }

    /// `action=open` (in the shared session `session_id` if given), then the first sync,
    /// which brings the welcome. Returns the welcome and the sequence number to acknowledge:
    /// the welcome's own, so that whatever was queued after it stays for the poller.
    pub(crate) async fn open(&mut self, session_id: Option<&str>) -> Result<(serde_json::Value, u64), Error> {
        let deadline = Instant::now() + self.config.timeout;
        let mut form = String::from("action=open");
        if let Some(s) = session_id {
            form.push_str("&sessionId=");
            form.push_str(&form_value(s));
        }
        let answer = self.call(&Call::Form(form), deadline).await?;
        // After a lost response, the retry finds the connector our first attempt opened.
        if !(answer.retried && is_invalid_state(&answer.reply)) {
            expect_success(answer.reply).map_err(|e| match e {
                Error::UnknownConnector => {
                    Error::Status { status: 400, body: format!("{INVALID_STATE} (the connection id is in use)") }
                }
                e => e,
            })?;
        }
        let welcome = self.welcome(deadline).await;
        if welcome.is_err() {
            // Opened but unusable: do not leave the connector to the server's reaper.
            let _ = self.close(Instant::now() + CLEANUP_TIMEOUT.min(self.config.timeout)).await;
        }
        welcome
    }

    /// The first sync after open: finds the welcome.
    async fn welcome(&mut self, deadline: Instant) -> Result<(serde_json::Value, u64), Error> {
        let answer = self.call(&Call::Form("action=sync&ack=0".into()), deadline).await?;
        let reply = expect_success(answer.reply)?;
        let seq = reply.seq.ok_or_else(|| Error::Protocol("a sync without X-Pollgate-Seq".into()))?;
        let packets: Vec<String> = serde_json::from_slice(&reply.body)
            .map_err(|e| Error::Protocol(format!("a sync body that is not a list of strings: {e}")))?;
        let first = seq + 1 - packets.len() as u64;
        for (i, text) in packets.iter().enumerate() {
            if let Ok(token) = serde_json::from_str::<serde_json::Value>(text) {
                if token["type"] == "welcome" && token["sourceId"].is_string() {
                    return Ok((token, first + i as u64));
                }
            }
        }
        Err(Error::Protocol("the first sync brought no welcome".into()))
    }

    /// `action=close`. A retry that finds no connector means the first attempt closed it.
    pub(crate) async fn close(&mut self, deadline: Instant) -> Result<(), Error> {
        let answer = self.call(&Call::Form("action=close".into()), deadline).await?;
        if answer.retried && is_invalid_state(&answer.reply) {
            return Ok(());
        }
        expect_success(answer.reply).map(|_| ())
    }
}

/// The pipeline's own state: its connection and the idempotent-send counter.
pub(crate) struct Pipeline {
    /// Closes the session, pauses the poller, records the new welcome.
    pub shared: Arc<Shared>,
    /// The pipeline's connection (the one the handshake used).
    pub caller: Caller,
    /// The `seq` of the last send: every send gets the next one, its retries the same one,
    /// so the server runs it at most once. Only this task touches it.
    pub sent: u64,
}

impl Pipeline {
    /// Runs queued requests until the session closes or every handle is dropped; then fails
    /// what is still queued with the close reason.
    pub(crate) async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut closed = self.shared.closed.subscribe();
        loop {
            // Biased: once closed, nothing queued may start, even if a job is ready too.
            let job = tokio::select! {
                biased;
                _ = wait_closed(&mut closed) => break,
                job = jobs.recv() => job,
            };
            let Some(job) = job else {
                // Every handle is gone: close the connector on the server, best effort.
                let _guard = self.shared.pause_poller().await;
                let deadline = Instant::now() + self.caller.config.timeout.min(CLEANUP_TIMEOUT);
                let _ = self.caller.close(deadline).await;
                self.shared.close(CloseReason::Dropped);
                return;
            };
            // A close from elsewhere (the poller saw the server's close) cuts the request short.
            let result = tokio::select! {
                result = self.execute(job.op) => result,
                _ = wait_closed(&mut closed) => Err(Error::Closed(self.shared.close_reason().unwrap_or(CloseReason::Client))),
            };
            if let Err(e) = &result {
                if e.is_fatal() {
                    self.shared.close(CloseReason::Failed(Box::new(e.clone())));
                }
            }
            let _ = job.reply.send(result);
        }
        jobs.close();
        let reason = self.shared.close_reason().unwrap_or(CloseReason::Client);
        while let Ok(job) = jobs.try_recv() {
            let _ = job.reply.send(Err(Error::Closed(reason.clone())));
        }
        // Given up on (a request or the poller timed out or ran out of retries): the
        // connector may still be alive on the server; do not leave it to the reaper.
        if let CloseReason::Failed(e) = &reason {
            if matches!(**e, Error::Timeout | Error::RetriesExhausted(_)) {
                let _guard = self.shared.pause_poller().await;
                let deadline = Instant::now() + self.caller.config.timeout.min(CLEANUP_TIMEOUT);
                let _ = self.caller.close(deadline).await;
            }
        }
    }

    async fn execute(&mut self, op: Op) -> Result<Outcome, Error> {
        let deadline = Instant::now() + self.caller.config.timeout;
        match op {
            Op::Send(token) => {
                self.sent += 1;
                let call = Call::Token { query: format!("action=send&seq={}", self.sent), token };
                let answer = self.caller.call(&call, deadline).await?;
                Ok(Outcome::Body(expect_success(answer.reply)?.text()))
            }
            Op::Whoami => {
                let answer = self.caller.call(&Call::Form("action=whoami".into()), deadline).await?;
                Ok(Outcome::Body(expect_success(answer.reply)?.text()))
            }
            Op::Close => {
                // The poller is stopped first, so it does not report the server's close
                // command as a close by the server.
                let _guard = self.shared.pause_poller().await;
                let result = self.caller.close(deadline).await;
                self.shared.close(CloseReason::Client);
                result.map(|()| Outcome::Done)
            }
            Op::ChangeSession(session_id) => self.change_session(session_id, deadline).await,
        }
    }

    /// Re-opens the connector (same connection id, so the same `sourceId`) in the session
    /// `session_id`: the poller is stopped, what is queued is drained and delivered, the
    /// connector is closed and opened again, and the poller resumes on the new queue.
    async fn change_session(&mut self, session_id: Option<String>, deadline: Instant) -> Result<Outcome, Error> {
        let shared = self.shared.clone();
        let caller = &mut self.caller;
        let mut poll = shared.pause_poller().await;
        let result = async {
            // Drain: deliver everything queued so far, as the poller would have.
            let answer = caller.call(&Call::Form(format!("action=sync&ack={}", poll.acked)), deadline).await?;
            let reply = expect_success(answer.reply)?;
            let seq = reply.seq.ok_or_else(|| Error::Protocol("a sync without X-Pollgate-Seq".into()))?;
            let packets: Vec<String> = serde_json::from_slice(&reply.body)
                .map_err(|e| Error::Protocol(format!("a sync body that is not a list of strings: {e}")))?;
            let first = seq + 1 - packets.len() as u64;
            for (i, text) in packets.into_iter().enumerate() {
                if text == CLOSE_COMMAND {
                    let reason = CloseReason::Server(reply.close_reason.clone());
                    shared.close(reason.clone());
                    return Err(Error::Closed(reason));
                }
                if let Some(tx) = &poll.deliver {
                    // A stream nobody reads cannot hold the session up past the deadline.
                    match tokio::time::timeout_at(deadline, tx.send(Packet { seq: first + i as u64, text })).await {
                        Err(_) => return Err(Error::Timeout),
                        Ok(Err(_)) => poll.deliver = None,
                        Ok(Ok(())) => {}
                    }
                }
                poll.acked = first + i as u64;
            }
            poll.acked = seq;
            caller.close(deadline).await?;
            // The connector is gone: from here on, a failure leaves nothing to go on with.
            let (welcome, acked) = match caller.open(session_id.as_deref()).await {
                Ok(opened) => opened,
                Err(e) => {
                    shared.close(CloseReason::Failed(Box::new(e.clone())));
                    return Err(e);
                }
            };
            poll.acked = acked;
            if let Some(id) = welcome["sourceId"].as_str() {
                *shared.source_id.lock() = id.to_owned();
            }
            *shared.welcome.lock() = welcome;
            let previous = std::mem::replace(&mut *shared.session_id.lock(), session_id);
            Ok(Outcome::Previous(previous))
        }
        .await;
        shared.resume_poller();
        drop(poll);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &'static str) -> Reply {
        Reply { status, seq: None, close_reason: None, body: Bytes::from_static(body.as_bytes()) }
    }

    #[test]
    fn retries_failures_not_answers() {
        assert!(retriable(&reply(503, "Service unavailable: the store cannot be reached!")));
        assert!(retriable(&reply(500, "Internal server error!")));
        assert!(retriable(&reply(409, "A send with this 'seq' is in progress!")));
        assert!(!retriable(&reply(503, "Too many connections!")));
        assert!(!retriable(&reply(409, "A send with this 'seq' was processed; its response is no longer kept!")));
        assert!(!retriable(&reply(411, "Invalid connection state!")));
        assert!(!retriable(&reply(413, "Request too large: the limit is 10 bytes!")));
    }

    #[test]
    fn maps_refusals() {
        assert_eq!(expect_success(reply(411, "Invalid connection state!")).unwrap_err(), Error::UnknownConnector);
        assert_eq!(expect_success(reply(400, "Invalid connection state!")).unwrap_err(), Error::UnknownConnector);
        assert_eq!(
            expect_success(reply(400, "Invalid request parameters!")).unwrap_err(),
            Error::Status { status: 400, body: "Invalid request parameters!".into() }
        );
        assert_eq!(expect_success(reply(204, "")).unwrap().status, 204);
    }
}
