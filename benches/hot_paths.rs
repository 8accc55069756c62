//! Criterion benchmarks of the hot paths: parameter parsing, connector id, token envelope,
//! a send's token work and its sync body, queue push/drain/ack, and the long-poll wake-up
//! through the memory store.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use pollgate::params::Params;
use pollgate::protocol::{self, TokenFields};
use pollgate::store::memory::MemoryStore;
use pollgate::store::queue::Queue;
use pollgate::store::{self, ConnectorInfo, QueueLimits, QueuedPacket, SharedQuote, Store};

const QUERY: &[u8] = br#"connectionId=0a113ef6b61820da0a113ef6b61820da&action=send&seq=42&data={"ns":"org.jwebsocket.plugins.system","type":"echo","data":"hello+world%21","utid":7}"#;
const LIMITS: QueueLimits = QueueLimits { max_packets: 1000, max_bytes: 1 << 22 };

fn parsing(c: &mut Criterion) {
    c.bench_function("params/parse_send_query", |b| b.iter(|| Params::parse(std::hint::black_box(QUERY))));
    // A form body with a 64 KB message: the pieces' search runs over all of it.
    let form = format!("connectionId=0a113ef6b61820da&action=send&data={}", "x".repeat(64 * 1024));
    c.bench_function("params/parse_form_64k", |b| b.iter(|| Params::parse(std::hint::black_box(form.as_bytes()))));
    c.bench_function("protocol/connector_id", |b| {
        b.iter(|| protocol::connector_id(std::hint::black_box("0a113ef6b61820da0a113ef6b61820da"), "127.0.0.1"))
    });
    let request =
        protocol::parse_token(r#"{"ns":"org.jwebsocket.plugins.system","type":"echo","data":"x","utid":7}"#).unwrap();
    c.bench_function("protocol/envelope", |b| {
        b.iter(|| {
            let mut r = protocol::response(std::hint::black_box(&request));
            r.insert("data".into(), "x".into());
            protocol::to_text(&r)
        })
    });
    // A send as the system plugin runs it: the token read in place, the forwarded text, the
    // response; then the sync body that carries the forwarded text.
    let send = r#"{"ns":"org.jwebsocket.plugins.system","type":"send","utid":7,"targetId":"0a113ef6b61820da0a113ef6b61820da","data":"hello world"}"#;
    c.bench_function("protocol/send_view", |b| {
        b.iter(|| {
            let view = protocol::TokenView::parse(std::hint::black_box(send)).unwrap();
            (view.text_with_source("0a113ef6b61820da0a113ef6b61820da"), protocol::response_text(&view))
        })
    });
    let forwarded = protocol::TokenView::parse(send).unwrap().text_with_source("0a113ef6b61820da0a113ef6b61820da");
    let own = [QueuedPacket { seq: 1, text: forwarded.as_str().into(), quoted: None }];
    c.bench_function("protocol/sync_body", |b| b.iter(|| store::packets_text(std::hint::black_box(&own))));
    // The same packet as a broadcast delivers it after its first receiver: the quote is made.
    let broadcast = [QueuedPacket { quoted: Some(SharedQuote::default()), ..own[0].clone() }];
    store::packets_text(&broadcast);
    c.bench_function("protocol/sync_body_broadcast", |b| {
        b.iter(|| store::packets_text(std::hint::black_box(&broadcast)))
    });
}

fn queue(c: &mut Criterion) {
    let packet: Arc<str> = Arc::from(r#"{"ns":"org.jwebsocket.plugins.system","type":"broadcast","data":"hello"}"#);
    c.bench_function("queue/push_take_all_16", |b| {
        let mut q = Queue::default();
        b.iter(|| {
            for _ in 0..16 {
                q.push(packet.clone(), None, LIMITS);
            }
            q.take_all()
        })
    });
    c.bench_function("queue/push_ack_16", |b| {
        let mut q = Queue::default();
        b.iter(|| {
            for _ in 0..16 {
                q.push(packet.clone(), None, LIMITS);
            }
            let pending = q.pending();
            q.ack(q.last_seq()).unwrap();
            pending
        })
    });
}

fn wake_up(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = Arc::new(MemoryStore::default());
    let info = ConnectorInfo {
        id: "c".into(),
        session_id: "s".into(),
        address: "127.0.0.1".into(),
        user_agent: String::new(),
        opened_ms: 0,
        last_active_ms: 0,
    };
    rt.block_on(store.open(info, false, 10, "welcome".into())).unwrap();
    // Takes the welcome. Then a sync's rounds as the engine makes them: the first finds
    // nothing and waits; a push wakes it; the second takes the packet.
    rt.block_on(store.poll_round("c", None, None, 0, false)).unwrap();
    c.bench_function("store/push_wakes_held_poll", |b| {
        b.iter(|| {
            rt.block_on(async {
                let first = store.poll_round("c", None, None, 0, false).await.unwrap();
                let mut wakeup = first.wakeup;
                let pusher = store.clone();
                let task = tokio::spawn(async move { pusher.push("c", "p".into(), LIMITS, None).await });
                wakeup.changed().await;
                task.await.unwrap().unwrap();
                store.poll_round("c", None, Some(first.ticket), 0, true).await.unwrap().drained.unwrap()
            })
        })
    });
}

criterion_group!(benches, parsing, queue, wake_up);
criterion_main!(benches);
