//! evcxr's `:` commands, found in a cell the way evcxr finds them: lines at the top of the
//! cell, before any Rust code. Blank lines, `//` comments and `!` shell lines may stand
//! between them; the first other line is code, and a `:` line after it is code too (a syntax
//! error), not a command.

/// One command line: `:name args`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Command<'a> {
    /// The line's index in the cell (0-based).
    pub index: usize,
    /// The line without its indentation.
    pub text: &'a str,
    /// `:name`
    pub name: &'a str,
    /// What follows the name and its spaces, if anything does (it may be empty).
    pub args: Option<&'a str>,
}

/// The commands of `code`, in order.
pub(crate) fn leading_commands(code: &str) -> Vec<Command<'_>> {
    code.lines()
        .take(first_code_line(code))
        .enumerate()
        .filter_map(|(index, line)| {
            let text = line.trim_start_matches(' ');
            if line.starts_with('!') || !text.starts_with(':') {
                return None;
            }
            let (name, args) = match text.split_once(' ') {
                Some((name, rest)) => (name, Some(rest.trim_start_matches(' '))),
                None => (text, None),
            };
            Some(Command { index, text, name, args })
        })
        .collect()
}

/// The index of the cell's first line of Rust code (its number of lines if it has none).
/// The lines before it are commands, `!` shell lines, blank lines and `//` comments; a line
/// starting with `!` or `:` after it is Rust (`!done` continuing an expression, say).
pub(crate) fn first_code_line(code: &str) -> usize {
    code.lines()
        .position(|line| {
            let text = line.trim_start_matches(' ');
            !(line.starts_with('!') || text.starts_with(':') || line.starts_with("//") || line.trim().is_empty())
        })
        .unwrap_or_else(|| code.lines().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_stand_before_the_code() {
        let code = ":fmt {:#?}\n\n// note\n!ls\n  :types\nlet x = 1;\n:clear\n";
        let found = leading_commands(code);
        assert_eq!(
            found,
            vec![
                Command { index: 0, text: ":fmt {:#?}", name: ":fmt", args: Some("{:#?}") },
                Command { index: 4, text: ":types", name: ":types", args: None },
            ]
        );
        assert!(leading_commands("let a = 1;\n:quit").is_empty());
        assert_eq!(first_code_line(code), 5);
        assert_eq!(first_code_line("!ls\n:vars"), 2);
    }
}
