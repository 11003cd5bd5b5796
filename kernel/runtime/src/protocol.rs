// The control records the runtime library writes into the user process's stdout, between the
// user's own output. This one file is the single source of these names: the runtime library
// declares it as a module, the engine `include!`s it, so the two sides cannot drift apart.
//
// A record is one write of `MARKER kind [payload]\n`. Stdout of the user process is a datagram
// socket (see the engine's `user_process` module), so one write is one datagram and a record is
// never torn apart or mixed with another thread's output.

/// Starts every control record. ASCII "record separator" makes it unlikely in real output.
pub const MARKER: &str = "\u{1e}rust-async:";

/// `cell-start N`: the implicit async block of cell N starts running.
pub const CELL_START: &str = "cell-start";
/// `output-of N`: the output that follows was written by code belonging to cell N
/// (the cell itself or a task it spawned).
pub const OUTPUT_OF: &str = "output-of";
/// `panic {json}`: the cell's own code panicked: message and location in the generated source.
pub const PANIC: &str = "panic";
/// `interrupted`: the cell was cancelled at an await point by an interrupt.
pub const INTERRUPTED: &str = "interrupted";
/// `error-type NAME`: the error a `?` is about to return from the cell has this type.
pub const ERROR_TYPE: &str = "error-type";
/// `display {json}`: rich output (a Jupyter mime bundle) for the current cell.
pub const DISPLAY: &str = "display";
/// `clear-output true|false`: clear the current cell's output (`true`: when new output arrives).
pub const CLEAR_OUTPUT: &str = "clear-output";

/// `exit-flush`: the process is exiting (`std::process::exit`). The user process's output
/// forwarder reads it after everything written before, sends that on, then answers with a
/// datagram to the abstract socket [`exit_ack_socket_name`], which the exit waits for (a
/// second at most): without it, the last lines printed before an exit were lost.
pub const EXIT_FLUSH: &str = "exit-flush";

/// Begins the location of a `dbg!` in stderr text: `{DEBUG_LOCATION}LINE:COLUMN\u{1e}`, where
/// LINE:COLUMN is in the generated source. The kernel puts the cell's own line and column in
/// its place (it knows the cell's code and its generated source; the user process does not).
pub const DEBUG_LOCATION: &str = "\u{1e}dbg:";

/// The abstract Unix socket name on which the exiting process `pid` awaits the answer to
/// [`EXIT_FLUSH`].
pub fn exit_ack_socket_name(pid: u32) -> String {
    format!("rust-async-{pid}-exit")
}

/// Environment variable of the user process: the file in which the kernel keeps evcxr's `:fmt`
/// and `:types` settings for a cell's final value (`types` or an empty line, then the format).
/// No file: the default, `{:?}` without the type.
pub const FINAL_VALUE_FORMAT_ENV: &str = "RUST_ASYNC_FINAL_VALUE_FORMAT";
