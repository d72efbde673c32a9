//! The registry: functions and their code, in SQLite (WAL) plus a content-addressed blob store.
//!
//! State directory layout:
//! - `lamina.db`: SQLite; every mutating operation is one transaction.
//! - `blobs/sha256/<hex>`: uploaded ZIPs, written to a temp file and renamed into place.
//! - `code/<hex>/`: each ZIP unpacked once, read-only, the lowerdir envs mount at /var/task.
//! - `key`: the AES-256-GCM key sealing environment variables (see `secrets`), mode 0600.
//!
//! Tables: `functions` (`$LATEST`, tags, reserved concurrency, the next version number),
//! `versions` (published, immutable), `aliases`, `provisioned`. Environment variables are stored
//! only sealed (`env` columns), never in the configuration text.

pub mod unzip;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{Map, Value};

use crate::secrets::{Sealer, SecretError};

/// A registry failure. Storage failures are the service's fault; the others answer a request
/// whose premise no longer holds at the moment its transaction runs.
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
    #[error("stored secret: {0}")]
    Secret(#[from] SecretError),
    #[error("function already exists: {0}")]
    Exists(String),
    /// The function, version or alias is missing (the message is Lambda's).
    #[error("{0}")]
    NotFound(String),
    /// A RevisionId or CodeSha256 precondition failed (412).
    #[error("{0}")]
    Precondition(String),
    /// The change conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The change is invalid against the current state (400).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// One version of a function as stored: `$LATEST` or a published, immutable version.
#[derive(Debug, Clone)]
pub struct StoredFunction {
    pub name: String,
    /// `$LATEST` or the version number.
    pub version: String,
    /// The FunctionConfiguration document (as returned by GetFunctionConfiguration), with the
    /// environment variables in clear (they are sealed only in the database).
    pub config: Value,
    /// Hex SHA-256 of the ZIP (names the blob and the unpacked tree).
    pub code_hex: String,
}

impl StoredFunction {
    pub fn revision(&self) -> &str {
        self.config["RevisionId"].as_str().unwrap_or("")
    }
}

/// Per-function settings outside any version.
#[derive(Debug, Clone, Default)]
pub struct FunctionMeta {
    pub tags: Map<String, Value>,
    pub reserved: Option<u64>,
}

/// A provisioned concurrency setting of a version or alias.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub name: String,
    pub qualifier: String,
    pub requested: u64,
    pub last_modified: String,
}

pub struct Registry {
    dir: PathBuf,
    db: Mutex<Connection>,
    sealer: Sealer,
    /// Versions read since start, keyed `name\0version`; every change goes through this
    /// registry, which keeps the cache in step (an invoke then needs no SQL and no JSON parsing).
    cache: Mutex<HashMap<String, Arc<StoredFunction>>>,
    /// Aliases read since start, keyed `name\0alias`.
    alias_cache: Mutex<HashMap<String, Arc<Value>>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY NOT NULL,
    config TEXT NOT NULL,
    code_hex TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    config TEXT NOT NULL,
    code_hex TEXT NOT NULL,
    env BLOB,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    alias TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (name, alias)
);
CREATE TABLE IF NOT EXISTS policies (
    name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    qualifier TEXT NOT NULL,
    statements TEXT NOT NULL,
    revision TEXT NOT NULL,
    PRIMARY KEY (name, qualifier)
);
CREATE TABLE IF NOT EXISTS provisioned (
    name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    qualifier TEXT NOT NULL,
    requested INTEGER NOT NULL,
    last_modified TEXT NOT NULL,
    PRIMARY KEY (name, qualifier)
);
";

/// Columns added to `functions` after its first release (added in place on open).
const FUNCTION_COLUMNS: &[(&str, &str)] = &[
    ("env", "BLOB"),
    ("next_version", "INTEGER NOT NULL DEFAULT 1"),
    ("published_rev", "TEXT"),
    ("tags", "TEXT NOT NULL DEFAULT '{}'"),
    ("reserved", "INTEGER"),
    ("settings", "TEXT NOT NULL DEFAULT '{}'"),
];

fn owner(name: &str, version: &str) -> String {
    format!("{name}\u{0}{version}")
}

/// Splits the environment variables off a configuration (they are stored sealed).
fn take_env(config: &mut Value) -> Option<Vec<u8>> {
    let vars = config
        .get_mut("Environment")
        .and_then(|e| e.get_mut("Variables"))
        .map(Value::take);
    if let Some(o) = config.as_object_mut() {
        o.remove("Environment");
    }
    match vars {
        Some(Value::Object(m)) if !m.is_empty() => Some(Value::Object(m).to_string().into_bytes()),
        _ => None,
    }
}

fn function_exists(tx: &Connection, name: &str) -> Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM functions WHERE name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Orders `$LATEST` before numbered versions, numbers numerically.
fn version_order(v: &str) -> i64 {
    v.parse::<i64>().unwrap_or(0)
}

