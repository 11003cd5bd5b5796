//! The kernel side of the user process's output: reads the records the user process sends
//! (see `user_process`), turns them into [`EngineEvent`]s for the front end, and notes what
//! decides the fate of the running cell (a panic, an interrupt, a `?` error).

use crate::protocol;
use crate::records::{self, InputReply, PanicRecord, Record};
use crate::{EngineEvent, Output, StreamName};
use std::io::{BufRead, BufReader};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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
    /// stderr text that came after a cell was sent but before it started (see [`HeldStderr`]).
    held_stderr: HeldStderr,
    /// Counts the records read, so a cell's end can be waited for while its output still comes.
    records_read: u64,
    /// The code of the cell being run, noted by the engine (see [`CellSources`]).
    running_code: Option<Arc<str>>,
    /// The sources of the latest cells that ran, by cell number.
    sources: std::collections::BTreeMap<u64, CellSources>,
    /// Where evcxr writes the source it compiles.
    generated_source: std::path::PathBuf,
}

/// A cell's code and the source evcxr generated from it, to find in the cell the line a
/// `dbg!` wrote from (also later, from a task the cell spawned).
struct CellSources {
    code: Arc<str>,
    generated: Arc<str>,
}

/// How many cells' sources are kept for the `dbg!`s of their tasks.
const SOURCES_KEPT: usize = 64;

/// Puts the cell's line and column in place of each generated-source location of a `dbg!`
/// in `text` (see `protocol::DEBUG_LOCATION`); where the line is not in the cell's code (a
/// function an earlier cell defined), says so.
fn locate_debug_prints(text: &str, sources: Option<&CellSources>) -> String {
    let found = |line, column| format!("[cell line {line}, column {column}]");
    locate_places(text, protocol::DEBUG_LOCATION, sources, found, "[dbg in code of an earlier cell]")
}

/// `text` (display data) with each place in the generated source ([`protocol::CELL_LOCATION`])
/// told as the cell's "line N", or as "an earlier cell's code".
fn locate_cell_places(text: &str, sources: Option<&CellSources>) -> String {
    locate_places(text, protocol::CELL_LOCATION, sources, |line, _| format!("line {line}"), "an earlier cell's code")
}

/// `text` with each `{marker}LINE:COLUMN\u{1e}` (a place in the generated source) replaced by
/// `found` of the cell's own line and column, or by `elsewhere` when the place is not in the
/// cell's own code.
fn locate_places(
    text: &str,
    marker: &str,
    sources: Option<&CellSources>,
    found: impl Fn(usize, usize) -> String,
    elsewhere: &str,
) -> String {
    let mut located = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(marker) {
        located.push_str(&rest[..start]);
        let after = &rest[start + marker.len()..];
        let Some(end) = after.find('\u{1e}') else {
            rest = after;
            continue;
        };
        let mut numbers = after[..end].split(':').map(|number| number.parse::<u32>().ok());
        let position = match (numbers.next().flatten(), numbers.next().flatten(), sources) {
            (Some(line), Some(column), Some(sources)) => {
                crate::source_map::cell_position(&sources.code, &sources.generated, line, column)
            }
            _ => None,
        };
        match position {
            Some((line, column)) => located.push_str(&found(line, column)),
            None => located.push_str(elsewhere),
        }
        rest = &after[end + '\u{1e}'.len_utf8()..];
    }
    located.push_str(rest);
    located
}


/// evcxr's words (its `check_variable`, run as a cell starts) for a kept variable whose type
/// was defined again, so that the value could not be kept: `{PREFIX}name{SUFFIX}`.
const EVCXR_LOST_PREFIX: &str = "The type of the variable ";
const EVCXR_LOST_SUFFIX: &str = " was redefined, so was lost.";

/// The variable named by one line of evcxr's notice.
fn lost_variable(line: &str) -> Option<&str> {
    line.strip_prefix(EVCXR_LOST_PREFIX)?.strip_suffix(EVCXR_LOST_SUFFIX)
}

/// stderr text that may be evcxr's notice of a lost variable, written between a cell's
/// sending and its `cell-start` record: before the cell's own code can say which cell runs, so
/// read as it comes it would be credited to the cell before. Text is held only while it can
/// still be such a notice (other stderr goes on at once, in order with stdout), until the
/// cell starts or ends unstarted: the notice then becomes a message under the cell that lost
/// the variable, and what else was held goes where it belonged.
#[derive(Default)]
struct HeldStderr {
    pieces: Vec<(Option<u64>, String)>,
}

