//! The socket as hyper sees it, with the connection's read and write
//! deadlines.
//!
//! hyper's own `header_read_timeout` also runs while a kept-alive connection
//! waits for its next request (hyper restarts it the moment a connection goes
//! idle: `State::idle` in its `proto/h1/conn.rs`), so it cannot give a short
//! header timeout and a longer idle timeout at once. These timers live here instead, checked
//! whenever a read or a write would block, as hyper checks its own: no task
//! and no wake-up per request.

use super::connections::{ConnState, Phase};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

pub struct TrackedIo {
    stream: TcpStream,
    conn: Arc<ConnState>,
    timeouts: Timeouts,
    listener: &'static str,
    read_timer: Pin<Box<Sleep>>,
    /// The phase (and its start) the read timer was set for.
    read_armed_for: Option<(Phase, u64)>,
    write_timer: Pin<Box<Sleep>>,
    write_stalled: bool,
}

impl TrackedIo {
    pub fn new(
        stream: TcpStream,
        conn: Arc<ConnState>,
        timeouts: Timeouts,
        listener: &'static str,
    ) -> Self {
        let far = Instant::now() + Duration::from_secs(86_400);
        Self {
            stream,
            conn,
            timeouts,
            listener,
            read_timer: Box::pin(tokio::time::sleep_until(far)),
            read_armed_for: None,
            write_timer: Box::pin(tokio::time::sleep_until(far)),
            write_stalled: false,
        }
    }

    /// A read would block: has the current phase run out of time?
    fn read_expired(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        let (phase, since) = self.conn.phase();
        let (deadline, reason) = match phase {
            Phase::Head => (
                self.conn.instant(since) + self.timeouts.header,
                "header_timeout",
            ),
            Phase::Idle => (
                self.conn.instant(since) + self.timeouts.idle,
                "idle_timeout",
            ),
            // A handler has the request (and reads the body under its own
            // deadline). hyper may not read again by itself once the
            // connection goes idle (it waits for the socket), so a tick keeps
            // the task waking at least once per idle timeout: the first tick
            // after the request ends arms the idle deadline, which is never
            // earlier than the tick (it counts from the end of the request).
            Phase::Busy => {
                if self.read_armed_for != Some((phase, since)) {
                    self.read_armed_for = Some((phase, since));
                    self.read_timer
                        .as_mut()
                        .reset(Instant::now() + self.timeouts.idle);
                }
                if self.read_timer.as_mut().poll(cx).is_ready() {
                    self.read_timer
                        .as_mut()
                        .reset(Instant::now() + self.timeouts.idle);
                    let _ = self.read_timer.as_mut().poll(cx);
                }
                return None;
            }
            Phase::Closing => return None,
        };
        if self.read_armed_for != Some((phase, since)) {
            self.read_armed_for = Some((phase, since));
            self.read_timer.as_mut().reset(deadline);
        }
        self.read_timer
            .as_mut()
            .poll(cx)
            .is_ready()
            .then_some(reason)
    }

    /// A write would block: has the client stopped reading for too long?
    fn write_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.write_stalled {
            self.write_stalled = true;
            let deadline = Instant::now() + self.timeouts.idle;
            self.write_timer.as_mut().reset(deadline);
        }
        self.write_timer.as_mut().poll(cx).is_ready()
    }

    fn timed_out(&self, reason: &'static str) -> io::Error {
        metrics::counter!("connectord_http_connections_rejected_total",
            "listener" => self.listener, "reason" => reason)
        .increment(1);
        tracing::debug!(reason, "closing a connection");
        io::Error::new(io::ErrorKind::TimedOut, reason)
    }

    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        res: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match res {
            Poll::Pending if self.write_expired(cx) => {
                Poll::Ready(Err(self.timed_out("send_timeout")))
            }
            Poll::Pending => Poll::Pending,
            ready => {
                self.write_stalled = false;
                ready
            }
        }
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.conn.bytes_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.read_expired(cx) {
                Some(reason) => Poll::Ready(Err(this.timed_out(reason))),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.on_write(cx, res)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.on_write(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.stream).poll_flush(cx);
        this.on_write(cx, res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.on_write(cx, res)
    }
}
