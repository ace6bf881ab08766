//! What the engine's integration tests share.

use std::sync::Arc;

use eddy_broker::{Broker, BrokerConfig, InProcessClient};
use eddy_engine::Engine;

/// An engine on a fresh in-process broker; the folder lives as long as the returned guard.
pub(crate) async fn engine() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::open(BrokerConfig::new(dir.path()))
        .await
        .expect("broker");
    (dir, Engine::new(Arc::new(InProcessClient::new(broker))))
}
