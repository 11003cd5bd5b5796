//! A cell that failed in a way the engine can mend is rewritten (its lines kept) and run
//! again: a list of [`RULES`], each looking at the last attempt, run by one loop until none
//! applies. Nothing of the cell runs before a rewrite that compiles.
//!
//! - a variable whose type no later cell can write (`variable_types`): a future is boxed into
//!   `tokio::Pending`, a type written in a form that can be written (`future_values`), or else
//!   the cell runs without keeping that variable;
//! - a boxed future that turns out to borrow the cell's locals, or an `async` block value that
//!   does (E0373): the cell fails with an error saying why such a future cannot be kept;
//! - `tokio::pin!(fut)`, which shadows a variable with a type that cannot be kept: pinned on the
//!   heap instead, if that compiles;
//! - a compile failure whose errors evcxr left out (they pointed into its wrapper): a check of
//!   the cell finds them.

use crate::cell_error::CellError;
use crate::variable_types::UnkeptKind;
use crate::{diagnostics, future_values, Engine};

/// The cell's code as last run, and what came of it.
pub(crate) struct Attempt {
    /// The cell as first run (with its statics' symbols): what runs when a variable is not kept.
    pub first: String,
    pub code: String,
    pub result: Result<evcxr::EvalOutputs, evcxr::Error>,
    /// The variable whose future the last rewrite boxed, to see whether that compiled.
    boxed_future: Option<String>,
    rewrites: usize,
    heap_pinned: bool,
    checked: bool,
}

impl Attempt {
    pub fn new(first: String, result: Result<evcxr::EvalOutputs, evcxr::Error>) -> Attempt {
        Attempt { code: first.clone(), first, result, boxed_future: None, rewrites: 0, heap_pinned: false, checked: false }
    }

    fn compile_errors(&self) -> Option<&[evcxr::CompilationError]> {
        match &self.result {
            Err(evcxr::Error::CompilationErrors(errors)) => Some(errors),
            _ => None,
        }
    }
}

/// What a rule makes of the last attempt.
enum Step {
    /// Run this rewrite of the cell and go on from its result (`boxed_future`: it boxed that
    /// variable's future).
    Run { code: String, boxed_future: Option<String> },
    /// Run this rewrite, and go on from its result only if it ran; else from the attempt before.
    RunIfItWorks(String),
    /// Run the cell as first written, without keeping this variable.
    RunWithout(String),
    /// These are the cell's errors (a check found the ones evcxr left out).
    Errors(Vec<evcxr::CompilationError>),
    /// The cell fails with this error.
    Fail(CellError),
}

type Rule = fn(&mut Engine, &mut Attempt) -> Option<Step>;

/// In order: the first that applies makes the next attempt, then the list starts over.
const RULES: [Rule; 5] = [boxed_future_borrows, keep_unwritable_variable, future_value_borrows, pin_on_the_heap, find_left_out_errors];

/// How many times a cell is rewritten to keep its variables (a future boxed, a type written),
/// one variable at a time.
const MAX_REWRITES: usize = 8;

impl Engine {
    /// Applies [`RULES`] to the cell's first attempt until none applies; the cell's error when
    /// a rule finds the cell cannot run.
    pub(crate) fn rewrite_and_retry(&mut self, mut attempt: Attempt) -> Result<Attempt, CellError> {
        // Each rule applies a bounded number of times; this bounds them all.
        for _ in 0..MAX_REWRITES + RULES.len() {
            let Some(step) = RULES.iter().find_map(|rule| rule(self, &mut attempt)) else { break };
            match step {
                Step::Run { code, boxed_future } => {
                    attempt.result = self.execute_rewritten(&code);
                    (attempt.code, attempt.boxed_future) = (code, boxed_future);
                }
                Step::RunIfItWorks(code) => {
                    let result = self.execute_rewritten(&code);
                    if result.is_ok() {
                        (attempt.code, attempt.result) = (code, result);
                    }
                    attempt.boxed_future = None;
                }
                Step::RunWithout(name) => {
                    if let Ok(mut types) = self.types.lock() {
                        types.forget.insert(name);
                    }
                    attempt.result = self.execute_rewritten(&attempt.first);
                    (attempt.code, attempt.boxed_future) = (attempt.first.clone(), None);
                }
                Step::Errors(errors) => attempt.result = Err(evcxr::Error::CompilationErrors(errors)),
                Step::Fail(error) => return Err(error),
            }
        }
        Ok(attempt)
    }

    /// Runs a cell the engine rewrote (its lines kept), noting that code for `dbg!` lines.
    pub(crate) fn execute_rewritten(&mut self, rewritten: &str) -> Result<evcxr::EvalOutputs, evcxr::Error> {
        self.output.note_cell_code(rewritten);
        self.context.execute(rewritten)
    }
}

