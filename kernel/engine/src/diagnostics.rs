//! Turning failures into errors that teach, as data ([`CellError`]): a kind, a one-line
//! message, and what to show of it, pointing at the cell's own line and column (never at
//! evcxr's generated code), with a hint in plain words for the common async mistakes
//! (`hints`). Also the plain notes shown under a cell (a future never awaited, statics
//! defined again, a process that ended between cells). Rendering is `render`'s.

use crate::cell_error::{CellError, ErrorKind, Problem, Span};
use crate::hints::{compile_hint, panic_hint};
use crate::records::PanicRecord;
use crate::source_map::{as_written, cell_lines, cell_position, only_question_mark, without_generated_paths, written_column};

/// The errors of `compiled`, a rewrite of the student's `written` cell with the same lines
/// (a kept future boxed into `tokio::Pending`), shown on the lines the student wrote, with
/// `Pending<T>` called what it is to the student, `impl Future<Output = T>`.
pub(crate) fn compile_errors_shown_as(compiled: &str, written: &str, errors: &[evcxr::CompilationError]) -> CellError {
    let same_lines = compiled.lines().count() == written.lines().count();
    let mut error = compile_errors_on(compiled, if same_lines { written } else { compiled }, errors);
    if compiled != written {
        error.map_text(as_written);
    }
    error
}

/// The errors of `code`, shown on the lines of `written` (the same number of lines).
fn compile_errors_on(code: &str, written: &str, errors: &[evcxr::CompilationError]) -> CellError {
    let compiled_lines: Vec<&str> = code.lines().collect();
    let written_lines: Vec<&str> = written.lines().collect();
    // A column of a compiled line, on the line as written.
    let column_as_written = |line: usize, column: usize| match (compiled_lines.get(line - 1), written_lines.get(line - 1)) {
        (Some(compiled), Some(written)) if compiled != written => written_column(compiled, written, column),
        _ => column,
    };
    let mut first_message = None;
    let mut problems = Vec::new();
    for error in errors.iter().filter(|error| error.level() == "error") {
        let error_code = error.code();
        let title = match error_code {
            Some(error_code) => format!("error[{error_code}]"),
            None => "error".to_owned(),
        };
        let message = without_generated_paths(&error.message());
        let mut location = String::new();
        let mut primary_label = String::new();
        if let Some(primary) = error.primary_spanned_message() {
            primary_label = without_generated_paths(&primary.label);
            if let Some(span) = primary.span {
                let column = column_as_written(span.start_line, span.start_column);
                location = format!(" (line {}, column {column})", span.start_line);
            }
        }
        if first_message.is_none() {
            first_message = Some(format!("{title}: {message}{location}"));
        }
        let spans = error
            .spanned_messages()
            .iter()
            .filter_map(|spanned| {
                let span = spanned.span.as_ref()?;
                Some(Span::Cell {
                    start: (span.start_line, column_as_written(span.start_line, span.start_column)),
                    end: Some((span.end_line, column_as_written(span.end_line, span.end_column))),
                    lines: cell_lines(written, span.start_line, span.end_line),
                    label: without_generated_paths(&spanned.label),
                })
            })
            .collect();
        let helps: Vec<String> = error.help().iter().map(|help| without_generated_paths(help)).collect();
        let all_text = format!("{message} {primary_label} {}", error.help().join(" "));
        let hints = compile_hint(error_code, &all_text).map(str::to_owned).into_iter().collect();
        problems.push(Problem { title, text: message, details: vec![], spans, helps, hints });
    }
    CellError {
        kind: ErrorKind::CompileError,
        message: first_message.unwrap_or_else(|| "the cell did not compile".into()),
        problems,
        hints: vec![],
        notes: vec![],
    }
}

/// What evcxr keeps of a cell that stopped early (a panic, a `?` error).
const UNFINISHED_CELL_LOSES: &str = "  The cell did not finish: the variables it made, and earlier \
    ones it moved (`let b = a;`, a value passed to a function), are gone. Earlier variables it \
    only used or changed are kept.";

