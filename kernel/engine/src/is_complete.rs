//! Is this cell complete? Answers Jupyter's `is_complete_request` (the console asks it to decide
//! whether Enter runs the code or opens a new line) from brackets, strings and comments alone:
//! no compiler round trip, so it is instant. The same walk over the code outside strings and
//! comments ([`walk_code`]) finds a cell's top-level `let`s (`analysis`) and where a statement
//! ends (`future_values`).

#[derive(Debug, PartialEq, Eq)]
pub enum Completeness {
    Complete,
    /// More lines are expected; the next line should be indented by this much.
    Incomplete { indent: String },
    /// No continuation can fix the code (a closing bracket that closes nothing, or the wrong one).
    Invalid,
}

pub fn is_complete(code: &str) -> Completeness {
    let mut open: Vec<char> = Vec::new();
    let mut invalid = false;
    let ends_in_code = walk_code(code, |_, character| match character {
        '(' | '[' | '{' => {
            open.push(character);
            true
        }
        ')' | ']' | '}' => {
            let expected = match character {
                ')' => '(',
                ']' => '[',
                _ => '{',
            };
            invalid = open.pop() != Some(expected);
            !invalid
        }
        _ => true,
    });
    if invalid {
        Completeness::Invalid
    } else if !ends_in_code || !open.is_empty() {
        incomplete(&open)
    } else {
        Completeness::Complete
    }
}

/// Calls `visit` with each character of `code` that is code and its byte offset, in order; a
/// string, character literal or comment is passed as one space (at the offset where it starts)
/// instead. Stops early when `visit` returns false. Returns false when the code ends inside a
/// string or a block comment.
pub(crate) fn walk_code(code: &str, mut visit: impl FnMut(usize, char) -> bool) -> bool {
    let mut chars: Cursor = code.char_indices().peekable();
    let mut block_comment_depth = 0usize;
    let mut block_comment_start = 0;
    while let Some((offset, character)) = chars.next() {
        if block_comment_depth > 0 {
            match (character, peek(&mut chars)) {
                ('*', Some('/')) => {
                    chars.next();
                    block_comment_depth -= 1;
                    if block_comment_depth == 0 && !visit(block_comment_start, ' ') {
                        return true;
                    }
                }
                ('/', Some('*')) => {
                    chars.next();
                    block_comment_depth += 1;
                }
                _ => {}
            }
            continue;
        }
        let go_on = match character {
            '/' if peek(&mut chars) == Some('/') => {
                for (_, next) in chars.by_ref() {
                    if next == '\n' {
                        break;
                    }
                }
                visit(offset, ' ')
            }
            '/' if peek(&mut chars) == Some('*') => {
                chars.next();
                block_comment_depth = 1;
                block_comment_start = offset;
                true
            }
            '"' => {
                if !skip_string(&mut chars) {
                    return false;
                }
                visit(offset, ' ')
            }
            'r' if matches!(peek(&mut chars), Some('#') | Some('"')) => {
                if !skip_raw_string(&mut chars) {
                    return false;
                }
                visit(offset, ' ')
            }
            '\'' => {
                skip_char_literal_or_lifetime(&mut chars);
                visit(offset, ' ')
            }
            _ => visit(offset, character),
        };
        if !go_on {
            return true;
        }
    }
    block_comment_depth == 0
}

/// The characters of the code still to walk, with their byte offsets.
type Cursor<'a> = std::iter::Peekable<std::str::CharIndices<'a>>;

fn peek(chars: &mut Cursor) -> Option<char> {
    chars.peek().map(|&(_, character)| character)
}

fn next(chars: &mut Cursor) -> Option<char> {
    chars.next().map(|(_, character)| character)
}

fn incomplete(open: &[char]) -> Completeness {
    Completeness::Incomplete { indent: "    ".repeat(open.len().max(1)) }
}

/// Skips to the end of a `"..."` string; false if the code ends inside it.
fn skip_string(chars: &mut Cursor) -> bool {
    while let Some(character) = next(chars) {
        match character {
            '\\' => {
                chars.next();
            }
            '"' => return true,
            _ => {}
        }
    }
    false
}

/// Skips `r#"..."#` (after the `r`); a plain identifier starting with `r` is left alone.
fn skip_raw_string(chars: &mut Cursor) -> bool {
    let mut hashes = 0;
    while peek(chars) == Some('#') {
        chars.next();
        hashes += 1;
    }
    if next(chars) != Some('"') {
        return true; // `r#ident` (a raw identifier), not a string
    }
    'search: while let Some(character) = next(chars) {
        if character == '"' {
            for _ in 0..hashes {
                if peek(chars) != Some('#') {
                    continue 'search;
                }
                chars.next();
            }
            return true;
        }
    }
    false
}

/// `'a'`, `'\n'` are characters; `'a` in `&'a str` is a lifetime and has no closing quote.
fn skip_char_literal_or_lifetime(chars: &mut Cursor) {
    let mut lookahead = chars.clone();
    match next(&mut lookahead) {
        Some('\\') => {
            chars.next();
            chars.next();
            for (_, character) in chars.by_ref() {
                if character == '\'' {
                    break;
                }
            }
        }
        Some(_) if next(&mut lookahead) == Some('\'') => {
            chars.next();
            chars.next();
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_code_is_complete() {
        assert_eq!(is_complete("let x = 1;"), Completeness::Complete);
        assert_eq!(is_complete("fn f() { let s = \"}\"; }"), Completeness::Complete);
        assert_eq!(is_complete("fn f<'a>(x: &'a str) -> char { 'x' }"), Completeness::Complete);
        assert_eq!(is_complete("let s = r#\"a \" { b\"#;"), Completeness::Complete);
        assert_eq!(is_complete("// just { a comment"), Completeness::Complete);
    }

    #[test]
    fn open_brackets_strings_and_comments_are_incomplete() {
        assert_eq!(is_complete("fn f() {"), Completeness::Incomplete { indent: "    ".into() });
        assert_eq!(
            is_complete("fn f() {\n    if x {"),
            Completeness::Incomplete { indent: "        ".into() }
        );
        assert!(matches!(is_complete("let s = \"abc"), Completeness::Incomplete { .. }));
        assert!(matches!(is_complete("/* not closed"), Completeness::Incomplete { .. }));
    }

    #[test]
    fn the_walk_gives_each_character_its_byte_offset() {
        let mut seen = Vec::new();
        walk_code("é \"s\" // c\nx /* a */;", |offset, character| {
            seen.push((offset, character));
            true
        });
        assert_eq!(
            seen,
            vec![(0, 'é'), (2, ' '), (3, ' '), (6, ' '), (7, ' '), (12, 'x'), (13, ' '), (14, ' '), (21, ';')]
        );
    }

    #[test]
    fn a_bracket_that_closes_nothing_is_invalid() {
        assert_eq!(is_complete("fn f() { )"), Completeness::Invalid);
        assert_eq!(is_complete("}"), Completeness::Invalid);
    }
}
