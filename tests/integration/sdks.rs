//! Python and JavaScript algorithms (sdk/python, sdk/js), built from source by
//! tests/sdk/build_sdk_examples.sh (scripts/test.sh runs it first).

use crate::support::*;
use reqwest::Method;

fn component(path: &str) -> Vec<u8> {
    let p = repo_root().join(path);
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run tests/sdk/build_sdk_examples.sh (scripts/test.sh does)",
            p.display()
        )
    })
}

fn deploy_bytes(s: &Server, bytes: Vec<u8>, target: &str) -> serde_json::Value {
    let (path, version) = target.split_once('@').unwrap();
    json(
        s.req(
            Method::PUT,
            &format!("/v1/algorithms/{path}/versions/{version}?memory=128"),
        )
        .body(bytes)
        .send()
        .unwrap(),
        201,
    )
}

#[test]
fn python_and_javascript_algorithms_run_and_stay_precompiled() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(tmp.path(), &[]);
    // Both deploys compile (seconds each: ~19 MB and ~12 MB components).
    let py = std::thread::scope(|scope| {
        let js = scope.spawn(|| {
            deploy_bytes(
                &s,
                component("guest-examples/js-transform/out/js_transform.wasm"),
                "demo/transform@1.0.0",
            )
        });
        let py = deploy_bytes(
            &s,
            component("guest-examples/python-wordcount/out/python_wordcount.wasm"),
            "demo/wordcount@1.0.0",
        );
        assert_eq!(js.join().unwrap()["kind"], "algorithm");
        py
    });
    assert_eq!(py["kind"], "algorithm");

    let check = |s: &Server| {
        let v = json(
            s.call(
                "demo/wordcount",
                "text/plain",
                "The cat saw the other cat. The end",
            ),
            200,
        );
        assert_eq!(v["metadata"]["content_type"], "json");
        assert_eq!(v["result"]["words"], 8);
        assert_eq!(v["result"]["unique"], 5);
        // Most frequent first, as the algorithm wrote it.
        let order: Vec<&str> = v["result"]["counts"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(order, ["the", "cat", "end", "other", "saw"]);
        assert_error(
            s.call(
                "demo/wordcount",
                "application/octet-stream",
                vec![0xffu8, 0x00],
            ),
            400,
            "AlgorithmError",
            "",
        );

        let v = json(
            s.call(
                "demo/transform",
                "application/json",
                r#"{"name": "ada", "tags": ["x", "y"], "n": 1}"#,
            ),
            200,
        );
        assert_eq!(v["result"]["name"], "ADA");
        assert_eq!(v["result"]["tags"], serde_json::json!(["X", "Y"]));
        assert_eq!(v["result"]["n"], 1);
        assert_eq!(v["result"]["_transform"]["strings"], 3);
        assert_error(
            s.call("demo/transform", "text/plain", "not json"),
            400,
            "AlgorithmError",
            "",
        );
    };
    check(&s);
    assert!(s.terminate().success());

    // After a restart they load precompiled: no compilation at all.
    let s = Server::start_in(tmp.path(), &[]);
    check(&s);
    let metrics = s
        .req(Method::GET, "/metrics")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "wasmgrid_component_compilations 0"),
        "{metrics}"
    );
}
