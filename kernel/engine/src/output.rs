//! The kernel side of the user process's output: reads the records the user process sends
//! (see `user_process`), turns them into [`EngineEvent`]s for the front end, and notes what
//! decides the fate of the running cell (a panic, an interrupt, a `?` error).

use crate::protocol;
use crate::{EngineEvent, Output, StreamName};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Where events go: the front end's channel.
pub type EventSink = Arc<dyn Fn(EngineEvent) + Send + Sync>;
/// Answers a request for a line of stdin; `None` when this cell allows no input.
pub type InputReader = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What the records of the running cell said about how it ended.
#[derive(Default, Debug, Clone)]
pub(crate) struct CellFate {
    pub cell: Option<u64>,
    pub panic: Option<PanicRecord>,
    pub interrupted: bool,
    pub error_type: Option<String>,
    /// The text of the error a `?` returned (what evcxr prints to stderr for it).
    pub error_text: String,
    pub question_mark_error: bool,
    /// The cell's `cell-end` record came: all its output has been read.
    pub ended: bool,
    /// The connection of a user process ended. When that process died in the cell, this is
    /// its end; it may also be a process that `:restart` or `:clear` replaced, whose end can be
    /// read after the next cell began: that must not end the next cell.
    pub process_ended: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct PanicRecord {
    pub message: String,
    pub line: u32,
    pub column: u32,
}

#[derive(Default)]
struct Shared {
    fate: CellFate,
    /// The cell that output arriving now is credited to (from `cell-start` / `output-of`).
    current_cell: Option<u64>,
    input: Option<InputReader>,
    /// Set while an interrupt waits for the cell to start running.
    interrupt_when_started: bool,
    child_pid: Option<i32>,
    /// Counts executions, so a late watcher can tell its execution is over.
    execution: u64,
    /// Counts interrupt requests, so work done between cells can tell one arrived meanwhile.
    interrupts: u64,
}

/// Reads user-process records on a background thread for as long as the kernel lives.
pub(crate) struct OutputReader {
    shared: Arc<(Mutex<Shared>, Condvar)>,
}

impl OutputReader {
    pub fn start(listener: UnixListener, sink: EventSink) -> OutputReader {
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let reader_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("user-output".into())
            .spawn(move || {
                // One connection per user process; a restarted process connects again.
                for connection in listener.incoming().flatten() {
                    read_connection(connection, &reader_shared, &sink);
                }
            })
            .expect("could not start the output reader thread");
        OutputReader { shared }
    }

    /// Prepares for a new cell run.
    pub fn begin_cell(&self, input: InputReader, child_pid: Option<i32>) {
        let mut shared = self.shared.0.lock().unwrap();
        shared.fate = CellFate::default();
        shared.input = Some(input);
        shared.interrupt_when_started = false;
        shared.child_pid = child_pid;
        shared.execution += 1;
    }

    /// Waits until the user process said the cell's output is complete (or `timeout`), then
    /// returns what the cell's records said.
    /// `process_died`: the user process died during the cell (its output ends with its
    /// connection, not with a `cell-end` record).
    pub fn finish_cell(&self, timeout: Duration, process_died: bool) -> CellFate {
        let (lock, ended) = &*self.shared;
        let shared = lock.lock().unwrap();
        let (mut shared, _) = ended
            .wait_timeout_while(shared, timeout, |shared| {
                !(shared.fate.ended || (process_died && shared.fate.process_ended))
            })
            .unwrap();
        shared.input = None;
        shared.interrupt_when_started = false;
        std::mem::take(&mut shared.fate)
    }

    /// Interrupts the running cell: at once when it runs, or as soon as it starts running
    /// (an interrupt during compilation must not be lost, nor hit a later cell).
    /// Returns whether the cell had started.
    pub fn interrupt(&self) -> bool {
        let mut shared = self.shared.0.lock().unwrap();
        shared.interrupts += 1;
        if shared.fate.cell.is_some() && !shared.fate.ended {
            if let Some(pid) = shared.child_pid {
                send_sigint(pid);
            }
            true
        } else {
            shared.interrupt_when_started = true;
            false
        }
    }

    /// How many interrupt requests have arrived so far.
    pub fn interrupts(&self) -> u64 {
        self.shared.0.lock().unwrap().interrupts
    }

    /// The current execution and the cell it runs, if it is running.
    pub fn running_cell(&self) -> (u64, Option<u64>) {
        let shared = self.shared.0.lock().unwrap();
        (shared.execution, shared.fate.cell.filter(|_| !shared.fate.ended))
    }
}

fn send_sigint(pid: i32) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGINT) };
}

