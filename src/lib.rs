//! pollgate: a long-polling HTTP transport engine that speaks the jWebSocket REST protocol.
//!
//! Browsers behind firewalls and plain HTTP clients get a live, two-way channel over a
//! single `{context}/http` endpoint. Each connection has a sequenced outbound queue that
//! `sync` drains (and, as a long-poll, waits on); an inactivity reaper closes idle sessions.
//!
//! # The public API
//!
//! What an application embedding pollgate needs:
//!
//! - [`config`]: the configuration file, its defaults and the flag/environment overrides.
//! - [`server`]: listeners (plain and TLS), the accept loop, the reaper task, graceful
//!   shutdown; the built-in plugins are assembled here ([`server::plugins`]).
//! - [`plugins`]: the [`plugins::Plugin`] trait an application implements, the
//!   [`plugins::RequestContext`] a plugin works through, and the token types
//!   ([`plugins::Token`], [`plugins::TokenFields`]).
//! - [`client`]: the Rust client, a session that queues requests and runs them in order with
//!   safe retries, and streams pushed packets from a background long-poll.
//! - [`hash_password`] for the users file, and [`install_panic_hook`], which logs each panic
//!   once, without its message (the binary installs it).
//!
//! # Features
//!
//! - `bin` (default): what only the binaries use (the load tool's command line, jemalloc,
//!   log output). An application turns default features off.
//! - `internals`: pollgate's own modules made public, hidden from the docs, for the
//!   benchmarks, the fuzz targets (with the `fuzzing` entry points) and the integration
//!   tests. Not an API: it changes with the code.
//!
//! # Layout
//!
//! The modules below are pollgate's own; `docs/ARCHITECTURE.md` draws their layers.
//!
//! - `conn`: pollgate's HTTP/1.1, one loop per connection: every request's head is read
//!   and its body framed in this one place (`conn::head`, `conn::chunked`), answers are
//!   written (`conn::response`), and a client that stops reading is cut off
//!   (`conn::write_deadline`).
//! - `timer`: one timer per connection, lent in turn to the read deadlines and to a held
//!   poll's wait.
//! - `http`: one request → parameters → action; its leaves are bodies (`http::body`), the
//!   one place errors become responses (`http::error`), what a request is read with
//!   (`http::request`) and CORS; the admin API under `{context}/admin/` (`http::admin`) and
//!   the document root under `/` and `{context}/` (`http::static_files`) are routed from it.
//! - `params`: lenient query-string and form parsing.
//! - `protocol`: identifiers, the token envelope and the wire strings.
//! - `engine`: connectors and sessions: the only owner of their life cycle (open, close,
//!   reap, evict), the long-poll, idempotent sends, events.
//! - `store`: the state behind the engine, one small interface (`store::Store`) with an
//!   in-memory implementation (`store::memory`), a Redis one for a cluster
//!   (`store::redis`, its atomic steps in `store/redis/lua/`) and the sequenced queue
//!   (`store::queue`).
//! - `auth`: users, password hashes, login rate limits, and the rights checks on a session.
//! - `plugins::system` and `plugins::filesystem`: the built-in plugins (the filesystem
//!   plugin serves `download`).
//! - `metrics`: the Prometheus metrics of `{context}/metrics`.
//! - `panics`: panic isolation: a request or a reaper pass that panics ends alone, and the
//!   process's panic hook logs each panic once.
//!
//! Beside the server binary (`src/main.rs`), `src/bin/pollgate-load/` is the load tool of
//! the benchmarks (`docs/PERFORMANCE.md`); it talks to a running server over HTTP only.
//!
//! # Embedding pollgate with a plugin of your own
//!
//! ```no_run
//! use std::sync::Arc;
//! use pollgate::plugins::{Plugin, RequestContext, Token};
//!
//! /// Answers `{"ns":"com.example.clock","type":"now"}` with the server's time.
//! struct Clock;
//!
//! #[async_trait::async_trait]
//! impl Plugin for Clock {
//!     fn namespace(&self) -> &str {
//!         "com.example.clock"
//!     }
//!     async fn process_token(&self, ctx: &mut RequestContext<'_>, token: &Token) {
//!         let mut reply = ctx.response(token);
//!         reply.insert("now".into(), pollgate::plugins::now_ms().into());
//!         ctx.reply(reply).await;
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = pollgate::config::Config::load(None, &[])?;
//! pollgate::server::run(config, vec![Arc::new(Clock)]).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod plugins;
pub mod server;

/// Declares modules that are pollgate's own: `pub(crate)`, or, with the `internals` feature,
/// `pub` (hidden from the docs) for the benchmarks, the fuzz targets and the integration
/// tests that drive them directly. Not an API: they change with the code.
macro_rules! internal_modules {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$attr])*
            #[cfg(feature = "internals")]
            #[doc(hidden)]
            #[allow(missing_docs)]
            pub mod $name;
            $(#[$attr])*
            #[cfg(not(feature = "internals"))]
            pub(crate) mod $name;
        )*
    };
}

internal_modules!(
    auth,
    engine,
    http,
    metrics,
    panics,
    params,
    protocol,
    shared_poll,
    // The store's whole interface is what the store contract tests and the benchmarks
    // exercise (through `internals`); the server alone leaves a little of it unused. Its one
    // public item is `CloseReason` (of `Plugin::connector_stopped`).
    #[cfg_attr(not(feature = "internals"), allow(dead_code, missing_docs))]
    store,
    timer,
);
mod conn;

pub use auth::hash_password;
pub use panics::install_hook as install_panic_hook;

/// Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): private functions that take
/// untrusted input, made reachable without widening the public API. Not for applications.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod fuzzing {
    use std::path::{Path, PathBuf};

    pub use crate::conn::{escape_target, serve as serve_connection, Handler, Limits};
    use crate::plugins::filesystem::FilesystemPlugin;
    pub use crate::plugins::filesystem::{content_disposition, Resolve};

    /// The download alias folder, as the `download` action picks it
    /// (`FilesystemPlugin::alias_root`).
    pub fn download_alias_root(fs_root: &Path, alias: &str, user: &str) -> Result<PathBuf, String> {
        FilesystemPlugin::alias_root(fs_root, alias, user)
    }

    /// A form or query value as the Rust client percent-encodes it (`client::transport`).
    pub fn client_form_value(value: &str) -> String {
        crate::client::form_value(value)
    }

    /// The file a `download` serves for `filename` under `alias_root`
    /// (`FilesystemPlugin::resolve`).
    pub fn resolve_download(alias_root: &Path, filename: &str) -> Result<PathBuf, Resolve> {
        FilesystemPlugin::resolve(alias_root, filename)
    }

    /// An engine with the built-in plugins, as a server assembles it.
    pub fn engine(
        config: std::sync::Arc<crate::config::Config>,
        store: std::sync::Arc<dyn crate::store::Store>,
        users: std::sync::Arc<crate::auth::Users>,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> std::sync::Arc<crate::engine::Engine> {
        let (plugins, hot) = crate::server::assemble(&config, Vec::new());
        crate::engine::Engine::new(config, store, users, plugins, hot, metrics)
    }
}
