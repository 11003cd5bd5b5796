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
    let mut commands = Vec::new();
    for (index, line) in code.lines().enumerate() {
        let text = line.trim_start_matches(' ');
        if line.starts_with('!') {
            continue;
        } else if text.starts_with(':') {
            let (name, args) = match text.split_once(' ') {
                Some((name, rest)) => (name, Some(rest.trim_start_matches(' '))),
                None => (text, None),
            };
            commands.push(Command { index, text, name, args });
        } else if !(line.starts_with("//") || line.trim().is_empty()) {
            break;
        }
    }
    commands
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
    }
}
