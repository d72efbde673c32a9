//! Runtimes: the language layers functions run on (`python3.11`, `nodejs20.x`, `ruby3.1`,
//! `java17`, `provided.al2023`, ...), how they are built, imported, listed and resolved at cold
//! start.
//!
//! # Design
//! - A runtime's **source** is `rootfs/runtimes/<name>/` in the repository: `build.sh OUT_DIR`
//!   plus its bootstrap sources. `supervisor/build.rs` embeds every such directory into the
//!   binary, so the single `lamina` binary knows all runtimes and can build any of them from
//!   anywhere. Adding a runtime is adding a directory: nothing here names one.
//! - A built runtime **layer** lives in `<state>/runtimes/<name>/`: `manifest.json`
//!   (`{"name","argv","env","description"}`), `runtime/` (bound read-only at `/var/runtime`)
//!   and optionally `lang/` (bound read-only at `/var/lang`). Layers are shared read-only by
//!   every env; envs run as an unprivileged uid, so a layer is made world-readable and
//!   read-only for everyone but root.
//! - **Building** (`lamina runtime build NAME`) extracts the embedded sources (or uses
//!   `--source DIR`) into `<state>/runtimes/.src-*`, runs `build.sh` into
//!   `<state>/runtimes/.build-*`, checks the manifest it wrote, then swaps the new tree in
//!   with renames: a failed build leaves the previous layer untouched, and a live env keeps
//!   the tree it bound. Downloads are cached in `<state>/runtimes/.cache/<name>`
//!   (`LAMINA_RUNTIME_CACHE`), so a rebuild works offline. The script's output is relayed
//!   line by line with the elapsed time (progress of long builds).
//! - **Importing** (`lamina runtime import DIR`) installs a tree already in the layer format
//!   (built elsewhere, e.g. on a machine with network access) the same way.
//! - Runtimes whose source manifest says `"install_at_start": true` (python3.11 and the
//!   OS-only `provided*`: nothing to fetch) are installed by `lamina serve` itself from the
//!   embedded sources, so that python3.11 and custom runtimes work out of the box.
//! - **Resolution** at cold start reads the layer's manifest: its argv is the runtime process,
//!   its env is added under the function's own variables. A runtime lamina knows but whose
//!   layer is not built fails the invocation with `InvalidRuntimeException` (502) naming the
//!   command that builds it; CreateFunction accepts it (the layer may be built later, as
//!   Lambda accepts a function before its runtime is ready to run it).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One file of an embedded runtime source.
pub struct EmbeddedFile {
    pub path: &'static str,
    pub mode: u32,
    pub data: &'static [u8],
}

/// The embedded `rootfs/runtimes/<name>/` directory.
pub struct RuntimeSource {
    pub name: &'static str,
    pub files: &'static [EmbeddedFile],
}

include!(concat!(env!("OUT_DIR"), "/runtimes_embedded.rs"));

/// A failed runtime operation, naming the runtime and the step.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("unknown runtime '{0}' (known: {known})", known = known().collect::<Vec<_>>().join(", "))]
    Unknown(String),
    #[error("runtime {0} is not built on this lamina: run `lamina runtime build {0}`")]
    NotBuilt(String),
    #[error("'{0}' is not a valid runtime name (letters, digits, '.', '-', '_'; at most 64)")]
    BadName(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: invalid manifest: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("runtime {name}: build.sh failed ({status})")]
    BuildFailed { name: String, status: String },
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

fn io_ctx<T>(r: io::Result<T>, path: &Path) -> Result<T> {
    r.map_err(|source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A runtime layer's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    /// What the env execs as the runtime process.
    pub argv: Vec<String>,
    /// Extra environment of the runtime process (the function's variables override it).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
    /// The source directory is the layer itself: `lamina serve` installs it at start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub install_at_start: bool,
}

/// A built runtime, ready to be bound into an env.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub manifest: Manifest,
    /// Bound read-only at `/var/runtime`.
    pub runtime_dir: Option<PathBuf>,
    /// Bound read-only at `/var/lang`.
    pub lang_dir: Option<PathBuf>,
}

/// Names of the runtimes this binary has sources for.
pub fn known() -> impl Iterator<Item = &'static str> {
    SOURCES.iter().map(|s| s.name)
}

pub fn is_known(name: &str) -> bool {
    SOURCES.iter().any(|s| s.name == name)
}

fn source(name: &str) -> Option<&'static RuntimeSource> {
    SOURCES.iter().find(|s| s.name == name)
}

/// A runtime name is one path component of a safe alphabet.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::BadName(name.to_string()))
    }
}

