//! The one place a [`CellError`] becomes what Jupyter shows: `ename`, `evalue` and a
//! traceback of ANSI-coloured lines (as rustc colours its own), used by the engine and the
//! server alike. Also how the kernel's own notices ([`crate::Output::Notice`]) look.

use crate::cell_error::{CellError, Problem, Span};

const RED: &str = "\x1b[1;31m";
const BLUE: &str = "\x1b[1;34m";
const BOLD: &str = "\x1b[1m";
const CYAN: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

/// A cell's error as Jupyter's `error` content and the failed `execute_reply` carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedError {
    pub ename: String,
    pub evalue: String,
    pub traceback: Vec<String>,
}

pub fn render(error: &CellError) -> RenderedError {
    let mut traceback = Vec::new();
    for problem in &error.problems {
        render_problem(problem, &mut traceback);
    }
    traceback.extend(error.hints.iter().map(|hint| hint_line(hint)));
    traceback.extend(error.notes.iter().cloned());
    RenderedError { ename: error.kind.name().to_owned(), evalue: error.message.clone(), traceback }
}

/// The traceback without colours: for logs and messages outside a notebook.
pub fn plain_text(error: &CellError) -> String {
    let mut plain = String::new();
    for line in render(error).traceback {
        let mut rest = line.as_str();
        while let Some(start) = rest.find('\x1b') {
            plain.push_str(&rest[..start]);
            rest = rest[start..].split_once('m').map_or("", |(_, after)| after);
        }
        plain.push_str(rest);
        plain.push('\n');
    }
    plain
}

/// The mime bundle that shows a notice: a plain-text form (nbconvert's text, a terminal) and a
/// boxed HTML one, so that a student sees it apart from what the cell printed.
pub fn notice_bundle(text: &str) -> serde_json::Map<String, serde_json::Value> {
    let text = text.trim_end_matches('\n');
    let html = format!(
        "<pre class=\"rust-async-notice\" style=\"white-space: pre-wrap; margin: 0; padding: 4px 8px; \
         border-left: 4px solid #e0a000; background: rgba(224, 160, 0, 0.12);\">{}</pre>",
        html_escape(text)
    );
    let mut bundle = serde_json::Map::new();
    bundle.insert("text/plain".into(), text.into());
    bundle.insert("text/html".into(), html.into());
    bundle
}

fn html_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn render_problem(problem: &Problem, traceback: &mut Vec<String>) {
    traceback.push(format!("{RED}{}{RESET}{BOLD}: {}{RESET}", problem.title, problem.text));
    traceback.extend(problem.details.iter().cloned());
    for span in &problem.spans {
        render_span(span, traceback);
    }
    traceback.extend(problem.helps.iter().map(|help| help_line(help)));
    traceback.extend(problem.hints.iter().map(|hint| hint_line(hint)));
}

fn render_span(span: &Span, traceback: &mut Vec<String>) {
    let (start, end, lines, label) = match span {
        Span::EarlierCell { text } => {
            traceback.push(format!("  {BLUE}-->{RESET} in code of an earlier cell: {text}"));
            return;
        }
        Span::Cell { start, end, lines, label } => (*start, *end, lines, label),
    };
    traceback.push(format!("  {BLUE}-->{RESET} cell line {}, column {}", start.0, start.1));
    let width = lines.last().map_or(1, |(number, _)| number.to_string().len());
    for (number, text) in lines {
        traceback.push(format!("{BLUE}{number:>width$} |{RESET} {text}"));
    }
    match end {
        Some(end) if end.0 == start.0 => {
            let Some((_, text)) = lines.iter().find(|(number, _)| *number == start.0) else { return };
            let (padding, carets) = underline(text, start.1, end.1);
            let label = if label.is_empty() { String::new() } else { format!(" {label}") };
            traceback.push(format!("{BLUE}{:>width$} |{RESET} {padding}{RED}{carets}{label}{RESET}", ""));
        }
        Some(_) if !label.is_empty() => traceback.push(format!("{BLUE}{:>width$} ={RESET} {label}", "")),
        _ => {}
    }
}

/// evcxr gives a help as its message, then a blank line and rustc's suggested replacement
/// (`&`, `u32::MAX`, ...): show the replacement as code on the same line, not alone below.
fn help_line(help: &str) -> String {
    match help.split_once("\n\n") {
        Some((message, replacement)) if !replacement.trim().is_empty() && !replacement.contains('\n') => {
            format!("  {BLUE}={RESET} help: {message}: `{}`", replacement.trim())
        }
        Some((message, replacement)) if !replacement.trim().is_empty() => {
            format!("  {BLUE}={RESET} help: {message}:\n{replacement}")
        }
        Some((message, _)) => format!("  {BLUE}={RESET} help: {message}"),
        None => format!("  {BLUE}={RESET} help: {help}"),
    }
}

