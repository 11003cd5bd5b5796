//! Turning failures into errors that teach: a name, a one-line message, and a traceback that
//! points at the cell's own line and column (never at evcxr's generated code), with a hint in
//! plain words for the common async mistakes.

use crate::output::PanicRecord;
use crate::CellError;

const RED: &str = "\x1b[1;31m";
const BLUE: &str = "\x1b[1;34m";
const BOLD: &str = "\x1b[1m";
const CYAN: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

/// evcxr gives a help as its message, then a blank line and rustc's suggested replacement
/// (`&`, `u32::MAX`, ...): show the replacement as code on the same line, not alone below.
fn help_line(help: &str) -> String {
    match help.split_once("\n\n") {
        Some((message, replacement)) if !replacement.trim().is_empty() && !replacement.contains('\n') => {
            format!("  {BLUE}={RESET} help: {message}: `{}`", replacement.trim())
        }
        Some((message, replacement)) if !replacement.trim().is_empty() => {
            format!("  {BLUE}={RESET} help: {message}:\n{replacement}")
        }
        Some((message, _)) => format!("  {BLUE}={RESET} help: {message}"),
        None => format!("  {BLUE}={RESET} help: {help}"),
    }
}

fn hint_line(hint: &str) -> String {
    format!("{CYAN}hint{RESET}: {hint}")
}

/// Hints for compile errors, matched on the error code and the words of the message.
fn compile_hint(code: Option<&str>, text: &str) -> Option<&'static str> {
    // `Pending<T>`: a future kept in a variable (the runtime library's type).
    let mentions_future = text.contains("Future") || text.contains("future") || text.contains("Pending<");
    if text.contains("cannot be sent between threads safely") && text.contains("MutexGuard") {
        return Some(
            "the task holds a `std::sync::MutexGuard` across an `.await`. `tokio::spawn` may move \
             the task to another worker thread at that `.await`, and this guard must be released \
             on the thread that locked it. Release it first (lock inside a `{ }` block that ends \
             before the `.await`), or use `tokio::sync::Mutex`, whose guard may be held across \
             `.await`.",
        );
    }
    if text.contains("cannot be sent between threads safely") {
        return Some(
            "`tokio::spawn` may run the task on any worker thread, and move it to another at \
             each `.await`, so what the task captures, and what it holds across an `.await`, \
             must be `Send`. `Rc` and `RefCell` are not: use `Arc` and a `Mutex` instead, or \
             make and drop such a value inside the task between two `.await`s. (Top-level cell \
             code is not spawned, so `Rc` is fine there.)",
        );
    }
    if text.contains("non-static lifetime so") {
        // evcxr's words for a `let` whose value borrows from another (E0597).
        return Some(
            "this variable borrows from another value: a guard from `.lock()`, a slice or an \
             iterator of a collection, a `&str` of a `String`. A variable kept for later cells \
             must own its value. Use the borrow in this cell, inside a `{ }` block (a guard is \
             then released at the block's end), and keep the owner (the `Mutex`, the `Vec`) to \
             borrow it again in a later cell.",
        );
    }
    if text.contains("offline mode (--offline)") || text.contains("without `--offline`") {
        return Some(
            "this kernel is offline (`RUST_ASYNC_OFFLINE=1`, as for an exam or a grader): `:dep` \
             can only add crates (and versions) already in this machine's cargo cache. A crate \
             every student needs belongs in the course crates (kernel/runtime/Cargo.toml).",
        );
    }
    if text.contains("EvcxrUserCodeError") && text.contains("Option") {
        return Some(
            "in a cell, `?` works on a `Result` (its error ends the cell). For an `Option`, say \
             what was missing: `value.ok_or(\"no value\")?`, or use `match` / `if let`.",
        );
    }
    if text.contains("is not a future") {
        return Some(
            "only a future can be `.await`ed, and this value is a plain one: a normal `fn` \
             returns its result at once. Remove the `.await`, or make the function an \
             `async fn` if it should be awaited.",
        );
    }
    match code {
        Some("E0373") if text.contains("async block") => Some(
            "this async block borrows a variable, but a future that is kept for later or spawned \
             must own what it uses: write `async move { ... }` (clone the value first if you \
             still need it here).",
        ),
        Some("E0658") if text.contains("`!` type") => Some(
            "a block that never ends (a `loop` without `break`, or one that always panics) has \
             the \"never\" type `!`, which a kept variable's type cannot be written with. Write \
             the type with `()` in its place, e.g. `let worker: tokio::task::JoinHandle<()> = \
             tokio::spawn(async move { loop { .. } });`.",
        ),
        Some("E0728") => Some(
            "`.await` only works inside an `async fn` or an `async { }` block. The cell itself is \
             async, but the function around this `.await` is not: declare it `async fn` and call \
             it with `.await`.",
        ),
        Some("E0308") | Some("E0599") | Some("E0609") | Some("E0277") | Some("E0614")
        | Some("E0369") | Some("E0608")
            if mentions_future =>
        {
            Some(
                "this value is a future: calling an `async fn` only creates it, nothing has run \
                 yet. Add `.await` to run it and get its result.",
            )
        }
        _ => None,
    }
}

