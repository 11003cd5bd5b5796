//! Spare kernels: a kernel process started ahead of time, so that the next notebook's kernel
//! is ready at once. Off unless `RUST_ASYNC_SPARE=1`.
//!
//! A fresh kernel's first cell waits for evcxr's start-up and the compiles that switch cells to
//! async mode: about half a second on a 2-core machine, since rust-analyzer no longer takes
//! part (see `scripts/bench` for the measures). Where that still matters (a loaded server), a
//! kernel, once up, leaves one *spare* behind: the same binary run in the background
//! (`rust-async-kernel spare --serve`), which starts an engine and then waits on a Unix socket
//! in a private per-user directory.
//!
//! A kernel that Jupyter starts (`--connection-file`) first tries to claim a spare:
//! - Claimed: this process becomes the *launcher*. It stays alive as the process Jupyter
//!   watches and signals, while the spare serves the connection file with its ready engine.
//!   The spare takes on the launcher's working directory, environment (for user code, through
//!   a restarted user process) and stderr. The claim's socket ties their lives together: the
//!   launcher exits with the spare's exit status, and the spare exits at once when the
//!   launcher dies (Jupyter kills a kernel with SIGKILL to its process group, which the spare,
//!   in its own session, is not part of). SIGTERM and SIGHUP to the launcher are passed on.
//! - No spare: the kernel starts its own engine, as if spares did not exist.
//!
//! There is at most one unclaimed spare per user and *key*: the binary (path, size, mtime) and
//! the environment variables the kernel side reads; a kernel only claims a spare made for the
//! same key. An unclaimed spare exits after `RUST_ASYNC_SPARE_IDLE_SECS` seconds (default 600),
//! and within [`SERVER_CHECK_INTERVAL`] of its *server* ending: the Jupyter server (or grader)
//! that started the kernel which left it (`JPY_PARENT_PID`), or the process that ran
//! `rust-async-kernel spare` (`scripts/lab`, which becomes JupyterLab).

use crate::engine_thread::{self, Job};
use crate::kernel;
use rust_async_engine::host::{fingerprint, process_exists, FileLock};
use rust_async_engine::memory_limit::{self, MemoryLimit};
use rust_async_engine::rustc_wrapper::SCCACHE_ENV;
use rust_async_engine::Session;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

const SWITCH_ENV: &str = "RUST_ASYNC_SPARE";
const IDLE_ENV: &str = "RUST_ASYNC_SPARE_IDLE_SECS";
/// Given to a spare: the pid of the process it serves notebooks for (see the module's text).
const SERVER_ENV: &str = "RUST_ASYNC_SPARE_SERVER_PID";
/// How often a waiting spare checks that its server is still there.
pub const SERVER_CHECK_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_IDLE: Duration = Duration::from_secs(600);
/// Set by a running engine in its own process (so not part of a kernel's configuration).
const ENGINE_SETS: [&str; 2] = ["EVCXR_TMPDIR", "EVCXR_CONFIG_DIR"];
/// How long a claimant waits for a spare's answer before trying the next one (or starting cold).
const CLAIM_PATIENCE: Duration = Duration::from_secs(2);

/// Spares are on when the setting asks for them and the memory limit, if any, has room for
/// them (`memory_limit::SPARES_NEED`: off in a student's pod).
pub fn enabled() -> bool {
    std::env::var(SWITCH_ENV).is_ok_and(|value| value == "1") && memory_limit::spares_fit(MemoryLimit::current().as_ref())
}

/// What a spare tells the launcher whose claim it took: one JSON line each, in this order.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "spare", rename_all = "kebab-case")]
enum SpareMessage {
    /// The claim is taken: this spare serves the launcher's notebook.
    Claimed,
    /// Its engine is up (the next spare may start: earlier, it would slow this one down).
    Ready,
    /// Its last word: it exits with this status.
    Exit { status: i32 },
}

impl SpareMessage {
    fn send(&self, mut to: &UnixStream) -> std::io::Result<()> {
        let mut line = serde_json::to_string(self).map_err(std::io::Error::other)?;
        line.push('\n');
        to.write_all(line.as_bytes())
    }

