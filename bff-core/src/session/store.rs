//! Where sessions and logins in progress are kept: in this process (bounded by bytes, the least
//! recently used going first) or in Redis (shared by replicas). Both are keyed by a hash of the
//! cookie's id, never the id itself, so whoever reads the store cannot replay a cookie from it.
//!
//! A session lives `idle_timeout` past its last use (every read extends it) and never past its
//! absolute expiry; a login in progress lives `login_timeout` and is taken once.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moka::policy::EvictionPolicy;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::policy::auth::Identity;

/// A signed-in browser's session: who it is, and the provider's tokens, which never leave the
/// server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    /// The ID token's `sub`.
    pub(crate) subject: String,
    /// The scopes granted.
    pub(crate) scopes: Vec<String>,
    /// The ID token's `name` and `email`, when it has them.
    pub(crate) name: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) access_token: String,
    /// When the access token expires, in seconds since the epoch.
    pub(crate) access_expires_at: u64,
    pub(crate) refresh_token: Option<String>,
    /// For the provider's end-session endpoint (`id_token_hint`).
    pub(crate) id_token: String,
    /// Login time and absolute expiry, in seconds since the epoch.
    pub(crate) created_at: u64,
    pub(crate) expires_at: u64,
}

/// A session as requests use it: its record, and the [`Identity`] made from it once (the memory
/// store keeps both, so a request with the cookie builds nothing).
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) record: SessionRecord,
    pub(crate) identity: Identity,
}

impl Session {
    pub(crate) fn new(record: SessionRecord) -> Arc<Self> {
        let identity = Identity::new(record.subject.clone(), record.scopes.iter().cloned());
        Arc::new(Self { record, identity })
    }
}

impl std::ops::Deref for Session {
    type Target = SessionRecord;

    fn deref(&self) -> &SessionRecord {
        &self.record
    }
}

/// A login in progress: what the callback must find to accept the provider's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LoginRecord {
    pub(crate) state: String,
    pub(crate) nonce: String,
    pub(crate) verifier: String,
    /// The local path to go back to.
    pub(crate) return_url: String,
    /// The redirect URI sent to the provider, sent again with the code.
    pub(crate) redirect_uri: String,
}

/// The seconds since the epoch now.
pub(crate) fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the session store cannot answer: {0}")]
pub(crate) struct StoreError(String);

/// Sessions and logins, in memory or in Redis.
#[derive(Clone)]
pub(crate) enum Store {
    Memory(Memory),
    Redis(Redis),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Memory(_) => "Store::Memory",
            Self::Redis(_) => "Store::Redis",
        })
    }
}

impl Store {
    /// The session under `key`, its idle timer started again; `None` when there is none or it
    /// has expired.
    pub(crate) async fn session(&self, key: &str) -> Result<Option<Arc<Session>>, StoreError> {
        let found = match self {
            Self::Memory(memory) => memory.sessions.get(key).map(|entry| entry.session),
            Self::Redis(redis) => redis.get_touch(&redis.key("session", key), redis.idle).await?.map(Session::new),
        };
        match found {
            Some(record) if record.expires_at <= now_s() => {
                self.remove_session(key).await?;
                Ok(None)
            }
            found => Ok(found),
        }
    }

    /// Keeps `record` under `key` (replacing what was there); the session as requests will see it.
    pub(crate) async fn put_session(&self, key: &str, record: SessionRecord) -> Result<Arc<Session>, StoreError> {
        match self {
            Self::Memory(memory) => {
                let session = Session::new(record);
                let entry = SessionEntry { session: session.clone(), idle: memory.idle };
                memory.sessions.insert(key.to_owned(), entry);
                Ok(session)
            }
            Self::Redis(redis) => {
                let left = Duration::from_secs(record.expires_at.saturating_sub(now_s()));
                redis.set(&redis.key("session", key), &record, redis.idle.min(left)).await?;
                Ok(Session::new(record))
            }
        }
    }

