//! rust-analyzer in a process of its own, for completion and inspection only.
//!
//! Cells never need rust-analyzer (rustc types their variables: `variable_types`). Tab and
//! Shift+Tab do: the first one starts this process, which analyses the standard library, tokio
//! and the cells' other dependencies (seconds, and most of a kernel's memory while it lives).
//! The engine stops it after a while without requests (`Engine::stop_idle_analysis`). Being a
//! process, it gives all of its memory back when it ends; inside the kernel, rust-analyzer's
//! interned data stayed behind (250 MiB measured after dropping it). A crash in it fails a
//! completion, not the kernel.
//!
//! evcxr still writes the source rust-analyzer is shown (the cell inside its earlier items and
//! variables) and maps offsets: this process only answers for that source
//! ([`evcxr::Analysis`]). It works on a crate of its own, `analysis/` beside the cell crate,
//! whose manifest and lock file follow the cell crate's: evcxr's own files are never written
//! from here. A cell crate that gets the runtime library and the course crates from the
//! template, not from cargo (`runtime_library::Linking::Prepared`), does not list them; the
//! analysis crate does, with the template's lock file ([`AnalysisCrate`]).
//!
//! The engine waits for an answer only so long ([`AnalysisControl::patience`]): a Tab in
//! JupyterLab is dropped after a second anyway, and cells must not queue behind the seconds
//! of the first analysis. A request not answered by then fails; the process goes on with it,
//! its answer is dropped when it comes, and requests meanwhile fail at once, with the engine
//! saying that rust-analyzer is starting ([`AnalysisControl::is_starting`]).
//!
//! The protocol is one JSON object a line each way on the process's stdin and stdout:
//! [`Request`] in, [`Reply`] out, in order.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// The kernel binary's argument that makes it this process: `analysis DIR`.
pub const ANALYSIS_COMMAND: &str = "analysis";

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
enum Request {
    SetSource { source: String },
    Completions { position: usize },
    Hover { offset: u32, markdown: bool },
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
enum Reply {
    Done,
    Completions { completions: Vec<Completion>, start_offset: usize, end_offset: usize },
    Hover { text: Option<String> },
    Failed { error: String },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Completion {
    code: String,
    kind: String,
    label: String,
}

/// Runs this process: answers requests on stdin until it closes. Exits with the kernel
/// (`PR_SET_PDEATHSIG`).
pub fn serve(root: &Path) -> ! {
    // SAFETY: setting the parent-death signal; no handler code runs.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let mut analyzer = match evcxr::RustAnalyzer::new(root) {
        Ok(analyzer) => Some(analyzer),
        Err(error) => {
            eprintln!("rust-async: rust-analyzer did not start: {error}");
            None
        }
    };
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let reply = match (serde_json::from_str::<Request>(&line), analyzer.as_mut()) {
            (Err(error), _) => Reply::Failed { error: format!("malformed request: {error}") },
            (Ok(_), None) => Reply::Failed { error: "rust-analyzer did not start".into() },
            (Ok(request), Some(analyzer)) => answer(analyzer, request),
        };
        let mut text = serde_json::to_string(&reply).unwrap_or_default();
        text.push('\n');
        let mut out = stdout.lock();
        if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    std::process::exit(0)
}

fn answer(analyzer: &mut evcxr::RustAnalyzer, request: Request) -> Reply {
    use evcxr::Analysis;
    // rust-analyzer may panic on code it does not expect: one request fails, not the process.
    let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match request {
        Request::SetSource { source } => analyzer.set_source(source).map(|()| Reply::Done),
        Request::Completions { position } => Analysis::completions(analyzer, position).map(|found| Reply::Completions {
            completions: found
                .completions
                .into_iter()
                .map(|completion| Completion {
                    code: completion.code,
                    kind: completion.kind.to_owned(),
                    label: completion.label,
                })
                .collect(),
            start_offset: found.start_offset,
            end_offset: found.end_offset,
        }),
        Request::Hover { offset, markdown } => analyzer.hover(offset, markdown).map(|text| Reply::Hover { text }),
    }));
    match answered {
        Ok(Ok(reply)) => reply,
        Ok(Err(error)) => Reply::Failed { error: error.to_string() },
        Err(_) => Reply::Failed { error: "rust-analyzer panicked".into() },
    }
}

/// What the engine and the analysis process it started share.
#[derive(Default)]
pub(crate) struct AnalysisControl {
    /// How long the engine waits for an answer, in milliseconds.
    patience_ms: AtomicU64,
    /// Whether the process is still busy with a request the engine gave up waiting for.
    starting: AtomicBool,
    /// Whether the process has ended (its replies ended) while the engine still holds it.
    ended: AtomicBool,
}