    fn read(line: &str) -> Option<SpareMessage> {
        serde_json::from_str(line).ok()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claim {
    connection_file: PathBuf,
    launcher_pid: u32,
    session: Session,
}

/// A spare that accepted this kernel's claim.
pub struct Claimed {
    spare_pid: i32,
    stream: BufReader<UnixStream>,
}

/// Tries to hand this kernel's connection file to a spare.
pub fn claim(connection_file: &str) -> Option<Claimed> {
    if !enabled() {
        return None;
    }
    let directory = directory().ok()?;
    let claim = Claim {
        connection_file: std::path::absolute(connection_file).ok()?,
        launcher_pid: std::process::id(),
        session: Session::current().ok()?,
    };
    let mut request = serde_json::to_string(&claim).ok()?;
    request.push('\n');
    for (socket, spare_pid) in spares(&directory, &key()) {
        let Ok(mut stream) = UnixStream::connect(&socket) else {
            // Nobody listens: a spare that was killed. Its socket file is all that is left.
            let _ = std::fs::remove_file(&socket);
            continue;
        };
        let _ = stream.set_read_timeout(Some(CLAIM_PATIENCE));
        if stream.write_all(request.as_bytes()).is_err() {
            continue;
        }
        let mut stream = BufReader::new(stream);
        let mut answer = String::new();
        if stream.read_line(&mut answer).is_ok() && SpareMessage::read(&answer) == Some(SpareMessage::Claimed) {
            let _ = stream.get_ref().set_read_timeout(None);
            return Some(Claimed { spare_pid, stream });
        }
    }
    None
}

static SPARE_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn pass_signal_on(signal: libc::c_int) {
    let pid = SPARE_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    }
}

/// The launcher's life: wait for the spare serving the notebook, pass signals on, and exit as
/// it does. Also leaves a spare for the next notebook, once this one's engine is up.
pub fn serve_as_launcher(claimed: Claimed) -> ! {
    SPARE_PID.store(claimed.spare_pid, Ordering::Relaxed);
    for signal in [libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installing a handler that only calls kill.
        unsafe { libc::signal(signal, pass_signal_on as *const () as libc::sighandler_t) };
    }
    // The spare says when its engine is up, and its exit status last; without that, it died.
    let mut status = 1;
    for line in claimed.stream.lines() {
        let Ok(line) = line else { break };
        match SpareMessage::read(&line) {
            Some(SpareMessage::Ready) => spawn_spare(),
            Some(SpareMessage::Exit { status: exit_status }) => status = exit_status,
            Some(SpareMessage::Claimed) | None => {}
        }
    }
    std::process::exit(status)
}

/// Starts a spare in the background, unless spares are off or one is already there.
pub fn spawn_spare() {
    if !enabled() {
        return;
    }
    let Ok(directory) = directory() else { return };
    let key = key();
    if !FileLock::is_free(&slot(&directory, &key)) {
        return;
    }
    let Ok(executable) = std::env::current_exe() else { return };
    let log = std::fs::File::create(directory.join(format!("{key}.log")));
    let mut command = std::process::Command::new(executable);
    for name in ENGINE_SETS {
        command.env_remove(name);
    }
    // SAFETY: getppid cannot fail.
    let server = std::env::var("JPY_PARENT_PID").ok().and_then(|pid| pid.parse().ok()).unwrap_or_else(|| unsafe { libc::getppid() });
    command.env(SERVER_ENV, server.to_string());
    command
        .args(["spare", "--serve"])
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log.map_or_else(|_| std::process::Stdio::null(), std::process::Stdio::from));
    // Its own session keeps the spare out of this kernel's process group, which Jupyter kills.
    // (Not niced: a claimed spare is a student's kernel, and could not be un-niced.)
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    match command.spawn() {
        // Reap it, should it end while this process still runs.
        Ok(mut child) => drop(std::thread::spawn(move || child.wait())),
        Err(error) => eprintln!("rust-async: could not start a spare kernel: {error}"),
    }
}