impl Registry {
    /// Opens (creating if needed) the registry in `dir`; `sealer` encrypts environment variables.
    pub fn open(dir: &Path, sealer: Sealer) -> Result<Registry> {
        for sub in ["blobs/sha256", "code"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| RegistryError::Io(p.clone(), e))?;
        }
        let _ = unzip::remove_stale_temp_dirs(&dir.join("code"));
        let mut db = Connection::open(dir.join("lamina.db"))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        // Freed content is zeroed, so nothing replaced lingers in free space.
        db.pragma_update(None, "secure_delete", "ON")?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        let have: Vec<String> = tx
            .prepare("SELECT name FROM pragma_table_info('functions')")?
            .query_map([], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        for (col, ty) in FUNCTION_COLUMNS {
            if !have.iter().any(|c| c == col) {
                tx.execute_batch(&format!("ALTER TABLE functions ADD COLUMN {col} {ty}"))?;
            }
        }
        // Rows written before variables were sealed: seal them now.
        let clear: Vec<(String, String)> = tx
            .prepare("SELECT name, config FROM functions WHERE env IS NULL")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        let mut sealed_any = false;
        for (name, config) in clear {
            let mut c: Value = serde_json::from_str(&config)?;
            if c.get("Environment").is_none() {
                continue;
            }
            sealed_any = true;
            let env = take_env(&mut c).map(|e| sealer.seal(&e, &owner(&name, "$LATEST")));
            tx.execute(
                "UPDATE functions SET config = ?2, env = ?3 WHERE name = ?1",
                params![name, c.to_string(), env],
            )?;
        }
        tx.commit()?;
        if sealed_any {
            // The clear rows' old page images must leave the WAL and the database file.
            db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        Ok(Registry {
            dir: dir.to_path_buf(),
            db: Mutex::new(db),
            sealer,
            cache: Mutex::new(HashMap::new()),
            alias_cache: Mutex::new(HashMap::new()),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<StoredFunction>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn alias_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Value>>> {
        self.alias_cache.lock().unwrap_or_else(|e| e.into_inner())
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
                .join(format!(".tmp-{hex}-{}", crate::util::random_hex(8)));
            let write = || -> std::io::Result<()> {
                let mut f = fs::File::create(&tmp)?;
                f.write_all(zip)?;
                f.sync_all()?;
                fs::rename(&tmp, &blob)
            };
            if let Err(e) = write() {
                let _ = fs::remove_file(&tmp);
                return Err(RegistryError::Io(blob.clone(), e));
            }
        }
        Ok((hex, tree))
    }

    /// The unpacked tree of a stored ZIP.
    pub fn code_dir(&self, hex: &str) -> PathBuf {
        self.dir.join("code").join(hex)
    }

    /// The stored ZIP.
    pub fn code_blob(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex)
    }

    fn row_to_function(
        &self,
        name: &str,
        version: &str,
        config: &str,
        code_hex: String,
        env: Option<Vec<u8>>,
    ) -> Result<StoredFunction> {
        let mut config: Value = serde_json::from_str(config)?;
        let vars = match env {
            Some(sealed) => {
                serde_json::from_slice::<Value>(&self.sealer.open(&sealed, &owner(name, version))?)?
            }
            None => Value::Object(Map::new()),
        };
        if let Some(o) = config.as_object_mut() {
            o.insert(
                "Environment".into(),
                serde_json::json!({ "Variables": vars }),
            );
        }
        Ok(StoredFunction {
            name: name.to_string(),
            version: version.to_string(),
            config,
            code_hex,
        })
    }

    /// The stored text and sealed variables of a configuration.
    fn seal_config(&self, f: &StoredFunction) -> (String, Option<Vec<u8>>) {
        let mut c = f.config.clone();
        let env = take_env(&mut c).map(|e| self.sealer.seal(&e, &owner(&f.name, &f.version)));
        (c.to_string(), env)
    }

    fn load_latest(&self, tx: &Connection, name: &str) -> Result<Option<StoredFunction>> {
        let row: Option<(String, String, Option<Vec<u8>>)> = tx
            .query_row(
                "SELECT config, code_hex, env FROM functions WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(c, h, e)| self.row_to_function(name, "$LATEST", &c, h, e))
            .transpose()
    }

    fn load_version(
        &self,
        tx: &Connection,
        name: &str,
        version: &str,
    ) -> Result<Option<StoredFunction>> {
        if version == "$LATEST" {
            return self.load_latest(tx, name);
        }
        let Ok(n) = version.parse::<i64>() else {
            return Ok(None);
        };
        let row: Option<(String, String, Option<Vec<u8>>)> = tx
            .query_row(
                "SELECT config, code_hex, env FROM versions WHERE name = ?1 AND version = ?2",
                params![name, n],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(c, h, e)| self.row_to_function(name, version, &c, h, e))
            .transpose()
    }

    /// Inserts a new function (and, with `publish`, its version 1) in one transaction; fails
    /// with `Exists` if the name is taken.
    pub fn create(
        &self,
        f: &StoredFunction,
        tags: &Map<String, Value>,
        publish: bool,
    ) -> Result<Option<Arc<StoredFunction>>> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if function_exists(&tx, &f.name)? {
            return Err(RegistryError::Exists(f.name.clone()));
        }
        let (config, env) = self.seal_config(f);
        tx.execute(
            "INSERT INTO functions (name, config, code_hex, created_at, env, tags) VALUES (?1, ?2, ?3, strftime('%s','now'), ?4, ?5)",
            params![f.name, config, f.code_hex, env, Value::Object(tags.clone()).to_string()],
        )?;
        let published = if publish {
            Some(self.publish_in(&tx, f, None)?)
        } else {
            None
        };
        tx.commit()?;
        let mut cache = self.cache();
        cache.insert(owner(&f.name, "$LATEST"), Arc::new(f.clone()));
        Ok(published.map(|p| {
            let p = Arc::new(p);
            cache.insert(owner(&p.name, &p.version), p.clone());
            p
        }))
    }

    /// `$LATEST` of a function.
    pub fn get(&self, name: &str) -> Result<Option<Arc<StoredFunction>>> {
        self.get_version(name, "$LATEST")
    }

    /// A version (`$LATEST` or a number) of a function.
    pub fn get_version(&self, name: &str, version: &str) -> Result<Option<Arc<StoredFunction>>> {
        let key = owner(name, version);
        if let Some(f) = self.cache().get(&key) {
            return Ok(Some(f.clone()));
        }
        let db = self.db();
        match self.load_version(&db, name, version)? {
            None => Ok(None),
            Some(f) => {
                let f = Arc::new(f);
                self.cache().insert(key, f.clone());
                Ok(Some(f))
            }
        }
    }

    /// Changes `$LATEST` in one transaction: `change` sees the current state and may refuse
    /// (a failed precondition, say); the registry then gives it a new RevisionId and
    /// LastModified. With `publish`, the same transaction publishes it as a new version.
    /// Returns the new `$LATEST` and the version published.
    pub fn update_latest(
        &self,
        name: &str,
        publish: bool,
        change: impl FnOnce(&mut StoredFunction) -> Result<()>,
    ) -> Result<(Arc<StoredFunction>, Option<Arc<StoredFunction>>)> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut f = self
            .load_latest(&tx, name)?
            .ok_or_else(|| RegistryError::NotFound(name.to_string()))?;
        change(&mut f)?;
        f.config["RevisionId"] = Value::String(crate::util::uuid4());
        f.config["LastModified"] = Value::String(crate::util::utc_timestamp("+0000"));
        let (config, env) = self.seal_config(&f);
        tx.execute(
            "UPDATE functions SET config = ?2, code_hex = ?3, env = ?4 WHERE name = ?1",
            params![name, config, f.code_hex, env],
        )?;
        let published = if publish {
            Some(self.publish_in(&tx, &f, None)?)
        } else {
            None
        };
        tx.commit()?;
        let f = Arc::new(f);
        let mut cache = self.cache();
        cache.insert(owner(name, "$LATEST"), f.clone());
        let published = published.map(|p| {
            let p = Arc::new(p);
            cache.insert(owner(name, &p.version), p.clone());
            p
        });
        Ok((f, published))
    }

    /// Publishes `latest` as a new version within `tx`, or returns the last published version
    /// if `$LATEST` has not changed since it was published.
    fn publish_in(
        &self,
        tx: &Connection,
        latest: &StoredFunction,
        description: Option<&str>,
    ) -> Result<StoredFunction> {
        let (next, published_rev): (i64, Option<String>) = tx.query_row(
            "SELECT next_version, published_rev FROM functions WHERE name = ?1",
            [&latest.name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if published_rev.as_deref() == Some(latest.revision()) {
            if let Some(v) = self.load_version(tx, &latest.name, &(next - 1).to_string())? {
                return Ok(v);
            }
        }
        let version = next.to_string();
        let mut v = StoredFunction {
            name: latest.name.clone(),
            version: version.clone(),
            config: latest.config.clone(),
            code_hex: latest.code_hex.clone(),
        };
        let arn = latest.config["FunctionArn"]
            .as_str()
            .unwrap_or("")
            .to_string();
        v.config["Version"] = Value::String(version.clone());
        v.config["FunctionArn"] = Value::String(format!("{arn}:{version}"));
        v.config["RevisionId"] = Value::String(crate::util::uuid4());
        v.config["LastModified"] = Value::String(crate::util::utc_timestamp("+0000"));
        if let Some(d) = description {
            v.config["Description"] = Value::String(d.to_string());
        }
        let (config, env) = self.seal_config(&v);
        tx.execute(
            "INSERT INTO versions (name, version, config, code_hex, env) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![v.name, next, config, v.code_hex, env],
        )?;
        tx.execute(
            "UPDATE functions SET next_version = ?2, published_rev = ?3 WHERE name = ?1",
            params![v.name, next + 1, latest.revision()],
        )?;
        Ok(v)
    }

    /// PublishVersion: `check` sees `$LATEST` first (CodeSha256 and RevisionId preconditions).
    pub fn publish(
        &self,
        name: &str,
        description: Option<&str>,
        check: impl FnOnce(&StoredFunction) -> Result<()>,
    ) -> Result<Arc<StoredFunction>> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let latest = self
            .load_latest(&tx, name)?
            .ok_or_else(|| RegistryError::NotFound(name.to_string()))?;
        check(&latest)?;
        let v = self.publish_in(&tx, &latest, description)?;
        tx.commit()?;
        let v = Arc::new(v);
        self.cache().insert(owner(name, &v.version), v.clone());
        Ok(v)
    }

    /// `$LATEST` of functions ordered by name, starting after `marker`, at most `limit`.
    pub fn list(&self, marker: Option<&str>, limit: usize) -> Result<Vec<StoredFunction>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT name, config, code_hex, env FROM functions WHERE name > ?1 ORDER BY name LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![marker.unwrap_or(""), limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, config, code_hex, env) = row?;
            out.push(self.row_to_function(&name, "$LATEST", &config, code_hex, env)?);
        }
        Ok(out)
    }

