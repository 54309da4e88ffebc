//! Bounded capture of a guest's stdout and stderr.
//!
//! A guest's `println!` must never fail (Rust panics when writing to stdout
//! fails), and must never make the host buffer without bound. The pipe here
//! accepts every write, keeps the first [`MAX_CAPTURED_OUTPUT_BYTES`] bytes and
//! counts the rest; the host turns what it kept into log lines afterwards.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::limits::MAX_CAPTURED_OUTPUT_BYTES;

#[derive(Debug, Default)]
struct Captured {
    kept: BytesMut,
    dropped_bytes: u64,
}

/// One captured output stream (stdout or stderr) of one invocation.
#[derive(Debug, Clone)]
pub(crate) struct CapturedOutput {
    capacity: usize,
    inner: Arc<Mutex<Captured>>,
}

impl Default for CapturedOutput {
    fn default() -> Self {
        Self::with_capacity(MAX_CAPTURED_OUTPUT_BYTES)
    }
}

impl CapturedOutput {
    /// A capture that keeps at most `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut captured = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.capacity.saturating_sub(captured.kept.len());
        let kept = room.min(bytes.len());
        captured.kept.extend_from_slice(&bytes[..kept]);
        captured.dropped_bytes += (bytes.len() - kept) as u64;
    }

    /// What was kept so far, leaving it in place.
    pub(crate) fn peek(&self) -> Bytes {
        let captured = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Bytes::copy_from_slice(&captured.kept)
    }

    /// Takes what was captured so far: the kept bytes and how many were dropped.
    pub fn take(&self) -> (Bytes, u64) {
        let mut captured = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = std::mem::take(&mut captured.dropped_bytes);
        (captured.kept.split().freeze(), dropped)
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: excess output is discarded, never refused, so a
        // chatty guest is not turned into a panicking one.
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_capacity_and_counts_the_rest() {
        let out = CapturedOutput::with_capacity(8);
        out.push(b"hello ");
        out.push(b"world");
        let (kept, dropped) = out.take();
        assert_eq!(&kept[..], b"hello wo");
        assert_eq!(dropped, 3);
    }
}