pub(crate) fn panic(code: &str, generated: &str, panic: &PanicRecord) -> CellError {
    let first_line = panic.message.lines().next().unwrap_or_default().to_owned();
    let mut problem = Problem { title: "panic".into(), text: first_line, ..Problem::default() };
    problem.details.extend(panic.message.lines().skip(1).map(str::to_owned));
    if !panic.in_cell_crate() {
        // In a library (no `#[track_caller]` led back to the cell): its line means nothing here.
    } else if let Some((line, column)) = cell_position(code, generated, panic.line, panic.column) {
        problem.spans.push(Span::Cell { start: (line, column), end: None, lines: cell_lines(code, line, line), label: String::new() });
    } else if let Some(text) = generated.lines().nth((panic.line as usize).saturating_sub(1)).map(str::trim) {
        // In code an earlier cell defined (a function it called): show that line.
        if !text.is_empty() {
            problem.spans.push(Span::EarlierCell { text: text.to_owned() });
        }
    }
    problem.hints.extend(panic_hint(&panic.message).map(str::to_owned));
    CellError {
        kind: ErrorKind::Panic,
        message: panic.message.clone(),
        problems: vec![problem],
        hints: vec![],
        notes: vec![UNFINISHED_CELL_LOSES.to_owned()],
    }
}

/// `std::num::ParseIntError` → `ParseIntError`; generic arguments are shortened alike.
fn short_type_name(full: &str) -> String {
    let mut short = String::new();
    let mut segment = String::new();
    for character in full.chars() {
        if character.is_alphanumeric() || character == '_' {
            segment.push(character);
        } else if character == ':' {
            segment.clear();
        } else {
            short.push_str(&std::mem::take(&mut segment));
            short.push(character);
        }
    }
    short.push_str(&segment);
    short
}

pub(crate) fn question_mark_error(code: &str, type_name: Option<&str>, text: &str) -> CellError {
    let name = type_name.map_or_else(|| "Error".to_owned(), short_type_name);
    let message = text.trim_end().to_owned();
    let first_line = message.lines().next().unwrap_or_default();
    let mut problem = Problem { title: name.clone(), text: first_line.to_owned(), ..Problem::default() };
    problem.details.push("  the cell returned this error through `?`".to_owned());
    // Which `?` is not recorded; when the cell has only one, it is that one.
    if let Some((line, column)) = only_question_mark(code) {
        let lines = cell_lines(code, line, line);
        let end = (!lines.is_empty()).then_some((line, column));
        problem.spans.push(Span::Cell { start: (line, column), end, lines, label: String::new() });
    }
    CellError {
        kind: ErrorKind::Returned { type_name: name },
        message,
        problems: vec![problem],
        hints: vec![],
        notes: vec![UNFINISHED_CELL_LOSES.to_owned()],
    }
}

/// `let name = <future>;` where the future borrows from the cell, so it cannot be kept.
pub(crate) fn future_not_kept(name: &str, errors: &[evcxr::CompilationError]) -> CellError {
    let message = format!(
        "`{name}` is a future that borrows variables of this cell, so it cannot be kept for a \
         later cell."
    );
    let mut error = CellError::one_line(ErrorKind::CompileError, message);
    if let Some(first) = errors.first() {
        error.problems[0].details.push(format!("  rustc: {}", first.message()));
    }
    error.problems[0].hints.push(
        "write `async move { ... }` so the future owns what it uses (clone a value first if \
         you still need it), or `.await` it in this cell."
            .to_owned(),
    );
    error
}

/// The warning for futures made and dropped without `.await` (positions in `generated`),
/// as plain stderr text under the cell; `None` when there are none in the cell's own code.
pub(crate) fn never_awaited(code: &str, generated: &str, positions: &[(u32, u32)]) -> Option<String> {
    let mut places: Vec<(usize, usize)> = positions
        .iter()
        .filter_map(|&(line, column)| cell_position(code, generated, line, column))
        .collect();
    places.dedup();
    if places.is_empty() {
        return None;
    }
    let mut text = String::new();
    for (line, column) in places {
        text.push_str(&format!(
            "warning: a future made here is dropped without `.await`, so it never runs (line {line}, column {column}):\n"
        ));
        if let Some(source) = code.lines().nth(line - 1) {
            text.push_str(&format!("{line} | {source}\n"));
        }
    }
    text.push_str(
        "hint: calling an `async fn` (or `tokio::time::sleep`, ...) only makes a future; add `.await` \
         to run it, or keep it in a variable and `.await` it later.\n",
    );
    Some(text)
}