/// The spare's life: start and warm an engine, wait for a claim (or exit when idle too long),
/// then serve the claimant's notebook.
pub fn serve_spare() -> anyhow::Result<()> {
    let directory = directory()?;
    let key = key();
    let Some(slot) = FileLock::try_exclusive(&slot(&directory, &key))? else {
        return Ok(()); // another spare stands by already
    };
    // SAFETY: setting a signal disposition (as a kernel does: interrupts come as messages).
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let pid = std::process::id();
    let socket_path = directory.join(format!("{key}-{pid}.sock"));
    let ready_path = directory.join(format!("{key}-{pid}.ready"));
    let _ = std::fs::remove_file(&socket_path);
    let listener = UnixListener::bind(&socket_path)?;

    let engine = engine_thread::start();
    let (up, engine_up) = tokio::sync::oneshot::channel();
    engine.handle.send(Job::WhenUp { done: up });
    std::thread::spawn({
        let ready_path = ready_path.clone();
        let socket_exists = socket_path.clone();
        move || {
            if engine_up.blocking_recv().is_ok() && socket_exists.exists() {
                let _ = std::fs::write(&ready_path, "");
            }
        }
    });

    let idle = std::env::var(IDLE_ENV)
        .ok()
        .and_then(|seconds| seconds.parse().ok())
        .map_or(DEFAULT_IDLE, Duration::from_secs);
    let server = std::env::var(SERVER_ENV).ok().and_then(|pid| pid.parse::<i32>().ok());
    let claimed = wait_for_claim(&listener, idle, server);
    // From here this process is no longer a spare: the next one may start.
    let _ = std::fs::remove_file(&socket_path);
    let _ = std::fs::remove_file(&ready_path);
    drop(listener);
    drop(slot);
    // Accepted only now, so the launcher finds the slot free for the next spare.
    let accepted = claimed.filter(|(stream, _)| SpareMessage::Claimed.send(stream).is_ok());
    let Some((stream, claim)) = accepted else {
        let (done, stopped) = tokio::sync::oneshot::channel();
        engine.handle.send(Job::Shutdown { done });
        let _ = stopped.blocking_recv();
        return Ok(());
    };

    let _ = std::env::set_current_dir(&claim.session.cwd);
    // The claimant's sccache (not part of the key): cargo, started from this process, takes it.
    match claim.session.env.get(SCCACHE_ENV) {
        Some(sccache) => std::env::set_var(SCCACHE_ENV, sccache),
        None => std::env::remove_var(SCCACHE_ENV),
    }
    take_output_of(claim.launcher_pid);
    engine.handle.send(Job::Adopt { session: claim.session });
    // The launcher's end of the claim closes when it dies, however it dies: then so do we.
    let mut watched = stream.try_clone()?;
    std::thread::spawn(move || {
        let mut buffer = [0u8; 64];
        loop {
            match watched.read(&mut buffer) {
                Ok(0) => break,
                Err(error) if error.kind() != std::io::ErrorKind::Interrupted => break,
                _ => {}
            }
        }
        std::process::exit(0);
    });

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let reporter = stream.try_clone()?;
    let report_ready = move || {
        let _ = SpareMessage::Ready.send(&reporter);
    };
    let served = runtime.block_on(kernel::run(&claim.connection_file.to_string_lossy(), engine, report_ready));
    let status = match &served {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("rust-async-kernel: {error:#}");
            1
        }
    };
    let _ = SpareMessage::Exit { status }.send(&stream);
    std::process::exit(status)
}

/// Waits for a well-formed claim. `None` when none came within `idle`, or `server` ended.
fn wait_for_claim(listener: &UnixListener, idle: Duration, server: Option<i32>) -> Option<(UnixStream, Claim)> {
    let deadline = Instant::now() + idle;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        if server.is_some_and(|pid| !process_exists(pid)) {
            return None;
        }
        let mut poll = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let timeout = left.min(SERVER_CHECK_INTERVAL).as_millis() as i32;
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut poll, 1, timeout) } <= 0 {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else { continue };
        let _ = stream.set_read_timeout(Some(CLAIM_PATIENCE));
        let mut line = String::new();
        let Ok(reader) = stream.try_clone() else { continue };
        if BufReader::new(reader).read_line(&mut line).is_err() {
            continue;
        }
        let Ok(claim) = serde_json::from_str::<Claim>(&line) else {
            eprintln!("rust-async: a spare ignored a malformed claim");
            continue;
        };
        let _ = stream.set_read_timeout(None);
        return Some((stream, claim));
    }
}

/// The kernel's own messages (stderr, stdout) go where the launcher's go: the Jupyter
/// server's log. Its descriptors are reachable through /proc (same user).
fn take_output_of(launcher_pid: u32) {
    for fd in [1, 2] {
        let path = format!("/proc/{launcher_pid}/fd/{fd}");
        if let Ok(file) = std::fs::OpenOptions::new().append(true).open(&path) {
            // SAFETY: dup2 onto a standard descriptor from a file we own.
            unsafe { libc::dup2(file.as_raw_fd(), fd) };
        }
    }
}

/// `rust-async-kernel spare --wait`: waits until a spare stands by, warmed up.
pub fn wait_until_ready(patience: Duration) -> anyhow::Result<()> {
    let directory = directory()?;
    let key = key();
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if spares(&directory, &key).into_iter().any(|(socket, _)| socket.with_extension("ready").exists()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("no spare kernel became ready within {}s", patience.as_secs())
}

/// `rust-async-kernel spare --stop`: stops this user's waiting spares (of every key), and
/// returns once they are gone; kernels that spares already serve are left alone. Also removes
/// what spares of earlier builds left. Returns how many were stopped.
pub fn stop_all() -> anyhow::Result<usize> {
    let directory = directory()?;
    let mut stopped = Vec::new();
    for entry in std::fs::read_dir(&directory)?.flatten() {
        let path = entry.path();
        let Some(pid) = socket_pid(&path) else { continue };
        let is_spare = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| cmdline.split(|&byte| byte == 0).any(|arg| arg == b"--serve"));
        // SAFETY: sending SIGTERM to a process of ours.
        if is_spare && unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
            stopped.push(pid);
        }
        let _ = std::fs::remove_file(&path);
    }
    // Gone means its slot is free again: a spare started right after must not find it taken.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stopped.iter().any(|&pid| process_exists(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for entry in std::fs::read_dir(&directory)?.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover = match path.extension().and_then(|extension| extension.to_str()) {
            Some("ready") => !path.with_extension("sock").exists(),
            Some("lock") | Some("log") => name.split_once('.').is_some_and(|(key, _)| FileLock::is_free(&slot(&directory, key))),
            _ => false,
        };
        if leftover {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(stopped.len())
}

