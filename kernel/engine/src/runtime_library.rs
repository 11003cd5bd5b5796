//! Where the runtime library lives and how it is prepared once, so kernels never build tokio.
//!
//! A kernel's cells link the prepared build in place ([`Linking::Prepared`]): the cell crate
//! has no cargo dependencies at all, and the kernel's rustc wrapper gives rustc the runtime
//! library and the course crates from the template (`--extern`, a list written while the
//! template was built). So cargo, at every cell, has one crate to check rather than the ~180
//! of the runtime library's graph (50 ms a cell with the course crates), and a kernel copies
//! nothing. Once a cell adds a crate of its own (`:dep`, `extern crate`), cargo must resolve
//! it with the same tokio and course crates: the kernel then switches, for good, to
//! [`Linking::Cargo`], where they are cargo dependencies of the cell crate, built in its own
//! directory, which is first seeded with the template's build as follows.
//!
//! Cells depend on the runtime library as `tokio = { package = "rust-async-runtime", path }`.
//! Building it (tokio included) takes 15-25 s, so `prepare` does it once at set-up: it runs a
//! real engine whose cell directory is the *template*, which leaves cargo's finished artifacts
//! there. A kernel seeds its own private cell directory with the template's `target/` and
//! `Cargo.lock` before its first cell, and cargo finds the runtime library already fresh: the
//! compiled dependencies (`deps/`, nearly all of the template's size, which grows with every
//! crate the runtime library links) as hard links, read-only, so that no kernel can change them
//! for the others; the rest, which cargo rewrites in place (fingerprints, the cell crate's own
//! files), as copies. Each kernel has its own directory, so a class of kernels on one server
//! never wait on a shared lock, and the template itself is only read.

use crate::host::FileLock;
use crate::{Engine, EngineError, EventSink};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The flags cells, the runtime library and tokio are compiled with: evcxr's dynamic linking
/// of std (every cell must share one std and one tokio), and tokio's unstable API, for the
/// task hooks that credit a task's output to the cell that spawned it.
pub(crate) const CELL_RUSTFLAGS: &str = "-Cprefer-dynamic --cfg tokio_unstable";

#[derive(Clone)]
pub struct RuntimeLibrary {
    /// The runtime library's crate (kernel/runtime in the checkout).
    source: PathBuf,
    /// Where `prepare` leaves its template (target/rust-async-runtime in the checkout).
    prepared: PathBuf,
    /// [`RuntimeLibrary::fingerprint`], worked out once (it runs `rustc -vV`).
    fingerprint: std::sync::OnceLock<String>,
}

/// The runtime library's manifest lists the course crates in the dependency table of this
/// target, always true, which cargo takes as plain dependencies (see kernel/runtime/Cargo.toml).
const COURSE_CRATES_TARGET: &str = "cfg(all())";

/// A dependency's spec as TOML for a manifest line: `"1"`, `{ version = "1", ... }`.
fn spec_text(spec: &toml::Value) -> String {
    match spec {
        toml::Value::Table(table) => {
            let fields: Vec<String> = table.iter().map(|(key, value)| format!("{key} = {value}")).collect();
            format!("{{ {} }}", fields.join(", "))
        }
        other => other.to_string(),
    }
}

/// In the template: the arguments that give the cell crate the runtime library and the
/// course crates (see [`Linking::Prepared`]).
const CELL_EXTERNS_FILE: &str = "cell-externs";

/// How cells get the runtime library and the course crates (see the module's text).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Linking {
    /// From the template, through the rustc wrapper, with this list of arguments.
    Prepared { externs: PathBuf },
    /// As cargo dependencies of the cell crate.
    Cargo,
}

/// Environment variable overriding where the prepared runtime library is.
pub const PREPARED_DIR_ENV: &str = "RUST_ASYNC_RUNTIME_DIR";
/// Environment variable overriding which runtime library crate cells link (another build of
/// it, such as `scripts/bench`'s prototype with more crates). Give it its own
/// [`PREPARED_DIR_ENV`] too.
pub const SOURCE_DIR_ENV: &str = "RUST_ASYNC_RUNTIME_SOURCE";