pub(crate) fn process_died(detail: &str, panic: Option<&PanicRecord>) -> CellError {
    let detail = detail.trim();
    let status = exit_status_of(detail);
    let cause = death_cause(status);
    let message = format!(
        "The process running your code died: {cause} ({status}). The kernel restarted it: all \
         variables and running tasks were lost; functions, types and `use` items of earlier \
         cells are kept (not those of this cell: it did not finish)."
    );
    let mut error = CellError::one_line(ErrorKind::KernelRestarted, message);
    if let Some(panic) = panic {
        // A panic while unwinding another (in a `Drop`, say) aborts: the first one is the story.
        error = error.with_detail(format!("It panicked first: {}", panic.message));
    }
    error.problems[0].details.extend(detail.lines().map(str::to_owned));
    error
}

/// An interrupt: the cell's future was dropped at its await point.
pub(crate) fn interrupted() -> CellError {
    let message = "The cell was interrupted: its future was dropped at the await point where it \
                   was waiting. Variables from earlier cells are kept, except those the cell had \
                   moved into its code (a `JoinHandle` it was awaiting: the task goes on, detached). \
                   Tasks it did not own keep running.";
    CellError::one_line(ErrorKind::Interrupted, message)
}

pub(crate) fn interrupted_then_panicked(panic_message: &str) -> CellError {
    let first_line = panic_message.lines().next().unwrap_or_default();
    interrupted().with_detail(format!("It was not at an `.await` (it was reading stdin, say) and ended by a panic: {first_line}"))
}

pub(crate) fn interrupted_before_start() -> CellError {
    let message = "The cell was interrupted before its code started (the kernel was busy with \
                   other work), so its code did not run.";
    CellError::one_line(ErrorKind::Interrupted, message)
}

pub(crate) fn interrupted_while_compiling() -> CellError {
    let message = "The cell was interrupted while it compiled (cargo was stopped), so its code did \
                   not run, and a crate it added with `:dep` was not added. Variables are kept.";
    CellError::one_line(ErrorKind::Interrupted, message)
}

pub(crate) fn interrupted_by_restart() -> CellError {
    let message = "The cell was interrupted, but it never reached an `.await` (busy computing or \
                   blocking a thread), so the kernel restarted the user-code process. All \
                   variables and running tasks were lost; functions, types and `use` items of \
                   earlier cells are kept (not those of this cell: it did not finish).";
    CellError::one_line(ErrorKind::Interrupted, message)
}

/// The exit status in evcxr's message for an ended user process (its last line).
pub(crate) fn exit_status_of(detail: &str) -> &str {
    let status = detail.trim().lines().last().unwrap_or("no detail");
    status.strip_prefix("Subprocess terminated with status: ").unwrap_or(status)
}

/// What is told when the user process ended while no cell ran (a task called
/// `std::process::exit`, or crashed) and the kernel started a new one. `status` is the
/// process's exit status as Rust shows it.
pub(crate) fn process_ended_between_cells(status: &str) -> String {
    format!(
        "The process running your code ended while no cell was running (so in a spawned task \
         or thread): {} ({status}). The kernel started a new one: all variables and running \
         tasks were lost; functions, types and `use` items you defined are kept.\n",
        death_cause(status)
    )
}

/// Why the user process ended, from its exit status.
fn death_cause(status: &str) -> &'static str {
    if status.contains("SIGSEGV") || status.contains("SIGBUS") {
        "it crashed: the code touched memory it must not (a segmentation fault, usually from \
         `unsafe` code or a stack overflow)"
    } else if status.contains("SIGKILL") {
        "it was killed, perhaps for using too much memory"
    } else if status.contains("SIGABRT") {
        "it aborted (for example a panic while panicking, or `std::process::abort`)"
    } else if status.contains("exit status") {
        "the code called `std::process::exit`"
    } else {
        "it ended unexpectedly"
    }
}

pub(crate) fn evaluation_error(message: &str) -> CellError {
    let first_line = message.lines().next().unwrap_or_default();
    let mut problem = Problem { title: "Error".into(), text: first_line.to_owned(), ..Problem::default() };
    let mut message = message.to_owned();
    if first_line.starts_with("Couldn't automatically determine type of variable") {
        let name = first_line.split('`').nth(1).unwrap_or("x");
        problem.hints.push(format!(
            "a variable kept for later cells needs a type that later cells can write, and the \
             type rustc found for `{name}` cannot be written there. Write a type on the `let` \
             (`let {name}: Type = ...;`), through a crate the cells use. If `{name}` is only \
             needed in this cell, put the code in a `{{ }}` block, which keeps nothing."
        ));
        message = first_line.to_owned();
    } else {
        problem.details.extend(message.lines().skip(1).map(str::to_owned));
    }
    CellError { kind: ErrorKind::EvaluationError, message, problems: vec![problem], hints: vec![], notes: vec![] }
}