    /// Every version of a function, `$LATEST` first, after `marker` (a version), at most `limit`.
    pub fn list_versions(
        &self,
        name: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredFunction>> {
        let db = self.db();
        let after = marker.map(version_order).unwrap_or(-1);
        let mut out = Vec::new();
        if after < 0 {
            if let Some(l) = self.load_latest(&db, name)? {
                out.push(l);
            }
        }
        let mut stmt = db.prepare(
            "SELECT version, config, code_hex, env FROM versions WHERE name = ?1 AND version > ?2 ORDER BY version LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![name, after.max(0), limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
            ))
        })?;
        for row in rows {
            let (v, config, code_hex, env) = row?;
            out.push(self.row_to_function(name, &v.to_string(), &config, code_hex, env)?);
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Deletes a function with its versions, aliases and settings; false if it did not exist.
    pub fn delete(&self, name: &str) -> Result<bool> {
        // The caches change under the database lock, in step with the rows (lookups fill them
        // under the same lock).
        let db = self.db();
        let gone = db.execute("DELETE FROM functions WHERE name = ?1", [name])? > 0;
        let prefix = owner(name, "");
        self.cache().retain(|k, _| !k.starts_with(&prefix));
        self.alias_cache().retain(|k, _| !k.starts_with(&prefix));
        Ok(gone)
    }

    /// Deletes a published version; refused while an alias points at it.
    pub fn delete_version(&self, name: &str, version: &str) -> Result<bool> {
        let Ok(n) = version.parse::<i64>() else {
            return Ok(false);
        };
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut users = Vec::new();
        {
            let mut stmt =
                tx.prepare("SELECT alias, config FROM aliases WHERE name = ?1 ORDER BY alias")?;
            let rows = stmt.query_map([name], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (alias, config) = row?;
                let c: Value = serde_json::from_str(&config)?;
                let routed = c["RoutingConfig"]["AdditionalVersionWeights"]
                    .as_object()
                    .is_some_and(|w| w.contains_key(version));
                if c["FunctionVersion"].as_str() == Some(version) || routed {
                    users.push(alias);
                }
            }
        }
        if !users.is_empty() {
            return Err(RegistryError::Conflict(format!(
                "Unable to delete version because the following aliases reference it: [{}]",
                users.join(", ")
            )));
        }
        let gone = tx.execute(
            "DELETE FROM versions WHERE name = ?1 AND version = ?2",
            params![name, n],
        )? > 0;
        for table in ["provisioned", "policies"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE name = ?1 AND qualifier = ?2"),
                params![name, version],
            )?;
        }
        tx.commit()?;
        self.cache().remove(&owner(name, version));
        Ok(gone)
    }

    pub fn count(&self) -> Result<u64> {
        let db = self.db();
        Ok(db.query_row("SELECT count(*) FROM functions", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Bytes of deployment packages stored across all functions and versions.
    pub fn total_code_size(&self) -> Result<u64> {
        let db = self.db();
        let n: i64 = db.query_row(
            "SELECT coalesce((SELECT sum(json_extract(config, '$.CodeSize')) FROM functions), 0)
                  + coalesce((SELECT sum(json_extract(config, '$.CodeSize')) FROM versions), 0)",
            [],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    // ---- aliases ----

    /// Creates an alias; `versions` must exist (checked in the same transaction).
    pub fn create_alias(
        &self,
        name: &str,
        alias: &str,
        config: &Value,
        versions: &[&str],
    ) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if self.load_latest(&tx, name)?.is_none() {
            return Err(RegistryError::NotFound(name.to_string()));
        }
        self.check_versions(&tx, name, versions)?;
        let taken: Option<String> = tx
            .query_row(
                "SELECT alias FROM aliases WHERE name = ?1 AND alias = ?2",
                params![name, alias],
                |r| r.get(0),
            )
            .optional()?;
        if taken.is_some() {
            return Err(RegistryError::Exists(alias.to_string()));
        }
        tx.execute(
            "INSERT INTO aliases (name, alias, config) VALUES (?1, ?2, ?3)",
            params![name, alias, config.to_string()],
        )?;
        tx.commit()?;
        self.alias_cache()
            .insert(owner(name, alias), Arc::new(config.clone()));
        Ok(())
    }

    fn check_versions(&self, tx: &Connection, name: &str, versions: &[&str]) -> Result<()> {
        for v in versions {
            if self.load_version(tx, name, v)?.is_none() {
                return Err(RegistryError::NotFound(format!("{name}:{v}")));
            }
        }
        Ok(())
    }

    pub fn get_alias(&self, name: &str, alias: &str) -> Result<Option<Arc<Value>>> {
        let key = owner(name, alias);
        if let Some(a) = self.alias_cache().get(&key) {
            return Ok(Some(a.clone()));
        }
        let db = self.db();
        let row: Option<String> = db
            .query_row(
                "SELECT config FROM aliases WHERE name = ?1 AND alias = ?2",
                params![name, alias],
                |r| r.get(0),
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some(c) => {
                let a = Arc::new(serde_json::from_str::<Value>(&c)?);
                self.alias_cache().insert(key, a.clone());
                Ok(Some(a))
            }
        }
    }

    /// Changes an alias in one transaction; `change` returns the versions it now needs.
    pub fn update_alias(
        &self,
        name: &str,
        alias: &str,
        change: impl FnOnce(&mut Value) -> Result<Vec<String>>,
    ) -> Result<Arc<Value>> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<String> = tx
            .query_row(
                "SELECT config FROM aliases WHERE name = ?1 AND alias = ?2",
                params![name, alias],
                |r| r.get(0),
            )
            .optional()?;
        let mut c: Value = match row {
            Some(c) => serde_json::from_str(&c)?,
            None => return Err(RegistryError::NotFound(alias.to_string())),
        };
        let needs = change(&mut c)?;
        let needs: Vec<&str> = needs.iter().map(String::as_str).collect();
        self.check_versions(&tx, name, &needs)?;
        c["RevisionId"] = Value::String(crate::util::uuid4());
        tx.execute(
            "UPDATE aliases SET config = ?3 WHERE name = ?1 AND alias = ?2",
            params![name, alias, c.to_string()],
        )?;
        tx.commit()?;
        let c = Arc::new(c);
        self.alias_cache().insert(owner(name, alias), c.clone());
        Ok(c)
    }

    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<bool> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let gone = tx.execute(
            "DELETE FROM aliases WHERE name = ?1 AND alias = ?2",
            params![name, alias],
        )? > 0;
        for table in ["provisioned", "policies"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE name = ?1 AND qualifier = ?2"),
                params![name, alias],
            )?;
        }
        tx.commit()?;
        self.alias_cache().remove(&owner(name, alias));
        Ok(gone)
    }

    /// Aliases by name after `marker`, at most `limit`; with `version`, those routing to it.
    pub fn list_aliases(
        &self,
        name: &str,
        version: Option<&str>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Value>> {
        let db = self.db();
        let mut stmt =
            db.prepare("SELECT config FROM aliases WHERE name = ?1 AND alias > ?2 ORDER BY alias")?;
        let rows = stmt.query_map(params![name, marker.unwrap_or("")], |r| {
            r.get::<_, String>(0)
        })?;
        let mut out = Vec::new();
        for row in rows {
            let c: Value = serde_json::from_str(&row?)?;
            let matches = match version {
                None => true,
                Some(v) => {
                    c["FunctionVersion"].as_str() == Some(v)
                        || c["RoutingConfig"]["AdditionalVersionWeights"]
                            .as_object()
                            .is_some_and(|w| w.contains_key(v))
                }
            };
            if matches {
                out.push(c);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    // ---- resource-based policies ----

    /// The statements and revision of a version's or alias's policy (`$LATEST` when
    /// unqualified); None when it has none.
    pub fn policy(&self, name: &str, qualifier: &str) -> Result<Option<(Vec<Value>, String)>> {
        let db = self.db();
        let row: Option<(String, String)> = db
            .query_row(
                "SELECT statements, revision FROM policies WHERE name = ?1 AND qualifier = ?2",
                params![name, qualifier],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(s, r)| Ok((serde_json::from_str(&s)?, r)))
            .transpose()
    }

    /// Changes a policy in one transaction: `change` sees its statements and revision (empty
    /// and "" when there is none yet). A policy left without statements is removed.
    pub fn update_policy(
        &self,
        name: &str,
        qualifier: &str,
        change: impl FnOnce(&mut Vec<Value>, &str) -> Result<()>,
    ) -> Result<String> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !function_exists(&tx, name)? {
            return Err(RegistryError::NotFound(name.to_string()));
        }
        let row: Option<(String, String)> = tx
            .query_row(
                "SELECT statements, revision FROM policies WHERE name = ?1 AND qualifier = ?2",
                params![name, qualifier],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (mut statements, revision) = match row {
            Some((s, r)) => (serde_json::from_str::<Vec<Value>>(&s)?, r),
            None => (Vec::new(), String::new()),
        };
        change(&mut statements, &revision)?;
        let new_revision = crate::util::uuid4();
        if statements.is_empty() {
            tx.execute(
                "DELETE FROM policies WHERE name = ?1 AND qualifier = ?2",
                params![name, qualifier],
            )?;
        } else {
            tx.execute(
                "INSERT INTO policies (name, qualifier, statements, revision) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name, qualifier) DO UPDATE SET statements = excluded.statements, revision = excluded.revision",
                params![name, qualifier, Value::Array(statements).to_string(), new_revision],
            )?;
        }
        tx.commit()?;
        Ok(new_revision)
    }

    // ---- tags and concurrency ----

    pub fn meta(&self, name: &str) -> Result<Option<FunctionMeta>> {
        let db = self.db();
        let row: Option<(String, Option<i64>)> = db
            .query_row(
                "SELECT tags, reserved FROM functions WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((tags, reserved)) => Ok(Some(FunctionMeta {
                tags: serde_json::from_str(&tags)?,
                reserved: reserved.map(|n| n.max(0) as u64),
            })),
        }
    }

    /// Changes a function's tags in one transaction.
    pub fn update_tags(
        &self,
        name: &str,
        change: impl FnOnce(&mut Map<String, Value>) -> Result<()>,
    ) -> Result<()> {
        self.update_object_column(name, "tags", change)
    }

    /// Per-function settings outside versions (recursion, runtime management), a JSON object.
    pub fn settings(&self, name: &str) -> Result<Option<Map<String, Value>>> {
        let db = self.db();
        let row: Option<String> = db
            .query_row(
                "SELECT settings FROM functions WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        row.map(|s| Ok(serde_json::from_str(&s)?)).transpose()
    }

    pub fn update_settings(
        &self,
        name: &str,
        change: impl FnOnce(&mut Map<String, Value>) -> Result<()>,
    ) -> Result<()> {
        self.update_object_column(name, "settings", change)
    }

    /// Changes a JSON object column of a function in one transaction.
    fn update_object_column(
        &self,
        name: &str,
        column: &'static str,
        change: impl FnOnce(&mut Map<String, Value>) -> Result<()>,
    ) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value: Option<String> = tx
            .query_row(
                &format!("SELECT {column} FROM functions WHERE name = ?1"),
                [name],
                |r| r.get(0),
            )
            .optional()?;
        let mut value: Map<String, Value> = match value {
            Some(t) => serde_json::from_str(&t)?,
            None => return Err(RegistryError::NotFound(name.to_string())),
        };
        change(&mut value)?;
        tx.execute(
            &format!("UPDATE functions SET {column} = ?2 WHERE name = ?1"),
            params![name, Value::Object(value).to_string()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Sets (or with None clears) a function's reserved concurrency; `check` sees the total
    /// reserved by the other functions, in the same transaction.
    pub fn set_reserved(
        &self,
        name: &str,
        reserved: Option<u64>,
        check: impl FnOnce(u64) -> Result<()>,
    ) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !function_exists(&tx, name)? {
            return Err(RegistryError::NotFound(name.to_string()));
        }
        let others: i64 = tx.query_row(
            "SELECT coalesce(sum(reserved), 0) FROM functions WHERE name != ?1",
            [name],
            |r| r.get(0),
        )?;
        if reserved.is_some() {
            check(others.max(0) as u64)?;
        }
        tx.execute(
            "UPDATE functions SET reserved = ?2 WHERE name = ?1",
            params![name, reserved.map(|n| n as i64)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Reserved concurrency of every function that has one.
    pub fn all_reserved(&self) -> Result<HashMap<String, u64>> {
        let db = self.db();
        let mut stmt =
            db.prepare("SELECT name, reserved FROM functions WHERE reserved IS NOT NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = HashMap::new();
        for row in rows {
            let (n, r) = row?;
            out.insert(n, r.max(0) as u64);
        }
        Ok(out)
    }

    /// Stores a provisioned concurrency setting; `check` sees the function's reserved
    /// concurrency and the total provisioned on its other qualifiers.
    pub fn put_provisioned(
        &self,
        name: &str,
        qualifier: &str,
        requested: u64,
        check: impl FnOnce(Option<u64>, u64) -> Result<()>,
    ) -> Result<Provisioned> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let reserved: Option<Option<i64>> = tx
            .query_row(
                "SELECT reserved FROM functions WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        let Some(reserved) = reserved else {
            return Err(RegistryError::NotFound(name.to_string()));
        };
        let others: i64 = tx.query_row(
            "SELECT coalesce(sum(requested), 0) FROM provisioned WHERE name = ?1 AND qualifier != ?2",
            params![name, qualifier],
            |r| r.get(0),
        )?;
        check(reserved.map(|n| n.max(0) as u64), others.max(0) as u64)?;
        let p = Provisioned {
            name: name.to_string(),
            qualifier: qualifier.to_string(),
            requested,
            last_modified: crate::util::utc_timestamp("+0000"),
        };
        tx.execute(
            "INSERT INTO provisioned (name, qualifier, requested, last_modified) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name, qualifier) DO UPDATE SET requested = excluded.requested, last_modified = excluded.last_modified",
            params![p.name, p.qualifier, p.requested as i64, p.last_modified],
        )?;
        tx.commit()?;
        Ok(p)
    }

    pub fn delete_provisioned(&self, name: &str, qualifier: &str) -> Result<bool> {
        let db = self.db();
        Ok(db.execute(
            "DELETE FROM provisioned WHERE name = ?1 AND qualifier = ?2",
            params![name, qualifier],
        )? > 0)
    }

    /// Provisioned settings, of one function or (None) of all.
    pub fn list_provisioned(&self, name: Option<&str>) -> Result<Vec<Provisioned>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT name, qualifier, requested, last_modified FROM provisioned
             WHERE ?1 IS NULL OR name = ?1 ORDER BY name, qualifier",
        )?;
        let rows = stmt.query_map([name], |r| {
            Ok(Provisioned {
                name: r.get(0)?,
                qualifier: r.get(1)?,
                requested: r.get::<_, i64>(2)?.max(0) as u64,
                last_modified: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
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

    /// No file directly in `dir` (database, WAL, key...) contains `needle`.
    fn assert_not_in_files(dir: &Path, needle: &[u8]) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_file() {
                let bytes = fs::read(e.path()).unwrap();
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "clear value in {:?}",
                    e.path()
                );
            }
        }
    }

    fn open(d: &Path) -> Registry {
        Registry::open(d, Sealer::load(&d.join("key"), true).unwrap()).unwrap()
    }

    fn function(name: &str, hex: &str) -> StoredFunction {
        StoredFunction {
            name: name.into(),
            version: "$LATEST".into(),
            config: serde_json::json!({
                "FunctionName": name,
                "FunctionArn": format!("arn:aws:lambda:r:1:function:{name}"),
                "RevisionId": crate::util::uuid4(),
                "Environment": {"Variables": {"SECRET": "s3kr1t-value"}},
            }),
            code_hex: hex.into(),
        }
    }

    #[test]
    fn create_get_list_delete() {
        let d = tempfile::tempdir().unwrap();
        let r = open(d.path());
        let (hex, tree) = r
            .store_code(&zip_with("bootstrap", b"#!/bin/sh\n"))
            .unwrap();
        assert!(tree.join("bootstrap").is_file());
        assert!(d.path().join("blobs/sha256").join(&hex).is_file());
        for n in ["b", "a", "c"] {
            r.create(&function(n, &hex), &Map::new(), false).unwrap();
        }
        assert!(matches!(
            r.create(&function("a", &hex), &Map::new(), false),
            Err(RegistryError::Exists(_))
        ));
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
        // Durable across reopen, variables intact, and never in clear on disk.
        let r = open(d.path());
        assert_eq!(r.count().unwrap(), 2);
        assert_eq!(
            r.get("a").unwrap().unwrap().config["Environment"]["Variables"]["SECRET"],
            "s3kr1t-value"
        );
        drop(r);
        assert_not_in_files(d.path(), b"s3kr1t-value");
    }

    #[test]
    fn clear_variables_of_an_older_database_are_sealed_on_open() {
        let d = tempfile::tempdir().unwrap();
        {
            let db = Connection::open(d.path().join("lamina.db")).unwrap();
            db.pragma_update(None, "journal_mode", "WAL").unwrap();
            db.execute_batch(
                "CREATE TABLE functions (name TEXT PRIMARY KEY NOT NULL, config TEXT NOT NULL,
                 code_hex TEXT NOT NULL, created_at INTEGER NOT NULL);",
            )
            .unwrap();
            let config = serde_json::json!({"FunctionName": "old", "RevisionId": "r",
                "Environment": {"Variables": {"K": "legacy-clear-value"}}});
            db.execute(
                "INSERT INTO functions VALUES ('old', ?1, 'abc', 0)",
                [config.to_string()],
            )
            .unwrap();
        }
        let r = open(d.path());
        let f = r.get("old").unwrap().unwrap();
        assert_eq!(
            f.config["Environment"]["Variables"]["K"],
            "legacy-clear-value"
        );
        drop(r);
        assert_not_in_files(d.path(), b"legacy-clear-value");
    }

    #[test]
    fn versions_publish_once_per_change_and_aliases_pin_them() {
        let d = tempfile::tempdir().unwrap();
        let r = open(d.path());
        let (hex, _) = r.store_code(&zip_with("a", b"1")).unwrap();
        let v1 = r
            .create(&function("f", &hex), &Map::new(), true)
            .unwrap()
            .unwrap();
        assert_eq!(v1.version, "1");
        assert_eq!(v1.config["FunctionArn"], "arn:aws:lambda:r:1:function:f:1");
        // Unchanged $LATEST: the same version again.
        assert_eq!(r.publish("f", None, |_| Ok(())).unwrap().version, "1");
        let before = r.get("f").unwrap().unwrap().revision().to_string();
        let l = r
            .update_latest("f", false, |f| {
                f.config["Timeout"] = 9.into();
                Ok(())
            })
            .unwrap();
        assert_ne!(l.0.revision(), before);
        let v2 = r.publish("f", Some("two"), |_| Ok(())).unwrap();
        assert_eq!(
            (v2.version.as_str(), &v2.config["Timeout"]),
            ("2", &9.into())
        );
        assert_eq!(v2.config["Description"], "two");
        // A refused precondition changes nothing.
        let refused = r.publish("f", None, |_| Err(RegistryError::Precondition("no".into())));
        assert!(matches!(refused, Err(RegistryError::Precondition(_))));
        let listed: Vec<String> = r
            .list_versions("f", None, 10)
            .unwrap()
            .into_iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(listed, ["$LATEST", "1", "2"]);
        let listed: Vec<String> = r
            .list_versions("f", Some("1"), 10)
            .unwrap()
            .into_iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(listed, ["2"]);
        let alias = serde_json::json!({"Name": "live", "FunctionVersion": "1",
            "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.5}}});
        r.create_alias("f", "live", &alias, &["1", "2"]).unwrap();
        assert!(matches!(
            r.create_alias("f", "live", &alias, &["1"]),
            Err(RegistryError::Exists(_))
        ));
        assert!(matches!(
            r.create_alias("f", "x", &alias, &["7"]),
            Err(RegistryError::NotFound(_))
        ));
        assert!(matches!(
            r.delete_version("f", "2"),
            Err(RegistryError::Conflict(_))
        ));
        r.update_alias("f", "live", |a| {
            a["RoutingConfig"] = serde_json::json!({});
            Ok(vec!["1".into()])
        })
        .unwrap();
        assert!(r.delete_version("f", "2").unwrap());
        assert!(r.get_version("f", "2").unwrap().is_none());
        // Numbers are never reused.
        r.update_latest("f", false, |f| {
            f.config["Timeout"] = 10.into();
            Ok(())
        })
        .unwrap();
        assert_eq!(r.publish("f", None, |_| Ok(())).unwrap().version, "3");
        assert_eq!(r.list_aliases("f", Some("1"), None, 10).unwrap().len(), 1);
        assert!(r.delete("f").unwrap());
        assert!(r.get_alias("f", "live").unwrap().is_none());
        assert!(r.get_version("f", "1").unwrap().is_none());
    }

    #[test]
    fn tags_reserved_and_provisioned_are_per_function() {
        let d = tempfile::tempdir().unwrap();
        let r = open(d.path());
        let (hex, _) = r.store_code(&zip_with("a", b"1")).unwrap();
        let mut tags = Map::new();
        tags.insert("team".into(), "edge".into());
        r.create(&function("f", &hex), &tags, true).unwrap();
        r.create(&function("g", &hex), &Map::new(), false).unwrap();
        r.update_tags("f", |t| {
            t.insert("x".into(), "y".into());
            Ok(())
        })
        .unwrap();
        assert_eq!(r.meta("f").unwrap().unwrap().tags.len(), 2);
        r.set_reserved("g", Some(5), |_| Ok(())).unwrap();
        r.set_reserved("f", Some(7), |others| {
            assert_eq!(others, 5);
            Ok(())
        })
        .unwrap();
        assert_eq!(r.all_reserved().unwrap().len(), 2);
        r.put_provisioned("f", "1", 3, |reserved, others| {
            assert_eq!((reserved, others), (Some(7), 0));
            Ok(())
        })
        .unwrap();
        assert_eq!(r.list_provisioned(Some("f")).unwrap()[0].requested, 3);
        assert_eq!(r.list_provisioned(None).unwrap().len(), 1);
        assert!(r.delete_provisioned("f", "1").unwrap());
        assert!(!r.delete_provisioned("f", "1").unwrap());
        assert!(matches!(
            r.update_tags("nope", |_| Ok(())),
            Err(RegistryError::NotFound(_))
        ));
    }
}