/// Hints for panics whose message names a common async mistake.
fn panic_hint(message: &str) -> Option<&'static str> {
    if message.contains("Cannot start a runtime from within a runtime") {
        if message.contains("hint:") {
            None // the runtime library's own message (a `Runtime::new()` in a cell) explains it
        } else {
            // tokio's message: `Handle::block_on`, `#[tokio::main]`, a `runtime::Builder`.
            Some(
                "`block_on` (also inside a `#[tokio::main]` function, or on a runtime built with \
                 `tokio::runtime::Builder`) blocks this thread to run a future, but every cell \
                 already runs inside the kernel's runtime. `.await` the future instead: remove \
                 `#[tokio::main]` and write `main().await`, say. Or run the other runtime on a \
                 thread of its own.",
            )
        }
    } else if message.contains("Cannot drop a runtime in a context where blocking is not allowed")
        || message.contains("Cannot block the current thread from within a runtime")
    {
        Some(
            "this blocks a thread of the running runtime. Inside async code use `.await`; for \
             blocking work use `tokio::task::spawn_blocking`.",
        )
    } else if message.contains("there is no reactor running")
        || message.contains("must be called from the context of a Tokio")
    {
        Some("this needs a running tokio runtime: call it from a cell or from a spawned task.")
    } else {
        None
    }
}

/// The errors of `compiled`, a rewrite of the student's `written` cell with the same lines
/// (a kept future boxed into `tokio::Pending`), shown on the lines the student wrote, with
/// `Pending<T>` called what it is to the student, `impl Future<Output = T>`.
pub(crate) fn compile_errors_shown_as(compiled: &str, written: &str, errors: &[evcxr::CompilationError]) -> CellError {
    let same_lines = compiled.lines().count() == written.lines().count();
    let mut error = compile_errors_on(compiled, if same_lines { written } else { compiled }, errors);
    if compiled != written {
        error.message = as_written(&error.message);
        error.traceback = error.traceback.iter().map(|line| as_written(line)).collect();
    }
    error
}

/// `Pending<T>`, the type a kept future is boxed into, as the future it holds.
fn as_written(text: &str) -> String {
    ["rust_async::Pending<", "::tokio::Pending<", "tokio::Pending<"]
        .iter()
        .fold(text.to_owned(), |text, pending| text.replace(pending, "impl Future<Output = "))
}

/// The column in `written` of what is at `column` (1-based, in characters) of `compiled`,
/// which is `written` with text inserted: the two are matched character by character.
fn written_column(compiled: &str, written: &str, column: usize) -> usize {
    let mut written_chars = written.chars().peekable();
    let mut written_column = 1;
    for (index, character) in compiled.chars().enumerate() {
        if index + 1 >= column {
            break;
        }
        if written_chars.peek() == Some(&character) {
            written_chars.next();
            written_column += 1;
        }
    }
    written_column
}

