//! A cell as written, parsed once: its evcxr `:` commands, where its Rust code starts, and
//! what the engine must know of that code before running it (the statics it defines, a
//! `return` at its own level, whether it adds a crate). Everything that looks at a cell before
//! it runs is handed this.
//!
//! evcxr finds commands as lines at the top of the cell, before any Rust code. Blank lines,
//! `//` comments and `!` shell lines may stand between them; the first other line is code, and
//! a `:` line after it is code too (a syntax error), not a command.

use crate::early_return::{cell_level_return, tokens};
use crate::statics::{static_definitions, StaticDefinition};

/// One command line: `:name args`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Command {
    /// The line's index in the cell (0-based).
    pub index: usize,
    /// The line without its indentation.
    pub text: String,
    /// `:name`
    pub name: String,
    /// What follows the name and its spaces, if anything does (it may be empty).
    pub args: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct CellSource {
    /// The cell as the student wrote it.
    pub text: String,
    pub commands: Vec<Command>,
    /// The index of the first line of Rust code (the number of lines if there is none).
    pub first_code_line: usize,
    /// The statics the cell defines (offsets in [`CellSource::text`]).
    pub statics: Vec<StaticDefinition>,
    /// The byte offset (in the text) of a `return` in the cell's own code, outside any
    /// function, closure or async block it defines.
    pub cell_level_return: Option<usize>,
    /// The cell adds a crate of its own: a `:dep` line, or `extern crate`.
    pub adds_crate: bool,
}

impl CellSource {
    pub fn parse(text: &str) -> CellSource {
        let first_code_line = first_code_line(text);
        let commands = leading_commands(text, first_code_line);
        // Leading command and `!` shell lines are not Rust.
        let rust_start: usize = text.split_inclusive('\n').take(first_code_line).map(str::len).sum();
        let rust = &text[rust_start..];
        let tokens = tokens(rust);
        let mut statics = static_definitions(rust, &tokens);
        for definition in &mut statics {
            definition.insert_at += rust_start;
        }
        let extern_crate = tokens.windows(2).any(|pair| pair[0].1 == "extern" && pair[1].1 == "crate");
        CellSource {
            text: text.to_owned(),
            adds_crate: extern_crate || commands.iter().any(|command| command.name == ":dep"),
            cell_level_return: cell_level_return(&tokens).map(|offset| rust_start + offset),
            statics,
            first_code_line,
            commands,
        }
    }

    /// The commands named `name`, in order.
    pub fn commands_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Command> + 'a {
        self.commands.iter().filter(move |command| command.name == name)
    }

    pub fn has_command(&self, name: &str) -> bool {
        self.commands_named(name).next().is_some()
    }

    /// The cell has commands and no Rust code.
    pub fn is_only_commands(&self) -> bool {
        self.first_code_line == self.text.lines().count()
    }

    /// The text with the lines of the commands named in `names` made blank: spaces in place of
    /// their characters, so that every other line keeps its number and every offset its
    /// place. evcxr runs a cell's commands before its code, so doing such a command first and
    /// then running the rest is what the cell asked for.
    pub fn without_commands(&self, names: &[&str]) -> String {
        let blanked: Vec<usize> =
            self.commands.iter().filter(|command| names.contains(&command.name.as_str())).map(|command| command.index).collect();
        self.text
            .split_inclusive('\n')
            .enumerate()
            .map(|(index, line)| {
                if !blanked.contains(&index) {
                    return line.to_owned();
                }
                let body = line.trim_end_matches(['\n', '\r']);
                " ".repeat(body.len()) + &line[body.len()..]
            })
            .collect()
    }
}

/// The commands among the first `first_code_line` lines of `code`, in order.
fn leading_commands(code: &str, first_code_line: usize) -> Vec<Command> {
    code.lines()
        .take(first_code_line)
        .enumerate()
        .filter_map(|(index, line)| {
            let text = line.trim_start_matches(' ');
            if line.starts_with('!') || !text.starts_with(':') {
                return None;
            }
            let (name, args) = match text.split_once(' ') {
                Some((name, rest)) => (name, Some(rest.trim_start_matches(' ').to_owned())),
                None => (text, None),
            };
            Some(Command { index, text: text.to_owned(), name: name.to_owned(), args })
        })
        .collect()
}

/// The index of the cell's first line of Rust code (its number of lines if it has none).
/// The lines before it are commands, `!` shell lines, blank lines and `//` comments; a line
/// starting with `!` or `:` after it is Rust (`!done` continuing an expression, say).
fn first_code_line(code: &str) -> usize {
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
        let source = CellSource::parse(code);
        let command = |index: usize, text: &str, name: &str, args: Option<&str>| Command {
            index,
            text: text.into(),
            name: name.into(),
            args: args.map(Into::into),
        };
        assert_eq!(source.commands, vec![command(0, ":fmt {:#?}", ":fmt", Some("{:#?}")), command(4, ":types", ":types", None)]);
        assert!(CellSource::parse("let a = 1;\n:quit").commands.is_empty());
        assert_eq!(source.first_code_line, 5);
        assert_eq!(CellSource::parse("!ls\n:vars").first_code_line, 2);
        assert!(CellSource::parse("!ls\n:vars").is_only_commands() && !source.is_only_commands());
    }

    #[test]
    fn blanked_commands_keep_every_line_and_offset() {
        let source = CellSource::parse(":clear\n:dep x = \"1\"\nstatic A: u8 = 1;\nlet b = 2;");
        let rest = source.without_commands(&[":clear"]);
        assert_eq!(rest, "      \n:dep x = \"1\"\nstatic A: u8 = 1;\nlet b = 2;");
        assert_eq!(&rest[source.statics[0].insert_at..][..6], "static");
        assert!(source.adds_crate && source.has_command(":dep") && !source.has_command(":restart"));
    }

    #[test]
    fn the_code_after_the_commands_is_read_for_returns_statics_and_crates() {
        let source = CellSource::parse(":vars\nfn f() { return; }\nif true { return; }");
        assert_eq!(source.cell_level_return, source.text.rfind("return"));
        assert!(!source.adds_crate && source.statics.is_empty());
        assert!(CellSource::parse("extern crate regex;").adds_crate);
    }
}
