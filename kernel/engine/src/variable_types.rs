//! The types of a cell's new variables, from rustc.
//!
//! evcxr keeps a cell's top-level `let` variables for later cells by moving each into its
//! variable store and back out, with the variable's type written in the code it generates
//! (`put_variable::<T>`, `take_variable::<T>`). Stock evcxr asks rust-analyzer for those types,
//! which means analysing the standard library, tokio and every dependency inside the kernel
//! process: seconds of a cold kernel's first `let` and most of its memory. The kernel's evcxr
//! (patched, `kernel/evcxr-patch`) instead stores a new variable with its type left to rustc's
//! inference (`put_variable::<_>`), and asks [`FromCompiler`] for the types once the cell has
//! compiled, before it runs.
//!
//! rustc reports them in the compile that runs anyway: the kernel's rustc wrapper has it write
//! the cell crate's MIR (`--emit mir`, a stable flag). In MIR each local is declared with its
//! type written in full (`let mut _12: std::vec::Vec<u64>;`, paths as code outside the crate
//! can name them, unlike the shortened ones in diagnostics), and each store is a call
//! `VariableStore::put_variable::<..>(move _10, move _11, move _12)` whose name argument is
//! assigned a string constant (`_11 = const "n";`). So the type of `n` is the type of the
//! local passed beside its name. The MIR text is a format for people, not a stable interface:
//! what is not found in it leaves the variable without a type, and evcxr then asks the student
//! for one (`tests/test_async_cells.py` covers the shapes cells produce).
//!
//! A type no later cell can write (a closure, an iterator or a stream holding one, a type of a
//! crate the cells do not depend on) is not kept: the variable lives as long as its cell, as a
//! local does, and a later cell that names it gets a hint that says why (`diagnostics`). Two
//! such types can be kept all the same: a future, boxed into `tokio::Pending`, and a type that
//! can be written in another form (`!` as `()`, a function as a pointer). For those, the
//! resolver refuses the cell before it runs, in evcxr's words, and the engine rewrites the
//! `let` and runs it again (`future_values`); when that cannot be done, it runs the cell as
//! written with the variable not kept ([`Shared::forget`]).

use crate::mir::stored_types;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Set for cargo while cells compile: where the rustc wrapper has rustc write the cell
/// crate's MIR.
pub const CELL_MIR_ENV: &str = "RUST_ASYNC_CELL_MIR";

/// A new variable whose type a later cell could not write, and what can be done about it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unkept {
    pub name: String,
    /// rustc's type, positions in the generated source left out ([`readable_type`]).
    pub type_name: String,
    pub kind: UnkeptKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum UnkeptKind {
    /// A future (an `async` block's or an `async fn`'s, perhaps boxed or in a timeout): it is
    /// kept as a `tokio::Pending` (`future_values`).
    Future,
    /// Written on the `let`, this type is what rustc infers and later cells can write: `!`
    /// as `()` (a task that never ends), a function as a function pointer.
    Writable(String),
    Closure,
    AsyncClosure,
    /// From a crate the cells do not depend on (only through another crate).
    IndirectCrate(String),
    Other,
}

/// What the engine and the resolver share about the cell being run.
#[derive(Default)]
pub(crate) struct Shared {
    /// A variable the engine can keep by rewriting its `let`: why the cell was refused.
    pub rewrite: Option<Unkept>,
    /// Variables not to keep even if a rewrite could keep them (it could not be done).
    pub forget: HashSet<String>,
    /// The variables of the last compile that are not kept.
    pub not_kept: Vec<Unkept>,
}

/// Reads the types of a cell's new variables from the MIR rustc wrote for it.
pub(crate) struct FromCompiler {
    mir_file: PathBuf,
    cell_dir: PathBuf,
    /// The crates every cell has without cargo dependencies (the course crates), and the lock
    /// file that lists the crates they need.
    course_crates: Vec<String>,
    template_lock: PathBuf,
    shared: Arc<Mutex<Shared>>,
}

impl FromCompiler {
    pub(crate) fn new(
        mir_file: PathBuf,
        cell_dir: PathBuf,
        course_crates: Vec<String>,
        template_lock: PathBuf,
        shared: Arc<Mutex<Shared>>,
    ) -> FromCompiler {
        FromCompiler { mir_file, cell_dir, course_crates, template_lock, shared }
    }
}

