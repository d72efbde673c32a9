//! Installs the function process's seccomp programs.
//!
//! The programs are compiled by the supervisor (`lamina::sandbox::seccomp`, from
//! `seccomp-profiles/default.json`) and arrive here as [`BpfFilter`]s in the env's
//! [`ProcessSpec`](crate::protocol::ProcessSpec). Installing is the last step before `execve`.
//!
//! Requirement: the caller has already set `no_new_privs` (`prctl(PR_SET_NO_NEW_PRIVS, 1)`).
//! The process has no `CAP_SYS_ADMIN` by then, and without either of the two the kernel refuses
//! `SECCOMP_SET_MODE_FILTER` with `EACCES`.

use std::io;

use crate::protocol::BpfFilter;

/// Installs `filters` in the calling thread, in order (the kernel runs the last one first and
/// applies the most restrictive answer of all).
///
/// All conversion and allocation happens before the first syscall, so this is safe to call in
/// a child forked from a multithreaded parent, between `fork` and `execve`. On error, the
/// programs before the failing one stay installed; the caller must not exec the function then.
pub fn install(filters: &[BpfFilter]) -> io::Result<()> {
    // Allocates: convert every program to the kernel's layout.
    let programs: Vec<Vec<libc::sock_filter>> =
        filters.iter().map(BpfFilter::to_sock_filters).collect();
    install_prepared(&programs)
}

/// Installs programs already converted with [`BpfFilter::to_sock_filters`] (for callers that
/// convert before `fork`). Does not allocate. Every length is checked before the first program
/// is installed, so an invalid one installs nothing.
pub fn install_prepared(programs: &[Vec<libc::sock_filter>]) -> io::Result<()> {
    if programs
        .iter()
        .any(|p| p.is_empty() || u16::try_from(p.len()).is_err())
    {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for program in programs {
        let fprog = libc::sock_fprog {
            // Checked above.
            len: program.len() as u16,
            filter: program.as_ptr().cast_mut(),
        };
        set_mode_filter(&fprog)?;
    }
    Ok(())
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, fprog)`, or `prctl(PR_SET_SECCOMP, ...)` on kernels
/// without the seccomp syscall (before 3.17).
fn set_mode_filter(fprog: &libc::sock_fprog) -> io::Result<()> {
    let ptr: *const libc::sock_fprog = fprog;
    // SAFETY: `ptr` points to a valid `sock_fprog` whose `filter` points to `len` initialized
    // `sock_filter`s (borrowed from the caller's vector, alive for this call); the kernel
    // only copies them in.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            ptr,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // SAFETY: as above; PR_SET_SECCOMP with SECCOMP_MODE_FILTER reads the same `sock_fprog`.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            ptr,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_program_is_rejected_before_any_syscall() {
        let err = install(&[BpfFilter(Vec::new())]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn oversized_program_is_rejected_before_any_syscall() {
        let ret_allow = BpfFilter::pack(0x06, 0, 0, libc::SECCOMP_RET_ALLOW);
        let err = install(&[BpfFilter(vec![ret_allow; 65536])]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
