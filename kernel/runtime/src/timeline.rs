//! Timelines: a recording of what the event loop ran, drawn under the cell.
//!
//! ```ignore
//! // Shows the figure under the cell, and gives the future's output:
//! let total = tokio::timeline::record(async {
//!     let a = tokio::spawn(async { tokio::time::sleep(ms(100)).await; 1 });
//!     let b = tokio::spawn(async { tokio::time::sleep(ms(50)).await; 2 });
//!     a.await.unwrap() + b.await.unwrap()
//! }).await;
//! // Or keep the recording, as data, to compute with (and show it later, or not):
//! let (total, timeline) = tokio::timeline::recorded(async { /* ... */ }).await;
//! timeline.polls.len();
//! ```
//! A cell that begins with the line `:timeline` is recorded as a whole.
//!
//! What is recorded: every poll of the recorded future and of the tasks it spawns (and the
//! tasks they spawn), with the thread it ran on, its start and its end; and every
//! `spawn_blocking` call made from them, as a row of its own. The polls come from the shared
//! runtime's task hooks (`cell.rs`), which already tag tasks with their cell: a recording is
//! what ran, never a picture of what should have happened. Polls past [`MAX_POLLS`] are
//! counted, not kept, and the figure says so. One recording at a time: a `record` inside
//! another runs unrecorded, and its figure says why.

use crate::display::{self, DisplayHandle};
use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Polls kept per recording; more are counted in [`Timeline::dropped`].
pub const MAX_POLLS: usize = 5_000;

/// What a row of the timeline stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// The future given to `record` (a `:timeline` cell's own code).
    Recorded,
    /// A task it spawned (`tokio::spawn`, a `JoinSet`, ...).
    Task,
    /// A `spawn_blocking` call: its one run, on a thread kept for blocking work.
    Blocking,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub kind: RowKind,
    /// "your code", "task 2", "spawn_blocking 1".
    pub name: String,
    /// Where it was spawned: "line 4" of the cell, "an earlier cell's code", or `file:line`
    /// (the kernel puts in the cell's line when the text is shown or printed).
    pub spawned_at: String,
}

/// One poll: row `row` ran on thread `thread` (indexes into [`Timeline::rows`] and
/// [`Timeline::threads`]) from `start` to `end`, counted from the start of the recording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollRecord {
    pub row: usize,
    pub thread: usize,
    pub start: Duration,
    pub end: Duration,
}

impl PollRecord {
    pub fn start_ms(&self) -> f64 {
        self.start.as_secs_f64() * 1000.0
    }
    pub fn end_ms(&self) -> f64 {
        self.end.as_secs_f64() * 1000.0
    }
}

/// A recording (see the module's text).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub rows: Vec<Row>,
    /// "cell thread", "worker 1", "blocking 1", ...
    pub threads: Vec<String>,
    /// In the order they ended.
    pub polls: Vec<PollRecord>,
    /// Polls past [`MAX_POLLS`], counted but not kept.
    pub dropped: u64,
    /// From the start of the recording to its end.
    pub length: Duration,
    /// Why nothing was recorded, when nothing was.
    pub not_recorded: Option<String>,
}

/// Runs `future`, records what ran, shows the timeline under the cell, and gives the
/// future's output.
#[track_caller]
pub fn record<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let recorded = recorded(future);
    async move {
        let (output, timeline) = recorded.await;
        timeline.show();
        output
    }
}

/// Runs `future` and records what ran: its output and the [`Timeline`] (not shown).
#[track_caller]
pub fn recorded<F: Future>(future: F) -> impl Future<Output = (F::Output, Timeline)> {
    let location = Location::caller();
    async move {
        let Some(guard) = Recording::start(location) else {
            let output = future.await;
            let why = "another timeline was recording at the same time (one at a time)";
            return (output, Timeline { not_recorded: Some(why.into()), ..Timeline::default() });
        };
        let output = Recorded { future }.await;
        (output, guard.finish())
    }
}

impl Timeline {
    /// Shows it under the current cell: the SVG figure (JupyterLab), with a line of text for
    /// front ends that show no images (nbconvert's text output).
    pub fn show(&self) -> DisplayHandle {
        display::bundle(&[("image/svg+xml", &self.svg()), ("text/plain", &self.summary())])
    }

    /// One line: what was recorded.
    pub fn summary(&self) -> String {
        if let Some(why) = &self.not_recorded {
            return format!("timeline: not recorded: {why}");
        }
        let mut line = format!(
            "timeline: {} rows, {} polls over {:.1} ms on {} thread(s)",
            self.rows.len(),
            self.polls.len(),
            self.length.as_secs_f64() * 1000.0,
            self.threads.len()
        );
        if self.dropped > 0 {
            line.push_str(&format!("; {} more polls not kept", self.dropped));
        }
        line
    }

