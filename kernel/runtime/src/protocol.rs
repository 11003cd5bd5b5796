// The control records the runtime library writes into the user process's stdout, between the
// user's own output. This one file is the single source of their format: the runtime library
// declares it as a module and writes records with `RuntimeRecord::encode`; the engine
// `include!`s it and reads them back (its `records` module), so the two sides cannot drift
// apart. It has no dependencies: the runtime library carries no JSON crate of its own.
//
// A record is one write of `MARKER kind [payload]\n`. Stdout of the user process is a datagram
// socket (see the engine's `user_process` module), so one write is one datagram and a record is
// never torn apart or mixed with another thread's output.

/// Starts every control record. ASCII "record separator" makes it unlikely in real output.
pub const MARKER: &str = "\u{1e}rust-async:";

/// What the runtime library tells the kernel, between the user's output.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeRecord {
    /// The implicit async block of cell `cell` starts running.
    CellStart { cell: u64 },
    /// The output that follows was written by code belonging to cell `cell` (the cell itself
    /// or a task it spawned).
    OutputOf { cell: u64 },
    /// The cell's own code panicked: its message, and where (in the generated source when
    /// `file` is the cell crate's).
    Panic { message: String, file: String, line: u32, column: u32 },
    /// The cell was cancelled at an await point by an interrupt.
    Interrupted,
    /// The error a `?` is about to return from the cell has this type.
    ErrorType { type_name: String },
    /// Rich output for the current cell: a mime bundle, (mime type, data) pairs (binary data,
    /// such as a PNG, in base64). With a `display_id`, a later record with the same id and
    /// `update` replaces it where it was shown, from whichever cell or task sends it.
    Display { bundle: Vec<(String, String)>, display_id: Option<String>, update: bool },
    /// Clear the current cell's output (with `wait`: when new output arrives).
    ClearOutput { wait: bool },
    /// The process is exiting (`std::process::exit`). The user process's output forwarder
    /// reads it after everything written before, sends that on, then answers with a datagram
    /// to the abstract socket [`exit_ack_socket_name`], which the exit waits for (a second at
    /// most): without it, the last lines printed before an exit were lost.
    ExitFlush,
}

/// The kinds as they are written: each record's first word.
pub const CELL_START: &str = "cell-start";
pub const OUTPUT_OF: &str = "output-of";
pub const PANIC: &str = "panic";
pub const INTERRUPTED: &str = "interrupted";
pub const ERROR_TYPE: &str = "error-type";
pub const DISPLAY: &str = "display";
pub const CLEAR_OUTPUT: &str = "clear-output";
pub const EXIT_FLUSH: &str = "exit-flush";

impl RuntimeRecord {
    /// The record's kind (its first word) and payload: a number, a word, a type name, or a
    /// JSON object (`panic`: message, file, line, column; `display`: `data`, a mime bundle,
    /// `display_id` and `update`).
    pub fn kind_and_payload(&self) -> (&'static str, String) {
        match self {
            RuntimeRecord::CellStart { cell } => (CELL_START, cell.to_string()),
            RuntimeRecord::OutputOf { cell } => (OUTPUT_OF, cell.to_string()),
            RuntimeRecord::Panic { message, file, line, column } => (
                PANIC,
                format!(
                    "{{\"message\":{},\"file\":{},\"line\":{line},\"column\":{column}}}",
                    json_string(message),
                    json_string(file)
                ),
            ),
            RuntimeRecord::Interrupted => (INTERRUPTED, String::new()),
            RuntimeRecord::ErrorType { type_name } => (ERROR_TYPE, type_name.clone()),
            RuntimeRecord::Display { bundle, display_id, update } => {
                let data: Vec<String> =
                    bundle.iter().map(|(mime_type, data)| format!("{}:{}", json_string(mime_type), json_string(data))).collect();
                let display_id = display_id.as_deref().map_or_else(|| "null".to_owned(), json_string);
                (DISPLAY, format!("{{\"data\":{{{}}},\"display_id\":{display_id},\"update\":{update}}}", data.join(",")))
            }
            RuntimeRecord::ClearOutput { wait } => (CLEAR_OUTPUT, wait.to_string()),
            RuntimeRecord::ExitFlush => (EXIT_FLUSH, String::new()),
        }
    }

    /// The record as one line, ready to be written in one write.
    pub fn encode(&self) -> String {
        let (kind, payload) = self.kind_and_payload();
        format!("{MARKER}{kind} {payload}\n")
    }
}

/// `text` as a JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Begins the location of a `dbg!` in stderr text: `{DEBUG_LOCATION}LINE:COLUMN\u{1e}`, where
/// LINE:COLUMN is in the generated source. The kernel puts the cell's line and column in
/// its place (it knows the cell's code and its generated source; the user process does not).
pub const DEBUG_LOCATION: &str = "\u{1e}dbg:";

/// Begins a place in the cell's generated source inside display data (a timeline's spawn
/// locations): `{CELL_LOCATION}LINE:COLUMN\u{1e}`. The kernel puts "line N" of the cell in its
/// place, or "an earlier cell's code".
pub const CELL_LOCATION: &str = "\u{1e}at:";

/// Environment variable of the user process: a file whose presence asks the runtime library
/// to record the next cell as a timeline (a `:timeline` line atop it); the runtime removes it.
pub const TIMELINE_NEXT_CELL_ENV: &str = "RUST_ASYNC_TIMELINE_NEXT_CELL";

/// Environment variable of the user process: the file in which the kernel keeps which runtime
/// cells run on (`:runtime`): `current_thread`, `multi_thread` or `multi_thread N`. No file:
/// `multi_thread`.
pub const RUNTIME_FLAVOUR_ENV: &str = "RUST_ASYNC_RUNTIME_FLAVOUR";

/// The abstract Unix socket name on which the exiting process `pid` awaits the answer to
/// [`RuntimeRecord::ExitFlush`].
pub fn exit_ack_socket_name(pid: u32) -> String {
    format!("rust-async-{pid}-exit")
}

/// Environment variable of the user process: the file in which the kernel keeps evcxr's `:fmt`
/// and `:types` settings for a cell's final value (`types` or an empty line, then the format).
/// No file: the default, `{:?}` without the type.
pub const FINAL_VALUE_FORMAT_ENV: &str = "RUST_ASYNC_FINAL_VALUE_FORMAT";