/// `<state>/runtimes`.
pub fn layers_dir(state: &Path) -> PathBuf {
    state.join("runtimes")
}

/// Parses and checks a manifest: it must name `name` (when given) and have a non-empty argv
/// of absolute paths or plain words; env names must be valid variable names.
pub fn parse_manifest(path: &Path, text: &[u8], name: Option<&str>) -> Result<Manifest> {
    let bad = |reason: String| RuntimeError::Manifest {
        path: path.to_path_buf(),
        reason,
    };
    let m: Manifest = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
    check_name(&m.name).map_err(|e| bad(e.to_string()))?;
    if let Some(n) = name {
        if m.name != n {
            return Err(bad(format!("names runtime '{}', expected '{n}'", m.name)));
        }
    }
    match m.argv.first() {
        None => return Err(bad("argv is empty".into())),
        Some(a) if !a.starts_with('/') => {
            return Err(bad(format!("argv[0] '{a}' is not an absolute path")))
        }
        _ => {}
    }
    if m.argv.iter().any(|a| a.contains('\0')) {
        return Err(bad("argv has a NUL byte".into()));
    }
    for (k, v) in &m.env {
        let mut c = k.chars();
        let first_ok = c
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !first_ok || !c.all(|c| c.is_ascii_alphanumeric() || c == '_') || v.contains('\0') {
            return Err(bad(format!("env variable '{k}' is invalid")));
        }
    }
    Ok(m)
}

/// The built layer of `name`, or why it cannot be used.
pub fn resolve(state: &Path, name: &str) -> Result<Resolved> {
    check_name(name)?;
    let dir = layers_dir(state).join(name);
    let mpath = dir.join("manifest.json");
    let text = match fs::read(&mpath) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RuntimeError::NotBuilt(name.to_string()))
        }
        Err(e) => {
            return Err(RuntimeError::Io {
                path: mpath,
                source: e,
            })
        }
    };
    let manifest = parse_manifest(&mpath, &text, Some(name))?;
    let sub = |s: &str| {
        let p = dir.join(s);
        p.is_dir().then_some(p)
    };
    Ok(Resolved {
        manifest,
        runtime_dir: sub("runtime"),
        lang_dir: sub("lang"),
    })
}

/// Writes an embedded source tree (files with their modes) under `dir`.
fn extract(src: &RuntimeSource, dir: &Path, only_runtime: bool) -> Result<()> {
    for f in src.files {
        if only_runtime && f.path != "manifest.json" && !f.path.starts_with("runtime/") {
            continue;
        }
        // The paths come from our own build script; still refuse anything but plain relative
        // components.
        let rel = Path::new(f.path);
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            io_ctx(fs::create_dir_all(parent), parent)?;
        }
        io_ctx(fs::write(&p, f.data), &p)?;
        io_ctx(
            fs::set_permissions(&p, fs::Permissions::from_mode(f.mode & 0o755)),
            &p,
        )?;
    }
    Ok(())
}

fn private_dir(p: &Path) -> Result<()> {
    io_ctx(
        fs::DirBuilder::new().recursive(true).mode(0o700).create(p),
        p,
    )
}

/// Makes a built tree world-readable (envs run unprivileged) and writable only by root;
/// setuid/setgid bits are dropped.
fn seal(dir: &Path) -> Result<()> {
    let meta = io_ctx(fs::symlink_metadata(dir), dir)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    let new = if meta.is_dir() {
        0o755
    } else if mode & 0o111 != 0 {
        0o555
    } else {
        0o444
    };
    io_ctx(
        fs::set_permissions(dir, fs::Permissions::from_mode(new)),
        dir,
    )?;
    if meta.is_dir() {
        for e in io_ctx(fs::read_dir(dir), dir)? {
            let e = io_ctx(e, dir)?;
            seal(&e.path())?;
        }
    }
    Ok(())
}

/// Replaces `<state>/runtimes/<name>` by the finished tree `new` (same filesystem).
fn swap_in(state: &Path, name: &str, new: &Path) -> Result<()> {
    let root = layers_dir(state);
    let dst = root.join(name);
    let old = root.join(format!(".old-{name}-{}", crate::util::random_hex(4)));
    let had_old = dst.exists();
    if had_old {
        io_ctx(fs::rename(&dst, &old), &dst)?;
    }
    if let Err(e) = fs::rename(new, &dst) {
        if had_old {
            let _ = fs::rename(&old, &dst);
        }
        return Err(RuntimeError::Io {
            path: dst,
            source: e,
        });
    }
    if had_old {
        remove_tree(&old);
    }
    Ok(())
}

