//! Start-up checks of `[[proxy]]`: each refusal names the key and the routes at fault.

use super::*;
use crate::observe::metrics::Metrics;

const BASE: &str = r#"
listen = "127.0.0.1:0"
[upstreams.catalog]
url = "http://127.0.0.1:9"
"#;

fn proxies(routes: &str) -> Result<Proxies, KeyError> {
    let config: Config = toml::from_str(&format!("{BASE}\n{routes}")).expect("the test config parses");
    let upstreams = Upstreams::from_config(&config, &Metrics::new()).unwrap();
    Proxies::new(&config, &upstreams)
}

fn refused(routes: &str) -> (String, String) {
    proxies(routes).expect_err("refused")
}

#[test]
fn good_routes_compile_each_with_its_name_and_access() {
    let proxies = proxies(
        r#"
        [[proxy]]
        path = "/api/catalog/products/{*rest}"
        methods = ["GET", "HEAD"]
        upstream = "catalog"
        rewrite = "/products/{rest}"
        access = "public"
        [[proxy]]
        path = "/api/catalog/products/{*tail}"
        methods = ["PUT"]
        upstream = "catalog"
        access = "public"
        [[proxy]]
        path = "/legacy/*"
        upstream = "catalog"
        access = "scope:profile"
        "#,
    )
    .unwrap();
    // Each named by its path as written, with its own access.
    let mut names: Vec<(&str, bool)> = proxies.policies().map(|r| (&*r.pattern, r.access.is_public())).collect();
    names.sort();
    let expected =
        [("/api/catalog/products/{*rest}", true), ("/api/catalog/products/{*tail}", true), ("/legacy/*", false)];
    assert_eq!(names, expected);
    // One router entry per path shape, and the methods of its routes together (CORS preflights).
    let mut methods = proxies.methods();
    methods.sort();
    assert_eq!(methods[0], ("/api/catalog/products/{*p3}".to_owned(), vec![Method::GET, Method::HEAD, Method::PUT]));
    assert_eq!(methods[1].0, "/legacy");
    assert_eq!(methods[2].0, "/legacy/{*__proxy_rest}");
    assert_eq!(methods[2].1.len(), ANY.len());
}

#[test]
fn each_bad_key_is_named() {
    let route = |extra: &str| {
        format!("[[proxy]]\npath = \"/api/x/{{id}}\"\nupstream = \"catalog\"\naccess = \"public\"\n{extra}")
    };
    for (extra, key, says) in [
        ("rewrite = \"/x/{sku}\"", "proxy[0].rewrite", "`{sku}` is not a parameter of `/api/x/{id}`"),
        ("methods = [\"get\"]", "proxy[0].methods", "`get` is not one of GET, HEAD"),
        ("host = \"bad host\"", "proxy[0].host", "is not a host name"),
        ("timeout = \"0s\"", "proxy[0].timeout", "greater than zero"),
        ("max_in_flight = 0", "proxy[0].max_in_flight", "at least 1"),
        ("max_in_flight = 4611686018427387904", "proxy[0].max_in_flight", "at most"),
        (
            "request_headers = { set = { \"x-user-id\" = \"1\" } }",
            "proxy[0].request_headers.set.x-user-id",
            "set by the gateway",
        ),
        ("response_headers = { remove = [\"bad header\"] }", "proxy[0].response_headers.remove", "not a header name"),
    ] {
        let (k, message) = refused(&route(extra));
        assert_eq!(k, key, "{extra}: {message}");
        assert!(message.contains(says), "{extra}: {message}");
    }
    let (key, message) = refused("[[proxy]]\npath = \"/x\"\nupstream = \"catalogue\"\naccess = \"public\"");
    assert_eq!((key.as_str(), message.as_str()), ("proxy[0].upstream", "there is no `[upstreams.catalogue]`"));
    let (key, message) =
        refused("[[proxy]]\npath = \"/x\"\nupstream = { catalog = 9, canary = 1 }\naccess = \"public\"");
    assert_eq!((key.as_str(), message.as_str()), ("proxy[0].upstream", "there is no `[upstreams.canary]`"));
    let (key, message) = refused("[[proxy]]\npath = \"/x\"\nupstream = { catalog = 0 }\naccess = \"public\"");
    assert_eq!(key, "proxy[0].upstream");
    assert!(message.contains("weight above zero"), "{message}");
    let (key, message) = refused(
        "[[proxy]]\npath = \"/x\"\nupstream = \"catalog\"\naccess = \"public\"\nmatch_header = { \"a b\" = \"1\" }",
    );
    assert_eq!(key, "proxy[0].match_header.a b", "{message}");
    let (key, message) = refused("[[proxy]]\npath = \"x\"\nupstream = \"catalog\"\naccess = \"public\"");
    assert_eq!(key, "proxy[0].path", "{message}");
    let (key, message) = refused("[[proxy]]\npath = \"/x\"\nupstream = \"catalog\"\naccess = \"scopes\"");
    assert_eq!(key, "proxy[0].access");
    assert!(message.contains("`public`, `authenticated` or `scope:<name>`"), "{message}");
}

