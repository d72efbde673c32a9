//! Encryption at rest for functions' environment variables (AES-256-GCM).
//!
//! The key is 32 random bytes in a file of mode 0600: `<state>/key` by default (created on the
//! first start), or the file `lamina serve --key-file` names (which must exist). Each sealed value
//! is `nonce (12 bytes) || ciphertext+tag`, with the owner (function name and version) as
//! associated data, so a value copied onto another function's row does not open.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("key file {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("key file {0} must hold exactly 32 bytes (it holds {1})")]
    KeyLength(PathBuf, usize),
    #[error("key file {0} is readable by others (mode {1:o}); chmod 600 it")]
    KeyMode(PathBuf, u32),
    #[error("a sealed value did not open: wrong key or corrupt data")]
    Open,
}

pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// Loads the key from `path`; when `create` is set and the file is missing, makes a new one
    /// (written to a temp file of mode 0600, synced, then linked into place).
    pub fn load(path: &Path, create: bool) -> Result<Sealer, SecretError> {
        let io = |e| SecretError::Io(path.to_path_buf(), e);
        if create && !path.exists() {
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(&crate::util::random_bytes(32)).map_err(io)?;
            f.sync_all().map_err(io)?;
            drop(f);
            // A concurrent first start may have won: keep its key.
            let linked = fs::hard_link(&tmp, path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        let meta = fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::KeyMode(path.to_path_buf(), mode));
        }
        let key = fs::read(path).map_err(io)?;
        if key.len() != 32 {
            return Err(SecretError::KeyLength(path.to_path_buf(), key.len()));
        }
        let cipher = Aes256Gcm::new_from_slice(&key)
            .map_err(|_| SecretError::KeyLength(path.to_path_buf(), key.len()))?;
        Ok(Sealer { cipher })
    }

    /// Encrypts `plain` for `owner`.
    pub fn seal(&self, plain: &[u8], owner: &str) -> Vec<u8> {
        let nonce = crate::util::random_bytes(12);
        let mut out = nonce.clone();
        // Encryption with a 12-byte nonce and in-memory buffers cannot fail.
        if let Ok(ct) = self.cipher.encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: owner.as_bytes(),
            },
        ) {
            out.extend_from_slice(&ct);
        }
        out
    }

    /// Decrypts a value sealed for `owner`.
    pub fn open(&self, sealed: &[u8], owner: &str) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < 12 + 16 {
            return Err(SecretError::Open);
        }
        let (nonce, ct) = sealed.split_at(12);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: owner.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_owner_binding() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("key");
        let s = Sealer::load(&key, true).unwrap();
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let sealed = s.seal(b"hunter2", "f\0$LATEST");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(s.open(&sealed, "f\0$LATEST").unwrap(), b"hunter2");
        assert!(s.open(&sealed, "g\0$LATEST").is_err());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(s.open(&bad, "f\0$LATEST").is_err());
        // The same key again on reload.
        let s2 = Sealer::load(&key, true).unwrap();
        assert_eq!(s2.open(&sealed, "f\0$LATEST").unwrap(), b"hunter2");
        // A world-readable key is refused.
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Sealer::load(&key, false),
            Err(SecretError::KeyMode(..))
        ));
        assert!(matches!(
            Sealer::load(&d.path().join("none"), false),
            Err(SecretError::Io(..))
        ));
    }
}
