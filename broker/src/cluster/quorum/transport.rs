//! TCP between voters, on each voter's controller listener.
//!
//! Each node keeps one outgoing connection per peer, opened (and reopened, with backoff) by a
//! task that owns the peer's bounded send queue. It opens with a `Hello` naming the sender, then
//! carries the sender's raft messages, forwarded proposals and service calls; the answers to the
//! last two come back on the same connection. So a pair of voters talks over two connections,
//! one each way.
//!
//! A frame is `[u32 length][u8 kind][body]`, big-endian, `length` counting kind and body and at
//! most [`FRAME_BYTES_MAX`](super::FRAME_BYTES_MAX). Bodies:
//! ```text
//! 1 hello           node id u64
//! 2 raft            a raft-rs Message, protobuf
//! 3 forward         request u64, proposal id (24 bytes), timeout ms u32, entry bytes
//! 4 forward answer  request u64, status u8 (0 committed, 1 not leader, 2 lost, 3 too many,
//!                   4 expired), index u64
//! 5 call            request u64, request bytes
//! 6 call answer     request u64, answer bytes
//! ```
//! Bad input (a frame too long, an unknown kind, a short body, a raft message that does not
//! decode or is not from the peer that said hello) closes that connection and is logged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raft::eraftpb::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::AbortHandle;

use super::core::{decode_message, encode_message, ProposalId};
use super::driver::Event;
use super::{
    ControllerService, QuorumError, CALLS_IN_FLIGHT_MAX, CALLS_PER_CONNECTION_MAX, FRAME_BYTES_MAX,
    INBOUND_CONNECTIONS_MAX, PEER_QUEUE_FRAMES_MAX,
};

const KIND_HELLO: u8 = 1;
const KIND_RAFT: u8 = 2;
const KIND_FORWARD: u8 = 3;
const KIND_FORWARD_ANSWER: u8 = 4;
const KIND_CALL: u8 = 5;
const KIND_CALL_ANSWER: u8 = 6;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Answers one inbound connection may have queued before its reader waits.
const ANSWER_QUEUE_FRAMES_MAX: usize = 256;

/// The outcome of a forwarded proposal, as the leader answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ForwardResult {
    Committed(u64),
    NotLeader,
    Lost(u64),
    TooMany,
    Expired,
}

/// A decoded frame.
#[derive(Debug)]
pub(crate) enum Frame {
    Hello(u64),
    Raft(Box<Message>),
    Forward {
        request: u64,
        proposal: ProposalId,
        timeout_ms: u32,
        data: Vec<u8>,
    },
    ForwardAnswer {
        request: u64,
        result: ForwardResult,
    },
    Call {
        request: u64,
        payload: Vec<u8>,
    },
    CallAnswer {
        request: u64,
        payload: Vec<u8>,
    },
}