fn remove_tree(p: &Path) {
    // Sealed trees have read-only directories; root removes them regardless.
    if let Err(e) = fs::remove_dir_all(p) {
        tracing::warn!(path = %p.display(), ?e, "removing a runtime tree failed");
    }
}

/// Installs the runtimes whose sources are their layers (`install_at_start`), when missing or
/// different from the embedded version. Called by `lamina serve` at start.
pub fn install_embedded(state: &Path) -> Result<()> {
    let root = layers_dir(state);
    private_dir(&root)?;
    for src in SOURCES {
        let Some(mf) = src.files.iter().find(|f| f.path == "manifest.json") else {
            continue;
        };
        let mpath = PathBuf::from(format!("rootfs/runtimes/{}/manifest.json", src.name));
        let m = parse_manifest(&mpath, mf.data, Some(src.name))?;
        if !m.install_at_start || up_to_date(&root.join(src.name), src) {
            continue;
        }
        let tmp = root.join(format!(
            ".build-{}-{}",
            src.name,
            crate::util::random_hex(4)
        ));
        private_dir(&tmp)?;
        let r = extract(src, &tmp, true).and_then(|()| {
            let rt = tmp.join("runtime");
            io_ctx(fs::create_dir_all(&rt), &rt)?;
            seal(&tmp)?;
            swap_in(state, src.name, &tmp)
        });
        if r.is_err() {
            remove_tree(&tmp);
        }
        r?;
    }
    Ok(())
}

fn up_to_date(dir: &Path, src: &RuntimeSource) -> bool {
    src.files
        .iter()
        .filter(|f| f.path == "manifest.json" || f.path.starts_with("runtime/"))
        .all(|f| fs::read(dir.join(f.path)).ok().as_deref() == Some(f.data))
}

