//! AegisX patch: the websocket's write buffer, freed once flushed.
//!
//! tungstenite buffers outgoing frames in a `Vec` until `write_buffer_size` (128 KiB by default)
//! or a flush, and keeps that vector's capacity for the life of the connection: every socket
//! that was once sent a burst (a tenant's presence announcements as it comes online, a replay)
//! kept the burst's size in memory while idle (3.8 KB per connection on average with tenants
//! of 100; `bench/FINDINGS.md` §7). With `write_buffer_size` 0 tungstenite hands each frame on
//! at once, and this adapter gathers them until the writer flushes (so a batch is still one
//! write to the socket), then drops its buffer.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Past this many bytes gathered, a write first waits for the connection to take them.
const HIGH_WATER: usize = 128 * 1024;

pub(crate) struct FlushBuf<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `inner`.
    written: usize,
}

impl<S> FlushBuf<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            written: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> FlushBuf<S> {
    /// Writes out what is gathered, then frees the buffer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FlushBuf<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FlushBuf<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.buf.len() >= HIGH_WATER {
            ready!(self.poll_drain(cx))?;
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
