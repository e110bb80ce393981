//! Wire compatibility with Algorithmia's official Python client (`algorithmia`
//! from PyPI, pinned in tests/python/requirements.txt and installed into
//! tests/.venv by scripts/test.sh).

use crate::support::*;
use reqwest::Method;
use std::process::Command;

fn python() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("WASMGRID_TEST_PYTHON") {
        return p.into();
    }
    let venv = repo_root().join("tests/.venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test.sh (it creates the venv with the algorithmia client), or set WASMGRID_TEST_PYTHON",
        venv.display()
    );
    venv
}

#[test]
fn algorithmia_python_client_works_unchanged() {
    let s = Server::start();
    s.deploy_ok("hello", "demo/hello@1.0.0", "");
    s.deploy_ok("json-stats", "demo/json-stats@1.0.0", "");
    // An ordinary key: the client sends it bare, which alone selects
    // Algorithmia's error convention.
    let v = json(
        s.req(Method::POST, "/v1/keys")
            .json(&serde_json::json!({
                "owner": "demo",
                "scopes": ["invoke", "data:read", "data:write"]
            }))
            .send()
            .unwrap(),
        201,
    );
    let key = v["key"].as_str().unwrap();
    let out = Command::new(python())
        .arg(repo_root().join("tests/python/algorithmia_client_test.py"))
        .args(["--url", &s.url, "--key", key, "--data"])
        .output()
        .expect("run the Python client test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "algorithmia client test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn algorithmia_convention_is_per_key() {
    let s = Server::start();
    s.deploy_ok("json-stats", "demo/json-stats@1.0.0", "");
    let v = json(
        s.req(Method::POST, "/v1/keys")
            .json(&serde_json::json!({"owner": "demo", "scopes": ["invoke"], "compat": "algorithmia"}))
            .send()
            .unwrap(),
        201,
    );
    let compat_key = v["key"].as_str().unwrap().to_string();
    let call = |key: &str| {
        s.http
            .post(format!("{}/v1/algo/demo/json-stats", s.url))
            .header("Authorization", key)
            .header("Content-Type", "application/json")
            .body("[]")
            .send()
            .unwrap()
    };
    let resp = call(&compat_key);
    assert_eq!(resp.headers()["x-wasmgrid-status"], "400");
    assert_error(resp, 200, "AlgorithmError", "need at least one number");
    // Other keys keep DESIGN.md's status codes when sent with a scheme.
    assert_error(
        call(&format!("Simple {}", s.key)),
        400,
        "AlgorithmError",
        "need at least one number",
    );
}
