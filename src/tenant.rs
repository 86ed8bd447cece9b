//! Numbers and their tenants: who owns a phone number, where its callback goes,
//! the secret that signs those callbacks, and the bearer token of its control
//! API.
//!
//! A tenant is one registered number. Lookups (by number on every incoming
//! call, by token on every API request) read an in-memory index; the SQLite
//! database only persists registrations across restarts and is touched by the
//! admin API alone, from a blocking thread. API tokens are stored as SHA-256
//! hashes, never in clear; callback secrets are stored as given (they are needed
//! to sign).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::config::NumberConfig;
use crate::signature::{random_hex, sha256_hex};

/// Where a registration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `[[numbers]]` in the config file (not stored, not deletable by API).
    Config,
    /// `POST /v1/numbers`.
    Api,
}

/// One registered number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The tenant's identity: random at registration, never reused. Call data
    /// is keyed by it, so whoever registers the number next sees none of it.
    pub id: String,
    /// E.164 number.
    pub number: String,
    /// Callback URL.
    pub callback_url: String,
    /// Signing secret for callbacks.
    pub secret: String,
    /// SHA-256 hex of the API token ("" = no API access).
    pub token_hash: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Origin.
    pub source: Source,
    /// Transfer destinations the tenant may reach (prefixes, SIP domains);
    /// empty: its own country's numbers only.
    pub transfer_allow: Vec<String>,
    /// The carrier the number is with (`twilio`, `telnyx`, `vonage`); calls
    /// to it from another carrier are refused. "" = any carrier.
    pub carrier: String,
}

/// Carriers a number may be registered with.
pub const CARRIERS: [&str; 3] = ["twilio", "telnyx", "vonage"];

/// Whether `carrier` is one a number may name ("" = any).
pub fn valid_carrier(carrier: &str) -> bool {
    carrier.is_empty() || CARRIERS.contains(&carrier)
}

impl Tenant {
    /// Where this tenant may transfer calls.
    pub fn destinations(&self) -> crate::destination::DestinationPolicy {
        crate::destination::DestinationPolicy::new(&self.number, &self.transfer_allow)
            .unwrap_or_else(|_| crate::destination::DestinationPolicy::new(&self.number, &[]).expect("empty list"))
    }
}

/// The id of a tenant declared in the config file: stable across restarts,
/// derived from the number and its secret (a different owner, with another
/// secret, gets another id).
fn config_tenant_id(n: &NumberConfig) -> String {
    format!("cfg_{}", &sha256_hex(format!("{}\n{}", n.number, n.secret).as_bytes())[..32])
}

/// Errors of the number store.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// Input rejected.
    #[error("{0}")]
    Invalid(String),
    /// The number is already registered.
    #[error("number {0} is already registered")]
    Exists(String),
    /// The number is declared in the config file.
    #[error("number {0} is declared in the config file; change it there")]
    FromConfig(String),
    /// Database failure.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// Creating the database folder failed.
    #[error("database folder: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether `s` is an E.164 number: `+`, a non-zero digit, 7 to 15 digits in all.
pub fn is_e164(s: &str) -> bool {
    let Some(d) = s.strip_prefix('+') else { return false };
    (7..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
}

/// A callback URL must be absolute http(s) with a host.
pub fn check_callback_url(u: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(u).map_err(|e| format!("callback_url {u:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("callback_url {u:?} must be an http(s) URL with a host"));
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Default)]
struct Index {
    by_number: HashMap<String, Arc<Tenant>>,
    by_token: HashMap<String, String>,
}

impl Index {
    fn insert(&mut self, t: Tenant) {
        if !t.token_hash.is_empty() {
            self.by_token.insert(t.token_hash.clone(), t.number.clone());
        }
        self.by_number.insert(t.number.clone(), Arc::new(t));
    }

    fn remove(&mut self, number: &str) -> Option<Arc<Tenant>> {
        let t = self.by_number.remove(number)?;
        self.by_token.remove(&t.token_hash);
        Some(t)
    }
}

/// Registered numbers: an in-memory index over an optional SQLite file.
pub struct NumberStore {
    db: Option<Mutex<Connection>>,
    index: RwLock<Index>,
}

impl std::fmt::Debug for NumberStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NumberStore").field("numbers", &self.len()).finish()
    }
}

