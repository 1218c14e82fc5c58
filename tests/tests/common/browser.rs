//! A browser's part in a login at bff-web through the mock OpenID Provider: redirects followed by
//! hand, cookies kept by hand.

use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};

/// The browser session's cookie.
pub const SESSION: &str = "__Host-bff-session";
/// The cookie of a login under way.
pub const LOGIN: &str = "__Host-bff-login";

/// A client that follows no redirect: the test follows them as a browser would.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The value of the cookie `name` a response sets, and the whole `Set-Cookie` line.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response.headers().get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
        let value = line.strip_prefix(&format!("{name}="))?.split(';').next()?.to_owned();
        Some((value, line.to_owned()))
    })
}

/// Where `response` redirects to.
pub fn location(response: &reqwest::Response) -> String {
    response.headers()[LOCATION].to_str().unwrap().to_owned()
}

/// A login begun at `base`: the provider's callback URL (with `code` and `state`) and the
/// login cookie, as a browser holds them before it follows the callback.
pub async fn begin(http: &reqwest::Client, base: &str, return_url: &str, user: u64) -> (String, String) {
    let url = format!("{base}/bff/login?returnUrl={return_url}&login_hint={user}");
    let started = http.get(url).send().await.unwrap();
    assert_eq!(started.status(), StatusCode::FOUND);
    let (login, line) = set_cookie(&started, LOGIN).expect("a login cookie");
    assert!(line.contains("HttpOnly") && line.contains("Secure") && line.contains("SameSite=Lax"), "{line}");
    let at_provider = http.get(location(&started)).send().await.unwrap();
    assert_eq!(at_provider.status(), StatusCode::FOUND, "{:?}", at_provider.text().await);
    let callback = location(&at_provider);
    assert!(callback.starts_with(&format!("{base}/bff/callback?")), "{callback}");
    (callback, login)
}

/// Signs `user` in at `base` and returns the session cookie's value.
pub async fn sign_in(http: &reqwest::Client, base: &str, user: u64) -> String {
    let (callback, login) = begin(http, base, "/web/home", user).await;
    let finished = http.get(callback).header(reqwest::header::COOKIE, format!("{LOGIN}={login}")).send().await.unwrap();
    assert_eq!(finished.status(), StatusCode::FOUND, "{:?}", finished.text().await);
    assert_eq!(location(&finished), "/web/home");
    let (session, line) = set_cookie(&finished, SESSION).expect("a session cookie");
    for flag in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(line.contains(flag), "{flag} in {line}");
    }
    assert!(!line.contains("Domain"), "a __Host- cookie has no Domain: {line}");
    assert!(session.len() >= 22, "at least 128 bits: {session}");
    let (_, cleared) = set_cookie(&finished, LOGIN).expect("the login cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    session
}
