//! Authentication and authorisation.

use crate::support::*;
use reqwest::Method;

fn create_key(s: &Server, owner: &str, scopes: &[&str]) -> (String, String) {
    let v = json(
        s.req(Method::POST, "/v1/keys")
            .json(&serde_json::json!({"owner": owner, "scopes": scopes}))
            .send()
            .unwrap(),
        201,
    );
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

#[test]
fn keys_scopes_and_owners() {
    let s = Server::start();
    s.deploy_ok("hello", "demo/hello@1.0.0", "");
    let url = format!("{}/v1/algo/demo/hello", s.url);
    let call = |auth: Option<String>| {
        let mut r = s
            .http
            .post(&url)
            .header("Content-Type", "text/plain")
            .body("x");
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r.send().unwrap()
    };
    assert_error(call(None), 401, "AuthError", "missing API key");
    assert_error(
        call(Some("Simple wg_nope_nope".into())),
        401,
        "AuthError",
        "unknown or revoked",
    );

    let (id, invoker) = create_key(&s, "demo", &["invoke"]);
    // All three header forms are accepted.
    for form in [
        format!("Simple {invoker}"),
        format!("Bearer {invoker}"),
        invoker.clone(),
    ] {
        assert_eq!(call(Some(form)).status(), 200);
    }
    // Lacking the scope: 403; another owner's algorithm reads as a missing one.
    let deploy = s
        .http
        .put(format!("{}/v1/algorithms/demo/hello/versions/2.0.0", s.url))
        .header("Authorization", &invoker)
        .body(guest("hello"))
        .send()
        .unwrap();
    assert_error(deploy, 403, "AuthError", "lacks the `deploy` scope");
    let (_, other) = create_key(&s, "mallory", &["invoke", "deploy"]);
    assert_error(
        call(Some(other.clone())),
        404,
        "NotFound",
        "algorithm demo/hello not found",
    );
    let keys = s
        .http
        .post(format!("{}/v1/keys", s.url))
        .header("Authorization", &other)
        .body("{}")
        .send()
        .unwrap();
    assert_error(keys, 403, "AuthError", "admin");
    // Revocation takes effect at once.
    assert_eq!(
        s.req(Method::DELETE, &format!("/v1/keys/{id}"))
            .send()
            .unwrap()
            .status(),
        204
    );
    assert_error(call(Some(invoker)), 401, "AuthError", "unknown or revoked");
    assert_error(
        s.req(Method::DELETE, &format!("/v1/keys/{id}"))
            .send()
            .unwrap(),
        404,
        "NotFound",
        "not found",
    );
    // Bad key requests.
    let bad = s
        .req(Method::POST, "/v1/keys")
        .json(&serde_json::json!({"owner": "demo", "scopes": ["root"]}))
        .send()
        .unwrap();
    assert_error(bad, 400, "InputError", "unknown scope \"root\"");
    // Health endpoints need no key; metrics need an admin key.
    assert_eq!(
        s.http
            .get(format!("{}/healthz", s.url))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        s.http
            .get(format!("{}/readyz", s.url))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        s.http
            .get(format!("{}/metrics", s.url))
            .send()
            .unwrap()
            .status(),
        401
    );
}

#[test]
fn admin_key_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let s = Server::start();
    let meta = std::fs::metadata(s.data_dir.join("admin.key")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(s.data_dir.join("admin.key")).unwrap();
    assert_eq!(text.lines().count(), 1);
}