/// The note under a cell that defines statics defined before: each starts anew.
pub(crate) fn statics_defined_again(names: &[String]) -> String {
    let names: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    let (subject, verb) = if names.len() == 1 { ("static", "starts") } else { ("statics", "start") };
    format!(
        "note: the {subject} {} {} anew, from {} value as this cell defines it: the earlier value is gone \
         (cells and functions from before now use this one).\n",
        names.join(", "),
        verb,
        if names.len() == 1 { "its" } else { "their" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::plain_text;

    #[test]
    fn short_type_names_drop_module_paths() {
        assert_eq!(short_type_name("core::num::error::ParseIntError"), "ParseIntError");
        assert_eq!(short_type_name("alloc::boxed::Box<dyn core::error::Error>"), "Box<dyn Error>");
    }

    #[test]
    fn a_panic_in_a_function_of_an_earlier_cell_shows_that_line() {
        let generated = "fn helper(v: &[u32]) -> u32 {\n    let first = v[0];\n    first\n}\nfn run() {\n    helper(&[]);\n}";
        let record = |file: &str| PanicRecord { message: "index out of bounds".into(), file: file.into(), line: 2, column: 17 };
        let traceback = plain_text(&panic("helper(&[]);", generated, &record("src/lib.rs")));
        assert!(traceback.contains("in code of an earlier cell: let first = v[0];"), "{traceback}");
        // A location in a library is not looked up in the cell's crate.
        let traceback = plain_text(&panic("let first = v[0];", generated, &record("/rustc/library/core/src/slice.rs")));
        assert!(!traceback.contains("-->"), "{traceback}");
    }

    #[test]
    fn a_panic_in_the_cell_points_at_its_line() {
        let generated = "fn run() {\n    let v: Vec<u8> = vec![];\n    v[3];\n}";
        let record = PanicRecord { message: "index out of bounds: the len is 0".into(), file: "src/lib.rs".into(), line: 3, column: 5 };
        let error = panic("let v: Vec<u8> = vec![];\nv[3];", generated, &record);
        assert_eq!(error.kind, ErrorKind::Panic);
        let traceback = plain_text(&error);
        assert!(traceback.starts_with("panic: index out of bounds: the len is 0\n  --> cell line 2, column 1\n2 | v[3];\n"), "{traceback}");
        assert!(traceback.ends_with(&format!("{UNFINISHED_CELL_LOSES}\n")), "{traceback}");
    }

    #[test]
    fn the_error_a_question_mark_returned_is_named_by_its_type_at_the_only_question_mark() {
        let error = question_mark_error("let n: i32 = \"x\".parse()?;", Some("core::num::error::ParseIntError"), "invalid digit found in string\n");
        assert_eq!(error.kind.name(), "ParseIntError");
        assert_eq!(error.message, "invalid digit found in string");
        let traceback = plain_text(&error);
        assert!(traceback.contains("the cell returned this error through `?`\n  --> cell line 1, column 25\n1 | let n"), "{traceback}");
        assert!(traceback.contains(&format!("\n  | {}^\n", " ".repeat(24))), "{traceback}");
    }

    #[test]
    fn a_variable_of_unknown_type_gets_a_hint_to_write_it() {
        let error = evaluation_error("Couldn't automatically determine type of variable `rt`.\nPlease give it an explicit type.");
        let traceback = plain_text(&error);
        assert!(traceback.contains("let rt: Type"), "{traceback}");
        assert_eq!(error.message, "Couldn't automatically determine type of variable `rt`.");
    }

    #[test]
    fn a_process_that_died_says_how() {
        let error = process_died("last words\nSubprocess terminated with status: signal: 11 (SIGSEGV)", None);
        assert_eq!(error.kind, ErrorKind::KernelRestarted);
        assert!(error.message.contains("it crashed"), "{}", error.message);
        assert!(plain_text(&error).ends_with("last words\nSubprocess terminated with status: signal: 11 (SIGSEGV)\n"));
    }
}
