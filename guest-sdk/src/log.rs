//! Log lines, forwarded by the host with the agent's name and event id.
//!
//! Use the macros: `info!("labelled {} issues", n)`. Lines are bounded by the
//! host (size and count per event); stdout and stderr are captured as log
//! lines too.

pub use crate::wit::clawcage::agent::log::Level;

/// Writes one log line.
pub fn write(level: Level, message: &str) {
    crate::wit::clawcage::agent::log::log(level, message);
}

/// Logs at `trace` level, with `format!` arguments.
#[macro_export]
macro_rules! trace { ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Trace, &::std::format!($($arg)+)) } }
/// Logs at `debug` level, with `format!` arguments.
#[macro_export]
macro_rules! debug { ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Debug, &::std::format!($($arg)+)) } }
/// Logs at `info` level, with `format!` arguments.
#[macro_export]
macro_rules! info { ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Info, &::std::format!($($arg)+)) } }
/// Logs at `warn` level, with `format!` arguments.
#[macro_export]
macro_rules! warn { ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Warn, &::std::format!($($arg)+)) } }
/// Logs at `error` level, with `format!` arguments.
#[macro_export]
macro_rules! error { ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Error, &::std::format!($($arg)+)) } }