impl RuntimeLibrary {
    /// The runtime library of the checkout this kernel was built from (unless the environment
    /// names another).
    pub fn locate() -> RuntimeLibrary {
        let root = crate::source_root().join("../..");
        let root = root.canonicalize().unwrap_or(root);
        let prepared = std::env::var_os(PREPARED_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/rust-async-runtime"));
        let source = std::env::var_os(SOURCE_DIR_ENV).map_or_else(|| root.join("kernel/runtime"), PathBuf::from);
        RuntimeLibrary { source, prepared, fingerprint: Default::default() }
    }

    /// The runtime library as the cells' dependency `tokio`.
    pub(crate) fn dependency_spec(&self) -> String {
        format!("{{ package = \"rust-async-runtime\", path = \"{}\" }}", self.source.display())
    }

    /// The course crates: each as (package name, dependency spec), as the runtime library's
    /// manifest lists them in its table `[target.'cfg(all())'.dependencies]`. Every cell
    /// depends on each with the same spec, so cargo finds the build the library made.
    pub fn course_crates(&self) -> Result<Vec<(String, String)>, EngineError> {
        let path = self.source.join("Cargo.toml");
        let manifest: toml::Table = std::fs::read_to_string(&path)?
            .parse()
            .map_err(|error| EngineError::Evcxr(format!("{}: {error}", path.display())))?;
        let table = manifest
            .get("target")
            .and_then(|targets| targets.get(COURSE_CRATES_TARGET))
            .and_then(|target| target.get("dependencies"))
            .and_then(toml::Value::as_table);
        Ok(table
            .into_iter()
            .flatten()
            .map(|(name, spec)| (name.clone(), spec_text(spec)))
            .collect())
    }

    fn template(&self) -> PathBuf {
        self.prepared.join("template")
    }

    fn stamp_path(&self) -> PathBuf {
        self.prepared.join("stamp")
    }

    /// What the template was built from: the library's sources, its lock file and the compiler.
    fn fingerprint(&self) -> String {
        self.fingerprint.get_or_init(|| self.work_out_fingerprint()).clone()
    }

    fn work_out_fingerprint(&self) -> String {
        let mut files = vec![self.source.join("Cargo.toml"), self.source.join("Cargo.lock")];
        let mut sources: Vec<PathBuf> = std::fs::read_dir(self.source.join("src"))
            .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
            .unwrap_or_default();
        sources.sort();
        files.extend(sources);
        let mut inputs = String::new();
        for file in files {
            inputs.push_str(&file.display().to_string());
            inputs.push_str(&std::fs::read_to_string(file).unwrap_or_default());
        }
        inputs.push_str(crate::prelude::PRELUDE);
        inputs.push_str("dependencies at opt-level 2 (parent .cargo/config.toml), cells at ");
        inputs.push_str(CELL_OPT_LEVEL);
        inputs.push_str(CELL_RUSTFLAGS);
        inputs.push_str("rustc wrapped by the kernel binary (never_awaited, the cell's MIR)");
        inputs.push_str("dependencies checked too (cargo check of a failing let)");
        inputs.push_str("compiled dependencies read-only, shared as hard links");
        inputs.push_str("cells link the template in place (cell-externs)");
        let rustc = Command::new("rustc").arg("-vV").output().map(|out| out.stdout).unwrap_or_default();
        inputs.push_str(&String::from_utf8_lossy(&rustc));
        crate::host::fingerprint(&inputs)
    }

    pub fn is_prepared(&self) -> bool {
        std::fs::read_to_string(self.stamp_path()).ok() == Some(self.fingerprint())
    }

    /// How a new kernel's cells link the library: the prepared build in place, when there is
    /// one.
    pub(crate) fn linking(&self) -> Linking {
        let externs = self.template().join(CELL_EXTERNS_FILE);
        if self.is_prepared() && externs.is_file() {
            Linking::Prepared { externs }
        } else {
            Linking::Cargo
        }
    }

    /// Gives evcxr's state what cells need: async mode (every cell runs on the shared
    /// runtime), and the runtime library and course crates as `linking` says.
    pub(crate) fn configure_cells(
        &self,
        state: &mut evcxr::ContextState,
        linking: &Linking,
        course_crates: &[(String, String)],
    ) -> Result<(), EngineError> {
        let failed = |error: evcxr::Error| EngineError::Evcxr(error.to_string());
        state.set_async_mode(true);
        match linking {
            Linking::Prepared { externs } => {
                state.set_build_env(crate::rustc_wrapper::CELL_EXTERNS_ENV, &externs.to_string_lossy())
            }
            Linking::Cargo => {
                state.set_build_env(crate::rustc_wrapper::CELL_EXTERNS_ENV, "");
                // Built at set-up: never checked or built again here.
                state.add_dep_unchecked("tokio", &self.dependency_spec()).map_err(failed)?;
                for (name, spec) in course_crates {
                    state.add_dep_unchecked(name, spec).map_err(failed)?;
                }
            }
        }
        Ok(())
    }

    /// The runtime library's manifest as rust-analyzer is shown it: without the course crates
    /// (it would load every crate they need, 500 MiB, for each Tab; the analysis crate lists
    /// those the cells name), without the build script, with its sources where they are.
    pub(crate) fn analysis_manifest(&self) -> Result<String, EngineError> {
        let path = self.source.join("Cargo.toml");
        let mut manifest: toml::Table = std::fs::read_to_string(&path)?
            .parse()
            .map_err(|error| EngineError::Evcxr(format!("{}: {error}", path.display())))?;
        if let Some(toml::Value::Table(targets)) = manifest.get_mut("target") {
            targets.remove(COURSE_CRATES_TARGET);
        }
        if let Some(toml::Value::Table(package)) = manifest.get_mut("package") {
            package.remove("build");
        }
        if let Some(toml::Value::Table(lib)) = manifest.get_mut("lib") {
            let sources = self.source.join("src/lib.rs");
            lib.insert("path".into(), toml::Value::String(sources.to_string_lossy().into_owned()));
        }
        toml::to_string(&manifest).map_err(|error| EngineError::Evcxr(error.to_string()))
    }

    /// The lock file that resolves the runtime library and the course crates.
    pub(crate) fn template_lock_file(&self) -> PathBuf {
        self.template().join("Cargo.lock")
    }

    /// Has the template's build write the cell crate's arguments for [`Linking::Prepared`].
    pub(crate) fn record_cell_externs(&self, state: &mut evcxr::ContextState, building: &Path) {
        state.set_build_env(
            crate::rustc_wrapper::CELL_EXTERNS_RECORD_ENV,
            &building.join(CELL_EXTERNS_FILE).to_string_lossy(),
        );
    }

    /// The toolchain's library folder (its libstd), for the user process's loader. Cells link
    /// libstd dynamically, and rustc's rpath to it is relative to the folder rustc writes a
    /// cell to (`deps/`), while evcxr loads the copy one folder up: whenever the toolchain and
    /// the cell folder share a parent other than `/` (a checkout and `~/.rustup` both in
    /// `$HOME` with `TMPDIR` there too, a toolchain beside the kernel in an image), that path
    /// misses and evcxr cannot start. Read from the template, where preparing notes it; asked
    /// of rustc (and noted there) when missing.
    pub(crate) fn toolchain_libdir(&self) -> Option<PathBuf> {
        let noted = self.template().join(TARGET_LIBDIR_FILE);
        if let Some(libdir) = std::fs::read_to_string(&noted).ok().map(|text| PathBuf::from(text.trim())).filter(|dir| dir.is_dir()) {
            return Some(libdir);
        }
        let libdir = ask_rustc_for_target_libdir()?;
        if self.is_prepared() {
            let _ = std::fs::write(&noted, libdir.to_string_lossy().as_bytes());
        }
        Some(libdir)
    }

    /// Builds the template, unless it is already up to date. Needs the crates in cargo's
    /// registry cache (`cargo fetch` of the library's lock file, done here too).
    pub fn prepare(&self) -> Result<(), EngineError> {
        if self.is_prepared() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.prepared)?;
        // One preparer at a time (two set-ups at once would build into each other's files).
        let _lock = FileLock::exclusive(&self.prepared.join("lock"))?;
        if self.is_prepared() {
            return Ok(());
        }
        let fetched = Command::new("cargo")
            .args(["fetch", "--locked", "--manifest-path"])
            .arg(self.source.join("Cargo.toml"))
            .status()?;
        if !fetched.success() {
            return Err(EngineError::Evcxr("cargo fetch of the runtime library failed".into()));
        }
        // Build beside the template, then swap it in: kernels starting meanwhile see either
        // the old complete template or none, never a half-built one.
        let building = self.prepared.join("template-building");
        if building.exists() {
            std::fs::remove_dir_all(&building)?;
        }
        std::fs::create_dir_all(&building)?;
        let discard: EventSink = std::sync::Arc::new(|_| {});
        let mut engine = Engine::start_in(self, discard, Some(&building))?;
        engine.check_dependencies_once()?;
        drop(engine);
        let _ = std::fs::remove_file(self.stamp_path());
        let template = self.template();
        if template.exists() {
            std::fs::remove_dir_all(&template)?;
        }
        make_dependencies_read_only(&building.join("target"))?;
        // The list names files in the directory built; they will be in the template's.
        let externs = std::fs::read_to_string(building.join(CELL_EXTERNS_FILE))
            .map_err(|error| EngineError::Evcxr(format!("the template's build wrote no {CELL_EXTERNS_FILE}: {error}")))?;
        let externs = externs.replace(&*building.to_string_lossy(), &template.to_string_lossy());
        std::fs::write(building.join(CELL_EXTERNS_FILE), externs)?;
        if let Some(libdir) = ask_rustc_for_target_libdir() {
            std::fs::write(building.join(TARGET_LIBDIR_FILE), libdir.to_string_lossy().as_bytes())?;
        }
        std::fs::rename(&building, &template)?;
        std::fs::write(self.stamp_path(), self.fingerprint())?;
        Ok(())
    }

