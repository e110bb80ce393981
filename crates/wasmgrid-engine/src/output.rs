//! Bounded capture of a guest's stdout and stderr.

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// An in-memory stdout/stderr that keeps the first `limit` bytes of what the guest
/// writes and drops the rest. Unlike wasmtime's `MemoryOutputPipe`, a full buffer
/// never traps the guest or closes the stream: a chatty algorithm still completes,
/// and the caller learns that output was truncated.
#[derive(Clone)]
pub struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
    limit: usize,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: u64,
}

impl CapturedOutput {
    /// A capture that keeps up to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Captured::default())),
            limit,
        }
    }

    fn append(&self, data: &[u8]) {
        // A poisoned lock only means another writer panicked mid-append; the bytes
        // are still valid, so keep going.
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.limit.saturating_sub(c.bytes.len());
        let keep = room.min(data.len());
        c.bytes.extend_from_slice(&data[..keep]);
        c.dropped += (data.len() - keep) as u64;
    }

    /// The captured text (lossy UTF-8), with a note when output was dropped.
    pub fn text(&self) -> String {
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = String::from_utf8_lossy(&c.bytes).into_owned();
        if c.dropped > 0 {
            text.push_str(&format!(
                "\n[wasmgrid: output truncated at {} bytes; {} more bytes dropped]\n",
                self.limit, c.dropped
            ));
        }
        text
    }

    /// Whether anything was written.
    pub fn is_empty(&self) -> bool {
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.bytes.is_empty() && c.dropped == 0
    }

    /// Moves what was captured so far into a new capture of its own and empties
    /// this one: a warm instance keeps writing to the same stream, and each call
    /// takes only its own output.
    pub fn take(&self) -> CapturedOutput {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let taken = std::mem::take(&mut *c);
        CapturedOutput {
            inner: Arc::new(Mutex::new(taken)),
            limit: self.limit,
        }
    }

    /// Whether output past the limit was dropped.
    pub fn truncated(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).dropped > 0
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

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

#[async_trait::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: excess is dropped in `write`.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.append(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_instead_of_failing() {
        let mut out = CapturedOutput::new(8);
        OutputStream::write(&mut out, Bytes::from_static(b"hello ")).unwrap();
        OutputStream::write(&mut out, Bytes::from_static(b"world")).unwrap();
        assert!(out.truncated());
        assert!(
            out.text()
                .starts_with("hello wo\n[wasmgrid: output truncated at 8 bytes; 3 more")
        );
        assert!(out.check_write().unwrap() > 0);
    }
}
