//! What the user process tells the engine, as types: one [`Record`] per JSON line on the
//! output socket, and one [`InputReply`] line back for each [`Record::InputRequest`]. The user
//! process's output forwarder (`user_process`) writes them; the engine's output reader
//! (`output`) matches them exhaustively. The runtime library's own records, which the
//! forwarder reads out of the user's stdout, are [`RuntimeRecord`]s (`protocol`): the
//! forwarder turns each into a `Record` with [`Record::from_runtime`].

use crate::protocol::{self, RuntimeRecord};
use crate::StreamName;
use serde::{Deserialize, Serialize};
use std::io::Write;

/// One message from the user process to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub(crate) enum Record {
    /// Text the user's code wrote (consecutive writes of one stream, joined).
    Stream { stream: StreamName, text: String },
    /// Cell `cell`'s implicit async block starts running.
    CellStart { cell: u64 },
    /// The output that follows belongs to cell `cell` (the cell or a task it spawned).
    OutputOf { cell: u64 },
    /// The cell's own code panicked.
    Panic(PanicRecord),
    /// The cell was cancelled at an await point by an interrupt.
    Interrupted,
    /// The error a `?` is about to return from the cell has this type; evcxr prints the
    /// error itself next, on stderr.
    ErrorType { type_name: String },
    /// Rich output for the current cell: a mime bundle.
    Display { data: serde_json::Value, display_id: Option<String>, update: bool },
    /// Clear the current cell's output (with `wait`: when new output arrives).
    ClearOutput { wait: bool },
    /// The kernel's own notice under the current cell (from the engine's side of the output
    /// socket: the note that a cell's output was cut short).
    Notice { text: String },
    /// evcxr's loop finished the cell: everything the cell wrote was sent before this.
    CellEnd,
    /// evcxr's loop reports that the cell returned an error through `?`.
    QuestionMarkError,
    /// User code is blocked reading stdin: the engine answers with an [`InputReply`].
    InputRequest { prompt: String },
}

/// The engine's answer to a [`Record::InputRequest`]: a line, or none (the read then ends at
/// once with end of input: the front end allows no input, or the cell was interrupted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct InputReply {
    pub line: Option<String>,
}

/// A panic of the cell's own code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PanicRecord {
    pub message: String,
    /// The source file of the panic's location: `src/lib.rs` is the cell's crate (evcxr's
    /// generated source), anything else a library.
    pub file: String,
    pub line: u32,
    pub column: u32,
}

impl PanicRecord {
    /// The panic's location is in the cell's crate, not in a library.
    pub fn in_cell_crate(&self) -> bool {
        self.file == "src/lib.rs"
    }
}

impl Record {
    /// The record the engine gets for one of the runtime library's; `None` for
    /// [`RuntimeRecord::ExitFlush`], which the forwarder answers itself.
    pub fn from_runtime(record: RuntimeRecord) -> Option<Record> {
        Some(match record {
            RuntimeRecord::CellStart { cell } => Record::CellStart { cell },
            RuntimeRecord::OutputOf { cell } => Record::OutputOf { cell },
            RuntimeRecord::Panic { message, file, line, column } => Record::Panic(PanicRecord { message, file, line, column }),
            RuntimeRecord::Interrupted => Record::Interrupted,
            RuntimeRecord::ErrorType { type_name } => Record::ErrorType { type_name },
            RuntimeRecord::Display { bundle, display_id, update } => {
                let bundle = bundle.into_iter().map(|(mime_type, data)| (mime_type, serde_json::Value::String(data)));
                Record::Display { data: serde_json::Value::Object(bundle.collect()), display_id, update }
            }
            RuntimeRecord::ClearOutput { wait } => Record::ClearOutput { wait },
            RuntimeRecord::ExitFlush => return None,
        })
    }
}

/// Sends `record` to the engine, in one write (threads of the user process share the socket).
pub(crate) fn send_record(kernel: &std::sync::Mutex<std::os::unix::net::UnixStream>, record: &Record) {
    if let Ok(mut kernel) = kernel.lock() {
        let _ = send_line(&mut *kernel, record);
    }
}

/// Writes `message` as one JSON line.
pub(crate) fn send_line(to: &mut impl Write, message: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_string(message).map_err(std::io::Error::other)?;
    line.push('\n');
    to.write_all(line.as_bytes())
}

