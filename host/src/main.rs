//! The `clawcage` binary: parses arguments and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAWCAGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,clawcage::guest=off"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // JSON lines for log shippers; fields are metadata (agent, event id,
    // outcome), never content.
    if std::env::var("CLAWCAGE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    clawcage::cli::Cli::parse().execute()
}
