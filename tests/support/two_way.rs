//! A stream of numbered messages in both directions at once between two Rust client
//! sessions, checked at the end: each side received the other's messages exactly once, in
//! order, every send got the response of its own request, and no session closed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pollgate::client::{Builder, CloseReason, Incoming, Session};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

const SYSTEM: &str = "org.jwebsocket.plugins.system";

/// Sessions through the balancer at `addr` with retries that outlast a cluster's faults: a
/// send cut on a dying node holds its claim for the 10 s lease (409 "in progress" until
/// then), and a Redis down, out of reach, failing over or moving a slot means 503 for a few
/// seconds.
pub fn through(addr: std::net::SocketAddr) -> impl Fn() -> Builder {
    move || {
        Session::builder(format!("http://{addr}/jWebSocket/http"))
            .max_retries(400)
            .retry_timeout(Duration::from_millis(100))
            .timeout(Duration::from_secs(90))
            .poll_wait(Duration::from_secs(2))
    }
}

/// Two sessions exchanging `messages` numbered messages each way; see [`TwoWay::finish`].
pub struct TwoWay {
    sessions: [Session; 2],
    /// Messages each session has received so far (read by [`TwoWay::until_received`]).
    received: [Arc<AtomicUsize>; 2],
    senders: Vec<JoinHandle<()>>,
    /// Each returns the numbers received, and the stream to check that nothing follows.
    receivers: Vec<JoinHandle<(Vec<u64>, Incoming)>>,
    closes: tokio::sync::mpsc::UnboundedReceiver<CloseReason>,
    messages: usize,
}

impl TwoWay {
    /// Connects two sessions from `builder` (which gets a queue for every message and an
    /// `on_close` hook here), logs both in, and starts the stream: every send is queued at
    /// once (the client runs them one at a time, in order) while each side reads.
    pub async fn start(builder: impl Fn() -> Builder, messages: usize) -> TwoWay {
        let (closes_tx, closes) = tokio::sync::mpsc::unbounded_channel();
        let mut sessions = Vec::new();
        for _ in 0..2 {
            let closes_tx = closes_tx.clone();
            let session = builder()
                .max_queue_length(messages)
                .on_close(move |reason| {
                    let _ = closes_tx.send(reason.clone());
                })
                .connect()
                .await
                .expect("connect");
            session.login("guest", "guest").await.expect("login");
            sessions.push(session);
        }
        let sessions: [Session; 2] = sessions.try_into().unwrap();
        let received = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for (me, other) in [(0, 1), (1, 0)] {
            let target = sessions[other].source_id();
            senders.push(tokio::spawn(send_all(sessions[me].clone(), target, messages)));
            let incoming = sessions[me].incoming().expect("the stream");
            let source = sessions[other].source_id();
            receivers.push(tokio::spawn(receive_all(incoming, source, messages, received[me].clone())));
        }
        TwoWay { sessions, received, senders, receivers, closes, messages }
    }

    /// The connector ids (`sourceId`) of the two sessions.
    pub fn source_ids(&self) -> [String; 2] {
        [self.sessions[0].source_id(), self.sessions[1].source_id()]
    }

    /// The fewer of the two sides' received counts.
    pub fn received(&self) -> usize {
        self.received.iter().map(|r| r.load(Ordering::SeqCst)).min().unwrap()
    }

    /// Waits until each side has received at least `n` messages (fails after `limit`).
    pub async fn until_received(&self, n: usize, limit: Duration) {
        let start = Instant::now();
        while self.received() < n {
            let counts: Vec<usize> = self.received.iter().map(|r| r.load(Ordering::SeqCst)).collect();
            assert!(start.elapsed() < limit, "received {counts:?} of {n} messages each way after {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the end of the stream and checks it: every send answered by its own
    /// response, each side got `0..messages` in order and nothing after, no session closed.
    /// Then closes both sessions.
    pub async fn finish(mut self) {
        for sender in self.senders.drain(..) {
            sender.await.expect("a sender failed");
        }
        let expected: Vec<u64> = (0..self.messages as u64).collect();
        let mut rests = Vec::new();
        for (name, receiver) in ["a from b", "b from a"].into_iter().zip(self.receivers.drain(..)) {
            let (got, rest) = receiver.await.expect("a receiver failed");
            let first_difference = got.iter().zip(&expected).position(|(g, e)| g != e);
            assert!(first_difference.is_none(), "{name}: out of order or repeated from index {first_difference:?}");
            rests.push(rest);
        }
        // A repeat would come within a poll or two.
        for mut rest in rests {
            let extra = tokio::time::timeout(Duration::from_secs(2), rest.next()).await;
            assert!(extra.is_err(), "a message came twice: {extra:?}");
        }
        assert!(self.closes.try_recv().is_err(), "a session closed");
        for session in &self.sessions {
            session.close().await.expect("close");
        }
    }
}

/// Sends `messages` numbered messages from `from` to `to` and checks that each send got the
/// response of its own request (a retried or duplicated send answers for its own `seq`).
async fn send_all(from: Session, to: String, messages: usize) {
    let pending: Vec<_> = (0..messages)
        .map(|i| from.send_token(&json!({"ns": SYSTEM, "type": "send", "targetId": to, "data": i, "utid": i})))
        .collect();
    for (i, reply) in futures_util::future::join_all(pending).await.into_iter().enumerate() {
        let reply = reply.unwrap_or_else(|e| panic!("send {i} failed: {e}"));
        let reply: Value = serde_json::from_str(&reply).unwrap_or_else(|e| panic!("send {i}: {e}: {reply}"));
        assert_eq!((reply["code"].as_i64(), reply["utid"].as_u64()), (Some(0), Some(i as u64)), "{reply}");
    }
}

/// Reads `messages` packets, each a `send` from `source`; returns their numbers.
async fn receive_all(
    mut incoming: Incoming,
    source: String,
    messages: usize,
    received: Arc<AtomicUsize>,
) -> (Vec<u64>, Incoming) {
    let mut got = Vec::with_capacity(messages);
    while got.len() < messages {
        let packet = tokio::time::timeout(Duration::from_secs(90), incoming.next())
            .await
            .unwrap_or_else(|_| panic!("no packet for 90 s after {} of {messages}", got.len()))
            .unwrap_or_else(|| panic!("the stream ended after {} of {messages}", got.len()));
        let token = packet.json().expect("a JSON packet");
        assert_eq!((token["type"].as_str(), token["sourceId"].as_str()), (Some("send"), Some(source.as_str())));
        got.push(token["data"].as_u64().expect("a numbered message"));
        received.fetch_add(1, Ordering::SeqCst);
    }
    (got, incoming)
}