/// Reads a runtime record: the text after [`protocol::MARKER`] on its line. `None` for
/// anything that is not one (a kind this engine does not know, a payload that does not
/// parse): it is dropped, as the user's output never contains the marker.
pub(crate) fn decode_runtime_record(text: &str) -> Option<RuntimeRecord> {
    #[derive(Deserialize)]
    struct PanicPayload {
        message: String,
        file: String,
        line: u32,
        column: u32,
    }
    #[derive(Deserialize)]
    struct DisplayPayload {
        data: std::collections::BTreeMap<String, String>,
        display_id: Option<String>,
        update: bool,
    }
    let (kind, payload) = text.split_once(' ').unwrap_or((text, ""));
    Some(match kind {
        protocol::CELL_START => RuntimeRecord::CellStart { cell: payload.trim().parse().ok()? },
        protocol::OUTPUT_OF => RuntimeRecord::OutputOf { cell: payload.trim().parse().ok()? },
        protocol::PANIC => {
            let PanicPayload { message, file, line, column } = serde_json::from_str(payload).ok()?;
            RuntimeRecord::Panic { message, file, line, column }
        }
        protocol::INTERRUPTED => RuntimeRecord::Interrupted,
        protocol::ERROR_TYPE => RuntimeRecord::ErrorType { type_name: payload.to_owned() },
        protocol::DISPLAY => {
            let DisplayPayload { data, display_id, update } = serde_json::from_str(payload).ok()?;
            RuntimeRecord::Display { bundle: data.into_iter().collect(), display_id, update }
        }
        protocol::CLEAR_OUTPUT => RuntimeRecord::ClearOutput { wait: payload.trim() == "true" },
        protocol::EXIT_FLUSH => RuntimeRecord::ExitFlush,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runtime_record_reads_back_as_written() {
        let records = [
            RuntimeRecord::CellStart { cell: 3 },
            RuntimeRecord::OutputOf { cell: 12 },
            RuntimeRecord::Panic { message: "oh \"no\"\n\ttab \u{1}".into(), file: "src/lib.rs".into(), line: 7, column: 9 },
            RuntimeRecord::Interrupted,
            RuntimeRecord::ErrorType { type_name: "core::num::error::ParseIntError".into() },
            RuntimeRecord::Display { bundle: vec![("text/html".into(), "<b>ünï</b>\n".into())], display_id: None, update: false },
            RuntimeRecord::Display {
                bundle: vec![("image/svg+xml".into(), "<svg/>".into()), ("text/plain".into(), "a \"figure\"".into())],
                display_id: Some("rust-async-7-1".into()),
                update: true,
            },
            RuntimeRecord::ClearOutput { wait: true },
            RuntimeRecord::ClearOutput { wait: false },
            RuntimeRecord::ExitFlush,
        ];
        for record in records {
            let line = record.encode();
            let text = line.strip_prefix(protocol::MARKER).and_then(|rest| rest.strip_suffix('\n')).unwrap();
            assert_eq!(decode_runtime_record(text), Some(record));
        }
        assert_eq!(decode_runtime_record("no-such-kind 1"), None);
        assert_eq!(decode_runtime_record("cell-start x"), None);
    }

    #[test]
    fn records_travel_as_json_lines_and_back() {
        let records = [
            Record::Stream { stream: StreamName::Stderr, text: "a\nb".into() },
            Record::Panic(PanicRecord { message: "m".into(), file: "src/lib.rs".into(), line: 1, column: 2 }),
            Record::Display { data: serde_json::json!({ "text/html": "<i>x</i>" }), display_id: Some("d".into()), update: true },
            Record::CellEnd,
            Record::InputRequest { prompt: String::new() },
        ];
        for record in records {
            let mut line = Vec::new();
            send_line(&mut line, &record).unwrap();
            assert_eq!(line.iter().filter(|&&byte| byte == b'\n').count(), 1, "one line");
            assert_eq!(serde_json::from_slice::<Record>(&line).unwrap(), record);
        }
        let reply: InputReply = serde_json::from_str(r#"{"line":null}"#).unwrap();
        assert_eq!(reply.line, None);
    }

    #[test]
    fn a_runtime_display_becomes_a_mime_bundle() {
        let bundle = vec![("text/markdown".into(), "*x*".into()), ("text/plain".into(), "x".into())];
        let record = Record::from_runtime(RuntimeRecord::Display { bundle, display_id: Some("d1".into()), update: false });
        let data = serde_json::json!({ "text/markdown": "*x*", "text/plain": "x" });
        assert_eq!(record, Some(Record::Display { data, display_id: Some("d1".into()), update: false }));
        assert_eq!(Record::from_runtime(RuntimeRecord::ExitFlush), None);
    }
}
