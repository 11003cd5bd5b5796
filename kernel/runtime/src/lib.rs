//! The runtime library every notebook cell links against: the kernel's one tokio.
//!
//! Cells know this crate as `tokio` (through a one-line re-exporting shim) and as `rust_async`.
//! Key design choice: it is a `dylib`, loaded once into the user-code process, so every cell
//! shares one copy of tokio — one runtime, one reactor, one set of thread-locals — and a task,
//! channel or `JoinHandle` made in one cell keeps working in the next.
//!
//! Everything of tokio is re-exported unchanged except a deliberately small shadowed surface:
//! - `runtime::Runtime`: evcxr wraps each cell in `tokio::runtime::Runtime::new().block_on(..)`;
//!   on the cell thread our `Runtime` is the kernel's shared runtime, and its `block_on` makes
//!   the cell interruptible and tags its output. On any other thread it is a real, fresh tokio
//!   runtime, as students expect when they write `Runtime::new()` in a program-like example.
//! - `runtime::Builder`: its `build()` gives that `Runtime`, as a runtime of the cell's own.
//! - `spawn`, `task::spawn`, `task::spawn_blocking`: the task inherits the identity of the cell
//!   that spawned it, so what it prints later is shown under that cell (like ipykernel's
//!   ContextVar). Tasks spawned any other way on the kernel's runtime (`JoinSet`,
//!   `Handle::spawn`, a library's own spawning) inherit it too, through the runtime's task
//!   hooks; `spawn_blocking` work has no hooks, hence its shadow.
//!
//! Additions: [`display`] (rich output, `clear_output`) and [`Pending`] (a future kept in a
//! variable across cells). It also links the course crates (reqwest, serde, ...: Cargo.toml),
//! so that every cell uses one copy of each, on this tokio.

pub use tokio::*;

#[doc(hidden)]
pub mod protocol;

mod cell;
mod records;
pub mod display;
mod interrupt;
mod pending;
pub mod progress;
pub mod timeline;
mod timeline_svg;

pub use pending::Pending;

// The course crates (Cargo.toml), named so that this library links them: see build.rs.
include!(concat!(env!("OUT_DIR"), "/course_crates.rs"));

pub mod runtime {
    //! tokio's `runtime` module, with [`Runtime`] shadowed (see the crate docs).
    pub use tokio::runtime::*;

    use std::future::Future;

    /// On the cell thread: the kernel's shared runtime. Elsewhere: a real tokio runtime.
    ///
    /// The flavour is dropped by hand, in [`drop_flavour`], so that a cell's drop glue for
    /// `Runtime` is a call into this crate rather than a copy of the drop code of tokio's
    /// scheduler, drivers and mio, compiled into every cell that makes a runtime (evcxr's
    /// async wrapper does, in every cell).
    pub struct Runtime(std::mem::ManuallyDrop<Flavour>);

    enum Flavour {
        Shared,
        Own(tokio::runtime::Runtime),
    }

    impl Drop for Runtime {
        fn drop(&mut self) {
            // SAFETY: `drop` runs once, and nothing uses the flavour afterwards.
            unsafe { drop_flavour(&mut self.0) }
        }
    }

    /// # Safety
    /// Call once, from `Runtime::drop` only: the flavour must not be used afterwards.
    unsafe fn drop_flavour(flavour: &mut std::mem::ManuallyDrop<Flavour>) {
        unsafe { std::mem::ManuallyDrop::drop(flavour) }
    }

    impl Runtime {
        fn from_flavour(flavour: Flavour) -> Runtime {
            Runtime(std::mem::ManuallyDrop::new(flavour))
        }

        fn into_flavour(self) -> Flavour {
            let mut runtime = std::mem::ManuallyDrop::new(self);
            // SAFETY: `runtime` is never dropped, so its flavour is taken exactly once.
            unsafe { std::mem::ManuallyDrop::take(&mut runtime.0) }
        }
    }

    /// tokio's `block_on`, compiled here once rather than into every cell (see `block_on`).
    fn block_on_own(runtime: &tokio::runtime::Runtime, future: std::pin::Pin<Box<dyn Future<Output = ()> + '_>>) {
        runtime.block_on(future)
    }

