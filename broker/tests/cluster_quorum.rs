//! The metadata quorum over real sockets and files: election, replication, forwarding,
//! fail-over, restart with replay, and recovery of a damaged log tail.
//!
//! Method: voters on loopback with a fast clock (20 ms ticks), each recording what it applies;
//! every wait is bounded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_broker::cluster::quorum::{ControllerService, Quorum, QuorumConfig, QuorumError};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(20);
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

type Applied = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// Answers a call with who it is and what it got.
struct Echo(u64);

impl ControllerService for Echo {
    fn handle(&self, from: u64, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let text = format!(
            "{} from {from}: {}",
            self.0,
            String::from_utf8_lossy(&request)
        );
        Box::pin(async move { text.into_bytes() })
    }
}

struct Voter {
    quorum: Arc<Quorum>,
    /// What this process lifetime applied, in order.
    applied: Applied,
}

impl Voter {
    fn entries(&self) -> Vec<(u64, Vec<u8>)> {
        self.applied.lock().clone()
    }

    fn payloads(&self) -> Vec<Vec<u8>> {
        self.entries().into_iter().map(|(_, data)| data).collect()
    }
}

fn config(id: u64, voters: &[(u64, String)], data: &Path) -> QuorumConfig {
    let mut config = QuorumConfig::new(id, voters.to_vec(), dir_of(data, id));
    config.tick = Duration::from_millis(20);
    config
}

fn dir_of(data: &Path, id: u64) -> PathBuf {
    data.join(format!("node-{id}")).join("__cluster_metadata-0")
}

async fn start(config: QuorumConfig, listener: TcpListener) -> Voter {
    let applied: Applied = Arc::default();
    let sink = Arc::clone(&applied);
    let apply = Box::new(move |index: u64, data: &[u8]| {
        let mut applied = sink.lock();
        if let Some((last, _)) = applied.last() {
            assert!(index > *last, "applied {index} after {last}");
        }
        applied.push((index, data.to_vec()));
    });
    let id = config.node_id;
    let quorum = Quorum::start(config, listener, apply, Arc::new(Echo(id)))
        .await
        .expect("the voter starts");
    Voter { quorum, applied }
}

/// Binds `address`, retrying while the previous owner's socket is being closed.
async fn bind(address: &str) -> TcpListener {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(e) if Instant::now() < deadline => {
                eprintln!("rebinding {address}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {address}: {e}"),
        }
    }
}

