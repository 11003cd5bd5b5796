//! A failed cell as data: what kind of failure, a one-line message, and what to show of it
//! (where in the cell, rustc's help, our hints). The engine builds these (`diagnostics`);
//! [`crate::render`] alone turns one into what Jupyter shows.

/// A failed cell.
#[derive(Debug, Clone, PartialEq)]
pub struct CellError {
    pub kind: ErrorKind,
    /// What a grader's report or a log shows (Jupyter's `evalue`): its first line is the
    /// useful one.
    pub message: String,
    /// What went wrong and where: one per error rustc reported; one for any other failure.
    pub problems: Vec<Problem>,
    /// Advice about the cell as a whole, after the problems (a variable gone since an earlier
    /// cell).
    pub hints: Vec<String>,
    /// Plain lines at the end: what the failure cost the student, evcxr's own detail.
    pub notes: Vec<String>,
}

/// What kind of failure a cell had: Jupyter's `ename`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The cell did not compile, or was refused before it ran (a `return` in its own code).
    CompileError,
    Panic,
    Interrupted,
    /// The user process died in the cell; the kernel started a new one.
    KernelRestarted,
    /// The kernel itself could not do what the cell asked (a `:restart` failed, the engine is
    /// gone).
    KernelError,
    /// evcxr could not run the cell (a variable whose type it cannot write, say).
    EvaluationError,
    /// An evcxr command this kernel refuses.
    UnsupportedCommand,
    /// A `:dep` of a crate the kernel provides itself.
    DependencyError,
    /// The error a `?` returned from the cell, named by its type (`ParseIntError`).
    Returned { type_name: String },
}

impl ErrorKind {
    /// The name Jupyter shows (`ename`).
    pub fn name(&self) -> &str {
        match self {
            ErrorKind::CompileError => "CompileError",
            ErrorKind::Panic => "Panic",
            ErrorKind::Interrupted => "Interrupted",
            ErrorKind::KernelRestarted => "KernelRestarted",
            ErrorKind::KernelError => "KernelError",
            ErrorKind::EvaluationError => "EvaluationError",
            ErrorKind::UnsupportedCommand => "UnsupportedCommand",
            ErrorKind::DependencyError => "DependencyError",
            ErrorKind::Returned { type_name } => type_name,
        }
    }
}

/// One thing that went wrong: a heading (`error[E0425]: cannot find value ...`), then plain
/// detail lines, the places in the cell, rustc's help and our hints, in that order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Problem {
    /// The heading's first word: `error[E0425]`, `panic`, the error's type.
    pub title: String,
    /// The heading's text.
    pub text: String,
    pub details: Vec<String>,
    pub spans: Vec<Span>,
    /// rustc's help, as evcxr gives it: a message, then (after a blank line) the suggested
    /// replacement, if any.
    pub helps: Vec<String>,
    pub hints: Vec<String>,
}

/// A place the problem points at.
#[derive(Debug, Clone, PartialEq)]
pub enum Span {
    /// Lines of the cell as the student wrote it, with their numbers and text. `start` and
    /// `end` are (line, column), 1-based, columns in characters; with no `end` only the place
    /// is shown, with an `end` on the same line the text is underlined and labelled.
    Cell { start: (usize, usize), end: Option<(usize, usize)>, lines: Vec<(usize, String)>, label: String },
    /// A line of code that an earlier cell defined (a function the cell called).
    EarlierCell { text: String },
}

impl CellError {
    /// An error whose whole story is one message, under its kind's name.
    pub fn one_line(kind: ErrorKind, message: impl Into<String>) -> CellError {
        let message = message.into();
        let problem = Problem { title: kind.name().to_owned(), text: message.clone(), ..Problem::default() };
        CellError { kind, message, problems: vec![problem], hints: vec![], notes: vec![] }
    }

    /// The error with its only (or first) problem's details extended by `line`.
    pub fn with_detail(mut self, line: impl Into<String>) -> CellError {
        if let Some(problem) = self.problems.first_mut() {
            problem.details.push(line.into());
        }
        self
    }

    /// Every text of the error (message, headings, details, labels, help, hints, notes)
    /// rewritten by `rewrite`.
    pub fn map_text(&mut self, rewrite: impl Fn(&str) -> String) {
        let each = |texts: &mut Vec<String>| texts.iter_mut().for_each(|text| *text = rewrite(text));
        self.message = rewrite(&self.message);
        for problem in &mut self.problems {
            problem.text = rewrite(&problem.text);
            each(&mut problem.details);
            each(&mut problem.helps);
            each(&mut problem.hints);
            for span in &mut problem.spans {
                match span {
                    Span::Cell { label, .. } => *label = rewrite(label),
                    Span::EarlierCell { text } => *text = rewrite(text),
                }
            }
        }
        each(&mut self.hints);
        each(&mut self.notes);
    }
}
