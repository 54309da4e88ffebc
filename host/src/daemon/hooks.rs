//! Webhook signatures: GitHub's `X-Hub-Signature-256`, Slack's `v0`
//! signatures with their timestamp window, and a generic HMAC-SHA256
//! header. Every comparison is ring's constant-time HMAC verification.

use ring::hmac;

/// How far a Slack request's timestamp may be from now, in seconds (Slack's
/// own recommendation), so a captured request cannot be replayed later.
pub const SLACK_WINDOW_SECS: i64 = 300;

fn verify_hex_hmac(secret: &[u8], message: &[&[u8]], hex_tag: &str) -> Result<(), String> {
    let tag = hex::decode(hex_tag).map_err(|_| "the signature is not hex".to_string())?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &message.concat(), &tag)
        .map_err(|_| "the signature does not match".to_string())
}

/// Verifies GitHub's `X-Hub-Signature-256: sha256=<hex>` over the raw body.
pub fn verify_github(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), String> {
    let header = header.ok_or("X-Hub-Signature-256 is missing")?;
    let hex_tag = header
        .strip_prefix("sha256=")
        .ok_or("X-Hub-Signature-256 is not sha256=<hex>")?;
    verify_hex_hmac(secret, &[body], hex_tag)
}

/// Verifies a generic `X-Signature-256: sha256=<hex>` over the raw body.
pub fn verify_generic(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), String> {
    let header = header.ok_or("X-Signature-256 is missing")?;
    let hex_tag = header
        .strip_prefix("sha256=")
        .ok_or("X-Signature-256 is not sha256=<hex>")?;
    verify_hex_hmac(secret, &[body], hex_tag)
}

/// Verifies Slack's `X-Slack-Signature: v0=<hex>` over
/// `v0:<X-Slack-Request-Timestamp>:<body>`, refusing timestamps more than
/// [`SLACK_WINDOW_SECS`] from `now`.
pub fn verify_slack(
    secret: &[u8],
    body: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    now: i64,
) -> Result<(), String> {
    let timestamp = timestamp.ok_or("X-Slack-Request-Timestamp is missing")?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| "X-Slack-Request-Timestamp is not a number".to_string())?;
    if (now - seconds).abs() > SLACK_WINDOW_SECS {
        return Err(format!(
            "the request is {}s old, outside the {SLACK_WINDOW_SECS}s window (a replay?)",
            now - seconds
        ));
    }
    let signature = signature.ok_or("X-Slack-Signature is missing")?;
    let hex_tag = signature
        .strip_prefix("v0=")
        .ok_or("X-Slack-Signature is not v0=<hex>")?;
    verify_hex_hmac(secret, &[b"v0:", timestamp.as_bytes(), b":", body], hex_tag)
}

/// Signs like GitHub (`sha256=<hex>`): for tests and for clients of generic
/// webhooks.
pub fn sign_sha256(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// Signs like Slack (`v0=<hex>`).
pub fn sign_slack(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let base = [format!("v0:{timestamp}:").as_bytes(), body].concat();
    format!("v0={}", hex::encode(hmac::sign(&key, &base).as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signatures() {
        // GitHub's documented example.
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign_sha256(secret, body), good);
        assert!(verify_github(secret, body, Some(good)).is_ok());
        assert!(verify_github(secret, b"Hello, World?", Some(good)).is_err());
        assert!(verify_github(b"other", body, Some(good)).is_err());
        assert!(verify_github(secret, body, None).is_err());
        assert!(verify_github(secret, body, Some("sha1=abc")).is_err());
    }

    #[test]
    fn slack_signatures_and_their_window() {
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J";
        let now = 1_531_420_618;
        let signature = sign_slack(secret, now, body);
        let ts = now.to_string();
        assert!(verify_slack(secret, body, Some(&ts), Some(&signature), now + 10).is_ok());
        let stale = verify_slack(secret, body, Some(&ts), Some(&signature), now + 301);
        assert!(stale.unwrap_err().contains("window"));
        let other_ts = (now + 1).to_string();
        assert!(verify_slack(secret, body, Some(&other_ts), Some(&signature), now).is_err());
    }
}
