//! A progress bar for work that takes a while, moved by the cell or by any of its tasks.
//!
//! ```ignore
//! let bar = tokio::progress::bar("downloads", 20);
//! for _ in 0..20 {
//!     let bar = bar.clone();
//!     tokio::spawn(async move {
//!         tokio::time::sleep(std::time::Duration::from_millis(100)).await;
//!         bar.inc(1);
//!     });
//! }
//! ```
//!
//! It is one display, updated in place ([`crate::display::DisplayHandle`]): an HTML bar in
//! JupyterLab, one line of text where only text is shown (nbconvert's text output): count,
//! percentage, rate, time elapsed and, once there is a rate, the time left. Redrawn at most ten
//! times a second, and once more when it is full or finished, or when its last handle goes.

use crate::display::{self, DisplayHandle};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// A progress bar (see the module's text). Cloning gives another handle to the same bar, for
/// a task to move.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    label: String,
    total: u64,
    done: AtomicU64,
    started: Instant,
    display: DisplayHandle,
    last_drawn: Mutex<Instant>,
    finished: AtomicBool,
}

/// Shows a bar for `total` steps of work named `label`, at 0.
pub fn bar(label: &str, total: u64) -> Progress {
    let started = Instant::now();
    let (text, html) = drawing(label, 0, total, Duration::ZERO, false);
    let display = display::bundle(&[("text/html", &html), ("text/plain", &text)]);
    Progress {
        inner: Arc::new(Inner {
            label: label.to_owned(),
            total,
            done: AtomicU64::new(0),
            started,
            display,
            last_drawn: Mutex::new(started),
            finished: AtomicBool::new(false),
        }),
    }
}

impl Progress {
    /// `steps` more steps are done.
    pub fn inc(&self, steps: u64) {
        let done = self.inner.done.fetch_add(steps, Ordering::AcqRel) + steps;
        self.inner.redraw(done >= self.inner.total);
    }

    /// `done` steps are done in all.
    pub fn set(&self, done: u64) {
        self.inner.done.store(done, Ordering::Release);
        self.inner.redraw(done >= self.inner.total);
    }

    /// The steps done so far.
    pub fn done(&self) -> u64 {
        self.inner.done.load(Ordering::Acquire)
    }

    /// Draws it a last time, as finished (also when not all steps were done).
    pub fn finish(&self) {
        self.inner.finished.store(true, Ordering::Release);
        self.inner.redraw(true);
    }

    /// As a cell's final value it shows nothing more: the bar is shown already.
    pub fn evcxr_display(&self) {}
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Progress({:?}, {}/{})", self.inner.label, self.done(), self.inner.total)
    }
}

impl Inner {
    fn redraw(&self, always: bool) {
        let now = Instant::now();
        {
            let mut last = self.last_drawn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !always && now.duration_since(*last) < REDRAW_EVERY {
                return;
            }
            *last = now;
        }
        let done = self.done.load(Ordering::Acquire);
        let finished = self.finished.load(Ordering::Acquire) || done >= self.total;
        let (text, html) = drawing(&self.label, done, self.total, now.duration_since(self.started), finished);
        self.display.update_bundle(&[("text/html", &html), ("text/plain", &text)]);
    }
}

impl Drop for Inner {
    /// The last handle is gone: the steps counted since the last redraw are shown.
    fn drop(&mut self) {
        self.redraw(true);
    }
}

/// The bar as (plain text, HTML).
fn drawing(label: &str, done: u64, total: u64, elapsed: Duration, finished: bool) -> (String, String) {
    let fraction = if total == 0 { 1.0 } else { (done as f64 / total as f64).min(1.0) };
    let seconds = elapsed.as_secs_f64();
    let mut facts = format!("{done}/{total} ({:.0}%), {seconds:.1} s elapsed", fraction * 100.0);
    if done > 0 && seconds > 0.0 {
        let rate = done as f64 / seconds;
        facts.push_str(&format!(", {rate:.1}/s"));
        if !finished && done < total {
            facts.push_str(&format!(", about {:.1} s left", (total - done) as f64 / rate));
        }
    }
    if finished {
        facts.push_str(", done");
    }
    let width = 30;
    let filled = (fraction * width as f64).round() as usize;
    let text = format!("{label} [{}{}] {facts}", "#".repeat(filled), "-".repeat(width - filled));
    let html = format!(
        "<div class=\"rust-async-progress\"><progress value=\"{done}\" max=\"{}\" style=\"width: 18em; vertical-align: middle\"></progress> \
         <span style=\"font-family: monospace\">{} {}</span></div>",
        total.max(1),
        escape(label),
        escape(&facts)
    );
    (text, html)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
