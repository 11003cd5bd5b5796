//! The user-code side of the kernel: set-up done in the user-code process before evcxr's loop.
//!
//! evcxr runs cells in a child process that is our own binary re-executed (see
//! `evcxr::runtime_hook`). Before that loop starts, [`prepare`] rewires the child's standard
//! streams so that the kernel sees every byte the user's code writes, in order, as it happens:
//!
//! - fd 1 and fd 2 become two datagram sockets that send to ONE receiving socket. A write is a
//!   datagram, and datagrams from both streams queue in one order, so stdout and stderr keep
//!   their relative order (two pipes could not promise that).
//! - A forwarder thread reads that queue. evcxr's own protocol lines (`EVCXR_...`) go on to
//!   evcxr's stdout pipe untouched; user output and the runtime library's control records go,
//!   as JSON lines, to the kernel over a Unix socket whose path the kernel passes in
//!   [`OUTPUT_SOCKET_ENV`]. That socket is read by the kernel at all times, so output from tasks
//!   that print while no cell runs still arrives at once.
//! - fd 0 becomes a pipe fed by a broker thread, so reading stdin in a cell never consumes
//!   evcxr's command stream; when user code blocks reading stdin, the broker asks the kernel
//!   for a line (Jupyter `input_request`) or, without stdin, ends the read with a message.

use crate::protocol;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Path of the kernel's Unix socket that the user process connects to.
pub const OUTPUT_SOCKET_ENV: &str = "RUST_ASYNC_OUTPUT_SOCKET";

/// Path of a JSON file `{"cwd": ..., "env": {...}}`: when it exists, the user process takes its
/// working directory and environment from it, not from the kernel process. A spare kernel
/// started ahead of time writes it when a notebook claims it, then restarts the user process,
/// so user code sees the notebook's directory and environment (see `Engine::adopt_session`).
pub const SESSION_FILE_ENV: &str = "RUST_ASYNC_SESSION_FILE";

/// The largest single write the user process can make to stdout or stderr.
const DATAGRAM_CAPACITY: usize = 4 << 20;

/// How much text a cell (with the tasks it spawned) may print: what comes after is dropped,
/// with a note. A notebook with more in one cell is slow to open, a front end can only show
/// it slowly, and a grader times out waiting for it (a `loop` that prints, say).
pub const OUTPUT_LIMIT_BYTES: usize = 2 << 20;

/// Prepares the user-code process, when this process is one. Call first thing in `main`,
/// before `evcxr::runtime_hook()`. Does nothing in the kernel process.
pub fn prepare() {
    if std::env::var_os("EVCXR_IS_RUNTIME").is_none() {
        return;
    }
    // Until the runtime library installs its handler, an interrupt must not kill the process.
    // And if the kernel dies (even by SIGKILL), this process must not live on, spinning in a
    // user's endless loop with nobody to stop it.
    // SAFETY: setting a signal disposition and the parent-death signal; no handler code runs.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    if let Some(session_file) = std::env::var_os(SESSION_FILE_ENV) {
        apply_session(std::path::Path::new(&session_file));
    }
    let Some(socket_path) = std::env::var_os(OUTPUT_SOCKET_ENV) else {
        return;
    };
    if let Err(error) = rewire_streams(std::path::Path::new(&socket_path)) {
        eprintln!("rust-async: could not capture the user process's output: {error}");
    }
}

/// Takes the working directory and environment of the notebook's session, if there is one.
/// Runs while the process has a single thread, so changing the environment is sound.
fn apply_session(session_file: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(session_file) else { return };
    let Ok(session) = serde_json::from_str::<crate::Session>(&text) else {
        eprintln!("rust-async: ignored an unreadable session file {}", session_file.display());
        return;
    };
    if let Err(error) = std::env::set_current_dir(&session.cwd) {
        eprintln!("rust-async: could not enter {}: {error}", session.cwd.display());
    }
    // What evcxr and the kernel set for this process stays; the rest is the session's.
    let internal = |name: &str| name.starts_with("EVCXR_") || name.starts_with("RUST_ASYNC_") || name == "RUST_BACKTRACE";
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if !internal(&name) && !session.env.contains_key(&name) {
            std::env::remove_var(&name);
        }
    }
    for (name, value) in &session.env {
        if !internal(name) {
            std::env::set_var(name, value);
        }
    }
}

