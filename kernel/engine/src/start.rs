//! Starting an engine: evcxr and its user-code process, the cells' access to the runtime
//! library and the course crates, the rustc wrapper's settings, rust-analyzer's starter (it
//! starts only for a completion or an inspection), and the prelude that puts every cell on
//! the shared runtime.

use crate::execute::{outcome_of_prelude, silent_input};
use crate::output::OutputReader;
use crate::prelude::PRELUDE;
use crate::work_dir::{ANALYSIS_DIR, CELL_MIR_FILE, FINAL_VALUE_FORMAT_FILE, NEVER_AWAITED_FILE, RUNTIME_FLAVOUR_FILE, SESSION_FILE, TIMELINE_NEXT_CELL_FILE};
use crate::{
    analysis_process, dependency_build, never_awaited, offline_setting, protocol, runtime_library, statics,
    user_process, variable_types, work_dir, CellOutcome, Engine, EngineError, EventSink, Session,
};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
        let work_dir = work_dir::create()?;
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
        user_process.env(protocol::TIMELINE_NEXT_CELL_ENV, work_dir.path().join(TIMELINE_NEXT_CELL_FILE));
        user_process.env(protocol::RUNTIME_FLAVOUR_ENV, work_dir.path().join(RUNTIME_FLAVOUR_FILE));
        // Where the loader finds libstd for the cells, whatever their relative rpath says
        // (`RuntimeLibrary::toolchain_libdir`). Read by the loader when the process starts.
        if let Some(libdir) = library.toolchain_libdir() {
            let earlier = std::env::var_os("LD_LIBRARY_PATH");
            let paths = std::iter::once(libdir).chain(earlier.iter().flat_map(std::env::split_paths));
            if let Ok(joined) = std::env::join_paths(paths) {
                user_process.env("LD_LIBRARY_PATH", joined);
            }
        }
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
        if let CellOutcome::Failure(error) = outcome_of_prelude(prelude, fate) {
            return Err(EngineError::Evcxr(format!("the kernel's prelude failed: {}", crate::render::plain_text(&error))));
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
            final_value_format: Default::default(),
            sink,
            kept_variables: HashSet::new(),
            reported_ended_process: None,
            work_dir,
        })
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

    /// For the prepared template: a cell whose `let` does not compile is checked by evcxr
    /// (`cargo check`), which needs the runtime library and tokio checked as well. Done once
    /// here, that is not the 8-15 s of a student's first such cell in every kernel.
    pub(crate) fn check_dependencies_once(&mut self) -> Result<(), EngineError> {
        self.context.check("let _checked = 1;").map_err(|error| EngineError::Evcxr(error.to_string()))?;
        Ok(())
    }
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
