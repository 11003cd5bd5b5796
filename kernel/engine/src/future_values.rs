//! `let fut = do_something();` across cells. A future's type has no name that a later cell
//! could write (`variable_types` refuses it); the engine then rewrites that one `let` to box
//! the future into `tokio::Pending<Output>` (a named type from the runtime library) and runs
//! the cell again. Nothing of the future runs before a later cell awaits it.
//!
//! `tokio::pin!(fut);` in a cell shadows `fut` with a `Pin<&mut impl Future>`, which evcxr cannot
//! keep either; when such a cell fails to compile, the engine retries it with each `pin!(x)`
//! replaced by `let mut x = tokio::Pending::new(x);` (pinned on the heap, usable the same way:
//! `(&mut x).await`, `x.as_mut()`).
//!
//! A variable whose type can be written only in another form (`!` as `()`, a function as a
//! function pointer) gets that type written on its `let` ([`annotate_let`]).

use crate::is_complete::walk_code;

/// Rewrites `let [mut] NAME = EXPR;` in `code` to keep the future as a `tokio::Pending`:
/// `let NAME = ::tokio::Pending::new(EXPR);`, on the same lines as before (errors in the rest
/// of the cell keep their line numbers). rustc then gives it the type `Pending<Output>`.
pub(crate) fn box_future_binding(code: &str, name: &str) -> Option<String> {
    let LetBinding { annotation: None, after_equals, .. } = find_let(&code_only(code), name)? else {
        return None;
    };
    let end = statement_end(code, after_equals)?;
    let expression = &code[after_equals..end];
    let value = expression.trim();
    if value.is_empty() {
        return None;
    }
    let leading = &expression[..expression.len() - expression.trim_start().len()];
    let mut trailing = &expression[expression.trim_end().len()..];
    let mut close = ")";
    // `let fut = make() // comment` with the `;` below: the `)` must not go into the comment.
    if value.lines().last().is_some_and(|line| line.contains("//")) {
        if let Some(rest) = trailing.strip_prefix('\n') {
            (close, trailing) = ("\n)", rest);
        }
    }
    Some(format!(
        "{}{leading}::tokio::Pending::new({value}{close}{trailing}{}",
        &code[..after_equals],
        &code[end..]
    ))
}

/// Writes `type_name` on the last top-level `let [mut] NAME =` of `code` (or in place of the
/// type written there, which left part of it to inference: `Vec<_>`). `None` when there is
/// no such `let`.
pub(crate) fn annotate_let(code: &str, name: &str, type_name: &str) -> Option<String> {
    let binding = find_let(&code_only(code), name)?;
    let mut annotated = code.to_owned();
    match binding.annotation {
        Some((start, end)) => annotated.replace_range(start..end, type_name),
        None => annotated.insert_str(binding.name_end, &format!(": {type_name}")),
    }
    Some(annotated)
}

/// The name of the top-level `let [mut] NAME [: TYPE] =` whose value starts at the 1-based
/// `line` and `column` (in characters) of `code`: what an error about that value is about.
pub(crate) fn let_with_value_at(code: &str, line: usize, column: usize) -> Option<String> {
    let blanked = code_only(code);
    let line_start = code.split_inclusive('\n').take(line - 1).map(str::len).sum::<usize>();
    let value_start = line_start + code[line_start..].chars().take(column - 1).map(char::len_utf8).sum::<usize>();
    let mut depth = 0i32;
    let mut found = None;
    for (start, character) in blanked.char_indices() {
        match character {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            'l' if depth == 0 && blanked[start..].starts_with("let") => {
                let rest = blanked[start + 3..].trim_start();
                let rest = rest.strip_prefix("mut ").map_or(rest, str::trim_start);
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let Some(binding) = (!name.is_empty()).then(|| let_binding_at(&blanked, start, &name)).flatten() else {
                    continue;
                };
                let value = binding.after_equals + (blanked.len() - binding.after_equals - blanked[binding.after_equals..].trim_start().len());
                if value == value_start {
                    found = Some(name);
                }
            }
            _ => {}
        }
    }
    found
}

/// `code` with its strings, character literals and comments blanked out (spaces), each byte
/// where it was: offsets found in it are offsets in `code`.
fn code_only(code: &str) -> String {
    let mut blanked = vec![b' '; code.len()];
    walk_code(code, |offset, character| {
        character.encode_utf8(&mut blanked[offset..]);
        true
    });
    String::from_utf8(blanked).unwrap_or_else(|_| code.to_owned())
}

/// Where a `let` is: the end of its name, its type annotation if it has one (the range of
/// the type), and the index after its `=`.
#[derive(Debug, Clone, Copy)]
struct LetBinding {
    name_end: usize,
    annotation: Option<(usize, usize)>,
    after_equals: usize,
}

