//! Statics that last across cells, as a Python module's globals do.
//!
//! evcxr compiles each cell into a library of its own, with every earlier item written into it
//! again, so each cell has its own copy of every `static`: a counter bumped by a function from
//! an earlier cell, or read in the next cell, starts from its initial value again. The engine
//! gives each `static` a cell defines a symbol name of its own (`#[unsafe(export_name = ..)]`,
//! on the line of its definition, so lines keep their numbers), and the user process loads
//! every cell's library with `RTLD_GLOBAL` (`user_process`): the dynamic linker then binds the
//! copies in later cells' libraries to the first one loaded. The symbol name carries a number
//! that rises with every definition, so running the defining cell again (or changing the
//! static) starts it anew, as re-running `HITS = 0` does in Python; the cell says so.
//!
//! Not covered: `thread_local!` and statics made by macros (`lazy_static!`), whose definitions
//! are inside macro calls, and statics inside crates added with `:dep`.

use crate::early_return::is_word_char;

/// A `static` with an initialiser, as a cell defines it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StaticDefinition {
    /// Where its attribute goes: before its visibility (`pub`) or the `static` keyword.
    pub insert_at: usize,
    pub name: String,
}

/// The `static NAME: TYPE = ...;` definitions of `code` (also those inside functions and
/// modules), not those inside macro calls (`thread_local!`), foreign statics without a value,
/// or the `'static` lifetime. `tokens` are the code's (`early_return::tokens`).
pub(crate) fn static_definitions(code: &str, tokens: &[(usize, &str)]) -> Vec<StaticDefinition> {
    let mut found = Vec::new();
    // For each open bracket: whether it is a macro call's (`name!(`, `name! {`).
    let mut open: Vec<bool> = Vec::new();
    for (index, &(offset, token)) in tokens.iter().enumerate() {
        let previous = |back: usize| index.checked_sub(back).map(|at| tokens[at].1);
        match token {
            "{" | "(" | "[" => {
                let macro_call = previous(1) == Some("!") && previous(2).is_some_and(|name| name.starts_with(is_word_char));
                open.push(macro_call);
                continue;
            }
            "}" | ")" | "]" => {
                open.pop();
                continue;
            }
            "static" => {}
            _ => continue,
        }
        let is_lifetime = code[..offset].ends_with('\'');
        if is_lifetime || open.contains(&true) {
            continue;
        }
        let mut next = index + 1;
        if tokens.get(next).is_some_and(|&(_, token)| token == "mut") {
            next += 1;
        }
        let Some(&(_, name)) = tokens.get(next) else { continue };
        let is_name = name.starts_with(is_word_char) && name != "ref";
        if !is_name || tokens.get(next + 1).map(|&(_, token)| token) != Some(":") {
            continue;
        }
        // A value follows before the end of the statement: not a foreign `static X: T;`.
        let depth = open.len();
        let mut nested = 0usize;
        let mut has_value = false;
        for &(_, token) in &tokens[next + 2..] {
            match token {
                "{" | "(" | "[" => nested += 1,
                "}" | ")" | "]" if nested == 0 => break,
                "}" | ")" | "]" => nested -= 1,
                ";" if nested == 0 => break,
                "=" if nested == 0 => {
                    has_value = true;
                    break;
                }
                _ => {}
            }
        }
        if !has_value || open.len() != depth {
            continue;
        }
        found.push(StaticDefinition { insert_at: visibility_start(tokens, index).unwrap_or(offset), name: name.to_owned() });
    }
    found
}

/// Where `pub`, `pub(crate)` or `pub(in path)` before the token at `index` starts.
fn visibility_start(tokens: &[(usize, &str)], index: usize) -> Option<usize> {
    let before = index.checked_sub(1)?;
    match tokens[before].1 {
        "pub" => Some(tokens[before].0),
        ")" => {
            let open = (0..before).rev().find(|&at| tokens[at].1 == "(")?;
            let pub_at = open.checked_sub(1)?;
            (tokens[pub_at].1 == "pub").then_some(tokens[pub_at].0)
        }
        _ => None,
    }
}

