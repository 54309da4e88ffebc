//! The HTTP client for providers: rustls with the ring provider and the
//! platform's roots, HTTP/2 where offered, pooled connections, no
//! redirects, no proxies from the environment, and bounded retries.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

/// Most attempts on one model for one call: the first and two retries, as
/// the providers' own SDKs do. A binding with fallbacks does not retry a
/// model that has a fallback after it; it moves on.
pub const MAX_ATTEMPTS: u32 = 3;
/// The first retry's backoff; each later one doubles, with full jitter.
pub(crate) const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// Time allowed to connect, by default (a binding sets its own; see
/// [`super::target::Timeouts`]).
pub(crate) const CONNECT_TIMEOUT: Duration = crate::outbound::DEFAULT_CONNECT_TIMEOUT;
/// Largest response body read from a provider.
pub(crate) const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Builds the shared client.
pub fn client() -> Result<reqwest::Client, String> {
    crate::outbound::client_builder(CONNECT_TIMEOUT)?
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// Whether a status is worth retrying: rate limits, overload and server
/// errors.
pub(crate) fn retryable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        408 | 409 | 429 | 500 | 502 | 503 | 504 | 529
    )
}

/// The server's requested wait (see [`crate::outbound::retry_after`]).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    crate::outbound::retry_after(headers)
}

/// The wait before retry number `attempt` (1-based): the server's
/// `retry-after` when it gave one, else exponential backoff with full
/// jitter.
pub(crate) fn backoff(attempt: u32, server: Option<Duration>) -> Duration {
    if let Some(wait) = server {
        return wait;
    }
    let cap = BASE_BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(6));
    let mut random = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    cap.mul_f64(f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX))
}

/// Whether waiting `wait` still leaves time before `deadline`.
pub(crate) fn fits(wait: Duration, deadline: Instant) -> bool {
    Instant::now() + wait < deadline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_headers_are_honoured() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "retry-after",
            "2".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(
            "retry-after-ms",
            "150".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        assert_eq!(
            backoff(3, Some(Duration::from_millis(7))),
            Duration::from_millis(7)
        );
        assert!(backoff(3, None) <= BASE_BACKOFF * 4);
    }

    #[test]
    fn the_client_builds_with_ring() {
        assert!(client().is_ok());
    }
}
