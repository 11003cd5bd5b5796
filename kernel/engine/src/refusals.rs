//! What a cell is refused before it runs, with why and what to do instead: a `:dep` of a
//! crate the kernel provides, evcxr commands that would take the kernel apart, and a `return`
//! in the cell's own code.

use crate::cell_error::{CellError, ErrorKind, Span};
use crate::cell_source::CellSource;
use crate::source_map::{cell_lines, line_and_column};

/// The kernel provides tokio and the course crates itself: a second copy of tokio would split
/// the runtime in two, and another spec of a course crate would rebuild the runtime library.
pub(crate) fn refuse_kernel_crate_dependency<'a>(
    source: &CellSource,
    course_crates: impl Iterator<Item = &'a str>,
) -> Option<CellError> {
    let course_crates: Vec<String> = course_crates.map(|name| name.replace('-', "_")).collect();
    let (command, name) = source.commands_named(":dep").find_map(|command| {
        let args = command.args.as_deref()?;
        let name = args.split(|c: char| c == '=' || c.is_whitespace()).next()?.replace('-', "_");
        (name == "tokio" || course_crates.contains(&name)).then_some((command, name))
    })?;
    let message = if name == "tokio" {
        format!(
            "`{}`: tokio is built into this kernel (with all features), shared by every cell. \
             Remove the `:dep` line and use `tokio::...` directly.",
            command.text.trim_end()
        )
    } else {
        format!(
            "`{}`: {name} is one of the course crates, ready in every cell (compiled with the \
             kernel, on its one tokio). Remove the `:dep` line and write `use {name}::...;` directly.",
            command.text.trim_end()
        )
    };
    Some(CellError::one_line(ErrorKind::DependencyError, message))
}

/// A `return` in the cell's own code (see `early_return`): refused before it runs.
pub(crate) fn refuse_cell_level_return(source: &CellSource) -> Option<CellError> {
    let code = source.text.as_str();
    let (line, column) = line_and_column(code, source.cell_level_return?);
    let message = "`return` in a cell's own code: a cell is not a function, and a `return` would \
                   end it before the kernel keeps its variables, so they would be lost. Nothing \
                   ran."
        .to_owned();
    let place = Span::Cell { start: (line, column), end: None, lines: cell_lines(code, line, line), label: String::new() };
    let hint = "to stop early, put the rest of the cell in an `if`/`else`; to end the cell with an \
                error, use `?` or `panic!`. Or write the code as an `async fn` (where `return` works) \
                and call it: `let result = run().await;`.";
    let mut error = CellError::one_line(ErrorKind::CompileError, message);
    error.problems[0].spans.push(place);
    error.problems[0].hints.push(hint.to_owned());
    Some(error)
}

/// evcxr commands that would take the kernel apart: refused, with what to do instead.
/// `offline`: the kernel was started offline, which a cell cannot undo.
pub(crate) fn refuse_unsupported_command(source: &CellSource, offline: bool) -> Option<CellError> {
    let (line, why) = source.commands.iter().find_map(|command| {
        let why = match (command.name.as_str(), command.args.as_deref().map(str::trim).filter(|args| !args.is_empty())) {
            (":quit", _) => {
                "it would end the kernel's process, and every variable with it. To stop the \
                 kernel, use the notebook's Kernel menu (Shut Down, or Restart for a fresh start)."
            }
            (":toolchain", Some(_)) => {
                "cells link the runtime library (tokio) that set-up built with this kernel's \
                 toolchain; another toolchain could not load it (and might try to download)."
            }
            // evcxr links statically only for exactly `1`; anything else switches it off.
            (":allow_static_linking", _) if command.args.as_deref() != Some("1") => {
                "cells must link the kernel's one shared copy of tokio, and evcxr's dynamic \
                 linking of dependencies does not work with this Rust version."
            }
            (":offline", Some(setting)) if setting != "1" && offline => {
                "this kernel was started offline (`RUST_ASYNC_OFFLINE=1`, as for an exam or a \
                 grader): crates come from this machine's cargo cache."
            }
            // evcxr's cache works through its own rustc wrapper, which the kernel's replaces.
            (":cache", Some(size)) if size != "0" => {
                "evcxr's cache of compiled crates needs its own rustc wrapper, and every cell \
                 goes through the kernel's. tokio does not need it: set-up compiled it once for \
                 all kernels. A crate added with `:dep` is compiled once per kernel."
            }
            (":sccache", Some(setting)) if setting != "0" => {
                "sccache would take the place of the kernel's rustc wrapper, which has rustc \
                 report the types of a cell's variables (they could no longer be kept), and it \
                 cannot cache cells anyway (each is a new crate)."
            }
            _ => return None,
        };
        Some((command.text.trim_end(), why))
    })?;
    let message = format!("`{line}` is not supported in this kernel: {why}");
    Some(CellError::one_line(ErrorKind::UnsupportedCommand, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_that_would_break_the_kernel_are_refused() {
        for command in [":quit", "  :toolchain nightly", ":allow_static_linking 0", ":allow_static_linking", ":sccache 1",
                        ":allow_static_linking true", ":allow_static_linking 1 ", ":cache 500", ":offline 0"] {
            let error = refuse_unsupported_command(&CellSource::parse(&format!("// first\n{command}\nlet x = 1;")), true).unwrap();
            assert_eq!(error.kind, ErrorKind::UnsupportedCommand);
            assert!(error.message.contains(command.trim()), "{}", error.message);
        }
        for fine in [":toolchain", ":allow_static_linking 1", ":vars", "let quit = 1;", "let x = 1;\n:quit", ":cache 0", ":offline 1"] {
            assert!(refuse_unsupported_command(&CellSource::parse(fine), true).is_none(), "{fine}");
        }
        // A kernel started online may go offline and back.
        assert!(refuse_unsupported_command(&CellSource::parse(":offline 0"), false).is_none());
    }

    #[test]
    fn tokio_and_course_crates_are_refused_with_an_explanation() {
        let course = || ["serde", "tokio-stream"].into_iter();
        let refuse = |code: &str| refuse_kernel_crate_dependency(&CellSource::parse(code), course());
        let error = refuse(":dep tokio = \"1\"\nlet x = 1;").unwrap();
        assert_eq!(error.kind, ErrorKind::DependencyError);
        assert!(error.message.contains("built into this kernel"), "{}", error.message);
        let error = refuse(":dep serde = { version = \"1\" }").unwrap();
        assert!(error.message.contains("serde is one of the course crates"), "{}", error.message);
        assert!(refuse(":dep tokio_stream=\"0.1\"").is_some());
        assert!(refuse(":dep tokio-util = \"0.7\"").is_none());
        assert!(refuse(":dep serde_yaml = \"0.9\"").is_none());
    }

    #[test]
    fn a_return_in_the_cells_own_code_is_refused_at_its_line() {
        let error = refuse_cell_level_return(&CellSource::parse("!echo return\nlet b = 1;\nif b > 0 { return; }")).unwrap();
        let traceback = crate::render::plain_text(&error);
        assert!(traceback.contains("cell line 3, column 12"), "{traceback}");
        assert!(traceback.contains("async fn"), "{traceback}");
        assert!(refuse_cell_level_return(&CellSource::parse("!echo return\nfn f() { return; }")).is_none());
    }
}
