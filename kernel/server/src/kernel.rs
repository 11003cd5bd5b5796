//! The kernel's dispatch: the five Jupyter sockets and the tasks that serve them.
//!
//! Tasks: `iopub` (the only writer of the PUB socket, fed by a channel: `sockets`),
//! `heartbeat` (echo), `control` (never queued behind an execute: kernel_info, interrupt,
//! shutdown), `stdin` (input requests: both in `control`), and the shell loop (`shell`), which
//! handles requests one at a time and, between them, publishes output that tasks of earlier
//! cells print while the kernel is idle. Every request is answered between a `busy` and an
//! `idle` status (`Shared::while_busy`), with content built from `jupyter_protocol`'s types
//! (`replies`).

use crate::control::{serve_control, serve_stdin};
use crate::engine_thread::StartedEngine;
use crate::shell::ShellLoop;
use crate::sockets::{bind_retrying, publish_iopub, Shared};
use anyhow::Context as _;
use rust_async_engine::Interrupter;
use rust_async_wire::jupyter_protocol::{Channel, ExecutionState};
use rust_async_wire::Signer;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};
use zeromq::{Socket, SocketRecv, SocketSend};

/// How long the kernel waits, as it exits, for its last iopub messages to be written.
const IOPUB_FLUSH_PATIENCE: Duration = Duration::from_secs(1);

/// Serves the notebook whose connection file is `connection_file` with `engine` (started just
/// now, or ahead of time in a spare kernel) until a shutdown request. `when_ready` runs once
/// the engine is up.
pub async fn run(
    connection_file: &str,
    engine: StartedEngine,
    when_ready: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    let info = rust_async_wire::read_connection_file(connection_file)?;
    let signer = Signer::from_connection_info(&info)?;
    let bind = |channel| rust_async_wire::endpoint(&info, channel);

    let mut iopub_socket = zeromq::PubSocket::new();
    bind_retrying(&mut iopub_socket, &bind(Channel::IOPub)).await.context("binding iopub")?;
    let mut shell = zeromq::RouterSocket::new();
    bind_retrying(&mut shell, &bind(Channel::Shell)).await.context("binding shell")?;
    let mut control = zeromq::RouterSocket::new();
    bind_retrying(&mut control, &bind(Channel::Control)).await.context("binding control")?;
    let mut stdin = zeromq::RouterSocket::new();
    bind_retrying(&mut stdin, &bind(Channel::Stdin)).await.context("binding stdin")?;
    let mut heartbeat = zeromq::RepSocket::new();
    bind_retrying(&mut heartbeat, &bind(Channel::Heartbeat)).await.context("binding heartbeat")?;

    let (iopub, iopub_queue) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(signer.clone(), iopub));
    tokio::spawn(publish_iopub(iopub_socket, iopub_queue, signer));
    tokio::spawn(async move {
        while let Ok(ping) = heartbeat.recv().await {
            if heartbeat.send(ping).await.is_err() {
                break;
            }
        }
    });
    shared.status(None, ExecutionState::Starting);

    let StartedEngine { handle: engine, ready: engine_ready, events: engine_output } = engine;
    let (stdin_requests, stdin_queue) = mpsc::unbounded_channel();
    tokio::spawn(serve_stdin(stdin, stdin_queue, Arc::clone(&shared)));

    let interrupter = Arc::new(Mutex::new(None::<Interrupter>));
    tokio::spawn({
        let interrupter = Arc::clone(&interrupter);
        async move {
            if let Ok(ready) = engine_ready.await {
                *interrupter.lock().await = Some(ready);
                when_ready();
            }
        }
    });
    let (shutdown_sender, mut shutdown) = mpsc::unbounded_channel::<bool>();
    tokio::spawn(serve_control(control, Arc::clone(&shared), Arc::clone(&interrupter), shutdown_sender));

    let mut shell_loop = ShellLoop::new(Arc::clone(&shared), engine, engine_output, stdin_requests, interrupter);
    tokio::select! {
        () = shell_loop.serve(&mut shell) => {}
        _ = shutdown.recv() => {}
    }
    // Interrupt a cell that may still run, so the engine can stop its process and files.
    if let Some(interrupter) = shell_loop.interrupter.lock().await.as_ref() {
        interrupter.interrupt();
    }
    shell_loop.engine.shutdown(Duration::from_secs(5)).await;
    // The shutdown's `idle` (and any output before it) goes out before the process exits.
    shared.flushed(IOPUB_FLUSH_PATIENCE).await;
    Ok(())
}