fn read_connection(connection: UnixStream, shared: &Arc<(Mutex<Shared>, Condvar)>, sink: &EventSink) {
    let Ok(mut replies) = connection.try_clone() else {
        return;
    };
    let mut lines = BufReader::new(connection);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => {
                // The user process is gone: a cell it died in must not wait longer.
                let (lock, ended) = &**shared;
                lock.lock().unwrap().fate.process_ended = true;
                ended.notify_all();
                return;
            }
            Ok(_) => {}
        }
        let Ok(record) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        handle_record(&record, shared, sink, &mut replies);
    }
}

fn handle_record(
    record: &Value,
    shared: &Arc<(Mutex<Shared>, Condvar)>,
    sink: &EventSink,
    replies: &mut UnixStream,
) {
    let (lock, ended) = &**shared;
    let payload = &record["payload"];
    let payload_text = payload.as_str().unwrap_or_default();
    let mut state = lock.lock().unwrap();
    let cell = state.current_cell;
    match record["kind"].as_str().unwrap_or_default() {
        "stream" => {
            let text = record["text"].as_str().unwrap_or_default().to_owned();
            let name = if record["name"] == "stderr" { StreamName::Stderr } else { StreamName::Stdout };
            let capturing = state.fate.error_type.is_some() && !state.fate.question_mark_error;
            if name == StreamName::Stderr && capturing && !state.fate.ended {
                // evcxr prints the error a `?` returned; it becomes the cell's error instead.
                state.fate.error_text.push_str(&text);
                return;
            }
            drop(state);
            sink(EngineEvent::Output { cell, output: Output::Stream { name, text } });
        }
        protocol::CELL_START => {
            let number = payload_text.trim().parse().ok();
            state.current_cell = number;
            state.fate.cell = number;
            if std::mem::take(&mut state.interrupt_when_started) {
                if let Some(pid) = state.child_pid {
                    send_sigint(pid);
                }
            }
            drop(state);
            if let Some(number) = number {
                sink(EngineEvent::CellStarted(number));
            }
        }
        protocol::OUTPUT_OF => state.current_cell = payload_text.trim().parse().ok(),
        // The first panic is the cell's: more can follow only while it unwinds (a `Drop`
        // that panics too), and then the process aborts.
        protocol::PANIC if state.fate.panic.is_some() => {}
        protocol::PANIC => {
            state.fate.panic = Some(PanicRecord {
                message: payload["message"].as_str().unwrap_or_default().to_owned(),
                line: payload["line"].as_u64().unwrap_or(0) as u32,
                column: payload["column"].as_u64().unwrap_or(0) as u32,
            })
        }
        protocol::INTERRUPTED => state.fate.interrupted = true,
        protocol::ERROR_TYPE => state.fate.error_type = Some(payload_text.to_owned()),
        "question-mark-error" => state.fate.question_mark_error = true,
        protocol::DISPLAY => {
            drop(state);
            sink(EngineEvent::Output { cell, output: Output::Display { data: payload.clone() } });
        }
        protocol::CLEAR_OUTPUT => {
            drop(state);
            let wait = payload_text.trim() == "true";
            sink(EngineEvent::Output { cell, output: Output::ClearOutput { wait } });
        }
        "cell-end" => {
            if !state.fate.question_mark_error && state.fate.error_type.take().is_some() {
                // The `eprintln!("{}", x)` was the user's own, not a `?`: show what it printed.
                let text = std::mem::take(&mut state.fate.error_text);
                if !text.is_empty() {
                    sink(EngineEvent::Output { cell, output: Output::Stream { name: StreamName::Stderr, text } });
                }
            }
            state.fate.ended = true;
            ended.notify_all();
        }
        "input-request" => {
            let input = state.input.clone();
            drop(state);
            let prompt = record["prompt"].as_str().unwrap_or_default();
            let line = input.and_then(|input| input(prompt));
            if line.is_none() {
                let text = "stdin is not available here (the front end does not allow input, as when a \
                            notebook is run by nbconvert or a grader): reading it fails.\n".to_owned();
                sink(EngineEvent::Output { cell, output: Output::Stream { name: StreamName::Stderr, text } });
            }
            let reply = serde_json::json!({ "line": line }).to_string() + "\n";
            let _ = replies.write_all(reply.as_bytes());
        }
        _ => {}
    }
}
