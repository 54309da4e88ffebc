//! What every outbound HTTP exchange with a credential shares, for model
//! providers ([`crate::providers`]) and tool connectors ([`crate::tools`])
//! alike: one client configuration (rustls on ring, no redirects, no
//! proxies), the credential header built in zeroizing memory and marked
//! sensitive, bodies read within a size and time bound, how long a server
//! asks to wait, whether a reply's body can be checked for the credential
//! as it is, and what to say about a failed request without its URL. The
//! egress checks (which hosts, which addresses) are [`crate::egress`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};

use crate::secret::Secret;

/// The placeholder a credential template puts the credential in.
pub(crate) const CREDENTIAL_PLACEHOLDER: &str = "{credential}";

/// The header value for a credential: `template` with
/// [`CREDENTIAL_PLACEHOLDER`] replaced by the secret (`Bearer {credential}`,
/// or `{credential}` alone), built in memory that is zeroized when dropped,
/// and marked sensitive so no debug output or HTTP/2 table shows it.
pub fn credential_header(template: &str, secret: &Secret) -> Result<HeaderValue, &'static str> {
    let credential = secret
        .expose_str()
        .ok_or("the credential is not valid text")?;
    let value = zeroize::Zeroizing::new(template.replace(CREDENTIAL_PLACEHOLDER, credential));
    let mut header =
        HeaderValue::from_str(&value).map_err(|_| "the credential is not a valid header value")?;
    header.set_sensitive(true);
    Ok(header)
}

/// Why a reply's body was not read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadError {
    /// Larger than allowed.
    #[error("the response is larger than {0} bytes")]
    TooLarge(usize),
    /// No bytes came for the idle limit.
    #[error("the response stalled")]
    Idle,
    /// The body did not finish by the deadline.
    #[error("the response did not finish in time")]
    Deadline,
    /// The connection failed (the kind only: reqwest's message can hold
    /// the URL).
    #[error("reading the response failed: {0}")]
    Failed(&'static str),
}

/// How much of a body to read, and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadLimits {
    /// The most bytes; a `Content-Length` above it is refused unread.
    pub max: usize,
    /// The longest wait for the next bytes.
    pub idle: Option<Duration>,
    /// When the whole body must be in.
    pub by: Option<Instant>,
}

/// Reads a whole body within `limits`.
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
    limits: ReadLimits,
) -> Result<Vec<u8>, ReadError> {
    if response
        .content_length()
        .is_some_and(|length| length > limits.max as u64)
    {
        return Err(ReadError::TooLarge(limits.max));
    }
    let mut body = Vec::new();
    loop {
        let idle_at = limits.idle.map(|idle| Instant::now() + idle);
        let until = match (idle_at, limits.by) {
            (Some(idle), Some(by)) if idle < by => Some((idle, ReadError::Idle)),
            (_, Some(by)) => Some((by, ReadError::Deadline)),
            (Some(idle), None) => Some((idle, ReadError::Idle)),
            (None, None) => None,
        };
        let chunk = match until {
            Some((at, kind)) => tokio::time::timeout_at(at.into(), response.chunk())
                .await
                .map_err(|_| kind)?,
            None => response.chunk().await,
        };
        match chunk {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limits.max {
                    return Err(ReadError::TooLarge(limits.max));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(ReadError::Failed(error_kind(&e))),
        }
    }
}

/// What went wrong with a request, without reqwest's message (which can
/// include the URL, and so a path the operator considers private).
pub fn error_kind(error: &reqwest::Error) -> &'static str {
    if error.is_connect() {
        "connection failed"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_body() || error.is_decode() {
        "bad response body"
    } else {
        "request failed"
    }
}

/// Time to set up a connection (TCP and TLS), unless a caller sets its own.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest wait a server can ask for; more is taken as this.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How long the server asks to wait before trying again:
/// `retry-after-ms` (OpenAI, Anthropic), or `Retry-After` in seconds or as
/// an HTTP-date (RFC 9110). At most [`MAX_RETRY_AFTER`]; a date in the
/// past is no wait; anything unreadable is no answer.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let seconds = |value: f64| {
        (value.is_finite() && value >= 0.0)
            .then(|| Duration::from_secs_f64(value.min(MAX_RETRY_AFTER.as_secs_f64())))
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return seconds(ms / 1000.0);
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    // An HTTP-date: `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 2822 reads it).
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let when = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(u64::try_from(date.timestamp()).ok()?))?;
    Some(
        when.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// Why a reply's body cannot be checked for a credential as it is: it is
/// compressed, or only part of a resource.
pub fn unreadable_body(status: StatusCode, headers: &HeaderMap) -> Option<&'static str> {
    let encoded = headers
        .get_all(reqwest::header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
            !v.to_str()
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
        });
    if encoded {
        Some("the service answered with a compressed body, which was not asked for")
    } else if status == StatusCode::PARTIAL_CONTENT
        || headers.contains_key(reqwest::header::CONTENT_RANGE)
    {
        Some("the service answered with part of a body, which was not asked for")
    } else {
        None
    }
}

/// The settings every outbound client shares: rustls on ring with the
/// platform's roots, pooled connections, no redirects, no proxies from the
/// environment, and `connect_timeout` to set up a connection.
pub fn client_builder(connect_timeout: Duration) -> Result<reqwest::ClientBuilder, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_platform_verifier()
        .map_err(|e| format!("TLS roots: {e}"))?
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("clawcage/", env!("CARGO_PKG_VERSION"))))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_header_is_sensitive_and_refuses_what_is_not_a_header() {
        let secret = Secret::from("sk-test-123".to_string());
        let header = credential_header("Bearer {credential}", &secret).unwrap();
        assert!(header.is_sensitive());
        assert_eq!(header.to_str().unwrap(), "Bearer sk-test-123");
        assert_eq!(format!("{header:?}"), "Sensitive");
        let broken = Secret::from("line\nbreak".to_string());
        assert_eq!(
            credential_header(CREDENTIAL_PLACEHOLDER, &broken).unwrap_err(),
            "the credential is not a valid header value"
        );
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        let at = |pairs: &[(&'static str, &str)]| retry_after_at(&headers(pairs), now);
        assert_eq!(at(&[("retry-after", "2")]), Some(Duration::from_secs(2)));
        assert_eq!(
            at(&[("retry-after", "1.5")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            at(&[("retry-after", "2"), ("retry-after-ms", "150")]),
            Some(Duration::from_millis(150))
        );
        assert_eq!(
            at(&[("retry-after", "Sun, 06 Nov 1994 08:50:07 GMT")]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            at(&[("retry-after", "Sun, 06 Nov 1994 08:00:00 GMT")]),
            Some(Duration::ZERO),
            "a date in the past"
        );
        assert_eq!(at(&[("retry-after", "99999999")]), Some(MAX_RETRY_AFTER));
        assert_eq!(at(&[("retry-after", "-1")]), None);
        assert_eq!(at(&[("retry-after", "soon")]), None);
        assert_eq!(at(&[]), None);
    }
}
