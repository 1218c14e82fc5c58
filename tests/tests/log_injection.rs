//! Log lines: request-derived text never starts a log line, in either format; every line of a
//! request names its trace; a login URL any host could shape, and a trust of every peer as a
//! proxy, are warned of at start.
//!
//! A test binary of its own: `tracing` caches whether each log site is enabled, and a site first
//! reached by a concurrent test, before this test's scoped subscriber exists, could stay cached
//! as disabled for it.

mod common;

use bff_core::testing::RedisServer;
use common::StackBuilder;

fn mobile() -> StackBuilder {
    StackBuilder::new(bff_demo::MOBILE_CONFIG, bff_mobile::app)
}

/// Log lines written to memory.
#[derive(Clone, Default)]
struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

#[test]
fn a_line_break_in_a_path_parameter_never_starts_a_log_line() {
    use bff_core::config::LogFormat;
    for format in [LogFormat::Pretty, LogFormat::Json] {
        let lines = Lines::default();
        let filter = tracing_subscriber::EnvFilter::new("info");
        let subscriber = bff_core::observe::logging::subscriber(format, filter, lines.clone());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        tracing::subscriber::with_default(subscriber, || {
            runtime.block_on(async {
                let stack = mobile().start().await;
                for path in
                    ["/mobile/orders/1%0aFORGED%20line", "/mobile/orders/2%0d%0aFORGED", "/mobile/products/x%0aFORGED"]
                {
                    assert!(stack.get(path).await.status().is_client_error(), "{path}");
                }
            });
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("FORGED"), "{format:?}: the ids were not logged at all:\n{text}");
        // Not a terminal: no colour codes in the lines (they would litter a log file).
        assert!(!text.contains('\u{1b}'), "{format:?}: ANSI escapes in lines bound for a file:\n{text}");
        for line in text.lines() {
            assert!(!line.trim_start().starts_with("FORGED"), "{format:?}: a forged line:\n{text}");
        }
    }
}

#[test]
fn every_line_of_a_request_names_its_trace_and_span() {
    let lines = Lines::default();
    let filter = tracing_subscriber::EnvFilter::new("info");
    let subscriber = bff_core::observe::logging::subscriber(bff_core::config::LogFormat::Json, filter, lines.clone());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut token = String::new();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let limited =
                mobile().set("rate_limits.per-user", r#"{ key = "user", rate = 100, per = "1m", burst = 20 }"#);
            let stack = limited.start().await;
            let response = stack
                .http
                .get(stack.bff.url("/mobile/home"))
                .bearer_auth(stack.token())
                .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            // A request with no traceparent: its own new trace.
            assert_eq!(stack.get("/mobile/orders/4201").await.status(), 200);
            token = stack.token();
        });
    });
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let served: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "request served" || line["message"] == "request served")
        .collect();
    assert_eq!(served.len(), 2, "{text}");
    let span_of = |line: &serde_json::Value| (line["span"]["trace_id"].clone(), line["span"]["span_id"].clone());
    let (first_trace, first_span) = span_of(&served[0]);
    assert_eq!(first_trace, trace, "{}", served[0]);
    let span = first_span.as_str().unwrap_or_default();
    assert!(span.len() == 16 && span != "00f067aa0ba902b7", "the request's own span: {}", served[0]);
    // The verified caller and every upstream attempt, in the line; never the credential.
    let fields = |line: &serde_json::Value, name: &str| {
        line["fields"][name].as_str().or(line[name].as_str()).unwrap_or_default().to_owned()
    };
    assert_eq!(fields(&served[0], "caller"), "user:42", "{}", served[0]);
    // The latency in whole microseconds: `5.466`, never the float's tail (`5.466216999999999`).
    let latency = served[0].get("latency_ms").or(served[0]["fields"].get("latency_ms")).map(ToString::to_string);
    let latency = latency.unwrap_or_default();
    let decimals = latency.split_once('.').map_or(0, |(_, decimals)| decimals.len());
    assert!(latency.parse::<f64>().is_ok_and(|ms| ms > 0.0) && decimals <= 3, "{}", served[0]);
    let attempts = fields(&served[0], "attempts");
    let mut upstreams: Vec<&str> = attempts.split(',').map(|a| a.split(':').next().unwrap_or_default()).collect();
    upstreams.sort_unstable();
    assert_eq!(upstreams, ["notifications", "orders", "users"], "{attempts}");
    assert!(attempts.split(',').all(|a| a.split(':').nth(1) == Some("200")), "{attempts}");
    // What each limit left the caller: 19 of 20, then 18.
    assert!(fields(&served[0], "limits").starts_with(r#""per-user";r=19;t="#), "{}", served[0]);
    assert!(fields(&served[1], "limits").starts_with(r#""per-user";r=18;t="#), "{}", served[1]);
    assert!(!token.is_empty() && !text.contains(&token), "the bearer token was logged:\n{text}");
    let signature = token.rsplit('.').next().unwrap_or_default();
    assert!(!text.contains(signature), "part of the token was logged");
    let (second_trace, _) = span_of(&served[1]);
    let second_trace = second_trace.as_str().unwrap_or_default();
    assert!(second_trace.len() == 32 && second_trace != trace, "{}", served[1]);
}

#[test]
fn no_credential_reaches_a_log_line() {
    use bff_core::config::LogFormat;
    const PASSWORD: &str = "hunter2-redis-password";
    const COOKIE: &str = "s3cr3t-session-cookie";
    for format in [LogFormat::Pretty, LogFormat::Json] {
        let lines = Lines::default();
        let filter = tracing_subscriber::EnvFilter::new("debug");
        let subscriber = bff_core::observe::logging::subscriber(format, filter, lines.clone());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut token = String::new();
        let Some(mut redis) = runtime.block_on(RedisServer::start_with_password(PASSWORD)) else { return };
        tracing::subscriber::with_default(subscriber, || {
            runtime.block_on(async {
                // Partner keys, good and bad, with quotas counted in a Redis that requires a
                // password and then goes away (its errors are logged; the password must not be).
                let partner = StackBuilder::new(bff_demo::PARTNER_CONFIG, bff_partner::app)
                    .set("redis.url", &format!("\"{}\"", redis.url()))
                    .set("redis.timeout", "\"200ms\"")
                    .start()
                    .await;
                let url = partner.bff.url("/v1/orders?user=42");
                let answer = partner.http.get(url).header("x-api-key", "demo-pro-key").send().await.unwrap();
                assert_eq!(answer.status(), 200, "the quota is counted in the Redis with a password");
                redis.stop().await;
                for key in ["demo-pro-key", "demo-pro-kez"] {
                    let url = partner.bff.url("/v1/orders?user=42");
                    let _ = partner.http.get(url).header("x-api-key", key).header("cookie", COOKIE).send().await;
                }
                let mobile = mobile().start().await;
                token = mobile.token();
                let _ = mobile.get("/mobile/home").await;
                let bad = format!("{token}x");
                let _ = mobile.http.get(mobile.bff.url("/mobile/home")).bearer_auth(&bad).send().await;
            });
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("request served") && text.contains("request refused"), "{format:?}: {text}");
        assert!(text.contains("redis://:***@127.0.0.1"), "{format:?}: the Redis failure is logged, masked: {text}");
        let signature = token.rsplit('.').next().unwrap_or_default().to_owned();
        for secret in ["demo-pro-key", "demo-pro-kez", PASSWORD, COOKIE, &token, &signature] {
            assert!(!text.contains(secret), "{format:?}: `{secret}` was logged:\n{text}");
        }
    }
}

/// The warnings at start of `stack`'s BFF: the lines that have every one of `words`.
fn warned_at_start(stack: StackBuilder, words: &[&str]) -> usize {
    let lines = Lines::default();
    let filter = tracing_subscriber::EnvFilter::new("warn");
    let subscriber = bff_core::observe::logging::subscriber(bff_core::config::LogFormat::Json, filter, lines.clone());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            stack.start().await;
        });
    });
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    text.lines().filter(|line| words.iter().all(|word| line.contains(word))).count()
}