impl NumberStore {
    /// Open (or create) the store at `path` ("" = memory only) and add the
    /// config's numbers.
    pub fn open(path: &str, declared: &[NumberConfig]) -> Result<Self, TenantError> {
        let db = if path.is_empty() {
            None
        } else {
            let p = Path::new(path);
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                create_private_dir(dir)?;
            }
            let conn = Connection::open(p)?;
            restrict_file(p);
            conn.execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE IF NOT EXISTS numbers (
                     number TEXT PRIMARY KEY,
                     callback_url TEXT NOT NULL,
                     secret TEXT NOT NULL,
                     token_hash TEXT NOT NULL,
                     created_at INTEGER NOT NULL
                 );",
            )?;
            // Added later: the tenant id and its transfer destinations.
            for (col, decl) in [
                ("tenant_id", "TEXT"),
                ("transfer_allow", "TEXT NOT NULL DEFAULT '[]'"),
                ("carrier", "TEXT NOT NULL DEFAULT ''"),
            ] {
                let has: bool =
                    conn.prepare("SELECT 1 FROM pragma_table_info('numbers') WHERE name = ?1")?.exists(params![col])?;
                if !has {
                    conn.execute_batch(&format!("ALTER TABLE numbers ADD COLUMN {col} {decl}"))?;
                }
            }
            conn.execute(
                "UPDATE numbers SET tenant_id = 'tn_' || lower(hex(randomblob(16))) WHERE tenant_id IS NULL",
                [],
            )?;
            Some(conn)
        };
        let mut index = Index::default();
        if let Some(conn) = &db {
            let mut st = conn.prepare(
                "SELECT number, callback_url, secret, token_hash, created_at, tenant_id, transfer_allow, carrier FROM numbers",
            )?;
            let rows = st.query_map([], |r| {
                Ok(Tenant {
                    id: r.get(5)?,
                    number: r.get(0)?,
                    callback_url: r.get(1)?,
                    secret: r.get(2)?,
                    token_hash: r.get(3)?,
                    created_at: r.get::<_, i64>(4)? as u64,
                    source: Source::Api,
                    transfer_allow: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
                    carrier: r.get(7)?,
                })
            })?;
            for t in rows {
                index.insert(t?);
            }
        }
        for n in declared {
            index.insert(Tenant {
                id: config_tenant_id(n),
                transfer_allow: n.transfer_allow.clone(),
                number: n.number.clone(),
                callback_url: n.callback_url.clone(),
                secret: n.secret.clone(),
                token_hash: if n.api_token.is_empty() { String::new() } else { sha256_hex(n.api_token.as_bytes()) },
                created_at: 0,
                source: Source::Config,
                carrier: n.carrier.clone(),
            });
        }
        Ok(Self { db: db.map(Mutex::new), index: RwLock::new(index) })
    }

    /// Number of registered numbers.
    pub fn len(&self) -> usize {
        self.index.read().expect("index lock").by_number.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tenant owning `number`.
    pub fn get(&self, number: &str) -> Option<Arc<Tenant>> {
        self.index.read().expect("index lock").by_number.get(number).cloned()
    }

    /// The tenant whose API token is `token`.
    pub fn by_token(&self, token: &str) -> Option<Arc<Tenant>> {
        if token.is_empty() {
            return None;
        }
        let idx = self.index.read().expect("index lock");
        let number = idx.by_token.get(&sha256_hex(token.as_bytes()))?;
        idx.by_number.get(number).cloned()
    }

    /// Check a registration and build its tenant and new API token (shown
    /// once), without storing it: [`Self::register`] stores it here, a cluster
    /// node in Redis first ([`Self::insert_shared`]).
    pub fn prepare(
        &self,
        number: &str,
        callback_url: &str,
        secret: &str,
        transfer_allow: &[String],
        carrier: &str,
    ) -> Result<(Tenant, String), TenantError> {
        if !valid_carrier(carrier) {
            return Err(TenantError::Invalid(format!("carrier must be one of {CARRIERS:?} (or absent: any)")));
        }
        if !is_e164(number) {
            return Err(TenantError::Invalid(format!("number {number:?} is not E.164 (e.g. +15551230000)")));
        }
        check_callback_url(callback_url).map_err(TenantError::Invalid)?;
        if secret.len() < 16 {
            return Err(TenantError::Invalid("secret must be at least 16 characters".into()));
        }
        crate::destination::DestinationPolicy::new(number, transfer_allow)
            .map_err(|e| TenantError::Invalid(format!("transfer_allow: {e}")))?;
        if let Some(t) = self.get(number) {
            return Err(if t.source == Source::Config {
                TenantError::FromConfig(number.into())
            } else {
                TenantError::Exists(number.into())
            });
        }
        let token = format!("cbt_{}", random_hex());
        let t = Tenant {
            id: format!("tn_{}", &random_hex()[..32]),
            number: number.into(),
            callback_url: callback_url.into(),
            secret: secret.into(),
            token_hash: sha256_hex(token.as_bytes()),
            created_at: unix_now(),
            source: Source::Api,
            transfer_allow: transfer_allow.to_vec(),
            carrier: carrier.into(),
        };
        Ok((t, token))
    }

    /// Register a number; returns the tenant and its new API token (shown once).
    /// Blocking (SQLite): call from a blocking thread.
    pub fn register(
        &self,
        number: &str,
        callback_url: &str,
        secret: &str,
        transfer_allow: &[String],
        carrier: &str,
    ) -> Result<(Arc<Tenant>, String), TenantError> {
        let (t, token) = self.prepare(number, callback_url, secret, transfer_allow, carrier)?;
        if let Some(db) = &self.db {
            let conn = db.lock().expect("db lock");
            let allow = serde_json::to_string(&t.transfer_allow).expect("strings serialize");
            let n = conn.execute(
                "INSERT OR IGNORE INTO numbers (number, callback_url, secret, token_hash, created_at, tenant_id, transfer_allow, carrier)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![t.number, t.callback_url, t.secret, t.token_hash, t.created_at as i64, t.id, allow, t.carrier],
            )?;
            if n == 0 {
                return Err(TenantError::Exists(number.into()));
            }
        }
        let mut idx = self.index.write().expect("index lock");
        if idx.by_number.contains_key(number) {
            return Err(TenantError::Exists(number.into()));
        }
        idx.insert(t.clone());
        Ok((idx.by_number[number].clone(), token))
    }

    /// Remove a number registered over the API. Blocking (SQLite).
    pub fn remove(&self, number: &str) -> Result<Option<Arc<Tenant>>, TenantError> {
        match self.get(number) {
            None => return Ok(None),
            Some(t) if t.source == Source::Config => return Err(TenantError::FromConfig(number.into())),
            Some(_) => {}
        }
        if let Some(db) = &self.db {
            let conn = db.lock().expect("db lock");
            conn.execute("DELETE FROM numbers WHERE number = ?1", params![number])?;
        }
        Ok(self.index.write().expect("index lock").remove(number))
    }

    /// A number registered through the cluster (Redis holds it): add or
    /// replace it in the index. A number declared in this node's config keeps
    /// its declaration.
    pub fn insert_shared(&self, t: Tenant) -> Arc<Tenant> {
        let mut idx = self.index.write().expect("index lock");
        match idx.by_number.get(&t.number) {
            Some(old) if old.source == Source::Config => old.clone(),
            Some(old) if **old == t => old.clone(),
            _ => {
                idx.remove(&t.number);
                let number = t.number.clone();
                idx.insert(Tenant { source: Source::Api, ..t });
                idx.by_number[&number].clone()
            }
        }
    }

    /// A number the cluster no longer holds: drop it from the index (config
    /// numbers stay).
    pub fn remove_shared(&self, number: &str) -> Option<Arc<Tenant>> {
        let mut idx = self.index.write().expect("index lock");
        match idx.by_number.get(number) {
            Some(t) if t.source == Source::Api => idx.remove(number),
            _ => None,
        }
    }

    /// Make the API-registered numbers exactly `all` (a full resync from the
    /// cluster); returns how many changed.
    pub fn replace_shared(&self, all: Vec<Tenant>) -> usize {
        let keep: std::collections::HashSet<String> = all.iter().map(|t| t.number.clone()).collect();
        let gone: Vec<String> = {
            let idx = self.index.read().expect("index lock");
            idx.by_number
                .values()
                .filter(|t| t.source == Source::Api && !keep.contains(&t.number))
                .map(|t| t.number.clone())
                .collect()
        };
        let mut changed = gone.len();
        for n in gone {
            self.remove_shared(&n);
        }
        for t in all {
            let before = self.get(&t.number);
            let after = self.insert_shared(t);
            if before.is_none_or(|b| !Arc::ptr_eq(&b, &after)) {
                changed += 1;
            }
        }
        changed
    }

    /// The numbers registered over the API (those a cluster shares).
    pub fn api_tenants(&self) -> Vec<Arc<Tenant>> {
        self.index.read().expect("index lock").by_number.values().filter(|t| t.source == Source::Api).cloned().collect()
    }

    /// Delete `numbers` from the database file, leaving the index (they moved
    /// to the cluster). Blocking (SQLite).
    pub fn forget_stored(&self, numbers: &[String]) -> Result<(), TenantError> {
        let Some(db) = &self.db else { return Ok(()) };
        let conn = db.lock().expect("db lock");
        for n in numbers {
            conn.execute("DELETE FROM numbers WHERE number = ?1", params![n])?;
        }
        Ok(())
    }

    /// Whether the database file still holds `number` (tests, diagnostics).
    pub fn stored(&self, number: &str) -> Result<bool, TenantError> {
        let Some(db) = &self.db else { return Ok(false) };
        let conn = db.lock().expect("db lock");
        Ok(conn.query_row("SELECT 1 FROM numbers WHERE number = ?1", params![number], |_| Ok(())).optional()?.is_some())
    }
}