impl AnalysisControl {
    pub(crate) fn set_patience(&self, patience: Duration) {
        self.patience_ms.store(patience.as_millis() as u64, Ordering::SeqCst);
    }

    fn patience(&self) -> Duration {
        Duration::from_millis(self.patience_ms.load(Ordering::SeqCst))
    }

    /// Whether rust-analyzer is still busy with the work the engine stopped waiting for (its
    /// first analysis of std, tokio and the cells' crates, usually).
    pub(crate) fn is_starting(&self) -> bool {
        self.starting.load(Ordering::SeqCst)
    }

    /// Whether the process ended by itself: killed for memory (see `start`), or crashed.
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

/// What the analysis crate depends on besides what the cell crate lists.
pub(crate) struct AnalysisCrate {
    /// The cell crate.
    pub cell_dir: PathBuf,
    /// The runtime library's manifest for rust-analyzer (`RuntimeLibrary::analysis_manifest`),
    /// written beside the analysis crate, which depends on it as `tokio`.
    pub runtime_manifest: String,
    /// The course crates, (name, spec): each is listed once the cells' code names it.
    /// rust-analyzer holds what it loads: std and tokio, 600 MiB; all the course crates and
    /// what they need, 500 MiB more, which most notebooks never use.
    pub course_crates: Vec<(String, String)>,
    /// The template's lock file, which resolves those.
    pub lock_file: PathBuf,
}

impl AnalysisCrate {
    /// Writes the analysis crate's manifest and lock file in `root`, where they differ, for
    /// the analysis of `source`.
    fn write(&self, root: &Path, source: &str) -> std::io::Result<()> {
        let Ok(mut manifest) = std::fs::read_to_string(self.cell_dir.join("Cargo.toml")) else { return Ok(()) };
        let mut lock_file = self.cell_dir.join("Cargo.lock");
        // evcxr writes `[dependencies]` last: the lines go under it. A cell crate that has
        // the runtime library as a cargo dependency has the course crates too.
        if !manifest.contains("rust-async-runtime") {
            let runtime = root.with_file_name("analysis-runtime");
            std::fs::create_dir_all(&runtime)?;
            write_if_changed(&runtime.join("Cargo.toml"), self.runtime_manifest.as_bytes())?;
            manifest.push('\n');
            manifest.push_str(&format!("tokio = {{ package = \"rust-async-runtime\", path = {:?} }}\n", runtime));
            for (name, spec) in &self.course_crates {
                if names(source, &name.replace('-', "_")) {
                    manifest.push_str(&format!("{name} = {spec}\n"));
                }
            }
            lock_file = self.lock_file.clone();
        }
        write_if_changed(&root.join("Cargo.toml"), manifest.as_bytes())?;
        if let Ok(lock) = std::fs::read(lock_file) {
            write_if_changed(&root.join("Cargo.lock"), &lock)?;
        }
        Ok(())
    }
}

/// Whether `source` has `name` as a word (a path's first segment, a `use`).
fn names(source: &str, name: &str) -> bool {
    source.match_indices(name).any(|(index, _)| {
        let before = source[..index].chars().next_back();
        let after = source[index + name.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}

fn write_if_changed(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).ok().as_deref() != Some(contents) {
        std::fs::write(path, contents)?;
    }
    Ok(())
}

/// The analysis process, seen from the engine.
pub(crate) struct AnalysisProcess {
    child: Child,
    requests: ChildStdin,
    /// Its replies, read by a thread of their own, so that waiting can end.
    replies: Receiver<Option<Reply>>,
    /// Replies still to come to requests the engine stopped waiting for.
    unanswered: usize,
    control: Arc<AnalysisControl>,
    /// What the analysis crate follows.
    analysis_crate: Arc<AnalysisCrate>,
    /// The analysis crate.
    root: PathBuf,
}

impl AnalysisProcess {
    /// Starts one for the cell crate, working in `root`.
    pub(crate) fn start(analysis_crate: Arc<AnalysisCrate>, root: &Path, control: Arc<AnalysisControl>) -> anyhow::Result<AnalysisProcess> {
        std::fs::create_dir_all(root.join("src"))?;
        analysis_crate.write(root, "")?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg(ANALYSIS_COMMAND)
            .arg(root)
            // rust-analyzer asks cargo for the crate graph: everything it needs is in the lock
            // file and cargo's cache; without this, cargo may update its index first.
            .env("CARGO_NET_OFFLINE", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        // The first process the out-of-memory killer takes, when a pod's memory runs out: the
        // kernel, the user's variables and the compile of a cell matter more than completion
        // (the next Tab starts it again). Raising a child's score needs no privilege.
        let _ = std::fs::write(format!("/proc/{}/oom_score_adj", child.id()), "1000");
        control.ended.store(false, Ordering::SeqCst);
        let ended = Arc::clone(&control);
        let requests = child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (sender, replies) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("analysis-replies".into()).spawn(move || {
            for line in BufReader::new(stdout).lines() {
                // `None`: a line that is not a reply; the end of the process ends the loop.
                let Ok(line) = line else { break };
                if sender.send(serde_json::from_str(&line).ok()).is_err() {
                    break;
                }
            }
            ended.ended.store(true, Ordering::SeqCst);
        })?;
        control.starting.store(false, Ordering::SeqCst);
        Ok(AnalysisProcess {
            child,
            requests,
            replies,
            unanswered: 0,
            control,
            analysis_crate,
            root: root.to_owned(),
        })
    }

    fn ask(&mut self, request: &Request) -> anyhow::Result<Reply> {
        // Replies to requests given up on come first, in order.
        while self.unanswered > 0 {
            match self.replies.try_recv() {
                Ok(_) => self.unanswered -= 1,
                Err(std::sync::mpsc::TryRecvError::Empty) => anyhow::bail!("rust-analyzer is still starting"),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => anyhow::bail!("rust-analyzer's process ended"),
            }
        }
        self.control.starting.store(false, Ordering::SeqCst);
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        self.requests.write_all(line.as_bytes())?;
        self.requests.flush()?;
        match self.replies.recv_timeout(self.control.patience()) {
            Ok(Some(Reply::Failed { error })) => anyhow::bail!(error),
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => anyhow::bail!("rust-analyzer's process answered out of turn"),
            Err(RecvTimeoutError::Timeout) => {
                self.unanswered += 1;
                self.control.starting.store(true, Ordering::SeqCst);
                anyhow::bail!("rust-analyzer is still starting")
            }
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("rust-analyzer's process ended"),
        }
    }
}

impl evcxr::Analysis for AnalysisProcess {
    fn set_source(&mut self, source: String) -> anyhow::Result<()> {
        // A `:dep` changes the cell crate's manifest: rust-analyzer then loads the new crate.
        self.analysis_crate.write(&self.root, &source)?;
        self.ask(&Request::SetSource { source }).map(|_| ())
    }

    fn completions(&mut self, position: usize) -> anyhow::Result<evcxr::Completions> {
        match self.ask(&Request::Completions { position })? {
            Reply::Completions { completions, start_offset, end_offset } => Ok(evcxr::Completions {
                completions: completions
                    .into_iter()
                    .map(|completion| evcxr::Completion {
                        code: completion.code,
                        kind: completion_kind(&completion.kind),
                        label: completion.label,
                    })
                    .collect(),
                start_offset,
                end_offset,
            }),
            _ => anyhow::bail!("rust-analyzer's process answered out of turn"),
        }
    }

    fn hover(&mut self, offset: u32, markdown: bool) -> anyhow::Result<Option<String>> {
        match self.ask(&Request::Hover { offset, markdown })? {
            Reply::Hover { text } => Ok(text),
            _ => anyhow::bail!("rust-analyzer's process answered out of turn"),
        }
    }
}

impl Drop for AnalysisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.control.starting.store(false, Ordering::SeqCst);
    }
}

/// The kinds evcxr gives completions (a `&'static str` there).
fn completion_kind(kind: &str) -> &'static str {
    ["function", "class", "module", "keyword", "magic"].into_iter().find(|known| *known == kind).unwrap_or("instance")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_one_json_line_each() {
        let request = serde_json::to_string(&Request::Hover { offset: 12, markdown: true }).unwrap();
        assert_eq!(request, r#"{"request":"hover","offset":12,"markdown":true}"#);
        let reply: Reply = serde_json::from_str(r#"{"reply":"failed","error":"no"}"#).unwrap();
        assert!(matches!(reply, Reply::Failed { error } if error == "no"));
        assert_eq!(completion_kind("class"), "class");
        assert!(names("use serde::Serialize;", "serde"));
        assert!(names("let v: serde_json::Value = x;", "serde_json"));
        assert!(!names("let v: serde_json::Value = x;", "serde"));
        assert!(!names("let my_axum = 1;", "axum"));
        assert_eq!(completion_kind("unheard-of"), "instance");
    }
}
