//! The `repcached` binary: arguments to configuration, logging, run, exit code.

use repcached::config::{self, Command};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match config::parse_args(&args) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Print(text)) => {
            print!("{text}");
            return;
        }
        Err(e) => {
            eprintln!("repcached: {e}");
            std::process::exit(config::EXIT_USAGE);
        }
    };
    std::process::exit(repcached::server::run(*cfg));
}
