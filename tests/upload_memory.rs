//! Large uploads stream to disk: sixteen concurrent 48 MiB PATCHes, to
//! sessions that do not exist and then to sessions that do, must not grow
//! the daemon's resident memory by anything near their size. This measures
//! the whole process's resident set (client and daemon share it; the
//! client sends from one static buffer), so it runs in a test binary of
//! its own.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clawcage::cli::{InitCommand, StateArgs};
use clawcage::daemon::{Daemon, DaemonOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY_BYTES: usize = 48 << 20;
const CONCURRENT: usize = 16;

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Samples the resident set until stopped; answers the peak.
fn sample_peak() -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let handle = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(resident_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.load(Ordering::Relaxed)
        })
    };
    (stop, handle)
}

/// Sends a PATCH with a `BODY_BYTES` body from one static chunk, over raw
/// HTTP; answers the status and whether the daemon said it would close.
async fn patch(host: &str, token: &str, path: &str) -> (u16, bool) {
    static CHUNK: [u8; 64 << 10] = [7u8; 64 << 10];
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: {BODY_BYTES}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let send = tokio::spawn(async move {
        let mut sent = 0;
        while sent < BODY_BYTES {
            // A refused request is closed under the client: stop sending.
            if writer.write_all(&CHUNK).await.is_err() {
                break;
            }
            sent += CHUNK.len();
        }
        // Kept open until the answer is read: a half-closed connection is
        // a client gone, to hyper.
        writer
    });
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        if reader.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        response.push(byte[0]);
    }
    drop(send.await);
    let head = String::from_utf8_lossy(&response).to_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.contains("connection: close"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_uploads_stream_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    InitCommand {
        state: StateArgs {
            state_dir: Some(state.clone()),
        },
    }
    .run(&mut Vec::new())
    .unwrap();
    let token = std::fs::read_to_string(state.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let mut options = DaemonOptions::new(state);
    options.registry_quota_bytes = None;
    let daemon = Daemon::open(options).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let router = clawcage::daemon::api::router(daemon.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    // Warm up: a small upload, so the pools and buffers exist.
    let http = clawcage::providers::http::client().unwrap();
    let started = http
        .post(format!("http://{host}/v2/acme/big/blobs/uploads/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let before = resident_bytes();

    // To sessions that do not exist: refused before a byte is read.
    let (stop, sampler) = sample_peak();
    let mut refused = Vec::new();
    for i in 0..CONCURRENT {
        let (host, token) = (host.clone(), token.clone());
        refused.push(tokio::spawn(async move {
            patch(
                &host,
                &token,
                &format!("/v2/acme/big/blobs/uploads/nosuchsession{i}"),
            )
            .await
        }));
    }
    for request in refused {
        let (status, closes) = request.await.unwrap();
        assert_eq!(status, 404);
        assert!(
            closes,
            "a refused body left unread must close the connection"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let refused_peak = sampler.join().unwrap();

    // To sessions that exist: streamed to disk.
    let mut sessions = Vec::new();
    for _ in 0..CONCURRENT - 1 {
        let response = http
            .post(format!("http://{host}/v2/acme/big/blobs/uploads/"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        sessions.push(response.headers()["location"].to_str().unwrap().to_string());
    }
    sessions.push(started.headers()["location"].to_str().unwrap().to_string());
    let (stop, sampler) = sample_peak();
    let mut accepted = Vec::new();
    for location in sessions {
        let (host, token) = (host.clone(), token.clone());
        accepted.push(tokio::spawn(async move {
            patch(&host, &token, &location).await
        }));
    }
    for request in accepted {
        assert_eq!(request.await.unwrap(), (202, false));
    }
    stop.store(true, Ordering::Relaxed);
    let accepted_peak = sampler.join().unwrap();

    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    eprintln!(
        "RSS before {:.1} MiB; peak with {CONCURRENT} refused 48 MiB bodies {:.1} MiB; with {CONCURRENT} accepted {:.1} MiB",
        mib(before),
        mib(refused_peak),
        mib(accepted_peak)
    );
    // 16 × 48 MiB is 768 MiB: a whole body buffered would show at once.
    assert!(
        refused_peak.saturating_sub(before) < 32 << 20,
        "refused uploads grew RSS by {:.1} MiB",
        mib(refused_peak.saturating_sub(before))
    );
    assert!(
        accepted_peak.saturating_sub(before) < 64 << 20,
        "streamed uploads grew RSS by {:.1} MiB",
        mib(accepted_peak.saturating_sub(before))
    );
}