    /// The figure: a row per task, a bar per poll coloured by thread, a time axis, and a
    /// legend of threads and rows. Each bar has a tooltip (`<title>`) and `data-` attributes
    /// (row, thread, start and end in ms), for tools that read the figure.
    pub fn svg(&self) -> String {
        crate::timeline_svg::draw(self)
    }
}

// --- recording ------------------------------------------------------------------------------

/// Whether a recording runs: checked first by every task hook, so that without one they cost
/// an atomic load.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static RECORDING: Mutex<Option<Recording>> = Mutex::new(None);
/// Polls of recorded tasks under way on some thread (see [`RecordingGuard::finish`]).
static POLLS_UNDER_WAY: AtomicUsize = AtomicUsize::new(0);
/// How long the end of a recording waits for the polls under way to end.
const LAST_POLLS_PATIENCE: Duration = Duration::from_millis(100);

thread_local! {
    /// Whether the code running on this thread belongs to the recording (its future, or one
    /// of its tasks): what it spawns is recorded too.
    static IN_RECORDING: Cell<bool> = const { Cell::new(false) };
    /// The poll under way on this thread: its row, its start, and `IN_RECORDING` before it.
    static POLL_UNDER_WAY: Cell<Option<(usize, Instant, bool)>> = const { Cell::new(None) };
    /// Set while this thread runs a `spawn_blocking` function.
    static BLOCKING_THREAD: Cell<bool> = const { Cell::new(false) };
}

struct Recording {
    started: Instant,
    rows: Vec<Row>,
    task_rows: HashMap<tokio::task::Id, usize>,
    thread_index: HashMap<std::thread::ThreadId, usize>,
    threads: Vec<String>,
    polls: Vec<PollRecord>,
    dropped: u64,
}

fn recording() -> std::sync::MutexGuard<'static, Option<Recording>> {
    RECORDING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Ends the recording however the recorded future ends (an interrupt drops it).
struct RecordingGuard;

impl Recording {
    fn start(location: &'static Location<'static>) -> Option<RecordingGuard> {
        let mut slot = recording();
        if slot.is_some() {
            return None;
        }
        let recorded = Row { kind: RowKind::Recorded, name: "your code".into(), spawned_at: where_is(location) };
        *slot = Some(Recording {
            started: Instant::now(),
            rows: vec![recorded],
            task_rows: HashMap::new(),
            thread_index: HashMap::new(),
            threads: Vec::new(),
            polls: Vec::new(),
            dropped: 0,
        });
        ACTIVE.store(true, Ordering::Release);
        Some(RecordingGuard)
    }

    fn thread(&mut self) -> usize {
        let id = std::thread::current().id();
        if let Some(&index) = self.thread_index.get(&id) {
            return index;
        }
        let kind = if crate::cell::on_cell_thread() {
            "cell thread"
        } else if BLOCKING_THREAD.with(Cell::get) {
            "blocking"
        } else {
            "worker"
        };
        let name = match kind {
            "cell thread" => kind.to_owned(),
            _ => format!("{kind} {}", self.threads.iter().filter(|name| name.starts_with(kind)).count() + 1),
        };
        self.threads.push(name);
        self.thread_index.insert(id, self.threads.len() - 1);
        self.threads.len() - 1
    }

    fn add_row(&mut self, kind: RowKind, location: &'static Location<'static>) -> usize {
        let word = if kind == RowKind::Blocking { "spawn_blocking" } else { "task" };
        let number = self.rows.iter().filter(|row| row.kind == kind).count() + 1;
        self.rows.push(Row { kind, name: format!("{word} {number}"), spawned_at: where_is(location) });
        self.rows.len() - 1
    }

    fn add_poll(&mut self, row: usize, start: Instant, end: Instant) {
        if self.polls.len() >= MAX_POLLS {
            self.dropped += 1;
            return;
        }
        let thread = self.thread();
        let since = |instant: Instant| instant.saturating_duration_since(self.started);
        self.polls.push(PollRecord { row, thread, start: since(start), end: since(end) });
    }
}

impl RecordingGuard {
    fn finish(self) -> Timeline {
        // A task's last poll wakes whatever awaits the task before the runtime's after-poll
        // hook notes that poll: the recorded future can end first, on another thread. Those
        // polls end within microseconds; a task busy in a long poll is not waited for.
        let deadline = Instant::now() + LAST_POLLS_PATIENCE;
        while POLLS_UNDER_WAY.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        let recording = stop();
        std::mem::forget(self);
        recording.map_or_else(Timeline::default, |recording| Timeline {
            length: recording.started.elapsed(),
            rows: recording.rows,
            threads: recording.threads,
            polls: recording.polls,
            dropped: recording.dropped,
            not_recorded: None,
        })
    }
}