/// A route whose `host` no `server.allowed_hosts` entry takes could never be reached: refused,
/// naming both keys. One that some allowed host reaches is kept.
#[test]
fn a_route_for_a_host_the_bff_does_not_serve_is_refused() {
    let routes = |allowed: &str, host: &str| {
        format!(
            "[server]\nallowed_hosts = {allowed}\n[[proxy]]\npath = \"/x\"\nupstream = \"catalog\"\n\
             access = \"public\"\nhost = \"{host}\""
        )
    };
    for (allowed, host) in [
        (r#"["api.example.com"]"#, "web.example.com"),
        (r#"["api.example.com"]"#, "*.example.org"),
        (r#"["*.example.com"]"#, "example.com"),
        (r#"["*.example.com"]"#, "*.example.org"),
    ] {
        let (key, message) = refused(&routes(allowed, host));
        assert_eq!(key, "proxy[0].host", "{allowed} {host}: {message}");
        assert!(message.contains(host) && message.contains("server.allowed_hosts"), "{message}");
    }
    for (allowed, host) in [
        (r#"["API.example.com"]"#, "api.example.com"),
        (r#"["api.example.com"]"#, "*.example.com"),
        (r#"["*.example.com"]"#, "api.example.com"),
        (r#"["*.example.com"]"#, "*.example.com"),
        ("[]", "anything.example"),
    ] {
        assert!(proxies(&routes(allowed, host)).is_ok(), "{allowed} {host}");
    }
}

/// One `[[proxy]]` entry to the catalog.
fn entry(path: &str, access: &str, extra: &str) -> String {
    format!("[[proxy]]\npath = \"{path}\"\nupstream = \"catalog\"\naccess = \"{access}\"\n{extra}\n")
}

#[test]
fn routes_no_request_can_tell_apart_are_refused_naming_both() {
    let files = entry("/files/{id}", "public", "");
    let (key, message) = refused(&(files.clone() + &entry("/files/{name}", "public", "methods = [\"GET\"]")));
    assert_eq!(key, "proxy[1]");
    assert!(
        message.contains("`/files/{id}` (proxy[0])") && message.contains("`/files/{name}` (proxy[1])"),
        "{message}"
    );
    // Told apart by host: fine, each with its own access.
    let admin = entry("/files/{id}", "authenticated", "host = \"admin.example.com\"");
    let proxies = proxies(&(files.clone() + &admin)).unwrap();
    assert_eq!(proxies.policies().filter(|r| r.access.is_public()).count(), 1);
    // Paths the router cannot hold side by side.
    let (key, message) =
        refused(&(files + &entry("/files/{id}/{*rest}", "public", "") + &entry("/files/*", "public", "")));
    assert_eq!(key, "proxy[2].path", "{message}");
    assert!(
        message.contains("`/files/*` (proxy[2])") && message.contains("`/files/{id}/{*rest}` (proxy[1])"),
        "{message}"
    );
}

#[test]
fn a_route_over_a_handlers_paths_is_refused_naming_both() {
    let proxies = proxies("[[proxy]]\npath = \"/mobile/*\"\nupstream = \"catalog\"\naccess = \"public\"").unwrap();
    let (key, message) = proxies.check_handlers(["/healthz", "/mobile/orders/{id}"]).unwrap_err();
    assert_eq!(key, "proxy[0].path");
    assert!(message.contains("`/mobile/orders/{id}`") && message.contains("`/mobile/orders/x`"), "{message}");
    assert!(proxies.check_handlers(["/healthz", "/web/home"]).is_ok());
    let root = self::proxies("[[proxy]]\npath = \"/*\"\nupstream = \"catalog\"\naccess = \"public\"").unwrap();
    assert!(root.check_handlers(["/healthz"]).unwrap_err().1.contains("`/healthz`"));
}

#[test]
fn a_path_whose_dot_dots_climb_out_of_its_route_is_refused() {
    let proxies = proxies(
        r#"
        [[proxy]]
        path = "/api/catalog/products/{*rest}"
        upstream = "catalog"
        access = "public"
        [[proxy]]
        path = "/api/catalog/files/{bytes}"
        upstream = "catalog"
        access = "public"
        [[proxy]]
        path = "/legacy/*"
        upstream = "catalog"
        access = "public"
        "#,
    )
    .unwrap();
    // (as written, as the edge resolved it, the route it would have taken if refused)
    let cases = [
        ("/api/catalog/products/../../../_stats", "/_stats", Some("/api/catalog/products/{*rest}")),
        ("/api/catalog/products/../files/1", "/api/catalog/files/1", Some("/api/catalog/products/{*rest}")),
        ("/api/catalog/files/..", "/api/catalog/", Some("/api/catalog/files/{bytes}")),
        ("/legacy/a/../../x", "/x", Some("/legacy/*")),
        ("/legacy/..", "/", Some("/legacy/*")),
        // Within the route's root: routed as resolved.
        ("/api/catalog/products/a/../SKU-1", "/api/catalog/products/SKU-1", None),
        ("/legacy/a/../b", "/legacy/b", None),
        ("/legacy/a/..", "/legacy/", None),
        // Written for no route: routed as resolved.
        ("/x/../legacy/a", "/legacy/a", None),
    ];
    for (written, resolved, refused_for) in cases {
        let mut request = Request::builder().uri(resolved).body(axum::body::Body::empty()).unwrap();
        request.extensions_mut().insert(PathWithDots(written.into()));
        match (proxies.route(&mut request), refused_for) {
            (Routed::Answered(response, route), Some(pattern)) => {
                assert_eq!(response.status(), axum::http::StatusCode::BAD_REQUEST, "{written}");
                assert_eq!(&*route.pattern, pattern, "{written}");
            }
            (Routed::Answered(response, _), None) => panic!("{written} refused: {}", response.status()),
            (_, Some(_)) => panic!("{written} was not refused"),
            (_, None) => {}
        }
    }
}
