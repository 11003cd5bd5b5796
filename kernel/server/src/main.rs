//! `rust-async-kernel`: a Jupyter kernel for learning async Rust.
//!
//! ```text
//! rust-async-kernel --connection-file FILE      run the kernel (what kernel.json starts)
//! rust-async-kernel install [...] / uninstall   manage the kernelspec (see install.rs)
//! rust-async-kernel prepare-runtime             precompile the runtime library (set-up)
//! rust-async-kernel spare [--wait | --stop]     start a spare kernel / wait for one / stop them
//! ```
//!
//! The same executable is also evcxr's user-code process: evcxr re-executes it with an
//! environment variable set, and `runtime_hook` then never returns.

mod control;
mod engine_thread;
mod history;
mod install;
mod kernel;
mod replies;
mod shell;
mod sockets;
mod spare;

fn main() {
    // As cargo's rustc wrapper, rust-analyzer's process or evcxr's user-code process, this
    // never returns.
    rust_async_engine::serve_process_role();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("install") => install::install(&args[1..]),
        Some("uninstall") => install::uninstall(&args[1..]),
        Some("prepare-runtime") => prepare_runtime(),
        Some("spare") => spare_command(&args[1..]),
        Some("--connection-file") if args.len() >= 2 => run_kernel(&args[1]),
        Some(path) if path.ends_with(".json") => run_kernel(path),
        _ => {
            eprintln!(
                "usage: rust-async-kernel --connection-file FILE\n       \
                 rust-async-kernel install [--user | --sys-prefix | --prefix DIR] [--name NAME] [--display-name TEXT]\n       \
                 rust-async-kernel uninstall [--user | --sys-prefix | --prefix DIR] [--name NAME]\n       \
                 rust-async-kernel prepare-runtime\n       \
                 rust-async-kernel spare [--wait | --stop]"
            );
            std::process::exit(2);
        }
    };
    if let Err(error) = result {
        eprintln!("rust-async-kernel: {error:#}");
        std::process::exit(1);
    }
}

fn run_kernel(connection_file: &str) -> anyhow::Result<()> {
    // SIGINT (Ctrl-C in a terminal, or a front end using signal interrupts) must not kill the
    // kernel: interrupts arrive as control messages and only cancel the running cell.
    // SAFETY: setting a signal disposition; no handler code runs.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    fit_memory_limit();
    exit_when_parent_dies();
    if let Some(claimed) = spare::claim(connection_file) {
        spare::serve_as_launcher(claimed);
    }
    let engine = engine_thread::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Once this kernel is up, a spare starts for the next notebook (it would slow this start).
    runtime.block_on(kernel::run(connection_file, engine, spare::spawn_spare))?;
    // Dropping the runtime would wait for socket tasks; the kernel is done.
    std::process::exit(0);
}

/// Under a memory limit (a student's pod: `memory_limit`), says in the kernel's log what is
/// left out to fit, and has cargo build a `:dep`'s crates few at a time (unless the
/// environment already says how many). Called first, while this process has one thread.
fn fit_memory_limit() {
    use rust_async_engine::memory_limit::{self, MemoryLimit};
    let limit = MemoryLimit::current();
    let Some(found) = &limit else { return };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let mut fitted = Vec::new();
    if std::env::var_os("CARGO_BUILD_JOBS").is_none() {
        if let Some(jobs) = memory_limit::cargo_jobs(limit.as_ref(), cpus) {
            // SAFETY: no other thread runs yet (see above).
            unsafe { std::env::set_var("CARGO_BUILD_JOBS", jobs.to_string()) };
            fitted.push(format!("cargo builds {jobs} crate(s) at a time"));
        }
    }
    if !memory_limit::spares_fit(limit.as_ref()) {
        fitted.push("no spare kernels".into());
    }
    fitted.push(format!("rust-analyzer only with {} free", memory_limit::size_text(memory_limit::ANALYSIS_NEEDS)));
    eprintln!("rust-async: memory limit {}: {}", found.describe(), fitted.join(", "));
}

/// Jupyter (jupyter_client) names the process that started the kernel in `JPY_PARENT_PID`.
/// If it dies without shutting the kernel down (a grading script that crashed, say), nobody
/// will: the kernel then exits by itself, as ipykernel does, and takes its user process (and
/// a spare serving it) along.
fn exit_when_parent_dies() {
    let Some(parent) = std::env::var("JPY_PARENT_PID").ok().and_then(|pid| pid.parse::<i32>().ok()) else {
        return;
    };
    // SAFETY: getppid cannot fail.
    if parent <= 1 || unsafe { libc::getppid() } != parent {
        return; // not started by it directly (a wrapper script): nothing reliable to watch
    }
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        // SAFETY: as above. A dead parent means this process was handed to another one.
        if unsafe { libc::getppid() } != parent {
            // Not eprintln!: the stderr pipe may have died with the parent, and a failed
            // eprintln! panics (this thread, not the process) instead of exiting.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "rust-async-kernel: the process that started this kernel is gone; exiting");
            std::process::exit(0);
        }
    });
}

/// `spare`: start one in the background (if none stands by); `--serve`: be one (what the
/// background process runs); `--wait`: wait until one is warmed up; `--stop`: stop them.
fn spare_command(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        None => {
            spare::spawn_spare();
            Ok(())
        }
        Some("--serve") => {
            fit_memory_limit();
            spare::serve_spare()
        }
        Some("--wait") => spare::wait_until_ready(std::time::Duration::from_secs(180)),
        Some("--stop") => {
            println!("stopped {} spare kernel(s)", spare::stop_all()?);
            Ok(())
        }
        Some(other) => anyhow::bail!("unknown spare option {other}: use --wait or --stop"),
    }
}

fn prepare_runtime() -> anyhow::Result<()> {
    let library = rust_async_engine::runtime_library::RuntimeLibrary::locate();
    if library.is_prepared() {
        println!("runtime library: up to date");
        return Ok(());
    }
    println!("runtime library: precompiling tokio and the kernel's runtime (once)...");
    library.prepare()?;
    println!("runtime library: ready");
    Ok(())
}
