//! Faults in a cluster (three nodes, a real `redis-server`, a real round-robin `nginx`): a
//! node killed, Redis restarted, one node cut off from Redis. Through each, two Rust clients
//! talking through the balancer exchange numbered messages in both directions at once, and
//! each side receives the other's exactly once, in order (see `support::two_way`).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::cluster::Cluster;
use support::faults::Link;
use support::two_way::{through, TwoWay};
use support::Client;

/// Messages in each direction: 1,000 unless `TEST_STREAM_MESSAGES` says otherwise
/// (10,000 for the single-server test's count; that takes several minutes per test). Fewer
/// than the single-server test's 10,000 by default: through the balancer a send costs
/// several Redis round trips (about 10 ms in a debug build on a loaded machine, against 2 ms
/// on one in-memory node), and three clusters must fit the CI budget.
fn messages() -> usize {
    std::env::var("TEST_STREAM_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
}

/// How long any wait for a third of the stream may take on a loaded machine: 120 s per
/// 1,000 messages.
fn limit() -> Duration {
    Duration::from_secs(120 * (messages() as u64).div_ceil(1_000))
}

/// Every node: no access log of thousands of lines.
const QUIET: &[(&str, &str)] = &[("ACCESS_LOG", "false")];

/// The same connection id, speaking to another address.
fn via(client: &Client, addr: SocketAddr) -> Client {
    Client { addr, connection_id: client.connection_id.clone() }
}

/// A blocking call (process start and stop, raw HTTP) off the runtime's worker.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// kill -9 of a node a third of the way through, and its restart at two thirds: the
/// balancer moves on to the live nodes (a send cut on the dead one is re-run after its
/// lease), and the stream completes exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream() {
    let started = Instant::now();
    let mut c = tokio::task::block_in_place(|| Cluster::start(QUIET));
    let stream = TwoWay::start(through(c.nginx.addr), messages()).await;
    stream.until_received(messages() / 3, limit()).await;
    tokio::task::block_in_place(|| c.nodes[1].kill());
    stream.until_received(messages() * 2 / 3, limit()).await;
    tokio::task::block_in_place(|| c.restart(1));
    assert!(stream.received() < messages(), "the stream ended before the node came back");
    stream.finish().await;
    // The node that came back serves the connectors it never saw.
    let probe = c.client();
    let node = c.nodes[1].addr;
    let status = blocking(move || {
        probe.open();
        via(&probe, node).get("action=whoami").status
    })
    .await;
    assert_eq!(status, 200);
    eprintln!("{} each way, a node killed, in {:.1?}", messages(), started.elapsed());
}

/// Redis stopped and started again on its port a third of the way through. The defined
/// outcome is that nothing is lost: this Redis keeps an append-only file and a clean stop
/// writes it, so the connectors, queues and idempotent-send records survive; meanwhile the
/// nodes answer 503, which the client retries. (Without persistence a restart forgets every
/// connector: the sessions would close with `UnknownConnector`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_stream() {
    let started = Instant::now();
    let mut c = tokio::task::block_in_place(|| Cluster::start(QUIET));
    let before = c.redis.run_ids();
    let stream = TwoWay::start(through(c.nginx.addr), messages()).await;
    stream.until_received(messages() / 3, limit()).await;
    tokio::task::block_in_place(|| c.redis.restart());
    assert!(stream.received() < messages(), "the stream ended before Redis was back");
    let after = c.redis.run_ids();
    assert!(after.iter().all(|id| !before.contains(id)), "Redis did not restart: {before:?}, then {after:?}");
    stream.finish().await;
    eprintln!("{} each way, Redis restarted, in {:.1?}", messages(), started.elapsed());
}

