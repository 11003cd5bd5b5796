//! The shell channel: requests handled one at a time, each between `busy` and `idle`; cells
//! run by the engine thread, their output published as it comes (and, between requests, the
//! output of tasks of earlier cells); the execution count and history.

use crate::control::StdinRequest;
use crate::engine_thread::{EngineHandle, FromEngine, Job};
use crate::history::History;
use crate::replies;
use crate::sockets::{from_zmq, reply, unsupported, Shared};
use rust_async_engine::is_complete::is_complete;
use rust_async_engine::{CellError, CellOutcome, EngineEvent, ErrorKind, InputReader, Interrupter, Output};
use rust_async_wire::jupyter_protocol::{
    CommClose, CommInfoReply, ExecuteInput, ExecuteRequest, ExecutionCount, HistoryRequest, JupyterMessageContent, Payload,
    ShutdownReply,
};
use rust_async_wire::{content, Message};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};
use zeromq::SocketRecv;

/// Stream text merged into one iopub message stops growing past this size.
const MAX_STREAM_MESSAGE: usize = 256 * 1024;

pub(crate) struct ShellLoop {
    pub shared: Arc<Shared>,
    pub engine: EngineHandle,
    pub engine_output: mpsc::UnboundedReceiver<FromEngine>,
    pub stdin_requests: mpsc::UnboundedSender<StdinRequest>,
    pub interrupter: Arc<Mutex<Option<Interrupter>>>,
    execution_count: usize,
    history: History,
    /// Which execute_request each cell number ran for, so late output finds its cell.
    parents_by_cell: HashMap<u64, Message>,
    last_parent: Option<Message>,
    /// An engine message taken while merging output, to be handled next.
    requeued: Option<FromEngine>,
    /// A cell failed with `stop_on_error` at this time: the executions sent before it (queued
    /// behind it) are aborted, not run.
    aborting_before: Option<chrono::DateTime<chrono::Utc>>,
}

enum Handled {
    Ok,
    /// A shutdown request was answered: the kernel stops serving, as on control.
    ShutDown,
    /// An execution failed with `stop_on_error`.
    FailedStopOnError { failed_at: chrono::DateTime<chrono::Utc> },
}

impl ShellLoop {
    pub fn new(
        shared: Arc<Shared>,
        engine: EngineHandle,
        engine_output: mpsc::UnboundedReceiver<FromEngine>,
        stdin_requests: mpsc::UnboundedSender<StdinRequest>,
        interrupter: Arc<Mutex<Option<Interrupter>>>,
    ) -> ShellLoop {
        ShellLoop {
            shared,
            engine,
            engine_output,
            stdin_requests,
            interrupter,
            execution_count: 0,
            history: History::new(),
            parents_by_cell: HashMap::new(),
            last_parent: None,
            requeued: None,
            aborting_before: None,
        }
    }

    /// Serves shell requests until a shutdown request or the socket's end.
    pub async fn serve(&mut self, shell: &mut zeromq::RouterSocket) {
        loop {
            let request = tokio::select! {
                frames = shell.recv() => {
                    let Ok(frames) = frames else { return };
                    let Some(request) = from_zmq(frames, &self.shared.signer, "shell") else { continue };
                    request
                }
                Some(event) = self.engine_output.recv() => {
                    if let FromEngine::Event(event) = event {
                        self.publish_events(event);
                    }
                    continue;
                }
            };
            let shared = Arc::clone(&self.shared);
            match shared.while_busy(&request, self.handle(shell, &request)).await {
                Handled::Ok => {}
                Handled::ShutDown => return,
                Handled::FailedStopOnError { failed_at } => self.aborting_before = Some(failed_at),
            }
        }
    }

