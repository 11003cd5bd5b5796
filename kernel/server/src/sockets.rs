//! The kernel's ZeroMQ sockets: binding them, frames in and out through the wire crate, the
//! one task that writes iopub, and the busy/idle status around every request.

use bytes::Bytes;
use rust_async_wire::jupyter_protocol::{ExecutionState, JupyterMessageContent, Status};
use rust_async_wire::{content, decode, encode, Message, Signer};
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use zeromq::{Socket, SocketSend, ZmqMessage};

/// What the iopub task is asked to do, in order.
pub(crate) enum IopubItem {
    Message(Message),
    /// Answer once every message queued before this one was handed to the socket.
    Flushed(oneshot::Sender<()>),
}

/// What the kernel's tasks share.
pub(crate) struct Shared {
    pub signer: Signer,
    pub session: String,
    iopub: mpsc::UnboundedSender<IopubItem>,
    /// An interrupt ends a wait for the front end's answer to an `input_request`: the read in
    /// the cell then fails at once, so the cell ends without the process being restarted.
    pub input_cancel: tokio::sync::Notify,
}

impl Shared {
    /// `iopub`: the queue that [`publish_iopub`] empties.
    pub fn new(signer: Signer, iopub: mpsc::UnboundedSender<IopubItem>) -> Shared {
        Shared { signer, session: uuid::Uuid::new_v4().to_string(), iopub, input_cancel: tokio::sync::Notify::new() }
    }

    /// Publishes `content` on iopub, caused by `parent` (none: `status: starting`).
    pub fn publish(&self, parent: Option<&Message>, content: impl Into<JupyterMessageContent>) {
        let _ = self.iopub.send(IopubItem::Message(Message::broadcast(parent, content, &self.session)));
    }

    pub fn status(&self, parent: Option<&Message>, state: ExecutionState) {
        self.publish(parent, Status { execution_state: state });
    }

    /// Runs `work` for `request` between a `busy` and an `idle` status, as the protocol asks
    /// of every request.
    pub async fn while_busy<T>(&self, request: &Message, work: impl Future<Output = T>) -> T {
        self.status(Some(request), ExecutionState::Busy);
        let done = work.await;
        self.status(Some(request), ExecutionState::Idle);
        done
    }

    /// Waits until everything published so far was handed to the iopub socket (at most
    /// `patience`): before the process exits, so that the last `idle` is not lost.
    pub async fn flushed(&self, patience: Duration) {
        let (done, flushed) = oneshot::channel();
        if self.iopub.send(IopubItem::Flushed(done)).is_ok() {
            let _ = tokio::time::timeout(patience, flushed).await;
        }
    }
}

/// Binds, waiting a little while the port is still in use: on a restart, Jupyter starts the new
/// kernel on the same ports, and a kernel served by a spare process may take a moment to let
/// them go after its launcher was killed.
pub(crate) async fn bind_retrying(socket: &mut impl Socket, endpoint: &str) -> Result<(), zeromq::ZmqError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match socket.bind(endpoint).await {
            Ok(_) => return Ok(()),
            Err(zeromq::ZmqError::Network(error))
                if error.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The only writer of the PUB socket.
pub(crate) async fn publish_iopub(mut socket: zeromq::PubSocket, mut queue: mpsc::UnboundedReceiver<IopubItem>, signer: Signer) {
    while let Some(item) = queue.recv().await {
        match item {
            IopubItem::Message(message) => {
                if let Some(frames) = to_zmq(&message, &signer) {
                    let _ = socket.send(frames).await;
                }
            }
            IopubItem::Flushed(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn to_zmq(message: &Message, signer: &Signer) -> Option<ZmqMessage> {
    let frames: Vec<Bytes> = encode(message, signer).ok()?;
    ZmqMessage::try_from(frames).ok()
}

/// Decodes a request; a bad signature or malformed message is logged and dropped, never acted on.
pub(crate) fn from_zmq(frames: ZmqMessage, signer: &Signer, channel: &str) -> Option<Message> {
    match decode(frames.into_vec(), signer) {
        Ok(message) => Some(message),
        Err(error) => {
            eprintln!("rust-async: ignored a message on {channel}: {error}");
            None
        }
    }
}

/// Sends `content` on `socket` to the sender of `parent`.
pub(crate) async fn reply(
    socket: &mut zeromq::RouterSocket,
    shared: &Shared,
    parent: &Message,
    content: impl Into<JupyterMessageContent>,
) {
    let message = Message::reply_to(parent, content, &shared.session);
    if let Some(frames) = to_zmq(&message, &shared.signer) {
        let _ = socket.send(frames).await;
    }
}

/// The reply to a request type this kernel does not handle: the one content sent raw (no
/// typed reply exists for a type nobody defined).
pub(crate) fn unsupported(request: &JupyterMessageContent) -> JupyterMessageContent {
    let msg_type = request.message_type();
    let message = format!("{msg_type} is not supported");
    content::raw(
        content::reply_type_for(msg_type),
        serde_json::json!({ "status": "error", "ename": "UnsupportedRequest", "evalue": message, "traceback": [] }),
    )
}