/// Node 2 reaches Redis through a link that is blackholed a third of the way through (no
/// byte passes, nothing is closed), then reset and healed: meanwhile the stream goes on
/// through the other nodes, node 2 answers 503 within its Redis timeouts rather than
/// hanging, and once healed it serves again by itself.
///
/// Only node 2's first request waits out its Redis response timeout (2 s): from then on it
/// knows Redis is out of reach and answers 503 at once, and the balancer tries the request
/// on another node (`proxy_next_upstream http_503`). So the stream goes on at nearly its
/// usual pace: another third of it passes before the partition heals. (Without the fail-fast,
/// every third request waited 2 s, about a message a second each way, and that third would
/// take over five minutes, more than `limit()` allows.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_mid_stream() {
    let started = Instant::now();
    let (c, link) = cluster_with_node_2_behind_a_link();
    let node = c.nodes[2].addr;
    let probe = c.client();
    let p = probe.clone();
    blocking(move || p.open()).await;
    let stream = TwoWay::start(through(c.nginx.addr), messages()).await;
    stream.until_received(messages() / 3, limit()).await;

    link.blackhole();
    // Held polls and requests on node 2 end with 503 within the Redis timeouts.
    for query in ["action=whoami", "action=sync&ack=1&wait=3000"] {
        let (status, _, took) = timed(via(&probe, node), query).await;
        assert_eq!(status, 503, "{query} on the partitioned node");
        assert!(took < Duration::from_secs(30), "{query} took {took:?}");
    }
    // Node 2 has seen Redis time out: it now fails fast, far below the 2 s response timeout
    // it would otherwise wait out (the fastest of three, against a hiccup of a busy machine).
    let fastest = fail_fast(&probe, node).await;
    assert!(fastest < Duration::from_secs(1), "node 2 still waits for Redis: {fastest:?}");
    // The stream goes on through the other nodes while the partition lasts.
    let during = stream.received();
    stream.until_received(during + messages() / 3, limit()).await;
    assert!(stream.received() < messages(), "the stream ended before the partition healed");
    assert!(link.discarded() > 0, "the partition cut nothing");

    link.heal();
    serves_again(&probe, node, Duration::from_secs(30)).await;
    stream.finish().await;
    eprintln!("{} each way, a node partitioned, in {:.1?}", messages(), started.elapsed());
}

/// Node 2 cut off from Redis and healed again, without a stream: it fails fast while cut
/// off, `/readyz` says so, and within a few seconds of the heal (its next heartbeat) both
/// requests and `/readyz` succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_recovers_by_itself() {
    let (c, link) = cluster_with_node_2_behind_a_link();
    let node = c.nodes[2].addr;
    let probe = c.client();
    let p = probe.clone();
    blocking(move || p.open()).await;
    assert_eq!(timed(via(&probe, node), "action=whoami").await.0, 200);

    link.blackhole();
    let (status, body, _) = timed(via(&probe, node), "action=whoami").await;
    assert_eq!((status, body.as_str()), (503, "Service unavailable: the store cannot be reached!"));
    let fastest = fail_fast(&probe, node).await;
    assert!(fastest < Duration::from_secs(1), "node 2 still waits for Redis: {fastest:?}");
    // Through the balancer, the other nodes answer (nginx retries a 503 on the next node).
    for _ in 0..6 {
        assert_eq!(timed(probe.clone(), "action=whoami").await.0, 200);
    }
    // /readyz really asks Redis: it too fails, after the timeout.
    assert_eq!(blocking(move || support::get(node, "/readyz").status).await, 503);

    link.heal();
    let healed = Instant::now();
    serves_again(&probe, node, Duration::from_secs(10)).await;
    let recovered = healed.elapsed();
    assert_eq!(blocking(move || support::get(node, "/readyz").status).await, 200);
    eprintln!("node 2 served again {recovered:.1?} after the heal");
}

/// A cluster whose node 2 reaches Redis through a [`Link`] (to cut it off with), and the link.
/// Always over one `redis-server`, even with `TEST_REDIS_CLUSTER=1`: a Redis Cluster client
/// learns every instance's address from the cluster, so no link can stand between one
/// pollgate node and the cluster alone (see [`Cluster::start_with`]).
fn cluster_with_node_2_behind_a_link() -> (Cluster, Link) {
    if support::cluster::on_redis_cluster() {
        eprintln!("TEST_REDIS_CLUSTER=1, but this test partitions a node from one redis-server");
    }
    let mut link = None;
    let c = tokio::task::block_in_place(|| {
        Cluster::start_with(QUIET, |i, redis| {
            if i != 2 {
                return redis.url();
            }
            let l = Link::start(SocketAddr::from(([127, 0, 0, 1], redis.port)));
            let url = format!("redis://{}", l.addr);
            link = Some(l);
            url
        })
    });
    (c, link.expect("node 2 was started"))
}

/// Waits, at most `within`, until `node` answers a request of `probe`'s with 200 (after a
/// partition healed).
async fn serves_again(probe: &Client, node: SocketAddr, within: Duration) {
    let start = Instant::now();
    loop {
        let (status, _, _) = timed(via(probe, node), "action=whoami").await;
        if status == 200 {
            return;
        }
        assert!(start.elapsed() < within, "node 2 still answers {status} after the heal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A request of `client`'s: its status, body and how long it took.
async fn timed(client: Client, query: &'static str) -> (u16, String, Duration) {
    blocking(move || {
        let start = Instant::now();
        let r = client.get(query);
        (r.status, r.text(), start.elapsed())
    })
    .await
}

/// The fastest of three requests to the partitioned `node`, each answered 503.
async fn fail_fast(probe: &Client, node: SocketAddr) -> Duration {
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let (status, body, took) = timed(via(probe, node), "action=whoami").await;
        assert_eq!((status, body.as_str()), (503, "Service unavailable: the store cannot be reached!"));
        fastest = fastest.min(took);
    }
    fastest
}
