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

/// From evcxr's refusal, the variable and the future's output type.
pub(crate) fn unpersistable_future(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("The variable `")?;
    let (name, rest) = rest.split_once("` has type `impl Future<Output = ")?;
    let (output, _) = rest.split_once(">` which cannot be persisted")?;
    Some((name.to_owned(), output.to_owned()))
}

/// Rewrites `let [mut] NAME = EXPR;` in `code` to keep the future as `tokio::Pending<OUTPUT>`.
pub(crate) fn box_future_binding(code: &str, name: &str, output: &str) -> Option<String> {
    let (start, after_equals, mutable) = find_let(&code_only(code), name)?;
    let end = statement_end(code, after_equals)?;
    let expression = code[after_equals..end].trim();
    let binding = if mutable { format!("mut {name}") } else { name.to_owned() };
    Some(format!(
        "{}let {binding}: ::tokio::Pending<{output}> = ::tokio::Pending::new({expression}){}",
        &code[..start],
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

/// Finds `let [mut] NAME =` (no type annotation); returns (start, index after `=`, mut?).
fn find_let(code: &str, name: &str) -> Option<(usize, usize, bool)> {
    let mut search_from = 0;
    while let Some(offset) = code[search_from..].find("let ") {
        let start = search_from + offset;
        search_from = start + 4;
        if start > 0 && code[..start].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut rest = code[start + 4..].trim_start();
        let mutable = rest.starts_with("mut ");
        if mutable {
            rest = rest[4..].trim_start();
        }
        let Some(after_name) = rest.strip_prefix(name) else { continue };
        if after_name.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let after_name_trimmed = after_name.trim_start();
        if after_name_trimmed.starts_with('=') && !after_name_trimmed.starts_with("==") {
            let equals = code.len() - after_name_trimmed.len();
            return Some((start, equals + 1, mutable));
        }
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
    fn the_statement_ends_at_a_semicolon_in_code_only() {
        let code = "let result = f(';', /* ; */ 'x') // ;\n    .map(|c| c);\nlet y = 2;";
        let rewritten = box_future_binding(code, "result", "u8").unwrap();
        assert_eq!(
            rewritten,
            "let result: ::tokio::Pending<u8> = ::tokio::Pending::new(f(';', /* ; */ 'x') // ;\n    .map(|c| c));\nlet y = 2;"
        );
    }
}
