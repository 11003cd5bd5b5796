//! `let fut = do_something();` across cells. evcxr refuses to keep a variable whose type is an
//! `impl Future`; the engine then rewrites that one `let` to box the future into
//! `tokio::Pending<Output>` (a named type from the runtime library) and runs the cell again.
//! Nothing of the future runs before a later cell awaits it.
//!
//! `tokio::pin!(fut);` in a cell shadows `fut` with a `Pin<&mut impl Future>`, which evcxr cannot
//! keep either; when such a cell fails to compile, the engine retries it with each `pin!(x)`
//! replaced by `let mut x = tokio::Pending::new(x);` (pinned on the heap, usable the same way:
//! `(&mut x).await`, `x.as_mut()`).

use crate::is_complete::walk_code;

/// The future types evcxr refuses that are kept all the same, as (how the type starts, how it
/// ends, the future's output for the `T` of `impl Future<Output = T>` inside).
const KEPT_FUTURE_TYPES: [(&str, &str, &str); 3] = [
    ("impl Future<Output = ", ">", "{}"),
    // `Box::pin(make())`
    ("std::pin::Pin<Box<impl Future<Output = ", ">>>", "{}"),
    // `tokio::time::timeout(duration, make())`
    ("tokio::time::Timeout<impl Future<Output = ", ">>", "::std::result::Result<{}, ::tokio::time::error::Elapsed>"),
];

/// From evcxr's refusal, the variable and the future's output type.
pub(crate) fn unpersistable_future(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("The variable `")?;
    let (name, rest) = rest.split_once("` has type `")?;
    let (type_name, _) = rest.split_once("` which cannot be persisted")?;
    KEPT_FUTURE_TYPES.iter().find_map(|(start, end, output)| {
        let inner = type_name.strip_prefix(start)?.strip_suffix(end)?;
        Some((name.to_owned(), output.replace("{}", inner)))
    })
}

/// Rewrites `let [mut] NAME = EXPR;` in `code` to keep the future as `tokio::Pending<OUTPUT>`:
/// `let NAME: ::tokio::Pending<OUTPUT> = ::tokio::Pending::new(EXPR);`, on the same lines as
/// before (errors in the rest of the cell keep their line numbers).
pub(crate) fn box_future_binding(code: &str, name: &str, output: &str) -> Option<String> {
    let LetBinding { name_end, annotation: None, after_equals } = find_let(&code_only(code), name)? else {
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
        "{}: ::tokio::Pending<{output}>{}{leading}::tokio::Pending::new({value}{close}{trailing}{}",
        &code[..name_end],
        &code[name_end..after_equals],
        &code[end..]
    ))
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

/// Gives each variable that rust-analyzer typed with the never type `!` (a task that loops
/// forever or always panics: `JoinHandle<!>`) that type with `()` instead, written on its
/// `let`, as rustc itself would infer it: evcxr writes the type out for the variable store,
/// and `!` cannot be written there (E0658). `generated` is the source evcxr compiled.
/// `None` when no such variable has a plain `let NAME =` in the cell.
pub(crate) fn annotate_never_typed_lets(code: &str, generated: &str) -> Option<String> {
    let mut annotated = code.to_owned();
    let mut changed = false;
    for (name, type_name) in stored_variable_types(generated) {
        if !type_name.contains('!') {
            continue;
        }
        let Some(binding) = find_let(&code_only(&annotated), name) else { continue };
        let with_unit = type_name.replace('!', "()");
        match binding.annotation {
            // `let all: Vec<_> = ...`: the type written, with what was left to inference filled in.
            Some((start, end)) => annotated.replace_range(start..end, &with_unit),
            None => annotated.insert_str(binding.name_end, &format!(": {with_unit}")),
        }
        changed = true;
    }
    changed.then_some(annotated)
}