impl evcxr::VariableTypes for FromCompiler {
    fn types_of(&mut self, names: &[String]) -> Result<HashMap<String, Option<String>>, String> {
        let mir = std::fs::read_to_string(&self.mir_file).unwrap_or_default();
        let found = stored_types(&mir);
        let crates = Crates::of_cell_crate(&self.cell_dir, &self.course_crates, &self.template_lock);
        let mut shared = self.shared.lock().map_err(|_| "the engine's state is poisoned".to_owned())?;
        shared.not_kept.clear();
        let mut types = HashMap::new();
        for name in names {
            let Some(type_name) = found.get(name.as_str()) else { continue };
            let Some(kind) = unkept_kind(type_name, &crates) else {
                types.insert(name.clone(), Some(type_name.clone()));
                continue;
            };
            let unkept = Unkept { name: name.clone(), type_name: readable_type(type_name), kind };
            let rewritable = matches!(unkept.kind, UnkeptKind::Future | UnkeptKind::Writable(_));
            if rewritable && !shared.forget.contains(name) {
                let message = refusal_message(&unkept);
                shared.rewrite = Some(unkept);
                return Err(message);
            }
            types.insert(name.clone(), None);
            shared.not_kept.push(unkept);
        }
        Ok(types)
    }
}

/// The crates a cell names: its dependencies (a later cell can write their paths), and the
/// other crates in its build (it cannot).
#[derive(Default)]
struct Crates {
    direct: HashSet<String>,
    all: HashSet<String>,
}

impl Crates {
    fn of_cell_crate(cell_dir: &std::path::Path, course_crates: &[String], template_lock: &std::path::Path) -> Crates {
        let mut crates = Crates::default();
        crates.direct.extend(course_crates.iter().map(|name| name.replace('-', "_")));
        let manifest = std::fs::read_to_string(cell_dir.join("Cargo.toml")).unwrap_or_default();
        let mut in_dependencies = false;
        for line in manifest.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_dependencies = line == "[dependencies]";
            } else if let (true, Some((name, _))) = (in_dependencies, line.split_once('=')) {
                crates.direct.insert(name.trim().trim_matches('"').replace('-', "_"));
            }
        }
        for lock in [cell_dir.join("Cargo.lock"), template_lock.to_owned()] {
            let lock = std::fs::read_to_string(lock).unwrap_or_default();
            for line in lock.lines() {
                if let Some(name) = line.strip_prefix("name = \"").and_then(|rest| rest.strip_suffix('"')) {
                    crates.all.insert(name.replace('-', "_"));
                }
            }
        }
        crates
    }

    /// Whether a path starting with `root` can be written in a later cell: std's, a
    /// dependency's or the cells' own items, not those of a crate the cells do not depend on.
    fn can_name(&self, root: &str) -> bool {
        match root {
            "std" | "core" | "tokio" | "rust_async" | "crate" => true,
            "alloc" => false,
            _ => self.direct.contains(root) || !self.all.contains(root),
        }
    }
}

/// Why a later cell could not write `type_name` (rustc's), or `None` when it can.
fn unkept_kind(type_name: &str, crates: &Crates) -> Option<UnkeptKind> {
    if let Some(root) = path_roots(type_name).into_iter().find(|root| !crates.can_name(root)) {
        return Some(UnkeptKind::IndirectCrate(root.to_owned()));
    }
    if type_name.starts_with("{closure@") {
        return Some(UnkeptKind::Closure);
    }
    if type_name.starts_with("{async closure@") {
        return Some(UnkeptKind::AsyncClosure);
    }
    // An `async` block's or `async fn`'s future, alone or wrapped (`Box::pin`, a timeout, a
    // join): boxing the value into a `Pending` keeps it, if the value is a future; a collection
    // of futures is not (the engine's boxing then fails, and this refusal stands).
    if type_name.contains("{async block@") || type_name.contains("{async fn body of ") {
        return Some(UnkeptKind::Future);
    }
    let writable = writable_type(type_name);
    if writable != type_name && !writable.contains('{') && !writable.contains("impl ") {
        return Some(UnkeptKind::Writable(writable));
    }
    (type_name.contains('{') || type_name.contains("impl ") || type_name.contains('!')).then_some(UnkeptKind::Other)
}