impl HeldStderr {
    /// All the held text, in order.
    fn text(&self) -> String {
        self.pieces.iter().map(|(_, piece)| piece.as_str()).collect()
    }

    /// Whether all the held text is, or begins, evcxr's notices (one write comes in pieces).
    fn may_be_evcxr_notices(&self) -> bool {
        self.text().split_inclusive('\n').all(|line| match line.strip_suffix('\n') {
            Some(whole) => lost_variable(whole).is_some(),
            None => EVCXR_LOST_PREFIX.starts_with(line) || line.starts_with(EVCXR_LOST_PREFIX),
        })
    }

    /// Whether a whole notice is held: evcxr runs the cell again once it has dropped the lost
    /// variables, so the end of this first run is not the cell's end.
    fn has_notice(&self) -> bool {
        self.text().lines().any(|line| lost_variable(line).is_some())
    }

    /// The held text as events, in order, then one message per lost variable for the cell
    /// being run (no cell number: the request under way).
    fn release(&mut self) -> Vec<EngineEvent> {
        let mut events = Vec::new();
        let mut lost = Vec::new();
        let mut pieces = std::mem::take(&mut self.pieces).into_iter().peekable();
        while let Some((cell, mut text)) = pieces.next() {
            // One write can come in pieces: join a cell's consecutive text first.
            while let Some((_, more)) = pieces.next_if(|(next_cell, _)| *next_cell == cell) {
                text.push_str(&more);
            }
            let mut kept = String::new();
            for line in text.split_inclusive('\n') {
                match lost_variable(line.trim_end_matches('\n')) {
                    Some(name) => lost.push(name.to_owned()),
                    None => kept.push_str(line),
                }
            }
            if !kept.is_empty() {
                events.push(EngineEvent::Output { cell, output: Output::Stream { name: StreamName::Stderr, text: kept } });
            }
        }
        for name in lost {
            let text = format!(
                "`{name}` was lost: the type of its value was defined again (a `struct`, `enum` or \
                 other type it holds was written anew), and a value made with the old definition \
                 cannot be kept as one of the new. Run the code that makes `{name}` again.\n"
            );
            events.push(EngineEvent::Output { cell: None, output: Output::Notice { text } });
        }
        events
    }
}

/// Reads user-process records on a background thread for as long as the kernel lives.
pub(crate) struct OutputReader {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    /// For held text released when a cell ends without starting.
    sink: EventSink,
}

impl OutputReader {
    /// `generated_source`: the file evcxr writes each cell's crate to.
    pub fn start(listener: UnixListener, sink: EventSink, generated_source: std::path::PathBuf) -> OutputReader {
        let shared = Arc::new((Mutex::new(Shared { generated_source, ..Shared::default() }), Condvar::new()));
        let reader_shared = Arc::clone(&shared);
        let reader_sink = Arc::clone(&sink);
        std::thread::Builder::new()
            .name("user-output".into())
            .spawn(move || {
                // One connection per user process; a restarted process connects again.
                for connection in listener.incoming().flatten() {
                    read_connection(connection, &reader_shared, &reader_sink);
                }
            })
            .expect("could not start the output reader thread");
        OutputReader { shared, sink }
    }

    /// Notes the code of the cell about to run (after [`OutputReader::begin_cell`]): its
    /// `dbg!` lines are then shown with the cell's line and column.
    pub fn note_cell_code(&self, code: &str) {
        self.shared.0.lock().unwrap().running_code = Some(code.into());
    }

    /// Prepares for a new cell run.
    pub fn begin_cell(&self, input: InputReader, child_pid: Option<i32>) {
        let mut shared = self.shared.0.lock().unwrap();
        shared.running_code = None;
        shared.fate = CellFate::default();
        shared.input = Some(input);
        shared.interrupt_when_started = false;
        shared.child_pid = child_pid;
        shared.execution += 1;
    }

