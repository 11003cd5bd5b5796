//! The engine on its own thread. evcxr is synchronous and slow to start, so it lives on a
//! dedicated OS thread; the async front end talks to it through a queue of [`Job`]s. The
//! engine's output events and the outcome of each execution travel on ONE channel
//! ([`FromEngine`]), so a cell's outputs always reach iopub before its reply.

use rust_async_engine::runtime_library::RuntimeLibrary;
use rust_async_engine::{CellError, CellOutcome, Completions, Engine, EngineEvent, ErrorKind, InputReader, Interrupter, Session};
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::{mpsc::UnboundedReceiver, mpsc::UnboundedSender, oneshot};

pub enum Job {
    /// `interrupts_at_send`: the interrupter's count when the cell was sent (see `Engine::execute`).
    Execute { code: String, input: InputReader, interrupts_at_send: u64 },
    Complete { code: String, cursor: usize, reply: oneshot::Sender<Completions> },
    Inspect { code: String, cursor: usize, reply: oneshot::Sender<Option<(String, String)>> },
    /// Documentation for `Type?` in a cell: waits for rust-analyzer to start if it must.
    Documentation { code: String, reply: oneshot::Sender<Option<(String, String)>> },
    /// Stop the user-code process and remove the engine's files, then acknowledge.
    Shutdown { done: oneshot::Sender<()> },
    /// Acknowledge once the engine is up (a spare kernel is ready then).
    WhenUp { done: oneshot::Sender<()> },
    /// Run user code in this notebook session (a spare kernel, when a notebook claims it).
    Adopt { session: Session },
}

pub enum FromEngine {
    Event(EngineEvent),
    /// The engine could not start; every execution fails with this message.
    StartFailed(String),
    Finished(CellOutcome),
}

pub struct EngineHandle {
    jobs: mpsc::Sender<Job>,
}

impl EngineHandle {
    pub fn send(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }

    /// Stops the engine (its user-code process and temporary files). Waits while a cell is
    /// still running only up to `patience`.
    pub async fn shutdown(&self, patience: std::time::Duration) {
        let (done, stopped) = oneshot::channel();
        if self.send(Job::Shutdown { done }) {
            let _ = tokio::time::timeout(patience, stopped).await;
        }
    }
}

/// An engine thread, started (perhaps long) before a front end serves it.
pub struct StartedEngine {
    pub handle: EngineHandle,
    /// Yields the engine's interrupter once the engine is up.
    pub ready: oneshot::Receiver<Interrupter>,
    /// Output events and cell outcomes, in order.
    pub events: UnboundedReceiver<FromEngine>,
}

/// How long rust-analyzer (started by a completion or an inspection) may sit unused before it
/// is stopped, to give its memory back: `RUST_ASYNC_ANALYSIS_IDLE_SECS`, 300 by default.
fn analysis_idle() -> Duration {
    std::env::var("RUST_ASYNC_ANALYSIS_IDLE_SECS")
        .ok()
        .and_then(|seconds| seconds.parse().ok())
        .map_or(Duration::from_secs(300), Duration::from_secs)
}

/// How long a Tab or Shift+Tab waits for rust-analyzer: JupyterLab drops a completion that
/// takes over a second (its `providerTimeout`), and cells sent meanwhile must not wait for the
/// seconds of its first analysis. Until then, those requests get nothing (an inspection says
/// rust-analyzer is starting).
const INTERACTIVE_PATIENCE: Duration = Duration::from_millis(900);

/// How long `Type?` in a cell waits for rust-analyzer (which may have to start first).
const DOCUMENTATION_PATIENCE: Duration = Duration::from_secs(120);

/// How often an idle engine checks that the user process is still there (a task may end it:
/// `std::process::exit`, a crash), to start a new one and say so when it happens.
const PROCESS_CHECK_INTERVAL: Duration = Duration::from_secs(1);

const ENGINE_STACK_BYTES: usize = 256 << 20;

/// Starts the engine thread; the engine itself starts at once, in the background.
pub fn start() -> StartedEngine {
    let (events, receiver) = tokio::sync::mpsc::unbounded_channel();
    let (handle, ready) = spawn(events);
    StartedEngine { handle, ready, events: receiver }
}

