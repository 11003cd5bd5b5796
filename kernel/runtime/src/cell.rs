//! How a cell runs: the shared runtime, cell identities, output tagging, the panic hook.

use crate::protocol::{self, RuntimeRecord};
use crate::records::{flush_std_streams, write_record};
use std::cell::Cell;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

static SHARED_RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
/// Number of the cell that ran last (cells are numbered from 1 as they start running).
static LAST_CELL: AtomicU64 = AtomicU64::new(0);
/// The cell whose identity the output stream currently carries (last `output-of` record).
static ANNOUNCED_CELL: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The cell the code running on this thread belongs to; 0 when unknown.
    static CURRENT_CELL: Cell<u64> = const { Cell::new(0) };
    /// What `CURRENT_CELL` was before the task being polled on this thread put its own in force.
    static BEFORE_TASK_POLL: Cell<u64> = const { Cell::new(0) };
}

/// The cell each task of the shared runtime belongs to, by task id: the cell whose code (or
/// whose task) spawned it, whatever the way: `tokio::spawn`, a `JoinSet`, `Handle::spawn`, a
/// library spawning for the student. Put in force around each poll of the task by the
/// runtime's task hooks (tokio's `tokio_unstable` API: cells are built with that cfg).
static TASK_CELLS: OnceLock<Mutex<HashMap<tokio::task::Id, u64>>> = OnceLock::new();

fn task_cells() -> std::sync::MutexGuard<'static, HashMap<tokio::task::Id, u64>> {
    let cells = TASK_CELLS.get_or_init(Default::default);
    cells.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The thread evcxr runs cells on. It is the thread of the first `Runtime::new()` in the
/// process: evcxr's async wrapper creates the runtime there before any user code runs.
/// (Thread names cannot tell: to this library's copy of std, evcxr's main thread is unnamed.)
static CELL_THREAD: OnceLock<std::thread::ThreadId> = OnceLock::new();

pub(crate) fn on_cell_thread() -> bool {
    *CELL_THREAD.get_or_init(|| std::thread::current().id()) == std::thread::current().id()
}

/// The kernel's one runtime, created on first use together with the process-wide hooks.
pub(crate) fn shared_runtime() -> &'static tokio::runtime::Runtime {
    SHARED_RUNTIME.get_or_init(|| {
        install_panic_hook();
        exit_without_teardown();
        die_quietly_on_crash();
        crate::interrupt::install();
        with_hooks(&mut tokio::runtime::Builder::new_multi_thread())
            .build()
            .expect("the kernel could not start its tokio runtime")
    })
}

/// The runtime that cells run on now: the shared multi-thread one, unless `:runtime` chose the
/// one-thread loop or another worker count (see [`event_loop`]).
pub(crate) fn cells_runtime() -> &'static tokio::runtime::Runtime {
    runtime_of(event_loop::chosen())
}

fn runtime_of(flavour: event_loop::Flavour) -> &'static tokio::runtime::Runtime {
    let shared = shared_runtime(); // the process-wide hooks first
    match flavour {
        event_loop::Flavour::MultiThread(None) => shared,
        event_loop::Flavour::MultiThread(Some(workers)) => event_loop::multi_thread(workers),
        event_loop::Flavour::CurrentThread => &event_loop::one_thread().runtime,
    }
}

/// A runtime builder with the kernel's settings and task hooks: every runtime cells run on
/// tags tasks with their cell (output routing) and feeds timelines.
fn with_hooks(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    builder
        .enable_all()
        .thread_name("rust-async-worker")
        .on_task_spawn(|task| {
            let cell = current_cell();
            if cell != 0 {
                task_cells().insert(task.id(), cell);
            }
            crate::timeline::on_task_spawn(task.id(), task.spawned_at());
        })
        .on_before_task_poll(|task| {
            crate::timeline::on_before_task_poll(task.id());
            let cell = task_cells().get(&task.id()).copied();
            let previous = CURRENT_CELL.with(|current| match cell {
                Some(cell) => current.replace(cell),
                None => current.get(),
            });
            BEFORE_TASK_POLL.with(|before| before.set(previous));
            if let Some(cell) = cell {
                announce(cell);
            }
        })
        .on_after_task_poll(|_| {
            crate::timeline::on_after_task_poll();
            // A `print!` without a newline waits in std's line buffer: send it now, while
            // it is still credited to this task's cell (later text could belong to another).
            let _ = std::io::stdout().flush();
            let previous = BEFORE_TASK_POLL.with(Cell::get);
            CURRENT_CELL.with(|current| current.set(previous));
        })
        .on_task_terminate(|task| {
            task_cells().remove(&task.id());
        })
}

