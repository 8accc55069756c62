//! Fault injection between the Rust client and one server: through a proxy that drops,
//! delays, duplicates and truncates responses, two clients exchange 10,000 numbered messages
//! in each direction at once, and each side receives the other's exactly once, in order.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pollgate::client::Session;
use support::faults::{FaultProxy, Mix};
use support::two_way::TwoWay;
use support::{Server, NO_EVENTS};

/// Through drops, delays, duplicated requests and truncated responses (each about 1 % of
/// requests, sends and polls alike), 10,000 messages each way arrive complete, in order and
/// once, every send gets the response of its own request, and no session closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_each_way_survive_every_fault() {
    let started = Instant::now();
    let mut env = NO_EVENTS.to_vec();
    // Room for a whole direction in one queue, should a receiver fall behind on a loaded
    // machine (queue limits are not under test here), and no access log of 40,000 lines.
    env.extend([("MAX_QUEUE_PACKETS", "20000"), ("ACCESS_LOG", "false")]);
    let server = Server::start(&env);
    let mix = Mix { seed: 7, drop: 10, delay: 10, duplicate: 10, truncate: 10, max_delay: Duration::from_millis(100) };
    let proxy = FaultProxy::start(server.addr, mix.plan()).await;
    let url = format!("http://{}/jWebSocket/http", proxy.addr);
    let builder = || {
        Session::builder(&url)
            // Faults hit about 4 % of requests: ten failures in a row would be one in 10^14.
            .max_retries(10)
            .retry_timeout(Duration::from_millis(10))
            .timeout(Duration::from_secs(30))
            .poll_wait(Duration::from_secs(1))
    };
    TwoWay::start(builder, 10_000).await.finish().await;

    let c = &proxy.counters;
    eprintln!("{} in {:.1?}", c.summary(), started.elapsed());
    for (kind, n) in
        [("dropped", &c.dropped), ("delayed", &c.delayed), ("duplicated", &c.duplicated), ("truncated", &c.truncated)]
    {
        // About 300 of each are due; far fewer would mean the plan was not applied.
        let n = n.load(Ordering::SeqCst);
        assert!(n >= 50, "only {n} {kind}: {}", c.summary());
    }
}
