//! Interrupting a running cell: SIGINT cancels the cell at its current await point.
//!
//! The signal handler only sets a flag and writes one byte to a pipe (both async-signal-safe);
//! a small waker thread, independent of tokio's workers, turns the byte into a wake-up of the
//! cell's `block_on`, which then drops the cell's future. The kernel sends SIGINT only while a
//! cell is running; the flag is cleared when a cell starts and when it ends, so a late signal
//! never cancels the next cell.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Once;
use tokio::sync::Notify;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static WAKE_PIPE_WRITE_END: AtomicI32 = AtomicI32::new(-1);
static WAKE_UP: Notify = Notify::const_new();

extern "C" fn on_sigint(_signal: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
    let fd = WAKE_PIPE_WRITE_END.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a local byte.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let mut fds = [0; 2];
        // SAFETY: plain libc calls on descriptors this function owns.
        unsafe {
            if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return;
            }
        }
        let [read_end, write_end] = fds;
        WAKE_PIPE_WRITE_END.store(write_end, Ordering::SeqCst);
        std::thread::Builder::new()
            .name("rust-async-interrupt".into())
            .spawn(move || loop {
                let mut byte = 0u8;
                // SAFETY: reading one byte into a local buffer from our own pipe.
                let read = unsafe { libc::read(read_end, (&mut byte as *mut u8).cast(), 1) };
                if read == 1 {
                    WAKE_UP.notify_waiters();
                } else if read == 0 {
                    return;
                }
            })
            .expect("could not start the interrupt thread");
        // SAFETY: installing a handler that only touches atomics and write(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        }
    });
}

pub(crate) fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

/// Completes once an interrupt has been requested.
pub(crate) async fn requested() {
    loop {
        let notified = WAKE_UP.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if REQUESTED.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }
}
