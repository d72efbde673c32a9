//! Helpers for the privileged integration tests (run as root; they create real envs).
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The lamina binary under test.
pub fn lamina() -> PathBuf {
    std::env::var_os("LAMINA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_lamina")))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Privileged tests need root; anywhere else they say so loudly and do nothing.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!("SKIPPED: this privileged test needs root");
            return;
        }
    };
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let mut b = [0u8; 4];
        // SAFETY: getrandom into a stack buffer.
        unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
        let p = std::env::temp_dir().join(format!(
            "lamina-test-{tag}-{}-{:02x}{:02x}{:02x}{:02x}",
            std::process::id(),
            b[0],
            b[1],
            b[2],
            b[3]
        ));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn file(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.0.join(name);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `lamina <args>` with optional stdin; returns the output.
pub fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(lamina());
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn lamina");
    if let Some(input) = stdin {
        let mut si = child.stdin.take().unwrap();
        si.write_all(input).unwrap();
    }
    child.wait_with_output().expect("wait lamina")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// cgroup directories named like lamina's (at the top of every hierarchy, and one level down).
pub fn lamina_cgroups() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.to_path_buf()];
    if let Ok(rd) = fs::read_dir(root) {
        dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for d in dirs {
        if let Ok(rd) = fs::read_dir(&d) {
            out.extend(
                rd.flatten()
                    .filter(|e| {
                        e.file_name().to_string_lossy().starts_with("lamina") && e.path().is_dir()
                    })
                    .map(|e| e.path()),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

fn mounts_mentioning_lamina() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("lamina"))
        .map(str::to_string)
        .collect()
}

/// Mounts that mention lamina but were there before any test ran (e.g. the cgroup v2 guest's
/// own shares), taken on the first call of [`serial`].
fn baseline_mounts() -> &'static Vec<String> {
    static BASE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    BASE.get_or_init(mounts_mentioning_lamina)
}

/// Mounts (in our mount namespace) that mention lamina and were not there at the start.
pub fn lamina_mounts() -> Vec<String> {
    let base = baseline_mounts();
    mounts_mentioning_lamina()
        .into_iter()
        .filter(|m| !base.contains(m))
        .collect()
}

/// Processes running as the sandbox uid (993).
pub fn sandbox_processes() -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(st) = fs::read_to_string(e.path().join("status")) {
                if st
                    .lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("993"))
                {
                    out.push(pid);
                }
            }
        }
    }
    out
}

/// Instance dirs in lamina's default run dir.
pub fn run_dirs() -> Vec<String> {
    fs::read_dir("/run/lamina")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that nothing of ours is left (call when no other lamina runs).
pub fn assert_no_leftovers(ctx: &str) {
    // Teardown of killed processes can lag a moment behind their exit.
    for _ in 0..50 {
        if lamina_cgroups().is_empty()
            && sandbox_processes().is_empty()
            && lamina_mounts().is_empty()
            && run_dirs().is_empty()
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!(
        "{ctx}: leftovers: cgroups {:?} processes {:?} mounts {:?} run dirs {:?}",
        lamina_cgroups(),
        sandbox_processes(),
        lamina_mounts(),
        run_dirs()
    );
}

/// Serializes tests that check for leftovers (they must not see each other's envs).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    baseline_mounts();
    g
}
