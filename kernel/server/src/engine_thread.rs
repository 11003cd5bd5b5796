//! The engine on its own thread. evcxr is synchronous and slow to start, so it lives on a
//! dedicated OS thread; the async front end talks to it through a queue of [`Job`]s. The
//! engine's output events and the outcome of each execution travel on ONE channel
//! ([`FromEngine`]), so a cell's outputs always reach iopub before its reply.

use rust_async_engine::runtime_library::RuntimeLibrary;
use rust_async_engine::{CellOutcome, Completions, Engine, EngineEvent, InputReader, Interrupter};
use std::sync::mpsc;
use tokio::sync::{mpsc::UnboundedSender, oneshot};

pub enum Job {
    Execute { code: String, input: InputReader },
    Complete { code: String, cursor: usize, reply: oneshot::Sender<Completions> },
    Inspect { code: String, cursor: usize, reply: oneshot::Sender<Option<(String, String)>> },
    /// Stop the user-code process and remove the engine's files, then acknowledge.
    Shutdown { done: oneshot::Sender<()> },
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

/// Starts the engine thread. The receiver yields the engine's interrupter once it is up.
pub fn spawn(events: UnboundedSender<FromEngine>) -> (EngineHandle, oneshot::Receiver<Interrupter>) {
    let (jobs, job_queue) = mpsc::channel::<Job>();
    let (interrupter_sender, interrupter) = oneshot::channel();
    std::thread::Builder::new()
        .name("engine".into())
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
            for job in job_queue {
                match job {
                    Job::Execute { code, input } => {
                        let outcome = engine.execute(&code, input);
                        let _ = events.send(FromEngine::Finished(outcome));
                    }
                    Job::Complete { code, cursor, reply } => {
                        let _ = reply.send(engine.complete(&code, cursor));
                    }
                    Job::Inspect { code, cursor, reply } => {
                        let _ = reply.send(engine.inspect(&code, cursor));
                    }
                    Job::Shutdown { done } => {
                        drop(engine);
                        let _ = done.send(());
                        return;
                    }
                }
            }
        })
        .expect("could not start the engine thread");
    (EngineHandle { jobs }, interrupter)
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
            Job::Inspect { reply, .. } => {
                let _ = reply.send(None);
            }
            Job::Shutdown { done } => {
                let _ = done.send(());
                return;
            }
        }
    }
}
