//! Where things are in a cell: evcxr compiles a cell inside generated code (its items and
//! statements copied into a wrapper), and the engine sometimes rewrites a cell before that
//! (keeping its lines). Positions rustc and the runtime library report are found back on the
//! lines and columns the student wrote, and names that point into the generated code are
//! cleaned of it.

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

/// The column in `written` of what is at `column` (1-based, in characters) of `compiled`,
/// which is `written` with text inserted: the two are matched character by character.
pub(crate) fn written_column(compiled: &str, written: &str, column: usize) -> usize {
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

/// `Pending<T>`, the type a kept future is boxed into, as the future it holds.
pub(crate) fn as_written(text: &str) -> String {
    ["rust_async::Pending<", "::tokio::Pending<", "tokio::Pending<"]
        .iter()
        .fold(text.to_owned(), |text, pending| text.replace(pending, "impl Future<Output = "))
}

/// rustc names an async block or a closure by where it is in evcxr's generated source
/// (`{async block@src/lib.rs:108:22: 108:32}`), which means nothing in the cell: the name
/// is kept, the position dropped (`{async block}`).
pub(crate) fn without_generated_paths(text: &str) -> String {
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

/// The (line, column) of the cell's one `?` operator, if it has exactly one (`?Sized` is not
/// an operator; strings, characters and comments are skipped).
pub(crate) fn only_question_mark(code: &str) -> Option<(usize, usize)> {
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
pub(crate) fn line_and_column(code: &str, offset: usize) -> (usize, usize) {
    let before = &code[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}


/// Lines `first..=last` of `code` (1-based), with their numbers; those it lacks are left out.
pub(crate) fn cell_lines(code: &str, first: usize, last: usize) -> Vec<(usize, String)> {
    (first..=last)
        .filter_map(|number| Some((number, code.lines().nth(number.checked_sub(1)?)?.to_owned())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_location_maps_back_to_the_cell_line() {
        let code = "let a = 1;\nlet b: Option<u8> = None;\nb.unwrap();";
        let generated = "fn x() {\n    let a = 1;\n    let b: Option<u8> = None;\n    b.unwrap();\n}";
        assert_eq!(cell_position(code, generated, 4, 7), Some((3, 3)));
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
    fn lines_of_the_cell_come_with_their_numbers() {
        assert_eq!(cell_lines("a\nb\nc", 2, 4), vec![(2, "b".to_owned()), (3, "c".to_owned())]);
        assert!(cell_lines("a", 0, 0).is_empty());
    }
}
