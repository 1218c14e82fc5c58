//! A reload keeps what it does not change: a client over its rate limit is still over it after a
//! reload that changed another key, and an open breaker stays open; a reload that changes the
//! limit itself starts its counts again. And under load, an upstream instance removed and put
//! back by reloads costs no request.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use bff_core::config::{ConfigSource, Overrides, load};
use bff_core::reload::{Load, Reloader};
use bff_core::serve::{ReloadableApp, Server};
use bff_core::testing::TestServer;
use services_mock::faults::Faults;
use services_mock::{MockConfig, Service};

const LIMIT: &str = "\n[rate_limits.per-ip]\nkey = \"ip\"\nrate = 2\nper = \"1h\"\nburst = 2\n";

/// Keys set over the file: the mocks' addresses, as the test changes them.
type Settings = Arc<Mutex<Vec<(String, String)>>>;

/// The text the next load reads, with `settings` over it.
fn loader(text: Arc<Mutex<String>>, settings: Settings) -> Load {
    Box::new(move || {
        let source = ConfigSource { name: "mobile.toml".to_owned(), text: text.lock().unwrap().clone() };
        let mut overrides = Overrides::default();
        for (key, value) in settings.lock().unwrap().iter() {
            overrides.set_existing(key.clone(), value.clone(), "mocks");
        }
        Ok((load(&source, &overrides)?, source.name))
    })
}

/// bff-mobile on its local-development config plus `extra`, over the mocks, with a reloader
/// that reads `text` again.
struct Mobile {
    mocks: services_mock::MockServices,
    text: Arc<Mutex<String>>,
    settings: Settings,
    bff: TestServer,
    reloader: Reloader,
    http: reqwest::Client,
    token: String,
}

impl Mobile {
    async fn start(extra: &str) -> Self {
        Self::over(&MockConfig::ephemeral(), extra).await
    }

    async fn over(mock_config: &MockConfig, extra: &str) -> Self {
        bff_core::install_crypto_provider();
        let mocks = services_mock::start(mock_config).await.expect("mocks");
        let text = Arc::new(Mutex::new(format!("{}{extra}", bff_demo::MOBILE_CONFIG)));
        let settings = Arc::new(Mutex::new(mocks.config_overrides()));
        let load = loader(text.clone(), settings.clone());
        let (config, source) = load().unwrap();
        let gateway = bff_core::Gateway::builder(config).source(source).build().await.unwrap();
        let router = ReloadableApp::new(bff_mobile::app(&gateway).unwrap());
        let bff = TestServer::serve(Server::new(&gateway.config().server), router.clone()).await;
        let reloader = Reloader::new(&gateway, bff_mobile::app, router, load);
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let token = mocks.token("42", "profile orders", 600);
        Self { mocks, text, settings, bff, reloader, http, token }
    }
}

