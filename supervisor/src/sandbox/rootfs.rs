//! The skeleton under every env's root: mountpoints and a generated minimal `/etc`, built once
//! per supervisor in its private run directory and used as the topmost overlay lowerdir.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use lamina_init::protocol::Bind;

/// The sandbox user, named like Lambda's.
pub const SANDBOX_USER: &str = "sbx_user1051";
pub const SANDBOX_UID: u32 = 993;
pub const SANDBOX_GID: u32 = 990;

/// Top-level directories of the host bound read-only for `--base host` (when they are real
/// directories; when they are symlinks, as on merged-/usr systems, the symlink is recreated).
pub const HOST_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Host `/etc` entries bound read-only for `--base host`: certificates and the alternatives
/// symlinks that `/usr/bin` entries point through. Nothing else of the host's `/etc`.
pub const HOST_ETC_BINDS: &[&str] = &["etc/ssl/certs", "etc/alternatives"];

/// Mountpoints every root has.
const MOUNTPOINTS: &[&str] = &[
    "proc",
    "dev",
    "tmp",
    "var/task",
    "var/runtime",
    "var/lang",
    "opt",
    "etc",
];

#[derive(Debug, thiserror::Error)]
#[error("build env skeleton at {path}: {source}")]
pub struct SkeletonError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn ctx<T>(r: io::Result<T>, path: &Path) -> Result<T, SkeletonError> {
    r.map_err(|source| SkeletonError {
        path: path.to_path_buf(),
        source,
    })
}

/// The base filesystem under an env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// A minimal read-only root composed from the host's `/usr`, `/bin`, `/sbin`, `/lib*`.
    Host,
    /// A directory tree (e.g. a runtime's base layer).
    Dir(PathBuf),
}

/// What a skeleton contributes to an env's [`lamina_init::protocol::RootfsPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skeleton {
    /// Overlay lowerdirs of `/`, topmost first, without the base directory.
    pub lowers: Vec<PathBuf>,
    pub binds: Vec<Bind>,
}

impl Skeleton {
    /// Overlay lowerdirs of `/` for this base.
    pub fn root_lowers(&self, base: &Base) -> Vec<PathBuf> {
        let mut l = self.lowers.clone();
        if let Base::Dir(d) = base {
            l.push(d.clone());
        }
        l
    }
}

fn write_file(path: &Path, content: &str) -> Result<(), SkeletonError> {
    ctx(fs::write(path, content), path)?;
    ctx(
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)),
        path,
    )
}

fn mkdirs(path: &Path) -> Result<(), SkeletonError> {
    ctx(fs::create_dir_all(path), path)?;
    ctx(
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)),
        path,
    )
}

/// The generated `/etc` files: (name, content).
pub fn etc_files(host_resolv: &str) -> Vec<(&'static str, String)> {
    let resolv: String = host_resolv
        .lines()
        .filter(|l| {
            l.starts_with("nameserver") || l.starts_with("search") || l.starts_with("options")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    vec![
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\n\
                 {SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_GID}::/tmp:/usr/sbin/nologin\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        (
            "group",
            format!("root:x:0:\n{SANDBOX_USER}:x:{SANDBOX_GID}:\nnogroup:x:65534:\n"),
        ),
        (
            "hosts",
            "127.0.0.1\tlocalhost\n127.0.0.1\tsandbox.localdomain sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_string(),
        ),
        ("resolv.conf", resolv),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n\
             protocols: files\nservices: files\nethers: files\nrpc: files\n"
                .to_string(),
        ),
        ("hostname", "localhost\n".to_string()),
    ]
}

/// Builds the skeleton for `base` under `dir` (which must not exist yet).
pub fn build(dir: &Path, base: &Base) -> Result<Skeleton, SkeletonError> {
    let skel = dir.join("skel");
    for m in MOUNTPOINTS {
        mkdirs(&skel.join(m))?;
    }
    let resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for (name, content) in etc_files(&resolv) {
        write_file(&skel.join("etc").join(name), &content)?;
    }
    ctx(
        symlink("/usr/share/zoneinfo/UTC", skel.join("etc/localtime")),
        &skel,
    )?;
    let mut lowers = vec![skel.clone()];
    let mut binds = Vec::new();
    if *base == Base::Host {
        for d in HOST_DIRS {
            let host = Path::new("/").join(d);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = ctx(fs::read_link(&host), &host)?;
                    ctx(symlink(target, skel.join(d)), &skel.join(d))?;
                }
                Ok(m) if m.is_dir() => {
                    mkdirs(&skel.join(d))?;
                    binds.push(Bind {
                        source: host.clone(),
                        target: host,
                    });
                }
                _ => {}
            }
        }
        for e in HOST_ETC_BINDS {
            let host = Path::new("/").join(e);
            if host.is_dir() {
                mkdirs(&skel.join(e))?;
                binds.push(Bind {
                    source: host.clone(),
                    target: host,
                });
            }
        }
        if let Ok(cache) = fs::read("/etc/ld.so.cache") {
            let p = skel.join("etc/ld.so.cache");
            ctx(fs::write(&p, cache), &p)?;
        }
        // A read-only overlay needs two lowerdirs; the host base has no tree of its own.
        let empty = dir.join("empty");
        mkdirs(&empty)?;
        lowers.push(empty);
    }
    Ok(Skeleton { lowers, binds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etc_has_the_sandbox_user_and_no_host_secrets() {
        let files = etc_files("# comment\nnameserver 10.0.0.53\nsearch lan\n");
        let get = |n: &str| {
            files
                .iter()
                .find(|(f, _)| *f == n)
                .map(|(_, c)| c.clone())
                .unwrap()
        };
        assert!(get("passwd").contains("sbx_user1051:x:993:990:"));
        assert!(get("group").contains("sbx_user1051:x:990:"));
        assert_eq!(get("resolv.conf"), "nameserver 10.0.0.53\nsearch lan\n");
        assert!(!files.iter().any(|(f, _)| *f == "shadow"));
    }

    #[test]
    fn host_skeleton_binds_only_allowed_host_dirs() {
        let dir = std::env::temp_dir().join(format!("lamina-skel-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let s = build(&dir, &Base::Host).unwrap();
        assert_eq!(s.lowers.len(), 2);
        for b in &s.binds {
            let t = b.target.to_string_lossy();
            assert!(
                HOST_DIRS.iter().any(|d| t == format!("/{d}"))
                    || HOST_ETC_BINDS.iter().any(|e| t == format!("/{e}")),
                "unexpected bind {t}"
            );
        }
        for forbidden in ["etc/shadow", "root", "home", "var/lib", "run", "mnt", "srv"] {
            assert!(!dir.join("skel").join(forbidden).exists(), "{forbidden}");
        }
        assert!(dir.join("skel/etc/passwd").is_file());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dir_base_is_the_bottom_lowerdir() {
        let dir = std::env::temp_dir().join(format!("lamina-skel-test2-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let base = Base::Dir("/srv/base".into());
        let s = build(&dir, &base).unwrap();
        assert!(s.binds.is_empty());
        assert_eq!(
            s.root_lowers(&base),
            vec![dir.join("skel"), PathBuf::from("/srv/base")]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