    /// Gives a new kernel's cell directory the prepared build, so its first cell compiles only
    /// the cell. Without a prepared template the kernel still works, only slower. While
    /// preparing, the cell directory is the template: it only gets the library's lock file,
    /// so every kernel uses the pinned tokio.
    pub(crate) fn seed_cell_dir(&self, cell_dir: &Path, preparing: bool) -> Result<(), EngineError> {
        if preparing {
            std::fs::copy(self.source.join("Cargo.lock"), cell_dir.join("Cargo.lock"))?;
            return Ok(());
        }
        let template = self.template();
        if !self.is_prepared() {
            eprintln!("rust-async: {}", EngineError::RuntimeNotPrepared(self.prepared.clone()));
            return Ok(());
        }
        if let Err(error) = copy_template(&template, cell_dir) {
            // Still usable: cargo then builds the runtime library for this kernel (slowly).
            eprintln!("rust-async: could not copy the prepared runtime library: {error}");
        }
        Ok(())
    }
}

/// In the template: the toolchain's library folder ([`RuntimeLibrary::toolchain_libdir`]).
const TARGET_LIBDIR_FILE: &str = "target-libdir";

/// `rustc --print target-libdir`, of the rustc cargo runs (`RUSTC`, else the one on `PATH`).
fn ask_rustc_for_target_libdir() -> Option<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc).args(["--print", "target-libdir"]).output().ok()?;
    let libdir = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    libdir.is_dir().then_some(libdir)
}