async fn listeners(count: u64) -> (Vec<TcpListener>, Vec<(u64, String)>) {
    let mut listeners = Vec::new();
    let mut voters = Vec::new();
    for id in 1..=count {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        voters.push((id, listener.local_addr().expect("address").to_string()));
        listeners.push(listener);
    }
    (listeners, voters)
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every running voter names the same leader, one of them; returns it.
async fn agreed_leader(voters: &[Option<Voter>]) -> u64 {
    let mut leader = 0;
    eventually("an agreed leader", || {
        let known: Vec<Option<u64>> = voters.iter().flatten().map(|v| v.quorum.leader()).collect();
        let running: Vec<u64> = voters
            .iter()
            .flatten()
            .map(|v| v.quorum.node_id())
            .collect();
        match known[0] {
            Some(l) if known.iter().all(|k| *k == Some(l)) && running.contains(&l) => {
                leader = l;
                true
            }
            _ => false,
        }
    })
    .await;
    leader
}

fn running(voters: &[Option<Voter>], id: u64) -> &Voter {
    voters[id as usize - 1].as_ref().expect("running")
}

async fn propose(voter: &Voter, data: &str) -> u64 {
    voter
        .quorum
        .propose(data.as_bytes().to_vec(), PROPOSE_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("proposing {data:?} on node {}: {e}", voter.quorum.node_id()))
}

/// Waits until every running voter applied exactly `expected`, in order.
async fn all_applied(voters: &[Option<Voter>], expected: &[&str]) {
    let expected: Vec<Vec<u8>> = expected.iter().map(|s| s.as_bytes().to_vec()).collect();
    eventually("every voter to apply the same entries", || {
        voters.iter().flatten().all(|v| v.payloads() == expected)
    })
    .await;
    let indexes: Vec<Vec<u64>> = voters
        .iter()
        .flatten()
        .map(|v| v.entries().iter().map(|(i, _)| *i).collect())
        .collect();
    assert!(
        indexes.windows(2).all(|w| w[0] == w[1]),
        "same indexes everywhere: {indexes:?}"
    );
}

/// Named so that `cargo test -p eddy-broker cluster` runs these.
mod cluster {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_voters_replicate_fail_over_and_a_restarted_voter_catches_up() {
        let data = tempfile::tempdir().expect("temp dir");
        let (listeners, addresses) = listeners(3).await;
        let mut voters = Vec::new();
        for (listener, (id, _)) in listeners.into_iter().zip(&addresses) {
            voters.push(Some(
                start(config(*id, &addresses, data.path()), listener).await,
            ));
        }
        let leader = agreed_leader(&voters).await;
        let follower = addresses
            .iter()
            .map(|(id, _)| *id)
            .find(|id| *id != leader)
            .expect("one");

        let a = propose(running(&voters, follower), "a").await;
        // Committed and applied on the proposer when propose returns.
        assert!(running(&voters, follower)
            .entries()
            .contains(&(a, b"a".to_vec())));
        let b = propose(running(&voters, leader), "b").await;
        assert!(b > a);
        all_applied(&voters, &["a", "b"]).await;

        let answer = running(&voters, follower)
            .quorum
            .call(leader, b"ping".to_vec(), WAIT)
            .await;
        assert_eq!(
            answer.expect("call"),
            format!("{leader} from {follower}: ping").into_bytes()
        );
        let answer = running(&voters, leader)
            .quorum
            .call(leader, b"self".to_vec(), WAIT)
            .await;
        assert_eq!(
            answer.expect("call"),
            format!("{leader} from {leader}: self").into_bytes()
        );

        eventually(
            "every voter to reach every other (refusals at start-up forgotten)",
            || {
                voters.iter().flatten().all(|voter| {
                    addresses
                        .iter()
                        .all(|(id, _)| voter.quorum.peer_refusing_since(*id).is_none())
                })
            },
        )
        .await;

        // Kill the leader: the other two elect a new one and go on.
        let old = voters[leader as usize - 1].take().expect("running");
        old.quorum.shutdown().await;
        let shut = old.quorum.propose(b"late".to_vec(), PROPOSE_TIMEOUT).await;
        assert!(
            matches!(shut, Err(QuorumError::Shutdown { .. })),
            "{shut:?}"
        );
        drop(old);
        // Nothing listens on its controller address any more: the others see it refuse (what
        // lets the controller fence a dead broker without waiting for its session).
        for voter in voters.iter().flatten() {
            eventually("the stopped voter to refuse connections", || {
                voter.quorum.peer_refusing_since(leader).is_some()
            })
            .await;
        }
        let new_leader = agreed_leader(&voters).await;
        assert_ne!(new_leader, leader);
        let survivor = voters.iter().flatten().next().expect("two left");
        propose(survivor, "c").await;
        all_applied(&voters, &["a", "b", "c"]).await;

        // Restart the old leader from its directory: it replays a and b, then catches up.
        let listener = bind(&addresses[leader as usize - 1].1).await;
        let restarted = start(config(leader, &addresses, data.path()), listener).await;
        let replayed = restarted.payloads();
        assert!(
            replayed.starts_with(&[b"a".to_vec()]),
            "replayed at start: {replayed:?}"
        );
        voters[leader as usize - 1] = Some(restarted);
        all_applied(&voters, &["a", "b", "c"]).await;
        for voter in voters.iter().flatten() {
            eventually("the restarted voter to accept connections again", || {
                voter.quorum.peer_refusing_since(leader).is_none()
            })
            .await;
        }
        propose(running(&voters, leader), "d").await;
        all_applied(&voters, &["a", "b", "c", "d"]).await;
        for voter in voters.iter().flatten() {
            voter.quorum.shutdown().await;
        }
    }

    #[tokio::test]
    async fn a_single_voter_commits_alone_and_replays_after_restart() {
        let data = tempfile::tempdir().expect("temp dir");
        let (mut listeners, addresses) = listeners(1).await;
        let voter = start(config(1, &addresses, data.path()), listeners.remove(0)).await;
        let x = propose(&voter, "x").await;
        let y = propose(&voter, "y").await;
        assert_eq!(
            voter.entries(),
            vec![(x, b"x".to_vec()), (y, b"y".to_vec())]
        );
        voter.quorum.shutdown().await;
        drop(voter);

        let listener = bind(&addresses[0].1).await;
        let voter = start(config(1, &addresses, data.path()), listener).await;
        assert_eq!(
            voter.entries(),
            vec![(x, b"x".to_vec()), (y, b"y".to_vec())],
            "replayed"
        );
        let z = propose(&voter, "z").await;
        assert!(z > y);
        assert_eq!(
            voter.payloads(),
            vec![b"x".to_vec(), b"y".to_vec(), b"z".to_vec()]
        );
        voter.quorum.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_log_tail_is_cut_and_the_voter_catches_up() {
        let data = tempfile::tempdir().expect("temp dir");
        let (listeners, addresses) = listeners(3).await;
        let mut voters = Vec::new();
        for (listener, (id, _)) in listeners.into_iter().zip(&addresses) {
            voters.push(Some(
                start(config(*id, &addresses, data.path()), listener).await,
            ));
        }
        let leader = agreed_leader(&voters).await;
        let leader_voter = voters[leader as usize - 1].as_ref().expect("running");
        let mut expected = Vec::new();
        for i in 0..5 {
            expected.push(format!("entry {i}"));
            propose(leader_voter, &expected[i]).await;
        }
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        all_applied(&voters, &expected).await;

        // Damage two followers' logs in the two ways a crash or a bad disk does, one at a time.
        let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
        for (round, follower) in followers.into_iter().enumerate() {
            let stopped = voters[follower as usize - 1].take().expect("running");
            stopped.quorum.shutdown().await;
            drop(stopped);
            let log = dir_of(data.path(), follower).join("log");
            let mut bytes = std::fs::read(&log).expect("read the log");
            if round == 0 {
                bytes.truncate(bytes.len() - 3); // torn: the last record loses its end
            } else {
                let last_bytes = bytes.len() - 1;
                bytes[last_bytes] ^= 0xff; // corrupt: the last record fails its CRC
                bytes.extend_from_slice(b"garbage after the end");
            }
            std::fs::write(&log, &bytes).expect("damage the log");

            let listener = bind(&addresses[follower as usize - 1].1).await;
            let restarted = start(config(follower, &addresses, data.path()), listener).await;
            let replayed = restarted.payloads();
            assert!(
                replayed.len() < expected.len(),
                "the damaged entry is not replayed"
            );
            voters[follower as usize - 1] = Some(restarted);
            all_applied(&voters, &expected).await;
        }
        let leader_voter = voters[leader as usize - 1].as_ref().expect("running");
        let last = propose(leader_voter, "after repair").await;
        assert!(last > 0);
        for voter in voters.iter().flatten() {
            voter.quorum.shutdown().await;
        }
    }
}