    impl Runtime {
        /// On the cell thread, a handle on the kernel's one runtime; on any other thread, a new
        /// multi-threaded tokio runtime (what `tokio::runtime::Runtime::new()` always gives).
        pub fn new() -> std::io::Result<Runtime> {
            if crate::cell::on_cell_thread() {
                crate::cell::shared_runtime();
                Ok(Runtime::from_flavour(Flavour::Shared))
            } else {
                tokio::runtime::Runtime::new().map(|runtime| Runtime::from_flavour(Flavour::Own(runtime)))
            }
        }

        /// Runs `future` to completion. For the shared runtime this is how a cell runs: the
        /// future is cancelled (dropped) at its current await point if the kernel is interrupted.
        #[track_caller]
        pub fn block_on<F: Future>(&self, future: F) -> F::Output {
            match &*self.0 {
                Flavour::Shared => crate::cell::run_cell(future),
                Flavour::Own(runtime) => {
                    // On the cell's thread tokio would panic too, but in its own code: here the
                    // panic points at the cell line that called `block_on` (or wrote
                    // `#[tokio::main]`). Elsewhere (`spawn_blocking`) tokio decides.
                    if crate::cell::on_cell_thread() && tokio::runtime::Handle::try_current().is_ok() {
                        panic!(
                            "Cannot start a runtime from within a runtime: `block_on` blocks \
                             this thread, which already runs the kernel's runtime."
                        );
                    }
                    crate::cell::through_erased(future, |erased| block_on_own(runtime, erased))
                }
            }
        }

        pub fn handle(&self) -> &Handle {
            match &*self.0 {
                Flavour::Shared => crate::cell::cells_runtime().handle(),
                Flavour::Own(runtime) => runtime.handle(),
            }
        }

        pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
        where
            F: Future + Send + 'static,
            F::Output: Send + 'static,
        {
            self.handle().spawn(crate::cell::tagged(future))
        }

        pub fn spawn_blocking<F, R>(&self, function: F) -> tokio::task::JoinHandle<R>
        where
            F: FnOnce() -> R + Send + 'static,
            R: Send + 'static,
        {
            self.handle().spawn_blocking(crate::cell::tagged_fn(function))
        }

        pub fn enter(&self) -> EnterGuard<'_> {
            self.handle().enter()
        }

        /// Shuts a runtime of your own down without waiting; the kernel's shared runtime
        /// cannot be shut down from a cell and is left running.
        pub fn shutdown_background(self) {
            if let Flavour::Own(runtime) = self.into_flavour() {
                runtime.shutdown_background();
            }
        }

        pub fn shutdown_timeout(self, duration: std::time::Duration) {
            if let Flavour::Own(runtime) = self.into_flavour() {
                runtime.shutdown_timeout(duration);
            }
        }
    }

    /// tokio's runtime builder, whose `build()` gives this crate's [`Runtime`] (a runtime of
    /// your own): with tokio's, `let rt: tokio::runtime::Runtime = Builder::..().build()?`
    /// would not compile in a cell, since `tokio::runtime::Runtime` names the type above.
    /// The usual settings are here; any other of tokio's is reached through `Deref`.
    pub struct Builder(tokio::runtime::Builder);

    /// Forwards setters that take a value and return the builder.
    macro_rules! forward_settings {
        ($($name:ident($($argument:ident: $type:ty),*);)*) => {$(
            pub fn $name(&mut self, $($argument: $type),*) -> &mut Self {
                self.0.$name($($argument),*);
                self
            }
        )*};
    }

    /// Forwards setters that take a callback and return the builder.
    macro_rules! forward_callbacks {
        ($($name:ident($($bound:tt)*);)*) => {$(
            pub fn $name<F>(&mut self, callback: F) -> &mut Self
            where
                F: $($bound)* + Send + Sync + 'static,
            {
                self.0.$name(callback);
                self
            }
        )*};
    }

    impl Builder {
        /// A builder for a runtime on the current thread only.
        pub fn new_current_thread() -> Builder {
            Builder(tokio::runtime::Builder::new_current_thread())
        }

        /// A builder for a runtime with worker threads.
        pub fn new_multi_thread() -> Builder {
            Builder(tokio::runtime::Builder::new_multi_thread())
        }

        /// Builds the runtime: a runtime of your own, not the kernel's (run it on a thread of
        /// its own: a cell already runs inside the kernel's runtime).
        pub fn build(&mut self) -> std::io::Result<Runtime> {
            self.0.build().map(|runtime| Runtime::from_flavour(Flavour::Own(runtime)))
        }

        forward_settings! {
            enable_all();
            enable_io();
            enable_time();
            worker_threads(count: usize);
            max_blocking_threads(count: usize);
            thread_name(name: impl Into<String>);
            thread_stack_size(bytes: usize);
            thread_keep_alive(duration: std::time::Duration);
            global_queue_interval(ticks: u32);
            event_interval(ticks: u32);
            max_io_events_per_tick(capacity: usize);
        }

        forward_callbacks! {
            thread_name_fn(Fn() -> String);
            on_thread_start(Fn());
            on_thread_stop(Fn());
            on_thread_park(Fn());
            on_thread_unpark(Fn());
        }
    }

    impl std::ops::Deref for Builder {
        type Target = tokio::runtime::Builder;

        fn deref(&self) -> &Self::Target {
            &self.0
        }
    }

    impl std::ops::DerefMut for Builder {
        fn deref_mut(&mut self) -> &mut Self::Target {
            &mut self.0
        }
    }

    impl std::fmt::Debug for Builder {
        fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(formatter)
        }
    }
}

