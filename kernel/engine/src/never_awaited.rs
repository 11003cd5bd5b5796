//! Futures made and dropped without `.await`. `hello();` or `tokio::time::sleep(d);` compiles
//! and silently does nothing; rustc warns ("futures do nothing unless you `.await` ..."),
//! but evcxr drops the warnings of a cell that compiles. So the kernel's rustc wrapper
//! (`rustc_wrapper`) notes these warnings in a file that the engine reads after the cell and
//! shows under it (as asyncio shows "coroutine ... was never awaited").

use std::io::Write;
use std::path::Path;

/// Set for cargo (with `RUSTC_WRAPPER` = this binary): the file to note the warnings in.
pub const NOTES_FILE_ENV: &str = "RUST_ASYNC_NEVER_AWAITED_FILE";

/// The note of rustc's `unused_must_use` warning for a future (`async fn`, or a future type
/// such as tokio's `Sleep`, which says the same in its `#[must_use]`).
const FUTURE_NOTE: &str = "futures do nothing unless you `.await` or poll them";

/// `LINE COLUMN` of a never-awaited future in the generated source, from one line of rustc's
/// JSON diagnostics.
pub(crate) fn note_of(line: &str) -> Option<String> {
    if !line.contains(FUTURE_NOTE) {
        return None;
    }
    let diagnostic: serde_json::Value = serde_json::from_str(line).ok()?;
    let message = diagnostic["message"].as_str()?;
    if !(message.starts_with("unused ") && message.ends_with("that must be used")) {
        return None;
    }
    let span = diagnostic["spans"].as_array()?.iter().find(|span| span["is_primary"] == true)?;
    Some(format!("{} {}", span["line_start"].as_u64()?, span["column_start"].as_u64()?))
}

pub(crate) fn note_down(notes: &Path, note: &str) {
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(notes) {
        let _ = writeln!(file, "{note}");
    }
}

/// The notes of the compiles since the last call (positions in the generated source), once
/// each; the file is emptied.
pub(crate) fn take_notes(notes: &Path) -> Vec<(u32, u32)> {
    let text = std::fs::read_to_string(notes).unwrap_or_default();
    let _ = std::fs::remove_file(notes);
    let mut positions: Vec<(u32, u32)> = text
        .lines()
        .filter_map(|line| {
            let (line, column) = line.split_once(' ')?;
            Some((line.parse().ok()?, column.parse().ok()?))
        })
        .collect();
    positions.sort_unstable();
    positions.dedup();
    positions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_never_awaited_future_is_noted_at_its_primary_span() {
        let line = r#"{"$message_type":"diagnostic","message":"unused implementer of `Future` that must be used","code":{"code":"unused_must_use"},"level":"warning","spans":[{"line_start":110,"column_start":1,"is_primary":true}],"children":[{"message":"futures do nothing unless you `.await` or poll them","level":"note"}]}"#;
        assert_eq!(note_of(line), Some("110 1".into()));
        let sleep = line.replace("implementer of `Future`", "`Sleep`");
        assert_eq!(note_of(&sleep), Some("110 1".into()));
        let result = r#"{"message":"unused `Result` that must be used","spans":[{"line_start":3,"column_start":1,"is_primary":true}],"children":[{"message":"this `Result` may be an `Err` variant, which should be handled"}]}"#;
        assert_eq!(note_of(result), None);
        assert_eq!(note_of(r#"{"message":"unused variable: `x`","spans":[]}"#), None);
    }

    #[test]
    fn notes_are_taken_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let notes = dir.path().join("notes");
        note_down(&notes, "12 5");
        note_down(&notes, "12 5");
        note_down(&notes, "3 1");
        assert_eq!(take_notes(&notes), vec![(3, 1), (12, 5)]);
        assert_eq!(take_notes(&notes), vec![]);
    }
}
