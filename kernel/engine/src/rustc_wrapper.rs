//! The kernel's binary as cargo's `RUSTC_WRAPPER` while cells compile: it runs rustc with the
//! arguments cargo gave, and
//! - notes the futures a cell makes and never awaits (`never_awaited`);
//! - while rust-analyzer's view is light, passes the runtime library to the cell crate, which
//!   then has it only as an optional dependency (`analysis`).

use crate::analysis::CELL_EXTERN_ENV;
use crate::never_awaited::{note_down, note_of, NOTES_FILE_ENV};
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::Path;

/// evcxr's name for the crate of a cell.
const CELL_CRATE: &str = "ctx";

/// When this process is cargo's rustc wrapper, runs rustc and exits with its status.
/// Call first thing in `main`; does nothing otherwise.
pub fn wrap_rustc_if_asked() {
    let notes = std::env::var_os(NOTES_FILE_ENV);
    let cell_extern = std::env::var_os(CELL_EXTERN_ENV);
    if notes.is_none() && cell_extern.is_none() {
        return;
    }
    let mut args = std::env::args_os().skip(1);
    let Some(rustc) = args.next() else { return };
    let mut args: Vec<OsString> = args.collect();
    if let Some(cell_extern) = cell_extern {
        add_extern_to_cell_crate(&mut args, cell_extern);
    }
    let mut child = match std::process::Command::new(&rustc)
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

/// `--extern NAME=PATH` for the cell crate, unless cargo passes that crate already (the
/// dependency is no longer optional).
fn add_extern_to_cell_crate(args: &mut Vec<OsString>, cell_extern: OsString) {
    let is_cell_crate = args.windows(2).any(|pair| pair[0] == "--crate-name" && pair[1] == CELL_CRATE);
    let name = cell_extern.to_string_lossy().split_once('=').map(|(name, _)| format!("{name}=")).unwrap_or_default();
    let passed = args
        .windows(2)
        .any(|pair| pair[0] == "--extern" && pair[1].to_string_lossy().starts_with(&name));
    if is_cell_crate && !passed {
        args.push("--extern".into());
        args.push(cell_extern);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<OsString> {
        text.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn the_cell_crate_gets_the_runtime_library_once() {
        let library = OsString::from("tokio=/t/deps/librust_async.so");
        let mut cell = args("--crate-name ctx --edition=2024 src/lib.rs");
        add_extern_to_cell_crate(&mut cell, library.clone());
        assert_eq!(cell[cell.len() - 2..], args("--extern tokio=/t/deps/librust_async.so")[..]);

        let mut from_cargo = args("--crate-name ctx src/lib.rs --extern tokio=/t/deps/librust_async.so");
        add_extern_to_cell_crate(&mut from_cargo, library.clone());
        assert_eq!(from_cargo, args("--crate-name ctx src/lib.rs --extern tokio=/t/deps/librust_async.so"));

        let mut dependency = args("--crate-name serde src/lib.rs");
        add_extern_to_cell_crate(&mut dependency, library);
        assert_eq!(dependency, args("--crate-name serde src/lib.rs"));
    }
}
