//! What the user process's stdout carries to the kernel besides the user's text: control
//! records (see [`protocol`](crate::protocol)) and final values in evcxr's own format.

use crate::protocol::RuntimeRecord;
use std::io::Write;

/// Writes one control record as a single write to stdout (one datagram: never torn apart),
/// after the text printed before it.
pub(crate) fn write_record(record: &RuntimeRecord) {
    flush_std_streams();
    let line = record.encode();
    // SAFETY: writing a byte buffer we own to file descriptor 1.
    unsafe {
        libc::write(1, line.as_ptr().cast(), line.len());
    }
}

/// A final value, as evcxr's own display code sends it (evcxr reads it from stdout).
pub(crate) fn send_text_plain(text: &str) {
    // One write is one datagram (see the engine's `user_process`), which has a size limit:
    // a long value goes in pieces, cut between characters, that the kernel joins again.
    const PIECE: usize = 1 << 20;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(b"EVCXR_BEGIN_CONTENT text/plain\n");
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + PIECE).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let _ = stdout.write_all(&text.as_bytes()[start..end]);
        start = end;
    }
    let _ = stdout.write_all(b"\nEVCXR_END_CONTENT\n");
    let _ = stdout.flush();
}

pub(crate) fn flush_std_streams() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}