/// The kernel's numbering of static definitions (one per engine: a new user process keeps
/// counting, so no two definitions ever share a symbol).
#[derive(Default)]
pub(crate) struct Statics {
    defined: usize,
    /// Each name defined so far, for the note that a definition starts it anew.
    names: std::collections::HashSet<String>,
}

impl Statics {
    /// `code` with a symbol name of its own on each of `definitions`, the statics it defines
    /// (found by [`static_definitions`], at the same offsets), and the names of those it
    /// defines again (each then starts anew).
    pub(crate) fn name_symbols(&mut self, code: &str, definitions: &[StaticDefinition]) -> (String, Vec<String>) {
        let mut named = code.to_owned();
        let mut again = Vec::new();
        let first = self.defined + 1;
        self.defined += definitions.len();
        // From the end, so that earlier offsets stay right.
        for (number, definition) in (first..).zip(definitions).collect::<Vec<_>>().into_iter().rev() {
            let attribute = format!("#[unsafe(export_name = \"rust_async_static_{number}_{}\")] ", definition.name);
            named.insert_str(definition.insert_at, &attribute);
        }
        for definition in definitions {
            if !self.names.insert(definition.name.clone()) {
                again.push(definition.name.clone());
            }
        }
        (named, again)
    }

    /// Forgets the names, after `:clear` (nothing is defined any more).
    pub(crate) fn forget_names(&mut self) {
        self.names.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::early_return::tokens;

    fn names(code: &str) -> Vec<String> {
        static_definitions(code, &tokens(code)).into_iter().map(|definition| definition.name).collect()
    }

    #[test]
    fn statics_with_values_are_found_wherever_they_are_defined() {
        let code = "use std::sync::atomic::{AtomicU32, Ordering};\n\
                    static HITS: AtomicU32 = AtomicU32::new(0);\n\
                    pub static mut TOTAL: u64 = 0;\n\
                    pub(crate) static NAMES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());\n\
                    fn bump() -> u32 { static CALLS: AtomicU32 = AtomicU32::new(0); CALLS.fetch_add(1, Ordering::SeqCst) }\n\
                    mod inner { pub static LIMIT: [u8; 2] = [1, 2]; }";
        assert_eq!(names(code), ["HITS", "TOTAL", "NAMES", "CALLS", "LIMIT"]);
    }

    #[test]
    fn lifetimes_macros_and_foreign_statics_are_left_alone() {
        assert!(names("let s: &'static str = \"static X: u8 = 1;\"; // static Y: u8 = 2;").is_empty());
        assert!(names("fn f(x: &'static str) -> &'static str { x }").is_empty());
        assert!(names("thread_local! { static CELL: std::cell::Cell<u8> = std::cell::Cell::new(0); }").is_empty());
        assert!(names("lazy_static::lazy_static! { static ref MAP: Vec<u8> = vec![]; }").is_empty());
        assert!(names("unsafe extern \"C\" { static environ: *const *const u8; }").is_empty());
        assert!(names("let f = static || 1;").is_empty());
    }

    #[test]
    fn each_definition_gets_a_symbol_of_its_own_on_its_own_line() {
        let mut statics = Statics::default();
        let code = "static A: u8 = 1;\n// note\npub static mut B: u8 = 2;";
        let name_symbols = |statics: &mut Statics, code: &str| statics.name_symbols(code, &static_definitions(code, &tokens(code)));
        let (named, again) = name_symbols(&mut statics, code);
        assert_eq!(
            named,
            "#[unsafe(export_name = \"rust_async_static_1_A\")] static A: u8 = 1;\n// note\n\
             #[unsafe(export_name = \"rust_async_static_2_B\")] pub static mut B: u8 = 2;"
        );
        assert!(again.is_empty());
        let (named, again) = name_symbols(&mut statics, "static A: u8 = 5;");
        assert_eq!(named, "#[unsafe(export_name = \"rust_async_static_3_A\")] static A: u8 = 5;");
        assert_eq!(again, ["A"]);
        assert_eq!(name_symbols(&mut statics, "let x = 1;"), ("let x = 1;".to_owned(), vec![]));
    }
}
