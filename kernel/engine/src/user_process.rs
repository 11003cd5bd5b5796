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
//!   for a line (Jupyter `input_request`) or, without stdin, ends the read with a message
//!   (`user_stdin`).

use crate::protocol::{self, RuntimeRecord};
use crate::records::{self, send_record, Record};
use crate::user_stdin::{answer_stdin_reads, check, copy_evcxr_commands, install_read_interrupt_signal, pipe, CELL_RUNNING};
use crate::StreamName;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

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
            pending_stream: StreamName::Stdout,
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


struct Forwarder {
    kernel: Arc<Mutex<UnixStream>>,
    /// User text not yet sent, all of one stream.
    pending_text: String,
    pending_stream: StreamName,
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
                self.user_text(StreamName::Stderr, &data);
            }
        }
    }

    fn user_text(&mut self, stream: StreamName, text: &str) {
        if stream == StreamName::Stderr && std::mem::take(&mut self.error_text_follows) {
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
            "[output truncated: this cell and its tasks printed more than {} MiB; the rest is not \
             shown, so that the notebook stays usable. Print less, or write to a file.]\n",
            OUTPUT_LIMIT_BYTES >> 20
        );
        self.flush_text();
        send_record(&self.kernel, &Record::Notice { text: note });
    }

    fn queue_text(&mut self, stream: StreamName, text: &str) {
        if self.pending_stream != stream || self.pending_text.len() > 64 * 1024 {
            self.flush_text();
        }
        self.pending_stream = stream;
        self.pending_text.push_str(text);
    }

    fn flush_text(&mut self) {
        if !self.pending_text.is_empty() {
            let text = std::mem::take(&mut self.pending_text);
            send_record(&self.kernel, &Record::Stream { stream: self.pending_stream, text });
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
                self.user_text(StreamName::Stdout, &std::mem::take(&mut user));
                self.flush_text();
                if let Some(record) = records::decode_runtime_record(record) {
                    self.runtime_record(record);
                }
            } else if is_evcxr {
                self.user_text(StreamName::Stdout, &std::mem::take(&mut user));
                self.flush_text();
                self.evcxr_line(line.unwrap_or_default());
            } else {
                user.push_str(piece);
            }
        }
        self.user_text(StreamName::Stdout, &user);
    }

    fn runtime_record(&mut self, record: RuntimeRecord) {
        match &record {
            RuntimeRecord::ExitFlush => {
                // Everything written before the exit has been read: send it, then let it go on.
                self.flush_text();
                let answer = SocketAddr::from_abstract_name(protocol::exit_ack_socket_name(std::process::id()));
                if let (Ok(socket), Ok(answer)) = (UnixDatagram::unbound(), answer) {
                    let _ = socket.send_to_addr(b"sent", &answer);
                }
            }
            RuntimeRecord::CellStart { cell } | RuntimeRecord::OutputOf { cell } => self.credited_cell = *cell,
            RuntimeRecord::ErrorType { .. } => self.error_text_follows = true,
            // What was shown is cleared: a progress display may print on.
            RuntimeRecord::ClearOutput { .. } => _ = self.printed_by_cell.remove(&self.credited_cell),
            RuntimeRecord::Panic { .. } | RuntimeRecord::Interrupted | RuntimeRecord::Display { .. } => {}
        }
        if let Some(record) = Record::from_runtime(record) {
            send_record(&self.kernel, &record);
        }
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
                    send_record(&self.kernel, &Record::CellEnd);
                }
                "EVCXR_ERROR_OCCURRED" => {
                    send_record(&self.kernel, &Record::QuestionMarkError)
                }
                _ => {}
            }
        }
        let _ = self.evcxr_stdout.write_all(format!("{line}\n").as_bytes());
        let _ = self.evcxr_stdout.flush();
    }
}