    /// Ends the session under `key`.
    pub(crate) async fn remove_session(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::Memory(memory) => {
                memory.sessions.invalidate(key);
                Ok(())
            }
            Self::Redis(redis) => redis.delete(&redis.key("session", key)).await,
        }
    }

    /// Claims the refresh of the session under `key` for `ttl`: whether this process may refresh
    /// it now. Replicas sharing Redis must not refresh one session at the same time: the
    /// provider rotates refresh tokens, and the second use of one is taken for a theft (the
    /// session's whole family revoked). The memory store's sessions are this process's alone,
    /// and its own lock serves.
    pub(crate) async fn claim_refresh(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Self::Memory(_) => Ok(true),
            Self::Redis(redis) => {
                let command = redis::cmd("SET")
                    .arg(redis.key("refreshing", key))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl))
                    .to_owned();
                Ok(redis.run::<Option<String>>(&command).await?.is_some())
            }
        }
    }

    /// Gives up a claim of [`Store::claim_refresh`].
    pub(crate) async fn release_refresh(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(redis) => redis.delete(&redis.key("refreshing", key)).await,
        }
    }

    /// Keeps a login in progress under `key` for `ttl`.
    pub(crate) async fn put_login(&self, key: &str, record: &LoginRecord) -> Result<(), StoreError> {
        match self {
            Self::Memory(memory) => {
                memory.logins.insert(key.to_owned(), Arc::new(record.clone()));
                Ok(())
            }
            Self::Redis(redis) => redis.set(&redis.key("login", key), record, redis.login_ttl).await,
        }
    }

    /// Takes the login under `key`: a second take finds nothing.
    pub(crate) async fn take_login(&self, key: &str) -> Result<Option<LoginRecord>, StoreError> {
        match self {
            Self::Memory(memory) => Ok(memory.logins.remove(key).map(|record| (*record).clone())),
            Self::Redis(redis) => redis.take(&redis.key("login", key)).await,
        }
    }
}

/// A time to live in Redis's milliseconds: at least one (`PX 0` is an error).
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The in-process store: two caches, so that logins begun by anyone (no credential needed) can
/// only push out other logins, never a signed-in user's session.
#[derive(Clone)]
pub(crate) struct Memory {
    sessions: moka::sync::Cache<String, SessionEntry>,
    logins: moka::sync::Cache<String, Arc<LoginRecord>>,
    idle: Duration,
}

#[derive(Clone)]
struct SessionEntry {
    session: Arc<Session>,
    idle: Duration,
}

impl SessionEntry {
    /// What the entry weighs, about: its strings and the map's overhead.
    fn weight(&self) -> u32 {
        let r = &self.session.record;
        let strings = r.subject.len()
            + r.scopes.iter().map(|s| s.len() + 24).sum::<usize>()
            + r.name.as_ref().map_or(0, String::len)
            + r.email.as_ref().map_or(0, String::len)
            + r.access_token.len()
            + r.refresh_token.as_ref().map_or(0, String::len)
            + r.id_token.len();
        u32::try_from(strings + 256).unwrap_or(u32::MAX)
    }

    /// Until its idle timeout, or its absolute expiry if sooner.
    fn lifetime(&self) -> Duration {
        self.idle.min(Duration::from_secs(self.session.expires_at.saturating_sub(now_s())))
    }
}

struct SessionLifetime;

impl moka::Expiry<String, SessionEntry> for SessionLifetime {
    fn expire_after_create(&self, _: &String, entry: &SessionEntry, _: std::time::Instant) -> Option<Duration> {
        Some(entry.lifetime())
    }

    fn expire_after_read(
        &self,
        _: &String,
        entry: &SessionEntry,
        _: std::time::Instant,
        _: Option<Duration>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.lifetime())
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &SessionEntry,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.lifetime())
    }
}

impl Memory {
    /// A store of at most `bytes`: seven eighths for sessions, one for logins in progress.
    pub(crate) fn new(bytes: u64, idle: Duration, login_ttl: Duration) -> Self {
        let sessions = moka::sync::Cache::builder()
            .max_capacity(bytes - bytes / 8)
            .eviction_policy(EvictionPolicy::lru())
            .weigher(|key: &String, entry: &SessionEntry| entry.weight().saturating_add(key.len() as u32))
            .expire_after(SessionLifetime)
            .build();
        let logins = moka::sync::Cache::builder()
            .max_capacity(bytes / 8)
            .eviction_policy(EvictionPolicy::lru())
            .weigher(|key: &String, login: &Arc<LoginRecord>| {
                let strings = login.state.len() + login.nonce.len() + login.verifier.len();
                u32::try_from(key.len() + strings + login.return_url.len() + login.redirect_uri.len() + 192)
                    .unwrap_or(u32::MAX)
            })
            .time_to_live(login_ttl)
            .build();
        Self { sessions, logins, idle }
    }

    /// The bytes the sessions take, after pending evictions (tests).
    #[cfg(test)]
    pub(crate) fn session_bytes(&self) -> u64 {
        self.sessions.run_pending_tasks();
        self.sessions.weighted_size()
    }
}

