//! The kernel's binary as cargo's `RUSTC_WRAPPER` while cells compile: it runs rustc with the
//! arguments cargo gave, and
//! - notes the futures a cell makes and never awaits (`never_awaited`);
//! - has rustc write the cell crate's MIR when it builds it, where the engine reads the types
//!   of the cell's new variables (`variable_types`);
//! - compiles other crates (those of a `:dep`) through sccache when there is one
//!   ([`SCCACHE_ENV`]), so that a second kernel, of any user sharing its cache, finds them
//!   compiled (sccache cannot cache a cell's crate, a `cdylib`: evcxr #184);
//! - gives the cell crate the prepared runtime library and course crates (`--extern`, read
//!   from the template's list: see `runtime_library`), so that cargo has none of them to
//!   check at each cell; or, while the template is prepared, writes that list.

use crate::never_awaited::{note_down, note_of, NOTES_FILE_ENV};
use crate::variable_types::CELL_MIR_ENV;
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::Path;

/// evcxr's name for the crate of a cell.
const CELL_CRATE: &str = "ctx";

/// When this process is cargo's rustc wrapper, runs rustc and exits with its status.
/// Call first thing in `main`; does nothing otherwise.
pub fn wrap_rustc_if_asked() {
    let notes = std::env::var_os(NOTES_FILE_ENV);
    let cell_mir = std::env::var_os(CELL_MIR_ENV);
    if notes.is_none() && cell_mir.is_none() {
        return;
    }
    let mut args = std::env::args_os().skip(1);
    let Some(rustc) = args.next() else { return };
    let mut args: Vec<OsString> = args.collect();
    let is_cell_crate = args.windows(2).any(|pair| pair[0] == "--crate-name" && pair[1] == CELL_CRATE);
    if is_cell_crate {
        // A build's (not a `cargo check`'s, which gives `.rmeta` files that cannot be linked).
        let links = args.iter().any(|arg| arg.to_string_lossy().starts_with("--emit") && arg.to_string_lossy().contains("link"));
        if let Some(list) = std::env::var_os(CELL_EXTERNS_RECORD_ENV).filter(|list| !list.is_empty() && links) {
            if let Err(error) = std::fs::write(&list, dependency_arguments(&args).join("\n")) {
                eprintln!("rust-async-kernel: could not write {}: {error}", list.to_string_lossy());
            }
        }
        if let Some(list) = std::env::var_os(CELL_EXTERNS_ENV).filter(|list| !list.is_empty()) {
            match std::fs::read_to_string(&list) {
                Ok(text) => {
                    let lines: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
                    args.extend(lines.iter().map(OsString::from));
                    args.extend(absolute_rpaths(&lines).into_iter().map(OsString::from));
                }
                Err(error) => eprintln!("rust-async-kernel: could not read {}: {error}", list.to_string_lossy()),
            }
        }
    }
    if let Some(cell_mir) = cell_mir {
        // A build that fails leaves none: the engine never reads an earlier cell's MIR.
        let _ = std::fs::remove_file(&cell_mir);
        emit_mir_of_cell_crate(&mut args, Path::new(&cell_mir));
    }
    let mut command = match std::env::var_os(SCCACHE_ENV).filter(|sccache| !sccache.is_empty() && !is_cell_crate) {
        Some(sccache) => {
            let mut command = std::process::Command::new(sccache);
            command.arg(&rustc);
            // Its server stops after two idle minutes, unless told otherwise.
            if std::env::var_os("SCCACHE_IDLE_TIMEOUT").is_none() {
                command.env("SCCACHE_IDLE_TIMEOUT", "120");
            }
            command
        }
        None => std::process::Command::new(&rustc),
    };
    let mut child = match command
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            eprintln!("rust-async-kernel: could not run {}: {error}", rustc.to_string_lossy());
            std::process::exit(101);
        }
    };
    if let Some(stderr) = child.stderr.take() {
        let mut ours = std::io::stderr().lock();
        for line in std::io::BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
            let _ = ours.write_all(&line);
            let _ = ours.write_all(b"\n");
            if let (Some(notes), Some(note)) = (&notes, std::str::from_utf8(&line).ok().and_then(note_of)) {
                note_down(Path::new(notes), &note);
            }
        }
    }
    let status = child.wait().map(|status| status.code().unwrap_or(101)).unwrap_or(101);
    std::process::exit(status);
}

/// sccache, through which the wrapper compiles crates other than the cell's (the kernelspec of
/// an environment that has it sets this; `SCCACHE_DIR` says where its cache is, by default
/// the user's; point it at a shared directory for the kernels of every user of a machine).
pub const SCCACHE_ENV: &str = "RUST_ASYNC_SCCACHE";

/// Set for cargo while cells compile without cargo dependencies: a file listing the arguments
/// that give the cell crate the runtime library and the course crates (`--extern NAME=PATH`,
/// `-L dependency=DIR`), one a line.
pub const CELL_EXTERNS_ENV: &str = "RUST_ASYNC_CELL_EXTERNS";

