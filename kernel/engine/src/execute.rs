//! One cell, from the text the student wrote to its outcome: refusals, the engine's own
//! commands, the statics' symbols, evcxr's compile and run (rewritten and retried where that
//! keeps a variable: `rewrites`), the records of the run (`output`), and the error that
//! teaches when it fails (`diagnostics`).

use crate::cell_error::{CellError, ErrorKind};
use crate::cell_source::CellSource;
use crate::final_value_format::without_display_notices;
use crate::output::CellFate;
use crate::rewrites::Attempt;
use crate::prelude::PRELUDE;
use crate::work_dir::{NEVER_AWAITED_FILE, TIMELINE_NEXT_CELL_FILE};
use crate::{
    diagnostics, hints, never_awaited, offline_setting, refusals, runtime_library, variable_types, CellOutcome, Engine,
    EngineEvent, InputReader, Output,
};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a cell's `:doc` waits for rust-analyzer (which may have to start first).
const CELL_ANALYSIS_PATIENCE: Duration = Duration::from_secs(120);

/// How long the records of a cell that ran may take to arrive after evcxr says it is done,
/// counted from the last one read.
const RECORDS_PATIENCE: Duration = Duration::from_secs(5);

impl Engine {
    /// Runs one cell. Output streams to the sink while it runs; when this returns, every
    /// output of the cell has been handed to the sink.
    ///
    /// `interrupts_at_send` is [`crate::Interrupter::interrupts`] when the cell was sent: an
    /// interrupt after that, while the cell waited for the engine (behind a completion, say),
    /// stops it before it starts.
    pub fn execute(&mut self, code: &str, input: InputReader, interrupts_at_send: u64) -> CellOutcome {
        let source = CellSource::parse(code);
        let course_crates = self.course_crates.iter().map(|(name, _)| name.as_str());
        if let Some(error) = refusals::refuse_kernel_crate_dependency(&source, course_crates)
            .or_else(|| refusals::refuse_unsupported_command(&source, offline_setting()))
            .or_else(|| refusals::refuse_cell_level_return(&source))
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
            return Self::help();
        }
        if self.linking != runtime_library::Linking::Cargo && source.adds_crate {
            if let Err(error) = self.use_cargo_dependencies() {
                return CellOutcome::Failure(error);
            }
        }
        // evcxr runs a cell's commands before its code: these the engine does itself, first.
        if source.has_command(":clear") {
            if let Err(error) = self.clear() {
                return CellOutcome::Failure(error);
            }
        }
        let restarted = source.has_command(":restart");
        if restarted {
            if let Err(error) = self.restart_user_process() {
                return CellOutcome::Failure(error);
            }
        }
        let mut runtime_switched = None;
        if let Some(command) = source.commands_named(":runtime").last() {
            match self.switch_runtime(command.args.as_deref().unwrap_or("")) {
                Ok(said) => runtime_switched = Some(said),
                Err(error) => return CellOutcome::Failure(error),
            }
        }
        // The runtime library records the cell's run when it finds this file (and takes it).
        let timeline_request = self.work_dir.path().join(TIMELINE_NEXT_CELL_FILE);
        if source.has_command(":timeline") {
            if let Err(error) = std::fs::write(&timeline_request, "") {
                return CellOutcome::Failure(kernel_error(format!("`:timeline` failed: {error}")));
            }
        }
        let code = source.without_commands(&[":clear", ":restart", ":timeline", ":runtime"]);
        let outcome = match self.execute_code(&source, &code, input, interrupts_at_send) {
            CellOutcome::Success { result: None } if restarted && code.trim().is_empty() => Self::restarted(),
            CellOutcome::Success { result: None } if code.trim().is_empty() && runtime_switched.is_some() => {
                let mut result = serde_json::Map::new();
                result.insert("text/plain".into(), runtime_switched.unwrap_or_default().into());
                CellOutcome::Success { result: Some(result) }
            }
            outcome => outcome,
        };
        // Left when the cell never ran (it did not compile): not for the next cell.
        let _ = std::fs::remove_file(&timeline_request);
        outcome
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
        self.note(credit_to, diagnostics::process_ended_between_cells(&status.to_string()));
        if let Err(error) = self.restart_user_process() {
            self.note(credit_to, format!("{}\n", error.message));
        }
        true
    }

    /// Shows the notice `text` under cell `cell` (`None`: the one running).
    fn note(&self, cell: Option<u64>, text: String) {
        (self.sink)(EngineEvent::Output { cell, output: Output::Notice { text } });
    }

    fn execute_code(&mut self, source: &CellSource, code: &str, input: InputReader, interrupts_at_send: u64) -> CellOutcome {
        // Before the code runs, so that a `:fmt` at the top of a cell applies to the cell's own
        // value; kept only if the cell succeeds, as evcxr keeps a cell's commands.
        let format_before = self.follow_display_commands(source);
        let outcome = match self.execute_code_once(source, code, Arc::clone(&input), interrupts_at_send) {
            // The process ended before this cell's code started: while the cell compiled, a
            // task called `std::process::exit`. That is not this cell's failure: say so, as when
            // it ends between cells, and run the cell in the new process that evcxr started
            // (once: a second end is the cell's own).
            Err(ProcessEndedBeforeStart { detail }) => {
                self.note(None, diagnostics::process_ended_between_cells(diagnostics::exit_status_of(&detail)));
                match self.execute_code_once(source, code, input, interrupts_at_send) {
                    Ok(outcome) => outcome,
                    Err(ProcessEndedBeforeStart { detail }) => CellOutcome::Failure(diagnostics::process_died(&detail, None)),
                }
            }
            Ok(outcome) => outcome,
        };
        if let CellOutcome::Failure(_) = outcome {
            self.use_final_value_format(format_before);
        }
        outcome
    }

    /// Runs `code` (the cell, without the commands the engine did itself) once, in the user
    /// process there is now.
    fn execute_code_once(
        &mut self,
        source: &CellSource,
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
        // Each static gets a symbol of its own, so that later cells share it (`statics`).
        let (named, defined_again) = self.statics.name_symbols(code, &source.statics);
        self.output.note_cell_code(&named);
        self.dependency_build.begin(Arc::clone(&self.sink));
        let result = self.context.execute(&named);
        self.dependency_build.finish(!matches!(result, Err(evcxr::Error::CompilationErrors(_) | evcxr::Error::Message(_))));
        let Attempt { code: compiled, result, .. } = match self.rewrite_and_retry(Attempt::new(named, result)) {
            Ok(attempt) => attempt,
            Err(error) => {
                let _ = self.output.finish_cell(Duration::ZERO, false);
                return Ok(CellOutcome::Failure(error));
            }
        };
        log_phases(&result);
        let generated = self.context.last_source().unwrap_or_default();
        if result.is_ok() {
            if !defined_again.is_empty() {
                self.note(None, diagnostics::statics_defined_again(&defined_again));
            }
            if let Some(warning) = diagnostics::never_awaited(&compiled, &generated, &never_awaited::take_notes(&notes)) {
                self.note(None, warning);
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
        let fate = self.output.finish_cell(if ran { RECORDS_PATIENCE } else { Duration::ZERO }, process_died);
        let killed_by_interrupt = self.killed_by_interrupt.swap(false, Ordering::SeqCst);
        if let (Err(evcxr::Error::SubprocessTerminated(message)), None, false) = (&result, fate.cell, killed_by_interrupt) {
            // No `cell-start` record came: the cell's code never ran. Unless the process died
            // by a signal (a crash): its last records, `cell-start` too, may not have been
            // sent, and the crash may be the cell's own.
            if diagnostics::exit_status_of(message).starts_with("exit status") {
                return Err(ProcessEndedBeforeStart { detail: message.clone() });
            }
        }
        let interrupted = self.output.interrupts() > interrupts_at_send;
        let stopped_compiling = matches!(result, Err(evcxr::Error::CompilationErrors(_) | evcxr::Error::Message(_)));
        if interrupted && fate.cell.is_none() && stopped_compiling {
            // Stopped while it compiled (its cargo ended): nothing of it ran.
            return Ok(CellOutcome::Failure(diagnostics::interrupted_while_compiling()));
        }
        let ran = Ran { source: Some(source), compiled: &compiled, written: code, generated: &generated, result, fate };
        let mut outcome = outcome(ran, killed_by_interrupt, interrupted);
        self.note_variables(&mut outcome);
        Ok(outcome)
    }

    /// Notes which variables the cell kept and which it made but could not keep; a cell that
    /// did not compile because it names one that is gone gets a hint saying why.
    fn note_variables(&mut self, outcome: &mut CellOutcome) {
        let variables: HashSet<String> = self.context.variables_and_types().map(|(name, _)| name.to_owned()).collect();
        match outcome {
            CellOutcome::Failure(error) if error.kind == ErrorKind::CompileError => {
                let (kept_before, not_kept) = (&self.kept_variables, &self.not_kept);
                hints::add_gone_variable_hints(error, |name| match not_kept.get(name) {
                    Some(unkept) => Some(variable_types::why_not_kept(unkept)),
                    None => (kept_before.contains(name) && !variables.contains(name)).then(|| hints::gone_variable(name)),
                });
            }
            CellOutcome::Failure(_) => {}
            CellOutcome::Success { .. } => {
                // What this cell made and did not keep; a name it keeps now is kept.
                let not_kept = self.types.lock().map(|mut types| std::mem::take(&mut types.not_kept)).unwrap_or_default();
                self.not_kept.retain(|name, _| !variables.contains(name));
                self.not_kept.extend(not_kept.into_iter().map(|unkept| (unkept.name.clone(), unkept)));
            }
        }
        self.kept_variables.extend(variables);
    }
}

/// With `RUST_ASYNC_TIMING` set, evcxr's phases of a cell, on the kernel's stderr.
fn log_phases(result: &Result<evcxr::EvalOutputs, evcxr::Error>) {
    if let (Ok(outputs), true) = (result, std::env::var_os("RUST_ASYNC_TIMING").is_some()) {
        let phases: Vec<String> = outputs
            .phases
            .iter()
            .map(|phase| format!("{} {:.0} ms", phase.name, phase.duration.as_secs_f64() * 1000.0))
            .collect();
        eprintln!("rust-async timing: cell phases: {}", phases.join(", "));
    }
}

/// The user process ended before a cell's code started (see `Engine::execute_code`).
struct ProcessEndedBeforeStart {
    /// evcxr's message: what the process wrote last, then its exit status.
    detail: String,
}

/// What came of running code in evcxr, for [`outcome`].
pub(crate) struct Ran<'a> {
    /// The cell, parsed; `None` for the kernel's own code (the prelude).
    pub source: Option<&'a CellSource>,
    /// What was compiled last: the cell, or a rewrite of it that keeps its lines.
    pub compiled: &'a str,
    /// The cell as the student wrote it (without the commands the engine did itself).
    pub written: &'a str,
    /// The source evcxr generated around the compiled code.
    pub generated: &'a str,
    pub result: Result<evcxr::EvalOutputs, evcxr::Error>,
    /// What the cell's records said.
    pub fate: CellFate,
}

