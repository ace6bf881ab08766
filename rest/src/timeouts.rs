//! Slow clients: no connection may hold the server's resources forever by sending slowly.
//!
//! - [`serve_connections`] is the server loop. A new connection must send its first bytes
//!   (enough to tell HTTP/1 from HTTP/2's preface) within the header read timeout; on HTTP/1,
//!   hyper then closes a connection whose request line and headers are not in within the same
//!   timeout (which also bounds an idle keep-alive connection).
//! - [`read_body`] reads a request body before its handler runs: it must arrive within the body
//!   read timeout, and hold at most [`BODY_BYTES_MAX`]. `/inserts-stream`'s body is a stream of
//!   rows, so there the timeout bounds the pause between two pieces instead of the whole.
//!
//! Responses are not bounded here: push queries stream for as long as their client reads
//! (query.rs cuts a client that stops reading).

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use axum::Router;
use bytes::BytesMut;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tower_service::Service;

use crate::errors::ApiError;
use crate::limits::BODY_BYTES_MAX;
use crate::server::AppState;

/// What an HTTP/2 connection opens with; anything else is HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `router` on every connection `listener` accepts until `shutdown` resolves; then
/// stops accepting, asks open connections to finish their requests, and waits for them.
pub(crate) async fn serve_connections<L: Listener>(
    mut listener: L,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // Connection tasks wait on `stop.closed()`; each holds a `done` receiver until it ends.
    let (stop, stop_receiver) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(stop_receiver);
    });
    let (done, done_receiver) = watch::channel(());
    loop {
        let (io, _peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.closed() => break,
        };
        let (router, stop, done_receiver) = (router.clone(), stop.clone(), done_receiver.clone());
        tokio::spawn(async move {
            serve_connection(io, router, header_read_timeout, &stop).await;
            drop(done_receiver);
        });
    }
    drop(done_receiver);
    drop(listener);
    done.closed().await;
    Ok(())
}

/// Serves one connection: HTTP/1.1 or HTTP/2 (by its first bytes), with upgrades for
/// WebSockets, until it closes, or until `stop` closes and its open requests are answered.
async fn serve_connection<I>(
    mut io: I,
    router: Router,
    header_read_timeout: Duration,
    stop: &watch::Sender<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let first = tokio::select! {
        first = tokio::time::timeout(header_read_timeout, read_preface(&mut io)) => first,
        _ = stop.closed() => return,
    };
    let first = match first {
        Ok(Ok(first)) if !first.is_empty() => first,
        Ok(Ok(_)) => return,
        Ok(Err(e)) => return tracing::debug!(error = %e, "reading a new connection"),
        Err(_) => return tracing::info!("a connection sent no request in time: closed"),
    };
    let io = TokioIo::new(Prefixed {
        prefix: Bytes::from(first),
        io,
    });
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut router = router.clone();
        async move { router.call(request.map(Body::new)).await }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    // WebSockets over HTTP/2 use the extended CONNECT method.
    builder.http2().enable_connect_protocol();
    let mut connection = pin!(builder.serve_connection_with_upgrades(io, service));
    let mut stopped = pin!(stop.closed());
    let mut stopping = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended");
                }
                return;
            }
            _ = &mut stopped, if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Reads a connection's first bytes: HTTP/2's whole preface, or up to the first byte that
/// differs from it (then it is HTTP/1). Empty when the client closed without a byte.
async fn read_preface<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<Vec<u8>> {
    let mut first = Vec::with_capacity(H2_PREFACE.len());
    let mut buffer = [0u8; H2_PREFACE.len()];
    while first.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&first) {
        let read = io
            .read(&mut buffer[..H2_PREFACE.len() - first.len()])
            .await?;
        if read == 0 {
            break;
        }
        first.extend_from_slice(&buffer[..read]);
    }
    Ok(first)
}

/// A connection whose first bytes were read already: they are read again first.
struct Prefixed<I> {
    prefix: Bytes,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let length = self.prefix.len().min(buf.remaining());
        let piece = self.prefix.split_to(length);
        buf.put_slice(&piece);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Reads the request body within the body read timeout and [`BODY_BYTES_MAX`] before the
/// handler runs; a late body is answered 408 and a large one 413, each closing the connection.
pub(crate) async fn read_body(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let pacing = match request.uri().path() {
        "/inserts-stream" => Pacing::BetweenPieces,
        _ => Pacing::Whole,
    };
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let read = match declared {
        Some(length) if length > BODY_BYTES_MAX as u64 => Err(too_large()),
        _ => read_within(body, app.body_read_timeout, pacing).await,
    };
    match read {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(error) => {
            let mut response = error.into_response();
            // The rest of the body may still be on its way: do not read it as a next request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// What the body read timeout bounds.
#[derive(Clone, Copy, PartialEq)]
enum Pacing {
    /// The whole body.
    Whole,
    /// Each pause between two pieces of the body (a stream of rows).
    BetweenPieces,
}

async fn read_within(body: Body, timeout: Duration, pacing: Pacing) -> Result<Bytes, ApiError> {
    let mut pieces = body.into_data_stream();
    let mut deadline = Instant::now() + timeout;
    let mut read = BytesMut::new();
    loop {
        let piece = tokio::time::timeout_at(deadline, pieces.next())
            .await
            .map_err(|_| too_slow(timeout, pacing))?;
        match piece {
            None => return Ok(read.freeze()),
            Some(Err(e)) => {
                return Err(ApiError::bad_request(format!(
                    "reading the request body failed: {e}"
                )))
            }
            Some(Ok(piece)) => {
                if read.len() + piece.len() > BODY_BYTES_MAX {
                    return Err(too_large());
                }
                read.extend_from_slice(&piece);
                if pacing == Pacing::BetweenPieces {
                    deadline = Instant::now() + timeout;
                }
            }
        }
    }
}

fn too_slow(timeout: Duration, pacing: Pacing) -> ApiError {
    let what = match pacing {
        Pacing::Whole => "the request body did not arrive",
        Pacing::BetweenPieces => "the request body paused for longer than",
    };
    let within = match pacing {
        Pacing::Whole => " within",
        Pacing::BetweenPieces => "",
    };
    ApiError::request_timeout(format!(
        "{what}{within} {} ms (limit http.body.read.timeout.ms)",
        timeout.as_millis()
    ))
}

fn too_large() -> ApiError {
    ApiError::too_large(format!(
        "the request body is larger than {BODY_BYTES_MAX} bytes: send statements or rows in \
         several requests"
    ))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// What is read to tell HTTP/1 from HTTP/2 is read again by hyper, byte for byte.
    #[tokio::test]
    async fn the_bytes_read_to_tell_the_protocol_are_read_again() {
        for sent in [&b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n"[..], H2_PREFACE] {
            let (mut client, mut server) = tokio::io::duplex(256);
            client.write_all(sent).await.unwrap();
            client.write_all(b"and more").await.unwrap();
            drop(client);
            let first = read_preface(&mut server).await.unwrap();
            assert!(!first.is_empty() && first.len() <= H2_PREFACE.len());
            let mut prefixed = Prefixed {
                prefix: Bytes::from(first),
                io: server,
            };
            let mut read = Vec::new();
            prefixed.read_to_end(&mut read).await.unwrap();
            assert_eq!(read, [sent, &b"and more"[..]].concat());
        }
    }

    /// A connection that closes before sending a byte reads as empty (and is dropped).
    #[tokio::test]
    async fn a_connection_closed_at_once_sends_nothing() {
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        assert!(read_preface(&mut server).await.unwrap().is_empty());
    }
}