impl Frame {
    /// The frame with its length prefix, ready to write.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; 4];
        match self {
            Frame::Hello(node) => {
                out.push(KIND_HELLO);
                out.extend_from_slice(&node.to_be_bytes());
            }
            Frame::Raft(message) => {
                out.push(KIND_RAFT);
                out.extend_from_slice(&encode_message(message));
            }
            Frame::Forward {
                request,
                proposal,
                timeout_ms,
                data,
            } => {
                out.push(KIND_FORWARD);
                out.extend_from_slice(&request.to_be_bytes());
                out.extend_from_slice(&proposal.encode());
                out.extend_from_slice(&timeout_ms.to_be_bytes());
                out.extend_from_slice(data);
            }
            Frame::ForwardAnswer { request, result } => {
                let (status, index) = match *result {
                    ForwardResult::Committed(index) => (0u8, index),
                    ForwardResult::NotLeader => (1, 0),
                    ForwardResult::Lost(index) => (2, index),
                    ForwardResult::TooMany => (3, 0),
                    ForwardResult::Expired => (4, 0),
                };
                out.push(KIND_FORWARD_ANSWER);
                out.extend_from_slice(&request.to_be_bytes());
                out.push(status);
                out.extend_from_slice(&index.to_be_bytes());
            }
            Frame::Call { request, payload } | Frame::CallAnswer { request, payload } => {
                let kind = if matches!(self, Frame::Call { .. }) {
                    KIND_CALL
                } else {
                    KIND_CALL_ANSWER
                };
                out.push(kind);
                out.extend_from_slice(&request.to_be_bytes());
                out.extend_from_slice(payload);
            }
        }
        let length = out.len() - 4;
        assert!(length <= FRAME_BYTES_MAX, "frames we build are bounded");
        out[..4].copy_from_slice(&(length as u32).to_be_bytes());
        out
    }

    /// Decodes a frame's kind and body (after its length).
    pub(crate) fn decode(kind: u8, body: &[u8]) -> Result<Frame, String> {
        let mut reader = Body(body);
        let frame = match kind {
            KIND_HELLO => Frame::Hello(reader.u64()?),
            KIND_RAFT => Frame::Raft(Box::new(
                decode_message(body).map_err(|e| format!("bad raft message: {e}"))?,
            )),
            KIND_FORWARD => Frame::Forward {
                request: reader.u64()?,
                proposal: ProposalId::decode(reader.take(ProposalId::BYTES)?)
                    .expect("24 bytes decode"),
                timeout_ms: reader.u32()?,
                data: reader.rest().to_vec(),
            },
            KIND_FORWARD_ANSWER => {
                let request = reader.u64()?;
                let status = reader.take(1)?[0];
                let index = reader.u64()?;
                let result = match status {
                    0 => ForwardResult::Committed(index),
                    1 => ForwardResult::NotLeader,
                    2 => ForwardResult::Lost(index),
                    3 => ForwardResult::TooMany,
                    4 => ForwardResult::Expired,
                    other => return Err(format!("unknown forward status {other}")),
                };
                Frame::ForwardAnswer { request, result }
            }
            KIND_CALL => Frame::Call {
                request: reader.u64()?,
                payload: reader.rest().to_vec(),
            },
            KIND_CALL_ANSWER => Frame::CallAnswer {
                request: reader.u64()?,
                payload: reader.rest().to_vec(),
            },
            other => return Err(format!("unknown frame kind {other}")),
        };
        Ok(frame)
    }
}

struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "frame body too short ({} bytes left, {n} needed)",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
async fn read_frame(reader: &mut (impl AsyncReadExt + Unpin)) -> Result<Option<Frame>, String> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length == 0 || length > FRAME_BYTES_MAX {
        return Err(format!(
            "frame length {length} outside 1..={FRAME_BYTES_MAX}"
        ));
    }
    let mut body = vec![0u8; length];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Frame::decode(body[0], &body[1..]).map(Some)
}

/// A call awaiting its answer: the peer asked, and where the answer goes.
type CallWaiter = (u64, oneshot::Sender<Vec<u8>>);

/// What the connection tasks share.
pub(crate) struct Transport {
    node_id: u64,
    peers: HashMap<u64, mpsc::Sender<Vec<u8>>>,
    events: mpsc::Sender<Event>,
    service: Arc<dyn ControllerService>,
    /// Calls awaiting an answer: request id to (peer, where the answer goes).
    calls: Mutex<HashMap<u64, CallWaiter>>,
    next_request: AtomicU64,
    tasks: Mutex<Vec<AbortHandle>>,
    /// The peers whose controller listener refuses connections, since when.
    refusing: Mutex<HashMap<u64, Instant>>,
}

