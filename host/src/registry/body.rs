//! Request bodies of the registry's routes: never buffered whole, never
//! read before the request is allowed, and never left unread without the
//! client being told the connection closes.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::Response;

/// A request body that notes when it was read to its end.
pub(super) struct Tracked {
    pub(super) inner: Body,
    pub(super) finished: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            self.finished
                .store(true, std::sync::atomic::Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a request says it has a body.
pub(super) fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.trim() != "0")
            && headers.contains_key(header::CONTENT_LENGTH)
}

/// The largest body of a refused request read anyway, so that the client
/// can reuse its connection.
const DRAINED_BODY_BYTES: u64 = 64 << 10;

/// Answers `response` to a request whose body was never read: a body of a
/// few KiB is read and dropped first, so the connection stays usable;
/// anything larger gets `Connection: close` (hyper closes the connection
/// rather than read an unread body, and the client must know).
pub(super) async fn refuse_unread(
    request: axum::extract::Request,
    mut response: Response,
) -> Response {
    if !has_body(request.headers()) {
        return response;
    }
    let small = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .is_some_and(|n| n <= DRAINED_BODY_BYTES);
    let drained = small
        && tokio::time::timeout(
            std::time::Duration::from_secs(2),
            axum::body::to_bytes(request.into_body(), DRAINED_BODY_BYTES as usize),
        )
        .await
        .is_ok_and(|read| read.is_ok());
    if !drained {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Manifest bodies read at once, in all and per token: at most
/// 16 × 4 MiB in memory, 4 × 4 MiB for one token.
const MANIFEST_READS: usize = 16;
const MANIFEST_READS_PER_TOKEN: usize = 4;

/// Counts manifest bodies being read, per token and in all.
#[derive(Debug, Default)]
pub(crate) struct BodyReads {
    per_token: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// A manifest body being read; the slot is given back on drop.
pub(super) struct ReadSlot<'r> {
    reads: &'r BodyReads,
    token: String,
}

impl BodyReads {
    pub(super) fn enter(&self, token: &str) -> Option<ReadSlot<'_>> {
        let mut per_token = self.per_token.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = per_token.values().sum();
        let mine = per_token.get(token).copied().unwrap_or(0);
        if total >= MANIFEST_READS || mine >= MANIFEST_READS_PER_TOKEN {
            return None;
        }
        *per_token.entry(token.to_string()).or_default() += 1;
        Some(ReadSlot {
            reads: self,
            token: token.to_string(),
        })
    }
}

impl Drop for ReadSlot<'_> {
    fn drop(&mut self) {
        let mut per_token = self
            .reads
            .per_token
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_token.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                per_token.remove(&self.token);
            }
        }
    }
}

/// Pulls a body's pieces from a blocking thread, one at a time, as the
/// blob store asks for them.
pub(super) fn pull(
    handle: &tokio::runtime::Handle,
    body: &mut Body,
) -> Option<Result<Bytes, String>> {
    loop {
        let frame = handle.block_on(std::future::poll_fn(|cx| {
            http_body::Body::poll_frame(std::pin::Pin::new(&mut *body), cx)
        }))?;
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => return Some(Ok(data)),
                // Trailers: not content.
                Err(_) => continue,
            },
            Err(e) => return Some(Err(e.to_string())),
        }
    }
}
