//! Hints in plain words for the common async mistakes (a forgotten `.await`, blocking inside
//! async code, a runtime inside the runtime, a non-`Send` value across `spawn`), found in the
//! words of rustc's errors and of panic messages, and for variables gone since an earlier cell.

use crate::cell_error::CellError;

/// Hints for compile errors, matched on the error code and the words of the message.
pub(crate) fn compile_hint(code: Option<&str>, text: &str) -> Option<&'static str> {
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
pub(crate) fn panic_hint(message: &str) -> Option<&'static str> {
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

/// For each "cannot find value `x`" (E0425) of `error` where `x` was a variable of an
/// earlier cell (`was_kept`): a hint that it is gone and why that happens. In async code it
/// is common: `.await` on a kept future or `JoinHandle` uses it up.
pub(crate) fn add_gone_variable_hints(error: &mut CellError, why_gone: impl Fn(&str) -> Option<String>) {
    // rustc says "function" for a name that is called.
    const NOT_FOUND: [&str; 2] = ["cannot find value `", "cannot find function `"];
    let text: String = error.problems.iter().map(|problem| format!("{}\n", problem.text)).collect();
    let mut named = Vec::new();
    for (index, found) in NOT_FOUND.iter().flat_map(|pattern| text.match_indices(pattern)) {
        let rest = &text[index + found.len()..];
        if let Some((name, _)) = rest.split_once('`') {
            if !named.contains(&name) {
                named.push(name);
            }
        }
    }
    error.hints.extend(named.into_iter().filter_map(why_gone));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell_error::ErrorKind;

    #[test]
    fn a_variable_gone_since_an_earlier_cell_gets_a_hint() {
        let mut error = CellError::one_line(ErrorKind::CompileError, "error[E0425]: cannot find value `fut` in this scope");
        add_gone_variable_hints(&mut error, |name| (name == "fut").then(|| gone_variable(name)));
        assert!(error.hints.last().unwrap().contains("`fut` was a variable of an earlier cell"), "{:?}", error.hints);
        let mut never_made = CellError::one_line(ErrorKind::CompileError, "error[E0425]: cannot find value `typo` in this scope");
        add_gone_variable_hints(&mut never_made, |name| (name == "fut").then(|| gone_variable(name)));
        assert!(never_made.hints.is_empty());
    }

    #[test]
    fn borrowing_async_block_gets_a_hint() {
        let hint = compile_hint(Some("E0373"), "async block may outlive the current function, but it borrows `x`");
        assert!(hint.unwrap().contains("async move"));
    }

    #[test]
    fn a_std_mutex_guard_across_await_gets_its_own_hint() {
        let text = "future cannot be sent between threads safely future created by async block is not `Send` \
                    within `{async block}`, the trait `Send` is not implemented for `std::sync::MutexGuard<'_, i32>`";
        assert!(compile_hint(None, text).unwrap().contains("tokio::sync::Mutex"));
        assert!(compile_hint(None, text).unwrap().contains("MutexGuard"));
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

    #[test]
    fn a_runtime_inside_the_runtime_gets_a_hint_unless_the_message_has_one() {
        assert!(panic_hint("Cannot start a runtime from within a runtime. This happens because").unwrap().contains("`.await` the future"));
        assert!(panic_hint("Cannot start a runtime from within a runtime (hint: ...)").is_none());
        assert!(panic_hint("index out of bounds").is_none());
    }
}