/// Create `dir` (and missing parents) readable by the owner only. Folders
/// that already exist keep their permissions (a shared `/tmp` keeps its
/// sticky bit); only the ones created here are made private.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(p.to_path_buf());
        d = p.parent();
    }
    for p in missing.iter().rev() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(p) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        #[cfg(not(unix))]
        match std::fs::create_dir(p) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn restrict_file(p: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("cb-tenant-{}", random_hex()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[cfg(unix)]
    #[test]
    fn only_folders_it_creates_are_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let shared = tmpdir();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let inner = shared.join("a/b");
        create_private_dir(&inner).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&shared), 0o1777, "an existing shared folder keeps its mode and sticky bit");
        assert_eq!(mode(&shared.join("a")), 0o700);
        assert_eq!(mode(&inner), 0o700);
        create_private_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o1777, "calling it on an existing folder changes nothing");
        let _ = std::fs::remove_dir_all(shared);
    }

    #[test]
    fn the_cluster_index_follows_redis_but_never_overrides_a_declared_number() {
        let declared = NumberConfig {
            number: "+15550000001".into(),
            callback_url: "https://b.example.com/cb".into(),
            secret: "0123456789abcdef0".into(),
            api_token: "declared-token".into(),
            transfer_allow: Vec::new(),
            carrier: String::new(),
        };
        let store = NumberStore::open("", std::slice::from_ref(&declared)).unwrap();
        let (t, token) =
            store.prepare("+15550000002", "https://b.example.com/cb", "0123456789abcdef0", &[], "").unwrap();
        assert!(store.get("+15550000002").is_none(), "prepare stores nothing");
        store.insert_shared(t.clone());
        assert_eq!(store.by_token(&token).unwrap().number, "+15550000002", "its token works");
        // The same entry again changes nothing; a re-registration (new token) replaces the old token.
        let same = store.get("+15550000002").unwrap();
        assert!(Arc::ptr_eq(&same, &store.insert_shared(t.clone())));
        let mut again = t.clone();
        again.token_hash = sha256_hex(b"new-token");
        store.insert_shared(again);
        assert!(store.by_token(&token).is_none(), "the old token is dead");
        assert!(store.by_token("new-token").is_some());
        // A cluster entry for a declared number does not displace the declaration.
        let mut clash = t.clone();
        clash.number = declared.number.clone();
        store.insert_shared(clash);
        assert_eq!(store.get(&declared.number).unwrap().source, Source::Config);
        assert!(store.remove_shared(&declared.number).is_none(), "and the cluster cannot remove it");
        // A full resync leaves exactly the cluster's numbers (plus the declared ones).
        let mut other = t.clone();
        other.number = "+15550000003".into();
        other.token_hash = sha256_hex(b"third");
        assert_eq!(store.replace_shared(vec![other]), 2, "one gone, one new");
        assert!(store.get("+15550000002").is_none() && store.get("+15550000003").is_some());
        assert!(store.by_token("new-token").is_none());
        assert_eq!(store.len(), 2);
        assert_eq!(store.api_tenants().len(), 1);
    }

    #[test]
    fn e164_rules() {
        assert!(is_e164("+15551230000"));
        assert!(!is_e164("15551230000"));
        assert!(!is_e164("+0555123"));
        assert!(!is_e164("+1555"));
        assert!(!is_e164("+1555123000012345"));
        assert!(!is_e164("+1555-123-0000"));
    }

    #[test]
    fn registrations_persist_across_reopen_and_tokens_are_hashed() {
        let dir = tmpdir();
        let db = dir.join("sub/cb.db");
        let path = db.to_str().unwrap();
        let store = NumberStore::open(path, &[]).unwrap();
        let (t, token) = store.register("+15551230000", "http://127.0.0.1:9/cb", "0123456789abcdef", &[], "").unwrap();
        assert_eq!(store.by_token(&token).unwrap().number, "+15551230000");
        assert_ne!(t.token_hash, token);
        assert!(matches!(
            store.register("+15551230000", "http://127.0.0.1:9/cb", "0123456789abcdef", &[], ""),
            Err(TenantError::Exists(_))
        ));
        drop(store);
        let text = std::fs::read(&db).unwrap();
        assert!(!text.windows(token.len()).any(|w| w == token.as_bytes()), "token stored in clear");
        let store = NumberStore::open(path, &[]).unwrap();
        assert_eq!(store.get("+15551230000").unwrap().callback_url, "http://127.0.0.1:9/cb");
        assert_eq!(store.get("+15551230000").unwrap().id, t.id, "the tenant id survives a restart");
        assert!(store.by_token(&token).is_some());
        assert!(store.remove("+15551230000").unwrap().is_some());
        assert!(store.by_token(&token).is_none());
        let (again, _) = store.register("+15551230000", "http://127.0.0.1:9/cb", "0123456789abcdef", &[], "").unwrap();
        assert_ne!(again.id, t.id, "the next owner of a number is another tenant");
        assert!(store.remove("+15551230000").unwrap().is_some());
        // A number's carrier survives a restart; an unknown carrier is refused.
        store.register("+15551239999", "http://127.0.0.1:9/cb", "0123456789abcdef", &[], "vonage").unwrap();
        assert!(matches!(
            store.register("+15551238888", "http://127.0.0.1:9/cb", "0123456789abcdef", &[], "skype"),
            Err(TenantError::Invalid(_))
        ));
        drop(store);
        let store = NumberStore::open(path, &[]).unwrap();
        assert_eq!(store.get("+15551239999").unwrap().carrier, "vonage");
        assert!(store.remove("+15551239999").unwrap().is_some());
        drop(store);
        assert!(NumberStore::open(path, &[]).unwrap().is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(db.parent().unwrap()).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "database folder is not private: {mode:o}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_registrations_are_refused_and_config_numbers_are_protected() {
        let declared = vec![NumberConfig {
            number: "+15550001111".into(),
            callback_url: "http://127.0.0.1:9/cb".into(),
            secret: "s".into(),
            api_token: "tok".into(),
            transfer_allow: vec![],
            carrier: String::new(),
        }];
        let store = NumberStore::open("", &declared).unwrap();
        assert_eq!(store.by_token("tok").unwrap().number, "+15550001111");
        assert!(store.by_token("").is_none());
        assert!(matches!(
            store.register("+15550001111", "http://a/b", "0123456789abcdef", &[], ""),
            Err(TenantError::FromConfig(_))
        ));
        assert!(matches!(store.remove("+15550001111"), Err(TenantError::FromConfig(_))));
        assert!(matches!(
            store.register("555", "http://a/b", "0123456789abcdef", &[], ""),
            Err(TenantError::Invalid(_))
        ));
        assert!(matches!(
            store.register("+15551112222", "ftp://a/b", "0123456789abcdef", &[], ""),
            Err(TenantError::Invalid(_))
        ));
        assert!(matches!(store.register("+15551112222", "http://a/b", "short", &[], ""), Err(TenantError::Invalid(_))));
    }
}
