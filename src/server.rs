//! Listeners (plain and TLS), the accept loop, the reaper task and graceful shutdown.
//!
//! Shutdown order: stop accepting; queue `systemStopping` (if configured) and the close
//! command for every connector, which answers held polls; cancel what still waits; let
//! connections finish their in-flight requests; give up after `shutdown_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Users;
use crate::config::{Config, ConfigError, StoreKind};
use crate::conn::write_deadline::WriteDeadline;
use crate::engine::Engine;
use crate::http::request::Peer;
use crate::http::Service;
use crate::metrics::Metrics;
use crate::plugins::filesystem::FilesystemPlugin;
use crate::plugins::system::SystemPlugin;
use crate::plugins::{HotTokens, Plugin};
use crate::store::memory::MemoryStore;
use crate::store::redis::{RedisOptions, RedisStore};
use crate::store::Store;

/// A bound, not yet serving, pollgate node.
pub struct Server {
    service: Arc<Service>,
    plain: TcpListener,
    tls: Option<(TcpListener, TlsAcceptor)>,
}

impl Server {
    /// Loads users and TLS material and binds the ports; every failure names its key or file.
    pub async fn bind(config: Config, plugins: Vec<Arc<dyn Plugin>>) -> Result<Server, ConfigError> {
        let config = Arc::new(config);
        let users = Arc::new(Users::load(&config.users_file)?);
        let tls = if config.tls_enabled() {
            let acceptor = tls_acceptor(&config)?;
            Some((listen(&config.bind_address, config.sslport, "sslport").await?, acceptor))
        } else {
            None
        };
        let plain = listen(&config.bind_address, config.port, "port").await?;
        let metrics = Arc::new(Metrics::default());
        let store: Arc<dyn Store> = match config.store {
            StoreKind::Memory => Arc::new(MemoryStore::default()),
            StoreKind::Redis => {
                let timeout_ms = config.session_timeout().as_millis() as i64;
                let options = RedisOptions {
                    url: config.redis_url.clone(),
                    cluster_nodes: config.redis_cluster_nodes.clone(),
                    prefix: config.redis_prefix.clone(),
                    // Twice the inactivity timeout, and at least ten minutes.
                    key_ttl_ms: (2 * timeout_ms).max(600_000),
                    retention_ms: timeout_ms.min(300_000),
                    touch_granularity_ms: (timeout_ms / 20).clamp(50, 1000),
                    record_retention_ms: config.session_retention as i64 * 1000,
                };
                RedisStore::new(options, metrics.store.clone()).map_err(|e| ConfigError(format!("redis_url: {e}")))?
            }
        };
        let (plugins, hot) = assemble(&config, plugins);
        let engine = Engine::new(config, store, users, plugins, hot, metrics);
        Ok(Server { service: Arc::new(Service::new(engine)), plain, tls })
    }

    /// The plain address, then the TLS one if any.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self.plain.local_addr().into_iter().collect();
        if let Some((l, _)) = &self.tls {
            addrs.extend(l.local_addr());
        }
        addrs
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn serve(self) {
        self.serve_until(shutdown_signal()).await
    }

    /// Serves until `stop` completes.
    pub async fn serve_until(self, stop: impl std::future::Future<Output = ()>) {
        let engine = self.service.engine.clone();
        let config = engine.config.clone();
        let stop_accepting = CancellationToken::new();
        let connections = TaskTracker::new();
        let background = CancellationToken::new();

        let reaper = tokio::spawn(reaper(engine.clone(), background.clone()));
        let mut acceptors = vec![tokio::spawn(accept_loop(
            self.plain,
            None,
            self.service.clone(),
            stop_accepting.clone(),
            connections.clone(),
        ))];
        if let Some((listener, acceptor)) = self.tls {
            acceptors.push(tokio::spawn(accept_loop(
                listener,
                Some(acceptor),
                self.service.clone(),
                stop_accepting.clone(),
                connections.clone(),
            )));
        }

        stop.await;
        tracing::info!("shutting down");
        engine.draining.cancel();
        stop_accepting.cancel();
        for a in acceptors {
            let _ = a.await;
        }
        engine.stop_all().await;
        engine.shutdown.cancel();
        // After the cancel: a poll that has not seen it yet is waiting, and this wakes it.
        engine.store.wake_all();
        background.cancel();
        let _ = reaper.await;
        connections.close();
        let deadline = Duration::from_secs(config.shutdown_timeout);
        if tokio::time::timeout(deadline, connections.wait()).await.is_err() {
            tracing::warn!("shutdown deadline passed with requests in flight");
        }
        tracing::info!("stopped");
    }
}