impl Transport {
    /// Starts the peer connections and the accept loop on `listener`.
    pub(crate) fn start(
        node_id: u64,
        voters: &[(u64, String)],
        listener: TcpListener,
        events: mpsc::Sender<Event>,
        service: Arc<dyn ControllerService>,
    ) -> Arc<Transport> {
        let mut peers = HashMap::new();
        let mut queues = Vec::new();
        for (id, address) in voters.iter().filter(|(id, _)| *id != node_id) {
            let (tx, rx) = mpsc::channel(PEER_QUEUE_FRAMES_MAX);
            peers.insert(*id, tx);
            queues.push((*id, address.clone(), rx));
        }
        let transport = Arc::new(Transport {
            node_id,
            peers,
            events,
            service,
            calls: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            tasks: Mutex::new(Vec::new()),
            refusing: Mutex::new(HashMap::new()),
        });
        for (peer, address, queue) in queues {
            let task = Arc::clone(&transport).run_peer(peer, address, queue);
            transport.spawn(task);
        }
        transport.spawn(Arc::clone(&transport).accept(listener));
        transport
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task).abort_handle();
        let mut tasks = self.tasks.lock();
        if tasks.len() >= 64 {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(handle);
    }

    /// Ends every connection task (the driver is stopped separately).
    pub(crate) fn shutdown(&self) {
        for task in std::mem::take(&mut *self.tasks.lock()) {
            task.abort();
        }
        self.calls.lock().clear();
    }

    /// Since when `peer`'s controller listener has refused connections, if it does: nothing
    /// listens on its address, so its process is not running (a stopped or partitioned one
    /// still accepts, or lets the connect time out).
    pub(crate) fn refusing_since(&self, peer: u64) -> Option<Instant> {
        self.refusing.lock().get(&peer).copied()
    }

    /// Queues a raft message; drops it when the peer's queue is full (raft sends again).
    pub(crate) fn send_raft(&self, message: Message) {
        let Some(queue) = self.peers.get(&message.to) else {
            tracing::warn!(
                node = self.node_id,
                to = message.to,
                "raft message to a non-voter"
            );
            return;
        };
        let frame = Frame::Raft(Box::new(message)).encode();
        if queue.try_send(frame).is_err() {
            tracing::debug!(
                node = self.node_id,
                "peer queue full: dropped a raft message"
            );
        }
    }

    /// Queues a frame other than a raft message for `peer`; errors when it cannot be queued.
    pub(crate) fn send(&self, peer: u64, frame: &Frame) -> Result<(), QuorumError> {
        let queue = self.peers.get(&peer).ok_or(QuorumError::UnknownNode {
            node: self.node_id,
            peer,
        })?;
        queue
            .try_send(frame.encode())
            .map_err(|_| QuorumError::Unreachable {
                node: self.node_id,
                peer,
                reason: "its send queue is full (not connected?)",
            })
    }