impl Drop for RecordingGuard {
    fn drop(&mut self) {
        stop();
    }
}

fn stop() -> Option<Recording> {
    ACTIVE.store(false, Ordering::Release);
    recording().take()
}

/// The recorded future: each of its polls is a bar of row 0, and what it spawns is recorded.
struct Recorded<F> {
    future: F,
}

impl<F: Future> Future for Recorded<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: never moved out of the pinned `Recorded`.
        let future = unsafe { self.map_unchecked_mut(|this| &mut this.future) };
        poll_recorded(future, context)
    }
}

fn poll_recorded<F: Future>(future: Pin<&mut F>, context: &mut Context<'_>) -> Poll<F::Output> {
    let before = IN_RECORDING.with(|flag| flag.replace(true));
    let start = Instant::now();
    let result = future.poll(context);
    let end = Instant::now();
    IN_RECORDING.with(|flag| flag.set(before));
    if let Some(recording) = recording().as_mut() {
        recording.add_poll(0, start, end);
    }
    result
}

/// The shared runtime's `on_task_spawn`: a task spawned by recorded code gets a row.
pub(crate) fn on_task_spawn(task: tokio::task::Id, location: &'static Location<'static>) {
    if !ACTIVE.load(Ordering::Acquire) || !IN_RECORDING.with(Cell::get) {
        return;
    }
    if let Some(recording) = recording().as_mut() {
        let row = recording.add_row(RowKind::Task, location);
        recording.task_rows.insert(task, row);
    }
}

/// The shared runtime's `on_before_task_poll`.
pub(crate) fn on_before_task_poll(task: tokio::task::Id) {
    if !ACTIVE.load(Ordering::Acquire) {
        return;
    }
    let row = {
        let recording = recording();
        let row = recording.as_ref().and_then(|recording| recording.task_rows.get(&task).copied());
        if row.is_some() {
            POLLS_UNDER_WAY.fetch_add(1, Ordering::AcqRel);
        }
        row
    };
    if let Some(row) = row {
        let before = IN_RECORDING.with(|flag| flag.replace(true));
        POLL_UNDER_WAY.with(|poll| poll.set(Some((row, Instant::now(), before))));
    }
}

/// The shared runtime's `on_after_task_poll`.
pub(crate) fn on_after_task_poll() {
    let Some((row, start, before)) = POLL_UNDER_WAY.with(Cell::take) else { return };
    let end = Instant::now();
    IN_RECORDING.with(|flag| flag.set(before));
    if let Some(recording) = recording().as_mut() {
        recording.add_poll(row, start, end);
    }
    POLLS_UNDER_WAY.fetch_sub(1, Ordering::AcqRel);
}

/// Wraps a `spawn_blocking` function: when recorded code starts it, its run is a row.
pub(crate) fn blocking<R>(function: impl FnOnce() -> R, location: &'static Location<'static>) -> impl FnOnce() -> R {
    let row = (ACTIVE.load(Ordering::Acquire) && IN_RECORDING.with(Cell::get))
        .then(|| recording().as_mut().map(|recording| recording.add_row(RowKind::Blocking, location)))
        .flatten();
    move || {
        BLOCKING_THREAD.with(|flag| flag.set(true));
        let start = Instant::now();
        let output = function();
        let end = Instant::now();
        if let Some(row) = row {
            if let Some(recording) = recording().as_mut() {
                recording.add_poll(row, start, end);
            }
        }
        BLOCKING_THREAD.with(|flag| flag.set(false));
        output
    }
}

/// Where code is, as the figure says it: a place in the cell's crate becomes a marker that the
/// kernel replaces with the cell's own line ([`crate::protocol::CELL_LOCATION`]).
fn where_is(location: &'static Location<'static>) -> String {
    if location.file() == "src/lib.rs" {
        format!("{}{}:{}\u{1e}", crate::protocol::CELL_LOCATION, location.line(), location.column())
    } else {
        format!("{}:{}", location.file(), location.line())
    }
}

/// Records a whole cell (`:timeline` atop it): its future, and shows the figure after it.
pub(crate) fn record_cell<'a>(future: Pin<Box<dyn Future<Output = ()> + 'a>>) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
    let location = Location::caller();
    Box::pin(async move {
        let Some(guard) = Recording::start(location) else {
            return future.await;
        };
        if let Some(recording) = recording().as_mut() {
            recording.rows[0] = Row { kind: RowKind::Recorded, name: "the cell".into(), spawned_at: String::new() };
        }
        Recorded { future }.await;
        guard.finish().show();
    })
}