/// The plugins a node runs: the built-in ones (the system plugin first, then the filesystem
/// plugin), then the application's.
pub fn plugins(config: &Config, application: Vec<Arc<dyn Plugin>>) -> Vec<Arc<dyn Plugin>> {
    assemble(config, application).0
}

/// [`plugins`], and the system plugin's hot path, which the engine runs itself.
pub(crate) fn assemble(
    config: &Config,
    application: Vec<Arc<dyn Plugin>>,
) -> (Vec<Arc<dyn Plugin>>, Arc<dyn HotTokens>) {
    let system = Arc::new(SystemPlugin::new());
    let mut plugins: Vec<Arc<dyn Plugin>> = vec![system.clone(), Arc::new(FilesystemPlugin::new(&config.fs_root))];
    plugins.extend(application);
    (plugins, system)
}

/// Convenience: bind and serve until a signal.
pub async fn run(config: Config, plugins: Vec<Arc<dyn Plugin>>) -> Result<(), ConfigError> {
    let server = Server::bind(config, plugins).await?;
    server.serve().await;
    Ok(())
}

async fn listen(address: &str, port: u16, key: &str) -> Result<TcpListener, ConfigError> {
    TcpListener::bind((address, port))
        .await
        .map_err(|e| ConfigError(format!("config: cannot listen on '{key}' {address}:{port}: {e}")))
}

fn tls_acceptor(config: &Config) -> Result<TlsAcceptor, ConfigError> {
    let read = |key: &str, path: &str| {
        std::fs::read(path).map_err(|e| ConfigError(format!("config: cannot read '{key}' file {path}: {e}")))
    };
    let cert_pem = read("tls_cert", &config.tls_cert)?;
    let key_pem = read("tls_key", &config.tls_key)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError(format!("config: 'tls_cert' file {}: {e}", config.tls_cert)))?;
    if certs.is_empty() {
        return Err(ConfigError(format!("config: 'tls_cert' file {} holds no certificate", config.tls_cert)));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| ConfigError(format!("config: 'tls_key' file {} holds no private key", config.tls_key)))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| ConfigError(format!("config: 'tls_key' file {}: {e}", config.tls_key)))?;
    let mut tls = tls;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
}

/// The first wait after a failed accept; it doubles with each failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest wait between accepts while they fail: how late a freed descriptor is used.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Errors of one connection (reset or aborted before `accept` took it), not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: Arc<Service>,
    stop: CancellationToken,
    connections: TaskTracker,
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut failures = 0u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                if failures > 0 {
                    tracing::info!(failures, "accepting again");
                }
                (backoff, failures) = (ACCEPT_BACKOFF_MIN, 0);
                pair
            }
            // One client's connection went away before it was accepted: nothing to wait for.
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "accept: connection gone before it was accepted");
                continue;
            }
            Err(e) => {
                // Out of descriptors (EMFILE, ENFILE) or of kernel memory: the connection stays
                // in the backlog, so accepting again at once would fail again at once (a busy
                // loop). Wait, doubling up to a second, and stay stoppable meanwhile; the first
                // success resets the wait. Open connections are served all along.
                failures += 1;
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed; backing off");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        // One spawn per kind, so a plain connection's task is sized for a plain connection
        // and does not carry the larger TLS handshake state (it is held for as long as the
        // connection lives: every idle client pays for it).
        match tls {
            None => {
                connections.spawn(serve_connection(stream, peer, service, stop));
            }
            Some(acceptor) => {
                connections.spawn(async move {
                    let timeout = Duration::from_secs(service.engine.config.header_read_timeout);
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, peer, service, stop).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

async fn serve_connection<S>(stream: S, peer: SocketAddr, service: Arc<Service>, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let write_timeout = Duration::from_secs(service.engine.config.write_timeout);
    let io = WriteDeadline::new(stream, write_timeout);
    let peer = Arc::new(Peer::new(peer));
    crate::conn::serve(io, &peer, &service, &stop).await
}

/// Runs the reaper until cancelled: a pass every second (or sooner for short timeouts), each
/// after this node's heartbeat (a cluster store counts the nodes alive by it).
async fn reaper(engine: Arc<Engine>, cancel: CancellationToken) {
    let period = (engine.config.session_timeout() / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        if let Err(e) = engine.store.heartbeat(crate::protocol::now_ms()).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        // A panic (in a plugin's `connector_stopped`, say) ends this pass, not the reaper.
        match crate::panics::guard(|| engine.reap()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = ?e, "reaper pass failed"),
            Err(panicked) => {
                engine.metrics.panics.inc();
                let location = panicked.location.as_deref().unwrap_or("unknown");
                tracing::error!(location, "reaper pass panicked; the next pass goes on");
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
