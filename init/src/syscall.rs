//! The kernel calls init makes to build an env, behind a small trait so that their order is
//! unit-tested without root (a recording double) while the privileged tests check the real thing.

use std::cell::RefCell;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

/// One kernel operation, as recorded by [`Recorder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: u64,
        data: Option<String>,
    },
    Umount(PathBuf),
    PivotRoot(PathBuf),
    Chdir(PathBuf),
    Mkdir(PathBuf, u32),
    Mknod(PathBuf, u32, u64),
    Symlink(PathBuf, PathBuf),
    Exists(PathBuf),
}

/// The kernel operations used to set up an env's filesystem.
pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// `umount2(target, MNT_DETACH)`.
    fn umount_detach(&self, target: &Path) -> io::Result<()>;
    /// `pivot_root(new_root, new_root)` after `chdir(new_root)`: the old root ends up stacked
    /// under the new one and is detached by the caller with `umount_detach(".")`.
    fn pivot_root(&self, new_root: &Path) -> io::Result<()>;
    fn chdir(&self, path: &Path) -> io::Result<()>;
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()>;
    fn mknod_char(&self, path: &Path, mode: u32, dev: u64) -> io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// Whether a path exists (without following a final symlink).
    fn exists(&self, path: &Path) -> bool;
}

/// The real kernel.
pub struct Linux;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(io::Error::from)
    }

    fn umount_detach(&self, target: &Path) -> io::Result<()> {
        nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from)
    }

    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        nix::unistd::chdir(new_root)?;
        nix::unistd::pivot_root(".", ".").map_err(io::Error::from)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        nix::unistd::chdir(path).map_err(io::Error::from)
    }

    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        match nix::unistd::mkdir(path, Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn mknod_char(&self, path: &Path, mode: u32, dev: u64) -> io::Result<()> {
        nix::sys::stat::mknod(path, SFlag::S_IFCHR, Mode::from_bits_truncate(mode), dev)
            .map_err(io::Error::from)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn exists(&self, path: &Path) -> bool {
        let Ok(c) = cstr(path) else { return false };
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `c` is a valid NUL-terminated string and `st` points to writable memory of the
        // right size; lstat only writes into it.
        unsafe { libc::lstat(c.as_ptr(), st.as_mut_ptr()) == 0 }
    }
}

/// A test double that records every call and succeeds (or fails at a chosen call).
#[derive(Default)]
pub struct Recorder {
    pub calls: RefCell<Vec<Call>>,
    /// Paths that `exists` reports as present.
    pub present: Vec<PathBuf>,
    /// Fail the n-th mutating call (0-based) with EPERM.
    pub fail_at: Option<usize>,
}

impl Recorder {
    fn push(&self, c: Call) -> io::Result<()> {
        let mut calls = self.calls.borrow_mut();
        let n = calls
            .iter()
            .filter(|c| !matches!(c, Call::Exists(_)))
            .count();
        calls.push(c);
        if self.fail_at == Some(n) {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(())
    }
}

impl Syscall for Recorder {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.push(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags: flags.bits(),
            data: data.map(str::to_string),
        })
    }
    fn umount_detach(&self, target: &Path) -> io::Result<()> {
        self.push(Call::Umount(target.to_path_buf()))
    }
    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        self.push(Call::PivotRoot(new_root.to_path_buf()))
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.push(Call::Chdir(path.to_path_buf()))
    }
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.push(Call::Mkdir(path.to_path_buf(), mode))
    }
    fn mknod_char(&self, path: &Path, mode: u32, dev: u64) -> io::Result<()> {
        self.push(Call::Mknod(path.to_path_buf(), mode, dev))
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.push(Call::Symlink(target.to_path_buf(), link.to_path_buf()))
    }
    fn exists(&self, path: &Path) -> bool {
        self.calls
            .borrow_mut()
            .push(Call::Exists(path.to_path_buf()));
        self.present.iter().any(|p| p == path)
    }
}
