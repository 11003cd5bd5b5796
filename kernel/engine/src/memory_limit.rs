//! How much memory this kernel may use, and what it leaves out to stay within it.
//!
//! A class on JupyterHub gives each student a pod with a memory limit (often 1 GiB), enforced
//! by the kernel's cgroup: going over it kills a process. The limit is the lower of the
//! cgroup's (v2 `memory.max` or v1 `memory.limit_in_bytes`, of the kernel's cgroup and the ones
//! above it) and the setting `RUST_ASYNC_MEMORY_LIMIT` (`1G`, `800M`, `1GiB`, bytes), for a
//! server that shares memory some other way. Under a limit the kernel:
//! - starts no spare kernels unless the limit is large ([`SPARES_NEED`]; `spare.rs`);
//! - starts rust-analyzer (Tab, Shift+Tab: about 600 MiB) only when that much is free
//!   ([`ANALYSIS_NEEDS`]), and else says why completion is off (`completion.rs`). Whatever the
//!   limit, rust-analyzer is the process the out-of-memory killer takes first
//!   (`analysis_process.rs`): a lost completion, not a lost kernel;
//! - has cargo build a `:dep` crate's dependencies one or few at a time ([`cargo_jobs`]), as
//!   each rustc can take hundreds of MiB.

use std::path::{Path, PathBuf};

/// The setting: a limit lower than the cgroup's, or one where no cgroup sets any.
pub const SETTING: &str = "RUST_ASYNC_MEMORY_LIMIT";
const MIB: u64 = 1 << 20;
/// rust-analyzer's peak for std, tokio and a few course crates (`scripts/bench`: 603 MiB), with
/// room for the compile of the next cell beside it.
pub const ANALYSIS_NEEDS: u64 = 700 * MIB;
/// Below this limit, spares are off: a waiting spare holds little (35 MiB), but when claimed
/// it is a second kernel, whose compiles and rust-analyzer need room of their own.
pub const SPARES_NEED: u64 = 2048 * MIB;
/// What one rustc of a `:dep` build may take (a large crate, optimised).
const COMPILE_NEEDS: u64 = 768 * MIB;
/// cgroup v1 writes "no limit" as a huge number (`PAGE_COUNTER_MAX` pages).
const UNLIMITED_FROM: u64 = 1 << 60;

#[derive(Debug, Clone, PartialEq)]
pub enum LimitSource {
    Setting,
    /// The cgroup directory whose limit it is (its usage counts everything in the pod).
    Cgroup(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub source: LimitSource,
}

impl MemoryLimit {
    /// This process's limit, if any (see the module's text). A setting that cannot be read is
    /// reported on stderr and left out.
    pub fn current() -> Option<MemoryLimit> {
        let setting = std::env::var(SETTING).ok().filter(|text| !text.trim().is_empty()).and_then(|text| {
            let bytes = parse_size(&text);
            if bytes.is_none() {
                eprintln!("rust-async: {SETTING}={text:?} is not a size (such as 1G, 800M or 1073741824); ignored");
            }
            bytes
        });
        let cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|membership| cgroup_limit(&membership, Path::new("/sys/fs/cgroup")));
        let from_setting = setting.map(|bytes| MemoryLimit { bytes, source: LimitSource::Setting });
        let from_cgroup = cgroup.map(|(bytes, directory)| MemoryLimit { bytes, source: LimitSource::Cgroup(directory) });
        match (from_setting, from_cgroup) {
            (Some(setting), Some(cgroup)) if cgroup.bytes <= setting.bytes => Some(cgroup),
            (Some(setting), _) => Some(setting),
            (None, cgroup) => cgroup,
        }
    }

    /// What is still free under the limit: for a cgroup's, its own count of what all of its
    /// processes use; for the setting's, what this kernel and the processes it started use.
    pub fn free(&self) -> u64 {
        let used = match &self.source {
            LimitSource::Cgroup(directory) => cgroup_usage(directory).unwrap_or_else(|| process_tree_rss(std::process::id())),
            LimitSource::Setting => process_tree_rss(std::process::id()),
        };
        self.bytes.saturating_sub(used)
    }

    pub fn describe(&self) -> String {
        let from = match &self.source {
            LimitSource::Setting => format!("{SETTING}"),
            LimitSource::Cgroup(directory) => format!("cgroup {}", directory.display()),
        };
        format!("{} ({from})", size_text(self.bytes))
    }
}

/// Whether spare kernels fit (see [`SPARES_NEED`]).
pub fn spares_fit(limit: Option<&MemoryLimit>) -> bool {
    limit.is_none_or(|limit| limit.bytes >= SPARES_NEED)
}

/// How many jobs cargo may run at once under `limit` (`None`: no reason to set any).
pub fn cargo_jobs(limit: Option<&MemoryLimit>, cpus: usize) -> Option<usize> {
    let limit = limit?;
    Some(((limit.bytes / COMPILE_NEEDS) as usize).clamp(1, cpus.max(1)))
}

/// `1G`, `1GiB`, `1.5G`, `800M`, `800Mi`, `512k`, `1073741824` → bytes (binary units: a pod's
/// `1G` in Zero to JupyterHub is 1 GiB).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: u64 = match unit.trim().trim_end_matches(['B', 'b']).trim_end_matches('i').to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    let bytes = number * scale as f64;
    (bytes >= 1.0 && bytes < UNLIMITED_FROM as f64).then_some(bytes as u64)
}

