//! A stream adapter that ends a connection whose client stops reading: a write that cannot
//! make progress for `write_timeout` fails, and hyper drops the connection (and with it the
//! response being sent, e.g. an open download file).
//!
//! hyper has no write timeout of its own; without one a client that never reads would keep a
//! connection, its buffers and its response's resources for as long as it keeps the socket.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Wraps a client stream; reads pass through, writes are bounded as described above.
pub struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write (or flush, or shutdown) first finds the client's window full, and
    /// dropped by the next one that makes progress: the limit is on a stall, not on the
    /// length of a response, so a slow download that keeps moving is never cut. Boxed and
    /// made only on a stall, so an idle connection does not carry a timer.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        WriteDeadline { inner, timeout, stalled: None }
    }

    /// Maps a write-side poll: progress disarms the timer, a wait arms it (once) and fails
    /// when it fires.
    fn bound<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.timeout;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its response in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.bound(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.bound(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.bound(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.bound(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Real time (the crate's tokio has no test-util), short durations, no upper bounds.

    /// A peer that never reads: the write fails with TimedOut, not before the timeout.
    #[tokio::test]
    async fn a_stalled_write_fails_after_the_timeout() {
        let (client, _server) = tokio::io::duplex(1024);
        let mut stream = WriteDeadline::new(client, Duration::from_millis(200));
        let start = std::time::Instant::now();
        let err = stream.write_all(&[0u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(200), "{:?}", start.elapsed());
    }

    /// A peer that reads slowly but steadily is never cut, though the whole write takes
    /// several times the timeout.
    #[tokio::test]
    async fn a_slow_but_moving_write_is_not_cut() {
        let (client, mut server) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut total = 0;
            while total < 32 * 1024 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                total += server.read(&mut buf).await.unwrap();
            }
            total
        });
        let mut stream = WriteDeadline::new(client, Duration::from_millis(500));
        stream.write_all(&[0u8; 32 * 1024]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 32 * 1024);
    }
}