/// Finds the last `let [mut] NAME [: TYPE] =` at the cell's top level, which is the binding
/// evcxr keeps when a name is bound twice; one inside a block or a function is not a
/// variable of the cell. `code` is blanked ([`code_only`]).
fn find_let(code: &str, name: &str) -> Option<LetBinding> {
    let mut depth = 0i32;
    let mut found = None;
    for (start, character) in code.char_indices() {
        match character {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            'l' if depth == 0 => found = let_binding_at(code, start, name).or(found),
            _ => {}
        }
    }
    found
}

/// `let [mut] NAME [: TYPE] =` starting at `start`.
fn let_binding_at(code: &str, start: usize, name: &str) -> Option<LetBinding> {
    let is_identifier = |character: char| character.is_alphanumeric() || character == '_';
    if code[..start].chars().next_back().is_some_and(is_identifier) {
        return None;
    }
    let after_let = code[start..].strip_prefix("let")?;
    if !after_let.starts_with(char::is_whitespace) {
        return None;
    }
    let mut rest = after_let.trim_start();
    if let Some(after_mut) = rest.strip_prefix("mut").filter(|after| after.starts_with(char::is_whitespace)) {
        rest = after_mut.trim_start();
    }
    let after_name = rest.strip_prefix(name).filter(|after| !after.starts_with(is_identifier))?;
    let name_end = code.len() - after_name.len();
    let mut annotation = None;
    let mut at_equals = after_name.trim_start();
    if let Some(type_text) = at_equals.strip_prefix(':').filter(|after| !after.starts_with(':')) {
        let type_start = code.len() - type_text.len();
        let type_end = type_start + type_length(type_text)?;
        let between = &code[type_start..type_end];
        let written_start = type_start + (between.len() - between.trim_start().len());
        annotation = Some((written_start, type_start + between.trim_end().len()));
        at_equals = &code[type_end..];
    }
    (at_equals.starts_with('=') && !at_equals.starts_with("=="))
        .then(|| LetBinding { name_end, annotation, after_equals: code.len() - at_equals.len() + 1 })
}

/// The length of a type annotation: up to the `=` outside its brackets (`Item = u32` in
/// `impl Iterator<Item = u32>` is inside them; the `>` of `->` closes nothing).
fn type_length(type_text: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut previous = ' ';
    for (index, character) in type_text.char_indices() {
        match character {
            '<' | '(' | '[' => depth += 1,
            '>' if previous != '-' => depth -= 1,
            ')' | ']' => depth -= 1,
            '=' | ';' if depth == 0 => return (character == '=').then_some(index),
            _ => {}
        }
        previous = character;
    }
    None
}

/// The index of the `;` ending the statement that starts at `from` (brackets, strings,
/// character literals and comments skipped).
fn statement_end(code: &str, from: usize) -> Option<usize> {
    let mut depth = 0i32;
    let mut end = None;
    walk_code(&code[from..], |offset, character| {
        match character {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ';' if depth == 0 => end = Some(from + offset),
            _ => {}
        }
        end.is_none()
    });
    end
}

