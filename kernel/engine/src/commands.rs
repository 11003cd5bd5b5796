//! The evcxr commands the engine does itself, rather than leaving them to evcxr: `:help`
//! (evcxr's list names commands this kernel refuses), `:restart` and `:clear` (evcxr's own
//! would break the user process or forget the runtime library), and the switch to cargo
//! dependencies that a cell adding a crate needs.

use crate::cell_error::CellError;
use crate::execute::{kernel_error, outcome_of_prelude, silent_input};
use crate::prelude::PRELUDE;
use crate::work_dir::RUNTIME_FLAVOUR_FILE;
use crate::{runtime_library, CellOutcome, Engine};
use std::time::Duration;

impl Engine {
    /// What `:help` shows: the commands that work in this kernel.
    pub(crate) fn help() -> CellOutcome {
        let mut result = serde_json::Map::new();
        result.insert("text/plain".into(), COMMANDS_HELP.into());
        CellOutcome::Success { result: Some(result) }
    }

    /// What a cell of only `:restart` shows.
    pub(crate) fn restarted() -> CellOutcome {
        let mut result = serde_json::Map::new();
        result.insert("text/plain".into(), RESTARTED.into());
        CellOutcome::Success { result: Some(result) }
    }

    /// evcxr's `:restart` puts back the variables it had before the restart (it took its state
    /// before restarting and keeps it after), so the next cell asks the new process for
    /// variables it does not have, outside evcxr's `catch_unwind`, and the process aborts.
    /// Ending the process and letting evcxr find it gone, as after a crash, gets a new process
    /// and forgets the variables (functions, types and `use` items stay).
    pub(crate) fn restart_user_process(&mut self) -> Result<(), CellError> {
        if let Ok(mut child) = self.process.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.output.begin_cell(silent_input(), None);
        let result = self.context.execute("let _ = ();");
        let _ = self.output.finish_cell(Duration::ZERO, false); // no user code ran
        match result {
            Ok(_) | Err(evcxr::Error::SubprocessTerminated(_)) => Ok(()),
            Err(error) => Err(kernel_error(format!("`:restart` failed: {error}"))),
        }
    }

    /// evcxr's `:clear` forgets every item and dependency, the runtime library and the
    /// prelude with them (cells would no longer find `tokio`, nor run as async blocks): add
    /// them again, as a fresh kernel has them. evcxr's settings (`:opt`, ...) are kept.
    pub(crate) fn clear(&mut self) -> Result<(), CellError> {
        let failed = |message: String| {
            kernel_error(format!("`:clear` failed: {message}. Restart the kernel to get cells working again."))
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
        match outcome_of_prelude(result, fate) {
            CellOutcome::Failure(error) => Err(failed(error.message)),
            _ => Ok(()),
        }
    }

    /// `:runtime current_thread` / `:runtime multi_thread [WORKERS]`: which runtime cells and
    /// the tasks they spawn run on from this cell on (the runtime library reads the file as
    /// each cell starts). Returns what the cell says about it.
    pub(crate) fn switch_runtime(&mut self, args: &str) -> Result<String, CellError> {
        let words: Vec<&str> = args.split_whitespace().collect();
        let usage = || {
            kernel_error(
                "`:runtime` takes `current_thread` (one thread: the event loop of the notes) or \
                 `multi_thread` with an optional number of worker threads (`:runtime multi_thread 4`)"
                    .to_owned(),
            )
        };
        let (setting, said) = match words.as_slice() {
            ["current_thread"] => (
                "current_thread".to_owned(),
                "Cells and the tasks they spawn now run on ONE thread: a single-threaded event loop, as in \
                 the notes. A task runs until it awaits; a blocking call stops every task. Tasks keep running \
                 between cells. Tasks already running stay on the runtime they run on."
                    .to_owned(),
            ),
            ["multi_thread"] => (
                "multi_thread".to_owned(),
                "Cells and the tasks they spawn now run on the multi-thread runtime again (one worker thread per \
                 core). Tasks already running stay on the runtime they run on."
                    .to_owned(),
            ),
            ["multi_thread", workers] => {
                let workers: usize = workers.parse().ok().filter(|workers| (1..=64).contains(workers)).ok_or_else(usage)?;
                (
                    format!("multi_thread {workers}"),
                    format!(
                        "Cells and the tasks they spawn now run on a multi-thread runtime with {workers} worker \
                         thread(s). Tasks already running stay on the runtime they run on."
                    ),
                )
            }
            _ => return Err(usage()),
        };
        std::fs::write(self.work_dir.path().join(RUNTIME_FLAVOUR_FILE), setting)
            .map_err(|error| kernel_error(format!("`:runtime` failed: {error}")))?;
        Ok(said)
    }

    /// A cell adds a crate of its own (`:dep`, `extern crate`): cargo must resolve it with the
    /// kernel's tokio and course crates, which become cargo dependencies of the cell crate
    /// (`runtime_library::Linking::Cargo`), from the template's build, copied in now. For the
    /// rest of the kernel's life.
    pub(crate) fn use_cargo_dependencies(&mut self) -> Result<(), CellError> {
        let failed = |message: String| {
            kernel_error(format!("the kernel could not prepare for a new crate: {message}"))
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
}

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
:runtime current_thread   run cells and their tasks on one thread (the notes' event loop);
:runtime multi_thread [N]  back to the multi-thread runtime (N worker threads)
:timeline           record the cell as it runs: a figure of every poll of its code and its tasks
                    (also `tokio::timeline::record(async { .. }).await` around any async code)
:version            the evcxr version the kernel is built on
Refused here, with why: :quit, :toolchain, :cache, :sccache, :allow_static_linking 0, and :offline 0 in an offline kernel.";

/// What a cell of only `:restart` shows.
const RESTARTED: &str = "The user-code process was restarted: variables and running tasks are gone; \
                         functions, types and `use` items are kept.";