/// The errors of `code`, shown on the lines of `written` (the same number of lines).
fn compile_errors_on(code: &str, written: &str, errors: &[evcxr::CompilationError]) -> CellError {
    let mut traceback = Vec::new();
    let mut first_message = None;
    let errors: Vec<_> = errors.iter().filter(|error| error.level() == "error").collect();
    let compiled_lines: Vec<&str> = code.lines().collect();
    let written_lines: Vec<&str> = written.lines().collect();
    // A column of a compiled line, on the line as written.
    let column_as_written = |line: usize, column: usize| match (compiled_lines.get(line - 1), written_lines.get(line - 1)) {
        (Some(compiled), Some(written)) if compiled != written => written_column(compiled, written, column),
        _ => column,
    };
    for error in &errors {
        let error_code = error.code();
        let heading = match error_code {
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
            first_message = Some(format!("{heading}: {message}{location}"));
        }
        traceback.push(format!("{RED}{heading}{RESET}{BOLD}: {message}{RESET}"));
        for spanned in error.spanned_messages() {
            let Some(span) = spanned.span else { continue };
            let start_column = column_as_written(span.start_line, span.start_column);
            let end_column = column_as_written(span.end_line, span.end_column);
            traceback.push(format!(
                "  {BLUE}-->{RESET} cell line {}, column {start_column}",
                span.start_line
            ));
            let width = span.end_line.to_string().len();
            for line_number in span.start_line..=span.end_line {
                let Some(text) = written_lines.get(line_number - 1) else { continue };
                traceback.push(format!("{BLUE}{line_number:>width$} |{RESET} {text}"));
            }
            if span.start_line == span.end_line {
                let text = written_lines.get(span.start_line - 1).copied().unwrap_or_default();
                let (padding, carets) = underline(text, start_column, end_column);
                traceback.push(format!(
                    "{BLUE}{:>width$} |{RESET} {padding}{RED}{carets} {}{RESET}",
                    "",
                    without_generated_paths(&spanned.label)
                ));
            } else if !spanned.label.is_empty() {
                traceback.push(format!("{BLUE}{:>width$} ={RESET} {}", "", without_generated_paths(&spanned.label)));
            }
        }
        for help in error.help() {
            traceback.push(help_line(&without_generated_paths(&help)));
        }
        let all_text = format!("{message} {primary_label} {}", error.help().join(" "));
        if let Some(hint) = compile_hint(error_code, &all_text) {
            traceback.push(hint_line(hint));
        }
    }
    CellError {
        name: "CompileError".into(),
        message: first_message.unwrap_or_else(|| "the cell did not compile".into()),
        traceback,
    }
}

/// rustc names an async block or a closure by where it is in evcxr's generated source
/// (`{async block@src/lib.rs:108:22: 108:32}`), which means nothing in the cell: the name
/// is kept, the position dropped (`{async block}`).
fn without_generated_paths(text: &str) -> String {
    const GENERATED: &str = "@src/lib.rs:";
    let mut cleaned = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(index) = rest.find(GENERATED) {
        cleaned.push_str(&rest[..index]);
        rest = &rest[index..];
        match rest.find('}') {
            Some(close) => rest = &rest[close..],
            None => break,
        }
    }
    cleaned.push_str(rest);
    cleaned
}

/// What goes under `text` to mark its characters `start_column..end_column` (1-based, as rustc
/// counts): the padding and the carets. Both follow the line as a notebook shows it: a tab stays
/// a tab, and a wide character (CJK, most emoji) takes two places, so the carets sit under the
/// spanned text and cover all of it.
fn underline(text: &str, start_column: usize, end_column: usize) -> (String, String) {
    use unicode_width::UnicodeWidthChar;
    let start = start_column.saturating_sub(1);
    let mut padding = String::new();
    let mut carets = 0;
    for (index, character) in text.chars().enumerate() {
        let width = character.width().unwrap_or(0);
        if index < start {
            if character == '\t' {
                padding.push('\t');
            } else {
                padding.push_str(&" ".repeat(width));
            }
        } else if index < end_column.saturating_sub(1) {
            carets += if character == '\t' { 1 } else { width };
        }
    }
    // Past the end of the line (a missing `;`), the padding counts the missing places too.
    let past_end = start.saturating_sub(text.chars().count());
    padding.push_str(&" ".repeat(past_end));
    (padding, "^".repeat(carets.max(1)))
}

/// Finds the cell line a location in evcxr's generated source came from: evcxr copies the
/// user's statements verbatim, so the generated line's text is looked up in the cell.
pub(crate) fn cell_position(code: &str, generated: &str, line: u32, column: u32) -> Option<(usize, usize)> {
    let generated_line = generated.lines().nth((line as usize).checked_sub(1)?)?;
    let trimmed = generated_line.trim();
    if trimmed.is_empty() {
        return None;
    }
    let generated_indent = generated_line.len() - generated_line.trim_start().len();
    code.lines().enumerate().find_map(|(index, cell_line)| {
        let position = cell_line.find(trimmed)?;
        let column = (column as usize).saturating_sub(generated_indent) + position;
        Some((index + 1, column.max(1)))
    })
}