    /// Sends a service call to `peer` and awaits its answer.
    pub(crate) async fn call(
        &self,
        peer: u64,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, QuorumError> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answer_tx, answer_rx) = oneshot::channel();
        {
            let mut calls = self.calls.lock();
            if calls.len() >= CALLS_IN_FLIGHT_MAX {
                return Err(QuorumError::Unreachable {
                    node: self.node_id,
                    peer,
                    reason: "too many calls in flight",
                });
            }
            calls.insert(request, (peer, answer_tx));
        }
        let started = Instant::now();
        let sent = self.send(peer, &Frame::Call { request, payload });
        let result = match sent {
            Err(e) => Err(e),
            Ok(()) => match tokio::time::timeout(timeout, answer_rx).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err(QuorumError::Unreachable {
                    node: self.node_id,
                    peer,
                    reason: "the connection closed before the answer",
                }),
                Err(_) => Err(QuorumError::Timeout {
                    node: self.node_id,
                    waited_ms: started.elapsed().as_millis() as u64,
                }),
            },
        };
        self.calls.lock().remove(&request);
        result
    }

    /// Keeps a connection to `peer` open and writes its queue into it.
    async fn run_peer(
        self: Arc<Self>,
        peer: u64,
        address: String,
        mut queue: mpsc::Receiver<Vec<u8>>,
    ) {
        let mut backoff = RECONNECT_BACKOFF_MIN;
        loop {
            let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(node = self.node_id, peer, %address, error = %e, "connect failed");
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        self.refusing
                            .lock()
                            .entry(peer)
                            .or_insert_with(Instant::now);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                    continue;
                }
                Err(_) => {
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                    continue;
                }
            };
            backoff = RECONNECT_BACKOFF_MIN;
            self.refusing.lock().remove(&peer);
            let _ = stream.set_nodelay(true);
            let (read_half, write_half) = stream.into_split();
            let mut reader = tokio::spawn(Arc::clone(&self).read_answers(peer, read_half));
            let ended = tokio::select! {
                written = write_queue(write_half, self.node_id, &mut queue) => written,
                _ = &mut reader => Err("the peer closed the connection".to_string()),
            };
            reader.abort();
            self.calls.lock().retain(|_, (to, _)| *to != peer);
            match ended {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(node = self.node_id, peer, error = %e, "connection lost");
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// Reads answers on an outgoing connection.
    async fn read_answers(
        self: Arc<Self>,
        peer: u64,
        mut read_half: tokio::net::tcp::OwnedReadHalf,
    ) {
        loop {
            let frame = match read_frame(&mut read_half).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(node = self.node_id, peer, error = %e, "bad frame: closing");
                    return;
                }
            };
            match frame {
                Frame::ForwardAnswer { request, result } => {
                    let event = Event::ForwardAnswer {
                        from: peer,
                        request,
                        result,
                    };
                    if self.events.send(event).await.is_err() {
                        return;
                    }
                }
                Frame::CallAnswer { request, payload } => {
                    let mut calls = self.calls.lock();
                    if calls.get(&request).is_some_and(|(to, _)| *to == peer) {
                        let (_, answer) = calls.remove(&request).expect("present");
                        let _ = answer.send(payload);
                    }
                }
                other => {
                    tracing::warn!(node = self.node_id, peer, frame = ?kind_name(&other), "unexpected frame: closing");
                    return;
                }
            }
        }
    }

    async fn accept(self: Arc<Self>, listener: TcpListener) {
        let connections = Arc::new(Semaphore::new(INBOUND_CONNECTIONS_MAX));
        loop {
            let (stream, address) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(node = self.node_id, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                tracing::warn!(node = self.node_id, %address, "too many controller connections");
                continue;
            };
            let transport = Arc::clone(&self);
            self.spawn(async move {
                if let Err(e) = Arc::clone(&transport).serve(stream).await {
                    tracing::warn!(node = transport.node_id, %address, error = %e, "controller connection closed");
                }
                drop(permit);
            });
        }
    }

    /// Serves one inbound connection: a hello, then raft messages, forwarded proposals, calls.
    async fn serve(self: Arc<Self>, stream: TcpStream) -> Result<(), String> {
        let _ = stream.set_nodelay(true);
        let (mut read_half, write_half) = stream.into_split();
        let hello = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut read_half)).await;
        let peer = match hello {
            Ok(Ok(Some(Frame::Hello(peer)))) if self.peers.contains_key(&peer) => peer,
            Ok(Ok(Some(Frame::Hello(peer)))) => return Err(format!("hello from non-voter {peer}")),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(other))) => {
                return Err(format!("expected hello, got {:?}", kind_name(&other)))
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("no hello in time".into()),
        };
        self.events
            .send(Event::PeerConnected(peer))
            .await
            .map_err(|_| "driver stopped")?;
        let (answers_tx, mut answers_rx) = mpsc::channel::<Vec<u8>>(ANSWER_QUEUE_FRAMES_MAX);
        let writer = tokio::spawn(async move {
            let mut writer = BufWriter::new(write_half);
            while let Some(frame) = answers_rx.recv().await {
                writer.write_all(&frame).await?;
                if answers_rx.is_empty() {
                    writer.flush().await?;
                }
            }
            Ok::<(), std::io::Error>(())
        });
        let result = self.serve_frames(peer, &mut read_half, answers_tx).await;
        writer.abort();
        result
    }

    async fn serve_frames(
        &self,
        peer: u64,
        read_half: &mut tokio::net::tcp::OwnedReadHalf,
        answers: mpsc::Sender<Vec<u8>>,
    ) -> Result<(), String> {
        let calls = Arc::new(Semaphore::new(CALLS_PER_CONNECTION_MAX));
        loop {
            let Some(frame) = read_frame(read_half).await? else {
                return Ok(());
            };
            match frame {
                Frame::Raft(message) => {
                    if message.to != self.node_id || message.from != peer {
                        return Err(format!(
                            "raft message from {} to {} on node {peer}'s connection",
                            message.from, message.to
                        ));
                    }
                    // A full driver queue drops the message: raft sends again.
                    let _ = self.events.try_send(Event::Raft(message));
                }
                Frame::Forward {
                    request,
                    proposal,
                    timeout_ms,
                    data,
                } => {
                    if data.len() > super::ENTRY_BYTES_MAX {
                        return Err(format!("forwarded entry of {} bytes", data.len()));
                    }
                    let event = Event::Forwarded {
                        from: peer,
                        request,
                        proposal,
                        data,
                        deadline: Instant::now() + Duration::from_millis(timeout_ms.into()),
                        answers: answers.clone(),
                    };
                    self.events
                        .send(event)
                        .await
                        .map_err(|_| "driver stopped")?;
                }
                Frame::Call { request, payload } => {
                    let permit = Arc::clone(&calls)
                        .acquire_owned()
                        .await
                        .expect("never closed");
                    let answer = self.service.handle(peer, payload);
                    let answers = answers.clone();
                    self.spawn(async move {
                        let payload = answer.await;
                        let _ = answers
                            .send(Frame::CallAnswer { request, payload }.encode())
                            .await;
                        drop(permit);
                    });
                }
                other => return Err(format!("unexpected {:?} frame", kind_name(&other))),
            }
        }
    }
}

