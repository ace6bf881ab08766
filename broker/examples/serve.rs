//! A broker alone, for trying Kafka clients against the broker crate without building the
//! engine: `cargo run -p eddy-broker --example serve -- 127.0.0.1:9092 /tmp/eddy-data`.
//! `eddy broker` is the real command; this is its core without the configuration file.

use std::sync::Arc;

use eddy_broker::{bind, serve, Broker, BrokerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9092".to_string());
    let data_dir = args
        .next()
        .unwrap_or_else(|| "/tmp/eddy-broker-data".to_string());
    let (listener, address) = bind(&listen).await?;
    let mut config = BrokerConfig::new(std::path::Path::new(&data_dir));
    config.advertised_port = address.port() as i32;
    config.group_initial_rebalance_delay = std::time::Duration::ZERO;
    let broker = Broker::open(config).await?;
    println!("listening on {address}");
    serve(Arc::clone(&broker), listener).await?;
    Ok(())
}
