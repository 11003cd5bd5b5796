//! A cell that adds a crate (`:dep`) makes cargo download and build it, with what it needs:
//! seconds to minutes. The cell shows how far that is, in one display updated in place
//! ("Building 3 of 7: regex-syntax"), and says at the end what was built and how long it took.
//!
//! evcxr (patched) hands each line cargo writes on stderr to the engine as it comes
//! (`evcxr::set_cargo_line_hook`): `Compiling regex v1.11.1` names the crate being built. How
//! many there are is the crates the new one needs that the cells do not have yet: those in the
//! lock file of evcxr's check of the `:dep` (run just before the build) that the cells' lock
//! file does not list. A compile of the cell's own crate alone shows nothing.

use crate::{EngineEvent, EventSink, Output};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// evcxr's name for the cell's crate, whose compile is not shown.
const CELL_CRATE: &str = "ctx";

/// The progress of the dependencies cargo builds for the running cell, shown under it.
pub(crate) struct DependencyBuild {
    state: Mutex<Progress>,
    /// The lock file of evcxr's check of a new dependency (see the patch's `validate_dep`).
    checked_lock_file: std::path::PathBuf,
    /// The cell crate's lock file.
    cells_lock_file: std::path::PathBuf,
}

#[derive(Default)]
struct Progress {
    /// Where the display goes: set while a cell compiles.
    sink: Option<EventSink>,
    /// The display's id, once something was shown for this cell.
    display: Option<String>,
    started: Option<Instant>,
    /// Crates compiled and crates downloaded so far, for this cell.
    compiled: Vec<String>,
    downloaded: usize,
    /// How many crates are to be built, once known.
    to_build: Option<usize>,
}

impl DependencyBuild {
    /// For the cell crate in `cell_dir`.
    pub(crate) fn new(cell_dir: &std::path::Path) -> DependencyBuild {
        DependencyBuild {
            state: Mutex::default(),
            checked_lock_file: cell_dir.join("target/evcxr-validate-dep/Cargo.lock"),
            cells_lock_file: cell_dir.join("Cargo.lock"),
        }
    }

    /// Starts watching cargo for a cell whose outputs go to `sink`.
    pub(crate) fn begin(&self, sink: EventSink) {
        if let Ok(mut state) = self.state.lock() {
            *state = Progress { sink: Some(sink), ..Progress::default() };
        }
    }

    /// Ends the watch: when something was built, the display says what, and how long it took.
    pub(crate) fn finish(&self, succeeded: bool) {
        let Ok(mut state) = self.state.lock() else { return };
        if let (Some(started), Some(_)) = (state.started, &state.display) {
            let seconds = started.elapsed().as_secs_f64();
            let what = match state.compiled.len() {
                1 => "1 crate".to_owned(),
                count => format!("{count} crates"),
            };
            let text = if succeeded {
                format!("Built {what} in {seconds:.1} s: {}", state.compiled.join(", "))
            } else {
                format!("Stopped after building {what} in {seconds:.1} s")
            };
            state.show(&text);
        }
        state.sink = None;
    }

    /// One line cargo wrote on stderr (perhaps several progress updates, after `\r`s).
    pub(crate) fn cargo_line(&self, line: &str) {
        let Ok(mut state) = self.state.lock() else { return };
        if state.sink.is_none() {
            return;
        }
        let mut changed = false;
        for segment in line.split('\r') {
            let segment = without_ansi(segment);
            let segment = segment.trim();
            if let Some(name) = segment.strip_prefix("Compiling ").and_then(|rest| rest.split_whitespace().next()) {
                if name != CELL_CRATE {
                    if state.to_build.is_none() {
                        state.to_build = crates_to_build(&self.checked_lock_file, &self.cells_lock_file);
                    }
                    state.compiled.push(name.to_owned());
                    changed = true;
                }
            } else if segment.starts_with("Downloaded ") {
                state.downloaded += 1;
                changed = true;
            }
        }
        if changed {
            let text = state.describe();
            state.show(&text);
        }
    }
}

impl Progress {
    fn describe(&self) -> String {
        let current = self.compiled.last().map_or("", String::as_str);
        let building = self.compiled.len();
        match (self.to_build.filter(|all| *all >= building), current) {
            (_, "") => format!("Downloading crates: {} so far", self.downloaded),
            (Some(all), _) => format!("Building crate {building} of {all}: {current}"),
            (None, _) => format!("Building crate {building}: {current}"),
        }
    }

    fn show(&mut self, text: &str) {
        let Some(sink) = &self.sink else { return };
        let sink = Arc::clone(sink);
        let mut data = serde_json::Map::new();
        data.insert("text/plain".into(), text.into());
        // While the count is known, a bar too (JupyterLab shows the HTML, nbconvert the text).
        if let Some(all) = self.to_build.filter(|all| *all >= self.compiled.len()) {
            data.insert("text/html".into(), progress_html(self.compiled.len(), all, text).into());
        }
        let update = self.display.is_some();
        let display_id = self.display.get_or_insert_with(new_display_id).clone();
        self.started.get_or_insert_with(Instant::now);
        sink(EngineEvent::Output { cell: None, output: Output::Display { data: data.into(), display_id: Some(display_id), update } });
    }
}