#[tokio::test]
async fn a_reload_keeps_the_limit_counts_it_does_not_change() {
    let Mobile { mocks: _mocks, text, bff, reloader, http, token, .. } = Mobile::start(LIMIT).await;
    let home = || {
        let request = http.get(bff.url("/mobile/home")).bearer_auth(&token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!([home().await, home().await, home().await], [200, 200, 429]);

    // A change elsewhere: the count stands.
    text.lock().unwrap().push_str("\n[routes.\"/mobile/orders\"]\nmax_body_bytes = 1024\n");
    reloader.reload().await.unwrap();
    assert_eq!(home().await, 429, "the reload handed the client a fresh limit");

    // The limit itself changed: it counts again, from its new rule.
    let raised = text.lock().unwrap().replace("rate = 2\nper = \"1h\"\nburst = 2", "rate = 5\nper = \"1h\"\nburst = 5");
    *text.lock().unwrap() = raised;
    reloader.reload().await.unwrap();
    assert_eq!(home().await, 200);
}

#[tokio::test]
async fn a_reload_that_leaves_an_upstream_as_it_was_leaves_its_breaker_open() {
    // Open for an hour once open, so that only a reload could close it within the test.
    let breaker = "\n[upstreams.notifications.breaker]\nopen_for = \"1h\"\n";
    let Mobile { mocks, text, bff, reloader, http, token, .. } = Mobile::start(breaker).await;
    let badge = || {
        let request = http.get(bff.url("/mobile/home")).bearer_auth(&token);
        async move { request.send().await.unwrap().json::<serde_json::Value>().await.unwrap()["badge"].clone() }
    };
    let notifications = mocks.service(Service::Notifications);
    notifications.faults.set(Faults { error_rate: 1.0, ..Faults::default() });
    // Twenty failures in a row open it (`consecutive_failures`, by default).
    for _ in 0..20 {
        assert!(badge().await.is_null());
    }
    let calls = notifications.stats.snapshot().requests;
    assert!(badge().await.is_null());
    assert_eq!(notifications.stats.snapshot().requests, calls, "open: the badge degrades without a call");

    text.lock().unwrap().push_str("\n[routes.\"/mobile/orders\"]\nmax_body_bytes = 1024\n");
    reloader.reload().await.unwrap();
    assert!(badge().await.is_null());
    assert_eq!(notifications.stats.snapshot().requests, calls, "the reload closed the breaker");
}

/// What the listeners were opened with takes a restart; what each request reads reloads. A
/// reload that changes both applies the second and keeps the first as started: a `[tls]` whose
/// files do not exist is not even read, and the listener goes on in plain HTTP with the new
/// `allowed_hosts`. A deadline that only the new, kept-back idle timeout would allow is refused.
#[tokio::test]
async fn a_reload_applies_what_requests_read_and_keeps_what_the_listener_was_opened_with() {
    let Mobile { mocks: _mocks, text, bff, reloader, http, token, .. } = Mobile::start("").await;
    let home = |host: &'static str| {
        let request = http.get(bff.url("/mobile/home")).bearer_auth(&token).header("host", host);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(home("elsewhere.test").await, 200);
    let started = text.lock().unwrap().clone();

    let both = "\n[server]\nallowed_hosts = [\"bff.test\"]\nmax_connections = 7\n\
        [tls]\ncert = \"/nonexistent/bff.pem\"\nkey = \"/nonexistent/bff-key.pem\"\n";
    text.lock().unwrap().push_str(both);
    reloader.reload().await.expect("the TLS files are not read: `tls` is kept as started");
    assert_eq!(home("elsewhere.test").await, 421, "the new allowed_hosts");
    assert_eq!(home("bff.test").await, 200, "still plain HTTP");

    let longer = "\n[server]\nidle_timeout = \"2m\"\n[defaults]\ndeadline = \"90s\"\n";
    *text.lock().unwrap() = format!("{started}{longer}");
    let error = reloader.reload().await.expect_err("a deadline over the idle timeout in force").to_string();
    assert!(error.contains("server.idle_timeout") && error.contains("kept as started"), "{error}");
    assert_eq!(home("elsewhere.test").await, 421, "the refused reload changed nothing");
}

/// Issue 25, process faults under load: an upstream instance taken out of the config and put
/// back, each by a reload, while sixteen clients keep calling. No request fails; the removed
/// instance gets no call once the requests in flight on the old table have ended, and gets
/// calls again once it is back.
#[tokio::test]
async fn an_instance_removed_and_added_by_reloads_under_load_fails_no_request() {
    let mut two_users = MockConfig::ephemeral();
    two_users.instances.insert(Service::Users, 2);
    let Mobile { mocks, settings, bff, reloader, http, token, .. } = Mobile::over(&two_users, "").await;
    let [first, second] = mocks.instances(Service::Users) else { panic!("two users instances") };
    let users = |url: String| {
        let mut settings = settings.lock().unwrap();
        let entry = settings.iter_mut().find(|(key, _)| key == "upstreams.users.url").expect("the users instances");
        entry.1 = url;
    };
    let both = format!("[\"http://{}\", \"http://{}\"]", first.addr, second.addr);
    let first_url = format!("\"http://{}\"", first.addr);

    // Each client sends one request at a time and says when each ends: the test waits on that,
    // never on the clock.
    const CLIENTS: usize = 16;
    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<[AtomicU64; CLIENTS]> = Arc::new(std::array::from_fn(|_| AtomicU64::new(0)));
    let (ended, mut progress) = tokio::sync::watch::channel(());
    let ended = Arc::new(ended);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (http, url, token) = (http.clone(), bff.url("/mobile/home"), token.clone());
            let (stop, done, ended) = (stop.clone(), done.clone(), ended.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(Relaxed) {
                    match http.get(&url).bearer_auth(&token).send().await {
                        Ok(response) if response.status() == 200 => ok += 1,
                        Ok(response) => failed.push(response.status().to_string()),
                        Err(e) => failed.push(e.to_string()),
                    }
                    done[i].fetch_add(1, Relaxed);
                    ended.send_replace(());
                }
                (ok, failed)
            })
        })
        .collect();
    let (first, second) = (first.stats.clone(), second.stats.clone());
    let calls = |stats: &services_mock::stats::Stats| stats.snapshot().requests;
    let ended_requests = || done.iter().map(|n| n.load(Relaxed)).collect::<Vec<_>>();
    // Waits, as requests end, until `holds`; false after 30 s without it.
    let mut until = async |holds: &dyn Fn() -> bool| {
        let waited = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while !holds() {
                progress.changed().await.expect("clients run until stopped");
            }
        });
        waited.await.is_ok()
    };
    // Every client has ended a request begun after `marks` were taken (two more than then).
    let all_past = |marks: &[u64]| done.iter().zip(marks).all(|(n, mark)| n.load(Relaxed) >= mark + 2);

    // Both instances take calls; then the second is removed.
    assert!(until(&|| calls(&second) > 20).await, "the second instance never took calls");
    users(first_url);
    reloader.reload().await.unwrap();
    // Requests begun on the old table may still reach it; once every client has ended one begun
    // on the new table, none can.
    let marks = ended_requests();
    assert!(until(&|| all_past(&marks)).await, "the clients stopped");
    let removed_at = calls(&second);
    let from = calls(&first);
    assert!(until(&|| calls(&first) > from + 20).await, "the first instance stopped taking calls");
    assert_eq!(calls(&second), removed_at, "a call reached the removed instance");
    // Put back, it takes calls again.
    users(both);
    reloader.reload().await.unwrap();
    assert!(until(&|| calls(&second) > removed_at + 20).await, "the instance put back took no calls");
    stop.store(true, Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for client in clients {
        let (n, errors) = client.await.unwrap();
        ok += n;
        failed.extend(errors);
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests");
}
