//! Each engine's private directory (in `$TMPDIR`, `rust-async-*`): evcxr's cell crate and
//! configuration, the socket the user process writes to, and the files through which the
//! engine and the processes it starts pass things on. Removed when the engine is dropped, or
//! by the next kernel when its owner was killed outright.

use crate::host;

/// A new work directory, owned by this process.
pub(crate) fn create() -> std::io::Result<tempfile::TempDir> {
    remove_abandoned();
    let work_dir = tempfile::Builder::new().prefix(WORK_DIR_PREFIX).tempdir()?;
    std::fs::write(work_dir.path().join(OWNER_FILE), std::process::id().to_string())?;
    Ok(work_dir)
}

const WORK_DIR_PREFIX: &str = "rust-async-";
/// In the work directory: the notebook session the user process takes on (see `Session`).
pub(crate) const SESSION_FILE: &str = "session.json";
/// In the work directory: the futures never awaited in the cell's compiles (`never_awaited`).
pub(crate) const NEVER_AWAITED_FILE: &str = "never-awaited";
/// In the work directory: the crate rust-analyzer's process works on (`analysis_process`).
pub(crate) const ANALYSIS_DIR: &str = "analysis";
/// In the work directory: the MIR of the cell crate's last build (`variable_types`).
pub(crate) const CELL_MIR_FILE: &str = "cell.mir";
/// In the work directory: `:fmt` and `:types` for the runtime library (see `protocol`).
pub(crate) const FINAL_VALUE_FORMAT_FILE: &str = "final-value-format";
/// In the work directory: there while the cell about to run asked for a timeline
/// (`:timeline`); the runtime library takes it when the cell starts.
pub(crate) const TIMELINE_NEXT_CELL_FILE: &str = "timeline-next-cell";
/// In the work directory: which runtime cells run on (`:runtime`), read by the runtime
/// library as each cell starts. No file: the multi-thread one.
pub(crate) const RUNTIME_FLAVOUR_FILE: &str = "runtime-flavour";
/// Holds the pid of the kernel that owns a work directory.
const OWNER_FILE: &str = "kernel.pid";

/// A kernel killed outright (SIGKILL) cannot remove its work directory; the next kernel
/// removes those whose owner is gone.
fn remove_abandoned() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = entry.file_name().to_string_lossy().starts_with(WORK_DIR_PREFIX);
        let Some(owner) = is_ours
            .then(|| std::fs::read_to_string(path.join(OWNER_FILE)).ok())
            .flatten()
            .and_then(|pid| pid.trim().parse::<i32>().ok())
        else {
            continue;
        };
        if !host::process_exists(owner) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}
