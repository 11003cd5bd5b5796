//! The execution engine: runs notebook cells with evcxr, every cell inside an implicit `async`
//! block on the kernel's one shared tokio runtime.
//!
//! Key design choice: the engine returns plain data and knows nothing of Jupyter's messages. A
//! cell ends as a [`CellOutcome`] — success with an optional result, or a [`CellError`]: a
//! kind, a message, and the places in the cell's own lines it points at, as data ([`render`]
//! is the one place that turns it into the coloured text a notebook shows). Broken user code
//! is a normal outcome, never an `Err` of the engine. Output that appears while cells run, or
//! afterwards from tasks they spawned, arrives as [`EngineEvent`]s on a sink the front end
//! provides, tagged with the number of the cell it belongs to.
//!
//! The runtime library (`kernel/runtime`) is the crate cells know as `tokio`; the engine knows it
//! only through its source path and the record format of its `protocol` module.
//!
//! The engine's parts: `start` (evcxr, the user process, the runtime library), `execute` (one
//! cell, from its [`cell_source`] to its outcome), `rewrites` (a cell rewritten and run again
//! to keep its variables), `completion` (Tab and Shift+Tab, through `analysis_process`),
//! `output` and `records` (what the user process says), `diagnostics`, `hints`, `refusals`
//! and `source_map` (errors that teach), `render`.

pub mod analysis_process;
pub mod cell_error;
mod cell_source;
mod commands;
mod completion;
mod dependency_build;
mod diagnostics;
mod early_return;
mod execute;
mod final_value_format;
mod future_values;
mod hints;
mod mir;
pub mod host;
mod interrupter;
pub mod is_complete;
pub mod memory_limit;
pub mod never_awaited;
mod output;
mod prelude;
mod records;
mod refusals;
pub mod render;
mod rewrites;
pub mod runtime_library;
pub mod rustc_wrapper;
mod source_map;
mod start;
mod statics;
pub mod user_process;
mod user_stdin;
pub mod variable_types;
mod work_dir;

// The engine reads the runtime library's records and writes none (its tests do).
#[path = "../../runtime/src/protocol.rs"]
#[cfg_attr(not(test), allow(dead_code))]
mod protocol;

pub use cell_error::{CellError, ErrorKind};
pub use interrupter::Interrupter;
pub use output::{EventSink, InputReader};

use output::OutputReader;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("could not start evcxr: {0}")]
    Evcxr(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the runtime library is not prepared at {0}: run scripts/setup")]
    RuntimeNotPrepared(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamName {
    Stdout,
    Stderr,
}

/// Output produced by user code.
#[derive(Debug, Clone)]
pub enum Output {
    Stream { name: StreamName, text: String },
    /// A mime bundle (`{"text/html": "..."}`). With a `display_id`, a later `update` of the
    /// same id replaces it where it was shown.
    Display { data: serde_json::Value, display_id: Option<String>, update: bool },
    ClearOutput { wait: bool },
    /// The kernel's own words under a cell, not the user's output: a warning (a future never
    /// awaited), a note (a variable lost, output cut short, statics started anew). Shown as a
    /// display, not on stderr: graders (nbgrader) score a test cell 0 for any stderr text, and
    /// a notice is no failure.
    Notice { text: String },
}

#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// Output of cell `cell` (or of a task it spawned); `None` when no cell ran yet.
    Output { cell: Option<u64>, output: Output },
    /// The cell being executed started running as cell number N.
    CellStarted(u64),
}

/// How one cell ended.
#[derive(Debug, Clone)]
pub enum CellOutcome {
    /// The cell ran to its end. `result` is the mime bundle of its final expression, if any.
    Success { result: Option<serde_json::Map<String, serde_json::Value>> },
    Failure(CellError),
}


/// Where and with what environment the notebook's user code runs: the kernel's own working
/// directory and environment, unless the engine was started ahead of time and then adopted by
/// a notebook (see [`Engine::adopt_session`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Session {
    pub cwd: PathBuf,
    pub env: std::collections::BTreeMap<String, String>,
}

