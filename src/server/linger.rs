//! Lingering close. When the server closes a connection whose client is still sending (a 431
//! for an oversized head, a 408 for a body cut by its deadline, a `Connection: close` answer
//! before the body was read), closing the socket with unread bytes makes the kernel send a
//! reset, and the client loses the answer that was already on its way. So such a connection is
//! half-closed and its remaining input read and discarded for a short while first, as nginx
//! does (`lingering_close`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long a closed connection's input is still drained.
const LINGER: Duration = Duration::from_secs(2);
/// How much of it at most.
const LINGER_BYTES: usize = 16 << 20;

/// A `TcpStream` that, when dropped after the server shut its write side down while the client
/// had not closed its own, drains the client's input in a task of its own before closing.
pub struct LingeringStream {
    stream: Option<TcpStream>,
    /// The server sent its FIN (hyper or the websocket closed the connection).
    shut_down: bool,
    /// The client sent its FIN: nothing more will arrive.
    eof: bool,
}

impl LingeringStream {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream: Some(stream),
            shut_down: false,
            eof: false,
        }
    }

    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.stream
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = self.stream()?.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res
            && buf.filled().len() == before
            && buf.remaining() > 0
        {
            self.eof = true;
        }
        res
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream()?.poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream()?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = self.stream()?.poll_shutdown(cx);
        if res.is_ready() {
            self.shut_down = true;
        }
        res
    }
}

impl Drop for LingeringStream {
    fn drop(&mut self) {
        if !self.shut_down || self.eof {
            return;
        }
        let (Some(stream), Ok(runtime)) =
            (self.stream.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(drain(stream));
    }
}

async fn drain(mut stream: TcpStream) {
    let mut buf = vec![0u8; 8192];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER, async {
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}
