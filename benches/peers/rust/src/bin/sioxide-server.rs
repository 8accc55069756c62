//! The socketioxide peer of the benchmark: socketioxide on axum, long-polling only, on
//! 127.0.0.1 (`PORT`, default 3002). Two events on the namespace `/`, the same as the
//! socket.io peer's (`../socketio/server.js`): `echo` answers the sender alone, `broadcast`
//! sends the data to every socket of the namespace, the sender's own included.

use axum::serve::ListenerExt;
use serde_json::Value;
use socketioxide::extract::{Data, SocketRef};
use socketioxide::{SocketIo, TransportType};

#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3002);

    // Polling only: a WebSocket upgrade is refused, so every client polls as pollgate's do.
    let (layer, io) = SocketIo::builder().transports([TransportType::Polling]).build_layer();
    io.ns("/", async |socket: SocketRef| {
        socket.on("echo", async |socket: SocketRef, Data::<Value>(data)| {
            let _ = socket.emit("echo", &data);
        });
        socket.on("broadcast", async |io: SocketIo, Data::<Value>(data)| {
            let _ = io.emit("broadcast", &data).await;
        });
    });
    let app = axum::Router::new().layer(layer);

    // TCP_NODELAY, as pollgate and Node's HTTP server set it: a small poll answer must not
    // wait for Nagle's algorithm.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind 127.0.0.1").tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    println!("socketioxide peer (polling only) on 127.0.0.1:{port}, pid {}", std::process::id());
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("serve");
}
