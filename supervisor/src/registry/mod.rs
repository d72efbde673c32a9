//! The registry: functions and their code, in SQLite (WAL) plus a content-addressed blob store.
//!
//! State directory layout:
//! - `lamina.db`: SQLite; every mutating operation is one transaction.
//! - `blobs/sha256/<hex>`: uploaded ZIPs, written to a temp file and renamed into place.
//! - `code/<hex>/`: each ZIP unpacked once, read-only, the lowerdir envs mount at /var/task.

pub mod unzip;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

/// A registry failure (storage, not user input: those are checked before).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("state directory {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("stored configuration is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error(transparent)]
    Unzip(#[from] unzip::UnzipError),
    #[error("function already exists: {0}")]
    Exists(String),
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// A function's `$LATEST` as stored.
#[derive(Debug, Clone)]
pub struct StoredFunction {
    pub name: String,
    /// The FunctionConfiguration document (as returned by GetFunctionConfiguration).
    pub config: Value,
    /// Hex SHA-256 of the ZIP (names the blob and the unpacked tree).
    pub code_hex: String,
}

pub struct Registry {
    dir: PathBuf,
    db: Mutex<Connection>,
    /// Functions read since start; every change goes through this registry, which keeps the
    /// cache in step (an invoke then needs no SQL and no JSON parsing).
    cache: Mutex<HashMap<String, Arc<StoredFunction>>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY NOT NULL,
    config TEXT NOT NULL,
    code_hex TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
";

impl Registry {
    /// Opens (creating if needed) the registry in `dir`.
    pub fn open(dir: &Path) -> Result<Registry> {
        for sub in ["blobs/sha256", "code"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| RegistryError::Io(p.clone(), e))?;
        }
        let _ = unzip::remove_stale_temp_dirs(&dir.join("code"));
        let db = Connection::open(dir.join("lamina.db"))?;
        // The async queue writes to the same database through its own connection.
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        db.execute_batch(SCHEMA)?;
        Ok(Registry {
            dir: dir.to_path_buf(),
            db: Mutex::new(db),
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores the ZIP (content-addressed) and unpacks it once; returns its hex hash and tree.
    pub fn store_code(&self, zip: &[u8]) -> Result<(String, PathBuf)> {
        let hex = unzip::sha256_hex(zip);
        let tree = unzip::unpack_once(zip, &self.dir.join("code"), &unzip::Limits::default())?;
        let blob = self.dir.join("blobs/sha256").join(&hex);
        if !blob.exists() {
            let tmp = self
                .dir
                .join("blobs/sha256")
                .join(format!(".tmp-{hex}-{}", std::process::id()));
            let write = || -> std::io::Result<()> {
                let mut f = fs::File::create(&tmp)?;
                f.write_all(zip)?;
                f.sync_all()?;
                fs::rename(&tmp, &blob)
            };
            write().map_err(|e| RegistryError::Io(blob.clone(), e))?;
        }
        Ok((hex, tree))
    }

    /// The unpacked tree of a stored ZIP.
    pub fn code_dir(&self, hex: &str) -> PathBuf {
        self.dir.join("code").join(hex)
    }

    /// Inserts a new function; fails with `Exists` if the name is taken.
    pub fn create(&self, f: &StoredFunction) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let taken: Option<String> = tx
            .query_row(
                "SELECT name FROM functions WHERE name = ?1",
                [&f.name],
                |r| r.get(0),
            )
            .optional()?;
        if taken.is_some() {
            return Err(RegistryError::Exists(f.name.clone()));
        }
        tx.execute(
            "INSERT INTO functions (name, config, code_hex, created_at) VALUES (?1, ?2, ?3, strftime('%s','now'))",
            params![f.name, serde_json::to_string(&f.config)?, f.code_hex],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<StoredFunction>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Result<Option<Arc<StoredFunction>>> {
        if let Some(f) = self.cache().get(name) {
            return Ok(Some(f.clone()));
        }
        let db = self.db();
        let row: Option<(String, String)> = db
            .query_row(
                "SELECT config, code_hex FROM functions WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((config, code_hex)) => {
                let f = Arc::new(StoredFunction {
                    name: name.to_string(),
                    config: serde_json::from_str(&config)?,
                    code_hex,
                });
                self.cache().insert(name.to_string(), f.clone());
                Ok(Some(f))
            }
        }
    }

    /// Functions ordered by name, starting after `marker`, at most `limit`.
    pub fn list(&self, marker: Option<&str>, limit: usize) -> Result<Vec<StoredFunction>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT name, config, code_hex FROM functions WHERE name > ?1 ORDER BY name LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![marker.unwrap_or(""), limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, config, code_hex) = row?;
            out.push(StoredFunction {
                name,
                config: serde_json::from_str(&config)?,
                code_hex,
            });
        }
        Ok(out)
    }

    /// Deletes a function; false if it did not exist.
    pub fn delete(&self, name: &str) -> Result<bool> {
        // The cache changes under the database lock, in step with the row (get() fills it
        // under the same lock).
        let db = self.db();
        let gone = db.execute("DELETE FROM functions WHERE name = ?1", [name])? > 0;
        self.cache().remove(name);
        Ok(gone)
    }

    pub fn count(&self) -> Result<u64> {
        let db = self.db();
        Ok(db.query_row("SELECT count(*) FROM functions", [], |r| r.get::<_, i64>(0))? as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_with(name: &str, body: &[u8]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file(
            name,
            zip::write::SimpleFileOptions::default().unix_permissions(0o755),
        )
        .unwrap();
        w.write_all(body).unwrap();
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn create_get_list_delete() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::open(d.path()).unwrap();
        let (hex, tree) = r
            .store_code(&zip_with("bootstrap", b"#!/bin/sh\n"))
            .unwrap();
        assert!(tree.join("bootstrap").is_file());
        assert!(d.path().join("blobs/sha256").join(&hex).is_file());
        for n in ["b", "a", "c"] {
            let f = StoredFunction {
                name: n.into(),
                config: serde_json::json!({"FunctionName": n}),
                code_hex: hex.clone(),
            };
            r.create(&f).unwrap();
        }
        let dup = StoredFunction {
            name: "a".into(),
            config: serde_json::json!({}),
            code_hex: hex.clone(),
        };
        assert!(matches!(r.create(&dup), Err(RegistryError::Exists(_))));
        let page: Vec<String> = r
            .list(None, 2)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(page, ["a", "b"]);
        let page: Vec<String> = r
            .list(Some("b"), 2)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(page, ["c"]);
        assert_eq!(r.get("b").unwrap().unwrap().config["FunctionName"], "b");
        assert!(r.delete("b").unwrap());
        assert!(!r.delete("b").unwrap());
        assert!(r.get("b").unwrap().is_none());
        drop(r);
        // Durable across reopen.
        let r = Registry::open(d.path()).unwrap();
        assert_eq!(r.count().unwrap(), 2);
    }
}