fn spawn(events: UnboundedSender<FromEngine>) -> (EngineHandle, oneshot::Receiver<Interrupter>) {
    let (jobs, job_queue) = mpsc::channel::<Job>();
    let (interrupter_sender, interrupter) = oneshot::channel();
    std::thread::Builder::new()
        .name("engine".into())
        // rust-analyzer and evcxr recurse over the syntax tree: a long expression (a sum of
        // thousands of terms) overflowed the default 2 MiB and took the kernel down. Only the
        // pages used are ever allocated.
        .stack_size(ENGINE_STACK_BYTES)
        .spawn(move || {
            let sink_events = events.clone();
            let sink = std::sync::Arc::new(move |event| {
                let _ = sink_events.send(FromEngine::Event(event));
            });
            let mut engine = match Engine::start(&RuntimeLibrary::locate(), sink) {
                Ok(engine) => engine,
                Err(error) => {
                    eprintln!("rust-async: the engine did not start: {error}");
                    serve_without_engine(job_queue, &events, error.to_string());
                    return;
                }
            };
            let _ = interrupter_sender.send(engine.interrupter());
            let analysis_idle = analysis_idle();
            loop {
                let job = match job_queue.recv_timeout(PROCESS_CHECK_INTERVAL) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        let _ = guarded(|| engine.restart_if_process_ended());
                        let _ = guarded(|| engine.stop_idle_analysis(analysis_idle));
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                };
                let Some(job) = job else { return };
                match job {
                    Job::Execute { code, input, interrupts_at_send } => {
                        let outcome = guarded(|| engine.execute(&code, input, interrupts_at_send)).unwrap_or_else(|message| {
                            let message = format!("The kernel failed while running this cell: {message}");
                            CellOutcome::Failure(CellError::one_line(ErrorKind::KernelError, message))
                        });
                        let _ = events.send(FromEngine::Finished(outcome));
                    }
                    Job::Complete { code, cursor, reply } => {
                        let none = Completions { matches: vec![], cursor_start: cursor, cursor_end: cursor };
                        let _ = reply.send(guarded(|| engine.complete(&code, cursor, INTERACTIVE_PATIENCE)).unwrap_or(none));
                    }
                    Job::Inspect { code, cursor, reply } => {
                        let _ = reply.send(guarded(|| engine.inspect(&code, cursor, INTERACTIVE_PATIENCE)).ok().flatten());
                    }
                    Job::Documentation { code, reply } => {
                        let cursor = code.chars().count();
                        let _ = reply.send(guarded(|| engine.documentation(&code, cursor, DOCUMENTATION_PATIENCE)).ok().flatten());
                    }
                    Job::Shutdown { done } => {
                        drop(engine);
                        let _ = done.send(());
                        return;
                    }
                    Job::WhenUp { done } => {
                        let _ = done.send(());
                    }
                    Job::Adopt { session } => {
                        let adopted = guarded(|| engine.adopt_session(&session).map_err(|error| error.to_string()));
                        if let Err(error) = adopted.and_then(|result| result) {
                            eprintln!("rust-async: user code keeps the spare kernel's directory and environment: {error}");
                        }
                    }
                }
            }
        })
        .expect("could not start the engine thread");
    (EngineHandle { jobs }, interrupter)
}

/// A panic inside evcxr (rust-analyzer, say) must not take the engine thread, and with it
/// every later cell, down: it becomes this request's failure.
fn guarded<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "an internal error".to_owned())
    })
}

fn serve_without_engine(jobs: mpsc::Receiver<Job>, events: &UnboundedSender<FromEngine>, error: String) {
    for job in jobs {
        match job {
            Job::Execute { .. } => {
                let _ = events.send(FromEngine::StartFailed(error.clone()));
            }
            Job::Complete { cursor, reply, .. } => {
                let _ = reply.send(Completions { matches: vec![], cursor_start: cursor, cursor_end: cursor });
            }
            Job::Inspect { reply, .. } | Job::Documentation { reply, .. } => {
                let _ = reply.send(None);
            }
            Job::WhenUp { .. } | Job::Adopt { .. } => {}
            Job::Shutdown { done } => {
                let _ = done.send(());
                return;
            }
        }
    }
}
