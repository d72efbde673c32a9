//! Embeds the runtime sources (`rootfs/runtimes/<name>/`) into the binary, so that the single
//! `lamina` binary knows every runtime and can build any of them (`lamina runtime build NAME`)
//! without the source tree. Every directory under `rootfs/runtimes` is a runtime; its files
//! are embedded with their permission bits.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf, u32)>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name == "__pycache__" || name.ends_with(".pyc") || name == "node_modules" {
            continue;
        }
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            walk(&p, base, out);
        } else if m.is_file() {
            let rel = p
                .strip_prefix(base)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            out.push((rel, p.clone(), m.permissions().mode() & 0o777));
        }
    }
}

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest_dir.join("../rootfs/runtimes");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut names: Vec<PathBuf> = fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut code = String::from("pub static SOURCES: &[RuntimeSource] = &[\n");
    for dir in names {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files = Vec::new();
        walk(&dir, &dir, &mut files);
        let _ = writeln!(code, "    RuntimeSource {{ name: {name:?}, files: &[");
        for (rel, abs, mode) in files {
            println!("cargo:rerun-if-changed={}", abs.display());
            let abs = abs.canonicalize().unwrap_or(abs);
            let _ = writeln!(
                code,
                "        EmbeddedFile {{ path: {rel:?}, mode: 0o{mode:o}, data: include_bytes!({:?}) }},",
                abs.display().to_string()
            );
        }
        code.push_str("    ] },\n");
        // New files in a runtime's subdirectories also rebuild.
        let mut dirs = vec![dir.clone()];
        while let Some(d) = dirs.pop() {
            println!("cargo:rerun-if-changed={}", d.display());
            if let Ok(rd) = fs::read_dir(&d) {
                dirs.extend(
                    rd.filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.is_dir()),
                );
            }
        }
    }
    code.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_default()).join("runtimes_embedded.rs");
    if let Err(e) = fs::write(&out, code) {
        panic!("writing {}: {e}", out.display());
    }
}