/// Builds runtime `name` into `<state>/runtimes/<name>` from the embedded sources or from
/// `source_dir`, relaying build.sh's output with the elapsed time to `progress`.
pub fn build(
    state: &Path,
    name: &str,
    source_dir: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> Result<Manifest> {
    check_name(name)?;
    let root = layers_dir(state);
    private_dir(&root)?;
    let suffix = crate::util::random_hex(4);
    let src_tmp = root.join(format!(".src-{name}-{suffix}"));
    let out = root.join(format!(".build-{name}-{suffix}"));
    let src_dir = match source_dir {
        Some(d) => d.to_path_buf(),
        None => {
            let src = source(name).ok_or_else(|| RuntimeError::Unknown(name.to_string()))?;
            private_dir(&src_tmp)?;
            extract(src, &src_tmp, false)?;
            src_tmp.clone()
        }
    };
    let r = run_build(state, name, &src_dir, &out, progress);
    if src_tmp.exists() {
        remove_tree(&src_tmp);
    }
    match r {
        Ok(m) => Ok(m),
        Err(e) => {
            if out.exists() {
                remove_tree(&out);
            }
            Err(e)
        }
    }
}

fn run_build(
    state: &Path,
    name: &str,
    src_dir: &Path,
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Manifest> {
    let script = src_dir.join("build.sh");
    if !script.is_file() {
        return Err(RuntimeError::Io {
            path: script,
            source: io::Error::new(io::ErrorKind::NotFound, "no build.sh"),
        });
    }
    private_dir(out)?;
    let cache = layers_dir(state).join(".cache").join(name);
    private_dir(&cache)?;
    let t0 = Instant::now();
    progress(&format!(
        "building runtime {name} from {}",
        src_dir.display()
    ));
    let mut child = io_ctx(
        Command::new("bash")
            .arg(&script)
            .arg(out)
            .current_dir(src_dir)
            .env("LAMINA_RUNTIME_CACHE", &cache)
            .env("LAMINA_RUNTIME_NAME", name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn(),
        &script,
    )?;
    // stderr is relayed by a thread; stdout here, each line with the elapsed time.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut readers = Vec::new();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n').map_while(io::Result::ok) {
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    drop(tx);
    for line in rx {
        progress(&format!(
            "[{name} {:6.1}s] {line}",
            t0.elapsed().as_secs_f64()
        ));
    }
    for r in readers {
        let _ = r.join();
    }
    let status = io_ctx(child.wait(), &script)?;
    if !status.success() {
        return Err(RuntimeError::BuildFailed {
            name: name.to_string(),
            status: status.to_string(),
        });
    }
    let m = install_tree(state, name, out)?;
    progress(&format!(
        "built runtime {name} in {:.1}s: {}",
        t0.elapsed().as_secs_f64(),
        layers_dir(state).join(name).display()
    ));
    Ok(m)
}

/// Checks a finished tree (manifest, no stray top-level entries), seals it and swaps it in.
fn install_tree(state: &Path, name: &str, tree: &Path) -> Result<Manifest> {
    let mpath = tree.join("manifest.json");
    let text = io_ctx(fs::read(&mpath), &mpath)?;
    let m = parse_manifest(&mpath, &text, Some(name))?;
    for e in io_ctx(fs::read_dir(tree), tree)? {
        let e = io_ctx(e, tree)?;
        let n = e.file_name();
        let n = n.to_string_lossy();
        let ft = io_ctx(e.file_type(), &e.path())?;
        let ok = match n.as_ref() {
            "manifest.json" => ft.is_file(),
            "runtime" | "lang" => ft.is_dir(),
            _ => false,
        };
        if !ok {
            return Err(RuntimeError::Manifest {
                path: e.path(),
                reason: "a layer holds only manifest.json, runtime/ and lang/".into(),
            });
        }
    }
    seal(tree)?;
    swap_in(state, name, tree)?;
    Ok(m)
}

/// Copies a tree (regular files, directories, symlinks as they are) from `src` to `dst`.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = io_ctx(fs::symlink_metadata(src), src)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = io_ctx(fs::read_link(src), src)?;
        io_ctx(symlink(target, dst), dst)
    } else if ft.is_dir() {
        io_ctx(fs::create_dir(dst), dst)?;
        for e in io_ctx(fs::read_dir(src), src)? {
            let e = io_ctx(e, src)?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        Ok(())
    } else if ft.is_file() {
        io_ctx(fs::copy(src, dst), dst)?;
        Ok(())
    } else {
        // Devices, fifos and sockets have no place in a runtime layer.
        Err(RuntimeError::Manifest {
            path: src.to_path_buf(),
            reason: "not a regular file, directory or symlink".into(),
        })
    }
}

/// Installs a tree already in the layer format (`manifest.json`, `runtime/`, `lang/`).
pub fn import(state: &Path, dir: &Path) -> Result<Manifest> {
    let mpath = dir.join("manifest.json");
    let text = io_ctx(fs::read(&mpath), &mpath)?;
    let m = parse_manifest(&mpath, &text, None)?;
    let root = layers_dir(state);
    private_dir(&root)?;
    let tmp = root.join(format!(".import-{}-{}", m.name, crate::util::random_hex(4)));
    private_dir(&tmp)?;
    let r = (|| {
        for e in io_ctx(fs::read_dir(dir), dir)? {
            let e = io_ctx(e, dir)?;
            copy_tree(&e.path(), &tmp.join(e.file_name()))?;
        }
        install_tree(state, &m.name, &tmp)
    })();
    if r.is_err() && tmp.exists() {
        remove_tree(&tmp);
    }
    r
}

/// One row of `lamina runtime list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    /// The binary has its sources.
    pub known: bool,
    /// The manifest of the built layer, if any.
    pub built: Option<Manifest>,
}

/// Known runtimes and built (or imported) layers, by name.
pub fn list(state: &Path) -> Vec<Listed> {
    let mut names: Vec<String> = known().map(str::to_string).collect();
    if let Ok(rd) = fs::read_dir(layers_dir(state)) {
        for e in rd.filter_map(io::Result::ok) {
            let n = e.file_name().to_string_lossy().into_owned();
            if check_name(&n).is_ok() && !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names.sort();
    names
        .into_iter()
        .map(|n| Listed {
            known: is_known(&n),
            built: resolve(state, &n).ok().map(|r| r.manifest),
            name: n,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "lamina-rt-{tag}-{}-{}",
            std::process::id(),
            crate::util::random_hex(4)
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn every_source_has_a_build_script_and_a_valid_name() {
        assert!(is_known("python3.11"));
        assert!(is_known("provided.al2023"));
        for s in SOURCES {
            check_name(s.name).unwrap();
            assert!(
                s.files.iter().any(|f| f.path == "build.sh"),
                "{} has no build.sh",
                s.name
            );
        }
    }

    #[test]
    fn manifests_are_checked() {
        let p = Path::new("m.json");
        let ok = br#"{"name":"x1","argv":["/var/runtime/bootstrap"],"env":{"A_B":"1"}}"#;
        assert_eq!(parse_manifest(p, ok, Some("x1")).unwrap().argv.len(), 1);
        assert!(parse_manifest(p, ok, Some("x2")).is_err());
        for bad in [
            &br#"{"name":"x1","argv":[]}"#[..],
            br#"{"name":"x1","argv":["bootstrap"]}"#,
            br#"{"name":"../x","argv":["/b"]}"#,
            br#"{"name":"x1","argv":["/b"],"env":{"1A":"v"}}"#,
            br#"{"name":"x1"}"#,
            b"not json",
        ] {
            assert!(parse_manifest(p, bad, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_one_safe_component() {
        for ok in [
            "python3.11",
            "provided.al2023",
            "nodejs20.x",
            "ruby3.1",
            "dotnet8",
        ] {
            check_name(ok).unwrap();
        }
        for bad in ["", "..", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn embedded_runtimes_install_and_resolve() {
        let state = tmp("install");
        assert!(matches!(
            resolve(&state, "python3.11"),
            Err(RuntimeError::NotBuilt(_))
        ));
        install_embedded(&state).unwrap();
        let r = resolve(&state, "python3.11").unwrap();
        assert_eq!(r.manifest.argv[1], "/var/runtime/bootstrap");
        let rt = r.runtime_dir.unwrap();
        assert!(rt.join("lambda_runtime_lamina/runtime.py").is_file());
        let mode = fs::metadata(rt.join("bootstrap"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o555);
        let p = resolve(&state, "provided.al2023").unwrap();
        assert_eq!(p.manifest.argv, ["/var/task/bootstrap"]);
        assert!(p.lang_dir.is_none());
        // Idempotent, and a tampered layer is repaired.
        install_embedded(&state).unwrap();
        let f = rt.join("bootstrap.py");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&f, "tampered").unwrap();
        install_embedded(&state).unwrap();
        assert_ne!(fs::read_to_string(&f).unwrap(), "tampered");
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn build_runs_the_script_and_a_failed_build_keeps_the_old_layer() {
        let state = tmp("build");
        let src = tmp("src");
        fs::write(
            src.join("build.sh"),
            "set -e\nout=$1\necho step one\nmkdir -p $out/runtime $out/lang/bin\n\
             echo hi > $out/runtime/bootstrap\n\
             printf '{\"name\":\"demo1\",\"argv\":[\"/var/runtime/bootstrap\"]}' > $out/manifest.json\n",
        )
        .unwrap();
        let mut lines = Vec::new();
        let m = build(&state, "demo1", Some(&src), &mut |l| {
            lines.push(l.to_string())
        })
        .unwrap();
        assert_eq!(m.name, "demo1");
        assert!(lines.iter().any(|l| l.contains("step one")), "{lines:?}");
        let r = resolve(&state, "demo1").unwrap();
        assert!(r.lang_dir.unwrap().ends_with("demo1/lang"));
        fs::write(src.join("build.sh"), "echo failing; exit 3\n").unwrap();
        let e = build(&state, "demo1", Some(&src), &mut |_| {}).unwrap_err();
        assert!(matches!(e, RuntimeError::BuildFailed { .. }), "{e}");
        assert!(resolve(&state, "demo1").is_ok());
        // Nothing is left behind but the layer and the download cache.
        let mut left: Vec<String> = fs::read_dir(layers_dir(&state))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".cache", "demo1"]);
        // A manifest naming another runtime is refused.
        fs::write(
            src.join("build.sh"),
            "mkdir -p $1/runtime; echo '{\"name\":\"other\",\"argv\":[\"/x\"]}' > $1/manifest.json\n",
        )
        .unwrap();
        assert!(matches!(
            build(&state, "demo1", Some(&src), &mut |_| {}),
            Err(RuntimeError::Manifest { .. })
        ));
        assert!(matches!(
            build(&state, "no-such-runtime", None, &mut |_| {}),
            Err(RuntimeError::Unknown(_))
        ));
        fs::remove_dir_all(&state).unwrap();
        fs::remove_dir_all(&src).unwrap();
    }

    #[test]
    fn import_installs_a_layer_tree() {
        let state = tmp("import");
        let dir = tmp("imp");
        fs::create_dir_all(dir.join("runtime")).unwrap();
        fs::write(dir.join("runtime/bootstrap"), "x").unwrap();
        symlink("bootstrap", dir.join("runtime/link")).unwrap();
        fs::write(
            dir.join("manifest.json"),
            r#"{"name":"custom1","argv":["/var/runtime/bootstrap"],"description":"d"}"#,
        )
        .unwrap();
        let m = import(&state, &dir).unwrap();
        assert_eq!(m.description, "d");
        let l = list(&state);
        let row = l.iter().find(|r| r.name == "custom1").unwrap();
        assert!(!row.known && row.built.is_some());
        assert!(l.iter().any(|r| r.name == "python3.11" && r.known));
        fs::write(dir.join("stray"), "x").unwrap();
        assert!(import(&state, &dir).is_err());
        fs::remove_dir_all(&state).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
