//! The web app in a real browser: headless Chromium, driven through chromedriver (WebDriver),
//! signs in at the mock OpenID Provider through bff-web, sees the user's page, marks the
//! notifications read and signs out. Skips with a message where Chromium is absent; fails under
//! `CI=true` (`.ci/run` installs `chromium` and `chromium-driver`).

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{StackBuilder, eventually};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use services_mock::data;

/// Long, so a loaded two-core machine cannot fail it; each wait ends as soon as its condition holds.
const WAIT: Duration = Duration::from_secs(30);

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |name| dir.join(name))).find(|p| p.is_file())
}

/// chromedriver on the port it picked, stopped when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn driver() -> Option<(Driver, PathBuf)> {
    let (Some(driver), Some(chromium)) =
        (find_binary(&["chromedriver"]), find_binary(&["chromium", "chromium-browser", "google-chrome"]))
    else {
        let message = "Chromium is not installed: `apt-get install chromium chromium-driver` (Debian), then run \
                       the tests again; CI installs them (.ci/run)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("skipping the browser test: {message}");
        return None;
    };
    bff_core::install_crypto_provider();
    // Port 0, and the port it says it took: a port picked beforehand may be taken meanwhile.
    let mut child = tokio::process::Command::new(driver)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let stdout = child.stdout.take().expect("chromedriver's stdout");
    let port = tokio::time::timeout(WAIT, announced_port(stdout))
        .await
        .unwrap_or_else(|_| panic!("chromedriver said no port within {WAIT:?}"))
        .unwrap_or_else(|said| panic!("chromedriver exited before it listened; it said:\n{said}"));
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let status = format!("{url}/status");
    let ready = eventually(WAIT, || {
        let request = http.get(&status).send();
        async move {
            match request.await {
                Ok(response) => response.json::<serde_json::Value>().await.is_ok_and(|s| s["value"]["ready"] == true),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(ready, "chromedriver did not become ready on {url}");
    Some((Driver { child, url }, chromium))
}

/// The port in chromedriver's `ChromeDriver was started successfully on port N.`, read from its
/// output, which is then drained so that it never blocks on a full pipe; what it said when it
/// ends without that line.
async fn announced_port(stdout: tokio::process::ChildStdout) -> Result<u16, String> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut said = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let port = line.strip_prefix("ChromeDriver was started successfully on port ");
        if let Some(port) = port.and_then(|p| p.trim_end_matches('.').parse().ok()) {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(port);
        }
        said.push_str(&line);
        said.push('\n');
    }
    Err(said)
}

async fn browser(driver: &Driver, chromium: &std::path::Path) -> Client {
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            // No background traffic: this machine's closed network refuses it, many at a time.
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-quic",
            ],
        }
    });
    let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(capabilities).connect(&driver.url).await.expect("a browser session")
}

/// Waits until the element `css` is shown, and returns it. It is looked up again at each try:
/// right after a click that navigates, the one found may be the old page's, which goes stale.
async fn shown(client: &Client, css: &str) -> fantoccini::elements::Element {
    let found = std::sync::Mutex::new(None);
    let displayed = eventually(WAIT, || async {
        match client.find(Locator::Css(css)).await {
            Ok(element) if element.is_displayed().await.unwrap_or(false) => {
                *found.lock().unwrap() = Some(element);
                true
            }
            _ => false,
        }
    })
    .await;
    if let (true, Some(element)) = (displayed, found.lock().unwrap().take()) {
        return element;
    }
    // What the page shows instead.
    let url = client.current_url().await.map(|u| u.to_string()).unwrap_or_else(|e| e.to_string());
    let error = match client.find(Locator::Css("#error")).await {
        Ok(error) => error.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    let body = match client.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    panic!("{css} is not shown; the page is {url}, #error reads {error:?}, the body reads {body:?}");
}

async fn text_becomes(client: &Client, css: &str, expected: &str) {
    let held = eventually(WAIT, || async move {
        match client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.is_ok_and(|t| t == expected),
            Err(_) => false,
        }
    })
    .await;
    let now = match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    assert!(held, "{css} reads {now:?}, not {expected:?}");
}

#[tokio::test]
async fn a_user_signs_in_sees_their_page_marks_all_read_and_signs_out_in_chromium() {
    let Some((driver, chromium)) = driver().await else { return };
    let stack = StackBuilder::new(bff_demo::WEB_CONFIG, bff_web::app).start().await;
    let client = browser(&driver, &chromium).await;
    let result = run(&client, &stack).await;
    let _ = client.close().await;
    result.unwrap();
}

async fn run(client: &Client, stack: &common::Stack) -> Result<(), fantoccini::error::CmdError> {
    client.goto(&stack.bff.url("/")).await?;
    shown(client, "#sign-in").await.click().await?;
    // The provider's login page: choose user 42.
    shown(client, "#user-42").await.click().await?;
    // Back on the page, signed in.
    shown(client, "#home").await;
    let profile = data::user(42);
    let name = profile["displayName"].as_str().unwrap();
    text_becomes(client, "#user-name", name).await;
    let orders = client.find_all(Locator::Css("#orders > li.order")).await?;
    assert_eq!(orders.len(), data::orders(42, bff_web::LATEST).len());
    let first = &data::orders(42, bff_web::LATEST)[0];
    let first_text = orders[0].text().await?;
    assert!(first_text.contains(&format!("Order #{}", first["id"])), "{first_text}");
    let lines = orders[0].find_all(Locator::Css(".lines li")).await?;
    assert_eq!(lines.len(), first["items"].as_array().unwrap().len());
    text_becomes(client, "#badge", &data::unread_count(42).to_string()).await;
    assert!(data::unread_count(42) > 0);
    // The cookie, as the browser keeps it.
    let cookie = client.get_named_cookie("__Host-bff-session").await?;
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Lax)");
    assert_eq!(cookie.path(), Some("/"));
    assert!(cookie.domain().is_none_or(|d| !d.starts_with('.')), "host-only: {:?}", cookie.domain());
    // No script can read it.
    let visible = client.execute("return document.cookie", vec![]).await?;
    assert!(!visible.as_str().unwrap_or_default().contains("bff-session"), "{visible}");
    let shot = client.screenshot().await?;
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/browser-signed-in.png");
    std::fs::write(&target, shot).expect("the screenshot is written");

    shown(client, "#mark-read").await.click().await?;
    text_becomes(client, "#badge", "0").await;
    assert!(client.find_all(Locator::Css(".notification.unread")).await?.is_empty());

    shown(client, "#sign-out button").await.click().await?;
    // Through the provider's end-session endpoint and back: signed out.
    shown(client, "#welcome").await;
    shown(client, "#sign-in").await;
    assert!(client.get_named_cookie("__Host-bff-session").await.is_err(), "the cookie is gone");
    Ok(())
}