/// `:runtime`: the notes' one-thread event loop on demand, and multi-thread runtimes with a
/// chosen number of workers.
///
/// A `current_thread` tokio runtime runs its tasks only inside `block_on`. So that its tasks go
/// on between cells, as on the multi-thread runtime, a thread of its own (`rust-async-loop`)
/// drives it while no cell runs; a cell takes the loop over (the driver leaves its `block_on`,
/// the cell's thread enters its own) and hands it back when it ends. One thread at a time runs
/// the loop: a blocking call in any task stops them all, as in the notes.
mod event_loop {
    use std::collections::HashMap;
    use std::sync::{Condvar, Mutex, OnceLock};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Flavour {
        /// `None`: the shared runtime's own worker count (one per core).
        MultiThread(Option<usize>),
        CurrentThread,
    }

    /// What the kernel's `:runtime` wrote in the file it names; read as each cell starts.
    pub(crate) fn chosen() -> Flavour {
        let setting = std::env::var_os(crate::protocol::RUNTIME_FLAVOUR_ENV)
            .and_then(|file| std::fs::read_to_string(file).ok())
            .unwrap_or_default();
        let words: Vec<&str> = setting.split_whitespace().collect();
        match words.as_slice() {
            ["current_thread"] => Flavour::CurrentThread,
            ["multi_thread", workers] => Flavour::MultiThread(workers.parse().ok()),
            _ => Flavour::MultiThread(None),
        }
    }

    /// A multi-thread runtime with `workers` worker threads, made once per count and kept (its
    /// tasks go on after a switch away from it).
    pub(crate) fn multi_thread(workers: usize) -> &'static tokio::runtime::Runtime {
        static RUNTIMES: Mutex<Option<HashMap<usize, &'static tokio::runtime::Runtime>>> = Mutex::new(None);
        let mut runtimes = RUNTIMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        runtimes.get_or_insert_with(HashMap::new).entry(workers).or_insert_with(|| {
            let runtime = super::with_hooks(tokio::runtime::Builder::new_multi_thread().worker_threads(workers))
                .build()
                .expect("the kernel could not start a tokio runtime");
            Box::leak(Box::new(runtime))
        })
    }

    pub(crate) struct OneThreadLoop {
        pub(crate) runtime: tokio::runtime::Runtime,
        lease: Mutex<Lease>,
        changed: Condvar,
        /// Tells the driver to leave its `block_on`: a cell wants the loop.
        step_aside: tokio::sync::Notify,
    }

    #[derive(Default)]
    struct Lease {
        cell_wants_it: bool,
        driver_in_it: bool,
    }

    pub(crate) fn one_thread() -> &'static OneThreadLoop {
        static LOOP: OnceLock<OneThreadLoop> = OnceLock::new();
        LOOP.get_or_init(|| {
            let runtime = super::with_hooks(&mut tokio::runtime::Builder::new_current_thread())
                .build()
                .expect("the kernel could not start its one-thread runtime");
            let one = OneThreadLoop { runtime, lease: Mutex::default(), changed: Condvar::new(), step_aside: tokio::sync::Notify::new() };
            std::thread::Builder::new()
                .name("rust-async-loop".into())
                .spawn(|| one_thread().drive_between_cells())
                .expect("the kernel could not start its event-loop thread");
            one
        })
    }

    impl OneThreadLoop {
        fn lease(&self) -> std::sync::MutexGuard<'_, Lease> {
            self.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        /// The driver thread's life: run the loop whenever no cell does.
        fn drive_between_cells(&self) {
            loop {
                {
                    let mut lease = self.lease();
                    while lease.cell_wants_it {
                        lease = self.changed.wait(lease).unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                    lease.driver_in_it = true;
                }
                self.runtime.block_on(self.step_aside.notified());
                self.lease().driver_in_it = false;
                self.changed.notify_all();
            }
        }

        /// Runs `body` (a cell's `block_on` on this runtime) with the loop taken from the driver.
        pub(crate) fn with_loop<R>(&self, body: impl FnOnce(&tokio::runtime::Runtime) -> R) -> R {
            {
                let mut lease = self.lease();
                lease.cell_wants_it = true;
                self.step_aside.notify_one();
                while lease.driver_in_it {
                    lease = self.changed.wait(lease).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
            // Handed back however the cell ends (an interrupt unwinds through here).
            struct HandBack<'a>(&'a OneThreadLoop);
            impl Drop for HandBack<'_> {
                fn drop(&mut self) {
                    self.0.lease().cell_wants_it = false;
                    self.0.changed.notify_all();
                }
            }
            let _hand_back = HandBack(self);
            body(&self.runtime)
        }
    }
}

pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Held while a print is credited to its cell and written, so that no other thread's record
/// or text comes between the two.
static PRINTING: Mutex<()> = Mutex::new(());

/// Writes what a `print!`-like macro formatted, credited to the cell the code belongs to.
/// Announcing the cell when a task is polled is not enough when threads print at once: the
/// cell's own code, resumed on its thread because a task on a worker thread finished, could
/// print after the task's announcement and so under the task's cell.
pub(crate) fn write_for_cell(stream: Stream, arguments: std::fmt::Arguments<'_>) {
    // Formatted first, outside the lock: a `Display` that prints would otherwise deadlock. One
    // write is also one datagram, so the kernel gets the text as one piece.
    let text = std::fmt::format(arguments);
    let _printing = PRINTING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    announce_holding_lock(current_cell());
    // Flushed under the lock: text left in std's buffer (a `print!` without a newline) could
    // be sent later, after another cell's announcement.
    let result = match stream {
        Stream::Stdout => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush())
        }
        Stream::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
    };
    if let Err(error) = result {
        // As `println!` does: printing must not fail silently.
        panic!("failed printing to {}: {error}", if matches!(stream, Stream::Stdout) { "stdout" } else { "stderr" });
    }
}

/// Makes sure the output that follows is credited to `cell` (at each poll of a task or a
/// cell). Under [`PRINTING`]: announced without it, a task of another cell polled on another
/// thread could come between a print's own announcement and its text, and take the text
/// (a cell's line printed while an earlier cell's server task ran was shown under that cell).
fn announce(cell: u64) {
    if cell == 0 || ANNOUNCED_CELL.load(Ordering::Acquire) == cell {
        return;
    }
    let _printing = PRINTING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    announce_holding_lock(cell);
}

/// [`announce`], for a caller that holds [`PRINTING`].
fn announce_holding_lock(cell: u64) {
    if cell != 0 && ANNOUNCED_CELL.swap(cell, Ordering::AcqRel) != cell {
        write_record(&RuntimeRecord::OutputOf { cell });
    }
}

/// Runs one cell's implicit async block on the shared runtime.
#[track_caller]
pub(crate) fn run_cell<F: Future>(future: F) -> F::Output {
    if tokio::runtime::Handle::try_current().is_ok() {
        panic!(
            "Cannot start a runtime from within a runtime.\n\
             hint: every cell already runs inside the kernel's tokio runtime, like a body of \
             `#[tokio::main]`. Use `.await` directly instead of `block_on`, or start a separate \
             runtime on its own thread: `std::thread::spawn(|| Runtime::new().unwrap().block_on(..))`."
        );
    }
    through_erased(future, run_erased)
}

