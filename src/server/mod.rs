//! Listeners, worker event loops, connections and request execution.

use crate::config::Config;

/// Runs the server until it is told to stop; returns the process exit code.
pub fn run(cfg: Config) -> i32 {
    let _ = cfg;
    0
}
