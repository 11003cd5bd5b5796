//! The control channel (never queued behind a cell: kernel_info, interrupt, shutdown) and the
//! stdin channel (a cell asking the front end for a line).

use crate::replies;
use crate::sockets::{from_zmq, reply, unsupported, Shared};
use rust_async_engine::Interrupter;
use rust_async_wire::jupyter_protocol::{InputRequest, InterruptReply, JupyterMessageContent, ShutdownReply};
use rust_async_wire::Message;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};
use zeromq::SocketRecv;

/// Serves control until a shutdown request, which it answers and passes on through `shutdown`
/// (whether a restart follows).
pub(crate) async fn serve_control(
    mut socket: zeromq::RouterSocket,
    shared: Arc<Shared>,
    interrupter: Arc<Mutex<Option<Interrupter>>>,
    shutdown: mpsc::UnboundedSender<bool>,
) {
    while let Ok(frames) = socket.recv().await {
        let Some(request) = from_zmq(frames, &shared.signer, "control") else { continue };
        let shut_down = shared
            .while_busy(&request, async {
                match &request.content {
                    JupyterMessageContent::KernelInfoRequest(_) => {
                        reply(&mut socket, &shared, &request, replies::kernel_info()).await;
                        None
                    }
                    JupyterMessageContent::InterruptRequest(_) => {
                        shared.input_cancel.notify_waiters();
                        if let Some(interrupter) = interrupter.lock().await.as_ref() {
                            interrupter.interrupt();
                        }
                        reply(&mut socket, &shared, &request, InterruptReply::new()).await;
                        None
                    }
                    JupyterMessageContent::ShutdownRequest(shutdown_request) => {
                        let restart = shutdown_request.restart;
                        reply(&mut socket, &shared, &request, ShutdownReply { restart, ..ShutdownReply::default() }).await;
                        Some(restart)
                    }
                    other => {
                        reply(&mut socket, &shared, &request, unsupported(other)).await;
                        None
                    }
                }
            })
            .await;
        if let Some(restart) = shut_down {
            let _ = shutdown.send(restart);
        }
    }
}

/// A cell's request for a line of stdin, and where its answer goes (`None`: no line, because
/// the read was interrupted).
pub(crate) struct StdinRequest {
    pub parent: Message,
    pub prompt: String,
    pub answer: oneshot::Sender<Option<String>>,
}

pub(crate) async fn serve_stdin(mut socket: zeromq::RouterSocket, mut requests: mpsc::UnboundedReceiver<StdinRequest>, shared: Arc<Shared>) {
    while let Some(request) = requests.recv().await {
        let cancelled = shared.input_cancel.notified();
        tokio::pin!(cancelled);
        cancelled.as_mut().enable();
        reply(&mut socket, &shared, &request.parent, InputRequest { prompt: request.prompt, password: false }).await;
        let value = loop {
            let frames = tokio::select! {
                frames = socket.recv() => frames,
                () = &mut cancelled => break None,
            };
            let Ok(frames) = frames else { return };
            let Some(message) = from_zmq(frames, &shared.signer, "stdin") else { continue };
            if let JupyterMessageContent::InputReply(input_reply) = &message.content {
                break Some(input_reply.value.clone());
            }
        };
        let _ = request.answer.send(value);
    }
}