impl Session {
    /// This process's working directory and environment (the variables whose name and value
    /// are UTF-8; `std::env::vars` would panic on the others).
    pub fn current() -> std::io::Result<Session> {
        let env = std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
            .collect();
        Ok(Session { cwd: std::env::current_dir()?, env })
    }
}

pub struct Completions {
    pub matches: Vec<String>,
    /// Character (not byte) offsets into the code of the text the matches replace.
    pub cursor_start: usize,
    pub cursor_end: usize,
}

pub struct Engine {
    context: evcxr::CommandContext,
    output: Arc<OutputReader>,
    process: Arc<Mutex<std::process::Child>>,
    killed_by_interrupt: Arc<AtomicBool>,
    /// The runtime library, the cells' dependency `tokio` (again after a `:clear`).
    runtime_library: runtime_library::RuntimeLibrary,
    /// The course crates every cell has (name, spec), as the runtime library lists them.
    course_crates: Vec<(String, String)>,
    /// How the cells get the runtime library and the course crates.
    linking: runtime_library::Linking,
    /// evcxr's cell crate.
    cell_dir: PathBuf,
    /// Shows under a cell how far cargo is with the crates it adds.
    dependency_build: Arc<dependency_build::DependencyBuild>,
    /// The symbol names given to the cells' statics, so that they last across cells.
    statics: statics::Statics,
    /// Why the last cell did not keep a variable (`variable_types`), when that is why it failed.
    types: Arc<Mutex<variable_types::Shared>>,
    /// Variables that a cell made but that were not kept (a closure, an iterator...), with why:
    /// for the hint under a later cell that names one.
    not_kept: std::collections::HashMap<String, variable_types::Unkept>,
    /// Shared with rust-analyzer's process: how long to wait for it, whether it is starting.
    analysis: Arc<analysis_process::AnalysisControl>,
    /// When rust-analyzer last answered a completion or an inspection (see
    /// [`Engine::stop_idle_analysis`]).
    analysis_used: Option<Instant>,
    /// evcxr's `:fmt` and `:types`, as the runtime library must show final values.
    final_value_format: final_value_format::FinalValueFormat,
    /// Where evcxr's output events go; the engine adds its own warnings.
    sink: EventSink,
    /// Every variable name a cell has kept so far: one that is gone since gets a hint.
    kept_variables: HashSet<String>,
    /// The user process found ended while idle and reported (its pid).
    reported_ended_process: Option<u32>,
    /// Cell sources and evcxr's working files; removed when the engine is dropped.
    work_dir: tempfile::TempDir,
}

/// Environment variable: `1` starts kernels offline (a `:dep` only finds crates in the
/// machine's cargo cache), as for an exam or a grader (`scripts/grade` sets it).
pub const OFFLINE_ENV: &str = "RUST_ASYNC_OFFLINE";

fn offline_setting() -> bool {
    std::env::var(OFFLINE_ENV).is_ok_and(|value| value == "1")
}

/// The path of this crate's sources, for locating the runtime library in a checkout.
pub fn source_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What every process of the kernel's binary does first, in `main`, before anything else:
/// this binary is also cargo's rustc wrapper while a cell compiles (`rustc_wrapper`),
/// rust-analyzer's process (`analysis_process`) and evcxr's user-code process
/// (`user_process`). In those roles this never returns; in the kernel's own process it
/// returns at once. A front end other than the Jupyter kernel (the engine's own tests) calls
/// it too.
pub fn serve_process_role() {
    rustc_wrapper::wrap_rustc_if_asked();
    let mut args = std::env::args_os().skip(1);
    if let (Some(command), Some(root)) = (args.next(), args.next()) {
        if command == analysis_process::ANALYSIS_COMMAND {
            analysis_process::serve(Path::new(&root));
        }
    }
    // In the user-code process: rewire its streams, then become evcxr's loop.
    user_process::prepare();
    evcxr::runtime_hook();
}
