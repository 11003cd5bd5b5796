//! Names each course crate (the table `[target.'cfg(all())'.dependencies]` of Cargo.toml) in
//! `course_crates.rs`, which `lib.rs` includes. rustc leaves a dependency it never names out of
//! a `dylib`; named, each course crate is linked into this library once, and every cell that
//! uses it (the kernel gives each cell the same table) links it from here, with this
//! library's one tokio.

use std::fmt::Write as _;

const COURSE_TABLE: &str = "[target.'cfg(all())'.dependencies]";

fn main() {
    println!("cargo::rerun-if-changed=Cargo.toml");
    let manifest = std::fs::read_to_string("Cargo.toml").expect("Cargo.toml of the runtime library");
    let mut in_table = false;
    let mut named = String::from("#[doc(hidden)]\npub mod __course_crates {\n");
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_table = line == COURSE_TABLE;
            continue;
        }
        // One dependency a line (TOML keeps an inline table on its line).
        let Some((name, _)) = line.split_once('=').filter(|_| in_table && !line.starts_with('#')) else { continue };
        let name = name.trim().trim_matches('"').replace('-', "_");
        writeln!(named, "    pub use ::{name};").unwrap();
    }
    named.push_str("}\n");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("course_crates.rs"), named).expect("course_crates.rs");
}
