//! Is this cell complete? Answers Jupyter's `is_complete_request` (the console asks it to decide
//! whether Enter runs the code or opens a new line) from brackets, strings and comments alone:
//! no compiler round trip, so it is instant. The same walk over the code outside strings and
//! comments ([`walk_code`]) finds a cell's top-level `let`s (`analysis`).

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
    let ends_in_code = walk_code(code, |character| match character {
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

/// Calls `visit` with each character of `code` that is code, in order; a string, character
/// literal or comment is passed as one space instead. Stops early when `visit` returns false.
/// Returns false when the code ends inside a string or a block comment.
pub(crate) fn walk_code(code: &str, mut visit: impl FnMut(char) -> bool) -> bool {
    let mut chars = code.chars().peekable();
    let mut block_comment_depth = 0usize;
    while let Some(character) = chars.next() {
        if block_comment_depth > 0 {
            match (character, chars.peek()) {
                ('*', Some('/')) => {
                    chars.next();
                    block_comment_depth -= 1;
                    if block_comment_depth == 0 && !visit(' ') {
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
            '/' if chars.peek() == Some(&'/') => {
                for next in chars.by_ref() {
                    if next == '\n' {
                        break;
                    }
                }
                visit(' ')
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                block_comment_depth = 1;
                true
            }
            '"' => {
                if !skip_string(&mut chars) {
                    return false;
                }
                visit(' ')
            }
            'r' if matches!(chars.peek(), Some('#') | Some('"')) => {
                if !skip_raw_string(&mut chars) {
                    return false;
                }
                visit(' ')
            }
            '\'' => {
                skip_char_literal_or_lifetime(&mut chars);
                visit(' ')
            }
            _ => visit(character),
        };
        if !go_on {
            return true;
        }
    }
    block_comment_depth == 0
}

fn incomplete(open: &[char]) -> Completeness {
    Completeness::Incomplete { indent: "    ".repeat(open.len().max(1)) }
}

/// Skips to the end of a `"..."` string; false if the code ends inside it.
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars>) -> bool {
    while let Some(character) = chars.next() {
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
fn skip_raw_string(chars: &mut std::iter::Peekable<std::str::Chars>) -> bool {
    let mut hashes = 0;
    while chars.peek() == Some(&'#') {
        chars.next();
        hashes += 1;
    }
    if chars.next() != Some('"') {
        return true; // `r#ident` (a raw identifier), not a string
    }
    'search: while let Some(character) = chars.next() {
        if character == '"' {
            for _ in 0..hashes {
                if chars.peek() != Some(&'#') {
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
fn skip_char_literal_or_lifetime(chars: &mut std::iter::Peekable<std::str::Chars>) {
    let mut lookahead = chars.clone();
    match lookahead.next() {
        Some('\\') => {
            chars.next();
            chars.next();
            for character in chars.by_ref() {
                if character == '\'' {
                    break;
                }
            }
        }
        Some(_) if lookahead.next() == Some('\'') => {
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
    fn a_bracket_that_closes_nothing_is_invalid() {
        assert_eq!(is_complete("fn f() { )"), Completeness::Invalid);
        assert_eq!(is_complete("}"), Completeness::Invalid);
    }
}