pub fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

/// The lowest limit on the way from this process's cgroup up to the root, with the directory
/// that sets it. `membership` is `/proc/self/cgroup`; `root` where cgroups are mounted.
fn cgroup_limit(membership: &str, root: &Path) -> Option<(u64, PathBuf)> {
    let mut found: Option<(u64, PathBuf)> = None;
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else { continue };
        let (mount, file) = match controllers {
            "" => (root.to_path_buf(), "memory.max"),
            listed if listed.split(',').any(|controller| controller == "memory") => (root.join(listed), "memory.limit_in_bytes"),
            _ => continue,
        };
        // Inside a container's cgroup namespace the path may not exist as such: the mount's
        // own root is then the container's cgroup.
        let mut directory = mount.join(path.trim_start_matches('/'));
        if !directory.is_dir() {
            directory = mount.clone();
        }
        loop {
            if let Some(bytes) = read_limit(&directory.join(file)) {
                if found.as_ref().is_none_or(|(lowest, _)| bytes < *lowest) {
                    found = Some((bytes, directory.clone()));
                }
            }
            if directory == mount || !directory.pop() {
                break;
            }
        }
    }
    found
}

fn read_limit(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let bytes: u64 = text.trim().parse().ok()?; // "max": none
    (bytes < UNLIMITED_FROM).then_some(bytes)
}

fn cgroup_usage(directory: &Path) -> Option<u64> {
    ["memory.current", "memory.usage_in_bytes"]
        .iter()
        .find_map(|file| std::fs::read_to_string(directory.join(file)).ok()?.trim().parse().ok())
}

/// The resident memory of process `root` and all of its descendants.
pub fn process_tree_rss(root: u32) -> u64 {
    let mut parents = std::collections::HashMap::new();
    let mut rss = std::collections::HashMap::new();
    // SAFETY: sysconf only reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (name) state ppid ...": the name may hold spaces and parentheses.
        let Some(parent) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok()) else {
            continue;
        };
        let resident = std::fs::read_to_string(entry.path().join("statm"))
            .ok()
            .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        parents.insert(pid, parent);
        rss.insert(pid, resident * page);
    }
    let in_tree = |mut pid: u32| {
        while pid > 1 {
            if pid == root {
                return true;
            }
            pid = parents.get(&pid).copied().unwrap_or(0);
        }
        false
    };
    rss.iter().filter(|(pid, _)| in_tree(**pid)).map(|(_, bytes)| bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_in_binary_units() {
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size(" 800M "), Some(800 << 20));
        assert_eq!(parse_size("800Mi"), Some(800 << 20));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("1073741824"), Some(1 << 30));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("1X"), None);
        assert_eq!(parse_size("0"), None);
    }

    fn cgroups(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let file = root.path().join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        root
    }

    #[test]
    fn the_lowest_cgroup_v2_limit_on_the_way_up_counts() {
        let root = cgroups(&[
            ("memory.max", "max\n"),
            ("kubepods/memory.max", "4294967296\n"),
            ("kubepods/pod1/memory.max", "1073741824\n"),
            ("kubepods/pod1/container/memory.max", "max\n"),
            ("kubepods/pod1/memory.current", "104857600\n"),
        ]);
        let (bytes, directory) = cgroup_limit("0::/kubepods/pod1/container\n", root.path()).unwrap();
        assert_eq!(bytes, 1 << 30);
        assert_eq!(directory, root.path().join("kubepods/pod1"));
        assert_eq!(cgroup_usage(&directory), Some(100 << 20));
        assert_eq!(cgroup_limit("0::/\n", &cgroups(&[("memory.max", "max\n")]).path()), None);
    }

    #[test]
    fn a_cgroup_v1_limit_counts_and_its_no_limit_does_not() {
        let root = cgroups(&[
            ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory/docker/abc/memory.limit_in_bytes", "536870912\n"),
        ]);
        let membership = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n";
        assert_eq!(cgroup_limit(membership, root.path()).unwrap().0, 512 << 20);
        // In a cgroup namespace, the path is not there: the mount's root is the container's.
        let namespaced = cgroups(&[("memory/memory.limit_in_bytes", "9223372036854771712\n")]);
        assert_eq!(cgroup_limit("4:memory:/docker/abc\n", namespaced.path()), None);
    }

    #[test]
    fn under_a_pod_sized_limit_spares_are_off_and_cargo_builds_one_crate_at_a_time() {
        let pod = MemoryLimit { bytes: 1 << 30, source: LimitSource::Setting };
        assert!(!spares_fit(Some(&pod)));
        assert!(spares_fit(None));
        assert!(spares_fit(Some(&MemoryLimit { bytes: 8 << 30, source: LimitSource::Setting })));
        assert_eq!(cargo_jobs(Some(&pod), 2), Some(1));
        assert_eq!(cargo_jobs(Some(&MemoryLimit { bytes: 8 << 30, source: LimitSource::Setting }), 2), Some(2));
        assert_eq!(cargo_jobs(None, 2), None);
    }

    #[test]
    fn this_process_is_in_its_own_tree() {
        assert!(process_tree_rss(std::process::id()) > 1 << 20);
    }
}
