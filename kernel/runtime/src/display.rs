//! Rich output from cells and tasks: HTML, Markdown, SVG, PNG, any mime bundle, displays
//! updated in place, and clearing output.
//!
//! ```ignore
//! rust_async::display::html("<b>bold</b>");
//! let status = rust_async::display::text("waiting...");
//! tokio::spawn(async move {
//!     tokio::time::sleep(std::time::Duration::from_secs(1)).await;
//!     status.update_text("done"); // redrawn where it was first shown, even after the cell ended
//! });
//! rust_async::display::clear_output(true);
//! ```

use crate::protocol::{self, RuntimeRecord};
use crate::records::write_record;
use std::sync::atomic::{AtomicU64, Ordering};

/// A display shown under a cell, which can be replaced where it stands (Jupyter's
/// `update_display_data`) from the cell, a later cell or a task, for as long as the notebook
/// shows it. Cloning gives another handle to the same display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayHandle {
    id: String,
}

impl DisplayHandle {
    /// Its `display_id`, unique in the kernel's life.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Replaces what it shows with `data` of the given mime type.
    pub fn update(&self, mime_type: &str, data: &str) {
        self.update_bundle(&[(mime_type, data)]);
    }

    /// Replaces what it shows with a mime bundle: the front end picks the richest type it can
    /// show (JupyterLab HTML or SVG; nbconvert's text output `text/plain`).
    pub fn update_bundle(&self, bundle: &[(&str, &str)]) {
        send(bundle, Some(self.id.clone()), true);
    }

    pub fn update_html(&self, html: &str) {
        self.update("text/html", html);
    }

    pub fn update_markdown(&self, markdown: &str) {
        self.update("text/markdown", markdown);
    }

    pub fn update_text(&self, text: &str) {
        self.update("text/plain", text);
    }

    pub fn update_svg(&self, svg: &str) {
        self.update("image/svg+xml", svg);
    }

    pub fn update_png(&self, png: &[u8]) {
        self.update("image/png", &base64_of(png));
    }

    /// As a cell's final value (`display::html("..")` without a `;`), it shows nothing more:
    /// the display is already shown (evcxr's convention: an inherent `evcxr_display` wins).
    pub fn evcxr_display(&self) {}
}

/// Shows a mime bundle under the current cell (a `display_data`), and returns its handle.
pub fn bundle(bundle: &[(&str, &str)]) -> DisplayHandle {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = format!("rust-async-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    send(bundle, Some(id.clone()), false);
    DisplayHandle { id }
}

/// Shows `data` under the current cell as a `display_data` of the given mime type.
pub fn show(mime_type: &str, data: &str) -> DisplayHandle {
    bundle(&[(mime_type, data)])
}

pub fn html(html: &str) -> DisplayHandle {
    show("text/html", html)
}

pub fn markdown(markdown: &str) -> DisplayHandle {
    show("text/markdown", markdown)
}

pub fn text(text: &str) -> DisplayHandle {
    show("text/plain", text)
}

/// An SVG figure (JupyterLab draws it as an image).
pub fn svg(svg: &str) -> DisplayHandle {
    show("image/svg+xml", svg)
}

/// A PNG image, from its bytes.
pub fn png(png: &[u8]) -> DisplayHandle {
    show("image/png", &base64_of(png))
}

fn send(bundle: &[(&str, &str)], display_id: Option<String>, update: bool) {
    let bundle = bundle.iter().map(|(mime_type, data)| ((*mime_type).to_owned(), (*data).to_owned())).collect();
    write_record(&RuntimeRecord::Display { bundle, display_id, update });
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
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

