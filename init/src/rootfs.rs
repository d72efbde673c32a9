//! Building the env's root filesystem, as an ordered list of steps (the env contract, part 2).
//!
//! 1. `make-private`: every mount in the new mount namespace becomes private.
//! 2. `root-overlay`: a read-only overlay of the skeleton (mountpoints and the generated `/etc`)
//!    over the base tree at the assembly mountpoint.
//! 3. `binds`: host directories (for `--base host`: `/usr`, real `/lib*` dirs, `/etc/ssl/certs`,
//!    ...) bound read-only, nosuid, nodev; then the runtime layer's `runtime/` at `/var/runtime`
//!    and `lang/` at `/var/lang` (read-only, nosuid, nodev).
//! 4. `code`: the function's code bound read-only at `/var/task`.
//! 5. `layers`: layers at `/opt` (one: a read-only bind; several: a read-only overlay with the
//!    last layer on top).
//! 6. `dev`: a tmpfs with null, zero, full, random, urandom, tty, a private devpts instance, a
//!    `shm` tmpfs and the usual symlinks; then remounted read-only.
//! 7. `proc`: procfs of the env's PID namespace; kcore, keys, timer_list, sched_debug, ... masked
//!    with /dev/null or an empty read-only tmpfs; sys, sysrq-trigger, irq, bus, fs read-only.
//! 8. `tmp`: a tmpfs of the ephemeral storage size at `/tmp` (mode 1777).
//! 9. `pivot-root`: pivot_root into the assembled root, then detach the old root.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::protocol::RootfsPlan;
use crate::syscall::Syscall;

