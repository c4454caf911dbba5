//! The one logging set-up of the workspace's command-line programs: `tracing` to stderr,
//! filtered by `RUST_LOG` when set, else at `default_level`.

/// Installs the stderr subscriber (once per process; later calls do nothing).
pub fn init(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
