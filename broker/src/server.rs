//! The TCP listener that serves the Kafka protocol.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::broker::Broker;

/// Accepts connections on `listener` and serves each on its own task, until the process ends.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        tracing::debug!(%peer, "connection");
        tokio::spawn(crate::protocol::serve_connection(
            Arc::clone(&broker),
            stream,
        ));
    }
}

/// Binds `address`, returning the listener and the address actually bound (port 0 picks one).
pub async fn bind(address: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
