//! Lambda layers: versioned ZIPs whose contents appear under `/opt` of the functions that
//! reference them.
//!
//! Stored in the registry's `lamina.db` (own tables, own connection; every mutating operation is
//! one transaction) and its blob store:
//! - `blobs/sha256/<hex>`: the uploaded ZIP;
//! - `layers/<hex>/`: the ZIP unpacked once (read-only), the overlay lowerdir every env of every
//!   function referencing it shares.
//!
//! Version numbers grow per layer name and are never reused, even after every version was
//! deleted. Deleting a version only hides it from the API (and from new functions): functions
//! created with it keep running with its content, as in Lambda, so the row and the tree stay.
//!
//! Writes take the database lock up front (`BEGIN IMMEDIATE`) and the connection waits up to
//! 10 s for the registry's connection, so a write never fails on a lock upgrade.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::registry::unzip;

/// Most layers one function may reference.
pub const MAX_LAYERS_PER_FUNCTION: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("layer store {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("stored layer metadata is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error(transparent)]
    Unzip(#[from] unzip::UnzipError),
    /// A function referenced more than [`MAX_LAYERS_PER_FUNCTION`] layers.
    #[error("Cannot reference more than 5 layers.")]
    TooMany,
    /// Not a layer version ARN.
    #[error("not a layer version ARN: {0}")]
    BadArn(String),
    /// A layer version ARN of another region than this lamina's.
    #[error("Layers are not in the same region as the function. Layers are expected to be in region {0}.")]
    OtherRegion(String),
    /// Two versions of one layer (or one version twice) in one function.
    #[error("Two different versions of the same layer are not allowed to be referenced in the same function. {0} and {1} are versions of the same layer.")]
    SameLayer(String, String),
    /// A layer version that does not exist (or was deleted).
    #[error("Layer version {0} does not exist.")]
    VersionMissing(String),
    /// A policy statement id already in use.
    #[error("The statement id ({0}) provided already exists. Please provide a new statement id, or remove the existing statement.")]
    StatementExists(String),
    /// A policy statement id not in use.
    #[error("Statement {0} is not found in resource policy.")]
    StatementMissing(String),
    /// The caller's RevisionId is not the policy's.
    #[error("The Revision Id provided does not match the latest Revision Id. Call the GetLayerPolicy API to retrieve the latest Revision Id")]
    RevisionMismatch,
}

pub type Result<T> = std::result::Result<T, LayerError>;

/// One layer version as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerVersion {
    pub name: String,
    pub version: i64,
    pub description: String,
    pub license_info: Option<String>,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    /// Hex SHA-256 of the ZIP (names the blob and the unpacked tree).
    pub code_hex: String,
    /// Size of the ZIP in bytes.
    pub code_size: u64,
    /// `YYYY-MM-DDThh:mm:ss.sss+0000`.
    pub created_date: String,
}

/// What PublishLayerVersion stores (inputs already validated by the API).
#[derive(Debug, Clone, Copy)]
pub struct NewLayerVersion<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub license_info: Option<&'a str>,
    pub compatible_runtimes: &'a [String],
    pub compatible_architectures: &'a [String],
    pub zip: &'a [u8],
}

/// A layer version a function references, resolved for CreateFunction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub arn: String,
    pub code_size: u64,
    /// The unpacked tree (a lowerdir of the env's `/opt`).
    pub dir: PathBuf,
}

/// Filters of ListLayers and ListLayerVersions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    pub runtime: Option<&'a str>,
    pub architecture: Option<&'a str>,
}

/// A statement of a layer version's resource policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sid: String,
    /// The statement as JSON text.
    pub json: String,
}

/// The parts of a layer version ARN `arn:<partition>:lambda:<region>:<account>:layer:<name>:<n>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionArn<'a> {
    pub region: &'a str,
    pub account: &'a str,
    pub name: &'a str,
    pub version: i64,
}