/// The Redis store: `<prefix>:session:<hash>` and `<prefix>:login:<hash>`, JSON, with their
/// time to live set by Redis.
#[derive(Clone)]
pub(crate) struct Redis {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    idle: Duration,
    login_ttl: Duration,
}

impl Redis {
    pub(crate) fn new(
        connection: ConnectionManager,
        prefix: &str,
        timeout: Duration,
        idle: Duration,
        login_ttl: Duration,
    ) -> Self {
        Self { connection, prefix: prefix.to_owned(), timeout, idle, login_ttl }
    }

    fn key(&self, kind: &str, key: &str) -> String {
        format!("{}:{kind}:{key}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        match tokio::time::timeout(self.timeout, command.query_async::<T>(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError(e.to_string())),
            Err(_) => Err(StoreError(format!("no answer within {:?}", self.timeout))),
        }
    }

    async fn set(&self, key: &str, value: &impl Serialize, ttl: Duration) -> Result<(), StoreError> {
        let json = serde_json::to_vec(value).map_err(|e| StoreError(e.to_string()))?;
        self.run::<()>(redis::cmd("SET").arg(key).arg(json).arg("PX").arg(millis(ttl))).await
    }

    async fn get_touch<T: for<'de> Deserialize<'de>>(&self, key: &str, ttl: Duration) -> Result<Option<T>, StoreError> {
        let json: Option<Vec<u8>> = self.run(redis::cmd("GETEX").arg(key).arg("PX").arg(millis(ttl))).await?;
        Ok(json.and_then(|json| crate::json::from_bytes(&json).ok()))
    }

    async fn take<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let json: Option<Vec<u8>> = self.run(redis::cmd("GETDEL").arg(key)).await?;
        Ok(json.and_then(|json| crate::json::from_bytes(&json).ok()))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run::<()>(redis::cmd("DEL").arg(key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(expires_in: u64) -> SessionRecord {
        SessionRecord {
            subject: "42".into(),
            scopes: vec!["profile".into()],
            name: Some("Ada".into()),
            email: None,
            access_token: "a".repeat(800),
            access_expires_at: now_s() + 300,
            refresh_token: Some("r".repeat(43)),
            id_token: "i".repeat(800),
            created_at: now_s(),
            expires_at: now_s() + expires_in,
        }
    }

    #[tokio::test]
    async fn a_session_past_its_absolute_expiry_is_gone() {
        let memory = Memory::new(1 << 20, Duration::from_secs(60), Duration::from_secs(60));
        let store = Store::Memory(memory);
        store.put_session("live", record(60)).await.unwrap();
        store.put_session("over", record(0)).await.unwrap();
        let live = store.session("live").await.unwrap().expect("the live session");
        assert_eq!((live.subject.as_str(), live.identity.subject()), ("42", "42"));
        assert!(store.session("over").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_login_is_taken_once() {
        let store = Store::Memory(Memory::new(1 << 20, Duration::from_secs(60), Duration::from_secs(60)));
        let login = LoginRecord {
            state: "s".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            return_url: "/".into(),
            redirect_uri: "http://127.0.0.1/bff/callback".into(),
        };
        store.put_login("k", &login).await.unwrap();
        assert_eq!(store.take_login("k").await.unwrap(), Some(login));
        assert_eq!(store.take_login("k").await.unwrap(), None);
    }

    /// A flood of sessions (or of logins begun by anyone) stays within the bytes given; logins
    /// never push out a session.
    #[tokio::test]
    async fn the_memory_store_is_bounded_and_logins_cannot_evict_sessions() {
        let memory = Memory::new(256 * 1024, Duration::from_secs(600), Duration::from_secs(600));
        let store = Store::Memory(memory.clone());
        store.put_session("first", record(600)).await.unwrap();
        for i in 0..10_000 {
            let login = LoginRecord {
                state: format!("{i:043}"),
                nonce: "n".repeat(43),
                verifier: "v".repeat(43),
                return_url: "/".into(),
                redirect_uri: "http://127.0.0.1:8080/bff/callback".into(),
            };
            store.put_login(&format!("login-{i}"), &login).await.unwrap();
        }
        memory.logins.run_pending_tasks();
        assert!(memory.logins.weighted_size() <= 32 * 1024, "{}", memory.logins.weighted_size());
        assert!(store.session("first").await.unwrap().is_some());
        for i in 0..2_000 {
            store.put_session(&format!("s-{i}"), record(600)).await.unwrap();
        }
        assert!(memory.session_bytes() <= 224 * 1024, "{} bytes", memory.session_bytes());
        // The newest are kept (least recently used first out).
        assert!(store.session("s-1999").await.unwrap().is_some());
    }
}