/// The runtime library and tokio stay optimised whatever the cells' own optimisation level
/// (`CELL_OPT_LEVEL`, or what the user sets with `:opt`, which evcxr writes into the cell
/// crate's manifest). evcxr writes the cell crate's own `.cargo/config.toml`; cargo also reads
/// one in the parent directory, where this goes. The template is prepared with the same
/// profile, so kernels find its build fresh.
pub(crate) fn write_cargo_profile(cell_dir: &Path) -> std::io::Result<()> {
    let Some(parent) = cell_dir.parent() else { return Ok(()) };
    std::fs::create_dir_all(parent.join(".cargo"))?;
    std::fs::write(parent.join(".cargo/config.toml"), "[profile.dev.package.\"*\"]\nopt-level = 2\n")
}

/// Cells compile unoptimised unless the user asks otherwise (`:opt 2`): a cell is small and
/// usually runs once, so its compile time is what the student waits for.
pub(crate) const CELL_OPT_LEVEL: &str = "0";

/// Whether cargo leaves `file` (in the template's `target/`) as it is once built: a compiled
/// dependency, never the cell crate's own output (`ctx`), which every cell rebuilds.
fn is_immutable_artifact(file: &Path) -> bool {
    let in_deps = file.parent().and_then(Path::file_name).is_some_and(|name| name == "deps");
    let name = file.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    in_deps && !(name.starts_with("libctx") || name.starts_with("ctx-") || name.starts_with("ctx."))
}

/// The template's compiled dependencies become read-only: kernels share them as hard links,
/// and a write to one would change it for every kernel.
fn make_dependencies_read_only(target: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    walk_files(target, &mut |file| {
        if is_immutable_artifact(file) {
            let mut permissions = std::fs::metadata(file)?.permissions();
            permissions.set_mode(permissions.mode() & !0o222);
            std::fs::set_permissions(file, permissions)?;
        }
        Ok(())
    })
}