/// `type_name` with what cannot be written but has a writable equivalent replaced: the never
/// type `!` by `()` (what rustc infers for a block that never ends when a type is written),
/// a function's own type (`fn(u32) -> u32 {double}`) by its pointer type.
fn writable_type(type_name: &str) -> String {
    let mut writable = String::with_capacity(type_name.len());
    let mut rest = type_name;
    while let Some(index) = rest.find(['!', '{']) {
        writable.push_str(&rest[..index]);
        let after = &rest[index..];
        if let Some(after_never) = after.strip_prefix('!') {
            writable.push_str("()");
            rest = after_never;
            continue;
        }
        // ` {double}` after a `fn(..) -> T`: a function item.
        let close = after.find('}').map_or(after.len(), |close| close + 1);
        let is_function_name = after[1..close.saturating_sub(1)].chars().all(|c| c.is_alphanumeric() || c == '_' || c == ':');
        if is_function_name && writable.contains("fn(") && writable.ends_with(' ') {
            writable.pop();
        } else {
            writable.push_str(&after[..close]);
        }
        rest = &after[close..];
    }
    writable.push_str(rest);
    writable
}

/// The first segment of every path in `type_name` (`std` and `tokio` in
/// `std::vec::Vec<tokio::task::JoinHandle<u8>>`).
fn path_roots(type_name: &str) -> Vec<&str> {
    let mut roots = Vec::new();
    let mut start = None;
    for (index, character) in type_name.char_indices() {
        let in_word = character.is_alphanumeric() || character == '_';
        match (in_word, start) {
            (true, None) => {
                let after_path_separator = type_name[..index].ends_with("::");
                if !after_path_separator {
                    start = Some(index);
                }
            }
            (false, Some(word_start)) => {
                if type_name[index..].starts_with("::") {
                    roots.push(&type_name[word_start..index]);
                }
                start = None;
            }
            _ => {}
        }
    }
    roots
}

/// Why a variable is not kept, for a later cell that names it.
pub(crate) fn why_not_kept(unkept: &Unkept) -> String {
    let Unkept { name, type_name, kind } = unkept;
    let (what, instead) = match kind {
        UnkeptKind::Closure => (
            "a closure".to_owned(),
            format!("box it with its signature (`let {name}: Box<dyn Fn(u32) -> u32> = Box::new(|x| x + 1);`), or write a `fn`"),
        ),
        UnkeptKind::AsyncClosure => ("an async closure".to_owned(), format!("write it as an `async fn {name}(..)`, which is kept")),
        UnkeptKind::IndirectCrate(root) => (
            format!("of the crate `{root}`, which the cells do not depend on"),
            format!("write its type on the `let` through a crate the cells use (`let {name}: Type = ...`)"),
        ),
        UnkeptKind::Future => (
            "a future bound in a pattern or held inside another value (a tuple, a collection)".to_owned(),
            "bind each future by its own `let` (each is kept), or `tokio::join!` them in the cell and keep the results".to_owned(),
        ),
        _ if type_name.contains("{closure}") => (
            "a value holding a closure (a lazy iterator or stream)".to_owned(),
            "collect what it gives (`.collect::<Vec<_>>()`), or box it (`Box<dyn Iterator<Item = ..>>`, \
             `Pin<Box<dyn Stream<Item = ..> + Send>>`)"
                .to_owned(),
        ),
        _ => ("of a type whose name no cell can write".to_owned(), "box it as a trait object, or use it in its own cell".to_owned()),
    };
    format!(
        "`{name}` was made by an earlier cell but not kept after it: its type, `{type_name}`, is {what}, \
         and a variable is kept for later cells only when its type can be written there. Use it in \
         the cell that makes it; or {instead}."
    )
}

