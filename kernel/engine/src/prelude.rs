//! The code every kernel runs once, before the first cell (and again after `:clear`).

/// Run once at start (with async mode on: every cell runs on the shared runtime): names the
/// runtime library `rust_async` too, lets `?` errors report their type name, and
/// shows a cell's final value in one compile instead of two (`__DisplayFinalValue`).
/// The print macros and `dbg!` are the runtime library's, which credits each print to its
/// cell (its `eprintln!` matches exactly how evcxr prints the error a `?` returned). They are
/// imported by path, not defined here: evcxr writes items in no fixed order, and a
/// `macro_rules!` reaches only the code after it. A cell that uses none of them must not get
/// warnings (evcxr's check of a cell whose variable cannot be kept would report them instead
/// of the reason).
pub(crate) const PRELUDE: &str = r#"
use tokio as rust_async;
use tokio::__DisplayFinalValue as _;
#[allow(unused_imports)]
use tokio::{dbg, eprint, eprintln, print, println};
"#;
