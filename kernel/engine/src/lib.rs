//! The execution engine: runs notebook cells with evcxr, every cell inside an implicit `async`
//! block on the kernel's one shared tokio runtime.
//!
//! Key design choice: the engine returns plain data and knows nothing of Jupyter. A cell ends
//! as a [`CellOutcome`] — success with an optional result, or a [`CellError`] with a name, a
//! message and a traceback pointing at the cell's own lines. Broken user code is a normal
//! outcome, never an `Err` of the engine. Output that appears while cells run, or afterwards
//! from tasks they spawned, arrives as [`EngineEvent`]s on a sink the front end provides,
//! tagged with the number of the cell it belongs to.
//!
//! The runtime library (`kernel/runtime`) is the crate cells know as `tokio`; the engine knows it
//! only through its source path and the record names of its `protocol` module.

pub mod analysis_process;
mod commands;
mod dependency_build;
pub mod diagnostics;
mod early_return;
mod future_values;
pub mod host;
pub mod is_complete;
pub mod never_awaited;
mod output;
pub mod runtime_library;
pub mod rustc_wrapper;
mod statics;
pub mod user_process;
pub mod variable_types;

#[path = "../../runtime/src/protocol.rs"]
mod protocol;

pub use output::{EventSink, InputReader};

use output::{CellFate, OutputReader};
use variable_types::UnkeptKind;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("could not start evcxr: {0}")]
    Evcxr(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the runtime library is not prepared at {0}: run scripts/setup")]
    RuntimeNotPrepared(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A failed cell, ready to be shown: `name` like `CompileError`, `Panic`, `Interrupted`,
/// `KernelRestarted` or the type of the error a `?` returned; `message` first line is the
/// useful one; `traceback` lines are ANSI-coloured.
#[derive(Debug, Clone, PartialEq)]
pub struct CellError {
    pub name: String,
    pub message: String,
    pub traceback: Vec<String>,
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

/// How long the request that starts rust-analyzer waits for it, when it is a Tab or a
/// Shift+Tab: the process starts, and is left to analyse.
const FIRST_ANALYSIS_PATIENCE: Duration = Duration::from_millis(100);

/// How long a cell's `:doc` waits for rust-analyzer (which may have to start first).
const CELL_ANALYSIS_PATIENCE: Duration = Duration::from_secs(120);

/// How many times a cell is rewritten to keep its variables (a future boxed, a type written),
/// one variable at a time.
const MAX_REWRITES: usize = 8;

/// How long a cell that ignores an interrupt (no await point reached) may go on before the
/// user process is restarted.
const INTERRUPT_GRACE: Duration = Duration::from_secs(3);

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
    final_value_format: FinalValueFormat,
    /// Where evcxr's output events go; the engine adds its own warnings.
    sink: EventSink,
    /// Every variable name a cell has kept so far: one that is gone since gets a hint.
    kept_variables: HashSet<String>,
    /// The user process found ended while idle and reported (its pid).
    reported_ended_process: Option<u32>,
    /// Cell sources and evcxr's working files; removed when the engine is dropped.
    work_dir: tempfile::TempDir,
}

/// Lets another thread interrupt the cell the engine is running.
#[derive(Clone)]
pub struct Interrupter {
    output: Arc<OutputReader>,
    process: Arc<Mutex<std::process::Child>>,
    killed_by_interrupt: Arc<AtomicBool>,
}

impl Interrupter {
    /// How many interrupt requests have arrived so far (see [`Engine::execute`]).
    pub fn interrupts(&self) -> u64 {
        self.output.interrupts()
    }

    /// Cancels the running cell at its current await point. A cell that does not reach an
    /// await point within a grace period is ended by restarting the user process. A cell that
    /// is still compiling (a `:dep` can take minutes) is stopped there: its cargo is ended.
    pub fn interrupt(&self) {
        if !self.output.interrupt() {
            host::kill_children_named("cargo");
        }
        let output = Arc::clone(&self.output);
        let process = Arc::clone(&self.process);
        let killed = Arc::clone(&self.killed_by_interrupt);
        std::thread::spawn(move || {
            // The grace period starts when the interrupt reaches a running cell: an interrupt
            // during compilation waits for the cell to start.
            let (execution, mut cell) = output.running_cell();
            while cell.is_none() {
                std::thread::sleep(Duration::from_millis(50));
                let (now, now_cell) = output.running_cell();
                if now != execution {
                    return;
                }
                cell = now_cell;
            }
            std::thread::sleep(INTERRUPT_GRACE);
            if output.running_cell() == (execution, cell) {
                killed.store(true, Ordering::SeqCst);
                if let Ok(mut child) = process.lock() {
                    let _ = child.kill();
                }
            }
        });
    }
}

impl Engine {
    /// Starts evcxr and its user-code process, with the runtime library as the cells' `tokio`,
    /// and switches every cell to async mode. `sink` receives output events from now on.
    pub fn start(library: &runtime_library::RuntimeLibrary, sink: EventSink) -> Result<Engine, EngineError> {
        Self::start_in(library, sink, None)
    }

    /// Like [`Engine::start`]; with `template`, cells are compiled in that directory, which is
    /// left in place (this is how the runtime library is prepared).
    pub(crate) fn start_in(
        library: &runtime_library::RuntimeLibrary,
        sink: EventSink,
        template: Option<&Path>,
    ) -> Result<Engine, EngineError> {
        let timing = Timing::from_env();
        remove_abandoned_work_dirs();
        let work_dir = tempfile::Builder::new().prefix(WORK_DIR_PREFIX).tempdir()?;
        std::fs::write(work_dir.path().join(OWNER_FILE), std::process::id().to_string())?;
        let socket_path = work_dir.path().join("output.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket_path)?;
        let cell_dir = template.map_or_else(|| work_dir.path().join("cell"), Path::to_path_buf);
        let output = Arc::new(OutputReader::start(listener, Arc::clone(&sink), cell_dir.join("src/lib.rs")));
        runtime_library::write_cargo_profile(&cell_dir)?;
        let config_dir = work_dir.path().join("config");
        std::fs::create_dir_all(&config_dir)?;
        // evcxr reads these in this process. The user process inherits them, like every
        // `EVCXR_` and `RUST_ASYNC_` variable, and keeps them when it takes on a session.
        std::env::set_var("EVCXR_TMPDIR", &cell_dir);
        std::env::set_var("EVCXR_CONFIG_DIR", &config_dir);
        let mut user_process = std::process::Command::new(std::env::current_exe()?);
        user_process.env(user_process::OUTPUT_SOCKET_ENV, &socket_path);
        user_process.env(user_process::SESSION_FILE_ENV, work_dir.path().join(SESSION_FILE));
        user_process.env(protocol::FINAL_VALUE_FORMAT_ENV, work_dir.path().join(FINAL_VALUE_FORMAT_FILE));
        // New variables are typed by rustc (`variable_types`): rust-analyzer starts only for a
        // completion or an inspection.
        let mir_file = work_dir.path().join(CELL_MIR_FILE);
        let types = Arc::new(Mutex::new(variable_types::Shared::default()));
        let course_names: Vec<String> = library.course_crates()?.into_iter().map(|(name, _)| name).collect();
        let variable_types = Box::new(variable_types::FromCompiler::new(
            mir_file.clone(),
            cell_dir.clone(),
            course_names,
            library.template_lock_file(),
            Arc::clone(&types),
        ));
        let (mut eval_context, evcxr_outputs) =
            evcxr::EvalContext::with_subprocess_command_and_variable_types(user_process, Some(variable_types))
                .map_err(|error| EngineError::Evcxr(error.to_string()))?;
        let analysis_root = work_dir.path().join(ANALYSIS_DIR);
        let analysis_crate = Arc::new(analysis_process::AnalysisCrate {
            cell_dir: cell_dir.clone(),
            runtime_manifest: library.analysis_manifest()?,
            course_crates: library.course_crates()?,
            lock_file: library.template_lock_file(),
        });
        let analysis = Arc::new(analysis_process::AnalysisControl::default());
        let starter_analysis = Arc::clone(&analysis);
        eval_context.set_analysis_starter(Box::new(move |_| {
            let control = Arc::clone(&starter_analysis);
            Ok(Box::new(analysis_process::AnalysisProcess::start(Arc::clone(&analysis_crate), &analysis_root, control)?))
        }));
        // Our user process sends its output through the socket; evcxr's own channels only carry
        // what escapes that (nothing, normally). Drain them so they never fill up.
        for channel in [evcxr_outputs.stdout, evcxr_outputs.stderr] {
            std::thread::spawn(move || for _ in channel {});
        }
        timing.note("evcxr context (first compile)");
        let process = eval_context.process_handle();
        // The template is built with cargo dependencies (`Linking::Cargo`): that is how they
        // are built, and how the list of `--extern`s for the others is made.
        let linking = if template.is_some() { runtime_library::Linking::Cargo } else { library.linking() };
        if linking == runtime_library::Linking::Cargo {
            library.seed_cell_dir(&cell_dir, template.is_some())?;
        }
        let mut state = eval_context.state();
        // Online unless told otherwise (`:dep` downloads); the template is built from what
        // `cargo fetch` fetched first.
        state.set_offline_mode(template.is_some() || offline_setting());
        state
            .set_opt_level(runtime_library::CELL_OPT_LEVEL)
            .map_err(|error| EngineError::Evcxr(error.to_string()))?;
        // Replaces evcxr's own RUSTFLAGS (only `-Cprefer-dynamic`, with no lld installed).
        state.set_build_env("RUSTFLAGS", runtime_library::CELL_RUSTFLAGS);
        // This binary wraps rustc to note futures that are never awaited (`never_awaited`) and
        // to have the cell's MIR written (`variable_types`).
        state.set_build_env("RUSTC_WRAPPER", &std::env::current_exe()?.to_string_lossy());
        state.set_build_env(
            never_awaited::NOTES_FILE_ENV,
            &work_dir.path().join(NEVER_AWAITED_FILE).to_string_lossy(),
        );
        state.set_build_env(variable_types::CELL_MIR_ENV, &mir_file.to_string_lossy());
        // cargo's progress, shown under a cell that adds a crate (`dependency_build`).
        let dependency_build = Arc::new(dependency_build::DependencyBuild::new(&cell_dir));
        let watching = Arc::clone(&dependency_build);
        evcxr::set_cargo_line_hook(Box::new(move |line| watching.cargo_line(line)));
        let course_crates = library.course_crates()?;
        library.configure_cells(&mut state, &linking, &course_crates)?;
        if let Some(building) = template {
            library.record_cell_externs(&mut state, building);
        }
        timing.note("runtime library seeded");
        output.begin_cell(silent_input(), None);
        let prelude = eval_context.eval_with_state(PRELUDE, state);
        let fate = output.finish_cell(Duration::from_secs(5), false);
        timing.note("prelude (async mode on)");
        if let CellOutcome::Failure(error) = outcome(PRELUDE, PRELUDE, "", prelude, fate, false, false) {
            return Err(EngineError::Evcxr(format!(
                "the kernel's prelude failed: {}\n{}",
                error.message,
                error.traceback.join("\n")
            )));
        }
        Ok(Engine {
            context: evcxr::CommandContext::with_eval_context(eval_context),
            output,
            process,
            killed_by_interrupt: Arc::new(AtomicBool::new(false)),
            runtime_library: library.clone(),
            types,
            not_kept: std::collections::HashMap::new(),
            statics: statics::Statics::default(),
            dependency_build,
            course_crates,
            linking,
            cell_dir,
            analysis,
            analysis_used: None,
            final_value_format: FinalValueFormat::default(),
            sink,
            kept_variables: HashSet::new(),
            reported_ended_process: None,
            work_dir,
        })
    }

    pub fn interrupter(&self) -> Interrupter {
        Interrupter {
            output: Arc::clone(&self.output),
            process: Arc::clone(&self.process),
            killed_by_interrupt: Arc::clone(&self.killed_by_interrupt),
        }
    }

    /// Makes an engine started ahead of time run user code in the notebook's session: its
    /// working directory for this process, and both for a restarted user process (the one
    /// started with the engine has the starter's directory and environment). Call before the
    /// first cell: the user process's state is lost.
    pub fn adopt_session(&mut self, session: &Session) -> Result<(), EngineError> {
        std::fs::write(self.work_dir.path().join(SESSION_FILE), serde_json::to_vec(session).unwrap_or_default())?;
        std::env::set_current_dir(&session.cwd)?;
        self.context
            .execute(":restart")
            .map(|_| ())
            .map_err(|error| EngineError::Evcxr(format!("could not restart the user process: {error}")))
    }

    /// Runs one cell. Output streams to the sink while it runs; when this returns, every
    /// output of the cell has been handed to the sink.
    ///
    /// `interrupts_at_send` is [`Interrupter::interrupts`] when the cell was sent: an interrupt
    /// after that, while the cell waited for the engine (behind a completion, say), stops it
    /// before it starts.
    pub fn execute(&mut self, code: &str, input: InputReader, interrupts_at_send: u64) -> CellOutcome {
        if let Some(error) =
            diagnostics::refuse_kernel_crate_dependency(code, self.course_crates.iter().map(|(name, _)| name.as_str()))
                .or_else(|| diagnostics::refuse_unsupported_command(code, offline_setting()))
                .or_else(|| diagnostics::refuse_cell_level_return(code))
        {
            return CellOutcome::Failure(error);
        }
        if self.output.interrupts() > interrupts_at_send {
            return CellOutcome::Failure(diagnostics::interrupted_before_start());
        }
        // Ended before this cell (the idle check had not come yet): said under this cell,
        // which then runs in a new process.
        self.replace_ended_process(None);
        // `:doc` waits for rust-analyzer as long as it takes: the student asked in a cell.
        self.analysis.set_patience(CELL_ANALYSIS_PATIENCE);
        if code.trim() == ":help" {
            // evcxr's list names commands that this kernel refuses or that only serve evcxr's
            // own debugging.
            let mut result = serde_json::Map::new();
            result.insert("text/plain".into(), COMMANDS_HELP.into());
            return CellOutcome::Success { result: Some(result) };
        }
        if self.linking != runtime_library::Linking::Cargo && adds_a_crate(code) {
            if let Err(error) = self.use_cargo_dependencies() {
                return CellOutcome::Failure(error);
            }
        }
        let mut code = std::borrow::Cow::Borrowed(code);
        if let Some(rest) = without_command(&code, ":clear") {
            if let Err(error) = self.clear() {
                return CellOutcome::Failure(error);
            }
            code = std::borrow::Cow::Owned(rest);
        }
        let mut restarted = false;
        if let Some(rest) = without_command(&code, ":restart") {
            if let Err(error) = self.restart_user_process() {
                return CellOutcome::Failure(error);
            }
            restarted = true;
            code = std::borrow::Cow::Owned(rest);
        }
        let outcome = self.execute_code(&code, input, interrupts_at_send);
        match outcome {
            CellOutcome::Success { result: None } if restarted && code.trim().is_empty() => {
                let mut result = serde_json::Map::new();
                result.insert("text/plain".into(), RESTARTED.into());
                CellOutcome::Success { result: Some(result) }
            }
            outcome => outcome,
        }
    }

    /// When the user process ended while no cell ran it (a task called `std::process::exit`,
    /// or crashed), starts a new one at once and says so under the cell whose output came
    /// last: the student learns it when it happens, and the next cell is not blamed for it
    /// (nor kept waiting for a dead process). Called while idle; returns whether it had ended.
    pub fn restart_if_process_ended(&mut self) -> bool {
        let cell = self.output.last_output_cell();
        self.replace_ended_process(cell)
    }

    fn replace_ended_process(&mut self, credit_to: Option<u64>) -> bool {
        let ended = self.process.lock().ok().and_then(|mut child| Some((child.id(), child.try_wait().ok()??)));
        // Once per process: if no new one could be started, the old one stays ended.
        let Some((pid, status)) = ended.filter(|(pid, _)| self.reported_ended_process != Some(*pid)) else {
            return false;
        };
        self.reported_ended_process = Some(pid);
        let text = diagnostics::process_ended_between_cells(&status.to_string());
        (self.sink)(EngineEvent::Output { cell: credit_to, output: Output::Stream { name: StreamName::Stderr, text } });
        if let Err(error) = self.restart_user_process() {
            let text = format!("{}\n", error.message);
            (self.sink)(EngineEvent::Output { cell: credit_to, output: Output::Stream { name: StreamName::Stderr, text } });
        }
        true
    }

    fn execute_code(&mut self, code: &str, input: InputReader, interrupts_at_send: u64) -> CellOutcome {
        // Before the code runs, so that a `:fmt` at the top of a cell applies to the cell's own
        // value; kept only if the cell succeeds, as evcxr keeps a cell's commands.
        let format_before = self.final_value_format.clone();
        self.follow_display_commands(code);
        let outcome = self.execute_code_and_retry(code, input, interrupts_at_send);
        if let CellOutcome::Failure(_) = outcome {
            self.use_final_value_format(format_before);
        }
        outcome
    }

    fn execute_code_and_retry(&mut self, code: &str, input: InputReader, interrupts_at_send: u64) -> CellOutcome {
        match self.execute_code_once(code, Arc::clone(&input), interrupts_at_send) {
            // The process ended before this cell's code started: while the cell compiled, a
            // task called `std::process::exit`. That is not this cell's failure: say
            // so, as when it ends between cells, and run the cell in the new process that evcxr
            // started (once: a second end is the cell's own).
            Err(ProcessEndedBeforeStart { detail }) => {
                let text = diagnostics::process_ended_between_cells(diagnostics::exit_status_of(&detail));
                (self.sink)(EngineEvent::Output { cell: None, output: Output::Stream { name: StreamName::Stderr, text } });
                match self.execute_code_once(code, input, interrupts_at_send) {
                    Ok(outcome) => outcome,
                    Err(ProcessEndedBeforeStart { detail }) => {
                        CellOutcome::Failure(diagnostics::process_died(&detail, None))
                    }
                }
            }
            Ok(outcome) => outcome,
        }
    }

    /// Why the last compile did not keep a variable, once.
    fn take_rewrite(&self) -> Option<variable_types::Unkept> {
        self.types.lock().ok().and_then(|mut types| types.rewrite.take())
    }

    /// Runs the cell as written (`named`: with its statics' symbols) with `name` not kept: its
    /// `let` could not be rewritten to keep it.
    fn execute_without_keeping(&mut self, named: &str, name: &str) -> Result<evcxr::EvalOutputs, evcxr::Error> {
        if let Ok(mut types) = self.types.lock() {
            types.forget.insert(name.to_owned());
        }
        self.execute_rewritten(named)
    }

    /// Runs a cell the engine rewrote (its lines kept), noting that code for `dbg!` lines.
    fn execute_rewritten(&mut self, rewritten: &str) -> Result<evcxr::EvalOutputs, evcxr::Error> {
        self.output.note_cell_code(rewritten);
        self.context.execute(rewritten)
    }

    fn execute_code_once(
        &mut self,
        code: &str,
        input: InputReader,
        interrupts_at_send: u64,
    ) -> Result<CellOutcome, ProcessEndedBeforeStart> {
        let pid = self.process.lock().ok().map(|child| child.id() as i32);
        self.killed_by_interrupt.store(false, Ordering::SeqCst);
        self.output.begin_cell(input, pid);
        if self.output.interrupts() > interrupts_at_send {
            let _ = self.output.finish_cell(Duration::ZERO, false);
            return Ok(CellOutcome::Failure(diagnostics::interrupted_before_start()));
        }
        let notes = self.work_dir.path().join(NEVER_AWAITED_FILE);
        never_awaited::take_notes(&notes);
        if let Ok(mut types) = self.types.lock() {
            *types = variable_types::Shared::default();
        }
        let written = code;
        // Each static gets a symbol of its own, so that later cells share it (`statics`).
        let (named, defined_again) = self.statics.name_symbols(code);
        self.output.note_cell_code(&named);
        self.dependency_build.begin(Arc::clone(&self.sink));
        let mut result = self.context.execute(&named);
        self.dependency_build.finish(!matches!(result, Err(evcxr::Error::CompilationErrors(_)) | Err(evcxr::Error::Message(_))));
        let mut code = std::borrow::Cow::Owned(named.clone());
        // A variable of a type no later cell can write (`variable_types`) and that can be kept
        // all the same: a future, boxed into `tokio::Pending`; a never type or a function,
        // written on its `let` in a form that can be written. Then the (unrun) cell runs again;
        // where that cannot be done, it runs as written, without keeping the variable.
        for _ in 0..MAX_REWRITES {
            let Err(evcxr::Error::Message(_)) = &result else { break };
            let Some(unkept) = self.take_rewrite() else { break };
            let rewritten = match &unkept.kind {
                UnkeptKind::Future => future_values::box_future_binding(&code, &unkept.name),
                UnkeptKind::Writable(type_name) => future_values::annotate_let(&code, &unkept.name, type_name),
                _ => None,
            };
            let Some(rewritten) = rewritten else {
                (code, result) = (std::borrow::Cow::Owned(named.clone()), self.execute_without_keeping(&named, &unkept.name));
                continue;
            };
            let retried = self.execute_rewritten(&rewritten);
            let has_pin = future_values::heap_pin_statements(&rewritten).is_some();
            if let (Err(evcxr::Error::CompilationErrors(errors)), UnkeptKind::Future, false) = (&retried, &unkept.kind, has_pin) {
                if errors.iter().any(diagnostics::is_borrow_error) {
                    // The future borrows from the cell: explained in terms of the code the
                    // student wrote, not of our rewrite.
                    let _ = self.output.finish_cell(Duration::ZERO, false);
                    return Ok(CellOutcome::Failure(diagnostics::future_not_kept(&unkept.name, errors)));
                }
                // Not a future itself (futures in a collection, say): not kept.
                (code, result) = (std::borrow::Cow::Owned(named.clone()), self.execute_without_keeping(&named, &unkept.name));
                continue;
            }
            code = std::borrow::Cow::Owned(rewritten);
            result = retried;
        }
        // `let fut = async { x + 1 };`, a future that borrows the cell's `x`: a program could
        // keep it, but a variable kept for later cells must own what it holds.
        if let Err(evcxr::Error::CompilationErrors(errors)) = &result {
            if let Some(name) = errors.iter().find_map(|error| borrowing_future(&code, error)) {
                let _ = self.output.finish_cell(Duration::ZERO, false);
                return Ok(CellOutcome::Failure(diagnostics::future_not_kept(&name, errors)));
            }
        }
        if let Err(evcxr::Error::CompilationErrors(_)) = &result {
            if let Some(rewritten) = future_values::heap_pin_statements(&code) {
                let retried = self.execute_rewritten(&rewritten);
                if retried.is_ok() {
                    (code, result) = (std::borrow::Cow::Owned(rewritten), retried);
                }
            }
        }
        if let (Ok(outputs), true) = (&result, std::env::var_os("RUST_ASYNC_TIMING").is_some()) {
            let phases: Vec<String> = outputs
                .phases
                .iter()
                .map(|phase| format!("{} {:.0} ms", phase.name, phase.duration.as_secs_f64() * 1000.0))
                .collect();
            eprintln!("rust-async timing: cell phases: {}", phases.join(", "));
        }
        let source = self.context.last_source().unwrap_or_default();
        if result.is_ok() && !defined_again.is_empty() {
            let text = diagnostics::statics_defined_again(&defined_again);
            (self.sink)(EngineEvent::Output { cell: None, output: Output::Stream { name: StreamName::Stderr, text } });
        }
        if result.is_ok() {
            if let Some(warning) = diagnostics::never_awaited(&code, &source, &never_awaited::take_notes(&notes)) {
                (self.sink)(EngineEvent::Output {
                    cell: None,
                    output: Output::Stream { name: StreamName::Stderr, text: warning },
                });
            }
        }
        // Records of a cell that ran may still be on their way (they travel apart from evcxr's
        // own channel). Commands such as `:vars` or `:fmt` run nothing in the user process:
        // evcxr then reports no phases (compile, execution), and nothing is to be waited for.
        let process_died = matches!(result, Err(evcxr::Error::SubprocessTerminated(_)));
        let ran = match &result {
            Ok(outputs) => !outputs.phases.is_empty(),
            Err(evcxr::Error::SubprocessTerminated(_)) => true,
            Err(_) => false,
        };
        let fate = self
            .output
            .finish_cell(if ran { Duration::from_secs(5) } else { Duration::ZERO }, process_died);
        let killed_by_interrupt = self.killed_by_interrupt.swap(false, Ordering::SeqCst);
        if let (Err(evcxr::Error::SubprocessTerminated(message)), None, false) = (&result, fate.cell, killed_by_interrupt) {
            // No `cell-start` record came: the cell's code never ran. Unless the process died
            // by a signal (a crash): its last records, `cell-start` too, may not have been
            // sent, and the crash may be the cell's own.
            if diagnostics::exit_status_of(message).starts_with("exit status") {
                return Err(ProcessEndedBeforeStart { detail: message.clone() });
            }
        }
        if let Err(evcxr::Error::CompilationErrors(errors)) = &result {
            // evcxr keeps only diagnostics that point into the user's code when there are any:
            // an error in its wrapper around the final expression (`not_async().await`) can
            // leave nothing but a `help` on the user's `fn`. A check gets the error itself.
            if !errors.iter().any(|error| error.level() == "error") {
                if let Ok(checked) = self.context.check(&code) {
                    if checked.iter().any(|error| error.level() == "error") {
                        result = Err(evcxr::Error::CompilationErrors(checked));
                    }
                }
            }
        }
        let interrupted_while_running = self.output.interrupts() > interrupts_at_send;
        if interrupted_while_running && fate.cell.is_none() && matches!(result, Err(evcxr::Error::CompilationErrors(_) | evcxr::Error::Message(_))) {
            // Stopped while it compiled (its cargo ended): nothing of it ran.
            return Ok(CellOutcome::Failure(diagnostics::interrupted_while_compiling()));
        }
        let mut outcome = outcome(&code, written, &source, result, fate, killed_by_interrupt, interrupted_while_running);
        let variables: HashSet<String> = self.context.variables_and_types().map(|(name, _)| name.to_owned()).collect();
        if let CellOutcome::Failure(error) = &mut outcome {
            if error.name == "CompileError" {
                let (kept_before, not_kept) = (&self.kept_variables, &self.not_kept);
                diagnostics::add_gone_variable_hints(error, |name| match not_kept.get(name) {
                    Some(unkept) => Some(variable_types::why_not_kept(unkept)),
                    None => (kept_before.contains(name) && !variables.contains(name)).then(|| diagnostics::gone_variable(name)),
                });
            }
        } else {
            // What this cell made and did not keep; a name it keeps now is kept.
            let not_kept = self.types.lock().map(|mut types| std::mem::take(&mut types.not_kept)).unwrap_or_default();
            self.not_kept.retain(|name, _| !variables.contains(name));
            self.not_kept.extend(not_kept.into_iter().map(|unkept| (unkept.name.clone(), unkept)));
        }
        self.kept_variables.extend(variables);
        Ok(outcome)
    }

    /// evcxr's `:restart` puts back the variables it had before the restart (it took its state
    /// before restarting and keeps it after), so the next cell asks the new process for
    /// variables it does not have, outside evcxr's `catch_unwind`, and the process aborts.
    /// Ending the process and letting evcxr find it gone, as after a crash, gets a new process
    /// and forgets the variables (functions, types and `use` items stay).
    fn restart_user_process(&mut self) -> Result<(), CellError> {
        if let Ok(mut child) = self.process.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.output.begin_cell(silent_input(), None);
        let result = self.context.execute("let _ = ();");
        let _ = self.output.finish_cell(Duration::ZERO, false); // no user code ran
        match result {
            Ok(_) | Err(evcxr::Error::SubprocessTerminated(_)) => Ok(()),
            Err(error) => Err(diagnostics::one_line_error("KernelError", format!("`:restart` failed: {error}"))),
        }
    }

    /// evcxr's `:clear` forgets every item and dependency, the runtime library and the
    /// prelude with them (cells would no longer find `tokio`, nor run as async blocks): add
    /// them again, as a fresh kernel has them. evcxr's settings (`:opt`, ...) are kept.
    fn clear(&mut self) -> Result<(), CellError> {
        let failed = |message: String| {
            let message = format!("`:clear` failed: {message}. Restart the kernel to get cells working again.");
            diagnostics::one_line_error("KernelError", message)
        };
        self.context.execute(":clear").map_err(|error| failed(error.to_string()))?;
        self.statics.forget_names();
        self.output.begin_cell(silent_input(), None);
        let mut state = self.context.eval_context_mut().state();
        self.runtime_library
            .configure_cells(&mut state, &self.linking, &self.course_crates)
            .map_err(|error| failed(error.to_string()))?;
        let result = self.context.eval_context_mut().eval_with_state(PRELUDE, state);
        let fate = self.output.finish_cell(Duration::from_secs(5), false);
        match outcome(PRELUDE, PRELUDE, "", result, fate, false, false) {
            CellOutcome::Failure(error) => Err(failed(error.message)),
            _ => Ok(()),
        }
    }

    /// A cell adds a crate of its own (`:dep`, `extern crate`): cargo must resolve it with the
    /// kernel's tokio and course crates, which become cargo dependencies of the cell crate
    /// (`runtime_library::Linking::Cargo`), from the template's build, copied in now. For the
    /// rest of the kernel's life.
    fn use_cargo_dependencies(&mut self) -> Result<(), CellError> {
        let failed = |message: String| {
            diagnostics::one_line_error("KernelError", format!("the kernel could not prepare for a new crate: {message}"))
        };
        self.runtime_library.seed_cell_dir(&self.cell_dir, false).map_err(|error| failed(error.to_string()))?;
        let mut state = self.context.eval_context_mut().state();
        self.runtime_library
            .configure_cells(&mut state, &runtime_library::Linking::Cargo, &self.course_crates)
            .map_err(|error| failed(error.to_string()))?;
        self.output.begin_cell(silent_input(), None);
        let result = self.context.eval_context_mut().eval_with_state("", state);
        let _ = self.output.finish_cell(Duration::ZERO, false); // no user code ran
        result.map_err(|error| failed(error.to_string()))?;
        self.linking = runtime_library::Linking::Cargo;
        Ok(())
    }

    /// For the prepared template: a cell whose `let` does not compile is checked by evcxr
    /// (`cargo check`), which needs the runtime library and tokio checked as well. Done once
    /// here, that is not the 8-15 s of a student's first such cell in every kernel.
    pub(crate) fn check_dependencies_once(&mut self) -> Result<(), EngineError> {
        self.context.check("let _checked = 1;").map_err(|error| EngineError::Evcxr(error.to_string()))?;
        Ok(())
    }

    /// Notes a use of rust-analyzer (which starts it, the first time: it then analyses the
    /// standard library, tokio and the cells' other dependencies, seconds), and how long to
    /// wait for its answer.
    fn use_analysis(&mut self, patience: Duration) {
        let mut patience = patience;
        if !self.context.rust_analyzer_is_running() {
            eprintln!("rust-async: starting rust-analyzer for completion and inspection (the first request analyses std and tokio)");
            // Its first analysis takes seconds: an interactive request is answered at once.
            patience = patience.min(FIRST_ANALYSIS_PATIENCE);
        }
        self.analysis.set_patience(patience);
        self.analysis_used = Some(Instant::now());
    }

    /// Stops rust-analyzer once no completion or inspection has asked for it for `idle`: its
    /// process holds more memory than the rest of the kernel. The next request starts it again.
    /// Returns whether it was stopped now.
    pub fn stop_idle_analysis(&mut self, idle: Duration) -> bool {
        let Some(used) = self.analysis_used else { return false };
        if used.elapsed() < idle || !self.context.rust_analyzer_is_running() {
            return false;
        }
        self.context.stop_rust_analyzer(); // its process ends, and its memory with it
        self.analysis_used = None;
        eprintln!("rust-async: rust-analyzer stopped after {} s without completion or inspection", idle.as_secs());
        true
    }

    /// evcxr keeps `:fmt` and `:types` for the final value it prints itself; the runtime
    /// library prints most final values (`__DisplayFinalValue`) and reads them from a file.
    fn follow_display_commands(&mut self, code: &str) {
        let mut format = self.final_value_format.clone();
        for command in commands::leading_commands(code) {
            match command.name {
                ":fmt" => format.format = command.args.unwrap_or("{:?}").to_owned(),
                ":types" => format.show_type = !format.show_type,
                _ => {}
            }
        }
        self.use_final_value_format(format);
    }

    /// Passes `format` on to the runtime library, if it is not the one in use.
    fn use_final_value_format(&mut self, format: FinalValueFormat) {
        if format != self.final_value_format {
            let path = self.work_dir.path().join(FINAL_VALUE_FORMAT_FILE);
            let written = if format == FinalValueFormat::default() {
                std::fs::remove_file(&path)
            } else {
                let types = if format.show_type { "types" } else { "" };
                std::fs::write(&path, format!("{types}\n{}", format.format))
            };
            if let Err(error) = written {
                eprintln!("rust-async: could not pass `:fmt`/`:types` on to the runtime library: {error}");
            }
            self.final_value_format = format;
        }
    }

    /// Completions at `cursor` (a character offset), from rust-analyzer (`analysis_process`).
    /// None while rust-analyzer is still starting: this answers within `patience`.
    pub fn complete(&mut self, code: &str, cursor: usize, patience: Duration) -> Completions {
        self.use_analysis(patience);
        let byte_cursor = char_to_byte(code, cursor);
        match self.context.completions(code, byte_cursor) {
            Ok(found) => {
                // rust-analyzer also offers fuzzy matches; a notebook completes what was typed.
                let typed = code.get(found.start_offset..byte_cursor).unwrap_or_default();
                // `len()` of `Vec` and `len()` of the slice it derefs to are one name to type.
                let mut offered = std::collections::HashSet::new();
                Completions {
                    matches: found
                        .completions
                        .into_iter()
                        // `is_empty()` → `is_empty`: the user types the call's arguments.
                        .map(|completion| match completion.code.split_once('(') {
                            Some((name, _)) if !name.is_empty() => name.to_owned(),
                            _ => completion.code,
                        })
                        .filter(|candidate| candidate.starts_with(typed))
                        // evcxr's own names around the cell (`evcxr_variable_store`, ...).
                        .filter(|candidate| !candidate.to_ascii_lowercase().starts_with("evcxr"))
                        .filter(|candidate| offered.insert(candidate.clone()))
                        .collect(),
                    cursor_start: byte_to_char(code, found.start_offset),
                    cursor_end: byte_to_char(code, found.end_offset),
                }
            }
            Err(_) => Completions { matches: vec![], cursor_start: cursor, cursor_end: cursor },
        }
    }

    /// Documentation of what is at `cursor` (a character offset), as (plain text, markdown).
    /// While rust-analyzer is still starting (it answers within `patience`), says so instead.
    pub fn inspect(&mut self, code: &str, cursor: usize, patience: Duration) -> Option<(String, String)> {
        let documentation = self.documentation(code, cursor, patience);
        if documentation.is_none() && self.analysis.is_starting() {
            return Some((ANALYSIS_STARTING.to_owned(), ANALYSIS_STARTING.to_owned()));
        }
        documentation
    }

    /// Documentation of what is at `cursor`, waiting up to `patience` for rust-analyzer (for
    /// `Type?` in a cell: the first one waits while rust-analyzer starts).
    pub fn documentation(&mut self, code: &str, cursor: usize, patience: Duration) -> Option<(String, String)> {
        self.use_analysis(patience);
        let byte_cursor = char_to_byte(code, cursor);
        let start = code[..byte_cursor]
            .char_indices()
            .rfind(|&(_, c)| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |(index, c)| index + c.len_utf8());
        let end = code[byte_cursor..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(code.len(), |index| byte_cursor + index);
        let word = code.get(start..end).filter(|word| !word.is_empty())?;
        let (text, markdown) = self.context.hover_at(word, word.len()).ok()?;
        (text != "No documentation found")
            .then(|| (without_hidden_doc_lines(&text), without_hidden_doc_lines(&markdown)))
    }

    /// Names and types of the variables the cells defined so far.
    pub fn variables(&self) -> Vec<(String, String)> {
        self.context
            .variables_and_types()
            .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
            .collect()
    }
}

/// rustdoc hides the lines of a Rust example that start with `# ` (set-up such as
/// `# #[tokio::main]`, `# async fn main() {`); documentation shown by an inspection hides them
/// too. Both forms evcxr gives (plain text, and HTML with examples in `<pre><code>`) keep
/// the example's lines as they are and have no other line starting with `# `.
fn without_hidden_doc_lines(doc: &str) -> String {
    let mut kept = Vec::new();
    for line in doc.lines() {
        // An example's first line follows its opening tag.
        let tag_end = line.strip_prefix("<pre><code").and_then(|rest| rest.find('>')).map_or(0, |end| "<pre><code".len() + end + 1);
        let (tag, text) = line.split_at(tag_end);
        let text = text.trim_start();
        if text == "#" || text.starts_with("# ") {
            if !tag.is_empty() {
                kept.push(tag);
            }
            continue;
        }
        kept.push(line);
    }
    let mut joined = kept.join("\n");
    if doc.ends_with('\n') {
        joined.push('\n');
    }
    joined
}

/// Run once at start (with async mode on: every cell runs on the shared runtime): names the
/// runtime library `rust_async` too, lets `?` errors report their type name, and
/// shows a cell's final value in one compile instead of two (`__DisplayFinalValue`).
/// The print macros and `dbg!` are the runtime library's, which credits each print to its
/// cell (its `eprintln!` matches exactly how evcxr prints the error a `?` returned). They are
/// imported by path, not defined here: evcxr writes items in no fixed order, and a
/// `macro_rules!` reaches only the code after it. A cell that uses none of them must not get
/// warnings (evcxr's check of a cell whose variable cannot be kept would report them instead
/// of the reason).
pub(crate) const PRELUDE: &str = r#"
use tokio as rust_async;
use tokio::__DisplayFinalValue as _;
#[allow(unused_imports)]
use tokio::{dbg, eprint, eprintln, print, println};
"#;

/// Turns what evcxr returned and what the cell's records said into the cell's outcome.
/// `code` is what was compiled; `written`, the cell as the student wrote it (the same unless
/// the engine rewrote it, keeping its lines).
fn outcome(
    code: &str,
    written: &str,
    generated: &str,
    result: Result<evcxr::EvalOutputs, evcxr::Error>,
    fate: CellFate,
    killed_by_interrupt: bool,
    interrupted_while_running: bool,
) -> CellOutcome {
    let failure = CellOutcome::Failure;
    match result {
        Ok(outputs) => {
            if fate.interrupted {
                failure(diagnostics::interrupted())
            } else if let (Some(panic), true) = (&fate.panic, interrupted_while_running) {
                // Stopped where it could not be cancelled (a read of stdin the interrupt made
                // fail, say), it ended by panicking: the student asked for the stop.
                failure(diagnostics::interrupted_then_panicked(&panic.message))
            } else if let Some(panic) = &fate.panic {
                failure(diagnostics::panic(code, generated, panic))
            } else if fate.question_mark_error {
                failure(diagnostics::question_mark_error(written, fate.error_type.as_deref(), &fate.error_text))
            } else {
                let mut result: serde_json::Map<_, _> = outputs
                    .content_by_mime_type
                    .into_iter()
                    .map(|(mime, content)| (mime, serde_json::Value::String(content)))
                    .collect();
                without_display_notices(written, &mut result);
                // A cell ending in a statement-like expression (`print!(..)`) has the value `()`.
                let is_unit = result.len() == 1 && result.get("text/plain").is_some_and(|text| text == "()");
                CellOutcome::Success { result: (!result.is_empty() && !is_unit).then_some(result) }
            }
        }
        Err(evcxr::Error::CompilationErrors(errors)) => {
            failure(diagnostics::compile_errors_shown_as(code, written, &errors))
        }
        Err(evcxr::Error::SubprocessTerminated(_)) if killed_by_interrupt => {
            failure(diagnostics::interrupted_by_restart())
        }
        Err(evcxr::Error::SubprocessTerminated(message)) => {
            failure(diagnostics::process_died(&message, fate.panic.as_ref()))
        }
        Err(error) => failure(diagnostics::evaluation_error(&error.to_string())),
    }
}

/// evcxr answers `:fmt` and `:types` with a line ("Output format: {:#?}", "Types: true"),
/// which it puts before the value of a cell that has code too: only the value is shown then.
fn without_display_notices(code: &str, result: &mut serde_json::Map<String, serde_json::Value>) {
    if commands::first_code_line(code) == code.lines().count() {
        return; // commands alone: the notice is the answer
    }
    let Some(serde_json::Value::String(text)) = result.get_mut("text/plain") else { return };
    for command in commands::leading_commands(code) {
        let notice = match command.name {
            ":fmt" => "Output format: ",
            ":types" => "Types: ",
            _ => continue,
        };
        if text.starts_with(notice) {
            let rest = text.split_once('\n').map_or("", |(_, rest)| rest);
            *text = rest.to_owned();
        }
    }
    if text.is_empty() {
        result.remove("text/plain");
    }
}

/// Whether `code` adds a crate to the cells: a `:dep` line, or `extern crate`.
fn adds_a_crate(code: &str) -> bool {
    let commands = commands::leading_commands(code);
    if commands.iter().any(|command| command.name == ":dep") {
        return true;
    }
    early_return::tokens(code).windows(2).any(|pair| pair[0].1 == "extern" && pair[1].1 == "crate")
}

/// The variable whose value `error` says is an `async` block that borrows (E0373): the block
/// is the value of a top-level `let`.
fn borrowing_future(code: &str, error: &evcxr::CompilationError) -> Option<String> {
    if error.code() != Some("E0373") || !error.message().starts_with("async block") {
        return None;
    }
    error.spanned_messages().iter().find_map(|spanned| {
        let span = spanned.span.as_ref()?;
        future_values::let_with_value_at(code, span.start_line, span.start_column)
    })
}

/// Environment variable: `1` starts kernels offline (a `:dep` only finds crates in the
/// machine's cargo cache), as for an exam or a grader (`scripts/grade` sets it).
pub const OFFLINE_ENV: &str = "RUST_ASYNC_OFFLINE";

fn offline_setting() -> bool {
    std::env::var(OFFLINE_ENV).is_ok_and(|value| value == "1")
}

/// The user process ended before a cell's code started (see `Engine::execute_code`).
struct ProcessEndedBeforeStart {
    /// evcxr's message: what the process wrote last, then its exit status.
    detail: String,
}

/// With `RUST_ASYNC_TIMING` set, the engine reports how long each start-up phase took
/// (on the kernel's stderr, which is the Jupyter server's log): for `scripts/bench` and tuning.
struct Timing(Option<std::time::Instant>);

impl Timing {
    fn from_env() -> Timing {
        Timing(std::env::var_os("RUST_ASYNC_TIMING").map(|_| std::time::Instant::now()))
    }

    fn note(&self, phase: &str) {
        if let Some(start) = self.0 {
            eprintln!("rust-async timing: {phase}: {:.2}s since start", start.elapsed().as_secs_f64());
        }
    }
}

/// evcxr's `:fmt` and `:types`.
#[derive(Clone, PartialEq, Debug)]
struct FinalValueFormat {
    format: String,
    show_type: bool,
}

impl Default for FinalValueFormat {
    fn default() -> Self {
        FinalValueFormat { format: "{:?}".into(), show_type: false }
    }
}

const WORK_DIR_PREFIX: &str = "rust-async-";
/// In the work directory: the notebook session the user process takes on (see `Session`).
const SESSION_FILE: &str = "session.json";
/// In the work directory: the futures never awaited in the cell's compiles (`never_awaited`).
const NEVER_AWAITED_FILE: &str = "never-awaited";
/// In the work directory: the crate rust-analyzer's process works on (`analysis_process`).
const ANALYSIS_DIR: &str = "analysis";
/// In the work directory: the MIR of the cell crate's last build (`variable_types`).
const CELL_MIR_FILE: &str = "cell.mir";
/// In the work directory: `:fmt` and `:types` for the runtime library (see `protocol`).
const FINAL_VALUE_FORMAT_FILE: &str = "final-value-format";
/// Holds the pid of the kernel that owns a work directory.
const OWNER_FILE: &str = "kernel.pid";

/// A kernel killed outright (SIGKILL) cannot remove its work directory; the next kernel
/// removes those whose owner is gone.
fn remove_abandoned_work_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = entry.file_name().to_string_lossy().starts_with(WORK_DIR_PREFIX);
        let Some(owner) = is_ours
            .then(|| std::fs::read_to_string(path.join(OWNER_FILE)).ok())
            .flatten()
            .and_then(|pid| pid.trim().parse::<i32>().ok())
        else {
            continue;
        };
        if !host::process_exists(owner) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// What an inspection (Shift+Tab) shows while rust-analyzer is still starting.
const ANALYSIS_STARTING: &str = "rust-analyzer is starting: the first Tab or Shift+Tab of a kernel has it \
    analyse the standard library, tokio and the cells' crates, a few seconds. Try again in a moment.";

/// What `:help` shows: the commands that work in this kernel.
const COMMANDS_HELP: &str = "\
Commands go on the first lines of a cell, before any code.
:vars               the variables kept so far, with their types
:type NAME  (:t)    the type of one variable
:doc NAME           documentation (or `NAME?` alone in a cell, e.g. `tokio::spawn?`)
:restart            forget every variable and task (a new process); functions, types and `use` stay
:clear              forget everything defined so far; tokio stays
:dep NAME = \"VER\"   add a crate (downloaded, unless the kernel is offline: RUST_ASYNC_OFFLINE=1)
:show_deps          the crates added with :dep
:opt 0|1|2          how much cells are optimised (2 for CPU-heavy work; 0 compiles fastest)
:fmt {:#?}          how a cell's final value is shown (default {:?})
:types              switch showing the type of a cell's final value on or off
:efmt {:?}          how the error of a `?` is shown
:explain            rustc's explanation of the last compile error
:version            the evcxr version the kernel is built on
Refused here, with why: :quit, :toolchain, :cache, :sccache, :allow_static_linking 0, and :offline 0 in an offline kernel.";

/// What a cell of only `:restart` shows.
const RESTARTED: &str = "The user-code process was restarted: variables and running tasks are gone; \
                         functions, types and `use` items are kept.";

/// The cell with its `name` command lines left blank (so that the lines of the rest keep their
/// numbers), when it has any. evcxr runs a cell's commands before its code, so doing the
/// command first and then running the rest is what the cell asked for.
fn without_command(code: &str, name: &str) -> Option<String> {
    let found: Vec<usize> = commands::leading_commands(code)
        .into_iter()
        .filter(|command| command.name == name)
        .map(|command| command.index)
        .collect();
    (!found.is_empty()).then(|| {
        code.lines()
            .enumerate()
            .map(|(index, line)| if found.contains(&index) { "" } else { line })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn silent_input() -> InputReader {
    Arc::new(|_: &str| None)
}

fn char_to_byte(text: &str, chars: usize) -> usize {
    text.char_indices().nth(chars).map_or(text.len(), |(index, _)| index)
}

fn byte_to_char(text: &str, bytes: usize) -> usize {
    text.get(..bytes.min(text.len())).map_or(0, |prefix| prefix.chars().count())
}

/// The path of this crate's sources, for locating the runtime library in a checkout.
pub fn source_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_lines_of_rust_examples_are_left_out_of_docs() {
        let html = "<p>Sleeps.</p>\n<pre><code>use x;\n# #[tokio::main]\n# async fn main() {\nsleep(ms(10)).await;\n#[derive(Debug)]\n# }\n</code></pre>\n\
                    <pre><code class=\"language-rust\"># fn hidden() {}\nshown();\n</code></pre>\n";
        assert_eq!(
            without_hidden_doc_lines(html),
            "<p>Sleeps.</p>\n<pre><code>use x;\nsleep(ms(10)).await;\n#[derive(Debug)]\n</code></pre>\n\
             <pre><code class=\"language-rust\">\nshown();\n</code></pre>\n"
        );
        let plain = "Sleeps.\n\nuse x;\n\n# #[tokio::main]\n# async fn main() {\nsleep(ms(10)).await;\n# }\n";
        assert_eq!(without_hidden_doc_lines(plain), "Sleeps.\n\nuse x;\n\nsleep(ms(10)).await;\n");
    }
}
