//! cgroups: one interface, two backends (pure v2, and v1/hybrid), chosen once at start.
//!
//! lamina owns one parent group (default `lamina`) in each hierarchy it uses and only ever
//! creates, changes and removes groups beneath it. On v2 it never writes to a group it did not
//! create: the root's `cgroup.subtree_control` must already delegate the controllers.
//!
//! The kernel's cgroup control files are plain text files; the handful of reads and writes an
//! env needs are done here directly (see DESIGN.md "Resources"), with fake-cgroupfs unit tests.

use std::fs;
use std::io::{self, ErrorKind};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A cgroup operation that failed, with the file or directory it was working on.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy under {0}: need cgroup v2 with memory, cpu and pids, or v1 memory, cpu, pids and freezer")]
    NoHierarchy(PathBuf),
    #[error("cgroup v2: controllers {missing} are not enabled in {file}; lamina does not change groups it did not create: enable them there or use --cgroup-parent with a delegated group")]
    NotDelegated { file: PathBuf, missing: String },
    #[error("create cgroup {0}: {1}")]
    Create(PathBuf, #[source] io::Error),
    #[error("write {value:?} to {file}: {source}")]
    Write {
        file: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("read {0}: {1}")]
    Read(PathBuf, #[source] io::Error),
    #[error("remove cgroup {0}: {1}")]
    Remove(PathBuf, #[source] io::Error),
    #[error("open cgroup {0}: {1}")]
    Open(PathBuf, #[source] io::Error),
}

pub type Result<T> = std::result::Result<T, CgroupError>;

/// Limits of one env, derived from its memory size (see [`Limits::for_memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// CPU time per period, in microseconds; `None` = unlimited.
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: u64,
    /// Relative CPU weight on the v2 scale (1-10000, default 100).
    pub cpu_weight: u64,
    /// Relative I/O weight on the v2 scale (1-10000, default 100).
    pub io_weight: u64,
    pub pids: u64,
}

/// MB of memory per vCPU (Lambda: 1,769 MB = one vCPU-second per second).
pub const MB_PER_VCPU: u64 = 1769;
pub const CPU_PERIOD_US: u64 = 100_000;

impl Limits {
    /// Lambda's resource model: CPU proportional to memory (1769 MB = 1 vCPU, capped at the
    /// host's CPUs), CPU and I/O weights proportional to memory, a fixed pids limit.
    pub fn for_memory(memory_mb: u64, pids: u64, host_cpus: u64) -> Limits {
        let quota =
            (CPU_PERIOD_US * memory_mb / MB_PER_VCPU).clamp(1000, CPU_PERIOD_US * host_cpus.max(1));
        // 128 MB -> 7, 1769 MB -> 100, 10240 MB -> 578 (v2 weights; 100 is the default).
        let weight = (memory_mb * 100 / MB_PER_VCPU).clamp(1, 10_000);
        Limits {
            memory_bytes: memory_mb * 1024 * 1024,
            cpu_quota_us: Some(quota),
            cpu_period_us: CPU_PERIOD_US,
            cpu_weight: weight,
            io_weight: weight,
            pids,
        }
    }
}

/// What an env used, read from its group before removal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub memory_peak_bytes: u64,
    pub oom_kills: u64,
    pub cpu_usage_usec: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_usec: u64,
    /// How often a fork failed at the pids limit.
    pub pids_limit_hits: u64,
}

/// The cgroup operations lamina needs, on a group named by its path relative to lamina's
/// parent group (e.g. `i1234-ab/e7`).
pub trait Cgroups: Send + Sync {
    /// "v2" or "v1".
    fn layout(&self) -> &'static str;
    /// Creates the group (and missing ancestors below the parent) in every hierarchy.
    fn create(&self, rel: &Path) -> Result<()>;
    /// Writes memory, pids, weights and (if set) the CPU quota.
    fn apply(&self, rel: &Path, limits: &Limits) -> Result<()>;
    /// Writes the CPU quota only.
    fn set_cpu_quota(&self, rel: &Path, quota_us: Option<u64>, period_us: u64) -> Result<()>;
    /// An fd of the group's directory for `clone3(CLONE_INTO_CGROUP)` (v2 only).
    fn clone_into(&self, rel: &Path) -> Result<Option<OwnedFd>>;
    /// Moves a process into the group in every hierarchy.
    fn add_task(&self, rel: &Path, pid: i32) -> Result<()>;
    fn freeze(&self, rel: &Path, frozen: bool) -> Result<()>;
    fn stats(&self, rel: &Path) -> Stats;
    /// Peak memory use in bytes (one file read: the per-invocation REPORT needs only this).
    fn memory_peak(&self, rel: &Path) -> u64;
    /// Pids in the group and its descendants (in lamina's pid namespace).
    fn pids(&self, rel: &Path) -> Vec<i32>;
    /// SIGKILLs every process in the group and its descendants until none is left.
    fn kill_all(&self, rel: &Path);
    /// Removes the group and its descendants (deepest first) from every hierarchy.
    fn remove(&self, rel: &Path) -> Result<()>;
    /// Names of the direct children of a group (`""` = lamina's parent group).
    fn children(&self, rel: &Path) -> Vec<String>;
    /// Removes lamina's parent group if no instance uses it any more.
    fn remove_parent_if_empty(&self);
}

fn write(file: PathBuf, value: &str) -> Result<()> {
    fs::write(&file, value).map_err(|source| CgroupError::Write {
        file,
        value: value.to_string(),
        source,
    })
}

fn write_if_exists(file: PathBuf, value: &str) -> Result<()> {
    if file.exists() {
        write(file, value)
    } else {
        Ok(())
    }
}

fn read(file: &Path) -> Option<String> {
    fs::read_to_string(file).ok()
}

/// Reads `key value` lines (cpu.stat, memory.events, memory.oom_control, pids.events).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

fn read_u64(file: &Path) -> Option<u64> {
    read(file)?.trim().parse().ok()
}

fn mkdir_p(dir: &Path) -> Result<()> {
    match fs::create_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) => Err(CgroupError::Create(dir.to_path_buf(), e)),
    }
}