fn walk_files(directory: &Path, visit: &mut dyn FnMut(&Path) -> std::io::Result<()>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            walk_files(&entry.path(), visit)?;
        } else {
            visit(&entry.path())?;
        }
    }
    Ok(())
}

/// Seeds a cell directory from the template: compiled dependencies hard-linked, the rest
/// copied with its modification times (cargo compares them to tell what is fresh). What the
/// cell directory has already stays: it may be a cell's library that the user process has
/// loaded (written over, it would crash the process with SIGBUS), and the template's own
/// cells' libraries are not copied.
fn copy_template(template: &Path, cell_dir: &Path) -> std::io::Result<()> {
    let source = template.join("target");
    let target = cell_dir.join("target");
    walk_files(&source, &mut |file| {
        let relative = file.strip_prefix(&source).map_err(std::io::Error::other)?;
        let destination = target.join(relative);
        let is_cell_library = file.file_name().is_some_and(|name| name.to_string_lossy().starts_with("libcode_"));
        if is_cell_library || destination.exists() {
            return Ok(());
        }
        if let Some(parent) = destination.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if is_immutable_artifact(file) && std::fs::hard_link(file, &destination).is_ok() {
            return Ok(());
        }
        std::fs::copy(file, &destination)?;
        let modified = std::fs::metadata(file)?.modified()?;
        // Opened to read only: the copy of a read-only file is read-only too, and its owner
        // may set its times without write access (for any user but root, a write open fails).
        std::fs::File::open(&destination)?.set_modified(modified)?;
        Ok(())
    })?;
    std::fs::copy(template.join("Cargo.lock"), cell_dir.join("Cargo.lock"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_template_file_is_copied_with_its_modification_time() {
        use std::os::unix::fs::PermissionsExt;
        let template = tempfile::tempdir().unwrap();
        let cell_dir = tempfile::tempdir().unwrap();
        let fingerprint = template.path().join("target/debug/.fingerprint/tokio-1/lib-tokio");
        std::fs::create_dir_all(fingerprint.parent().unwrap()).unwrap();
        std::fs::write(&fingerprint, "abc").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        std::fs::File::open(&fingerprint).unwrap().set_modified(old).unwrap();
        std::fs::set_permissions(&fingerprint, std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::write(template.path().join("Cargo.lock"), "").unwrap();
        copy_template(template.path(), cell_dir.path()).unwrap();
        let copy = cell_dir.path().join("target/debug/.fingerprint/tokio-1/lib-tokio");
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), "abc");
        assert_eq!(std::fs::metadata(&copy).unwrap().modified().unwrap(), old, "cargo compares these times");
    }

    #[test]
    fn course_crates_are_read_from_their_table_with_their_specs() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(
            directory.path().join("Cargo.toml"),
            "[package]\nname = \"rust-async-runtime\"\n[dependencies]\ntokio = \"1\"\n\
             [target.'cfg(all())'.dependencies]\nserde = { version = \"1\", features = [\"derive\"] }\n\
             tokio-stream = \"0.1\"\nreqwest = { version = \"0.12\", default-features = false }\n",
        )
        .unwrap();
        let library = RuntimeLibrary { source: directory.path().into(), prepared: directory.path().into(), fingerprint: Default::default() };
        let crates = library.course_crates().unwrap();
        assert_eq!(
            crates,
            [
                ("reqwest".to_owned(), "{ default-features = false, version = \"0.12\" }".to_owned()),
                ("serde".to_owned(), "{ features = [\"derive\"], version = \"1\" }".to_owned()),
                ("tokio-stream".to_owned(), "\"0.1\"".to_owned()),
            ]
        );
    }

    #[test]
    fn only_compiled_dependencies_are_shared() {
        for shared in ["t/debug/deps/libtokio-0a1b.rlib", "t/debug/deps/librust_async-9f.so", "t/debug/deps/tokio-0a1b.d"] {
            assert!(is_immutable_artifact(Path::new(shared)), "{shared}");
        }
        for copied in [
            "t/debug/deps/libctx-77.so",
            "t/debug/deps/ctx-77.d",
            "t/debug/.fingerprint/tokio-0a1b/lib-tokio",
            "t/debug/incremental/ctx-1/s-abc/query-cache.bin",
            "t/debug/librust_async.so",
        ] {
            assert!(!is_immutable_artifact(Path::new(copied)), "{copied}");
        }
    }
}
