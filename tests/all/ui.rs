//! The dashboard over HTTP, as a browser speaks to it: sign-in for a
//! session cookie, CSRF on every change, a strict CSP on every page, a
//! viewer that changes nothing, a key's value that appears nowhere, and
//! cross-site posts refused. (Real-browser tests are still to come.)

use reqwest::Method;
use reqwest::header::HeaderMap;

use crate::daemon::{Running, start, start_with};

const SECRET: &str = "sk-ant-api03-UiOnlyOnceQ7vN2kLp9xRt4WmZ8cHs3JbY6uFd1GeA5oKi0qTnVwXyMzLr7Bc4Hd2Jf6Kg8Lm1Np3Qr5St7Uv9Wx0Yz2AAA";

/// A form, URL-encoded as a browser sends it.
fn encode(fields: &[(&str, &str)]) -> String {
    let escape = |text: &str| {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn browser() -> reqwest::Client {
    clawcage::outbound::client_builder(clawcage::outbound::DEFAULT_CONNECT_TIMEOUT)
        .unwrap()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `token`; answers the session cookie (`name=value`) and
/// the Set-Cookie header.
async fn sign_in(daemon: &Running, token: &str) -> (String, String) {
    let response = browser()
        .post(format!("{}/ui/login", daemon.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("token", token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    (cookie, set_cookie)
}

async fn get(daemon: &Running, cookie: &str, path: &str) -> (u16, HeaderMap, String) {
    let response = browser()
        .get(format!("{}{path}", daemon.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// The CSRF token in a page's forms.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..at + 64].to_string()
}

async fn post(daemon: &Running, cookie: &str, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let response = browser()
        .post(format!("{}{path}", daemon.url))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(form))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_manages_keys_and_signs_out() {
    let daemon = start().await;
    // Without a session: to sign-in; a wrong token is refused.
    let (status, headers, _) = get(&daemon, "", "/ui/").await;
    assert_eq!(
        (status, headers["location"].to_str().unwrap()),
        (303, "/ui/login")
    );
    let wrong = browser()
        .post(format!("{}/ui/login", daemon.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("token", "cc_wrong")]))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    let (cookie, set_cookie) = sign_in(&daemon, daemon.token.trim()).await;
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain http: {set_cookie}");
    assert!(!set_cookie.contains(daemon.token.trim()));

    // Signed in, the sign-in page leads to the overview.
    let (status, headers, _) = get(&daemon, &cookie, "/ui/login").await;
    assert_eq!(
        (status, headers["location"].to_str().unwrap()),
        (303, "/ui/")
    );
    // Every page: the CSP and its companions.
    for (path, cookie) in [
        ("/ui/login", ""),
        ("/ui/", cookie.as_str()),
        ("/ui/agents", cookie.as_str()),
        ("/ui/usage", cookie.as_str()),
        ("/ui/invocations", cookie.as_str()),
        ("/ui/audit", cookie.as_str()),
        ("/ui/registry", cookie.as_str()),
        ("/ui/keys", cookie.as_str()),
    ] {
        let (status, headers, _) = get(&daemon, cookie, path).await;
        assert_eq!(status, 200, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["cache-control"], "no-store");
    }

    // Add a key through the form; its value appears nowhere after.
    let (_, _, page) = get(&daemon, &cookie, "/ui/keys").await;
    let token = csrf(&page);
    let (status, _) = post(
        &daemon,
        &cookie,
        "/ui/keys",
        &[
            ("csrf", &token),
            ("id", "team"),
            ("provider", "anthropic"),
            ("secret", SECRET),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let (_, _, page) = get(&daemon, &cookie, "/ui/keys").await;
    assert!(page.contains(">team<") && page.contains("active"), "{page}");
    for path in ["/ui/", "/ui/keys", "/ui/login"] {
        let (_, headers, body) = get(&daemon, &cookie, path).await;
        assert!(
            !body.contains(SECRET) && !body.contains(&SECRET[14..40]),
            "{path}"
        );
        assert!(!format!("{headers:?}").contains(&SECRET[14..40]));
    }
    assert!(!daemon.audit_text().contains(&SECRET[14..40]));

    // Without the CSRF token, or from another site: refused, nothing done.
    let (status, _) = post(
        &daemon,
        &cookie,
        "/ui/keys",
        &[
            ("csrf", "0000"),
            ("id", "forged"),
            ("provider", "anthropic"),
            ("secret", SECRET),
        ],
    )
    .await;
    assert_eq!(status, 403);
    let cross = browser()
        .post(format!("{}/ui/keys/team/revoke", daemon.url))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("csrf", token.as_str())]))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let fetch_cross = browser()
        .post(format!("{}/ui/keys/team/revoke", daemon.url))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("csrf", token.as_str())]))
        .send()
        .await
        .unwrap();
    assert_eq!(fetch_cross.status(), 403);
    let (_, keys) = daemon.call(Method::GET, "/v1/keys", None).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");
    assert!(keys["keys"][0]["revoked_at"].is_null());

    // Revoke, with the token: in effect at once.
    let (status, _) = post(
        &daemon,
        &cookie,
        "/ui/keys/team/revoke",
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(status, 303);
    let (_, keys) = daemon.call(Method::GET, "/v1/keys", None).await;
    assert!(keys["keys"][0]["revoked_at"].is_number(), "{keys}");

    // Sign out: the cookie opens nothing any more.
    let (status, _) = post(&daemon, &cookie, "/ui/logout", &[("csrf", &token)]).await;
    assert_eq!(status, 303);
    let (status, _, _) = get(&daemon, &cookie, "/ui/keys").await;
    assert_eq!(status, 303);
    let audit = daemon.audit_text();
    for record in [
        r#""action":"ui sign-in","actor":"admin","allowed":true"#,
        r#""action":"ui sign-in","actor":"unknown","allowed":false"#,
        r#""action":"ui sign-out","actor":"admin","allowed":true"#,
        r#""actor":"admin","change":"add","key_id":"team""#,
        r#""actor":"admin","change":"revoke","key_id":"team""#,
    ] {
        assert!(audit.contains(record), "{record} in {audit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_session_reads_and_ends_with_its_token() {
    let daemon =
        start_with(|options| options.public_url = Some("https://clawcage.example".into())).await;
    let (_, created) = daemon
        .call(
            Method::POST,
            "/v1/tokens",
            Some(serde_json::json!({"name": "auditor", "role": "viewer"})),
        )
        .await;
    let viewer = created["token"].as_str().unwrap().to_string();
    let (cookie, set_cookie) = sign_in(&daemon, &viewer).await;
    assert!(set_cookie.contains("Secure"), "behind https: {set_cookie}");
    let (status, _, page) = get(&daemon, &cookie, "/ui/keys").await;
    assert_eq!(status, 200);
    assert!(
        !page.contains("Add a key"),
        "a viewer sees no forms that change things"
    );
    let token = csrf(&page);
    let (status, _) = post(
        &daemon,
        &cookie,
        "/ui/keys",
        &[
            ("csrf", &token),
            ("id", "sneaky"),
            ("provider", "anthropic"),
            ("secret", SECRET),
        ],
    )
    .await;
    assert_eq!(status, 403);
    let (_, keys) = daemon.call(Method::GET, "/v1/keys", None).await;
    assert_eq!(keys["keys"], serde_json::json!([]));
    // A publisher token opens no session.
    let (_, publisher) = daemon
        .call(
            Method::POST,
            "/v1/tokens",
            Some(serde_json::json!({"name": "acme", "publish": ["acme"]})),
        )
        .await;
    let refused = browser()
        .post(format!("{}/ui/login", daemon.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("token", publisher["token"].as_str().unwrap())]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // Revoking the token ends its session.
    let (status, _) = daemon
        .call(Method::DELETE, "/v1/tokens/auditor", None)
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = get(&daemon, &cookie, "/ui/").await;
    assert_eq!(status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_can_be_turned_off() {
    let daemon = start_with(|options| options.ui = false).await;
    let (status, _, _) = get(&daemon, "", "/ui/login").await;
    assert_eq!(status, 404);
}