fn rewire_streams(socket_path: &std::path::Path) -> std::io::Result<()> {
    let kernel = UnixStream::connect(socket_path)?;
    install_read_interrupt_signal();
    let kernel_writer = Arc::new(Mutex::new(kernel.try_clone()?));

    let name = |suffix: &str| format!("rust-async-{}-{suffix}", std::process::id());
    let receiver = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name("in"))?)?;
    set_buffer(receiver.as_raw_fd(), libc::SO_RCVBUF, DATAGRAM_CAPACITY);
    let stdout_socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name("out"))?)?;
    let stderr_socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name("err"))?)?;
    for socket in [&stdout_socket, &stderr_socket] {
        socket.connect_addr(&receiver.local_addr()?)?;
        set_buffer(socket.as_raw_fd(), libc::SO_SNDBUF, DATAGRAM_CAPACITY);
    }

    // evcxr's pipe, where its protocol lines must keep going.
    // SAFETY: dup of our own open descriptor; the result is owned by the File.
    let evcxr_stdout = unsafe { std::fs::File::from_raw_fd(check(libc::dup(1))?) };
    let stdin_from_evcxr = unsafe { std::fs::File::from_raw_fd(check(libc::dup(0))?) };
    let (stdin_read_end, stdin_write_end) = pipe()?;
    unsafe {
        check(libc::dup2(stdout_socket.as_raw_fd(), 1))?;
        check(libc::dup2(stderr_socket.as_raw_fd(), 2))?;
        check(libc::dup2(stdin_read_end.as_raw_fd(), 0))?;
    }
    let stdout_name = stdout_socket.local_addr()?;
    drop((stdout_socket, stderr_socket, stdin_read_end));

    let stdin_writer = Arc::new(Mutex::new(std::fs::File::from(stdin_write_end)));
    spawn("rust-async-stdin", {
        let stdin_writer = Arc::clone(&stdin_writer);
        move || copy_evcxr_commands(stdin_from_evcxr, stdin_writer)
    });
    spawn("rust-async-input", {
        let stdin_writer = Arc::clone(&stdin_writer);
        let kernel_writer = Arc::clone(&kernel_writer);
        move || answer_stdin_reads(kernel, kernel_writer, stdin_writer)
    });
    spawn("rust-async-output", move || {
        let mut forwarder = Forwarder {
            kernel: kernel_writer,
            pending_text: String::new(),
            pending_stream: "stdout",
            evcxr_stdout,
            in_evcxr_content: false,
            carried_content: String::new(),
            credited_cell: 0,
            printed_by_cell: std::collections::HashMap::new(),
            error_text_follows: false,
        };
        forwarder.run(receiver, stdout_name);
    });
    Ok(())
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .expect("could not start a user-process service thread");
}