/// Writes a hello, then the queue, until the queue closes (`Ok`) or a write fails.
async fn write_queue(
    write_half: tokio::net::tcp::OwnedWriteHalf,
    node_id: u64,
    queue: &mut mpsc::Receiver<Vec<u8>>,
) -> Result<(), String> {
    let mut writer = BufWriter::new(write_half);
    let io = |e: std::io::Error| e.to_string();
    writer
        .write_all(&Frame::Hello(node_id).encode())
        .await
        .map_err(io)?;
    writer.flush().await.map_err(io)?;
    while let Some(frame) = queue.recv().await {
        writer.write_all(&frame).await.map_err(io)?;
        if queue.is_empty() {
            writer.flush().await.map_err(io)?;
        }
    }
    Ok(())
}

fn kind_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello(_) => "hello",
        Frame::Raft(_) => "raft",
        Frame::Forward { .. } => "forward",
        Frame::ForwardAnswer { .. } => "forward answer",
        Frame::Call { .. } => "call",
        Frame::CallAnswer { .. } => "call answer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_bodies_are_errors() {
        let proposal = ProposalId {
            node: 2,
            incarnation: 9,
            sequence: 4,
        };
        let frame = Frame::Forward {
            request: 7,
            proposal,
            timeout_ms: 500,
            data: b"entry".to_vec(),
        };
        let bytes = frame.encode();
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len() - 4
        );
        match Frame::decode(bytes[4], &bytes[5..]).expect("decodes") {
            Frame::Forward {
                request,
                proposal: p,
                timeout_ms,
                data,
            } => {
                assert_eq!(
                    (request, p, timeout_ms, data),
                    (7, proposal, 500, b"entry".to_vec())
                );
            }
            other => panic!("decoded {other:?}"),
        }
        let answer = Frame::ForwardAnswer {
            request: 3,
            result: ForwardResult::Lost(12),
        }
        .encode();
        assert!(matches!(
            Frame::decode(answer[4], &answer[5..]),
            Ok(Frame::ForwardAnswer {
                request: 3,
                result: ForwardResult::Lost(12)
            })
        ));
        assert!(Frame::decode(KIND_FORWARD, &bytes[5..20]).is_err());
        assert!(Frame::decode(KIND_RAFT, b"\xff\xff\xff").is_err());
        assert!(Frame::decode(99, b"").is_err());
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_allocating() {
        let mut input: &[u8] = &(u32::MAX).to_be_bytes();
        let error = read_frame(&mut input).await.expect_err("too long");
        assert!(error.contains("outside"), "{error}");
    }
}
