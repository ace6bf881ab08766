//! A broker alone, for trying Kafka clients against the broker crate without building the
//! engine: `cargo run -p eddy-broker --example serve -- 127.0.0.1:9092 /tmp/eddy-data`.
//! A cluster node: add `NODE_ID CONTROLLER_LISTEN VOTERS` (`1 127.0.0.1:9093
//! 1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293`). `eddy broker` is the real command;
//! this is its core without the configuration file.

use std::sync::Arc;

use eddy_broker::cluster::node::{parse_voters, ClusterConfig};
use eddy_broker::{bind, serve, Broker, BrokerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9092".to_string());
    let data_dir = args
        .next()
        .unwrap_or_else(|| "/tmp/eddy-broker-data".to_string());
    let (listener, address) = bind(&listen).await?;
    let mut config = BrokerConfig::new(std::path::Path::new(&data_dir));
    config.advertised_port = address.port() as i32;
    config.group_initial_rebalance_delay = std::time::Duration::ZERO;
    let broker = match (args.next(), args.next(), args.next()) {
        (Some(node_id), Some(controller_listen), Some(voters)) => {
            let node_id: i32 = node_id.parse()?;
            config.node_id = node_id;
            let voters = parse_voters(&voters).map_err(anyhow::Error::msg)?;
            let (controller, _) = bind(&controller_listen).await?;
            Broker::open_cluster(config, ClusterConfig::new(node_id, voters), controller).await?
        }
        _ => Broker::open(config).await?,
    };
    println!("listening on {address}");
    serve(Arc::clone(&broker), listener).await?;
    Ok(())
}