/// A bar of `done` out of `all`, with `text` beside it.
fn progress_html(done: usize, all: usize, text: &str) -> String {
    let text = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<div class=\"rust-async-progress\"><progress value=\"{done}\" max=\"{}\" style=\"width: 18em; vertical-align: middle\"></progress> \
         <span style=\"font-family: monospace\">{text}</span></div>",
        all.max(1)
    )
}

fn new_display_id() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let number = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("rust-async-dependency-build-{}-{number}", std::process::id())
}

/// How many packages the checked lock file lists that the cells' does not: what cargo builds.
fn crates_to_build(checked: &std::path::Path, cells: &std::path::Path) -> Option<usize> {
    let packages = |path: &std::path::Path| -> Option<std::collections::HashSet<(String, String)>> {
        let lock: toml::Table = std::fs::read_to_string(path).ok()?.parse().ok()?;
        Some(
            lock.get("package")?
                .as_array()?
                .iter()
                .filter_map(|package| Some((package.get("name")?.as_str()?.to_owned(), package.get("version")?.as_str()?.to_owned())))
                .collect(),
        )
    };
    let have = packages(cells).unwrap_or_default();
    // The check's own crate is not built.
    Some(packages(checked)?.iter().filter(|package| !have.contains(*package) && package.0 != "evcxr_dummy_validate_dep").count())
}

fn without_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        if character == '\u{1b}' {
            // `ESC [ ... letter`
            for next in characters.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        plain.push(character);
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crates_to_build_are_those_the_cells_lock_file_lacks() {
        let directory = tempfile::tempdir().unwrap();
        let lock = |packages: &[(&str, &str)]| {
            packages.iter().map(|(name, version)| format!("[[package]]\nname = \"{name}\"\nversion = \"{version}\"\n\n")).collect::<String>()
        };
        let checked = directory.path().join("checked.lock");
        let cells = directory.path().join("cells.lock");
        std::fs::write(&checked, lock(&[("evcxr_dummy_validate_dep", "0.0.1"), ("regex", "1.11.1"), ("memchr", "2.7.4"), ("libc", "0.2.1")])).unwrap();
        std::fs::write(&cells, lock(&[("libc", "0.2.1"), ("tokio", "1.54.1")])).unwrap();
        assert_eq!(crates_to_build(&checked, &cells), Some(2));
        assert_eq!(without_ansi("\u{1b}[1m\u{1b}[32m   Compiling\u{1b}[0m regex"), "   Compiling regex");
    }

    #[test]
    fn a_dependency_build_is_shown_in_one_display_updated_in_place() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&events);
        let sink: EventSink = Arc::new(move |event| seen.lock().unwrap().push(event));
        let directory = tempfile::tempdir().unwrap();
        let build = DependencyBuild::new(directory.path());
        build.begin(Arc::clone(&sink));
        build.cargo_line("   Compiling ctx v1.0.0 (/tmp/cell)");
        assert!(events.lock().unwrap().is_empty(), "the cell's own compile shows nothing");
        build.cargo_line("    Building [==>   ] 0/2: memchr\r   Compiling memchr v2.7.4");
        build.cargo_line("    Building [=====>] 1/2: regex\r   Compiling regex v1.11.1");
        build.finish(true);
        let shown: Vec<(String, bool, String)> = events
            .lock()
            .unwrap()
            .iter()
            .map(|event| match event {
                EngineEvent::Output { output: Output::Display { data, display_id, update }, .. } => {
                    (data["text/plain"].as_str().unwrap().to_owned(), *update, display_id.clone().unwrap())
                }
                _ => panic!("not a display"),
            })
            .collect();
        assert_eq!(shown[0].0, "Building crate 1: memchr");
        assert_eq!(shown[1].0, "Building crate 2: regex");
        assert!(shown[2].0.starts_with("Built 2 crates in "), "{}", shown[2].0);
        assert_eq!((shown[0].1, shown[1].1, shown[2].1), (false, true, true));
        assert!(shown.iter().all(|(_, _, id)| *id == shown[0].2));
    }

    #[test]
    fn with_the_count_known_a_bar_is_shown_beside_the_text() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&events);
        let mut progress = Progress { sink: Some(Arc::new(move |event| seen.lock().unwrap().push(event))), ..Progress::default() };
        progress.compiled = vec!["memchr".into()];
        progress.to_build = Some(4);
        let text = progress.describe();
        progress.show(&text);
        let events = events.lock().unwrap();
        let EngineEvent::Output { output: Output::Display { data, .. }, .. } = &events[0] else { panic!("not a display") };
        assert_eq!(data["text/plain"], "Building crate 1 of 4: memchr");
        let html = data["text/html"].as_str().unwrap();
        assert!(html.contains("<progress value=\"1\" max=\"4\"") && html.contains("Building crate 1 of 4: memchr"), "{html}");
    }
}