fn check(result: libc::c_int) -> std::io::Result<libc::c_int> {
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors that we then own.
    unsafe {
        check(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC))?;
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

fn set_buffer(fd: RawFd, option: libc::c_int, bytes: usize) {
    let value = bytes as libc::c_int;
    // SAFETY: setsockopt with a pointer to a local int of the right size. Best effort: the
    // system may cap the size, which only limits the largest single write.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Moves evcxr's commands from its pipe to our stdin pipe (evcxr's loop reads fd 0).
fn copy_evcxr_commands(from: std::fs::File, to: Arc<Mutex<std::fs::File>>) {
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
fn answer_stdin_reads(
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
        send_record(&kernel_writer, &json!({"kind": "input-request", "prompt": ""}));
        let mut reply = String::new();
        match replies.read_line(&mut reply) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = serde_json::from_str::<serde_json::Value>(&reply)
            .ok()
            .and_then(|value| value["line"].as_str().map(str::to_owned));
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
static CELL_RUNNING: AtomicBool = AtomicBool::new(false);

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
fn install_read_interrupt_signal() {
    extern "C" fn ignore(_: libc::c_int) {}
    // SAFETY: installing a handler that does nothing.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut());
    }
}

fn send_record(kernel: &Arc<Mutex<UnixStream>>, record: &serde_json::Value) {
    if let Ok(mut kernel) = kernel.lock() {
        let mut line = record.to_string();
        line.push('\n');
        let _ = kernel.write_all(line.as_bytes());
    }
}

struct Forwarder {
    kernel: Arc<Mutex<UnixStream>>,
    /// User text not yet sent, all of one stream.
    pending_text: String,
    pending_stream: &'static str,
    evcxr_stdout: std::fs::File,
    /// Inside an `EVCXR_BEGIN_CONTENT` .. `EVCXR_END_CONTENT` block, which evcxr reads itself.
    in_evcxr_content: bool,
    /// The start of a content line whose rest comes in the next write (a long final value).
    carried_content: String,
    /// The cell the text read now is credited to (from `cell-start` / `output-of`; 0: none).
    credited_cell: u64,
    /// How much text each cell has printed, against [`OUTPUT_LIMIT_BYTES`].
    printed_by_cell: std::collections::HashMap<u64, usize>,
    /// An `error-type` record came: the next stderr text is the error a `?` returned.
    error_text_follows: bool,
}

impl Forwarder {
    fn run(&mut self, receiver: UnixDatagram, stdout_name: SocketAddr) {
        let stdout_abstract = stdout_name.as_abstract_name().map(<[u8]>::to_vec);
        let mut buffer = vec![0u8; DATAGRAM_CAPACITY];
        loop {
            // Wait only when nothing is pending; otherwise take what is queued and, once the
            // queue is empty, send the pending text (so stderr written byte by byte goes out as
            // one message, without delaying anything).
            let _ = receiver.set_nonblocking(!self.pending_text.is_empty());
            let (length, sender) = match receiver.recv_from(&mut buffer) {
                Ok(received) => received,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    self.flush_text();
                    continue;
                }
                Err(_) => return,
            };
            let data = String::from_utf8_lossy(&buffer[..length]).into_owned();
            if sender.as_abstract_name().map(<[u8]>::to_vec) == stdout_abstract {
                self.stdout(&data);
            } else {
                self.user_text("stderr", &data);
            }
        }
    }

    fn user_text(&mut self, stream: &'static str, text: &str) {
        if stream == "stderr" && std::mem::take(&mut self.error_text_follows) {
            // The error a `?` returned, which becomes the cell's error: never cut.
            self.queue_text(stream, text);
            return;
        }
        let printed = self.printed_by_cell.entry(self.credited_cell).or_default();
        // More than the limit counted: the cell's text was cut, and the note sent.
        if text.is_empty() || *printed > OUTPUT_LIMIT_BYTES {
            return;
        }
        let room = OUTPUT_LIMIT_BYTES - *printed;
        if text.len() <= room {
            *printed += text.len();
            self.queue_text(stream, text);
            return;
        }
        *printed = OUTPUT_LIMIT_BYTES + 1;
        let mut fits = room;
        while !text.is_char_boundary(fits) {
            fits -= 1;
        }
        // Whole lines only, unless one long line is all there is room for.
        let cut = match text[..fits].rfind('\n') {
            Some(newline) => newline + 1,
            None if fits >= 4096 => fits,
            None => 0,
        };
        self.queue_text(stream, &text[..cut]);
        let note = format!(
            "\n[output truncated: this cell and its tasks printed more than {} MiB; the rest is not \
             shown, so that the notebook stays usable. Print less, or write to a file.]\n",
            OUTPUT_LIMIT_BYTES >> 20
        );
        self.queue_text("stderr", &note);
    }

    fn queue_text(&mut self, stream: &'static str, text: &str) {
        if self.pending_stream != stream || self.pending_text.len() > 64 * 1024 {
            self.flush_text();
        }
        self.pending_stream = stream;
        self.pending_text.push_str(text);
    }

    fn flush_text(&mut self) {
        if !self.pending_text.is_empty() {
            let text = std::mem::take(&mut self.pending_text);
            send_record(&self.kernel, &json!({"kind": "stream", "name": self.pending_stream, "text": text}));
        }
    }

    /// Splits one stdout write into user text, runtime records and evcxr protocol lines.
    fn stdout(&mut self, data: &str) {
        let joined;
        let data = if self.carried_content.is_empty() {
            data
        } else {
            joined = std::mem::take(&mut self.carried_content) + data;
            joined.as_str()
        };
        let mut user = String::new();
        for whole_piece in data.split_inclusive('\n') {
            if self.in_evcxr_content && !whole_piece.ends_with('\n') {
                self.carried_content.push_str(whole_piece);
                continue;
            }
            // evcxr's lines can follow user text that had no newline ("partialEVCXR_...").
            let piece = match whole_piece.find("EVCXR_") {
                Some(start) if start > 0 && !self.in_evcxr_content && whole_piece.ends_with('\n') => {
                    user.push_str(&whole_piece[..start]);
                    &whole_piece[start..]
                }
                _ => whole_piece,
            };
            let line = piece.strip_suffix('\n');
            let is_evcxr = line.is_some_and(|line| self.in_evcxr_content || line.starts_with("EVCXR_"));
            if let Some(record) = line.and_then(|line| line.strip_prefix(protocol::MARKER)) {
                self.user_text("stdout", &std::mem::take(&mut user));
                self.flush_text();
                self.runtime_record(record);
            } else if is_evcxr {
                self.user_text("stdout", &std::mem::take(&mut user));
                self.flush_text();
                self.evcxr_line(line.unwrap_or_default());
            } else {
                user.push_str(piece);
            }
        }
        self.user_text("stdout", &user);
    }

    fn runtime_record(&mut self, record: &str) {
        let (kind, payload) = record.split_once(' ').unwrap_or((record, ""));
        if kind == protocol::EXIT_FLUSH {
            // Everything written before the exit has been read: send it, then let it go on.
            self.flush_text();
            let answer = SocketAddr::from_abstract_name(protocol::exit_ack_socket_name(std::process::id()));
            if let (Ok(socket), Ok(answer)) = (UnixDatagram::unbound(), answer) {
                let _ = socket.send_to_addr(b"sent", &answer);
            }
            return;
        }
        if kind == protocol::CELL_START || kind == protocol::OUTPUT_OF {
            self.credited_cell = payload.trim().parse().unwrap_or(0);
        } else if kind == protocol::ERROR_TYPE {
            self.error_text_follows = true;
        } else if kind == protocol::CLEAR_OUTPUT {
            // What was shown is cleared: a progress display may print on.
            self.printed_by_cell.remove(&self.credited_cell);
        }
        let payload = match serde_json::from_str::<serde_json::Value>(payload) {
            Ok(value) if kind == protocol::PANIC || kind == protocol::DISPLAY => value,
            _ => serde_json::Value::String(payload.to_owned()),
        };
        send_record(&self.kernel, &json!({"kind": kind, "payload": payload}));
    }

    fn evcxr_line(&mut self, line: &str) {
        if line.starts_with("EVCXR_BEGIN_CONTENT") {
            self.in_evcxr_content = true;
        } else if line == "EVCXR_END_CONTENT" {
            self.in_evcxr_content = false;
        } else if !self.in_evcxr_content {
            match line {
                "EVCXR_EXECUTION_COMPLETE" => {
                    CELL_RUNNING.store(false, Ordering::SeqCst);
                    // Everything the cell wrote is now with the kernel: say so before evcxr
                    // learns the cell is over, so the reply never overtakes the output.
                    send_record(&self.kernel, &json!({"kind": "cell-end"}));
                }
                "EVCXR_ERROR_OCCURRED" => {
                    send_record(&self.kernel, &json!({"kind": "question-mark-error"}))
                }
                _ => {}
            }
        }
        let _ = self.evcxr_stdout.write_all(format!("{line}\n").as_bytes());
        let _ = self.evcxr_stdout.flush();
    }
}
