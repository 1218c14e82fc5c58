//! The one command of the README: `bff-demo` starts the mocks and the three BFFs, and every
//! `curl` line it prints works as printed.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

#[tokio::test]
async fn every_printed_try_line_answers_200() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bff-demo"))
        .args(["--any-port", "--log-format", "json"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("bff-demo starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = async {
        let mut tries = Vec::new();
        let mut page = None;
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(rest) = line.split_once("The web app: open ").map(|(_, rest)| rest) {
                page = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(command) = line.trim().strip_prefix("curl -s -H '") {
                let (header, rest) = command.split_once("' '").expect("a header, then the URL");
                tries.push((header.to_owned(), rest.trim_end_matches('\'').to_owned()));
            }
            if line.contains("Ctrl-C stops everything") {
                return (tries, page.expect("the web app's URL is printed"));
            }
        }
        panic!("bff-demo exited before it printed what to try");
    };
    let (tries, page) = tokio::time::timeout(Duration::from_secs(60), banner).await.expect("the banner within 60 s");
    // Keep reading: a full pipe would block the demo's log writer.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let urls: Vec<&str> = tries.iter().map(|(_, url)| url.as_str()).collect();
    let ends = ["/web/home", "/mobile/home", "/v2/orders?user=42"];
    assert!(urls.len() == 3 && urls.iter().zip(ends).all(|(url, end)| url.ends_with(end)), "{urls:?}");
    bff_core::install_crypto_provider();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for (header, url) in &tries {
        let (name, value) = header.split_once(": ").unwrap();
        let response = http.get(url).header(name, value).send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{url} as printed: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"));
        assert!(json.is_object(), "{url}: {body}");
    }
    // The web app's page, and a login through the mock provider back to this BFF's callback.
    let page_answer = http.get(&page).send().await.unwrap();
    assert_eq!(page_answer.status(), 200, "{page}");
    assert!(page_answer.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let browser = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = browser.get(format!("{page}bff/login?returnUrl=/&login_hint=42")).send().await.unwrap();
    assert_eq!(login.status(), 302, "{page}bff/login");
    let at_provider = browser.get(login.headers()["location"].to_str().unwrap()).send().await.unwrap();
    let back = at_provider.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
    assert!(back.as_deref().is_some_and(|b| b.starts_with(&format!("{page}bff/callback?code="))), "{back:?}");
}