/// Writes on a `let` the type rustc found for its variable, where rust-analyzer's guess (which
/// evcxr writes out to store the variable) was wrong: `let got = tokio::select! { v = f() => v,
/// _ = sleep(..) => 0 };` is a `u32` when `f` gives one, but rust-analyzer, not seeing through
/// the macro, takes the `0` for an `i32`. `rendered` are rustc's rendered errors (E0308 at
/// evcxr's `put_variable::<GUESS>(stringify!(NAME), NAME)`, "expected `GUESS`, found `TYPE`").
/// `None` when no such error names a plain `let NAME =` of the cell, or a type that can be
/// written (`{integer}`, closures, `impl` types cannot).
pub(crate) fn annotate_mistyped_lets(code: &str, rendered: &[String]) -> Option<String> {
    let mut annotated = code.to_owned();
    let mut changed = false;
    for error in rendered {
        // The error quotes evcxr's store line (its help may quote it again, altered).
        let Some(&(name, _)) = stored_variable_types(error).first() else { continue };
        let Some((_, found)) = error.split_once(", found `") else { continue };
        let Some((found, _)) = found.split_once("`\n").or_else(|| found.split_once('`')) else { continue };
        if found.is_empty() || found.contains(['{', '@']) || found.contains("impl ") {
            continue;
        }
        let Some(binding) = find_let(&code_only(&annotated), name) else { continue };
        match binding.annotation {
            Some(_) => continue, // the student wrote the type: rustc's error stands
            None => annotated.insert_str(binding.name_end, &format!(": {found}")),
        }
        changed = true;
    }
    changed.then_some(annotated)
}