/// `server.trusted_proxies` naming every address (`0.0.0.0/0`, `::/0`) lets any client name its
/// own address to the `ip` limits and frees it from the per-address connection cap: said once at
/// start, naming the key and the network. A list of real proxies is not warned of.
#[test]
fn a_trust_of_every_peer_is_warned_of_at_start() {
    let words = ["server.trusted_proxies", "every peer", "max_connections_per_ip"];
    for everyone in ["0.0.0.0/0", "::/0"] {
        let stack = mobile().set("server.trusted_proxies", &format!(r#"["10.0.0.0/8", "{everyone}"]"#));
        assert_eq!(warned_at_start(stack, &[&words[..], &[everyone]].concat()), 1, "{everyone}");
    }
    let listed = mobile().set("server.trusted_proxies", r#"["10.0.0.0/8", "127.0.0.1", "fd00::/8"]"#);
    assert_eq!(warned_at_start(listed, &words), 0);
}

/// A BFF with browser sessions that would build the login's redirect URI from any host a request
/// names (no `oidc.redirect_uri`, no `server.allowed_hosts`) says so once, at start, naming both
/// keys; with either set, it does not.
#[test]
fn a_login_url_built_from_any_host_is_warned_of_at_start() {
    let warned = |stack: StackBuilder| warned_at_start(stack, &["oidc.redirect_uri", "server.allowed_hosts"]);
    let web = || StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app);
    assert_eq!(warned(web()), 1, "neither key set: one warning");
    assert_eq!(warned(web().set("server.allowed_hosts", r#"["127.0.0.1"]"#)), 0, "the hosts are listed");
    let fixed = web().set("oidc.redirect_uri", r#""http://127.0.0.1:9/bff/callback""#);
    assert_eq!(warned(fixed), 0, "the redirect URI is set");
}