    async fn handle(&mut self, shell: &mut zeromq::RouterSocket, request: &Message) -> Handled {
        let shared = Arc::clone(&self.shared);
        match &request.content {
            JupyterMessageContent::ExecuteRequest(execute) => {
                // Sent before a cell failed with `stop_on_error`: aborted, as the protocol
                // asks. The first one sent after the failure was known ends the aborting.
                if let Some(failed_at) = self.aborting_before {
                    if request.header.date <= failed_at {
                        reply(shell, &shared, request, content::aborted_reply(request.msg_type())).await;
                        return Handled::Ok;
                    }
                    self.aborting_before = None;
                }
                let execute = execute.clone();
                return self.execute(shell, request, execute).await;
            }
            JupyterMessageContent::KernelInfoRequest(_) => {
                reply(shell, &shared, request, replies::kernel_info()).await;
            }
            JupyterMessageContent::CompleteRequest(complete) => {
                let (answer, completions) = oneshot::channel();
                self.engine.send(Job::Complete { code: complete.code.clone(), cursor: complete.cursor_pos, reply: answer });
                let none = rust_async_engine::Completions { matches: vec![], cursor_start: complete.cursor_pos, cursor_end: complete.cursor_pos };
                reply(shell, &shared, request, replies::complete_reply(completions.await.unwrap_or(none))).await;
            }
            JupyterMessageContent::InspectRequest(inspect) => {
                let (answer, documentation) = oneshot::channel();
                self.engine.send(Job::Inspect { code: inspect.code.clone(), cursor: inspect.cursor_pos, reply: answer });
                reply(shell, &shared, request, replies::inspect_reply(documentation.await.ok().flatten())).await;
            }
            JupyterMessageContent::IsCompleteRequest(question) => {
                reply(shell, &shared, request, replies::is_complete_reply(is_complete(&question.code))).await;
            }
            JupyterMessageContent::HistoryRequest(history_request) => {
                let (entries, with_output) = match history_request {
                    HistoryRequest::Tail { n, output, .. } => (self.history.tail((*n).max(0) as usize), *output),
                    HistoryRequest::Range { start, stop, output, .. } => (self.history.range(*start, *stop), *output),
                    HistoryRequest::Search { pattern, unique, n, output, .. } => {
                        (self.history.search(pattern, (*n).max(0) as usize, *unique), *output)
                    }
                };
                reply(shell, &shared, request, replies::history_reply(entries, with_output)).await;
            }
            JupyterMessageContent::CommInfoRequest(_) => {
                reply(shell, &shared, request, CommInfoReply::default()).await;
            }
            JupyterMessageContent::CommOpen(open) => {
                // No comm targets exist: close it at once, as the protocol asks.
                shared.publish(Some(request), CommClose { comm_id: open.comm_id.clone(), data: Default::default() });
            }
            JupyterMessageContent::CommMsg(_) | JupyterMessageContent::CommClose(_) => {}
            JupyterMessageContent::ShutdownRequest(shutdown) => {
                reply(shell, &shared, request, ShutdownReply { restart: shutdown.restart, ..ShutdownReply::default() }).await;
                return Handled::ShutDown;
            }
            other => {
                let msg_type = other.message_type();
                eprintln!("rust-async: unsupported request {msg_type}");
                if msg_type.ends_with("_request") {
                    reply(shell, &shared, request, unsupported(other)).await;
                }
            }
        }
        Handled::Ok
    }

    async fn execute(&mut self, shell: &mut zeromq::RouterSocket, request: &Message, execute: ExecuteRequest) -> Handled {
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
            let input = ExecuteInput { code: execute.code.clone(), execution_count: ExecutionCount::new(count) };
            shared.publish(Some(request), input);
        }
        self.last_parent = Some(request.clone());
        if let Some(name) = help_request(&execute.code) {
            // `tokio::spawn?` pages the documentation, as `?` does in IPython.
            let (answer, documentation) = oneshot::channel();
            self.engine.send(Job::Documentation { code: name.to_owned(), reply: answer });
            let data = match documentation.await.ok().flatten() {
                Some(found) => replies::documentation_media(found),
                None => {
                    let text = format!("No documentation found for `{name}`.");
                    replies::media(serde_json::Map::from_iter([("text/plain".into(), text.into())]))
                }
            };
            let payload = vec![Payload::Page { data, start: 0 }];
            reply(shell, &shared, request, content::execute_reply_ok(count, payload, HashMap::new())).await;
            return Handled::Ok;
        }
        match self.run_cell(request, &execute.code, execute.allow_stdin, interrupts_at_send).await {
            CellOutcome::Success { result } => {
                if let Some(text) = result.as_ref().and_then(|data| data.get("text/plain")?.as_str()) {
                    if counts {
                        self.history.record_output(count, text.to_owned());
                    }
                }
                if let (Some(data), false) = (result, execute.silent) {
                    shared.publish(Some(request), replies::result_content(count, data));
                }
                let mut user_expressions = HashMap::new();
                for (name, expression) in execute.user_expressions.clone().unwrap_or_default() {
                    user_expressions.insert(name, self.evaluate_expression(request, &expression).await);
                }
                reply(shell, &shared, request, content::execute_reply_ok(count, vec![], user_expressions)).await;
                Handled::Ok
            }
            CellOutcome::Failure(error) => {
                let failed_at = chrono::Utc::now();
                shared.publish(Some(request), replies::error_output(&error));
                reply(shell, &shared, request, replies::execute_reply_error(count, &error)).await;
                if execute.stop_on_error { Handled::FailedStopOnError { failed_at } } else { Handled::Ok }
            }
        }
    }

    /// Runs `code` in the engine and publishes its outputs as they come, until it finishes.
    async fn run_cell(&mut self, request: &Message, code: &str, allow_stdin: bool, interrupts_at_send: u64) -> CellOutcome {
        let input: InputReader = if allow_stdin {
            let requests = self.stdin_requests.clone();
            let parent = request.clone();
            Arc::new(move |prompt: &str| {
                let (answer, value) = oneshot::channel();
                requests.send(StdinRequest { parent: parent.clone(), prompt: prompt.to_owned(), answer }).ok()?;
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

    async fn evaluate_expression(
        &mut self,
        request: &Message,
        expression: &str,
    ) -> rust_async_wire::jupyter_protocol::ExpressionResult {
        let interrupts_now = self.interrupter.lock().await.as_ref().map_or(0, Interrupter::interrupts);
        replies::expression_result(self.run_cell(request, expression, false, interrupts_now).await)
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
                self.shared.publish(parent, replies::output_content(output));
            }
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

fn engine_gone(message: &str) -> CellError {
    CellError::one_line(ErrorKind::KernelError, format!("The Rust engine is not available: {message}"))
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
