//! Rate limits and quotas through a served BFF: per user, per client address (and whose
//! `X-Forwarded-For` counts), per partner tier, and shared through a real Redis that fails.

mod common;

use std::time::{Duration, Instant};

use bff_core::testing::RedisServer;
use common::{Stack, StackBuilder, eventually, problem};

fn mobile() -> StackBuilder {
    StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app)
}

fn partner() -> StackBuilder {
    StackBuilder::new(bff_demo::PARTNER_CONFIG, bff_partner::app)
}

async fn as_user(stack: &Stack, user: &str) -> reqwest::Response {
    let token = stack.mocks.token(user, "profile orders", 3600);
    stack.http.get(stack.bff.url("/mobile/home")).bearer_auth(token).send().await.unwrap()
}

async fn with_forwarded_for(stack: &Stack, forwarded: &str) -> reqwest::Response {
    let request = stack.http.get(stack.bff.url("/mobile/home")).bearer_auth(stack.token());
    request.header("x-forwarded-for", forwarded).send().await.unwrap()
}

async fn as_partner(stack: &Stack, key: &str) -> reqwest::Response {
    let request = stack.http.get(stack.bff.url("/v2/orders?user=42")).header("x-api-key", key);
    request.send().await.unwrap()
}

fn field(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

fn per_user(builder: StackBuilder) -> StackBuilder {
    builder
        .set("rate_limits.per-user.key", "user")
        .set("rate_limits.per-user.rate", "2")
        .set("rate_limits.per-user.per", "1h")
        .set("rate_limits.per-user.routes", r#"["/mobile/home"]"#)
}

#[tokio::test]
async fn a_user_over_its_limit_gets_429_and_another_user_does_not() {
    let stack = per_user(mobile()).start().await;
    for remaining in [1, 0] {
        let response = as_user(&stack, "42").await;
        assert_eq!(response.status(), 200);
        assert_eq!(field(&response, "ratelimit-policy"), r#""per-user";q=2;w=3600"#);
        assert!(field(&response, "ratelimit").starts_with(&format!(r#""per-user";r={remaining};t="#)));
    }
    let refused = as_user(&stack, "42").await;
    assert_eq!(refused.status(), 429);
    // One share of 2 an hour comes back after 30 minutes.
    assert_eq!(field(&refused, "retry-after"), "1800");
    assert_eq!(field(&refused, "ratelimit"), r#""per-user";r=0;t=3600"#);
    let body = problem(refused, 429, "RATE_LIMITED").await;
    assert!(body["detail"].as_str().unwrap().contains("per-user"), "{body}");

    // Another user's bucket is its own.
    assert_eq!(as_user(&stack, "7").await.status(), 200);
    // Routes the limit does not list are not limited, nor do they say so.
    let feed = stack.get("/mobile/feed").await;
    assert_ne!(feed.status(), 429);
    assert!(feed.headers().get("ratelimit").is_none());

    let metrics = stack.admin_text("/metrics").await;
    let line = r#"bff_rate_limit_requests_total{route="/mobile/home",limit="per-user",outcome="limited"} 1"#;
    assert!(metrics.contains(line), "{metrics}");
}

fn per_ip(builder: StackBuilder) -> StackBuilder {
    builder.set("rate_limits.per-ip.key", "ip").set("rate_limits.per-ip.rate", "2").set("rate_limits.per-ip.per", "1h")
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    // The test client is the peer, and it is not a trusted proxy: every request is its own,
    // whatever it claims to forward.
    let stack = per_ip(mobile()).start().await;
    assert_eq!(with_forwarded_for(&stack, "203.0.113.1").await.status(), 200);
    assert_eq!(with_forwarded_for(&stack, "203.0.113.2").await.status(), 200);
    let refused = with_forwarded_for(&stack, "203.0.113.3").await;
    problem(refused, 429, "RATE_LIMITED").await;
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_names_the_client() {
    let stack = per_ip(mobile()).set("server.trusted_proxies", r#"["127.0.0.1/32"]"#).start().await;
    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        assert_eq!(with_forwarded_for(&stack, client).await.status(), 200, "{client}");
    }
    // A client's own entries on the left do not make it someone else.
    assert_eq!(with_forwarded_for(&stack, "198.51.100.9, 203.0.113.1").await.status(), 200);
    let refused = with_forwarded_for(&stack, "198.51.100.10, 203.0.113.1").await;
    problem(refused, 429, "RATE_LIMITED").await;
}

#[tokio::test]
async fn a_free_key_runs_out_of_quota_and_a_pro_key_does_not() {
    let stack = partner().set("quotas.free.requests", "3").set("quotas.pro.requests", "5").start().await;
    for remaining in [2, 1, 0] {
        let response = as_partner(&stack, "demo-free-key").await;
        assert_eq!(response.status(), 200);
        assert_eq!(field(&response, "ratelimit-policy"), r#""quota";q=3;w=86400"#);
        assert!(field(&response, "ratelimit").starts_with(&format!(r#""quota";r={remaining};t="#)));
    }
    let spent = as_partner(&stack, "demo-free-key").await;
    let reset: u64 = field(&spent, "retry-after").parse().unwrap();
    assert!((1..=86_400).contains(&reset), "{reset}");
    let body = problem(spent, 429, "QUOTA_EXCEEDED").await;
    assert!(body["detail"].as_str().unwrap().contains("T00:00:00Z"), "resets at midnight UTC: {body}");
    for _ in 0..4 {
        assert_eq!(as_partner(&stack, "demo-pro-key").await.status(), 200);
    }
    // Without a key: 401, not counted against anyone.
    let anonymous = stack.http.get(stack.bff.url("/v2/orders?user=42")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// The quota count Redis holds for `client`.
async fn redis_count(redis: &RedisServer, client: &str) -> Option<u64> {
    let redis_client = redis::Client::open(redis.url()).ok()?;
    let mut connection = redis_client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("HGET").arg(format!("bff:quota:{client}")).arg("n").query_async(&mut connection).await.ok()?
}

#[tokio::test]
async fn a_hung_redis_costs_each_request_at_most_its_timeout_and_counting_resumes() {
    let Some(redis) = RedisServer::start().await else { return };
    let stack = partner()
        .set("redis.url", &redis.url())
        .set("redis.timeout", "100ms")
        .set("quotas.free.requests", "100")
        .start()
        .await;
    for _ in 0..2 {
        assert_eq!(as_partner(&stack, "demo-free-key").await.status(), 200);
    }
    assert_eq!(redis_count(&redis, "demo-free").await, Some(2));

    // Frozen: connections hang. Fail open (the default): answered, counted here alone.
    redis.pause();
    for _ in 0..3 {
        let started = Instant::now();
        let response = as_partner(&stack, "demo-free-key").await;
        assert_eq!(response.status(), 200);
        // The 100 ms timeout, and a wide margin for a loaded machine: far under a hang.
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
    let metrics = stack.admin_text("/metrics").await;
    let count = |kind: &str| {
        let series = format!("bff_redis_errors_total{{kind=\"{kind}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(series.as_str())).and_then(|n| n.parse::<f64>().ok())
    };
    // Each of the three requests found Redis silent (or skipped it for a moment after the first).
    assert!(count("timeout").is_some_and(|n| n >= 1.0), "a timeout is counted as one:\n{metrics}");
    assert_eq!(count("error"), Some(0.0), "a timeout is not an error of another kind:\n{metrics}");

    // Back: the shared count goes on from where Redis left it.
    redis.resume();
    let resumed = eventually(Duration::from_secs(10), || async {
        as_partner(&stack, "demo-free-key").await;
        redis_count(&redis, "demo-free").await.is_some_and(|n| n > 2)
    })
    .await;
    assert!(resumed, "counting in Redis did not resume");
}

#[tokio::test]
async fn with_on_error_deny_a_stopped_redis_refuses_limited_requests_until_it_is_back() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let stack = partner()
        .set("redis.url", &redis.url())
        .set("redis.timeout", "100ms")
        .set("redis.on_error", "deny")
        .start()
        .await;
    assert_eq!(as_partner(&stack, "demo-pro-key").await.status(), 200);

    redis.stop().await;
    let started = Instant::now();
    let refused = as_partner(&stack, "demo-pro-key").await;
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(refused.headers()["retry-after"], "1");
    problem(refused, 503, "RATE_LIMIT_UNAVAILABLE").await;
    // Routes without limits do not depend on Redis.
    let document = stack.http.get(stack.bff.url("/v2/openapi.json")).send().await.unwrap();
    assert_eq!(document.status(), 200);

    redis.restart().await;
    let back =
        eventually(Duration::from_secs(10), || async { as_partner(&stack, "demo-pro-key").await.status() == 200 })
            .await;
    assert!(back, "requests were still refused after Redis came back");
    assert!(redis_count(&redis, "demo-pro").await.is_some_and(|n| n >= 1));
}

#[tokio::test]
async fn a_bad_redis_url_is_reported_at_start_up() {
    let config = bff_core::config::load(
        &bff_core::config::ConfigSource { name: "partner.toml".into(), text: bff_demo::PARTNER_CONFIG.into() },
        bff_core::config::Overrides::default().set("redis.url", "redis://127.0.0.1:1", "BFF_REDIS__URL"),
    )
    .expect("the URL itself is well-formed");
    let error = bff_core::Gateway::builder(config).source("partner.toml").build().await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("redis.url") && message.contains("cannot connect"), "{message}");
}

#[tokio::test]
async fn two_replicas_leasing_a_users_limit_admit_it_exactly_between_them() {
    let Some(redis) = RedisServer::start().await else { return };
    let replica = || {
        mobile()
            .set("redis.url", &redis.url())
            .set("redis.lease", "1s")
            .set("rate_limits.per-user.key", "user")
            .set("rate_limits.per-user.rate", "40")
            .set("rate_limits.per-user.per", "1h")
            .set("rate_limits.per-user.routes", r#"["/mobile/home"]"#)
            .start()
    };
    let (one, two) = (replica().await, replica().await);
    let (mut passed, mut refused) = (0, 0);
    for _ in 0..30 {
        for stack in [&one, &two] {
            match as_user(stack, "42").await.status().as_u16() {
                200 => passed += 1,
                429 => refused += 1,
                other => panic!("status {other}"),
            }
        }
    }
    // A replica spends what it leased before it is refused, so the burst of 40 passes, no more;
    // a unit is missing only where a lease ended unspent (a stalled machine), and counted lost.
    let units = |result: &str, metrics: &str| {
        let series = format!("bff_redis_lease_units_total{{result=\"{result}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(series.as_str())?.parse::<f64>().ok()).unwrap_or(0.0)
    };
    let metrics = [one.admin_text("/metrics").await, two.admin_text("/metrics").await];
    let total = |result: &str| metrics.iter().map(|m| units(result, m)).sum::<f64>();
    assert_eq!(passed + total("lost") as usize, 40, "passed {passed}, refused {refused}");
    assert_eq!(passed + refused, 60);
    assert!(total("granted") > 0.0, "no unit was leased");

    // A lease is at most a second long: a longer one is refused at load, naming the key.
    let source = bff_core::config::ConfigSource { name: "mobile.toml".into(), text: bff_demo::MOBILE_CONFIG.into() };
    let mut overrides = bff_core::config::Overrides::default();
    overrides.set("redis.url", redis.url(), "test").set("redis.lease", "2s", "test");
    let error = bff_core::config::load(&source, &overrides).unwrap_err();
    assert_eq!(error.key.as_deref(), Some("redis.lease"));
    assert!(error.message.contains("at most 1s"), "{error}");
}

/// A BFF's routes, wrapped by a gateway.

#[tokio::test]
async fn limits_on_routes_they_cannot_apply_to_are_refused_at_start_up() {
    let cases = [
        ("rate_limits.x.routes", r#"["/mobile/nowhere"]"#, "user", "no route `/mobile/nowhere`"),
        // bff-partner's OpenAPI documents are public: there is no client to count them by.
        ("rate_limits.x.routes", r#"["/v2/openapi.json"]"#, "client", "is public"),
    ];
    for (key, routes, kind, expected) in cases {
        let (config, app): (&str, bff_core::cli::MakeApp) = if kind == "client" {
            (bff_demo::PARTNER_CONFIG, bff_partner::app)
        } else {
            (bff_demo::MOBILE_CONFIG, bff_mobile::app)
        };
        let mut overrides = bff_core::config::Overrides::default();
        overrides.set("rate_limits.x.key", kind, "test").set("rate_limits.x.rate", "1", "test");
        overrides.set("rate_limits.x.per", "1s", "test").set(key, routes, "test");
        let source = bff_core::config::ConfigSource { name: "test config".into(), text: config.into() };
        let config = bff_core::config::load(&source, &overrides).expect("loads");
        let gateway = bff_core::Gateway::builder(config).build().await.expect("builds");
        let error = app(&gateway).unwrap_err();
        assert_eq!(error.key.as_deref(), Some(key));
        assert!(error.message.contains(expected), "{error}");
    }
    // A key the BFF's credentials cannot give: named at load time.
    let mut overrides = bff_core::config::Overrides::default();
    overrides.set("rate_limits.x.key", "client", "test").set("rate_limits.x.rate", "1", "test");
    overrides.set("rate_limits.x.per", "1s", "test");
    let source = bff_core::config::ConfigSource { name: "mobile.toml".into(), text: bff_demo::MOBILE_CONFIG.into() };
    let error = bff_core::config::load(&source, &overrides).unwrap_err();
    assert_eq!(error.key.as_deref(), Some("rate_limits.x.key"));
    assert!(error.message.contains("api_keys"), "{error}");

    // A concurrency limit: the same checks, naming its own keys.
    let mut overrides = bff_core::config::Overrides::default();
    overrides.set("concurrency_limits.x.key", "user", "test").set("concurrency_limits.x.max_in_flight", "2", "test");
    overrides.set("concurrency_limits.x.routes", r#"["/mobile/nowhere"]"#, "test");
    let config = bff_core::config::load(&source, &overrides).expect("loads");
    let gateway = bff_core::Gateway::builder(config).build().await.expect("builds");
    let error = bff_mobile::app(&gateway).unwrap_err();
    assert_eq!(error.key.as_deref(), Some("concurrency_limits.x.routes"));
    assert!(error.message.contains("no route `/mobile/nowhere`"), "{error}");
    // The keys set (beside a valid `concurrency_limits.x`), the key named, what the message says.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let refused: [Case; 3] = [
        (&[("concurrency_limits.x.key", "client")], "concurrency_limits.x.key", "api_keys"),
        (&[("concurrency_limits.x.max_in_flight", "0")], "concurrency_limits.x.max_in_flight", "nonzero"),
        (
            &[("rate_limits.x.key", "ip"), ("rate_limits.x.rate", "1"), ("rate_limits.x.per", "1s")],
            "concurrency_limits.x",
            "`rate_limits.x` has this name too",
        ),
    ];
    for (set, named, expected) in refused {
        let mut overrides = bff_core::config::Overrides::default();
        overrides.set("concurrency_limits.x.key", "user", "test").set(
            "concurrency_limits.x.max_in_flight",
            "2",
            "test",
        );
        for &(key, value) in set {
            overrides.set(key, value, "test");
        }
        let error = bff_core::config::load(&source, &overrides).unwrap_err();
        assert_eq!(error.key.as_deref(), Some(named), "{set:?}: {error}");
        assert!(error.message.contains(expected), "{set:?}: {error}");
    }
}

#[tokio::test]
async fn limits_are_shared_over_tls_with_the_ca_configured() {
    let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bff-core/testdata/tls");
    let Some(redis) = RedisServer::start_tls(&tls.join("localhost.pem"), &tls.join("localhost.key")).await else {
        return;
    };
    assert!(redis.url().starts_with("rediss://"));
    let ca = tls.join("ca.pem");

    // The test CA is not in the platform's store: refused at start-up, naming the key.
    let mut overrides = bff_core::config::Overrides::default();
    overrides.set("redis.url", redis.url(), "test");
    let source = bff_core::config::ConfigSource { name: "partner.toml".into(), text: bff_demo::PARTNER_CONFIG.into() };
    let config = bff_core::config::load(&source, &overrides).expect("loads");
    let error = bff_core::Gateway::builder(config).build().await.unwrap_err().to_string();
    assert!(error.contains("redis.url") && error.contains("cannot connect"), "{error}");

    let stack = partner()
        .set("redis.url", &redis.url())
        .set("redis.tls_ca", ca.to_str().unwrap())
        .set("quotas.free.requests", "2")
        .start()
        .await;
    for _ in 0..2 {
        assert_eq!(as_partner(&stack, "demo-free-key").await.status(), 200);
    }
    problem(as_partner(&stack, "demo-free-key").await, 429, "QUOTA_EXCEEDED").await;
    // Counted in Redis, not in the process after a failure.
    let metrics = stack.admin_text("/metrics").await;
    let failures = metrics.lines().filter(|l| l.starts_with("bff_redis_errors_total") && !l.ends_with(" 0"));
    assert_eq!(failures.count(), 0, "{metrics}");
    assert!(metrics.contains("bff_redis_call_seconds"), "{metrics}");
}
