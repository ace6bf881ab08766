//! Starting the SQL engine and its HTTP API: for `eddy server`, and embedded in the shell.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use eddy_broker::{Broker, BrokerConfig, LogClient};
use eddy_engine::Engine;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The engine over a broker at `bootstrap`, or over a broker embedded in this process with
/// its data in `data_dir` (returned, to be shut down cleanly at the end).
pub(crate) async fn open_engine(
    data_dir: &Path,
    bootstrap: Option<&str>,
) -> anyhow::Result<(Arc<Engine>, Option<Arc<Broker>>)> {
    let (client, broker): (Arc<dyn LogClient>, _) = match bootstrap {
        Some(bootstrap) => {
            let client = eddy_broker::KafkaClient::connect(bootstrap)
                .await
                .with_context(|| format!("connecting to the broker at {bootstrap}"))?;
            (Arc::new(client), None)
        }
        None => {
            let mut config = BrokerConfig::new(data_dir);
            // The engine's own topics: Kafka clients may not write or delete them.
            config.internal_topics.extend([
                eddy_engine::engine::COMMAND_TOPIC.to_string(),
                eddy_engine::runtime::processing_log::TOPIC.to_string(),
            ]);
            let broker = Broker::open(config)
                .await
                .with_context(|| format!("opening data directory {}", data_dir.display()))?;
            let client = eddy_broker::InProcessClient::new(Arc::clone(&broker));
            (Arc::new(client), Some(broker))
        }
    };
    let engine = Engine::open(client)
        .await
        .context("replaying the command topic")?;
    Ok((Arc::new(engine), broker))
}

/// Syncs and closes an embedded broker's partitions.
pub(crate) async fn shutdown_broker(broker: Option<Arc<Broker>>) -> anyhow::Result<()> {
    if let Some(broker) = broker {
        tracing::info!("shutting down: syncing partitions");
        broker.shutdown().await.context("clean shutdown")?;
    }
    Ok(())
}

/// A server inside the shell's process, on a free loopback port.
pub(crate) struct Embedded {
    address: SocketAddr,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<std::io::Result<()>>,
    broker: Option<Arc<Broker>>,
}

impl Embedded {
    pub(crate) async fn start(data_dir: &Path) -> anyhow::Result<Embedded> {
        let (engine, broker) = open_engine(data_dir, None).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a loopback port")?;
        let address = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(eddy_rest::serve(
            listener,
            engine,
            Default::default(),
            async {
                let _ = stopped.await;
            },
        ));
        tracing::info!(%address, "embedded server started");
        Ok(Embedded {
            address,
            stop,
            serving,
            broker,
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops serving, then closes the broker cleanly.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        // Push queries still open in the shell end with their connections.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.serving).await;
        shutdown_broker(self.broker).await
    }
}