/// Runs `future` to completion through `run`, which gets it boxed and with its type erased.
/// Generic code is compiled into every cell's crate again for the cell's future type (tokio's
/// `block_on` and `select!` were most of a small cell's compile time); what `run` does is
/// compiled once, here, optimised, when `run` is a plain function. The future is boxed, not
/// pinned on this stack, so that on an interrupt it is dropped (its destructors run) before
/// the unwinding that ends the cell.
pub(crate) fn through_erased<F: Future>(
    future: F,
    run: impl FnOnce(Pin<Box<dyn Future<Output = ()> + '_>>),
) -> F::Output {
    let mut output = None;
    run(Box::pin(async { output = Some(future.await) }));
    output.expect("a future that did not unwind has its output")
}

/// The body of [`run_cell`], not generic (see [`through_erased`]).
fn run_erased(future: Pin<Box<dyn Future<Output = ()> + '_>>) {
    let flavour = event_loop::chosen();
    let runtime = runtime_of(flavour);
    let cell = LAST_CELL.fetch_add(1, Ordering::AcqRel) + 1;
    crate::interrupt::clear();
    write_record(&RuntimeRecord::CellStart { cell });
    ANNOUNCED_CELL.store(cell, Ordering::Release);
    let _end = CellEnd;
    let future = match timeline_requested() {
        true => crate::timeline::record_cell(future),
        false => future,
    };
    let run = |runtime: &tokio::runtime::Runtime| {
        runtime.block_on(async {
            tokio::select! {
                biased;
                output = Tagged { cell, future } => Some(output),
                () = crate::interrupt::requested() => None,
            }
        })
    };
    let outcome = match flavour {
        event_loop::Flavour::CurrentThread => event_loop::one_thread().with_loop(run),
        _ => run(runtime),
    };
    match outcome {
        Some(()) => {}
        None => {
            // The cell's future has been dropped: its destructors ran, as asyncio's
            // CancelledError would unwind a coroutine. evcxr's catch_unwind ends the cell,
            // keeping the variables the cell did not create.
            write_record(&RuntimeRecord::Interrupted);
            std::panic::resume_unwind(Box::new(Interrupted));
        }
    }
}

/// Whether this cell is to be recorded as a timeline (`:timeline` atop it: the kernel leaves
/// the file [`protocol::TIMELINE_NEXT_CELL_ENV`] names, and it is taken here).
fn timeline_requested() -> bool {
    std::env::var_os(protocol::TIMELINE_NEXT_CELL_ENV).is_some_and(|file| std::fs::remove_file(file).is_ok())
}

/// The payload of the unwinding that ends an interrupted cell.
struct Interrupted;

/// Flushes what the cell printed without a newline, on every way out of the cell.
struct CellEnd;

impl Drop for CellEnd {
    fn drop(&mut self) {
        flush_std_streams();
        crate::interrupt::clear();
        stdin_blocking_again();
    }
}

/// A refused stdin read leaves fd 0 non-blocking (see the engine's `user_process`); evcxr's
/// loop, which reads its next command from fd 0 right after the cell, needs it blocking.
fn stdin_blocking_again() {
    // SAFETY: reading and setting the status flags of our own fd 0.
    unsafe {
        let flags = libc::fcntl(0, libc::F_GETFL);
        if flags >= 0 && flags & libc::O_NONBLOCK != 0 {
            libc::fcntl(0, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// A future that runs with the identity of the cell that created it.
pub(crate) struct Tagged<F> {
    cell: u64,
    future: F,
}

impl<F: Future> Future for Tagged<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of the pinned `Tagged`.
        let this = unsafe { self.get_unchecked_mut() };
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        with_cell(this.cell, || future.poll(context))
    }
}

fn with_cell<R>(cell: u64, body: impl FnOnce() -> R) -> R {
    let previous = CURRENT_CELL.with(|current| current.replace(cell));
    announce(cell);
    let result = body();
    CURRENT_CELL.with(|current| current.set(previous));
    result
}

fn current_cell() -> u64 {
    match CURRENT_CELL.with(Cell::get) {
        0 => LAST_CELL.load(Ordering::Acquire),
        cell => cell,
    }
}

pub(crate) fn tagged<F: Future>(future: F) -> Tagged<F> {
    Tagged { cell: current_cell(), future }
}

pub(crate) fn tagged_fn<R>(function: impl FnOnce() -> R) -> impl FnOnce() -> R {
    let cell = current_cell();
    move || with_cell(cell, function)
}

/// A panic in the cell's own code becomes a `panic` record (the kernel turns it into the
/// cell's error); a panic in a task is a short line on stderr, since tokio hands it to whoever
/// awaits the task as a `JoinError`. Neither prints a backtrace of kernel internals.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = if let Some(text) = info.payload().downcast_ref::<&str>() {
            (*text).to_owned()
        } else if let Some(text) = info.payload().downcast_ref::<String>() {
            text.clone()
        } else {
            "Box<dyn Any>".to_owned()
        };
        if on_cell_thread() {
            let (file, line, column) = info
                .location()
                .map(|location| (location.file(), location.line(), location.column()))
                .unwrap_or(("", 0, 0));
            write_record(&RuntimeRecord::Panic { message, file: file.to_owned(), line, column });
            if std::thread::panicking() {
                // A panic during another one's unwinding (in a `Drop`): the process aborts
                // next. Give the output thread a moment to pass the records on, so the kernel
                // can say which panic came first.
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        } else {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("unnamed thread");
            // One write, one datagram: the kernel passes it on as one piece of output
            // (`eprintln!` writes each part of its format on its own, stderr being unbuffered).
            let line = format!("a task panicked ({name}): {message}\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }));
}

extern "C" {
    /// glibc's `on_exit`: like `atexit`, but the handler learns the exit status.
    fn on_exit(handler: extern "C" fn(libc::c_int, *mut libc::c_void), argument: *mut libc::c_void) -> libc::c_int;
}

/// `std::process::exit` in a cell would tear the process down while tokio's workers and the
/// cells' libraries are still live, and crash on the way out. The user asked to exit: flush,
/// let what was printed reach the kernel, and leave at once with their status, which the
/// kernel then reports.
fn exit_without_teardown() {
    extern "C" fn leave(status: libc::c_int, _: *mut libc::c_void) {
        flush_std_streams();
        wait_until_output_forwarded();
        // SAFETY: _exit ends the process immediately; nothing runs after it.
        unsafe { libc::_exit(status) };
    }
    // SAFETY: registering a handler with no captured state.
    unsafe { on_exit(leave, std::ptr::null_mut()) };
}

/// Output written to stdout and stderr is still in the queue that the user process's
/// forwarder thread reads, and `_exit` would end that thread: ask it to pass on what came
/// before ([`RuntimeRecord::ExitFlush`]) and wait for its answer, a second at most.
fn wait_until_output_forwarded() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let name = protocol::exit_ack_socket_name(std::process::id());
    let Ok(address) = SocketAddr::from_abstract_name(name) else { return };
    let Ok(answers) = UnixDatagram::bind_addr(&address) else { return };
    let _ = answers.set_read_timeout(Some(std::time::Duration::from_secs(1)));
    write_record(&RuntimeRecord::ExitFlush);
    let _ = answers.recv(&mut [0u8; 8]);
}

/// evcxr's crash handler prints a backtrace of the kernel's internals and aborts, which hides
/// what happened. A crash in a cell (a segfault in `unsafe` code, say) instead ends the process
/// by the signal itself, which the kernel names in plain words.
fn die_quietly_on_crash() {
    extern "C" fn crash(signal: libc::c_int) {
        // SAFETY: restoring the default action and raising the signal again are
        // async-signal-safe; the process ends by `signal`.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
    for signal in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE] {
        // SAFETY: installing a handler that only uses async-signal-safe calls.
        unsafe { libc::signal(signal, crash as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}
