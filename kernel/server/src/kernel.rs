//! The kernel's dispatch: the five Jupyter sockets, busy/idle around every request, the
//! execution count, and one handler per message type.
//!
//! Tasks: `iopub` (the only writer of the PUB socket, fed by a channel), `heartbeat` (echo),
//! `control` (never queued behind an execute: kernel_info, interrupt, shutdown), `stdin`
//! (input requests), and the shell loop, which handles requests one at a time and, between
//! them, publishes output that tasks of earlier cells print while the kernel is idle.

use crate::engine_thread::{EngineHandle, FromEngine, Job, StartedEngine};
use crate::history::{self, History};
use anyhow::Context as _;
use bytes::Bytes;
use rust_async_engine::is_complete::{is_complete, Completeness};
use rust_async_engine::{CellError, CellOutcome, EngineEvent, InputReader, Interrupter, Output, StreamName};
use rust_async_wire::jupyter_protocol::{Channel, JupyterMessageContent};
use rust_async_wire::{content, decode, encode, Message, Signer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

type Iopub = mpsc::UnboundedSender<Message>;

/// Stream text merged into one iopub message stops growing past this size.
const MAX_STREAM_MESSAGE: usize = 256 * 1024;

struct Shared {
    signer: Signer,
    session: String,
    iopub: Iopub,
    /// An interrupt ends a wait for the front end's answer to an `input_request`: the read in
    /// the cell then fails at once, so the cell ends without the process being restarted.
    input_cancel: tokio::sync::Notify,
}

impl Shared {
    fn publish(&self, parent: Option<&Message>, msg_type: &str, body: Value) {
        let _ = self.iopub.send(Message::broadcast(parent, content::raw(msg_type, body), &self.session));
    }

    fn status(&self, parent: &Message, state: &str) {
        self.publish(Some(parent), "status", json!({ "execution_state": state }));
    }
}

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
    let shared = Arc::new(Shared {
        signer: signer.clone(),
        session: uuid::Uuid::new_v4().to_string(),
        iopub,
        input_cancel: tokio::sync::Notify::new(),
    });
    tokio::spawn(publish_iopub(iopub_socket, iopub_queue, signer.clone()));
    tokio::spawn(async move {
        while let Ok(ping) = heartbeat.recv().await {
            if heartbeat.send(ping).await.is_err() {
                break;
            }
        }
    });
    shared.publish(None, "status", json!({ "execution_state": "starting" }));

    let StartedEngine { handle: engine, ready: engine_ready, events: engine_output } = engine;
    let (input_requests, input_queue) = mpsc::unbounded_channel();
    tokio::spawn(serve_stdin(stdin, input_queue, Arc::clone(&shared)));

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

    let mut shell_loop = ShellLoop {
        shared: Arc::clone(&shared),
        engine,
        engine_output,
        input_requests,
        execution_count: 0,
        history: History::new(),
        parents_by_cell: HashMap::new(),
        last_parent: None,
        interrupter,
        requeued: None,
    };
    tokio::select! {
        () = shell_loop.serve(&mut shell) => {}
        _ = shutdown.recv() => {}
    }
    // Interrupt a cell that may still run, so the engine can stop its process and files.
    if let Some(interrupter) = shell_loop.interrupter.lock().await.as_ref() {
        interrupter.interrupt();
    }
    shell_loop.engine.shutdown(Duration::from_secs(5)).await;
    // Give iopub a moment to deliver the shutdown's idle status before the process exits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

/// Binds, waiting a little while the port is still in use: on a restart, Jupyter starts the new
/// kernel on the same ports, and a kernel served by a spare process may take a moment to let
/// them go after its launcher was killed.
async fn bind_retrying(socket: &mut impl Socket, endpoint: &str) -> Result<(), zeromq::ZmqError> {
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

async fn publish_iopub(mut socket: zeromq::PubSocket, mut queue: mpsc::UnboundedReceiver<Message>, signer: Signer) {
    while let Some(message) = queue.recv().await {
        if let Some(frames) = to_zmq(&message, &signer) {
            let _ = socket.send(frames).await;
        }
    }
}

fn to_zmq(message: &Message, signer: &Signer) -> Option<ZmqMessage> {
    let frames: Vec<Bytes> = encode(message, signer).ok()?;
    ZmqMessage::try_from(frames).ok()
}

/// Decodes a request; a bad signature or malformed message is logged and dropped, never acted on.
fn from_zmq(frames: ZmqMessage, signer: &Signer, channel: &str) -> Option<Message> {
    match decode(frames.into_vec(), signer) {
        Ok(message) => Some(message),
        Err(error) => {
            eprintln!("rust-async: ignored a message on {channel}: {error}");
            None
        }
    }
}

async fn reply(socket: &mut zeromq::RouterSocket, shared: &Shared, parent: &Message, msg_type: &str, body: Value) {
    let message = Message::reply_to(parent, content::raw(msg_type, body), &shared.session);
    if let Some(frames) = to_zmq(&message, &shared.signer) {
        let _ = socket.send(frames).await;
    }
}

/// The reply to a request type this kernel does not handle.
fn unsupported(msg_type: &str) -> Value {
    json!({ "status": "error", "ename": "UnsupportedRequest", "evalue": format!("{msg_type} is not supported"), "traceback": [] })
}

fn kernel_info() -> Value {
    let rustc = std::process::Command::new("rustc").arg("--version").output().ok();
    let version = rustc
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    json!({
        "status": "ok",
        "protocol_version": rust_async_wire::PROTOCOL_VERSION,
        "implementation": "rust-async",
        "implementation_version": env!("CARGO_PKG_VERSION"),
        "language_info": {
            "name": "rust",
            "version": version,
            "mimetype": "text/x-rustsrc",
            "file_extension": ".rs",
            "pygments_lexer": "rust",
            "codemirror_mode": "rust",
        },
        "banner": "rust-async: Rust in notebooks, every cell inside one shared tokio runtime",
        "help_links": [
            { "text": "Asynchronous Programming in Rust (the Async Book)", "url": "https://rust-lang.github.io/async-book/" },
            { "text": "Tokio tutorial", "url": "https://tokio.rs/tokio/tutorial" },
            { "text": "tokio API docs", "url": "https://docs.rs/tokio/latest/tokio/" },
        ],
        "debugger": false,
    })
}

async fn serve_control(
    mut socket: zeromq::RouterSocket,
    shared: Arc<Shared>,
    interrupter: Arc<Mutex<Option<Interrupter>>>,
    shutdown: mpsc::UnboundedSender<bool>,
) {
    while let Ok(frames) = socket.recv().await {
        let Some(request) = from_zmq(frames, &shared.signer, "control") else { continue };
        shared.status(&request, "busy");
        match &request.content {
            JupyterMessageContent::KernelInfoRequest(_) => {
                reply(&mut socket, &shared, &request, "kernel_info_reply", kernel_info()).await;
            }
            JupyterMessageContent::InterruptRequest(_) => {
                shared.input_cancel.notify_waiters();
                if let Some(interrupter) = interrupter.lock().await.as_ref() {
                    interrupter.interrupt();
                }
                reply(&mut socket, &shared, &request, "interrupt_reply", json!({ "status": "ok" })).await;
            }
            JupyterMessageContent::ShutdownRequest(shutdown_request) => {
                let restart = shutdown_request.restart;
                reply(&mut socket, &shared, &request, "shutdown_reply", json!({ "status": "ok", "restart": restart })).await;
                shared.status(&request, "idle");
                let _ = shutdown.send(restart);
                continue;
            }
            other => {
                let msg_type = other.message_type().to_owned();
                let reply_type = content::reply_type_for(&msg_type);
                reply(&mut socket, &shared, &request, &reply_type, unsupported(&msg_type)).await;
            }
        }
        shared.status(&request, "idle");
    }
}

struct InputRequest {
    parent: Message,
    prompt: String,
    answer: oneshot::Sender<Option<String>>,
}

async fn serve_stdin(mut socket: zeromq::RouterSocket, mut requests: mpsc::UnboundedReceiver<InputRequest>, shared: Arc<Shared>) {
    while let Some(request) = requests.recv().await {
        let cancelled = shared.input_cancel.notified();
        tokio::pin!(cancelled);
        cancelled.as_mut().enable();
        reply(&mut socket, &shared, &request.parent, "input_request", json!({ "prompt": request.prompt, "password": false })).await;
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

struct ShellLoop {
    shared: Arc<Shared>,
    engine: EngineHandle,
    engine_output: mpsc::UnboundedReceiver<FromEngine>,
    input_requests: mpsc::UnboundedSender<InputRequest>,
    execution_count: usize,
    history: History,
    /// Which execute_request each cell number ran for, so late output finds its cell.
    parents_by_cell: HashMap<u64, Message>,
    last_parent: Option<Message>,
    interrupter: Arc<Mutex<Option<Interrupter>>>,
    /// An engine message taken while merging output, to be handled next.
    requeued: Option<FromEngine>,
}

enum Handled {
    Ok,
    /// A shutdown request was answered: the kernel stops serving, as on control.
    ShutDown,
    /// An execution failed with `stop_on_error`: executes queued before it failed are aborted.
    FailedStopOnError { failed_at: chrono::DateTime<chrono::Utc> },
}

impl ShellLoop {
    async fn serve(&mut self, shell: &mut zeromq::RouterSocket) {
        let mut queued: std::collections::VecDeque<Message> = Default::default();
        loop {
            let request = if let Some(request) = queued.pop_front() {
                request
            } else {
                tokio::select! {
                    frames = shell.recv() => {
                        let Ok(frames) = frames else { return };
                        let Some(request) = from_zmq(frames, &self.shared.signer, "shell") else { continue };
                        request
                    }
                    Some(event) = self.engine_output.recv() => {
                        self.idle_output(event);
                        continue;
                    }
                }
            };
            self.shared.status(&request, "busy");
            let handled = self.handle(shell, &request).await;
            self.shared.status(&request, "idle");
            if let Handled::ShutDown = handled {
                return;
            }
            if let Handled::FailedStopOnError { failed_at } = handled {
                // Abort the executions queued behind the failed cell: those sent before it
                // failed. Requests sent after the failure was known are run as usual.
                while let Ok(Ok(frames)) = tokio::time::timeout(Duration::from_millis(50), shell.recv()).await {
                    let Some(next) = from_zmq(frames, &self.shared.signer, "shell") else { continue };
                    let sent_before_failure = next.header.date <= failed_at;
                    if sent_before_failure && matches!(next.content, JupyterMessageContent::ExecuteRequest(_)) {
                        self.shared.status(&next, "busy");
                        reply(shell, &self.shared, &next, "execute_reply", json!({ "status": "aborted" })).await;
                        self.shared.status(&next, "idle");
                    } else {
                        queued.push_back(next);
                    }
                }
            }
        }
    }

    fn idle_output(&mut self, event: FromEngine) {
        if let FromEngine::Event(event) = event {
            self.publish_events(event);
        }
    }

    /// Publishes `first` and whatever output events are already queued behind it, merging
    /// consecutive text of one stream and one cell into one message: a cell printing 100 000
    /// lines makes a few hundred messages, not 100 000, and nothing is reordered or dropped.
    /// (A `Finished` queued behind them is put back in front by publishing up to it only.)
    fn publish_events(&mut self, first: EngineEvent) {
        let mut pending = first;
        loop {
            let next = match self.engine_output.try_recv() {
                Ok(FromEngine::Event(next)) => next,
                Ok(other) => {
                    self.publish_event(pending);
                    self.requeued = Some(other);
                    return;
                }
                Err(_) => break,
            };
            pending = match (pending, next) {
                (
                    EngineEvent::Output { cell, output: Output::Stream { name, text } },
                    EngineEvent::Output { cell: next_cell, output: Output::Stream { name: next_name, text: next_text } },
                ) if cell == next_cell && name == next_name && text.len() < MAX_STREAM_MESSAGE => {
                    EngineEvent::Output { cell, output: Output::Stream { name, text: text + &next_text } }
                }
                (done, next) => {
                    self.publish_event(done);
                    next
                }
            };
        }
        self.publish_event(pending);
    }

    fn publish_event(&mut self, event: EngineEvent) {
        match event {
            EngineEvent::CellStarted(cell) => {
                if let Some(parent) = &self.last_parent {
                    self.parents_by_cell.insert(cell, parent.clone());
                }
            }
            EngineEvent::Output { cell, output } => {
                let parent = cell.and_then(|cell| self.parents_by_cell.get(&cell)).or(self.last_parent.as_ref());
                let (msg_type, body) = match output {
                    Output::Stream { name, text } => {
                        let name = if name == StreamName::Stderr { "stderr" } else { "stdout" };
                        ("stream", json!({ "name": name, "text": text }))
                    }
                    Output::Display { data, display_id, update } => {
                        let transient = display_id.map_or_else(|| json!({}), |id| json!({ "display_id": id }));
                        let kind = if update { "update_display_data" } else { "display_data" };
                        (kind, json!({ "data": data, "metadata": {}, "transient": transient }))
                    }
                    Output::ClearOutput { wait } => ("clear_output", json!({ "wait": wait })),
                };
                self.shared.publish(parent, msg_type, body);
            }
        }
    }

    async fn handle(&mut self, shell: &mut zeromq::RouterSocket, request: &Message) -> Handled {
        let shared = Arc::clone(&self.shared);
        match &request.content {
            JupyterMessageContent::ExecuteRequest(execute) => {
                let execute = execute.clone();
                return self.execute(shell, request, execute).await;
            }
            JupyterMessageContent::KernelInfoRequest(_) => {
                reply(shell, &shared, request, "kernel_info_reply", kernel_info()).await;
            }
            JupyterMessageContent::CompleteRequest(complete) => {
                let (answer, completions) = oneshot::channel();
                self.engine.send(Job::Complete { code: complete.code.clone(), cursor: complete.cursor_pos, reply: answer });
                let found = completions.await.ok();
                let (matches, start, end) = found
                    .map(|found| (found.matches, found.cursor_start, found.cursor_end))
                    .unwrap_or((vec![], complete.cursor_pos, complete.cursor_pos));
                reply(shell, &shared, request, "complete_reply", json!({ "status": "ok", "matches": matches, "cursor_start": start, "cursor_end": end, "metadata": {} })).await;
            }
            JupyterMessageContent::InspectRequest(inspect) => {
                let (answer, documentation) = oneshot::channel();
                self.engine.send(Job::Inspect { code: inspect.code.clone(), cursor: inspect.cursor_pos, reply: answer });
                let body = match documentation.await.ok().flatten() {
                    Some((text, markdown)) => json!({ "status": "ok", "found": true, "data": { "text/plain": text, "text/markdown": markdown }, "metadata": {} }),
                    None => json!({ "status": "ok", "found": false, "data": {}, "metadata": {} }),
                };
                reply(shell, &shared, request, "inspect_reply", body).await;
            }
            JupyterMessageContent::IsCompleteRequest(question) => {
                let body = match is_complete(&question.code) {
                    Completeness::Complete => json!({ "status": "complete" }),
                    Completeness::Incomplete { indent } => json!({ "status": "incomplete", "indent": indent }),
                    Completeness::Invalid => json!({ "status": "invalid" }),
                };
                reply(shell, &shared, request, "is_complete_reply", body).await;
            }
            JupyterMessageContent::HistoryRequest(history_request) => {
                use rust_async_wire::jupyter_protocol::HistoryRequest;
                let (entries, with_output) = match history_request {
                    HistoryRequest::Tail { n, output, .. } => (self.history.tail((*n).max(0) as usize), *output),
                    HistoryRequest::Range { start, stop, output, .. } => (self.history.range(*start, *stop), *output),
                    HistoryRequest::Search { pattern, unique, n, output, .. } => {
                        (self.history.search(pattern, (*n).max(0) as usize, *unique), *output)
                    }
                };
                let history: Vec<Value> = entries
                    .into_iter()
                    .map(|(count, code, output)| {
                        if with_output {
                            json!([history::SESSION, count, [code, output]])
                        } else {
                            json!([history::SESSION, count, code])
                        }
                    })
                    .collect();
                reply(shell, &shared, request, "history_reply", json!({ "status": "ok", "history": history })).await;
            }
            JupyterMessageContent::CommInfoRequest(_) => {
                reply(shell, &shared, request, "comm_info_reply", json!({ "status": "ok", "comms": {} })).await;
            }
            JupyterMessageContent::CommOpen(open) => {
                // No comm targets exist: close it at once, as the protocol asks.
                shared.publish(Some(request), "comm_close", json!({ "comm_id": open.comm_id, "data": {} }));
            }
            JupyterMessageContent::CommMsg(_) | JupyterMessageContent::CommClose(_) => {}
            JupyterMessageContent::ShutdownRequest(shutdown) => {
                reply(shell, &shared, request, "shutdown_reply", json!({ "status": "ok", "restart": shutdown.restart })).await;
                return Handled::ShutDown;
            }
            other => {
                let msg_type = other.message_type().to_owned();
                eprintln!("rust-async: unsupported request {msg_type}");
                if msg_type.ends_with("_request") {
                    let reply_type = content::reply_type_for(&msg_type);
                    reply(shell, &shared, request, &reply_type, unsupported(&msg_type)).await;
                }
            }
        }
        Handled::Ok
    }

    async fn execute(
        &mut self,
        shell: &mut zeromq::RouterSocket,
        request: &Message,
        execute: rust_async_wire::jupyter_protocol::ExecuteRequest,
    ) -> Handled {
        let shared = Arc::clone(&self.shared);
        // Taken before `execute_input` is published: an interrupt that a front end sends after
        // seeing the cell under way stops it, even before the engine gets to it.
        let interrupts_at_send = self.interrupter.lock().await.as_ref().map_or(0, Interrupter::interrupts);
        let counts = !execute.silent && execute.store_history;
        if counts {
            self.execution_count += 1;
            self.history.record(self.execution_count, &execute.code);
        }
        let count = self.execution_count.max(1);
        if !execute.silent {
            shared.publish(Some(request), "execute_input", json!({ "code": execute.code, "execution_count": count }));
        }
        self.last_parent = Some(request.clone());
        if let Some(name) = help_request(&execute.code) {
            // `tokio::spawn?` pages the documentation, as `?` does in IPython.
            let (answer, documentation) = oneshot::channel();
            self.engine.send(Job::Documentation { code: name.to_owned(), reply: answer });
            let page = match documentation.await.ok().flatten() {
                Some((text, markdown)) => json!({ "text/plain": text, "text/markdown": markdown }),
                None => json!({ "text/plain": format!("No documentation found for `{name}`.") }),
            };
            let payload = json!([{ "source": "page", "data": page, "start": 0 }]);
            reply(shell, &shared, request, "execute_reply", json!({ "status": "ok", "execution_count": count, "user_expressions": {}, "payload": payload })).await;
            return Handled::Ok;
        }
        let outcome = self.run_cell(request, &execute.code, execute.allow_stdin, interrupts_at_send).await;
        match outcome {
            CellOutcome::Success { result } => {
                if let Some(text) = result.as_ref().and_then(|data| data.get("text/plain")?.as_str()) {
                    if counts {
                        self.history.record_output(count, text.to_owned());
                    }
                }
                if let (Some(data), false) = (result, execute.silent) {
                    if data.contains_key("text/plain") {
                        shared.publish(Some(request), "execute_result", json!({ "execution_count": count, "data": data, "metadata": {} }));
                    } else {
                        shared.publish(Some(request), "display_data", json!({ "data": data, "metadata": {}, "transient": {} }));
                    }
                }
                let mut user_expressions = serde_json::Map::new();
                for (name, expression) in execute.user_expressions.clone().unwrap_or_default() {
                    user_expressions.insert(name, self.evaluate_expression(request, &expression).await);
                }
                reply(shell, &shared, request, "execute_reply", json!({ "status": "ok", "execution_count": count, "user_expressions": user_expressions, "payload": [] })).await;
                Handled::Ok
            }
            CellOutcome::Failure(error) => {
                let failed_at = chrono::Utc::now();
                shared.publish(Some(request), "error", json!({ "ename": error.name, "evalue": error.message, "traceback": error.traceback }));
                reply(shell, &shared, request, "execute_reply", json!({ "status": "error", "execution_count": count, "ename": error.name, "evalue": error.message, "traceback": error.traceback, "user_expressions": {}, "payload": [] })).await;
                if execute.stop_on_error { Handled::FailedStopOnError { failed_at } } else { Handled::Ok }
            }
        }
    }

    /// Runs `code` in the engine and publishes its outputs as they come, until it finishes.
    async fn run_cell(
        &mut self,
        request: &Message,
        code: &str,
        allow_stdin: bool,
        interrupts_at_send: u64,
    ) -> CellOutcome {
        let input: InputReader = if allow_stdin {
            let requests = self.input_requests.clone();
            let parent = request.clone();
            Arc::new(move |prompt: &str| {
                let (answer, value) = oneshot::channel();
                requests.send(InputRequest { parent: parent.clone(), prompt: prompt.to_owned(), answer }).ok()?;
                value.blocking_recv().ok().flatten()
            })
        } else {
            Arc::new(|_: &str| None)
        };
        if !self.engine.send(Job::Execute { code: code.to_owned(), input, interrupts_at_send }) {
            return CellOutcome::Failure(engine_gone("the engine thread has stopped"));
        }
        loop {
            let event = match self.requeued.take() {
                Some(event) => event,
                None => match self.engine_output.recv().await {
                    Some(event) => event,
                    None => break,
                },
            };
            match event {
                FromEngine::Event(event) => self.publish_events(event),
                FromEngine::Finished(outcome) => return outcome,
                FromEngine::StartFailed(message) => return CellOutcome::Failure(engine_gone(&message)),
            }
        }
        CellOutcome::Failure(engine_gone("the engine thread has stopped"))
    }

    async fn evaluate_expression(&mut self, request: &Message, expression: &str) -> Value {
        let interrupts_now = self.interrupter.lock().await.as_ref().map_or(0, Interrupter::interrupts);
        match self.run_cell(request, expression, false, interrupts_now).await {
            CellOutcome::Success { result } => json!({ "status": "ok", "data": result.unwrap_or_default(), "metadata": {} }),
            CellOutcome::Failure(error) => json!({ "status": "error", "ename": error.name, "evalue": error.message, "traceback": error.traceback }),
        }
    }
}

/// `path::to::item?` or `Type?` alone in a cell asks for its documentation. A lone lowercase
/// name (`value?`) stays code: it is the `?` operator on a variable.
fn help_request(code: &str) -> Option<&str> {
    let name = code.trim().strip_suffix('?')?;
    let is_path = !name.is_empty()
        && name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == ':')
        && !name.starts_with(char::is_numeric);
    let unambiguous = name.contains("::") || name.starts_with(char::is_uppercase);
    (is_path && unambiguous).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::help_request;

    #[test]
    fn help_is_asked_for_paths_and_types_not_variables() {
        assert_eq!(help_request("tokio::spawn?"), Some("tokio::spawn"));
        assert_eq!(help_request(" Vec?\n"), Some("Vec"));
        assert_eq!(help_request("value?"), None);
        assert_eq!(help_request("f()?"), None);
        assert_eq!(help_request("let x = 1;"), None);
    }
}

fn engine_gone(message: &str) -> CellError {
    CellError {
        name: "KernelError".into(),
        message: format!("The Rust engine is not available: {message}"),
        traceback: vec![format!("\x1b[1;31mKernelError\x1b[0m: the Rust engine is not available: {message}")],
    }
}