pub mod task {
    //! tokio's `task` module, with `spawn` and `spawn_blocking` tagging the task with its cell.
    pub use tokio::task::*;

    /// Starts `future` as a new task on the kernel's runtime and returns at once, without
    /// waiting for it. The task runs concurrently with the cell, and with later cells, until
    /// it finishes; what it prints is shown under the cell that spawned it.
    ///
    /// The returned [`JoinHandle`] is itself a future: `handle.await` waits for the task and
    /// gives `Ok(output)`, or `Err(JoinError)` if the task panicked or was aborted
    /// (`handle.abort()`). Dropping the handle does not stop the task; it runs on, detached.
    ///
    /// The task may move between the runtime's worker threads at each `.await`, so the future
    /// must be `Send` and `'static`: move what it uses into it (`async move { .. }`), share
    /// with `Arc`, and hold no `Rc` or `std::sync::MutexGuard` across an `.await`.
    ///
    /// ```ignore
    /// let handle = tokio::spawn(async {
    ///     tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    ///     21 * 2
    /// });
    /// assert_eq!(handle.await.unwrap(), 42);
    /// ```
    ///
    /// This is tokio's `tokio::task::spawn`, with the spawning cell noted for the output.
    #[track_caller]
    pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::task::spawn(crate::cell::tagged(future))
    }

    /// Runs the blocking function `function` on a thread kept for blocking work, so that it
    /// does not hold up the runtime's worker threads (which run every task), and returns a
    /// [`JoinHandle`] to `.await` its result. Use it for CPU-heavy work or for a blocking call
    /// (`std::thread::sleep`, reading a file with `std::fs`) made from async code.
    ///
    /// ```ignore
    /// let sum = tokio::task::spawn_blocking(|| (1..=1_000_000u64).sum::<u64>()).await.unwrap();
    /// ```
    ///
    /// This is tokio's `tokio::task::spawn_blocking`, with the cell that started the work
    /// noted for the output.
    #[track_caller]
    pub fn spawn_blocking<F, R>(function: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let recorded = crate::timeline::blocking(function, std::panic::Location::caller());
        tokio::task::spawn_blocking(crate::cell::tagged_fn(recorded))
    }
}

pub use task::spawn;

/// Shows a cell's final expression in one compile. evcxr first compiles
/// `(expr).evcxr_display()` and, when that fails (most types have no such method), compiles
/// the cell again printing `{:?}`: two compiles for every cell that ends in a value. The
/// kernel's prelude brings this trait into scope, so every `Debug` value has the method and
/// prints just what evcxr's second attempt would, in the format set by `:fmt` and `:types`
/// (the kernel passes them on, see [`display`]). A type's own `evcxr_display` (an inherent
/// method) still wins; a value that is not `Debug` still falls back, and fails as before.
#[doc(hidden)]
pub trait __DisplayFinalValue {
    fn evcxr_display(&self);
}

impl<T: std::fmt::Debug + ?Sized> __DisplayFinalValue for T {
    fn evcxr_display(&self) {
        let text = display::final_value_text(&DebugOf(self), std::any::type_name::<T>());
        records::send_text_plain(&text);
    }
}