/// Layer names: `[a-zA-Z0-9-_]+`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn valid_region(r: &str) -> bool {
    // `[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}`, optionally prefixed with `eusc-`.
    let r = r.strip_prefix("eusc-").unwrap_or(r);
    let parts: Vec<&str> = r.split('-').collect();
    let (head, rest) = match parts.split_first() {
        Some(x) => x,
        None => return false,
    };
    if head.len() != 2 || !head.chars().all(|c| c.is_ascii_lowercase()) {
        return false;
    }
    let rest = match rest {
        [q, rest @ ..] if *q == "gov" || (q.starts_with("iso") && q.len() <= 4) => {
            if !q[3.min(q.len())..].chars().all(|c| c.is_ascii_lowercase()) {
                return false;
            }
            rest
        }
        rest => rest,
    };
    matches!(rest, [word, digit]
        if !word.is_empty()
            && word.chars().all(|c| c.is_ascii_lowercase())
            && digit.len() == 1
            && digit.chars().all(|c| c.is_ascii_digit()))
}

fn valid_account(a: &str) -> bool {
    a.len() == 12 && a.chars().all(|c| c.is_ascii_digit())
}

/// Splits `arn:<partition>:lambda:<region>:<account>:layer:<name>` plus the rest after it.
fn split_layer_arn(s: &str) -> Option<(&str, &str, &str, Option<&str>)> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        ["arn", partition, "lambda", region, account, "layer", name, rest @ ..]
            if partition.starts_with("aws")
                && partition[3..]
                    .chars()
                    .all(|c| c.is_ascii_alphabetic() || c == '-')
                && valid_region(region)
                && valid_account(account)
                && valid_name(name) =>
        {
            match rest {
                [] => Some((region, account, name, None)),
                [v] => Some((region, account, name, Some(v))),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Parses a layer version ARN (LayerVersionArn's pattern; the `awslayer` form is not stored
/// here, so it is refused as well).
pub fn parse_version_arn(s: &str) -> Option<VersionArn<'_>> {
    if s.len() > 2048 {
        return None;
    }
    let (region, account, name, v) = split_layer_arn(s)?;
    let v = v?;
    if v.is_empty() || !v.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(VersionArn {
        region,
        account,
        name,
        version: v.parse().ok()?,
    })
}

/// Parses a LayerName member: a name or a layer ARN (without version). Returns
/// `(region, account, name)`; region and account are `None` for a bare name.
pub fn parse_layer_name(s: &str) -> Option<(Option<&str>, Option<&str>, &str)> {
    if s.is_empty() || s.len() > 140 {
        return None;
    }
    if valid_name(s) {
        return Some((None, None, s));
    }
    match split_layer_arn(s)? {
        (region, account, name, None) => Some((Some(region), Some(account), name)),
        _ => None,
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS layers (
    name TEXT PRIMARY KEY NOT NULL,
    last_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS layer_versions (
    name TEXT NOT NULL REFERENCES layers(name),
    version INTEGER NOT NULL,
    description TEXT NOT NULL,
    license_info TEXT,
    compatible_runtimes TEXT NOT NULL,
    compatible_architectures TEXT NOT NULL,
    code_hex TEXT NOT NULL,
    code_size INTEGER NOT NULL,
    created_date TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    policy_revision TEXT,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS layer_version_statements (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    sid TEXT NOT NULL,
    statement TEXT NOT NULL,
    PRIMARY KEY (name, version, sid),
    FOREIGN KEY (name, version) REFERENCES layer_versions(name, version)
);
";

const COLUMNS: &str = "name, version, description, license_info, compatible_runtimes, \
     compatible_architectures, code_hex, code_size, created_date";

fn row_to_version(r: &rusqlite::Row<'_>) -> rusqlite::Result<(LayerVersion, String, String)> {
    Ok((
        LayerVersion {
            name: r.get(0)?,
            version: r.get(1)?,
            description: r.get(2)?,
            license_info: r.get(3)?,
            compatible_runtimes: Vec::new(),
            compatible_architectures: Vec::new(),
            code_hex: r.get(6)?,
            code_size: r.get::<_, i64>(7)?.max(0) as u64,
            created_date: r.get(8)?,
        },
        r.get(4)?,
        r.get(5)?,
    ))
}

fn finish(row: (LayerVersion, String, String)) -> Result<LayerVersion> {
    let (mut v, rt, arch) = row;
    v.compatible_runtimes = serde_json::from_str(&rt)?;
    v.compatible_architectures = serde_json::from_str(&arch)?;
    Ok(v)
}

/// SQL condition: the version (alias `v`) matches `?rt` / `?arch` when given (NULL = any).
const FILTER_SQL: &str = "(?1 IS NULL OR EXISTS (SELECT 1 FROM json_each(v.compatible_runtimes) \
     WHERE value = ?1)) AND (?2 IS NULL OR EXISTS (SELECT 1 FROM \
     json_each(v.compatible_architectures) WHERE value = ?2))";

/// The layer store.
pub struct Layers {
    dir: PathBuf,
    region: String,
    account: String,
    db: Mutex<Connection>,
}

impl Layers {
    /// Opens (creating if needed) the layer tables in `<dir>/lamina.db` and `<dir>/layers/`.
    pub fn open(dir: &Path, region: &str, account: &str) -> Result<Layers> {
        for sub in ["blobs/sha256", "layers"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| LayerError::Io(p.clone(), e))?;
        }
        let _ = unzip::remove_stale_temp_dirs(&dir.join("layers"));
        let db = Connection::open(dir.join("lamina.db"))?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        db.execute_batch(SCHEMA)?;
        Ok(Layers {
            dir: dir.to_path_buf(),
            region: region.to_string(),
            account: account.to_string(),
            db: Mutex::new(db),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// `arn:aws:lambda:<region>:<account>:layer:<name>`.
    pub fn layer_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:lambda:{}:{}:layer:{name}",
            self.region, self.account
        )
    }

    /// `arn:aws:lambda:<region>:<account>:layer:<name>:<version>`.
    pub fn version_arn(&self, name: &str, version: i64) -> String {
        format!("{}:{version}", self.layer_arn(name))
    }

    /// The unpacked tree of a layer ZIP.
    pub fn content_dir(&self, hex: &str) -> PathBuf {
        self.dir.join("layers").join(hex)
    }

    /// The stored ZIP of a layer.
    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex)
    }

    fn store_blob(&self, hex: &str, zip: &[u8]) -> Result<()> {
        let blob = self.blob_path(hex);
        if blob.exists() {
            return Ok(());
        }
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
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            LayerError::Io(blob.clone(), e)
        })
    }

    /// Stores and unpacks the ZIP, then records the next version of the layer (created on first
    /// use) in one transaction.
    pub fn publish(&self, new: &NewLayerVersion<'_>) -> Result<LayerVersion> {
        let hex = unzip::sha256_hex(new.zip);
        // Content first: a failed unpack leaves no row; a failed commit leaves only a
        // content-addressed tree that the next publish of the same ZIP reuses.
        unzip::unpack_once(new.zip, &self.dir.join("layers"), &unzip::Limits::default())?;
        self.store_blob(&hex, new.zip)?;
        let created_date = crate::util::utc_timestamp("+0000");
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last: Option<i64> = tx
            .query_row(
                "SELECT last_version FROM layers WHERE name = ?1",
                [new.name],
                |r| r.get(0),
            )
            .optional()?;
        let version = last.unwrap_or(0) + 1;
        tx.execute(
            "INSERT INTO layers (name, last_version) VALUES (?1, ?2) \
             ON CONFLICT(name) DO UPDATE SET last_version = excluded.last_version",
            params![new.name, version],
        )?;
        tx.execute(
            &format!("INSERT INTO layer_versions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
            params![
                new.name,
                version,
                new.description,
                new.license_info,
                serde_json::to_string(new.compatible_runtimes)?,
                serde_json::to_string(new.compatible_architectures)?,
                hex,
                new.zip.len() as i64,
                created_date,
            ],
        )?;
        tx.commit()?;
        Ok(LayerVersion {
            name: new.name.to_string(),
            version,
            description: new.description.to_string(),
            license_info: new.license_info.map(str::to_string),
            compatible_runtimes: new.compatible_runtimes.to_vec(),
            compatible_architectures: new.compatible_architectures.to_vec(),
            code_hex: hex,
            code_size: new.zip.len() as u64,
            created_date,
        })
    }

    fn get_any(
        &self,
        db: &Connection,
        name: &str,
        version: i64,
        deleted_too: bool,
    ) -> Result<Option<LayerVersion>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM layer_versions WHERE name = ?1 AND version = ?2{}",
            if deleted_too { "" } else { " AND deleted = 0" }
        );
        let row = db
            .query_row(&sql, params![name, version], row_to_version)
            .optional()?;
        row.map(finish).transpose()
    }

    /// A version that exists and was not deleted.
    pub fn get(&self, name: &str, version: i64) -> Result<Option<LayerVersion>> {
        let db = self.db();
        self.get_any(&db, name, version, false)
    }

    /// Versions of one layer, newest first, older than `before` (the marker), at most `limit`.
    pub fn list_versions(
        &self,
        name: &str,
        filter: Filter<'_>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<LayerVersion>> {
        let db = self.db();
        let sql = format!(
            "SELECT {COLUMNS} FROM layer_versions v WHERE deleted = 0 AND name = ?3 \
             AND version < ?4 AND {FILTER_SQL} ORDER BY version DESC LIMIT ?5"
        );
        let mut stmt = db.prepare(&sql)?;
        let rows = stmt.query_map(
            params![
                filter.runtime,
                filter.architecture,
                name,
                before.unwrap_or(i64::MAX),
                limit as i64
            ],
            row_to_version,
        )?;
        rows.map(|r| finish(r?)).collect()
    }

    /// Per layer name (ordered, after `after`), its newest version matching `filter`; layers
    /// without one are left out. At most `limit`.
    pub fn list_layers(
        &self,
        filter: Filter<'_>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LayerVersion>> {
        let db = self.db();
        let sql = format!(
            "WITH m AS (SELECT * FROM layer_versions v WHERE deleted = 0 AND {FILTER_SQL}) \
             SELECT {COLUMNS} FROM m WHERE name > ?3 \
             AND version = (SELECT max(version) FROM m AS n WHERE n.name = m.name) \
             ORDER BY name LIMIT ?4"
        );
        let mut stmt = db.prepare(&sql)?;
        let rows = stmt.query_map(
            params![
                filter.runtime,
                filter.architecture,
                after.unwrap_or(""),
                limit as i64
            ],
            row_to_version,
        )?;
        rows.map(|r| finish(r?)).collect()
    }

    /// Deletes a version (idempotent, as Lambda's DeleteLayerVersion). Returns whether it
    /// existed. The content stays for functions that reference it; its policy goes.
    pub fn delete(&self, name: &str, version: i64) -> Result<bool> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE layer_versions SET deleted = 1, policy_revision = NULL \
             WHERE name = ?1 AND version = ?2 AND deleted = 0",
            params![name, version],
        )?;
        tx.execute(
            "DELETE FROM layer_version_statements WHERE name = ?1 AND version = ?2",
            params![name, version],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Resolves the `Layers` of a CreateFunction (or UpdateFunctionConfiguration) request, in
    /// order: at most 5, each an existing (not deleted) version of this region, no layer twice.
    pub fn resolve_arns(&self, arns: &[String]) -> Result<Vec<LayerRef>> {
        if arns.len() > MAX_LAYERS_PER_FUNCTION {
            return Err(LayerError::TooMany);
        }
        let mut parsed = Vec::with_capacity(arns.len());
        for a in arns {
            parsed.push(parse_version_arn(a).ok_or_else(|| LayerError::BadArn(a.clone()))?);
        }
        for (i, p) in parsed.iter().enumerate() {
            if p.region != self.region {
                return Err(LayerError::OtherRegion(self.region.clone()));
            }
            if let Some(j) = parsed[..i]
                .iter()
                .position(|q| q.name == p.name && q.account == p.account)
            {
                return Err(LayerError::SameLayer(arns[j].clone(), arns[i].clone()));
            }
        }
        let db = self.db();
        let mut out = Vec::with_capacity(arns.len());
        for (arn, p) in arns.iter().zip(&parsed) {
            // Other accounts' layers do not exist here.
            let found = if p.account == self.account {
                self.get_any(&db, p.name, p.version, false)?
            } else {
                None
            };
            let v = found.ok_or_else(|| LayerError::VersionMissing(arn.clone()))?;
            out.push(LayerRef {
                arn: self.version_arn(&v.name, v.version),
                code_size: v.code_size,
                dir: self.content_dir(&v.code_hex),
            });
        }
        Ok(out)
    }

    /// The unpacked trees of a function's layers, in order, for a cold start: deleted versions
    /// included (the function was created while they existed).
    pub fn content_dirs(&self, arns: &[String]) -> Result<Vec<PathBuf>> {
        let db = self.db();
        let mut out = Vec::with_capacity(arns.len());
        for arn in arns {
            let v = parse_version_arn(arn)
                .filter(|p| p.region == self.region && p.account == self.account)
                .map(|p| self.get_any(&db, p.name, p.version, true))
                .transpose()?
                .flatten()
                .ok_or_else(|| LayerError::VersionMissing(arn.clone()))?;
            let dir = self.content_dir(&v.code_hex);
            if !dir.is_dir() {
                return Err(LayerError::Io(
                    dir,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "layer content missing"),
                ));
            }
            out.push(dir);
        }
        Ok(out)
    }

    /// The layer trees of a stored FunctionConfiguration (its `Layers[].Arn`), in order.
    pub fn function_layer_dirs(&self, config: &serde_json::Value) -> Result<Vec<PathBuf>> {
        let arns: Vec<String> = config["Layers"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|x| x["Arn"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        self.content_dirs(&arns)
    }

    /// Adds a statement to a version's policy; returns the policy's new revision id.
    /// `None` if the version does not exist.
    pub fn add_statement(
        &self,
        name: &str,
        version: i64,
        sid: &str,
        statement_json: &str,
        revision: Option<&str>,
    ) -> Result<Option<String>> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<Option<String>> = tx
            .query_row(
                "SELECT policy_revision FROM layer_versions \
                 WHERE name = ?1 AND version = ?2 AND deleted = 0",
                params![name, version],
                |r| r.get(0),
            )
            .optional()?;
        let Some(current) = current else {
            return Ok(None);
        };
        if let Some(r) = revision {
            if current.as_deref() != Some(r) {
                return Err(LayerError::RevisionMismatch);
            }
        }
        let taken: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM layer_version_statements WHERE name = ?1 AND version = ?2 AND sid = ?3",
                params![name, version, sid],
                |r| r.get(0),
            )
            .optional()?;
        if taken.is_some() {
            return Err(LayerError::StatementExists(sid.to_string()));
        }
        tx.execute(
            "INSERT INTO layer_version_statements (name, version, sid, statement) VALUES (?1, ?2, ?3, ?4)",
            params![name, version, sid, statement_json],
        )?;
        let new_rev = crate::util::uuid4();
        tx.execute(
            "UPDATE layer_versions SET policy_revision = ?3 WHERE name = ?1 AND version = ?2",
            params![name, version, new_rev],
        )?;
        tx.commit()?;
        Ok(Some(new_rev))
    }

    /// Removes a statement. `Ok(false)` if the version does not exist.
    pub fn remove_statement(
        &self,
        name: &str,
        version: i64,
        sid: &str,
        revision: Option<&str>,
    ) -> Result<bool> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<Option<String>> = tx
            .query_row(
                "SELECT policy_revision FROM layer_versions \
                 WHERE name = ?1 AND version = ?2 AND deleted = 0",
                params![name, version],
                |r| r.get(0),
            )
            .optional()?;
        let Some(current) = current else {
            return Ok(false);
        };
        if let Some(r) = revision {
            if current.as_deref() != Some(r) {
                return Err(LayerError::RevisionMismatch);
            }
        }
        let n = tx.execute(
            "DELETE FROM layer_version_statements WHERE name = ?1 AND version = ?2 AND sid = ?3",
            params![name, version, sid],
        )?;
        if n == 0 {
            return Err(LayerError::StatementMissing(sid.to_string()));
        }
        let left: i64 = tx.query_row(
            "SELECT count(*) FROM layer_version_statements WHERE name = ?1 AND version = ?2",
            params![name, version],
            |r| r.get(0),
        )?;
        let new_rev = (left > 0).then(crate::util::uuid4);
        tx.execute(
            "UPDATE layer_versions SET policy_revision = ?3 WHERE name = ?1 AND version = ?2",
            params![name, version, new_rev],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// A version's policy statements (in the order added) and revision id; `None` if the
    /// version does not exist.
    pub fn policy(
        &self,
        name: &str,
        version: i64,
    ) -> Result<Option<(Vec<Statement>, Option<String>)>> {
        let db = self.db();
        let current: Option<Option<String>> = db
            .query_row(
                "SELECT policy_revision FROM layer_versions \
                 WHERE name = ?1 AND version = ?2 AND deleted = 0",
                params![name, version],
                |r| r.get(0),
            )
            .optional()?;
        let Some(revision) = current else {
            return Ok(None);
        };
        let mut stmt = db.prepare(
            "SELECT sid, statement FROM layer_version_statements \
             WHERE name = ?1 AND version = ?2 ORDER BY rowid",
        )?;
        let rows = stmt.query_map(params![name, version], |r| {
            Ok(Statement {
                sid: r.get(0)?,
                json: r.get(1)?,
            })
        })?;
        let statements = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some((statements, revision)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_with(name: &str, body: &[u8]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(body).unwrap();
        w.finish().unwrap().into_inner()
    }

    fn open(d: &Path) -> Layers {
        Layers::open(d, "us-east-1", "123456789012").unwrap()
    }

    fn publish(l: &Layers, name: &str, body: &[u8], rts: &[&str], archs: &[&str]) -> LayerVersion {
        let rts: Vec<String> = rts.iter().map(|s| s.to_string()).collect();
        let archs: Vec<String> = archs.iter().map(|s| s.to_string()).collect();
        l.publish(&NewLayerVersion {
            name,
            description: "d",
            license_info: Some("MIT"),
            compatible_runtimes: &rts,
            compatible_architectures: &archs,
            zip: &zip_with("python/m.py", body),
        })
        .unwrap()
    }

    #[test]
    fn publish_get_delete_and_numbering() {
        let d = tempfile::tempdir().unwrap();
        let l = open(d.path());
        let v1 = publish(&l, "lib", b"a", &["python3.11"], &["x86_64"]);
        let v2 = publish(&l, "lib", b"b", &[], &[]);
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_eq!(v1.license_info.as_deref(), Some("MIT"));
        assert!(l.content_dir(&v1.code_hex).join("python/m.py").is_file());
        assert!(l.blob_path(&v1.code_hex).is_file());
        assert_eq!(l.get("lib", 1).unwrap(), Some(v1.clone()));
        assert_eq!(l.get("lib", 3).unwrap(), None);
        assert_eq!(l.get("other", 1).unwrap(), None);
        assert!(l.delete("lib", 2).unwrap());
        assert!(!l.delete("lib", 2).unwrap());
        assert!(l.delete("lib", 1).unwrap());
        assert_eq!(l.get("lib", 1).unwrap(), None);
        // Numbers are never reused, also across a reopen.
        drop(l);
        let l = open(d.path());
        assert_eq!(publish(&l, "lib", b"c", &[], &[]).version, 3);
        assert_eq!(publish(&l, "other", b"c", &[], &[]).version, 1);
        // A deleted version's content stays for the functions that use it.
        let arn1 = l.version_arn("lib", 1);
        assert_eq!(
            l.content_dirs(std::slice::from_ref(&arn1)).unwrap(),
            vec![l.content_dir(&v1.code_hex)]
        );
        assert!(matches!(
            l.resolve_arns(&[arn1]),
            Err(LayerError::VersionMissing(_))
        ));
    }

    #[test]
    fn bad_zip_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let l = open(d.path());
        let err = l
            .publish(&NewLayerVersion {
                name: "bad",
                description: "",
                license_info: None,
                compatible_runtimes: &[],
                compatible_architectures: &[],
                zip: b"not a zip",
            })
            .unwrap_err();
        assert!(matches!(err, LayerError::Unzip(ref u) if !u.is_internal()));
        assert!(l
            .list_layers(Filter::default(), None, 50)
            .unwrap()
            .is_empty());
        assert_eq!(publish(&l, "bad", b"x", &[], &[]).version, 1);
    }

    #[test]
    fn paging_and_filters() {
        let d = tempfile::tempdir().unwrap();
        let l = open(d.path());
        for i in 0..5 {
            publish(&l, "many", format!("{i}").as_bytes(), &["python3.11"], &[]);
        }
        publish(&l, "many", b"last", &["nodejs20.x"], &["arm64"]);
        for n in ["c", "a", "b"] {
            publish(&l, n, n.as_bytes(), &["python3.12"], &["x86_64"]);
        }
        let page = |before, limit| -> Vec<i64> {
            l.list_versions("many", Filter::default(), before, limit)
                .unwrap()
                .iter()
                .map(|v| v.version)
                .collect()
        };
        assert_eq!(page(None, 4), [6, 5, 4, 3]);
        assert_eq!(page(Some(3), 4), [2, 1]);
        assert!(page(Some(1), 4).is_empty());
        let py = Filter {
            runtime: Some("python3.11"),
            architecture: None,
        };
        let v: Vec<i64> = l
            .list_versions("many", py, None, 50)
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(v, [5, 4, 3, 2, 1]);
        let names = |f, after, limit| -> Vec<(String, i64)> {
            l.list_layers(f, after, limit)
                .unwrap()
                .into_iter()
                .map(|v| (v.name, v.version))
                .collect()
        };
        assert_eq!(
            names(Filter::default(), None, 2),
            [("a".into(), 1), ("b".into(), 1)]
        );
        assert_eq!(
            names(Filter::default(), Some("b"), 2),
            [("c".into(), 1), ("many".into(), 6)]
        );
        // The latest *matching* version.
        assert_eq!(names(py, None, 50), [("many".into(), 5)]);
        let arm = Filter {
            runtime: None,
            architecture: Some("arm64"),
        };
        assert_eq!(names(arm, None, 50), [("many".into(), 6)]);
        l.delete("many", 6).unwrap();
        assert_eq!(names(arm, None, 50), Vec::<(String, i64)>::new());
        assert_eq!(
            names(Filter::default(), Some("c"), 50),
            [("many".into(), 5)]
        );
    }

    #[test]
    fn resolving_function_layers() {
        let d = tempfile::tempdir().unwrap();
        let l = open(d.path());
        let a = publish(&l, "a", b"1", &[], &[]);
        publish(&l, "a", b"2", &[], &[]);
        let b = publish(&l, "b", b"3", &[], &[]);
        let arn = |n: &str, v: i64| l.version_arn(n, v);
        let r = l.resolve_arns(&[arn("b", 1), arn("a", 1)]).unwrap();
        assert_eq!(
            r.iter().map(|x| x.dir.clone()).collect::<Vec<_>>(),
            [l.content_dir(&b.code_hex), l.content_dir(&a.code_hex)]
        );
        assert_eq!(r[1].code_size, a.code_size);
        assert!(matches!(
            l.resolve_arns(&[arn("a", 1), arn("a", 2)]),
            Err(LayerError::SameLayer(x, y)) if x == arn("a", 1) && y == arn("a", 2)
        ));
        assert!(matches!(
            l.resolve_arns(&[arn("a", 1), arn("a", 1)]),
            Err(LayerError::SameLayer(..))
        ));
        assert!(matches!(
            l.resolve_arns(&vec![arn("a", 1); 6]),
            Err(LayerError::TooMany)
        ));
        assert!(matches!(
            l.resolve_arns(&[arn("a", 9)]),
            Err(LayerError::VersionMissing(_))
        ));
        assert!(matches!(
            l.resolve_arns(&["arn:aws:lambda:eu-west-1:123456789012:layer:a:1".into()]),
            Err(LayerError::OtherRegion(r)) if r == "us-east-1"
        ));
        assert!(matches!(
            l.resolve_arns(&["arn:aws:lambda:us-east-1:999999999999:layer:a:1".into()]),
            Err(LayerError::VersionMissing(_))
        ));
        assert!(matches!(
            l.resolve_arns(&[l.layer_arn("a")]),
            Err(LayerError::BadArn(_))
        ));
    }

    #[test]
    fn arns_and_names() {
        let v =
            parse_version_arn("arn:aws:lambda:us-east-1:123456789012:layer:my-lib_2:17").unwrap();
        assert_eq!(
            (v.region, v.account, v.name, v.version),
            ("us-east-1", "123456789012", "my-lib_2", 17)
        );
        assert!(
            parse_version_arn("arn:aws-us-gov:lambda:us-gov-west-1:123456789012:layer:x:1")
                .is_some()
        );
        for bad in [
            "",
            "arn:aws:lambda:us-east-1:123456789012:layer:x",
            "arn:aws:lambda:us-east-1:123456789012:layer:x:",
            "arn:aws:lambda:us-east-1:123456789012:layer:x:1a",
            "arn:aws:lambda:us-east-1:12345:layer:x:1",
            "arn:aws:lambda:useast1:123456789012:layer:x:1",
            "arn:aws:lambda:us-east-1:123456789012:function:x:1",
            "arn:aws:lambda:us-east-1:123456789012:layer:a b:1",
            "arn:aws:lambda:us-east-1:123456789012:layer:x:1:2",
            "arn:aws:lambda:us-east-1:123456789012:layer:x:99999999999999999999",
        ] {
            assert!(parse_version_arn(bad).is_none(), "{bad}");
        }
        assert_eq!(parse_layer_name("my-lib"), Some((None, None, "my-lib")));
        assert_eq!(
            parse_layer_name("arn:aws:lambda:us-east-1:123456789012:layer:my-lib"),
            Some((Some("us-east-1"), Some("123456789012"), "my-lib"))
        );
        for bad in [
            "",
            "a b",
            "a/b",
            "a:1",
            "arn:aws:lambda:us-east-1:123456789012:layer:x:1",
        ] {
            assert!(parse_layer_name(bad).is_none(), "{bad}");
        }
        assert!(parse_layer_name(&"a".repeat(141)).is_none());
    }

    #[test]
    fn policies() {
        let d = tempfile::tempdir().unwrap();
        let l = open(d.path());
        publish(&l, "p", b"1", &[], &[]);
        assert_eq!(l.policy("p", 1).unwrap(), Some((Vec::new(), None)));
        assert_eq!(l.policy("p", 2).unwrap(), None);
        let r1 = l.add_statement("p", 1, "s1", "{}", None).unwrap().unwrap();
        assert!(matches!(
            l.add_statement("p", 1, "s1", "{}", None),
            Err(LayerError::StatementExists(_))
        ));
        assert!(matches!(
            l.add_statement("p", 1, "s2", "{}", Some("nope")),
            Err(LayerError::RevisionMismatch)
        ));
        let r2 = l
            .add_statement("p", 1, "s2", "{\"x\":1}", Some(&r1))
            .unwrap()
            .unwrap();
        assert_ne!(r1, r2);
        let (st, rev) = l.policy("p", 1).unwrap().unwrap();
        assert_eq!(
            st.iter().map(|s| s.sid.as_str()).collect::<Vec<_>>(),
            ["s1", "s2"]
        );
        assert_eq!(rev.as_deref(), Some(r2.as_str()));
        assert!(matches!(
            l.remove_statement("p", 1, "zz", None),
            Err(LayerError::StatementMissing(_))
        ));
        assert!(l.remove_statement("p", 1, "s1", Some(&r2)).unwrap());
        assert!(!l.remove_statement("p", 7, "s1", None).unwrap());
        assert_eq!(l.add_statement("p", 7, "s", "{}", None).unwrap(), None);
        l.delete("p", 1).unwrap();
        assert_eq!(l.policy("p", 1).unwrap(), None);
    }
}
