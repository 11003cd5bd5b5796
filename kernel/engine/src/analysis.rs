//! When rust-analyzer analyses the standard library and tokio.
//!
//! evcxr asks rust-analyzer for the type of each new top-level `let` of a cell, to keep the
//! variable for later cells. Analysing std and tokio for that takes seconds (5-8 s on a 2-core
//! machine), and evcxr would do it before a fresh kernel's first cell could run: once when it
//! starts, and again (the crate graph changed) when the runtime library is added. A cell
//! without a `let` needs no types, so an engine starts *light*: rust-analyzer is shown an empty
//! standard library and no tokio, and its analysis takes no time. Cells still compile against
//! the real ones; rustc never reads what rust-analyzer is shown.
//!
//! The engine turns *full* (once) before the first thing that needs rust-analyzer or a plain
//! dependency: a cell with a top-level `let`, a new crate, `:doc` or `:sccache`
//! ([`needs_types`]), a completion or an inspection, or the warm-up of an idle kernel.
//! rust-analyzer then analyses everything, once.
//!
//! How rust-analyzer is shown less, without changing evcxr:
//! - The standard library: rust-analyzer takes the library's sources from `RUST_SRC_PATH` when
//!   that holds a `core`. The engine sets it to a link to an empty `core` (once, before evcxr
//!   starts, as it sets evcxr's own variables); turning full re-points the link, and the
//!   variable never changes again. Processes started from the kernel get the variable as it
//!   was ([`restore_environment`]), except evcxr's `!` shell lines.
//! - tokio: the runtime library is an `optional` dependency of the cell crate, so cargo leaves
//!   it out of the crate graph rust-analyzer loads. The kernel's rustc wrapper passes it to the
//!   cell crate itself (`--extern`, [`CELL_EXTERN_ENV`]). Turning full makes it a plain
//!   dependency: the cell crate's manifest changes, which is what makes rust-analyzer reload.

use crate::is_complete::walk_code;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where rust-analyzer looks for the standard library's sources first.
const RUST_SRC_PATH: &str = "RUST_SRC_PATH";

/// Set for cargo when the engine starts light: `tokio=PATH`, the runtime library the kernel's
/// rustc wrapper passes to the cell crate (`rustc_wrapper`) unless cargo passes it already.
pub const CELL_EXTERN_ENV: &str = "RUST_ASYNC_CELL_EXTERN";

/// `RUST_SRC_PATH` as this process had it before its first light engine set it.
static ORIGINAL_SRC_PATH: OnceLock<Option<OsString>> = OnceLock::new();

/// `RUST_SRC_PATH` as the user set it (not the engine's link): where rust-analyzer finds the
/// standard library's sources for the user's notebooks.
pub fn original_src_path() -> Option<OsString> {
    ORIGINAL_SRC_PATH.get_or_init(|| std::env::var_os(RUST_SRC_PATH)).clone()
}

/// Gives a process started from this one `RUST_SRC_PATH` as it was before an engine set it:
/// user code, and a spare kernel, whose own engine would otherwise take this engine's link
/// (perhaps still to the empty library) for the user's standard library.
pub fn restore_environment(command: &mut std::process::Command) {
    match original_src_path() {
        Some(path) => command.env(RUST_SRC_PATH, path),
        None => command.env_remove(RUST_SRC_PATH),
    };
}

pub(crate) struct Analysis {
    /// While light: the link rust-analyzer reads the standard library through.
    light_link: Option<PathBuf>,
}

impl Analysis {
    /// rust-analyzer sees everything from the start.
    pub(crate) fn full() -> Analysis {
        Analysis { light_link: None }
    }

    /// rust-analyzer sees an empty standard library (and, through the dependency, no tokio)
    /// until [`Analysis::show_real_library`]. Call before evcxr starts: it sets `RUST_SRC_PATH` in
    /// this process.
    pub(crate) fn light(work_dir: &Path) -> std::io::Result<Analysis> {
        original_src_path(); // noted before it changes
        let empty_library = work_dir.join("empty-library");
        std::fs::create_dir_all(empty_library.join("core/src"))?;
        std::fs::write(empty_library.join("core/src/lib.rs"), "")?;
        let link = work_dir.join("library-for-rust-analyzer");
        std::os::unix::fs::symlink(&empty_library, &link)?;
        std::env::set_var(RUST_SRC_PATH, &link);
        Ok(Analysis { light_link: Some(link) })
    }

