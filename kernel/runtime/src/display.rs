//! Rich output from cells and tasks: HTML, Markdown, any mime type, and clearing output.
//!
//! ```ignore
//! rust_async::display::html("<b>bold</b>");
//! rust_async::display::clear_output(true);
//! ```

use crate::protocol::{self, RuntimeRecord};
use crate::records::write_record;

/// Shows `data` under the current cell as a `display_data` of the given mime type.
pub fn show(mime_type: &str, data: &str) {
    write_record(&RuntimeRecord::Display { mime_type: mime_type.to_owned(), data: data.to_owned() });
}

pub fn html(html: &str) {
    show("text/html", html);
}

pub fn markdown(markdown: &str) {
    show("text/markdown", markdown);
}

pub fn text(text: &str) {
    show("text/plain", text);
}

/// Clears the output of the current cell; with `wait`, only once new output arrives
/// (which avoids flicker when redrawing a progress line).
pub fn clear_output(wait: bool) {
    write_record(&RuntimeRecord::ClearOutput { wait });
}

/// A cell's final value as evcxr's `:fmt` and `:types` ask for it (the kernel keeps them in the
/// file named by [`protocol::FINAL_VALUE_FORMAT_ENV`]). Not generic: compiled here once.
pub(crate) fn final_value_text(value: &dyn std::fmt::Debug, type_name: &str) -> String {
    let settings = std::env::var_os(protocol::FINAL_VALUE_FORMAT_ENV)
        .and_then(|path| std::fs::read_to_string(path).ok());
    let Some((types, format)) = settings.as_deref().and_then(|settings| settings.split_once('\n')) else {
        return format!("{value:?}");
    };
    let text = format_one_value(value, format);
    if types == "types" { format!(": {type_name} = {text}") } else { text }
}

/// `format!(format, value)` for a format string chosen at run time, with one placeholder. The
/// placeholder may ask for `#`, a width, a precision and `?`, `x?` or `X?`; any other
/// placeholder (`{}` is Display, which not every value has) shows the value with `{:?}`.
fn format_one_value(value: &dyn std::fmt::Debug, format: &str) -> String {
    let mut out = String::new();
    let mut rest = format;
    let mut placed = false;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let (brace, after) = rest[at..].split_at(1);
        if after.starts_with(brace) {
            out.push_str(brace); // `{{` or `}}`
            rest = &after[1..];
        } else if brace == "{" && !placed {
            let Some(end) = after.find('}') else { break };
            out.push_str(&format_with_spec(value, &after[..end]));
            placed = true;
            rest = &after[end + 1..];
        } else {
            out.push_str(brace);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// One placeholder's inside (`:#.3?`, say; an argument position before the `:` is ignored).
fn format_with_spec(value: &dyn std::fmt::Debug, placeholder: &str) -> String {
    let spec = placeholder.split_once(':').map_or("", |(_, spec)| spec);
    let (alternate, spec) = match spec.strip_prefix('#') {
        Some(spec) => (true, spec),
        None => (false, spec),
    };
    let width_end = spec.find(|c: char| !c.is_ascii_digit()).unwrap_or(spec.len());
    let width: usize = spec[..width_end].parse().unwrap_or(0);
    let mut spec = &spec[width_end..];
    let mut precision = None;
    if let Some(after_dot) = spec.strip_prefix('.') {
        let end = after_dot.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_dot.len());
        precision = after_dot[..end].parse::<usize>().ok();
        spec = &after_dot[end..];
    }
    let w = width;
    match (spec, alternate, precision) {
        ("?", false, None) => format!("{value:w$?}"),
        ("?", true, None) => format!("{value:#w$?}"),
        ("?", false, Some(p)) => format!("{value:w$.p$?}"),
        ("?", true, Some(p)) => format!("{value:#w$.p$?}"),
        ("x?", false, _) => format!("{value:w$x?}"),
        ("x?", true, _) => format!("{value:#w$x?}"),
        ("X?", false, _) => format!("{value:w$X?}"),
        ("X?", true, _) => format!("{value:#w$X?}"),
        _ => format!("{value:?}"),
    }
}