/// A future boxed to be kept that does not compile: if it borrows from the cell, explained in
/// terms of the code the student wrote, not of our rewrite; otherwise (futures in a
/// collection, say) it is not a future itself, and is not kept.
fn boxed_future_borrows(_: &mut Engine, attempt: &mut Attempt) -> Option<Step> {
    attempt.compile_errors()?;
    let name = attempt.boxed_future.take()?;
    let errors = attempt.compile_errors()?;
    Some(if errors.iter().any(is_borrow_error) {
        Step::Fail(diagnostics::future_not_kept(&name, errors))
    } else {
        Step::RunWithout(name)
    })
}

/// A variable of a type no later cell can write (`variable_types`) and that can be kept all
/// the same: a future, boxed into `tokio::Pending`; a never type or a function, written on its
/// `let` in a form that can be written. Where that cannot be done, the cell runs as written,
/// without keeping the variable.
fn keep_unwritable_variable(engine: &mut Engine, attempt: &mut Attempt) -> Option<Step> {
    let Err(evcxr::Error::Message(_)) = &attempt.result else { return None };
    if attempt.rewrites >= MAX_REWRITES {
        return None;
    }
    let unkept = engine.types.lock().ok().and_then(|mut types| types.rewrite.take())?;
    attempt.rewrites += 1;
    let rewritten = match &unkept.kind {
        UnkeptKind::Future => future_values::box_future_binding(&attempt.code, &unkept.name),
        UnkeptKind::Writable(type_name) => future_values::annotate_let(&attempt.code, &unkept.name, type_name),
        _ => None,
    };
    let Some(code) = rewritten else { return Some(Step::RunWithout(unkept.name)) };
    // A boxed future that still does not compile is looked at by `boxed_future_borrows`,
    // unless the cell also pins futures (`pin_on_the_heap` comes first then).
    let pins = future_values::heap_pin_statements(&code).is_some();
    let boxed_future = (unkept.kind == UnkeptKind::Future && !pins).then_some(unkept.name);
    Some(Step::Run { code, boxed_future })
}

/// `let fut = async { x + 1 };`, a future that borrows the cell's `x`: a program could keep
/// it, but a variable kept for later cells must own what it holds.
fn future_value_borrows(_: &mut Engine, attempt: &mut Attempt) -> Option<Step> {
    let errors = attempt.compile_errors()?;
    let name = errors.iter().find_map(|error| borrowing_future(&attempt.code, error))?;
    Some(Step::Fail(diagnostics::future_not_kept(&name, errors)))
}

/// `tokio::pin!(fut);` shadows `fut` with a pinned reference, which cannot be kept: pinned on
/// the heap instead, when that compiles.
fn pin_on_the_heap(_: &mut Engine, attempt: &mut Attempt) -> Option<Step> {
    attempt.compile_errors()?;
    if std::mem::replace(&mut attempt.heap_pinned, true) {
        return None;
    }
    future_values::heap_pin_statements(&attempt.code).map(Step::RunIfItWorks)
}

/// evcxr keeps only diagnostics that point into the user's code when there are any: an error
/// in its wrapper around the final expression (`not_async().await`) can leave nothing but a
/// `help` on the user's `fn`. A check gets the error itself.
fn find_left_out_errors(engine: &mut Engine, attempt: &mut Attempt) -> Option<Step> {
    let errors = attempt.compile_errors()?;
    if errors.iter().any(|error| error.level() == "error") || std::mem::replace(&mut attempt.checked, true) {
        return None;
    }
    let checked = engine.context.check(&attempt.code).ok()?;
    checked.iter().any(|error| error.level() == "error").then_some(Step::Errors(checked))
}

/// An error saying that something borrows what does not live long enough: what keeping a
/// future that borrows the cell's locals gives.
fn is_borrow_error(error: &evcxr::CompilationError) -> bool {
    matches!(error.code(), Some("E0597" | "E0373" | "E0521" | "E0716" | "E0515" | "E0505"))
        || error.message().contains("'static")
        || error.message().contains("borrowed")
}

/// The variable whose value `error` says is an `async` block that borrows (E0373): the block
/// is the value of a top-level `let`.
fn borrowing_future(code: &str, error: &evcxr::CompilationError) -> Option<String> {
    if error.code() != Some("E0373") || !error.message().starts_with("async block") {
        return None;
    }
    error.spanned_messages().iter().find_map(|spanned| {
        let span = spanned.span.as_ref()?;
        future_values::let_with_value_at(code, span.start_line, span.start_column)
    })
}