/// The cell's outcome: what evcxr returned and what the cell's records said.
/// `killed_by_interrupt`: the kernel restarted the user process to stop the cell;
/// `interrupted`: an interrupt came while it ran.
pub(crate) fn outcome(ran: Ran, killed_by_interrupt: bool, interrupted: bool) -> CellOutcome {
    let Ran { source, compiled, written, generated, result, fate } = ran;
    let failure = CellOutcome::Failure;
    match result {
        Ok(outputs) => {
            if fate.interrupted {
                failure(diagnostics::interrupted())
            } else if let (Some(panic), true) = (&fate.panic, interrupted) {
                // Stopped where it could not be cancelled (a read of stdin the interrupt made
                // fail, say), it ended by panicking: the student asked for the stop.
                failure(diagnostics::interrupted_then_panicked(&panic.message))
            } else if let Some(panic) = &fate.panic {
                failure(diagnostics::panic(compiled, generated, panic))
            } else if fate.question_mark_error {
                failure(diagnostics::question_mark_error(written, fate.error_type.as_deref(), &fate.error_text))
            } else {
                let mut result: serde_json::Map<_, _> = outputs
                    .content_by_mime_type
                    .into_iter()
                    .map(|(mime, content)| (mime, serde_json::Value::String(content)))
                    .collect();
                if let Some(source) = source {
                    without_display_notices(source, &mut result);
                }
                // A cell ending in a statement-like expression (`print!(..)`) has the value `()`.
                let is_unit = result.len() == 1 && result.get("text/plain").is_some_and(|text| text == "()");
                CellOutcome::Success { result: (!result.is_empty() && !is_unit).then_some(result) }
            }
        }
        Err(evcxr::Error::CompilationErrors(errors)) => failure(diagnostics::compile_errors_shown_as(compiled, written, &errors)),
        Err(evcxr::Error::SubprocessTerminated(_)) if killed_by_interrupt => failure(diagnostics::interrupted_by_restart()),
        Err(evcxr::Error::SubprocessTerminated(message)) => failure(diagnostics::process_died(&message, fate.panic.as_ref())),
        Err(error) => failure(diagnostics::evaluation_error(&error.to_string())),
    }
}

/// The outcome of the kernel's prelude (run at start and after `:clear`).
pub(crate) fn outcome_of_prelude(result: Result<evcxr::EvalOutputs, evcxr::Error>, fate: CellFate) -> CellOutcome {
    let ran = Ran { source: None, compiled: PRELUDE, written: PRELUDE, generated: "", result, fate };
    outcome(ran, false, false)
}

/// The input of work that is not a student's cell: no stdin.
pub(crate) fn silent_input() -> InputReader {
    Arc::new(|_: &str| None)
}

/// For the few failures of the kernel itself around a cell.
pub(crate) fn kernel_error(message: String) -> CellError {
    CellError::one_line(ErrorKind::KernelError, message)
}