/// The spares standing by for `key`, oldest first.
fn spares(directory: &Path, key: &str) -> Vec<(PathBuf, i32)> {
    let prefix = format!("{key}-");
    let mut found: Vec<(std::time::SystemTime, PathBuf, i32)> = std::fs::read_dir(directory)
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
                .filter_map(|entry| {
                    let path = entry.path();
                    let pid = socket_pid(&path)?;
                    let modified = entry.metadata().and_then(|meta| meta.modified()).ok()?;
                    Some((modified, path, pid))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().map(|(_, path, pid)| (path, pid)).collect()
}

/// `<key>-<pid>.sock` → pid.
fn socket_pid(path: &Path) -> Option<i32> {
    if path.extension()? != "sock" {
        return None;
    }
    path.file_stem()?.to_str()?.rsplit_once('-')?.1.parse().ok()
}

/// This user's spare directory, private to them (it is under the shared temp directory).
fn directory() -> std::io::Result<PathBuf> {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let directory = std::env::temp_dir().join(format!("rust-async-spares-{uid}"));
    match std::fs::create_dir(&directory) {
        Ok(()) => std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(0o700))?,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    let meta = std::fs::symlink_metadata(&directory)?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!("{} is not a private directory", directory.display())));
    }
    Ok(directory)
}

/// What a spare must share with a kernel to stand in for it: the binary, and the environment
/// variables the kernel side reads (the user process gets the claimant's whole environment).
fn key() -> String {
    let mut inputs = String::new();
    if let Ok(executable) = std::env::current_exe() {
        inputs.push_str(&executable.display().to_string());
        if let Ok(meta) = executable.metadata() {
            inputs.push_str(&format!(":{}:{}:{}", meta.len(), meta.mtime(), meta.mtime_nsec()));
        }
    }
    let kernel_side = |name: &str| {
        // Where sccache is (the kernelspec of an environment sets it): the claimant's is taken
        // on when the spare is claimed, so a spare started by `spare` serves such a kernel.
        let ours = name.starts_with("RUST_ASYNC_") && ![SWITCH_ENV, IDLE_ENV, SERVER_ENV, SCCACHE_ENV].contains(&name);
        let toolchain = ["EVCXR_", "CARGO", "RUSTUP", "RUSTC"].iter().any(|prefix| name.starts_with(prefix))
            || ["RUSTFLAGS", "RUST_SRC_PATH", "PATH", "HOME", "TMPDIR"].contains(&name);
        (ours || toolchain) && !ENGINE_SETS.contains(&name)
    };
    let mut variables: Vec<(String, String)> = std::env::vars_os()
        .map(|(name, value)| (name.to_string_lossy().into_owned(), value.to_string_lossy().into_owned()))
        .filter(|(name, _)| kernel_side(name))
        .collect();
    variables.sort();
    for (name, value) in variables {
        inputs.push_str(&format!("\n{name}={value}"));
    }
    fingerprint(&inputs)
}

/// The one-spare-per-key slot: an exclusive `flock` held by the spare that stands by.
fn slot(directory: &Path, key: &str) -> PathBuf {
    directory.join(format!("{key}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_travels_as_one_line_a_message() {
        let (spare, launcher) = UnixStream::pair().unwrap();
        for message in [SpareMessage::Claimed, SpareMessage::Ready, SpareMessage::Exit { status: 3 }] {
            message.send(&spare).unwrap();
        }
        drop(spare);
        let lines: Vec<String> = BufReader::new(launcher).lines().map(Result::unwrap).collect();
        let read: Vec<Option<SpareMessage>> = lines.iter().map(|line| SpareMessage::read(line)).collect();
        assert_eq!(read, [Some(SpareMessage::Claimed), Some(SpareMessage::Ready), Some(SpareMessage::Exit { status: 3 })]);
        assert_eq!(SpareMessage::read("claimed"), None, "free text is not a message");
    }
}