/// What evcxr would say of an unkept variable (the engine adds its hints: `diagnostics`).
pub(crate) fn refusal_message(unkept: &Unkept) -> String {
    let Unkept { name, type_name, kind } = unkept;
    match kind {
        UnkeptKind::Closure => format!("The variable `{name}` is a closure, which cannot be persisted."),
        UnkeptKind::IndirectCrate(root) => format!(
            "Couldn't automatically determine type of variable `{name}`: its type `{type_name}` is from \
             the crate `{root}`, which the cells do not depend on."
        ),
        _ => format!("The variable `{name}` has type `{type_name}` which cannot be persisted."),
    }
}

/// A type as a student reads it in a message: rustc's names of closures and futures
/// (`{async fn body of make()}`, `{closure@src/lib.rs:3:9: 3:12}`) without the positions in
/// evcxr's generated source, which mean nothing to the student.
pub(crate) fn readable_type(type_name: &str) -> String {
    let mut readable = String::with_capacity(type_name.len());
    let mut rest = type_name;
    while let Some(start) = rest.find('{') {
        readable.push_str(&rest[..start]);
        let Some(length) = rest[start..].find('}') else { break };
        let inner = &rest[start + 1..start + length];
        let kind = inner.split('@').next().unwrap_or(inner).trim();
        readable.push('{');
        readable.push_str(kind);
        readable.push('}');
        rest = &rest[start + length + 1..];
    }
    readable.push_str(rest);
    readable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(type_name: &str) -> Option<UnkeptKind> {
        let crates = Crates {
            direct: ["serde_json".to_owned()].into(),
            all: ["serde_json", "hyper", "tokio", "bytes"].map(str::to_owned).into(),
        };
        unkept_kind(type_name, &crates)
    }

    #[test]
    fn types_later_cells_can_write_are_kept() {
        for type_name in [
            "std::vec::Vec<u64>",
            "(tokio::sync::mpsc::Sender<u8>, [u8; 4], &str)",
            "std::collections::HashMap<std::string::String, Point>",
            "m::Q",
            "serde_json::Value",
            "rust_async::Pending<u32>",
            "std::boxed::Box<dyn std::ops::Fn(u32) -> u32>",
            "fn(u32) -> u32",
        ] {
            assert_eq!(kind(type_name), None, "{type_name}");
        }
    }

    #[test]
    fn closures_futures_and_other_unwritable_types_are_not_kept() {
        assert_eq!(kind("{closure@src/lib.rs:16:13: 16:21}"), Some(UnkeptKind::Closure));
        assert_eq!(kind("{async closure@src/lib.rs:16:13: 16:21}"), Some(UnkeptKind::AsyncClosure));
        for future in [
            "{async fn body of make()}",
            "{async block@src/lib.rs:17:13: 17:18}",
            "std::pin::Pin<std::boxed::Box<{async fn body of make()}>>",
            "tokio::time::Timeout<{async fn body of make()}>",
        ] {
            assert_eq!(kind(future), Some(UnkeptKind::Future), "{future}");
        }
        assert_eq!(
            kind("tokio::task::JoinHandle<!>"),
            Some(UnkeptKind::Writable("tokio::task::JoinHandle<()>".into()))
        );
        assert_eq!(kind("fn(u32) -> u32 {double}"), Some(UnkeptKind::Writable("fn(u32) -> u32".into())));
        assert_eq!(kind("hyper::body::Incoming"), Some(UnkeptKind::IndirectCrate("hyper".into())));
        assert_eq!(kind("std::vec::Vec<bytes::Bytes>"), Some(UnkeptKind::IndirectCrate("bytes".into())));
        assert_eq!(
            kind("std::iter::Map<std::ops::Range<i32>, {closure@src/lib.rs:22:24: 22:27}>"),
            Some(UnkeptKind::Other)
        );
        assert_eq!(kind("rust_async::time::Timeout<{async fn body of make()}>"), Some(UnkeptKind::Future));
    }

    #[test]
    fn messages_leave_out_positions_in_the_generated_source() {
        assert_eq!(
            readable_type("std::iter::Map<std::ops::Range<i32>, {closure@src/lib.rs:22:24: 22:27}>"),
            "std::iter::Map<std::ops::Range<i32>, {closure}>"
        );
        assert_eq!(readable_type("{async fn body of make()}"), "{async fn body of make()}");
    }
}