/// Replaces `tokio::pin!(a, b);` (also `pin!` and `std::pin::pin!` as a statement) by
/// heap-pinning `let`s. `None` when the code has no such statement.
pub(crate) fn heap_pin_statements(code: &str) -> Option<String> {
    let blanked = code_only(code);
    let mut output = String::new();
    let mut rest = code;
    let mut changed = false;
    while let Some(index) = blanked[code.len() - rest.len()..].find("pin!(") {
        let mut prefix_start = index;
        for path in ["tokio::", "std::pin::", "::tokio::", "core::pin::"] {
            if rest[..index].ends_with(path) {
                prefix_start = index - path.len();
                break;
            }
        }
        let after = &rest[index + "pin!(".len()..];
        let preceded_by_identifier = rest[..prefix_start]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        let close = after.find(')');
        let names: Option<Vec<&str>> = close.and_then(|close| {
            let names: Vec<&str> = after[..close].split(',').map(str::trim).collect();
            names
                .iter()
                .all(|name| !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_'))
                .then_some(names)
        });
        match (names, close) {
            (Some(names), Some(close)) if !preceded_by_identifier => {
                output.push_str(&rest[..prefix_start]);
                let lets: Vec<String> = names
                    .iter()
                    .map(|name| format!("let mut {name} = ::tokio::Pending::new({name})"))
                    .collect();
                output.push_str(&lets.join("; "));
                rest = &after[close + 1..];
                changed = true;
            }
            _ => {
                output.push_str(&rest[..index + "pin!(".len()]);
                rest = after;
            }
        }
    }
    output.push_str(rest);
    changed.then_some(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_let_gets_the_type_written_on_it() {
        assert_eq!(
            annotate_let("let n = 1;\nlet worker = tokio::spawn(async { loop {} });", "worker", "tokio::task::JoinHandle<()>").unwrap(),
            "let n = 1;\nlet worker: tokio::task::JoinHandle<()> = tokio::spawn(async { loop {} });"
        );
        // What the student left to inference is filled in.
        assert_eq!(
            annotate_let("let all: Vec<_> = vec![w];", "all", "std::vec::Vec<fn() -> u8>").unwrap(),
            "let all: std::vec::Vec<fn() -> u8> = vec![w];"
        );
        assert_eq!(annotate_let("let mut f = double;", "f", "fn(u32) -> u32").unwrap(), "let mut f: fn(u32) -> u32 = double;");
        assert!(annotate_let("let n = 1;", "m", "u8").is_none());
    }

    #[test]
    fn the_let_whose_value_an_error_points_at_is_found() {
        let code = "let x = 5;\nlet borrowing =\n    async { x + 1 };\ntokio::spawn(async { x });";
        assert_eq!(let_with_value_at(code, 3, 5).as_deref(), Some("borrowing"));
        assert_eq!(let_with_value_at(code, 1, 9).as_deref(), Some("x"));
        assert_eq!(let_with_value_at(code, 4, 14), None);
        assert_eq!(let_with_value_at("let mut n: u8 = f();", 1, 17).as_deref(), Some("n"));
    }

    #[test]
    fn pin_statements_become_heap_pinned_lets() {
        assert_eq!(
            heap_pin_statements("let fut = f(); tokio::pin!(fut); (&mut fut).await").unwrap(),
            "let fut = f(); let mut fut = ::tokio::Pending::new(fut); (&mut fut).await"
        );
        assert_eq!(
            heap_pin_statements("pin!(a, b);").unwrap(),
            "let mut a = ::tokio::Pending::new(a); let mut b = ::tokio::Pending::new(b);"
        );
        assert!(heap_pin_statements("let x = 1;").is_none());
        assert!(heap_pin_statements("let p = std::pin::pin!(async {});").is_none());
        assert!(heap_pin_statements("println!(\"pin!(fut);\"); // pin!(fut);").is_none());
    }

    #[test]
    fn boxes_only_the_future_binding() {
        let code = "let x = 1;\nlet result = do_something(\"a;b\", (1, 2));\nprintln!(\"{x}\");";
        assert_eq!(
            box_future_binding(code, "result").unwrap(),
            "let x = 1;\nlet result = ::tokio::Pending::new(do_something(\"a;b\", (1, 2)));\nprintln!(\"{x}\");"
        );
        assert!(box_future_binding("let results = f();", "result").is_none());
        assert_eq!(
            box_future_binding("// let result = old();\nlet result = new();", "result").unwrap(),
            "// let result = old();\nlet result = ::tokio::Pending::new(new());"
        );
        assert!(box_future_binding("let fut: Foo = f();", "fut").is_none());
    }

    #[test]
    fn the_binding_boxed_is_the_last_one_at_the_top_level() {
        assert_eq!(
            box_future_binding("let n = 5;\nlet n = async move { n * 2 };", "n").unwrap(),
            "let n = 5;\nlet n = ::tokio::Pending::new(async move { n * 2 });"
        );
        assert_eq!(
            box_future_binding(
                "async fn helper() -> u8 { let fut = async { 1u8 }; fut.await }\nlet fut = async { 2u8 };",
                "fut"
            )
            .unwrap(),
            "async fn helper() -> u8 { let fut = async { 1u8 }; fut.await }\n\
             let fut = ::tokio::Pending::new(async { 2u8 });"
        );
        assert_eq!(
            box_future_binding("let\tmut\nfut = f();", "fut").unwrap(),
            "let\tmut\nfut = ::tokio::Pending::new(f());"
        );
    }

    #[test]
    fn a_let_with_a_type_is_found() {
        let code = "let f: Box<dyn Fn(u8) -> u8> = Box::new(|x| x);\nlet it: impl Iterator<Item = u8> = x;";
        let blanked = code_only(code);
        let f = find_let(&blanked, "f").unwrap();
        let (start, end) = f.annotation.unwrap();
        assert_eq!(&code[start..end], "Box<dyn Fn(u8) -> u8>");
        assert_eq!(code[f.after_equals..].trim_start().chars().next(), Some('B'));
        let it = find_let(&blanked, "it").unwrap();
        let (start, end) = it.annotation.unwrap();
        assert_eq!(&code[start..end], "impl Iterator<Item = u8>");
    }

    #[test]
    fn the_rewrite_keeps_the_lines_of_the_cell() {
        assert_eq!(
            box_future_binding("let fut =\n    make();\nfut.len()", "fut").unwrap(),
            "let fut =\n    ::tokio::Pending::new(make());\nfut.len()"
        );
        assert_eq!(
            box_future_binding("let fut = make() // later\n;\nx", "fut").unwrap(),
            "let fut = ::tokio::Pending::new(make() // later\n);\nx"
        );
    }

    #[test]
    fn the_statement_ends_at_a_semicolon_in_code_only() {
        let code = "let result = f(';', /* ; */ 'x') // ;\n    .map(|c| c);\nlet y = 2;";
        assert_eq!(
            box_future_binding(code, "result").unwrap(),
            "let result = ::tokio::Pending::new(f(';', /* ; */ 'x') // ;\n    .map(|c| c));\nlet y = 2;"
        );
    }
}