/// A failed step, naming the step and the path it was working on.
#[derive(Debug, thiserror::Error)]
#[error("{step} {}: {source}", path.display())]
pub struct StepError {
    pub step: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

pub type Result<T> = std::result::Result<T, StepError>;

trait Ctx<T> {
    fn ctx(self, step: &'static str, path: &Path) -> Result<T>;
}

impl<T> Ctx<T> for io::Result<T> {
    fn ctx(self, step: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| StepError {
            step,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Paths inside /proc hidden behind /dev/null (files) or an empty read-only tmpfs (dirs).
pub const PROC_MASKED_FILES: &[&str] = &[
    "kcore",
    "keys",
    "key-users",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "kallsyms",
    "kpagecount",
    "kpageflags",
    "kpagecgroup",
    "config.gz",
];
pub const PROC_MASKED_DIRS: &[&str] = &["acpi", "asound", "scsi", "driver"];
/// Paths inside /proc made read-only.
pub const PROC_READONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// Character devices created in the env's /dev: (name, major, minor).
pub const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const RO_BIND: MsFlags = MsFlags::from_bits_truncate(
    MsFlags::MS_BIND.bits()
        | MsFlags::MS_REMOUNT.bits()
        | MsFlags::MS_RDONLY.bits()
        | MsFlags::MS_NOSUID.bits()
        | MsFlags::MS_NODEV.bits(),
);

fn under(root: &Path, inside: &Path) -> PathBuf {
    root.join(inside.strip_prefix("/").unwrap_or(inside))
}

/// Escapes a path for an overlay option string (`,` and `:` and `\` are special).
fn overlay_escape(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn overlay_data(lowers: &[PathBuf]) -> String {
    let joined: Vec<String> = lowers.iter().map(|p| overlay_escape(p)).collect();
    format!("lowerdir={}", joined.join(":"))
}

fn bind_ro(sys: &dyn Syscall, step: &'static str, src: &Path, dst: &Path) -> Result<()> {
    sys.mount(Some(src), dst, None, MsFlags::MS_BIND, None)
        .ctx(step, dst)?;
    sys.mount(None, dst, None, RO_BIND, None).ctx(step, dst)
}

/// Runs steps 1-9. On return the process's root and cwd are the env's `/`.
pub fn setup(sys: &dyn Syscall, plan: &RootfsPlan, timings: &mut Vec<(String, u64)>) -> Result<()> {
    let mut clock = crate::Stopwatch::new(timings);
    let root = plan.mountpoint.as_path();

    // 1. make-private
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .ctx("make-private", Path::new("/"))?;
    clock.lap("make-private");

    // 2. root-overlay
    sys.mount(
        Some(Path::new("overlay")),
        root,
        Some("overlay"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&overlay_data(&plan.root_lowers)),
    )
    .ctx("root-overlay", root)?;
    clock.lap("root-overlay");

    // 3. binds
    for b in &plan.binds {
        bind_ro(sys, "bind", &b.source, &under(root, &b.target))?;
    }
    clock.lap("binds");

    // 4. code
    if let Some(code) = &plan.code {
        bind_ro(sys, "code", code, &root.join("var/task"))?;
    }
    clock.lap("code");

    // 5. layers
    let opt = root.join("opt");
    match plan.layers.as_slice() {
        [] => {}
        [one] => bind_ro(sys, "layers", one, &opt)?,
        many => {
            let topmost_first: Vec<PathBuf> = many.iter().rev().cloned().collect();
            sys.mount(
                Some(Path::new("overlay")),
                &opt,
                Some("overlay"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(&overlay_data(&topmost_first)),
            )
            .ctx("layers", &opt)?;
        }
    }
    clock.lap("layers");

    // 6. dev
    mount_dev(sys, &root.join("dev"))?;
    clock.lap("dev");

    // 7. proc
    mount_proc(sys, &root.join("proc"), &root.join("dev/null"))?;
    clock.lap("proc");

    // 8. tmp
    let tmp = root.join("tmp");
    let data = format!("size={}m,mode=1777", plan.tmp_size_mb);
    sys.mount(
        Some(Path::new("tmpfs")),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&data),
    )
    .ctx("tmp", &tmp)?;
    clock.lap("tmp");

    // 9. pivot-root
    sys.pivot_root(root).ctx("pivot-root", root)?;
    sys.umount_detach(Path::new("."))
        .ctx("pivot-root", Path::new("."))?;
    sys.chdir(Path::new("/"))
        .ctx("pivot-root", Path::new("/"))?;
    clock.lap("pivot-root");
    Ok(())
}

fn mount_dev(sys: &dyn Syscall, dev: &Path) -> Result<()> {
    let step = "dev";
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    sys.mount(
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        flags,
        Some("size=64k,mode=755"),
    )
    .ctx(step, dev)?;
    for (name, major, minor) in DEVICES {
        let p = dev.join(name);
        sys.mknod_char(&p, 0o666, nix::sys::stat::makedev(*major, *minor))
            .ctx(step, &p)?;
    }
    let pts = dev.join("pts");
    sys.mkdir(&pts, 0o755).ctx(step, &pts)?;
    sys.mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .ctx(step, &pts)?;
    let shm = dev.join("shm");
    sys.mkdir(&shm, 0o755).ctx(step, &shm)?;
    sys.mount(
        Some(Path::new("tmpfs")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=64m,mode=1777"),
    )
    .ctx(step, &shm)?;
    for (target, link) in [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ] {
        let l = dev.join(link);
        sys.symlink(Path::new(target), &l).ctx(step, &l)?;
    }
    sys.mount(
        None,
        dev,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        None,
    )
    .ctx(step, dev)
}

fn mount_proc(sys: &dyn Syscall, proc: &Path, null: &Path) -> Result<()> {
    let step = "proc";
    sys.mount(
        Some(Path::new("proc")),
        proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
    .ctx(step, proc)?;
    for name in PROC_MASKED_FILES {
        let p = proc.join(name);
        if sys.exists(&p) {
            sys.mount(Some(null), &p, None, MsFlags::MS_BIND, None)
                .ctx(step, &p)?;
        }
    }
    for name in PROC_MASKED_DIRS {
        let p = proc.join(name);
        if sys.exists(&p) {
            sys.mount(
                Some(Path::new("tmpfs")),
                &p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )
            .ctx(step, &p)?;
        }
    }
    for name in PROC_READONLY {
        let p = proc.join(name);
        if sys.exists(&p) {
            sys.mount(Some(&p), &p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
                .ctx(step, &p)?;
            sys.mount(None, &p, None, RO_BIND | MsFlags::MS_NOEXEC, None)
                .ctx(step, &p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Bind;
    use crate::syscall::{Call, Recorder};

    fn plan(layers: usize) -> RootfsPlan {
        RootfsPlan {
            mountpoint: "/run/lamina/i/e1/root".into(),
            root_lowers: vec!["/run/lamina/i/skel".into(), "/run/lamina/i/empty".into()],
            binds: vec![
                Bind {
                    source: "/usr".into(),
                    target: "/usr".into(),
                },
                // A runtime layer: runtime/ at /var/runtime, lang/ at /var/lang.
                Bind {
                    source: "/var/lib/lamina/runtimes/nodejs20.x/runtime".into(),
                    target: "/var/runtime".into(),
                },
                Bind {
                    source: "/var/lib/lamina/runtimes/nodejs20.x/lang".into(),
                    target: "/var/lang".into(),
                },
            ],
            code: Some("/srv/code".into()),
            layers: (1..=layers)
                .map(|i| PathBuf::from(format!("/srv/l{i}")))
                .collect(),
            tmp_size_mb: 512,
        }
    }

    fn targets(calls: &[Call]) -> Vec<String> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount { target, .. } => Some(format!("mount {}", target.display())),
                Call::PivotRoot(p) => Some(format!("pivot {}", p.display())),
                Call::Umount(p) => Some(format!("umount {}", p.display())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn steps_run_in_contract_order() {
        let rec = Recorder {
            present: vec![
                "/run/lamina/i/e1/root/proc/kcore".into(),
                "/run/lamina/i/e1/root/proc/sys".into(),
            ],
            ..Default::default()
        };
        let mut t = Vec::new();
        setup(&rec, &plan(2), &mut t).unwrap();
        let got = targets(&rec.calls.borrow());
        let r = "/run/lamina/i/e1/root";
        let want_prefix = [
            "mount /".to_string(),
            format!("mount {r}"),
            format!("mount {r}/usr"),
            format!("mount {r}/usr"),
            format!("mount {r}/var/runtime"),
            format!("mount {r}/var/runtime"),
            format!("mount {r}/var/lang"),
            format!("mount {r}/var/lang"),
            format!("mount {r}/var/task"),
            format!("mount {r}/var/task"),
            format!("mount {r}/opt"),
            format!("mount {r}/dev"),
        ];
        assert_eq!(&got[..want_prefix.len()], &want_prefix[..]);
        let pos = |s: &str| got.iter().position(|g| g == s).unwrap();
        assert!(pos(&format!("mount {r}/proc")) > pos(&format!("mount {r}/dev/pts")));
        assert!(pos(&format!("mount {r}/proc/kcore")) > pos(&format!("mount {r}/proc")));
        assert!(pos(&format!("mount {r}/tmp")) > pos(&format!("mount {r}/proc/sys")));
        assert_eq!(got[got.len() - 2], format!("pivot {r}"));
        assert_eq!(got[got.len() - 1], "umount .");
        let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "make-private",
                "root-overlay",
                "binds",
                "code",
                "layers",
                "dev",
                "proc",
                "tmp",
                "pivot-root"
            ]
        );
    }

    #[test]
    fn layers_overlay_puts_last_layer_on_top() {
        let rec = Recorder::default();
        setup(&rec, &plan(3), &mut Vec::new()).unwrap();
        let calls = rec.calls.borrow();
        let data = calls
            .iter()
            .find_map(|c| match c {
                Call::Mount { target, data, .. } if target.ends_with("opt") => data.clone(),
                _ => None,
            })
            .unwrap();
        assert_eq!(data, "lowerdir=/srv/l3:/srv/l2:/srv/l1");
    }

    #[test]
    fn mounts_are_nosuid_and_readonly_where_required() {
        let rec = Recorder::default();
        setup(&rec, &plan(1), &mut Vec::new()).unwrap();
        let calls = rec.calls.borrow();
        for c in calls.iter() {
            if let Call::Mount { target, flags, .. } = c {
                let f = MsFlags::from_bits_truncate(*flags);
                if f.contains(MsFlags::MS_REMOUNT) && f.contains(MsFlags::MS_BIND) {
                    assert!(
                        f.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID),
                        "{target:?}"
                    );
                }
                if target.ends_with("root") {
                    assert!(f.contains(MsFlags::MS_RDONLY), "root must be read-only");
                }
            }
        }
    }

    #[test]
    fn a_failing_step_is_named() {
        let rec = Recorder {
            fail_at: Some(1),
            ..Default::default()
        };
        let err = setup(&rec, &plan(0), &mut Vec::new()).unwrap_err();
        assert_eq!(err.step, "root-overlay");
        assert_eq!(err.source.raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn overlay_paths_are_escaped() {
        assert_eq!(
            overlay_data(&["/a:b".into(), "/c,d".into()]),
            "lowerdir=/a\\:b:/c\\,d"
        );
    }
}