/// Points the traceback at `line`, `column` of the cell and shows that line; false when the
/// cell has no such line (only the position is given).
fn push_location(traceback: &mut Vec<String>, code: &str, line: usize, column: usize) -> bool {
    traceback.push(format!("  {BLUE}-->{RESET} cell line {line}, column {column}"));
    let text = code.lines().nth(line - 1);
    if let Some(text) = text {
        traceback.push(format!("{BLUE}{line} |{RESET} {text}"));
    }
    text.is_some()
}

/// What evcxr keeps of a cell that stopped early (a panic, a `?` error).
const UNFINISHED_CELL_LOSES: &str = "  The cell did not finish: the variables it made, and earlier \
    ones it moved (`let b = a;`, a value passed to a function), are gone. Earlier variables it \
    only used or changed are kept.";

pub(crate) fn panic(code: &str, generated: &str, panic: &PanicRecord) -> CellError {
    let first_line = panic.message.lines().next().unwrap_or_default().to_owned();
    let mut traceback = vec![format!("{RED}panic{RESET}{BOLD}: {first_line}{RESET}")];
    for line in panic.message.lines().skip(1) {
        traceback.push(line.to_owned());
    }
    if !panic.in_cell_crate {
        // In a library (no `#[track_caller]` led back to the cell): its line means nothing here.
    } else if let Some((line, column)) = cell_position(code, generated, panic.line, panic.column) {
        push_location(&mut traceback, code, line, column);
    } else if let Some(text) = generated.lines().nth((panic.line as usize).saturating_sub(1)).map(str::trim) {
        // In code an earlier cell defined (a function it called): show that line.
        if !text.is_empty() {
            traceback.push(format!("  {BLUE}-->{RESET} in code of an earlier cell: {text}"));
        }
    }
    if let Some(hint) = panic_hint(&panic.message) {
        traceback.push(hint_line(hint));
    }
    traceback.push(UNFINISHED_CELL_LOSES.to_owned());
    CellError { name: "Panic".into(), message: panic.message.clone(), traceback }
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
    let mut traceback = vec![
        format!("{RED}{name}{RESET}{BOLD}: {first_line}{RESET}"),
        "  the cell returned this error through `?`".to_owned(),
    ];
    // Which `?` is not recorded; when the cell has only one, it is that one.
    if let Some((line, column)) = only_question_mark(code) {
        if push_location(&mut traceback, code, line, column) {
            traceback.push(format!("{BLUE}{} |{RESET} {}{RED}^{RESET}", " ".repeat(line.to_string().len()), " ".repeat(column - 1)));
        }
    }
    traceback.push(UNFINISHED_CELL_LOSES.to_owned());
    CellError { traceback, name, message }
}

/// The (line, column) of the cell's one `?` operator, if it has exactly one (`?Sized` is not
/// an operator; strings, characters and comments are skipped).
fn only_question_mark(code: &str) -> Option<(usize, usize)> {
    let mut found = Vec::new();
    let mut previous_was_question = None;
    crate::is_complete::walk_code(code, |offset, character| {
        if let Some(question) = previous_was_question.take() {
            if !(character.is_alphanumeric() || character == '_') {
                found.push(question);
            }
        }
        if character == '?' {
            previous_was_question = Some(offset);
        }
        found.len() < 2
    });
    found.extend(previous_was_question);
    let [offset] = found[..] else { return None };
    Some(line_and_column(code, offset))
}

