//! Logging setup: human-readable by default, JSON lines on request.

use tracing_subscriber::EnvFilter;

use crate::config::LogArgs;

/// Installs the global subscriber; a second call (as in tests) is a no-op.
pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr: stdout is for what a command prints (tokens, reports).
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr);
    let _ = if args.log_json { builder.json().try_init() } else { builder.try_init() };
}