    /// Waits until the user process said the cell's output is complete, then returns what the
    /// cell's records said. Gives up after `timeout` without a record read (or a minute in
    /// all): while output still comes, the cell's end is behind it, and the reply must not
    /// overtake that output (a grader would lose it, and the error after it).
    /// `process_died`: the user process died during the cell (its output ends with its
    /// connection, not with a `cell-end` record).
    pub fn finish_cell(&self, timeout: Duration, process_died: bool) -> CellFate {
        const AT_MOST: Duration = Duration::from_secs(60);
        let (lock, ended) = &*self.shared;
        let mut shared = lock.lock().unwrap();
        let started = Instant::now();
        let mut last_progress = started;
        let mut records_seen = shared.records_read;
        loop {
            if shared.fate.ended || (process_died && shared.fate.process_ended) {
                break;
            }
            let quiet_for = last_progress.elapsed();
            if quiet_for >= timeout || started.elapsed() >= AT_MOST {
                break;
            }
            let slice = (timeout - quiet_for).min(Duration::from_millis(100));
            shared = ended.wait_timeout(shared, slice).unwrap().0;
            if shared.records_read != records_seen {
                records_seen = shared.records_read;
                last_progress = Instant::now();
            }
        }
        shared.input = None;
        shared.interrupt_when_started = false;
        let held = shared.held_stderr.release();
        let fate = std::mem::take(&mut shared.fate);
        drop(shared);
        for event in held {
            (self.sink)(event);
        }
        fate
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

    /// The cell that the latest output was credited to.
    pub fn last_output_cell(&self) -> Option<u64> {
        self.shared.0.lock().unwrap().current_cell
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
    // A new user process numbers its cells from 1 again.
    shared.0.lock().unwrap().sources.clear();
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
        match serde_json::from_str::<Record>(&line) {
            Ok(record) => handle_record(record, shared, sink, &mut replies),
            Err(error) => eprintln!("rust-async: ignored a record the user process sent: {error}"),
        }
    }
}

fn handle_record(
    record: Record,
    shared: &Arc<(Mutex<Shared>, Condvar)>,
    sink: &EventSink,
    replies: &mut UnixStream,
) {
    let (lock, ended) = &**shared;
    let mut state = lock.lock().unwrap();
    state.records_read += 1;
    let cell = state.current_cell;
    match record {
        Record::Stream { stream: name, mut text } => {
            if name == StreamName::Stderr && text.contains(protocol::DEBUG_LOCATION) {
                text = locate_debug_prints(&text, cell.and_then(|cell| state.sources.get(&cell)));
            }
            // A timeline's rows printed (`row.spawned_at`).
            if text.contains(protocol::CELL_LOCATION) {
                text = locate_cell_places(&text, cell.and_then(|cell| state.sources.get(&cell)));
            }
            let capturing = state.fate.error_type.is_some() && !state.fate.question_mark_error;
            if name == StreamName::Stderr && capturing && !state.fate.ended {
                // evcxr prints the error a `?` returned; it becomes the cell's error instead.
                state.fate.error_text.push_str(&text);
                return;
            }
            // Between a cell's sending (`input` set) and its start (`fate.cell` set).
            if name == StreamName::Stderr && state.input.is_some() && state.fate.cell.is_none() {
                state.held_stderr.pieces.push((cell, text));
                if state.held_stderr.may_be_evcxr_notices() {
                    return;
                }
                let held = state.held_stderr.release();
                drop(state);
                for event in held {
                    sink(event);
                }
                return;
            }
            drop(state);
            sink(EngineEvent::Output { cell, output: Output::Stream { name, text } });
        }
        Record::CellStart { cell: number } => {
            if let Some(code) = state.running_code.clone() {
                // evcxr wrote the cell's crate just before it compiled and ran it.
                let generated = std::fs::read_to_string(&state.generated_source).unwrap_or_default();
                state.sources.insert(number, CellSources { code, generated: generated.into() });
                while state.sources.len() > SOURCES_KEPT {
                    state.sources.pop_first();
                }
            }
            let held = state.held_stderr.release();
            state.current_cell = Some(number);
            state.fate.cell = Some(number);
            if std::mem::take(&mut state.interrupt_when_started) {
                if let Some(pid) = state.child_pid {
                    send_sigint(pid);
                }
            }
            drop(state);
            for event in held {
                sink(event);
            }
            sink(EngineEvent::CellStarted(number));
        }
        Record::OutputOf { cell: number } => state.current_cell = Some(number),
        // The first panic is the cell's: more can follow only while it unwinds (a `Drop`
        // that panics too), and then the process aborts.
        Record::Panic(_) if state.fate.panic.is_some() => {}
        Record::Panic(panic) => state.fate.panic = Some(panic),
        Record::Interrupted => state.fate.interrupted = true,
        Record::ErrorType { type_name } => state.fate.error_type = Some(type_name),
        Record::QuestionMarkError => state.fate.question_mark_error = true,
        Record::Display { mut data, display_id, update } => {
            let sources = cell.and_then(|cell| state.sources.get(&cell));
            for text in data.as_object_mut().into_iter().flat_map(|bundle| bundle.values_mut()) {
                if let Some(located) = text.as_str().filter(|text| text.contains(protocol::CELL_LOCATION)) {
                    *text = locate_cell_places(located, sources).into();
                }
            }
            drop(state);
            sink(EngineEvent::Output { cell, output: Output::Display { data, display_id, update } });
        }
        Record::ClearOutput { wait } => {
            drop(state);
            sink(EngineEvent::Output { cell, output: Output::ClearOutput { wait } });
        }
        Record::Notice { text } => {
            drop(state);
            sink(EngineEvent::Output { cell, output: Output::Notice { text } });
        }
        // A first run that evcxr stopped to drop lost variables; it runs the cell again.
        Record::CellEnd if state.fate.cell.is_none() && state.held_stderr.has_notice() => {}
        Record::CellEnd => {
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
        Record::InputRequest { prompt } => {
            let input = state.input.clone();
            drop(state);
            let line = input.and_then(|input| input(&prompt));
            if line.is_none() {
                let text = "stdin gave no line, so reading it fails: the front end does not allow \
                            input (as when a notebook is run by nbconvert or a grader), or the \
                            cell was interrupted while it waited for one.\n".to_owned();
                sink(EngineEvent::Output { cell, output: Output::Notice { text } });
            }
            let _ = records::send_line(replies, &InputReply { line });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dbg_location_becomes_the_cells_line_and_column() {
        let sources = CellSources {
            code: "let a = 2;\ndbg!(a + 1);".into(),
            generated: "fn f() {\n    let a = 2;\n    dbg!(a + 1);\n}".into(),
        };
        let mark = protocol::DEBUG_LOCATION;
        let text = format!("before\n{mark}3:5\u{1e} a + 1 = 3\n{mark}9:1\u{1e} x = 1\n");
        assert_eq!(
            locate_debug_prints(&text, Some(&sources)),
            "before\n[cell line 2, column 1] a + 1 = 3\n[dbg in code of an earlier cell] x = 1\n"
        );
        assert_eq!(locate_debug_prints(&format!("{mark}3:5\u{1e} v\n"), None), "[dbg in code of an earlier cell] v\n");
    }

    /// The released events as (cell, text): stderr text as it was, a notice marked "notice: ".
    fn streams(events: &[EngineEvent]) -> Vec<(Option<u64>, String)> {
        events
            .iter()
            .map(|event| match event {
                EngineEvent::Output { cell, output: Output::Stream { name: StreamName::Stderr, text } } => (*cell, text.clone()),
                EngineEvent::Output { cell, output: Output::Notice { text } } => (*cell, format!("notice: {text}")),
                _ => panic!("only stderr text is held"),
            })
            .collect()
    }

    #[test]
    fn evcxr_lost_variable_lines_become_a_message_for_the_running_cell() {
        let mut held = HeldStderr::default();
        // One eprintln! arrives in pieces; a task of cell 2 prints meanwhile.
        held.pieces.push((Some(3), "The type of the variable p".into()));
        held.pieces.push((Some(3), " was redefined, so was lost.\n".into()));
        held.pieces.push((Some(2), "task of cell 2\n".into()));
        let released = streams(&held.release());
        assert_eq!(released[0], (Some(2), "task of cell 2\n".to_owned()));
        assert_eq!(released.len(), 2);
        assert_eq!(released[1].0, None);
        assert!(released[1].1.starts_with("notice: `p` was lost: the type of its value was defined again"), "{}", released[1].1);
        assert!(held.release().is_empty(), "released once");
    }

    #[test]
    fn only_what_may_be_evcxrs_notice_is_held() {
        let mut held = HeldStderr::default();
        held.pieces.push((Some(3), "The type of the var".into()));
        assert!(held.may_be_evcxr_notices());
        held.pieces.push((Some(3), "iable p was redefined, so was lost.\n".into()));
        assert!(held.may_be_evcxr_notices() && held.has_notice());
        held.pieces.push((Some(2), "warning from a task\n".into()));
        assert!(!held.may_be_evcxr_notices());
        let mut other = HeldStderr::default();
        other.pieces.push((Some(2), "error: ".into()));
        assert!(!other.may_be_evcxr_notices() && !other.has_notice());
    }

    #[test]
    fn other_held_text_is_released_unchanged_where_it_belonged() {
        let mut held = HeldStderr::default();
        held.pieces.push((Some(4), "warning: the type of the variable is fine\n".into()));
        held.pieces.push((Some(4), "no newline".into()));
        assert_eq!(
            streams(&held.release()),
            vec![(Some(4), "warning: the type of the variable is fine\nno newline".to_owned())]
        );
    }
}