fn hint_line(hint: &str) -> String {
    format!("{CYAN}hint{RESET}: {hint}")
}

/// What goes under `text` to mark its characters `start_column..end_column` (1-based, as rustc
/// counts): the padding and the carets. Both follow the line as a notebook shows it: a tab stays
/// a tab, and a wide character (CJK, most emoji) takes two places, so the carets sit under the
/// spanned text and cover all of it.
fn underline(text: &str, start_column: usize, end_column: usize) -> (String, String) {
    use unicode_width::UnicodeWidthChar;
    let start = start_column.saturating_sub(1);
    let mut padding = String::new();
    let mut carets = 0;
    for (index, character) in text.chars().enumerate() {
        let width = character.width().unwrap_or(0);
        if index < start {
            if character == '\t' {
                padding.push('\t');
            } else {
                padding.push_str(&" ".repeat(width));
            }
        } else if index < end_column.saturating_sub(1) {
            carets += if character == '\t' { 1 } else { width };
        }
    }
    // Past the end of the line (a missing `;`), the padding counts the missing places too.
    let past_end = start.saturating_sub(text.chars().count());
    padding.push_str(&" ".repeat(past_end));
    (padding, "^".repeat(carets.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell_error::ErrorKind;

    #[test]
    fn a_notice_shows_as_plain_text_and_as_escaped_html() {
        let bundle = notice_bundle("warning: `Vec<u8>` & co\n");
        assert_eq!(bundle["text/plain"], "warning: `Vec<u8>` & co");
        let html = bundle["text/html"].as_str().unwrap();
        assert!(html.starts_with("<pre class=\"rust-async-notice\""), "{html}");
        assert!(html.contains(">warning: `Vec&lt;u8&gt;` &amp; co</pre>"), "{html}");
    }

    #[test]
    fn carets_sit_under_wide_characters_and_tabs() {
        // `"日本"` starts at column 5 and ends before column 9 (rustc counts characters).
        assert_eq!(underline("let 日本 = 1;", 5, 7), ("    ".into(), "^^^^".into()));
        assert_eq!(underline("let s = \"日本\"; s.nope()", 17, 21), (" ".repeat(18), "^^^^".into()));
        assert_eq!(underline("\tx.nope()", 4, 8), ("\t  ".into(), "^^^^".into()));
        assert_eq!(underline("abc", 4, 4), ("   ".into(), "^".into()));
        assert_eq!(underline("abc", 6, 6), ("     ".into(), "^".into()));
    }

    #[test]
    fn a_suggested_replacement_is_shown_as_code_beside_its_help() {
        assert!(help_line("consider borrowing here\n\n&").ends_with("help: consider borrowing here: `&`"));
        assert!(help_line("remove this").ends_with("help: remove this"));
    }

    #[test]
    fn an_error_renders_its_parts_in_order() {
        let error = CellError {
            kind: ErrorKind::CompileError,
            message: "error[E0425]: cannot find value `y` in this scope (line 2, column 9)".into(),
            problems: vec![Problem {
                title: "error[E0425]".into(),
                text: "cannot find value `y` in this scope".into(),
                details: vec![],
                spans: vec![Span::Cell {
                    start: (2, 9),
                    end: Some((2, 10)),
                    lines: vec![(2, "let x = y;".into())],
                    label: "not found in this scope".into(),
                }],
                helps: vec!["a local variable with a similar name exists\n\nx".into()],
                hints: vec!["a hint".into()],
            }],
            hints: vec!["about the cell".into()],
            notes: vec!["a note".into()],
        };
        let rendered = render(&error);
        assert_eq!(rendered.ename, "CompileError");
        assert_eq!(rendered.evalue, error.message);
        assert_eq!(
            plain_text(&error),
            "error[E0425]: cannot find value `y` in this scope\n  --> cell line 2, column 9\n2 | let x = y;\n  |         ^ not found in this scope\n  \
             = help: a local variable with a similar name exists: `x`\nhint: a hint\nhint: about the cell\na note\n"
        );
    }

    #[test]
    fn a_one_line_error_is_its_message_under_its_name() {
        let error = CellError::one_line(ErrorKind::KernelError, "the engine is gone");
        assert_eq!(plain_text(&error), "KernelError: the engine is gone\n");
        assert_eq!(render(&error).ename, "KernelError");
        let returned = CellError::one_line(ErrorKind::Returned { type_name: "ParseIntError".into() }, "invalid digit");
        assert_eq!(render(&returned).ename, "ParseIntError");
    }
}
