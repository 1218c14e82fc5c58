//! The connection to `redis.url`, shared by what the BFF keeps in Redis (limits, sessions).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisConfig;

/// The longest start-up waits for Redis.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `config.url` (with its CA for `rediss://`), failing with a message for people
/// when it cannot. The connection reconnects by itself after a failure.
pub(crate) async fn connect(config: &RedisConfig) -> Result<ConnectionManager, String> {
    let url = config.url.to_string();
    let client = match &config.tls_ca {
        None => redis::Client::open(config.url.expose()),
        Some(path) => {
            let ca = std::fs::read(path).map_err(|e| format!("cannot read `redis.tls_ca` {}: {e}", path.display()))?;
            let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(ca) };
            redis::Client::build_with_tls(config.url.expose(), certificates)
        }
    };
    let client = client.map_err(|e| format!("`{url}` is not usable: {e}"))?;
    let settings = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout.max(Duration::from_millis(500))))
        .set_response_timeout(Some(config.timeout))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1))
        .set_number_of_retries(2);
    let connect = ConnectionManager::new_with_config(client, settings);
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(format!("cannot connect to {url}: {e}")),
        Err(_) => Err(format!("cannot connect to {url}: no answer within {CONNECT_TIMEOUT:?}")),
    }
}