    pub(crate) fn is_light(&self) -> bool {
        self.light_link.is_some()
    }

    /// Shows rust-analyzer the real standard library from its next load on. The caller then
    /// changes the manifest, which makes it load again, and calls [`Analysis::mark_full`]
    /// once that worked (until then it may try again).
    pub(crate) fn show_real_library(&self) -> std::io::Result<()> {
        let Some(link) = &self.light_link else { return Ok(()) };
        // The user's own RUST_SRC_PATH, if it was one; otherwise a path without `core`, which
        // rust-analyzer ignores to find the sources itself, exactly as it would without us.
        let real = original_src_path()
            .filter(|path| Path::new(path).join("core").exists())
            .map_or_else(|| link.with_extension("none"), PathBuf::from);
        let replacement = link.with_extension("new");
        let _ = std::fs::remove_file(&replacement);
        std::os::unix::fs::symlink(real, &replacement)?;
        std::fs::rename(&replacement, link)
    }

    pub(crate) fn mark_full(&mut self) {
        self.light_link = None;
    }
}

/// Whether running `code` needs the full analysis: evcxr asks rust-analyzer for the type of
/// each `let` at the cell's top level (one inside a block or a function is not a variable of
/// the cell), and for `:doc`. A new crate (`:dep`, `extern crate`) must see the runtime
/// library as a plain dependency, so that cargo unifies tokio's features and builds one
/// tokio; `:sccache` replaces the rustc wrapper that passes it otherwise. `if let` counts
/// too: a needless full analysis is only early, a missing one fails the cell.
pub(crate) fn needs_types(code: &str) -> bool {
    const COMMANDS: [&str; 3] = [":dep", ":doc", ":sccache"];
    let commands = crate::commands::leading_commands(code);
    if commands.iter().any(|command| COMMANDS.contains(&command.name)) {
        return true;
    }
    // Command and `!` shell lines at the top are not Rust: a quote in one must not hide the
    // code below. Below the first line of code, a line starting with `!` is Rust.
    let first_code_line = crate::commands::first_code_line(code);
    let rust: Vec<&str> =
        code.lines().enumerate().map(|(index, line)| if index < first_code_line { "" } else { line }).collect();
    let mut depth = 0usize;
    let mut word = String::new();
    let mut previous_word = String::new();
    let mut found = false;
    // A newline after the code ends its last word inside the walk.
    walk_code(&(rust.join("\n") + "\n"), |_, character| {
        if character.is_alphanumeric() || character == '_' {
            word.push(character);
            return true;
        }
        found = depth == 0 && (word == "let" || previous_word == "extern" && word == "crate");
        if !word.is_empty() {
            previous_word = std::mem::take(&mut word);
        }
        match character {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        !found
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_top_level_let_or_a_dep_needs_types() {
        assert!(needs_types("let x = 1;"));
        assert!(needs_types("tokio::task::yield_now().await;\nlet handle = tokio::spawn(async { 1 });"));
        assert!(needs_types("let\nx = 1;"));
        assert!(needs_types("if let Some(x) = std::env::args().nth(1) { println!(\"{x}\") }"));
        assert!(needs_types(":dep serde = \"1\"\n"));
        assert!(needs_types(":doc tokio::spawn"));
        assert!(needs_types("extern crate serde;"));
        assert!(needs_types("!echo \"\nlet x = 1;"));
        assert!(needs_types("let"));
        // Below the code's first line, a `!` line is Rust: its brackets and quotes count.
        assert!(needs_types("assert!(\n!v.is_empty());\nlet s = String::new();"));
        assert!(needs_types("println!(\"a\n!b\");\nlet s = String::new();"));
    }

    #[test]
    fn a_cell_without_top_level_let_needs_none() {
        assert!(!needs_types("tokio::time::sleep(std::time::Duration::from_millis(10)).await;"));
        assert!(!needs_types("async fn hello() -> u32 { let x = 1; x }\nhello().await"));
        assert!(!needs_types("println!(\"{}\", { let y = 2; y });"));
        assert!(!needs_types("// let x = 1;\nprintln!(\"let me see\");"));
        assert!(!needs_types("outlet();\nlet_it_be();"));
        assert!(!needs_types(":vars"));
        assert!(!needs_types("extern \"C\" { fn abs(x: i32) -> i32; }\ncrate::f();"));
        assert!(!needs_types(""));
    }
}
