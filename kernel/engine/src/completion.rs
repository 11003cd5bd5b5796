//! Tab and Shift+Tab (and `Type?` in a cell), answered by rust-analyzer, which runs in a
//! process of its own (`analysis_process`), started by the first request and stopped after a
//! while without one. No cell waits for it.

use crate::memory_limit::{self, MemoryLimit};
use crate::{Completions, Engine};
use std::time::{Duration, Instant};

/// How long the request that starts rust-analyzer waits for it, when it is a Tab or a
/// Shift+Tab: the process starts, and is left to analyse.
const FIRST_ANALYSIS_PATIENCE: Duration = Duration::from_millis(100);

impl Engine {
    /// Notes a use of rust-analyzer (which starts it, the first time: it then analyses the
    /// standard library, tokio and the cells' other dependencies, seconds), and how long to
    /// wait for its answer. Under a memory limit that leaves too little free for it, it is not
    /// started, and the error says why (`memory_limit`).
    fn use_analysis(&mut self, patience: Duration) -> Result<(), String> {
        let mut patience = patience;
        if self.context.rust_analyzer_is_running() && self.analysis.has_ended() {
            self.context.stop_rust_analyzer();
            eprintln!("rust-async: rust-analyzer's process had ended (out of memory, most likely); it starts again if there is room");
        }
        if !self.context.rust_analyzer_is_running() {
            if let Some(limit) = MemoryLimit::current() {
                let free = limit.free();
                if free < memory_limit::ANALYSIS_NEEDS {
                    return Err(analysis_off(&limit, free));
                }
            }
            eprintln!("rust-async: starting rust-analyzer for completion and inspection (the first request analyses std and tokio)");
            // Its first analysis takes seconds: an interactive request is answered at once.
            patience = patience.min(FIRST_ANALYSIS_PATIENCE);
        }
        self.analysis.set_patience(patience);
        self.analysis_used = Some(Instant::now());
        Ok(())
    }

    /// Stops rust-analyzer once no completion or inspection has asked for it for `idle`: its
    /// process holds more memory than the rest of the kernel. The next request starts it again.
    /// Returns whether it was stopped now.
    pub fn stop_idle_analysis(&mut self, idle: Duration) -> bool {
        let Some(used) = self.analysis_used else { return false };
        if used.elapsed() < idle || !self.context.rust_analyzer_is_running() {
            return false;
        }
        self.context.stop_rust_analyzer(); // its process ends, and its memory with it
        self.analysis_used = None;
        eprintln!("rust-async: rust-analyzer stopped after {} s without completion or inspection", idle.as_secs());
        true
    }

    /// Completions at `cursor` (a character offset), from rust-analyzer (`analysis_process`).
    /// None while rust-analyzer is still starting: this answers within `patience`.
    pub fn complete(&mut self, code: &str, cursor: usize, patience: Duration) -> Completions {
        if self.use_analysis(patience).is_err() {
            return Completions { matches: vec![], cursor_start: cursor, cursor_end: cursor };
        }
        let byte_cursor = char_to_byte(code, cursor);
        match self.context.completions(code, byte_cursor) {
            Ok(found) => {
                // rust-analyzer also offers fuzzy matches; a notebook completes what was typed.
                let typed = code.get(found.start_offset..byte_cursor).unwrap_or_default();
                // `len()` of `Vec` and `len()` of the slice it derefs to are one name to type.
                let mut offered = std::collections::HashSet::new();
                Completions {
                    matches: found
                        .completions
                        .into_iter()
                        // `is_empty()` → `is_empty`: the user types the call's arguments.
                        .map(|completion| match completion.code.split_once('(') {
                            Some((name, _)) if !name.is_empty() => name.to_owned(),
                            _ => completion.code,
                        })
                        .filter(|candidate| candidate.starts_with(typed))
                        // evcxr's own names around the cell (`evcxr_variable_store`, ...).
                        .filter(|candidate| !candidate.to_ascii_lowercase().starts_with("evcxr"))
                        .filter(|candidate| offered.insert(candidate.clone()))
                        .collect(),
                    cursor_start: byte_to_char(code, found.start_offset),
                    cursor_end: byte_to_char(code, found.end_offset),
                }
            }
            Err(_) => Completions { matches: vec![], cursor_start: cursor, cursor_end: cursor },
        }
    }

    /// Documentation of what is at `cursor` (a character offset), as (plain text, markdown).
    /// While rust-analyzer is still starting (it answers within `patience`), says so instead.
    pub fn inspect(&mut self, code: &str, cursor: usize, patience: Duration) -> Option<(String, String)> {
        let documentation = self.documentation(code, cursor, patience);
        if documentation.is_none() && self.analysis.is_starting() {
            return Some((ANALYSIS_STARTING.to_owned(), ANALYSIS_STARTING.to_owned()));
        }
        documentation
    }

