//! Rich output from cells and tasks: HTML, Markdown, any mime type, and clearing output.
//!
//! ```ignore
//! rust_async::display::html("<b>bold</b>");
//! rust_async::display::clear_output(true);
//! ```

use crate::cell::write_record;
use crate::protocol;

/// Shows `data` under the current cell as a `display_data` of the given mime type.
pub fn show(mime_type: &str, data: &str) {
    let json = format!("{{{}:{}}}", json_string(mime_type), json_string(data));
    write_record(protocol::DISPLAY, &json);
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
    write_record(protocol::CLEAR_OUTPUT, if wait { "true" } else { "false" });
}

/// `text` as a JSON string literal (the runtime library carries no JSON dependency).
pub(crate) fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
