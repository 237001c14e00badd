//! The `herald` binary: parses the command line and hands it to the library.
//! All logic lives in the library (`lib.rs` and its modules) so it can be
//! tested; this file must never hold more than parsing and the exit code.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = herald_cli::Cli::parse();
    match herald_cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", herald_cli::error_message(&e));
            ExitCode::FAILURE
        }
    }
}
