//! Small pieces of the operating system that the engine and the kernel's spares both need:
//! an exclusive file lock, a stable fingerprint of some text, whether a process exists, and
//! ending a child process with everything it started.

use std::os::fd::AsRawFd;
use std::path::Path;

/// An exclusive `flock` on a file, held while the value lives (the file is kept only to hold
/// it; it is created when missing).
pub struct FileLock(#[allow(dead_code)] std::fs::File);

impl FileLock {
    /// Waits until the lock is ours.
    pub fn exclusive(path: &Path) -> std::io::Result<FileLock> {
        Self::take(path, libc::LOCK_EX).map(|lock| lock.expect("a blocking flock either succeeds or fails"))
    }

    /// The lock, or `None` when another process holds it.
    pub fn try_exclusive(path: &Path) -> std::io::Result<Option<FileLock>> {
        Self::take(path, libc::LOCK_EX | libc::LOCK_NB)
    }

    /// Whether nobody holds the lock at `path` (a missing file is free; it is not created).
    pub fn is_free(path: &Path) -> bool {
        !path.exists() || matches!(Self::try_exclusive(path), Ok(Some(_)))
    }

    fn take(path: &Path, operation: libc::c_int) -> std::io::Result<Option<FileLock>> {
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        // SAFETY: flock on a descriptor we own; released when the file is closed.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(Some(FileLock(file)));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() == std::io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(error)
        }
    }
}

/// A stable fingerprint of `inputs` (FNV-1a, 16 hex digits): the same text gives the same
/// fingerprint in every process and build, without another dependency.
pub fn fingerprint(inputs: &str) -> String {
    let hash = inputs
        .bytes()
        .fold(0xcbf29ce484222325u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100000001b3));
    format!("{hash:016x}")
}

/// Whether the process `pid` exists (also when it belongs to another user).
pub fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks whether the process exists.
    let signalled = unsafe { libc::kill(pid, 0) } == 0;
    signalled || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Kills (SIGKILL) each child of this process whose command name is `name`, and everything
/// it started: a `cargo` building a cell, with its rustc's.
pub fn kill_children_named(name: &str) {
    let parents: Vec<(i32, i32, String)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`: the name may hold spaces and parentheses.
            let (command, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let parent: i32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, parent, command.to_owned()))
        })
        .collect();
    let mut doomed: Vec<i32> = parents
        .iter()
        .filter(|(_, parent, command)| *parent == std::process::id() as i32 && command == name)
        .map(|(pid, _, _)| *pid)
        .collect();
    let mut index = 0;
    while index < doomed.len() {
        let pid = doomed[index];
        doomed.extend(parents.iter().filter(|(_, parent, _)| *parent == pid).map(|(child, _, _)| *child));
        index += 1;
    }
    for pid in doomed {
        // SAFETY: sending a signal.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_not_taken_twice_and_is_free_once_dropped() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("slot.lock");
        assert!(FileLock::is_free(&path));
        assert!(!path.exists(), "is_free must not create the file");
        let held = FileLock::try_exclusive(&path).unwrap().expect("a free lock is taken");
        assert!(FileLock::try_exclusive(&path).unwrap().is_none());
        assert!(!FileLock::is_free(&path));
        drop(held);
        assert!(FileLock::is_free(&path));
    }

    #[test]
    fn fingerprints_are_stable_and_tell_inputs_apart() {
        assert_eq!(fingerprint(""), "cbf29ce484222325");
        assert_eq!(fingerprint("tokio"), fingerprint("tokio"));
        assert_ne!(fingerprint("tokio"), fingerprint("tokio "));
    }
}
