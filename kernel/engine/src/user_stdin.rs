//! The user process's stdin. evcxr's loop reads its commands on fd 0, so user code reading
//! stdin must never consume them: fd 0 is a pipe that a thread fills with evcxr's commands,
//! and when user code blocks reading it while a cell runs, another thread asks the kernel for
//! a line (a Jupyter `input_request`) or, when the front end allows no input, ends the read at
//! once. Also where each cell's library is loaded for all later cells (`statics`).

use crate::records::{send_record, InputReply, Record};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Moves evcxr's commands from its pipe to our stdin pipe (evcxr's loop reads fd 0).
pub(crate) fn copy_evcxr_commands(from: std::fs::File, to: Arc<Mutex<std::fs::File>>) {
    let mut from = BufReader::new(from);
    let mut line = String::new();
    loop {
        line.clear();
        match from.read_line(&mut line) {
            Ok(0) | Err(_) => {
                // The kernel closed our stdin: close ours, so evcxr's loop sees the end and exits.
                if let Ok(mut to) = to.lock() {
                    if let Ok((_, write_end)) = pipe() {
                        *to = std::fs::File::from(write_end);
                    }
                }
                return;
            }
            Ok(_) => {
                if let Some(command) = line.strip_prefix("LOAD_AND_RUN ") {
                    load_for_all_cells(command.split(' ').next().unwrap_or_default());
                    CELL_RUNNING.store(true, Ordering::SeqCst);
                }
                if let Ok(mut to) = to.lock() {
                    let _ = to.write_all(line.as_bytes());
                }
            }
        }
    }
}

/// Loads a cell's library before evcxr does, with its symbols visible to every library loaded
/// later (`RTLD_GLOBAL`): a later cell's copy of a `static` then binds to this one (see the
/// engine's `statics`). evcxr's own load (`RTLD_LOCAL`) finds the library loaded already and
/// keeps it global. A failure is left to evcxr's load, which reports it.
fn load_for_all_cells(library: &str) {
    let Ok(path) = std::ffi::CString::new(library) else { return };
    // SAFETY: loading the cell's library, as evcxr is about to; the handle is never closed
    // (evcxr never unloads a cell's library either).
    unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
}

/// Watches for user code blocked reading stdin and answers it through the kernel, which
/// replies one JSON line per `input-request`: `{"line": "..."}`, or `{"line": null}` when the
/// request allows no input (then the read ends at once with end of input, never hanging).
pub(crate) fn answer_stdin_reads(
    kernel: UnixStream,
    kernel_writer: Arc<Mutex<UnixStream>>,
    stdin_writer: Arc<Mutex<std::fs::File>>,
) {
    let mut replies = BufReader::new(kernel);
    let mut seen_reading = false;
    loop {
        std::thread::sleep(Duration::from_millis(40));
        // Two samples in a row: evcxr's loop passes through read(0) briefly as a cell starts.
        let reading = user_code_is_reading_stdin();
        let confirmed = reading && seen_reading;
        seen_reading = reading;
        if !confirmed {
            continue;
        }
        seen_reading = false;
        send_record(&kernel_writer, &Record::InputRequest { prompt: String::new() });
        let mut reply = String::new();
        match replies.read_line(&mut reply) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = serde_json::from_str::<InputReply>(&reply).ok().and_then(|reply| reply.line);
        let Ok(mut stdin) = stdin_writer.lock() else {
            return;
        };
        match line {
            Some(line) => {
                let _ = stdin.write_all(format!("{line}\n").as_bytes());
            }
            None => end_blocked_read(&mut stdin),
        }
    }
}

/// True while a cell runs and one of its threads is blocked in `read(0, ..)`.
fn user_code_is_reading_stdin() -> bool {
    CELL_RUNNING.load(Ordering::SeqCst) && !threads_reading_stdin().is_empty()
}

/// Set while evcxr's loop runs a cell (from `LOAD_AND_RUN` to `EVCXR_EXECUTION_COMPLETE`):
/// only then can a reader of fd 0 be user code rather than evcxr's loop waiting for work.
pub(crate) static CELL_RUNNING: AtomicBool = AtomicBool::new(false);

/// Makes the blocked read fail at once. fd 0 is pointed at a second, non-blocking open of the
/// same pipe, and the reading thread gets a signal that interrupts its `read`; std retries the
/// read on fd 0, which now fails with "would block" instead of waiting. When the cell ends, the
/// runtime library makes fd 0 blocking again, so evcxr's loop reads its next command as usual.
fn end_blocked_read(_stdin: &mut std::fs::File) {
    // SAFETY: opening our own fd 0 anew (a pipe: a new open file description of it), pointing
    // fd 0 at it, and signalling our own threads, whose SIGUSR2 handler does nothing.
    unsafe {
        let path = c"/proc/self/fd/0";
        let nonblocking = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC);
        if nonblocking < 0 {
            return;
        }
        libc::dup2(nonblocking, 0);
        libc::close(nonblocking);
        for thread in threads_reading_stdin() {
            libc::syscall(libc::SYS_tgkill, std::process::id(), thread, libc::SIGUSR2);
        }
    }
}

/// Threads (other than our service threads) blocked in `read(0, ..)`.
fn threads_reading_stdin() -> Vec<libc::pid_t> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return vec![];
    };
    tasks
        .flatten()
        .filter(|task| {
            let path = task.path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if name.starts_with("rust-async-stdi") || name.starts_with("rust-async-inpu") {
                return false;
            }
            let syscall = std::fs::read_to_string(path.join("syscall")).unwrap_or_default();
            let mut fields = syscall.split_whitespace();
            // x86_64: read is syscall 0, readv 19; the first argument is the descriptor.
            matches!(fields.next(), Some("0") | Some("19")) && fields.next() == Some("0x0")
        })
        .filter_map(|task| task.file_name().to_str()?.parse().ok())
        .collect()
}

/// SIGUSR2 only interrupts a blocked `read` (installed without SA_RESTART).
pub(crate) fn install_read_interrupt_signal() {
    extern "C" fn ignore(_: libc::c_int) {}
    // SAFETY: installing a handler that does nothing.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut());
    }
}

pub(crate) fn check(result: libc::c_int) -> std::io::Result<libc::c_int> {
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

pub(crate) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors that we then own.
    unsafe {
        check(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC))?;
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}