    /// Documentation of what is at `cursor`, waiting up to `patience` for rust-analyzer (for
    /// `Type?` in a cell: the first one waits while rust-analyzer starts).
    pub fn documentation(&mut self, code: &str, cursor: usize, patience: Duration) -> Option<(String, String)> {
        if let Err(why) = self.use_analysis(patience) {
            return Some((why.clone(), why));
        }
        let byte_cursor = char_to_byte(code, cursor);
        let start = code[..byte_cursor]
            .char_indices()
            .rfind(|&(_, c)| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |(index, c)| index + c.len_utf8());
        let end = code[byte_cursor..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(code.len(), |index| byte_cursor + index);
        let word = code.get(start..end).filter(|word| !word.is_empty())?;
        let (text, markdown) = self.context.hover_at(word, word.len()).ok()?;
        (text != "No documentation found")
            .then(|| (without_hidden_doc_lines(&text), without_hidden_doc_lines(&markdown)))
    }

    /// Names and types of the variables the cells defined so far.
    pub fn variables(&self) -> Vec<(String, String)> {
        self.context
            .variables_and_types()
            .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
            .collect()
    }
}


/// rustdoc hides the lines of a Rust example that start with `# ` (set-up such as
/// `# #[tokio::main]`, `# async fn main() {`); documentation shown by an inspection hides them
/// too. Both forms evcxr gives (plain text, and HTML with examples in `<pre><code>`) keep
/// the example's lines as they are and have no other line starting with `# `.
fn without_hidden_doc_lines(doc: &str) -> String {
    let mut kept = Vec::new();
    for line in doc.lines() {
        // An example's first line follows its opening tag.
        let tag_end = line.strip_prefix("<pre><code").and_then(|rest| rest.find('>')).map_or(0, |end| "<pre><code".len() + end + 1);
        let (tag, text) = line.split_at(tag_end);
        let text = text.trim_start();
        if text == "#" || text.starts_with("# ") {
            if !tag.is_empty() {
                kept.push(tag);
            }
            continue;
        }
        kept.push(line);
    }
    let mut joined = kept.join("\n");
    if doc.ends_with('\n') {
        joined.push('\n');
    }
    joined
}

/// What Shift+Tab (and `Type?`) show when rust-analyzer does not fit in memory.
fn analysis_off(limit: &MemoryLimit, free: u64) -> String {
    format!(
        "Tab completion and Shift+Tab are off for now: rust-analyzer, which answers them, needs about {}, \
         and this kernel's memory limit, {}, leaves {} free. Cells run as usual. Shutting down the \
         kernels of other notebooks frees memory.",
        memory_limit::size_text(memory_limit::ANALYSIS_NEEDS),
        limit.describe(),
        memory_limit::size_text(free)
    )
}

/// What an inspection (Shift+Tab) shows while rust-analyzer is still starting.
const ANALYSIS_STARTING: &str = "rust-analyzer is starting: the first Tab or Shift+Tab of a kernel has it \
    analyse the standard library, tokio and the cells' crates, a few seconds. Try again in a moment.";


fn char_to_byte(text: &str, chars: usize) -> usize {
    text.char_indices().nth(chars).map_or(text.len(), |(index, _)| index)
}

fn byte_to_char(text: &str, bytes: usize) -> usize {
    text.get(..bytes.min(text.len())).map_or(0, |prefix| prefix.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_lines_of_rust_examples_are_left_out_of_docs() {
        let html = "<p>Sleeps.</p>\n<pre><code>use x;\n# #[tokio::main]\n# async fn main() {\nsleep(ms(10)).await;\n#[derive(Debug)]\n# }\n</code></pre>\n\
                    <pre><code class=\"language-rust\"># fn hidden() {}\nshown();\n</code></pre>\n";
        assert_eq!(
            without_hidden_doc_lines(html),
            "<p>Sleeps.</p>\n<pre><code>use x;\nsleep(ms(10)).await;\n#[derive(Debug)]\n</code></pre>\n\
             <pre><code class=\"language-rust\">\nshown();\n</code></pre>\n"
        );
        let plain = "Sleeps.\n\nuse x;\n\n# #[tokio::main]\n# async fn main() {\nsleep(ms(10)).await;\n# }\n";
        assert_eq!(without_hidden_doc_lines(plain), "Sleeps.\n\nuse x;\n\nsleep(ms(10)).await;\n");
    }
}