/// The 1-based line and column (in characters) of the byte `offset` of `code`.
fn line_and_column(code: &str, offset: usize) -> (usize, usize) {
    let before = &code[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// An error saying that something borrows what does not live long enough: what keeping a
/// future that borrows the cell's locals gives.
pub(crate) fn is_borrow_error(error: &evcxr::CompilationError) -> bool {
    matches!(error.code(), Some("E0597" | "E0373" | "E0521" | "E0716" | "E0515" | "E0505"))
        || error.message().contains("'static")
        || error.message().contains("borrowed")
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

/// `let name = <future>;` where the future borrows from the cell, so it cannot be kept.
pub(crate) fn future_not_kept(name: &str, errors: &[evcxr::CompilationError]) -> CellError {
    let message = format!(
        "`{name}` is a future that borrows variables of this cell, so it cannot be kept for a \
         later cell."
    );
    let mut traceback = vec![format!("{RED}CompileError{RESET}{BOLD}: {message}{RESET}")];
    if let Some(error) = errors.first() {
        traceback.push(format!("  rustc: {}", error.message()));
    }
    traceback.push(hint_line(
        "write `async move { ... }` so the future owns what it uses (clone a value first if \
         you still need it), or `.await` it in this cell.",
    ));
    CellError { name: "CompileError".into(), message, traceback }
}

/// An error whose whole story is one message: the traceback is that message under its name.
pub(crate) fn one_line_error(name: &str, message: String) -> CellError {
    CellError { name: name.into(), traceback: vec![format!("{RED}{name}{RESET}: {message}")], message }
}

pub(crate) fn interrupted() -> CellError {
    let message = "The cell was interrupted: its future was dropped at the await point where it \
                   was waiting. Variables from earlier cells are kept, except those the cell had \
                   moved into its code (a `JoinHandle` it was awaiting: the task goes on, detached). \
                   Tasks it did not own keep running.";
    one_line_error("Interrupted", message.into())
}

pub(crate) fn interrupted_then_panicked(panic_message: &str) -> CellError {
    let mut error = interrupted();
    let first_line = panic_message.lines().next().unwrap_or_default();
    error.traceback.push(format!("It was not at an `.await` (it was reading stdin, say) and ended by a panic: {first_line}"));
    error
}

pub(crate) fn interrupted_before_start() -> CellError {
    let message = "The cell was interrupted before its code started (the kernel was busy with \
                   other work), so its code did not run.";
    one_line_error("Interrupted", message.into())
}

pub(crate) fn interrupted_while_compiling() -> CellError {
    let message = "The cell was interrupted while it compiled (cargo was stopped), so its code did \
                   not run, and a crate it added with `:dep` was not added. Variables are kept.";
    one_line_error("Interrupted", message.into())
}

pub(crate) fn interrupted_by_restart() -> CellError {
    let message = "The cell was interrupted, but it never reached an `.await` (busy computing or \
                   blocking a thread), so the kernel restarted the user-code process. All \
                   variables and running tasks were lost; functions, types and `use` items of \
                   earlier cells are kept (not those of this cell: it did not finish).";
    one_line_error("Interrupted", message.into())
}

/// The exit status in evcxr's message for an ended user process (its last line).
pub(crate) fn exit_status_of(detail: &str) -> &str {
    let status = detail.trim().lines().last().unwrap_or("no detail");
    status.strip_prefix("Subprocess terminated with status: ").unwrap_or(status)
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
    let mut traceback = vec![format!("{RED}KernelRestarted{RESET}: {message}")];
    if let Some(panic) = panic {
        // A panic while unwinding another (in a `Drop`, say) aborts: the first one is the story.
        traceback.push(format!("It panicked first: {}", panic.message));
    }
    traceback.extend(detail.lines().map(str::to_owned));
    CellError { name: "KernelRestarted".into(), message, traceback }
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
    let mut traceback = vec![format!("{RED}Error{RESET}: {}", message.lines().next().unwrap_or_default())];
    let first_line = message.lines().next().unwrap_or_default();
    if first_line.starts_with("Couldn't automatically determine type of variable") {
        let name = first_line.split('`').nth(1).unwrap_or("x");
        traceback.push(hint_line(&format!(
            "a variable kept for later cells needs a type that later cells can write, and the \
             type rustc found for `{name}` cannot be written there. Write a type on the `let` \
             (`let {name}: Type = ...;`), through a crate the cells use. If `{name}` is only \
             needed in this cell, put the code in a `{{ }}` block, which keeps nothing."
        )));
        return CellError { name: "EvaluationError".into(), message: first_line.to_owned(), traceback };
    }
    traceback.extend(message.lines().skip(1).map(str::to_owned));
    CellError { name: "EvaluationError".into(), message: message.to_owned(), traceback }
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

/// The kernel provides tokio and the course crates itself: a second copy of tokio would split
/// the runtime in two, and another spec of a course crate would rebuild the runtime library.
pub(crate) fn refuse_kernel_crate_dependency<'a>(code: &str, course_crates: impl Iterator<Item = &'a str>) -> Option<CellError> {
    let course_crates: Vec<String> = course_crates.map(|name| name.replace('-', "_")).collect();
    let (command, name) = crate::commands::leading_commands(code).into_iter().find_map(|command| {
        let args = command.args.filter(|_| command.name == ":dep")?;
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
    Some(one_line_error("DependencyError", message))
}

/// For each "cannot find value `x`" (E0425) of `error` where `x` was a variable of an
/// earlier cell (`was_kept`): a hint that it is gone and why that happens. In async code it
/// is common: `.await` on a kept future or `JoinHandle` uses it up.
pub(crate) fn add_gone_variable_hints(error: &mut CellError, why_gone: impl Fn(&str) -> Option<String>) {
    // rustc says "function" for a name that is called.
    const NOT_FOUND: [&str; 2] = ["cannot find value `", "cannot find function `"];
    let text = error.traceback.join("\n");
    let mut named = Vec::new();
    for (index, found) in NOT_FOUND.iter().flat_map(|pattern| text.match_indices(pattern)) {
        let rest = &text[index + found.len()..];
        if let Some((name, _)) = rest.split_once('`') {
            if !named.contains(&name) {
                named.push(name);
            }
        }
    }
    for hint in named.into_iter().filter_map(why_gone) {
        error.traceback.push(hint_line(&hint));
    }
}

/// Why a variable an earlier cell kept is gone.
pub(crate) fn gone_variable(name: &str) -> String {
    format!(
        "`{name}` was a variable of an earlier cell, and is gone: a cell used it up \
         (`.await` on a kept future or `JoinHandle` consumes it; so does moving it into a \
         task, a `select!` or a function, or `let other = {name};`), or a cell that stopped \
         early had moved it, or the process running your code was restarted. Run the code \
         that makes it again."
    )
}

/// A `return` in the cell's own code (see `early_return`): refused before it runs.
pub(crate) fn refuse_cell_level_return(code: &str) -> Option<CellError> {
    // Leading command and `!` shell lines are not Rust.
    let rust_start: usize = code.split_inclusive('\n').take(crate::commands::first_code_line(code)).map(str::len).sum();
    let offset = rust_start + crate::early_return::cell_level_return(&code[rust_start..])?;
    let (line, column) = line_and_column(code, offset);
    let message = "`return` in a cell's own code: a cell is not a function, and a `return` would \
                   end it before the kernel keeps its variables, so they would be lost. Nothing \
                   ran."
        .to_owned();
    let mut traceback = vec![format!("{RED}CompileError{RESET}: {message}")];
    push_location(&mut traceback, code, line, column);
    traceback.push(hint_line(
        "to stop early, put the rest of the cell in an `if`/`else`; to end the cell with an \
         error, use `?` or `panic!`. Or write the code as an `async fn` (where `return` works) \
         and call it: `let result = run().await;`.",
    ));
    Some(CellError { name: "CompileError".into(), message, traceback })
}

/// evcxr commands that would take the kernel apart: refused, with what to do instead.
/// `offline`: the kernel was started offline, which a cell cannot undo.
pub(crate) fn refuse_unsupported_command(code: &str, offline: bool) -> Option<CellError> {
    let (line, why) = crate::commands::leading_commands(code).into_iter().find_map(|command| {
        let why = match (command.name, command.args.map(str::trim).filter(|args| !args.is_empty())) {
            (":quit", _) => {
                "it would end the kernel's process, and every variable with it. To stop the \
                 kernel, use the notebook's Kernel menu (Shut Down, or Restart for a fresh start)."
            }
            (":toolchain", Some(_)) => {
                "cells link the runtime library (tokio) that set-up built with this kernel's \
                 toolchain; another toolchain could not load it (and might try to download)."
            }
            // evcxr links statically only for exactly `1`; anything else switches it off.
            (":allow_static_linking", _) if command.args != Some("1") => {
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
    Some(one_line_error("UnsupportedCommand", message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_that_would_break_the_kernel_are_refused() {
        for command in [":quit", "  :toolchain nightly", ":allow_static_linking 0", ":allow_static_linking", ":sccache 1",
                        ":allow_static_linking true", ":allow_static_linking 1 ", ":cache 500", ":offline 0"] {
            let error = refuse_unsupported_command(&format!("// first\n{command}\nlet x = 1;"), true).unwrap();
            assert_eq!(error.name, "UnsupportedCommand");
            assert!(error.message.contains(command.trim()), "{}", error.message);
        }
        for fine in [":toolchain", ":allow_static_linking 1", ":vars", "let quit = 1;", "let x = 1;\n:quit", ":cache 0", ":offline 1"] {
            assert!(refuse_unsupported_command(fine, true).is_none(), "{fine}");
        }
        // A kernel started online may go offline and back.
        assert!(refuse_unsupported_command(":offline 0", false).is_none());
    }

    #[test]
    fn short_type_names_drop_module_paths() {
        assert_eq!(short_type_name("core::num::error::ParseIntError"), "ParseIntError");
        assert_eq!(
            short_type_name("alloc::boxed::Box<dyn core::error::Error>"),
            "Box<dyn Error>"
        );
    }

    #[test]
    fn carets_sit_under_wide_characters_and_tabs() {
        // `"日本"` starts at column 5 and ends before column 9 (rustc counts characters).
        assert_eq!(underline("let 日本 = 1;", 5, 7), ("    ".into(), "^^^^".into()));
        assert_eq!(underline("let s = \"日本\"; s.nope()", 17, 21), (" ".repeat(18), "^^^^".into()));
        assert_eq!(underline("\tx.nope()", 4, 8), ("\t  ".into(), "^^^^".into()));
        assert_eq!(underline("abc", 4, 4), ("   ".into(), "^".into()));
        assert_eq!(underline("abc", 6, 6), ("     ".into(), "^".into()));
    }

    #[test]
    fn panic_location_maps_back_to_the_cell_line() {
        let code = "let a = 1;\nlet b: Option<u8> = None;\nb.unwrap();";
        let generated = "fn x() {\n    let a = 1;\n    let b: Option<u8> = None;\n    b.unwrap();\n}";
        assert_eq!(cell_position(code, generated, 4, 7), Some((3, 3)));
    }

    #[test]
    fn a_panic_in_a_function_of_an_earlier_cell_shows_that_line() {
        let generated = "fn helper(v: &[u32]) -> u32 {\n    let first = v[0];\n    first\n}\nfn run() {\n    helper(&[]);\n}";
        let record = |in_cell_crate| PanicRecord { message: "index out of bounds".into(), line: 2, column: 17, in_cell_crate };
        let traceback = panic("helper(&[]);", generated, &record(true)).traceback.join("\n");
        assert!(traceback.contains("in code of an earlier cell: let first = v[0];"), "{traceback}");
        // A location in a library is not looked up in the cell's crate.
        let traceback = panic("let first = v[0];", generated, &record(false)).traceback.join("\n");
        assert!(!traceback.contains("-->"), "{traceback}");
    }

    #[test]
    fn tokio_and_course_crates_are_refused_with_an_explanation() {
        let course = || ["serde", "tokio-stream"].into_iter();
        let error = refuse_kernel_crate_dependency(":dep tokio = \"1\"\nlet x = 1;", course()).unwrap();
        assert_eq!(error.name, "DependencyError");
        assert!(error.message.contains("built into this kernel"), "{}", error.message);
        let error = refuse_kernel_crate_dependency(":dep serde = { version = \"1\" }", course()).unwrap();
        assert!(error.message.contains("serde is one of the course crates"), "{}", error.message);
        assert!(refuse_kernel_crate_dependency(":dep tokio_stream=\"0.1\"", course()).is_some());
        assert!(refuse_kernel_crate_dependency(":dep tokio-util = \"0.7\"", course()).is_none());
        assert!(refuse_kernel_crate_dependency(":dep serde_yaml = \"0.9\"", course()).is_none());
    }

    #[test]
    fn a_return_in_the_cells_own_code_is_refused_at_its_line() {
        let error = refuse_cell_level_return("!echo return\nlet b = 1;\nif b > 0 { return; }").unwrap();
        let traceback = error.traceback.join("\n");
        assert!(traceback.contains("cell line 3, column 12"), "{traceback}");
        assert!(traceback.contains("async fn"), "{traceback}");
        assert!(refuse_cell_level_return("!echo return\nfn f() { return; }").is_none());
    }

    #[test]
    fn a_variable_gone_since_an_earlier_cell_gets_a_hint() {
        let mut error = one_line_error("CompileError", "error[E0425]: cannot find value `fut` in this scope".into());
        add_gone_variable_hints(&mut error, |name| (name == "fut").then(|| gone_variable(name)));
        assert!(error.traceback.last().unwrap().contains("`fut` was a variable of an earlier cell"), "{:?}", error.traceback);
        let mut never_made = one_line_error("CompileError", "error[E0425]: cannot find value `typo` in this scope".into());
        add_gone_variable_hints(&mut never_made, |name| (name == "fut").then(|| gone_variable(name)));
        assert_eq!(never_made.traceback.len(), 1);
    }

    #[test]
    fn borrowing_async_block_gets_a_hint() {
        let hint = compile_hint(Some("E0373"), "async block may outlive the current function, but it borrows `x`");
        assert!(hint.unwrap().contains("async move"));
    }

    #[test]
    fn a_suggested_replacement_is_shown_as_code_beside_its_help() {
        assert!(help_line("consider borrowing here\n\n&").ends_with("help: consider borrowing here: `&`"));
        assert!(help_line("remove this").ends_with("help: remove this"));
    }

    #[test]
    fn a_column_of_the_rewritten_line_is_found_on_the_line_as_written() {
        let written = "let once = add(9, 9);";
        let compiled = "let once: ::tokio::Pending<i32> = ::tokio::Pending::new(add(9, 9));";
        assert_eq!(written_column(compiled, written, 5), 5); // `once`
        let add = compiled.find("add(").unwrap() + 1;
        assert_eq!(written_column(compiled, written, add), written.find("add(").unwrap() + 1);
        assert_eq!(as_written("`once` has type `rust_async::Pending<i32>`"), "`once` has type `impl Future<Output = i32>`");
    }

    #[test]
    fn the_only_question_mark_of_a_cell_is_found() {
        assert_eq!(only_question_mark("let n: i32 = s.parse()?;\nn"), Some((1, 23)));
        assert_eq!(only_question_mark("fn f<T: ?Sized>(_: &T) {}\nlet x = \"?\";\ng()?"), Some((3, 4)));
        assert_eq!(only_question_mark("a()?;\nb()?;"), None);
        assert_eq!(only_question_mark("a();"), None);
    }

    #[test]
    fn generated_positions_are_left_out_of_block_names() {
        assert_eq!(
            without_generated_paths("within `{async block@src/lib.rs:108:22: 108:32}`, the trait `Send`"),
            "within `{async block}`, the trait `Send`"
        );
        assert_eq!(without_generated_paths("{closure@src/lib.rs:3:1: 3:9} and {x}"), "{closure} and {x}");
        assert_eq!(without_generated_paths("no position"), "no position");
    }

    #[test]
    fn a_std_mutex_guard_across_await_gets_its_own_hint() {
        let text = "future cannot be sent between threads safely future created by async block is not `Send` \
                    within `{async block}`, the trait `Send` is not implemented for `std::sync::MutexGuard<'_, i32>`";
        assert!(compile_hint(None, text).unwrap().contains("tokio::sync::Mutex"));
        assert!(compile_hint(None, text).unwrap().contains("MutexGuard"));
    }

    #[test]
    fn a_variable_of_unknown_type_gets_a_hint_to_write_it() {
        let error = evaluation_error("Couldn't automatically determine type of variable `rt`.\nPlease give it an explicit type.");
        let traceback = error.traceback.join("\n");
        assert!(traceback.contains("let rt: Type"), "{traceback}");
    }

    #[test]
    fn question_mark_on_an_option_gets_a_hint() {
        let text = "the `?` operator can only be used on `Result`s, not `Option`s, in a function \
                    that returns `Result` cannot use the `?` operator on an `Option<i32>` in a \
                    function that returns `Result<(), EvcxrUserCodeError>`";
        assert!(compile_hint(Some("E0277"), text).unwrap().contains("ok_or"));
    }

    #[test]
    fn a_dependency_missing_offline_gets_a_hint() {
        let text = "no matching package named `x` found ... you may wish to retry without `--offline`.";
        assert!(compile_hint(None, text).unwrap().contains("RUST_ASYNC_OFFLINE=1"));
    }

    #[test]
    fn await_on_a_plain_value_gets_the_opposite_hint() {
        let hint = compile_hint(Some("E0277"), "`i32` is not a future").unwrap();
        assert!(hint.contains("Remove the `.await`"), "{hint}");
    }

    #[test]
    fn forgotten_await_gets_a_hint() {
        let hint = compile_hint(Some("E0599"), "no method named `len` found for opaque type `impl Future<Output = String>`");
        assert!(hint.unwrap().contains(".await"));
        assert!(compile_hint(Some("E0599"), "no method named `len` found for struct `Foo`").is_none());
    }
}