/// (name, type) of each variable evcxr's generated code stores after the cell
/// (`put_variable::<TYPE>(stringify!(NAME), NAME)`).
fn stored_variable_types(generated: &str) -> Vec<(&str, &str)> {
    const STORE: &str = "put_variable::<";
    const NAME: &str = ">(stringify!(";
    generated
        .match_indices(STORE)
        .filter_map(|(index, _)| {
            let rest = &generated[index + STORE.len()..];
            let line = rest.lines().next()?;
            let (type_name, after) = line.split_once(NAME)?;
            let (name, _) = after.split_once(')')?;
            Some((name, type_name))
        })
        .collect()
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
    fn a_let_whose_type_rust_analyzer_guessed_wrong_gets_the_type_rustc_found() {
        let rendered = "error[E0308]: mismatched types\n   --> src/lib.rs:121:59\n    |\n\
            121 | evcxr_variable_store.put_variable::<i32>(stringify!(sel), sel);\n    |   \
            ---------   ^^^ expected `i32`, found `u32`\n";
        let code = "let sel = tokio::select! { x = a() => x, _ = sleep(d) => 0 };";
        assert_eq!(
            annotate_mistyped_lets(code, &[rendered.to_owned()]).unwrap(),
            "let sel: u32 = tokio::select! { x = a() => x, _ = sleep(d) => 0 };"
        );
        let generic = rendered.replace("found `u32`", "found `Option<Vec<u8>>`");
        assert_eq!(
            annotate_mistyped_lets("let mut sel = f();", &[generic]).unwrap(),
            "let mut sel: Option<Vec<u8>> = f();"
        );
        // Not a type that can be written, a type the student wrote, another error.
        let integer = rendered.replace("found `u32`", "found `{integer}`");
        assert!(annotate_mistyped_lets(code, &[integer]).is_none());
        assert!(annotate_mistyped_lets("let sel: i32 = f();", &[rendered.to_owned()]).is_none());
        assert!(annotate_mistyped_lets(code, &["error[E0308]: expected `i32`, found `u32`".to_owned()]).is_none());
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
    fn reads_evcxr_refusal() {
        let message = "The variable `result` has type `impl Future<Output = &'static str>` which cannot be persisted.\nYou might";
        assert_eq!(
            unpersistable_future(message),
            Some(("result".into(), "&'static str".into()))
        );
        let boxed = "The variable `b` has type `std::pin::Pin<Box<impl Future<Output = u64>>>` which cannot be persisted.";
        assert_eq!(unpersistable_future(boxed), Some(("b".into(), "u64".into())));
        let timeout = "The variable `t` has type `tokio::time::Timeout<impl Future<Output = Vec<u8>>>` which cannot be persisted.";
        assert_eq!(
            unpersistable_future(timeout),
            Some(("t".into(), "::std::result::Result<Vec<u8>, ::tokio::time::error::Elapsed>".into()))
        );
        let in_tuple = "The variable `p` has type `(impl Future<Output = u64>, impl Future<Output = u64>)` which cannot be persisted.";
        assert_eq!(unpersistable_future(in_tuple), None);
    }

    #[test]
    fn boxes_only_the_future_binding() {
        let code = "let x = 1;\nlet result = do_something(\"a;b\", (1, 2));\nprintln!(\"{x}\");";
        let rewritten = box_future_binding(code, "result", "u8").unwrap();
        assert_eq!(
            rewritten,
            "let x = 1;\nlet result: ::tokio::Pending<u8> = ::tokio::Pending::new(do_something(\"a;b\", (1, 2)));\nprintln!(\"{x}\");"
        );
        assert!(box_future_binding("let results = f();", "result", "u8").is_none());
        assert_eq!(
            box_future_binding("// let result = old();\nlet result = new();", "result", "u8").unwrap(),
            "// let result = old();\nlet result: ::tokio::Pending<u8> = ::tokio::Pending::new(new());"
        );
    }

    #[test]
    fn the_binding_boxed_is_the_last_one_at_the_top_level() {
        assert_eq!(
            box_future_binding("let n = 5;\nlet n = async move { n * 2 };", "n", "i32").unwrap(),
            "let n = 5;\nlet n: ::tokio::Pending<i32> = ::tokio::Pending::new(async move { n * 2 });"
        );
        assert_eq!(
            box_future_binding(
                "async fn helper() -> u8 { let fut = async { 1u8 }; fut.await }\nlet fut = async { 2u8 };",
                "fut",
                "u8"
            )
            .unwrap(),
            "async fn helper() -> u8 { let fut = async { 1u8 }; fut.await }\n\
             let fut: ::tokio::Pending<u8> = ::tokio::Pending::new(async { 2u8 });"
        );
        assert_eq!(
            box_future_binding("let\tmut\nfut = f();", "fut", "u8").unwrap(),
            "let\tmut\nfut: ::tokio::Pending<u8> = ::tokio::Pending::new(f());"
        );
    }

    #[test]
    fn a_variable_typed_never_gets_the_unit_type_written_on_its_let() {
        let generated = "evcxr_variable_store.put_variable::<tokio::task::JoinHandle<!>>(stringify!(worker), worker);\n\
                         evcxr_variable_store.put_variable::<Vec<tokio::task::JoinHandle<!>>>(stringify!(all), all);\n\
                         evcxr_variable_store.put_variable::<u32>(stringify!(n), n);";
        let code = "let n = 1;\nlet worker = tokio::spawn(async { loop {} });\nlet all: Vec<_> = vec![];";
        assert_eq!(
            annotate_never_typed_lets(code, generated).unwrap(),
            "let n = 1;\nlet worker: tokio::task::JoinHandle<()> = tokio::spawn(async { loop {} });\n\
             let all: Vec<tokio::task::JoinHandle<()>> = vec![];"
        );
        assert!(annotate_never_typed_lets("let n = 1;", "put_variable::<u32>(stringify!(n), n);").is_none());
    }

    #[test]
    fn a_let_with_a_type_is_found_but_not_boxed() {
        let code = "let f: Box<dyn Fn(u8) -> u8> = Box::new(|x| x);\nlet it: impl Iterator<Item = u8> = x;";
        let blanked = code_only(code);
        let f = find_let(&blanked, "f").unwrap();
        let (start, end) = f.annotation.unwrap();
        assert_eq!(&code[start..end], "Box<dyn Fn(u8) -> u8>");
        assert_eq!(code[f.after_equals..].trim_start().chars().next(), Some('B'));
        let it = find_let(&blanked, "it").unwrap();
        let (start, end) = it.annotation.unwrap();
        assert_eq!(&code[start..end], "impl Iterator<Item = u8>");
        assert!(box_future_binding("let fut: Foo = f();", "fut", "u8").is_none());
    }

    #[test]
    fn the_rewrite_keeps_the_lines_of_the_cell() {
        assert_eq!(
            box_future_binding("let fut =\n    make();\nfut.len()", "fut", "u8").unwrap(),
            "let fut: ::tokio::Pending<u8> =\n    ::tokio::Pending::new(make());\nfut.len()"
        );
        assert_eq!(
            box_future_binding("let fut = make() // later\n;\nx", "fut", "u8").unwrap(),
            "let fut: ::tokio::Pending<u8> = ::tokio::Pending::new(make() // later\n);\nx"
        );
    }

    #[test]
    fn the_statement_ends_at_a_semicolon_in_code_only() {
        let code = "let result = f(';', /* ; */ 'x') // ;\n    .map(|c| c);\nlet y = 2;";
        let rewritten = box_future_binding(code, "result", "u8").unwrap();
        assert_eq!(
            rewritten,
            "let result: ::tokio::Pending<u8> = ::tokio::Pending::new(f(';', /* ; */ 'x') // ;\n    .map(|c| c));\nlet y = 2;"
        );
    }
}
