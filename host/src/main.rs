//! The `clawcage` binary: parses arguments and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLAWCAGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,clawcage::guest=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    clawcage::cli::Cli::parse().execute()
}
