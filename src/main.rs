//! The `pollgate` binary: command line, configuration, logging, then [`pollgate::server`].

use std::cell::Cell;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pollgate::config::{Config, LogFormat};
use tikv_jemalloc_ctl::{Access, AsName};

/// jemalloc: smaller per-connection memory than glibc's malloc, and with its background
/// thread (configured in `.cargo/config.toml`) freed pages go back to the system within
/// seconds (docs/PERFORMANCE.md, "idle" and "churn").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How often at most a worker empties its allocation cache ([`empty_thread_cache`]).
const CACHE_EMPTY_INTERVAL: Duration = Duration::from_secs(1);

/// Gives the blocks in this thread's jemalloc cache back to the allocator's arena, at most
/// once per [`CACHE_EMPTY_INTERVAL`]; tokio calls it when a worker is about to sleep. A
/// thread's cache is emptied only as that thread allocates, so a worker that goes idle after
/// a burst of connections would keep its cached blocks for good, and each of them keeps
/// the whole slab it sits in resident (about 0.7 MB after 10,000 abandoned connectors:
/// docs/PERFORMANCE.md, "churn"). Once back in the arena, the background thread returns
/// the emptied pages to the system. Answers whether it emptied the cache.
fn empty_thread_cache() -> bool {
    thread_local! {
        static LAST_EMPTIED: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    if LAST_EMPTIED.get().is_some_and(|at| now.duration_since(at) < CACHE_EMPTY_INTERVAL) {
        return false;
    }
    LAST_EMPTIED.set(Some(now));
    // Turning the cache off empties it; turning it on again starts an empty one. A failure
    // (jemalloc built without caches) leaves nothing to empty.
    let enabled = b"thread.tcache.enabled\0".name();
    enabled.write(false).and_then(|()| enabled.write(true)).is_ok()
}

const USAGE: &str = "\
usage: pollgate [--config PATH] [--KEY VALUE ...]
       pollgate hash-password [PASSWORD]   (reads the password from stdin if not given)

Every configuration key can be given as --kebab-case flag (--port 8080, --max-sync-wait 10000)
or as POLLGATE_UPPER_SNAKE environment variable; flags win over the environment, which wins
over the file (default conf/pollgate.toml).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("hash-password") {
        return hash_password(args.get(1).cloned());
    }
    let (config_path, flags) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(config_path.as_deref(), &flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&config);
    // Panics are logged once, through tracing, without their message.
    pollgate::install_panic_hook();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.on_thread_park(|| {
        empty_thread_cache();
    });
    if config.max_threads > 0 {
        runtime.worker_threads(config.max_threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match pollgate::server::Server::bind(config, Vec::new()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        for addr in server.local_addrs() {
            tracing::info!(%addr, "listening");
            eprintln!("pollgate listening on {addr}");
        }
        server.serve().await;
        ExitCode::SUCCESS
    })
}

/// The `--config` path and the `--key value` overrides.
type Args = (Option<PathBuf>, Vec<(String, String)>);

/// Splits `--config PATH` from the `--key value` / `--key=value` overrides.
fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut config = None;
    let mut flags = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--help" || arg == "-h" {
            return Err(USAGE.into());
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument '{arg}'\n{USAGE}"));
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_owned(), v.to_owned()),
            None => {
                i += 1;
                let v = args.get(i).ok_or_else(|| format!("flag --{flag} needs a value"))?;
                (flag.to_owned(), v.clone())
            }
        };
        if name == "config" {
            config = Some(PathBuf::from(value));
        } else {
            flags.push((name, value));
        }
        i += 1;
    }
    Ok((config, flags))
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[allow(clippy::print_stdout)]
fn hash_password(given: Option<String>) -> ExitCode {
    let password = match given {
        Some(p) => p,
        None => {
            let mut line = String::new();
            if std::io::stdin().lock().read_line(&mut line).is_err() {
                eprintln!("cannot read the password from stdin");
                return ExitCode::FAILURE;
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.is_empty() {
        eprintln!("refusing to hash an empty password");
        return ExitCode::FAILURE;
    }
    println!("{}", pollgate::hash_password(&password));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_cache_is_emptied_at_most_once_per_interval_and_stays_on() {
        let cache_on = || -> bool { b"thread.tcache.enabled\0".name().read().unwrap() };
        let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![0; 64 + i]).collect();
        drop(blocks);
        assert!(cache_on());
        assert!(empty_thread_cache(), "jemalloc refused to turn the cache off and on");
        assert!(cache_on(), "a worker must not run on without its cache after emptying it");
        assert!(!empty_thread_cache(), "emptied again within the interval");
        assert!(cache_on());
    }
}