/// Set for cargo while the template is prepared: where to write those arguments, as cargo
/// gives them to the cell crate (whose dependencies are then the runtime library and the
/// course crates).
pub const CELL_EXTERNS_RECORD_ENV: &str = "RUST_ASYNC_RECORD_CELL_EXTERNS";

/// Linker arguments that let the loader find the dylibs in the `-L dependency=DIR` folders of
/// `arguments` (the runtime library) by their absolute paths. rustc's own rpath is relative
/// to the folder it writes the cell to (`deps/`), but evcxr loads the copy cargo puts one
/// folder up: with the template and the cell under a common folder (both in `/tmp`), that
/// relative path misses.
fn absolute_rpaths(arguments: &[&str]) -> Vec<String> {
    arguments
        .windows(2)
        .filter(|pair| pair[0] == "-L")
        .filter_map(|pair| pair[1].strip_prefix("dependency="))
        .flat_map(|directory| ["-C".to_owned(), format!("link-arg=-Wl,-rpath,{directory}")])
        .collect()
}

/// The `--extern` and `-L` arguments of a rustc command line, each flag and its value on a
/// line of their own, with paths made absolute.
fn dependency_arguments(args: &[OsString]) -> Vec<String> {
    let directory = std::env::current_dir().unwrap_or_default();
    let absolute = |path: &str| {
        let path = Path::new(path);
        if path.is_absolute() { path.to_path_buf() } else { directory.join(path) }.to_string_lossy().into_owned()
    };
    let mut found = Vec::new();
    for pair in args.windows(2) {
        let (flag, value) = (pair[0].to_string_lossy(), pair[1].to_string_lossy());
        let value = match &*flag {
            "--extern" => match value.split_once('=') {
                Some((name, path)) => format!("{name}={}", absolute(path)),
                None => value.into_owned(),
            },
            "-L" => match value.split_once('=') {
                Some((kind, path)) => format!("{kind}={}", absolute(path)),
                None => absolute(&value),
            },
            _ => continue,
        };
        found.push(flag.into_owned());
        found.push(value);
    }
    found
}

/// Adds `mir=PATH` to what rustc emits when it builds (links) the cell crate: a `cargo check`
/// emits no code and is left alone.
fn emit_mir_of_cell_crate(args: &mut [OsString], path: &Path) {
    let is_cell_crate = args.windows(2).any(|pair| pair[0] == "--crate-name" && pair[1] == CELL_CRATE);
    if !is_cell_crate {
        return;
    }
    let mut value_next = false;
    for arg in args.iter_mut() {
        let text = arg.to_string_lossy().into_owned();
        let kinds = if value_next {
            Some(text.as_str())
        } else {
            text.strip_prefix("--emit=")
        };
        value_next = text == "--emit";
        let Some(kinds) = kinds else { continue };
        if kinds.split(',').any(|kind| kind == "link") {
            let mut with_mir = OsString::from(if kinds.len() == text.len() { "" } else { "--emit=" });
            with_mir.push(kinds);
            with_mir.push(",mir=");
            with_mir.push(path);
            *arg = with_mir;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<OsString> {
        text.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn the_dependency_arguments_of_the_cell_crate_are_recorded_with_absolute_paths() {
        let recorded = dependency_arguments(&args(
            "--crate-name ctx --extern tokio=/t/deps/librust_async.so -L dependency=/t/deps --extern serde=rel/libserde.rlib -C opt-level=0",
        ));
        let here = std::env::current_dir().unwrap().join("rel/libserde.rlib");
        assert_eq!(
            recorded,
            ["--extern", "tokio=/t/deps/librust_async.so", "-L", "dependency=/t/deps", "--extern", &format!("serde={}", here.display())]
        );
    }

    #[test]
    fn the_runtime_librarys_folder_is_searched_by_its_absolute_path() {
        let recorded = ["--extern", "tokio=/t/deps/librust_async.so", "-L", "dependency=/t/deps", "-L", "native=/n"];
        assert_eq!(absolute_rpaths(&recorded), ["-C", "link-arg=-Wl,-rpath,/t/deps"]);
    }

    #[test]
    fn the_cell_crate_builds_with_its_mir_written() {
        let path = Path::new("/w/cell.mir");
        let mut cell = args("--crate-name ctx --edition=2024 --emit=dep-info,link -C opt-level=0");
        emit_mir_of_cell_crate(&mut cell, path);
        assert_eq!(cell, args("--crate-name ctx --edition=2024 --emit=dep-info,link,mir=/w/cell.mir -C opt-level=0"));

        let mut separate = args("--crate-name ctx --emit link");
        emit_mir_of_cell_crate(&mut separate, path);
        assert_eq!(separate, args("--crate-name ctx --emit link,mir=/w/cell.mir"));

        let mut check = args("--crate-name ctx --emit=dep-info,metadata");
        emit_mir_of_cell_crate(&mut check, path);
        assert_eq!(check, args("--crate-name ctx --emit=dep-info,metadata"));

        let mut dependency = args("--crate-name serde --emit=dep-info,link");
        emit_mir_of_cell_crate(&mut dependency, path);
        assert_eq!(dependency, args("--crate-name serde --emit=dep-info,link"));
    }
}