/// Removes `dir` and its subdirectories deepest first (cgroup dirs hold only control files,
/// which rmdir ignores), retrying while the kernel still reports the group busy.
/// Thaws a v1 freezer group and every group below it (thawing a parent leaves children that
/// were frozen on their own frozen).
fn rmdir_tree(dir: &Path) -> Result<()> {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                rmdir_tree(&e.path())?;
            }
        }
    }
    let mut delay = Duration::from_micros(200);
    for _ in 0..40 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(CgroupError::Remove(dir.to_path_buf(), e)),
        }
    }
    Err(CgroupError::Remove(
        dir.to_path_buf(),
        io::Error::from_raw_os_error(libc::EBUSY),
    ))
}

fn procs_tree(dir: &Path, out: &mut Vec<i32>) {
    if let Some(t) = read(&dir.join("cgroup.procs")) {
        out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                procs_tree(&e.path(), out);
            }
        }
    }
}

fn kill_pids(pids: &[i32]) {
    for &pid in pids {
        if pid > 0 {
            // SAFETY: kill() with a positive pid taken from one of lamina's own groups.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn children_of(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Pure cgroup v2 (the common case in the field).
pub struct V2 {
    /// lamina's parent group, e.g. /sys/fs/cgroup/lamina.
    parent: PathBuf,
    controllers: Vec<&'static str>,
}

/// cgroup v1 or hybrid: one hierarchy per controller.
pub struct V1 {
    /// (controller, lamina's parent group in that hierarchy), e.g. ("memory", /sys/fs/cgroup/memory/lamina).
    groups: Vec<(&'static str, PathBuf)>,
}

/// Finds the layout under `root` (normally /sys/fs/cgroup) and prepares lamina's parent group
/// `parent` (relative, e.g. `lamina`).
pub fn detect(root: &Path, parent: &Path) -> Result<Box<dyn Cgroups>> {
    let v2_controllers = root.join("cgroup.controllers");
    if v2_controllers.exists() {
        let available = read(&v2_controllers).unwrap_or_default();
        let has = |c: &str| available.split_whitespace().any(|a| a == c);
        if !["memory", "cpu", "pids"].iter().all(|c| has(c)) {
            return Err(CgroupError::NoHierarchy(root.to_path_buf()));
        }
        let controllers: Vec<&'static str> = ["memory", "cpu", "pids", "io"]
            .into_iter()
            .filter(|c| has(c))
            .collect();
        let v2 = V2 {
            parent: root.join(parent),
            controllers,
        };
        v2.delegate(root, parent)?;
        return Ok(Box::new(v2));
    }
    let mut groups = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for c in ["memory", "cpu", "cpuacct", "pids", "freezer", "blkio"] {
        let mount = root.join(c);
        let Ok(real) = fs::canonicalize(&mount) else {
            if matches!(c, "cpuacct" | "blkio") {
                continue;
            }
            return Err(CgroupError::NoHierarchy(root.to_path_buf()));
        };
        // cpu and cpuacct are often co-mounted (cpu -> cpu,cpuacct): one group serves both.
        if seen.contains(&real) {
            continue;
        }
        seen.push(real.clone());
        let g = real.join(parent);
        mkdir_p(&g)?;
        groups.push((c, g));
    }
    Ok(Box::new(V1 { groups }))
}

impl V2 {
    fn subtree(&self) -> String {
        self.controllers
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Checks that every existing ancestor delegates our controllers (changing only groups
    /// lamina creates here), then creates the parent group with them enabled for its children.
    fn delegate(&self, root: &Path, parent: &Path) -> Result<()> {
        let mut dir = root.to_path_buf();
        let mut ours = false;
        for comp in parent.components() {
            let st = dir.join("cgroup.subtree_control");
            let enabled = read(&st).unwrap_or_default();
            let missing: Vec<&str> = self
                .controllers
                .iter()
                .copied()
                .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
                .collect();
            if !missing.is_empty() {
                if !ours {
                    return Err(CgroupError::NotDelegated {
                        file: st,
                        missing: missing.join(" "),
                    });
                }
                write(st, &self.subtree())?;
            }
            dir = dir.join(comp);
            ours = !dir.exists();
            mkdir_p(&dir)?;
        }
        // lamina's parent group is lamina's own, whether created now or by an earlier run.
        write(dir.join("cgroup.subtree_control"), &self.subtree())
    }
}

impl Cgroups for V2 {
    fn layout(&self) -> &'static str {
        "v2"
    }

    fn create(&self, rel: &Path) -> Result<()> {
        let mut dir = self.parent.clone();
        if !dir.exists() {
            // Another instance removed the (then empty) parent group in the meantime.
            mkdir_p(&dir)?;
            write(dir.join("cgroup.subtree_control"), &self.subtree())?;
        }
        let n = rel.components().count();
        for (i, comp) in rel.components().enumerate() {
            dir = dir.join(comp);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CgroupError::Create(dir, e)),
            }
            if i + 1 < n {
                write(dir.join("cgroup.subtree_control"), &self.subtree())?;
            }
        }
        Ok(())
    }

    fn apply(&self, rel: &Path, l: &Limits) -> Result<()> {
        let d = self.parent.join(rel);
        write(d.join("memory.max"), &l.memory_bytes.to_string())?;
        write_if_exists(d.join("memory.swap.max"), "0")?;
        write(d.join("pids.max"), &l.pids.to_string())?;
        write(d.join("cpu.weight"), &l.cpu_weight.to_string())?;
        if self.controllers.contains(&"io") {
            write_if_exists(d.join("io.weight"), &format!("default {}", l.io_weight))?;
        }
        if l.cpu_quota_us.is_some() {
            self.set_cpu_quota(rel, l.cpu_quota_us, l.cpu_period_us)?;
        }
        Ok(())
    }

    fn set_cpu_quota(&self, rel: &Path, quota_us: Option<u64>, period_us: u64) -> Result<()> {
        let q = quota_us.map_or("max".to_string(), |q| q.to_string());
        write(
            self.parent.join(rel).join("cpu.max"),
            &format!("{q} {period_us}"),
        )
    }

    fn clone_into(&self, rel: &Path) -> Result<Option<OwnedFd>> {
        let d = self.parent.join(rel);
        let f = fs::File::open(&d).map_err(|e| CgroupError::Open(d, e))?;
        Ok(Some(f.into()))
    }

    fn add_task(&self, rel: &Path, pid: i32) -> Result<()> {
        write(self.parent.join(rel).join("cgroup.procs"), &pid.to_string())
    }

    fn freeze(&self, rel: &Path, frozen: bool) -> Result<()> {
        write(
            self.parent.join(rel).join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        )
    }

    fn stats(&self, rel: &Path) -> Stats {
        let d = self.parent.join(rel);
        let cpu = read(&d.join("cpu.stat")).unwrap_or_default();
        let mem_events = read(&d.join("memory.events")).unwrap_or_default();
        let pids_events = read(&d.join("pids.events")).unwrap_or_default();
        Stats {
            memory_peak_bytes: read_u64(&d.join("memory.peak"))
                .or_else(|| read_u64(&d.join("memory.current")))
                .unwrap_or(0),
            oom_kills: keyed(&mem_events, "oom_kill").unwrap_or(0),
            cpu_usage_usec: keyed(&cpu, "usage_usec").unwrap_or(0),
            nr_periods: keyed(&cpu, "nr_periods").unwrap_or(0),
            nr_throttled: keyed(&cpu, "nr_throttled").unwrap_or(0),
            throttled_usec: keyed(&cpu, "throttled_usec").unwrap_or(0),
            pids_limit_hits: keyed(&pids_events, "max").unwrap_or(0),
        }
    }

    fn memory_peak(&self, rel: &Path) -> u64 {
        let d = self.parent.join(rel);
        read_u64(&d.join("memory.peak"))
            .or_else(|| read_u64(&d.join("memory.current")))
            .unwrap_or(0)
    }

    fn pids(&self, rel: &Path) -> Vec<i32> {
        let mut out = Vec::new();
        procs_tree(&self.parent.join(rel), &mut out);
        out
    }

    fn kill_all(&self, rel: &Path) {
        let d = self.parent.join(rel);
        let kill = d.join("cgroup.kill");
        for _ in 0..200 {
            let pids = self.pids(rel);
            if pids.is_empty() {
                return;
            }
            if kill.exists() {
                let _ = fs::write(&kill, "1");
            } else {
                kill_pids(&pids);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn remove(&self, rel: &Path) -> Result<()> {
        rmdir_tree(&self.parent.join(rel))
    }

    fn children(&self, rel: &Path) -> Vec<String> {
        children_of(&self.parent.join(rel))
    }

    fn remove_parent_if_empty(&self) {
        let _ = fs::remove_dir(&self.parent);
    }
}

impl V1 {
    fn group(&self, controller: &str, rel: &Path) -> Option<PathBuf> {
        self.groups
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, g)| g.join(rel))
    }

    /// Thaws the group and every group below it. On v1 a group frozen by itself (each idle
    /// env's) stays frozen when an ancestor thaws, so a crashed instance's envs must be thawed
    /// one by one before SIGKILL can end them.
    fn thaw_tree(&self, rel: &Path) {
        fn thaw(dir: &Path) {
            let _ = write_if_exists(dir.join("freezer.state"), "THAWED");
            for child in children_of(dir) {
                thaw(&dir.join(child));
            }
        }
        if let Some(d) = self.group("freezer", rel) {
            thaw(&d);
        }
    }
}

impl Cgroups for V1 {
    fn layout(&self) -> &'static str {
        "v1"
    }

    fn create(&self, rel: &Path) -> Result<()> {
        for (_, g) in &self.groups {
            mkdir_p(&g.join(rel))?;
        }
        Ok(())
    }

    fn apply(&self, rel: &Path, l: &Limits) -> Result<()> {
        if let Some(d) = self.group("memory", rel) {
            write(d.join("memory.limit_in_bytes"), &l.memory_bytes.to_string())?;
            // memsw (memory+swap) exists only with swap accounting; equal to the memory limit
            // it allows no swap at all.
            write_if_exists(
                d.join("memory.memsw.limit_in_bytes"),
                &l.memory_bytes.to_string(),
            )?;
            let _ = write_if_exists(d.join("memory.swappiness"), "0");
        }
        if let Some(d) = self.group("pids", rel) {
            write(d.join("pids.max"), &l.pids.to_string())?;
        }
        if let Some(d) = self.group("cpu", rel) {
            // v2 weight 100 == v1 shares 1024.
            write(
                d.join("cpu.shares"),
                &(l.cpu_weight * 1024 / 100).max(2).to_string(),
            )?;
        }
        if let Some(d) = self.group("blkio", rel) {
            let w = (l.io_weight * 1000 / 10_000).clamp(10, 1000).to_string();
            if write_if_exists(d.join("blkio.weight"), &w).is_err() {
                let _ = write_if_exists(d.join("blkio.bfq.weight"), &w);
            }
        }
        if l.cpu_quota_us.is_some() {
            self.set_cpu_quota(rel, l.cpu_quota_us, l.cpu_period_us)?;
        }
        Ok(())
    }

    fn set_cpu_quota(&self, rel: &Path, quota_us: Option<u64>, period_us: u64) -> Result<()> {
        if let Some(d) = self.group("cpu", rel) {
            write(d.join("cpu.cfs_period_us"), &period_us.to_string())?;
            let q = quota_us.map_or("-1".to_string(), |q| q.to_string());
            write(d.join("cpu.cfs_quota_us"), &q)?;
        }
        Ok(())
    }

    fn clone_into(&self, _rel: &Path) -> Result<Option<OwnedFd>> {
        Ok(None)
    }

    fn add_task(&self, rel: &Path, pid: i32) -> Result<()> {
        for (_, g) in &self.groups {
            write(g.join(rel).join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn freeze(&self, rel: &Path, frozen: bool) -> Result<()> {
        match self.group("freezer", rel) {
            Some(d) => write(
                d.join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            ),
            None => Ok(()),
        }
    }

    fn stats(&self, rel: &Path) -> Stats {
        let mut s = Stats::default();
        if let Some(d) = self.group("memory", rel) {
            s.memory_peak_bytes = read_u64(&d.join("memory.max_usage_in_bytes")).unwrap_or(0);
            let oom = read(&d.join("memory.oom_control")).unwrap_or_default();
            s.oom_kills = keyed(&oom, "oom_kill").unwrap_or(0);
        }
        if let Some(d) = self.group("cpu", rel) {
            let cpu = read(&d.join("cpu.stat")).unwrap_or_default();
            s.nr_periods = keyed(&cpu, "nr_periods").unwrap_or(0);
            s.nr_throttled = keyed(&cpu, "nr_throttled").unwrap_or(0);
            s.throttled_usec = keyed(&cpu, "throttled_time").unwrap_or(0) / 1000;
        }
        let acct = self
            .group("cpuacct", rel)
            .or_else(|| self.group("cpu", rel));
        if let Some(d) = acct {
            s.cpu_usage_usec = read_u64(&d.join("cpuacct.usage")).unwrap_or(0) / 1000;
        }
        if let Some(d) = self.group("pids", rel) {
            s.pids_limit_hits =
                keyed(&read(&d.join("pids.events")).unwrap_or_default(), "max").unwrap_or(0);
        }
        s
    }

    fn memory_peak(&self, rel: &Path) -> u64 {
        self.group("memory", rel)
            .and_then(|d| read_u64(&d.join("memory.max_usage_in_bytes")))
            .unwrap_or(0)
    }

    fn pids(&self, rel: &Path) -> Vec<i32> {
        let mut out = Vec::new();
        for (_, g) in &self.groups {
            procs_tree(&g.join(rel), &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn kill_all(&self, rel: &Path) {
        for _ in 0..200 {
            let pids = self.pids(rel);
            if pids.is_empty() {
                return;
            }
            // A frozen task only dies once thawed.
            self.thaw_tree(rel);
            kill_pids(&pids);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn remove(&self, rel: &Path) -> Result<()> {
        let mut first_err = None;
        for (_, g) in &self.groups {
            if let Err(e) = rmdir_tree(&g.join(rel)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn children(&self, rel: &Path) -> Vec<String> {
        let mut out: Vec<String> = self
            .groups
            .iter()
            .flat_map(|(_, g)| children_of(&g.join(rel)))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn remove_parent_if_empty(&self) {
        for (_, g) in &self.groups {
            let _ = fs::remove_dir(g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lamina-cgtest-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Plays the kernel: control files appear when a group directory is created.
    fn touch(dir: &Path, files: &[&str]) {
        for f in files {
            fs::write(dir.join(f), "").unwrap();
        }
    }

    #[test]
    fn limits_follow_lambdas_model() {
        let l = Limits::for_memory(128, 1024, 2);
        assert_eq!(l.memory_bytes, 128 << 20);
        assert_eq!(l.cpu_quota_us, Some(100_000 * 128 / 1769));
        assert_eq!(l.cpu_weight, 7);
        let l = Limits::for_memory(1769, 1024, 2);
        assert_eq!(l.cpu_quota_us, Some(100_000));
        assert_eq!(l.cpu_weight, 100);
        // 10240 MB would be 5.8 vCPUs: capped at the host's 2.
        let l = Limits::for_memory(10240, 1024, 2);
        assert_eq!(l.cpu_quota_us, Some(200_000));
        assert_eq!(l.cpu_weight, 578);
    }

    #[test]
    fn detects_hybrid_v1_with_comounted_cpu() {
        let root = tmp("hybrid");
        for c in ["memory", "cpu,cpuacct", "pids", "freezer", "unified"] {
            fs::create_dir_all(root.join(c)).unwrap();
        }
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpu")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpuacct")).unwrap();
        let cg = detect(&root, Path::new("lamina")).unwrap();
        assert_eq!(cg.layout(), "v1");
        assert!(root.join("memory/lamina").is_dir());
        assert!(root.join("cpu,cpuacct/lamina").is_dir());
        cg.create(Path::new("i1/e1")).unwrap();
        assert!(root.join("freezer/lamina/i1/e1").is_dir());
        assert_eq!(cg.children(Path::new("")), vec!["i1".to_string()]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_thaw_tree_thaws_self_frozen_descendants() {
        let root = tmp("v1thaw");
        for c in ["memory", "cpu", "pids", "freezer"] {
            fs::create_dir_all(root.join(c)).unwrap();
        }
        let cg = V1 {
            groups: vec![("freezer", root.join("freezer/lamina"))],
        };
        for g in ["i1", "i1/e1", "i1/e2", "i1/keep-frozen"] {
            let d = root.join("freezer/lamina").join(g);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("freezer.state"), "FROZEN").unwrap();
        }
        cg.thaw_tree(Path::new("i1"));
        for g in ["i1", "i1/e1", "i1/e2", "i1/keep-frozen"] {
            let state = root.join("freezer/lamina").join(g).join("freezer.state");
            assert_eq!(fs::read_to_string(state).unwrap(), "THAWED", "{g}");
        }
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_apply_writes_every_controller() {
        let root = tmp("v1apply");
        for c in ["memory", "cpu", "cpuacct", "pids", "freezer", "blkio"] {
            fs::create_dir_all(root.join(c)).unwrap();
        }
        let cg = detect(&root, Path::new("lamina")).unwrap();
        let rel = Path::new("i1/e1");
        cg.create(rel).unwrap();
        touch(
            &root.join("memory/lamina/i1/e1"),
            &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
        );
        touch(
            &root.join("cpu/lamina/i1/e1"),
            &["cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us"],
        );
        touch(&root.join("pids/lamina/i1/e1"), &["pids.max"]);
        touch(&root.join("blkio/lamina/i1/e1"), &["blkio.weight"]);
        cg.apply(rel, &Limits::for_memory(256, 64, 2)).unwrap();
        let r = |p: &str| fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(
            r("memory/lamina/i1/e1/memory.limit_in_bytes"),
            (256u64 << 20).to_string()
        );
        assert_eq!(
            r("memory/lamina/i1/e1/memory.memsw.limit_in_bytes"),
            (256u64 << 20).to_string()
        );
        assert_eq!(r("pids/lamina/i1/e1/pids.max"), "64");
        assert_eq!(
            r("cpu/lamina/i1/e1/cpu.cfs_quota_us"),
            (100_000u64 * 256 / 1769).to_string()
        );
        assert_eq!(r("cpu/lamina/i1/e1/cpu.cfs_period_us"), "100000");
        assert_eq!(
            r("cpu/lamina/i1/e1/cpu.shares"),
            (14u64 * 1024 / 100).to_string()
        );
        assert_eq!(r("blkio/lamina/i1/e1/blkio.weight"), "10");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_stats_are_parsed() {
        let root = tmp("v1stats");
        for c in ["memory", "cpu", "cpuacct", "pids", "freezer"] {
            fs::create_dir_all(root.join(c).join("lamina/e")).unwrap();
        }
        let cg = detect(&root, Path::new("lamina")).unwrap();
        let w = |p: &str, v: &str| fs::write(root.join(p), v).unwrap();
        w("memory/lamina/e/memory.max_usage_in_bytes", "1048576\n");
        w(
            "memory/lamina/e/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        w(
            "cpu/lamina/e/cpu.stat",
            "nr_periods 10\nnr_throttled 4\nthrottled_time 5000000\n",
        );
        w("cpuacct/lamina/e/cpuacct.usage", "7000000\n");
        w("pids/lamina/e/pids.events", "max 3\n");
        let s = cg.stats(Path::new("e"));
        assert_eq!(
            s,
            Stats {
                memory_peak_bytes: 1 << 20,
                oom_kills: 2,
                cpu_usage_usec: 7000,
                nr_periods: 10,
                nr_throttled: 4,
                throttled_usec: 5000,
                pids_limit_hits: 3
            }
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v2_requires_delegation_and_never_writes_the_root() {
        let root = tmp("v2nodeleg");
        fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        fs::write(root.join("cgroup.subtree_control"), "memory pids\n").unwrap();
        let err = detect(&root, Path::new("lamina")).err().unwrap();
        assert!(matches!(err, CgroupError::NotDelegated { .. }), "{err}");
        assert_eq!(
            fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
            "memory pids\n"
        );
        assert!(!root.join("lamina").exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v2_apply_and_stats() {
        let root = tmp("v2");
        fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        fs::write(root.join("cgroup.subtree_control"), "cpu io memory pids\n").unwrap();
        let cg = detect(&root, Path::new("lamina")).unwrap();
        assert_eq!(cg.layout(), "v2");
        assert_eq!(
            fs::read_to_string(root.join("lamina/cgroup.subtree_control")).unwrap(),
            "+memory +cpu +pids +io"
        );
        let rel = Path::new("i1/e1");
        cg.create(rel).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("lamina/i1/cgroup.subtree_control")).unwrap(),
            "+memory +cpu +pids +io"
        );
        let d = root.join("lamina/i1/e1");
        touch(
            &d,
            &[
                "memory.max",
                "memory.swap.max",
                "pids.max",
                "cpu.weight",
                "cpu.max",
                "io.weight",
            ],
        );
        cg.apply(rel, &Limits::for_memory(1769, 100, 4)).unwrap();
        let r = |f: &str| fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(r("memory.max"), (1769u64 << 20).to_string());
        assert_eq!(r("memory.swap.max"), "0");
        assert_eq!(r("cpu.max"), "100000 100000");
        assert_eq!(r("cpu.weight"), "100");
        assert_eq!(r("io.weight"), "default 100");
        fs::write(
            d.join("cpu.stat"),
            "usage_usec 900\nuser_usec 500\nnr_periods 3\nnr_throttled 2\nthrottled_usec 40\n",
        )
        .unwrap();
        fs::write(d.join("memory.peak"), "4096\n").unwrap();
        fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n",
        )
        .unwrap();
        let s = cg.stats(rel);
        assert_eq!(
            (
                s.cpu_usage_usec,
                s.nr_throttled,
                s.memory_peak_bytes,
                s.oom_kills
            ),
            (900, 2, 4096, 1)
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
