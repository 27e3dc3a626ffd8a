//! The browser app is served by the server itself (issue #14): `GET /` is
//! its HTML and every script and style it names is served from
//! `/assets/`, all with the hardening headers and a Content-Security-Policy
//! that allows no inline script.

mod common;

use common::{TestServer, http};

/// The `src`/`href` values of `/assets/` files an HTML page names.
fn asset_paths(html: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for quote in html.split('"').skip(1).step_by(2) {
        if quote.starts_with("/assets/") {
            paths.push(quote.to_owned());
        }
    }
    paths
}

fn header<'a>(response: &'a common::HttpResponse, name: &str) -> &'a str {
    response
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("header {name} missing: {:?}", response.headers))
}

#[tokio::test]
async fn the_app_and_its_assets_are_served_with_a_strict_policy() {
    let server = TestServer::start(|_| {}).await;
    let page = http(server.addr, "GET", "/", "", &[]).await;
    assert_eq!(page.status, 200);
    assert!(header(&page, "content-type").starts_with("text/html"));
    assert_eq!(header(&page, "cache-control"), "no-cache");
    let csp = header(&page, "content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page, "referrer-policy"), "no-referrer");

    let html = String::from_utf8(page.body.to_vec()).expect("UTF-8 HTML");
    // Every script is a file: the policy would block an inline one.
    for script in html.split("<script").skip(1) {
        let tag = script.split('>').next().unwrap_or_default();
        assert!(
            tag.contains("src=\"/assets/"),
            "an inline script: <script{tag}>"
        );
    }
    let assets = asset_paths(&html);
    assert!(
        assets.iter().any(|p| p.ends_with(".js")),
        "the page loads its script: {html}"
    );
    for path in &assets {
        let asset = http(server.addr, "GET", path, "", &[]).await;
        assert_eq!(asset.status, 200, "{path}");
        let kind = header(&asset, "content-type");
        if path.ends_with(".js") {
            assert!(kind.contains("javascript"), "{path}: {kind}");
        } else if path.ends_with(".css") {
            assert!(kind.starts_with("text/css"), "{path}: {kind}");
        }
        assert!(
            header(&asset, "cache-control").contains("immutable"),
            "{path}: hashed names may be cached for good"
        );
        assert_eq!(header(&asset, "x-content-type-options"), "nosniff");
        assert!(!asset.body.is_empty(), "{path}");
    }

    let missing = http(server.addr, "GET", "/assets/nope.js", "", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");
    server.stop().await;
}
