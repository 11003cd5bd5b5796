# nbgrader course configuration for the rust-async exercises (nbgrader 0.9.6).
#
# This directory is the course directory: run nbgrader from here, with .venv active (nbgrader
# runs `alembic` from PATH), e.g.
#   source .venv/bin/activate && cd notebooks/exercises           (from the repository root)
#   nbgrader generate_assignment coroutines-exercises   # -> release/: no solutions, no hidden tests
#   nbgrader autograde coroutines-exercises             # grades submitted/<student>/coroutines-exercises/
# or, without nbgrader's gradebook: scripts/grade SUBMISSIONS_DIR (see scripts/grade.py).
#
# Notebooks are Rust (kernelspec `rust-async`, language `rust`), so the solution and hidden-test
# markers are Rust comments:
#
#   async fn double_later(x: u64) -> u64 {
#       // ### BEGIN SOLUTION
#       ...                                  <- replaced by `todo!() // YOUR CODE HERE`
#       // ### END SOLUTION
#   }
#
#   assert_eq!(double_later(21).await, 42);
#   // ### BEGIN HIDDEN TESTS
#   ...                                      <- removed from the students' version
#   // ### END HIDDEN TESTS
#
# A stub `todo!()` compiles (as any type), and panics when called: an unanswered task fails its
# test cell with a Panic and scores 0.

import os

# Grading kernels never download (RUST_ASYNC_OFFLINE, as scripts/grade does): a `:dep` in a
# submission only finds crates already in this machine's cargo cache.
os.environ.setdefault("RUST_ASYNC_OFFLINE", "1")

from nbgrader.preprocessors import (
    CheckCellMetadata,
    ClearOutput,
    DeduplicateIds,
    OverwriteCells,
    OverwriteKernelspec,
)

c = get_config()  # noqa: F821 (injected by traitlets)

# --- the course directory: this one, wherever nbgrader is started from --------------------
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))

# --- solution regions (ClearSolutions) -------------------------------------------------------
# The stub is chosen by the notebook's kernelspec language (`rust`); python is kept for any
# Python notebook in the course.
c.ClearSolutions.code_stub = {
    "rust": "todo!() // YOUR CODE HERE",
    "python": "# YOUR CODE HERE\nraise NotImplementedError()",
}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearSolutions.begin_solution_delimeter = "// ### BEGIN SOLUTION"
c.ClearSolutions.end_solution_delimeter = "// ### END SOLUTION"

# --- hidden tests (ClearHiddenTests) ---------------------------------------------------------
c.ClearHiddenTests.begin_test_delimeter = "// ### BEGIN HIDDEN TESTS"
c.ClearHiddenTests.end_test_delimeter = "// ### END HIDDEN TESTS"

# --- autograding -----------------------------------------------------------------------------
# Put back test cells a student deleted. nbgrader prefixes a re-inserted code cell with
# "# " + this notification; for Rust the notification is written so that the result is a
# harmless attribute plus a comment:  `# [cfg(all())] // This cell (id:...) was missing ...`.
c.OverwriteCells.add_missing_cells = True
c.OverwriteCells.missing_cell_notification = (
    "[cfg(all())] // This cell (id:{cell_id}) was missing from the submission. "
    "It was added back by nbgrader.\n"
)


# A student who copies a test cell must not break autograding of their notebook.
class DeduplicateIdsFully(DeduplicateIds):
    """DeduplicateIds that removes the nbgrader metadata of a duplicated cell altogether.

    nbgrader 0.9.6's DeduplicateIds leaves `"nbgrader": {}` on all but the last cell with a
    grade_id, and OverwriteCells.add_missing_task_cells then fails on it (KeyError 'grade_id'):
    a student who copies a test cell could not be autograded at all.
    """

    def preprocess(self, nb, resources):
        nb, resources = super().preprocess(nb, resources)
        for cell in nb.cells:
            if cell.metadata.get("nbgrader") == {}:
                del cell.metadata["nbgrader"]
        return nb, resources


c.Autograde.sanitize_preprocessors = [
    ClearOutput,
    DeduplicateIdsFully,
    OverwriteKernelspec,
    OverwriteCells,
    CheckCellMetadata,
]


# Per-cell limit in seconds. A fresh kernel's first cell also warms up the compiler (5-20 s),
# later cells take about a second. On a timeout nbgrader interrupts the kernel (the kernel
# cancels the cell at its `.await`, or restarts its user-code process after 3 s of CPU work),
# records a CellTimeoutError for that cell and goes on with the next one.
c.Execute.timeout = 60
c.Execute.startup_timeout = 120
c.Execute.interrupt_on_timeout = True