/// Any `Debug` value, unsized ones too, as a `&dyn Debug`.
struct DebugOf<'a, T: ?Sized>(&'a T);

impl<T: std::fmt::Debug + ?Sized> std::fmt::Debug for DebugOf<'_, T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

/// What `print!` and `println!` in a cell (or in a task a cell spawned) write: the kernel's
/// prelude routes them here, so that the text is credited to its own cell in one step (see
/// `cell::write_for_cell`).
#[doc(hidden)]
pub fn __print(arguments: std::fmt::Arguments<'_>) {
    cell::write_for_cell(cell::Stream::Stdout, arguments);
}

/// `eprint!` and `eprintln!`, as [`__print`].
#[doc(hidden)]
pub fn __eprint(arguments: std::fmt::Arguments<'_>) {
    cell::write_for_cell(cell::Stream::Stderr, arguments);
}

/// What the kernel's `dbg!` writes: as std's, but credited to its cell like `eprintln!`, and
/// with a location the kernel turns into the cell's line and column.
#[doc(hidden)]
pub fn __dbg(line: u32, column: u32, expression: &str, value: &dyn std::fmt::Debug) {
    let location = protocol::DEBUG_LOCATION;
    cell::write_for_cell(
        cell::Stream::Stderr,
        format_args!("{location}{line}:{column}\u{1e} {expression} = {value:#?}\n"),
    );
}

/// `dbg!()` without a value: only where it is.
#[doc(hidden)]
pub fn __dbg_here(line: u32, column: u32) {
    let location = protocol::DEBUG_LOCATION;
    cell::write_for_cell(cell::Stream::Stderr, format_args!("{location}{line}:{column}\u{1e}\n"));
}

/// Called by the kernel's `eprintln!` wrapper just before a `?` in a cell turns an error into
/// the cell's failure, so the error can be reported under its own type name.
#[doc(hidden)]
pub fn __report_error_type<T: ?Sized>(_error: &T) {
    records::write_record(&protocol::RuntimeRecord::ErrorType { type_name: std::any::type_name::<T>().to_owned() });
}

// The print macros of cells. The kernel's prelude imports them by path (`use tokio::{..}`),
// which holds in the whole crate root: evcxr writes a cell crate's items in no fixed order,
// and a `macro_rules!` of the prelude would not reach a function written before it. This
// crate's own code prints with std's (its modules do not import these; its root prints
// nothing).

/// `print!`, written for its cell (see [`__print`]).
#[doc(hidden)]
#[macro_export]
macro_rules! print {
    ($($argument:tt)*) => { $crate::__print(::std::format_args!($($argument)*)) };
}

/// `println!`, written for its cell (see [`__print`]).
#[doc(hidden)]
#[macro_export]
macro_rules! println {
    () => { $crate::__print(::std::format_args!("\n")) };
    ($($argument:tt)*) => { $crate::__print(::std::format_args!("{}\n", ::std::format_args!($($argument)*))) };
}

/// `eprint!`, written for its cell (see [`__eprint`]).
#[doc(hidden)]
#[macro_export]
macro_rules! eprint {
    ($($argument:tt)*) => { $crate::__eprint(::std::format_args!($($argument)*)) };
}

/// `eprintln!`, written for its cell. Its first arm is the one evcxr's wrapper uses to print
/// the error a `?` returned from the cell: the error's type is noted first.
#[doc(hidden)]
#[macro_export]
macro_rules! eprintln {
    ("{}", $error:ident) => {{
        $crate::__report_error_type(&$error);
        $crate::__eprint(::std::format_args!("{}\n", $error))
    }};
    () => { $crate::__eprint(::std::format_args!("\n")) };
    ($($argument:tt)*) => { $crate::__eprint(::std::format_args!("{}\n", ::std::format_args!($($argument)*))) };
}

/// `dbg!`, as std's, with the cell's line and column (see [`__dbg`]).
#[doc(hidden)]
#[macro_export]
macro_rules! dbg {
    () => { $crate::__dbg_here(::std::line!(), ::std::column!()) };
    ($value:expr $(,)?) => {
        match $value {
            value => {
                $crate::__dbg(::std::line!(), ::std::column!(), ::std::stringify!($value), &value);
                value
            }
        }
    };
    ($($value:expr),+ $(,)?) => { ($($crate::dbg!($value)),+,) };
}
