//! Batch jobs: folders of files through an algorithm, error thresholds,
//! retries, mini-batches, cancel, and resuming after a crash.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Uploads files (`path` under `/v1/data/`, content type, body) with a few
/// client threads, so their commits share fsyncs.
fn upload(s: &Server, files: &[(String, &str, Vec<u8>)]) {
    std::thread::scope(|scope| {
        for chunk in files.chunks(files.len().div_ceil(4).max(1)) {
            scope.spawn(move || {
                for (path, ct, body) in chunk {
                    let r = s
                        .req(Method::PUT, &format!("/v1/data/{path}"))
                        .header("Content-Type", *ct)
                        .body(body.clone())
                        .send()
                        .expect("upload");
                    assert_eq!(r.status(), 200, "upload {path}");
                }
            });
        }
    });
}

/// Submits a job for `algo` (`owner/name[/version]`) and checks the 202 answer.
fn submit(s: &Server, algo: &str, body: Value) -> Value {
    let r = s
        .req(Method::POST, &format!("/v1/algo/{algo}/jobs"))
        .json(&body)
        .send()
        .expect("submit");
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let job = json(r, 202);
    let id = job["id"].as_str().expect("job id");
    assert_eq!(location.as_deref(), Some(format!("/v1/jobs/{id}").as_str()));
    assert_eq!(job["links"]["self"], format!("/v1/jobs/{id}"));
    assert!(
        matches!(job["status"].as_str(), Some("Queued")),
        "a new job is Queued: {job}"
    );
    job
}

fn job(s: &Server, id: &str) -> Value {
    json(
        s.req(Method::GET, &format!("/v1/jobs/{id}"))
            .send()
            .unwrap(),
        200,
    )
}

/// Polls until `done` holds for the job (or fails after `limit`).
fn poll(s: &Server, id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let j = job(s, id);
        if done(&j) {
            return j;
        }
        assert!(
            started.elapsed() < limit,
            "job {id} not there after {limit:?}: {j}\nserver log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ended(j: &Value) -> bool {
    matches!(
        j["status"].as_str(),
        Some("Completed" | "Failed" | "Canceled")
    )
}

fn wait_end(s: &Server, id: &str) -> Value {
    poll(s, id, Duration::from_secs(120), ended)
}

fn counts(j: &Value) -> (u64, u64, u64, u64) {
    let c = &j["counts"];
    (
        c["total"].as_u64().unwrap(),
        c["succeeded"].as_u64().unwrap(),
        c["failed"].as_u64().unwrap(),
        c["pending"].as_u64().unwrap(),
    )
}

/// Every finished file of a job: input URI → its record.
fn files(s: &Server, id: &str) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    let mut marker: Option<String> = None;
    loop {
        let mut path = format!("/v1/jobs/{id}/files?limit=200");
        if let Some(m) = &marker {
            path.push_str(&format!("&marker={m}"));
        }
        let page = json(s.req(Method::GET, &path).send().unwrap(), 200);
        for f in page["files"].as_array().unwrap() {
            out.insert(f["file"].as_str().unwrap().to_string(), f.clone());
        }
        match page["marker"].as_str() {
            Some(m) => marker = Some(m.to_string()),
            None => return out,
        }
    }
}

/// One level of a data folder: file name → (etag, last_modified).
fn listing(s: &Server, folder: &str) -> HashMap<String, (String, String)> {
    let mut out = HashMap::new();
    let mut marker: Option<String> = None;
    loop {
        let mut path = format!("/v1/data/{folder}?limit=1000");
        if let Some(m) = &marker {
            path.push_str(&format!("&marker={m}"));
        }
        let page = json(s.req(Method::GET, &path).send().unwrap(), 200);
        for f in page["files"].as_array().unwrap() {
            out.insert(
                f["filename"].as_str().unwrap().to_string(),
                (
                    f["etag"].as_str().unwrap().to_string(),
                    f["last_modified"].as_str().unwrap().to_string(),
                ),
            );
        }
        match page["marker"].as_str() {
            Some(m) => marker = Some(m.to_string()),
            None => return out,
        }
    }
}

fn get_text(s: &Server, path: &str) -> String {
    let r = s
        .req(Method::GET, &format!("/v1/data/{path}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    r.text().unwrap()
}

#[test]
fn a_folder_of_500_files_is_scored_with_max_concurrency_2() {
    let s = Server::start();
    // concurrency=2 on the version: a job running more than two calls at once
    // would meet Overloaded, which shows as extra attempts below.
    s.deploy_ok("score-csv", "demo/score@1.0.0", "concurrency=2");
    let mut inputs = Vec::new();
    for i in 0..500u32 {
        let name = if i % 50 == 7 {
            format!("demo/sales/in/nested/f{i:03}.csv")
        } else {
            format!("demo/sales/in/f{i:03}.csv")
        };
        let body = format!("id,units,price\n{i},{},{}\n", i + 1, i + 2).into_bytes();
        inputs.push((name, "text/csv", body));
    }
    // Not under in/: must not be processed.
    inputs.push((
        "demo/sales/other.csv".into(),
        "text/csv",
        b"a\n1\n".to_vec(),
    ));
    upload(&s, &inputs);

    let submitted = submit(
        &s,
        "demo/score",
        json!({"input": "data://demo/sales/in/", "output": "data://demo/scored/", "maxConcurrency": 2}),
    );
    assert_eq!(submitted["settings"]["maxConcurrency"], 2);
    assert_eq!(submitted["version"], "1.0.0");
    let id = submitted["id"].as_str().unwrap();
    let done = wait_end(&s, id);
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(counts(&done), (500, 500, 0, 0));
    assert_eq!(done["errors"], json!([]));
    assert_eq!(done["runs"], 1);
    assert!(done["duration"].as_f64().unwrap() >= 0.0);
    assert!(done["started"].is_string() && done["ended"].is_string());

    let finished = files(&s, id);
    assert_eq!(finished.len(), 500);
    for (input, f) in &finished {
        assert_eq!(f["status"], "succeeded", "{input}: {f}");
        assert_eq!(f["attempts"], 1, "{input} needed a retry: {f}");
        let expected_output = input.replace("data://demo/sales/in/", "data://demo/scored/");
        assert_eq!(f["output"].as_str(), Some(expected_output.as_str()));
    }
    // Outputs keep the relative path and name; the score is the row's mean.
    assert_eq!(
        get_text(&s, "demo/scored/f123.csv"),
        "id,units,price,score\n123,124,125,124\n"
    );
    assert_eq!(
        get_text(&s, "demo/scored/nested/f057.csv"),
        "id,units,price,score\n57,58,59,58\n"
    );
    let top = listing(&s, "demo/scored");
    assert_eq!(top.len(), 490 + 1, "490 outputs plus _summary.json");
    assert_eq!(listing(&s, "demo/scored/nested").len(), 10);
    let summary: Value = serde_json::from_str(&get_text(&s, "demo/scored/_summary.json")).unwrap();
    assert_eq!(summary["id"], id);
    assert_eq!(summary["status"], "Completed");
    assert_eq!(summary["counts"]["succeeded"], 500);

    // The job is listed for its owner.
    let list = json(s.req(Method::GET, "/v1/jobs").send().unwrap(), 200);
    assert_eq!(list["jobs"][0]["id"], id);
}

#[test]
fn the_error_threshold_fails_a_job_once_exceeded_and_minus_one_ignores_failures() {
    let s = Server::start();
    s.deploy_ok("score-csv", "demo/score@1.0.0", "");
    let mut inputs = Vec::new();
    for i in 0..20u32 {
        let body = if i % 4 == 3 {
            b"id,units\n1\n".to_vec() // malformed: one field where the header has two
        } else {
            format!("id,units\n{i},{i}\n").into_bytes()
        };
        inputs.push((format!("demo/batch/in/f{i:02}.csv"), "text/csv", body));
    }
    upload(&s, &inputs);
    let bad: Vec<String> = (0..20)
        .filter(|i| i % 4 == 3)
        .map(|i| format!("data://demo/batch/in/f{i:02}.csv"))
        .collect();

    // Five bad files, threshold 2: the job fails once a third one fails.
    let strict = submit(
        &s,
        "demo/score",
        json!({"input": "data://demo/batch/in/", "output": "data://demo/strict/", "errorThreshold": 2, "maxConcurrency": 1}),
    );
    let strict = wait_end(&s, strict["id"].as_str().unwrap());
    assert_eq!(strict["status"], "Failed", "{strict}");
    let (_, _, failed, _) = counts(&strict);
    assert!(
        failed >= 3,
        "failed only once more than 2 files failed: {strict}"
    );
    assert!(
        strict["message"]
            .as_str()
            .unwrap()
            .contains("more than errorThreshold=2"),
        "{strict}"
    );
    let first = &strict["errors"][0];
    assert!(
        bad.contains(&first["file"].as_str().unwrap().to_string()),
        "{first}"
    );
    assert_eq!(first["error_type"], "AlgorithmError");
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("expected 2 fields like the header, found 1"),
        "{first}"
    );
    let summary: Value = serde_json::from_str(&get_text(&s, "demo/strict/_summary.json")).unwrap();
    assert_eq!(summary["status"], "Failed");

    // -1 ignores failures: every file is processed, the failures counted.
    let lenient = submit(
        &s,
        "demo/score/1",
        json!({"input": "data://demo/batch/in/", "output": "data://demo/lenient/", "errorThreshold": -1}),
    );
    let lenient_id = lenient["id"].as_str().unwrap().to_string();
    let lenient = wait_end(&s, &lenient_id);
    assert_eq!(lenient["status"], "Completed", "{lenient}");
    assert_eq!(counts(&lenient), (20, 15, 5, 0));
    let mut reported: Vec<String> = lenient["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["file"].as_str().unwrap().to_string())
        .collect();
    reported.sort();
    assert_eq!(reported, bad);
    let failed_files = json(
        s.req(
            Method::GET,
            &format!("/v1/jobs/{lenient_id}/files?status=failed"),
        )
        .send()
        .unwrap(),
        200,
    );
    assert_eq!(failed_files["files"].as_array().unwrap().len(), 5);
    assert_eq!(listing(&s, "demo/lenient").len(), 15 + 1);

    // Exactly at the threshold is still Completed (more than, not as many as).
    let edge = submit(
        &s,
        "demo/score",
        json!({"input": "data://demo/batch/in/", "output": "data://demo/edge/", "errorThreshold": 5}),
    );
    let edge = wait_end(&s, edge["id"].as_str().unwrap());
    assert_eq!(edge["status"], "Completed", "{edge}");
    assert_eq!(counts(&edge), (20, 15, 5, 0));
}

#[test]
fn timeouts_are_retried_and_mini_batches_get_a_json_array() {
    let s = Server::start();
    s.deploy_ok("spin-forever", "demo/spin@1.0.0", "timeout=5");
    s.deploy_ok("noop", "demo/noop@1.0.0", "");
    upload(
        &s,
        &[
            ("demo/misc/one/x.txt".into(), "text/plain", b"x".to_vec()),
            (
                "demo/misc/texts/a.txt".into(),
                "text/plain",
                b"alpha".to_vec(),
            ),
            (
                "demo/misc/texts/b.txt".into(),
                "text/plain",
                b"beta".to_vec(),
            ),
            (
                "demo/misc/texts/c.bin".into(),
                "application/octet-stream",
                vec![0, 255],
            ),
            (
                "demo/misc/texts/d.txt".into(),
                "text/plain",
                b"delta".to_vec(),
            ),
            (
                "demo/misc/texts/e.txt".into(),
                "text/plain",
                b"echo".to_vec(),
            ),
        ],
    );

    // A single file input; the call times out (job timeout 0.3 s) and is retried once.
    let spin = submit(
        &s,
        "demo/spin",
        json!({"input": "data://demo/misc/one/x.txt", "output": "data://demo/spun/", "timeout": 0.3, "retries": 1}),
    );
    let spin_id = spin["id"].as_str().unwrap().to_string();
    assert_eq!(spin["input_kind"], "file");
    let spin = wait_end(&s, &spin_id);
    assert_eq!(spin["status"], "Completed", "{spin}");
    assert_eq!(counts(&spin), (1, 0, 1, 0));
    assert_eq!(spin["errors"][0]["error_type"], "TimeoutError");
    let f = &files(&s, &spin_id)["data://demo/misc/one/x.txt"];
    assert_eq!(f["attempts"], 2, "one retry after the timeout: {f}");

    // Mini-batches of 2: noop returns its JSON array, one element per file,
    // each written as JSON next to the input's name.
    let batch = submit(
        &s,
        "demo/noop",
        json!({"input": "data://demo/misc/texts/", "output": "data://demo/echo/", "miniBatchSize": 2}),
    );
    let batch = wait_end(&s, batch["id"].as_str().unwrap());
    assert_eq!(batch["status"], "Completed", "{batch}");
    assert_eq!(counts(&batch), (5, 5, 0, 0));
    let a: Value = serde_json::from_str(&get_text(&s, "demo/echo/a.txt.json")).unwrap();
    assert_eq!(
        a,
        json!({"uri": "data://demo/misc/texts/a.txt", "content_type": "text/plain", "content": "alpha"})
    );
    let c: Value = serde_json::from_str(&get_text(&s, "demo/echo/c.bin.json")).unwrap();
    assert_eq!(c["content_base64"], "AP8=");
    assert_eq!(listing(&s, "demo/echo").len(), 5 + 1);
}

#[test]
fn cancel_stops_a_running_job_and_keeps_finished_outputs() {
    let s = Server::start();
    s.deploy_ok("sleep", "demo/sleep@1.0.0", "");
    let inputs: Vec<_> = (0..200u32)
        .map(|i| {
            (
                format!("demo/naps/in/n{i:03}.txt"),
                "text/plain",
                b"100".to_vec(),
            )
        })
        .collect();
    upload(&s, &inputs);
    let submitted = submit(
        &s,
        "demo/sleep",
        json!({"input": "data://demo/naps/in/", "output": "data://demo/naps-out/", "maxConcurrency": 2}),
    );
    let id = submitted["id"].as_str().unwrap().to_string();
    let running = poll(&s, &id, Duration::from_secs(60), |j| {
        j["counts"]["succeeded"].as_u64().unwrap_or(0) >= 4
    });
    assert_eq!(running["status"], "Running", "{running}");
    assert_eq!(running["counts"]["total"], 200);

    // Another owner's key neither sees nor cancels it.
    let other = json(
        s.req(Method::POST, "/v1/keys")
            .json(&json!({"owner": "someone", "scopes": ["invoke", "data:read", "data:write"]}))
            .send()
            .unwrap(),
        201,
    )["key"]
        .as_str()
        .unwrap()
        .to_string();
    let as_other = |m: Method, p: &str| {
        s.http
            .request(m, format!("{}{p}", s.url))
            .header("Authorization", format!("Simple {other}"))
            .send()
            .unwrap()
    };
    assert_error(
        as_other(Method::GET, &format!("/v1/jobs/{id}")),
        404,
        "NotFound",
        &id,
    );
    assert_error(
        as_other(Method::POST, &format!("/v1/jobs/{id}/cancel")),
        404,
        "NotFound",
        &id,
    );
    assert_eq!(
        json(as_other(Method::GET, "/v1/jobs"), 200)["jobs"],
        json!([])
    );

    let canceled = json(
        s.req(Method::POST, &format!("/v1/jobs/{id}/cancel"))
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(canceled["status"], "Canceled", "{canceled}");
    let (total, succeeded, failed, pending) = counts(&canceled);
    assert_eq!(total, 200);
    assert_eq!(failed, 0);
    assert!(pending > 0 && succeeded + pending == 200, "{canceled}");
    // No file finishes after the cancel answered.
    std::thread::sleep(Duration::from_millis(500));
    let later = job(&s, &id);
    assert_eq!(later["status"], "Canceled");
    assert_eq!(counts(&later), counts(&canceled));
    assert_eq!(listing(&s, "demo/naps-out").len() as u64, succeeded + 1);
    let summary: Value =
        serde_json::from_str(&get_text(&s, "demo/naps-out/_summary.json")).unwrap();
    assert_eq!(summary["status"], "Canceled");
    // Canceling an ended job changes nothing.
    let again = json(
        s.req(Method::POST, &format!("/v1/jobs/{id}/cancel"))
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(again["status"], "Canceled");
    assert_eq!(counts(&again), counts(&canceled));
}

#[test]
fn a_job_resumes_after_kill_9_without_redoing_finished_files() {
    let mut s = Server::start();
    s.deploy_ok("sleep", "demo/sleep@1.0.0", "");
    let inputs: Vec<_> = (0..60u32)
        .map(|i| {
            (
                format!("demo/work/in/w{i:02}.txt"),
                "text/plain",
                b"40".to_vec(),
            )
        })
        .collect();
    upload(&s, &inputs);
    let submitted = submit(
        &s,
        "demo/sleep",
        json!({"input": "data://demo/work/in/", "output": "data://demo/work-out/", "maxConcurrency": 2}),
    );
    let id = submitted["id"].as_str().unwrap().to_string();
    poll(&s, &id, Duration::from_secs(60), |j| {
        j["counts"]["succeeded"].as_u64().unwrap_or(0) >= 10
    });
    s.kill9();
    // What had finished when the process died, read from the store by the next one.
    s.restart();
    let done = wait_end(&s, &id);
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(counts(&done), (60, 60, 0, 0));
    assert_eq!(done["runs"], 2, "one resume: {done}");

    let finished = files(&s, &id);
    assert_eq!(finished.len(), 60);
    let first_run: Vec<&String> = finished
        .iter()
        .filter(|(_, f)| f["run"] == 1)
        .map(|(k, _)| k)
        .collect();
    let second_run = finished.values().filter(|f| f["run"] == 2).count();
    assert!(
        first_run.len() >= 10,
        "files finished before the kill keep run 1"
    );
    assert_eq!(first_run.len() + second_run, 60);
    assert!(second_run > 0, "the rest ran after the restart");
    // A file finished before the kill was not processed again: its output was
    // written once, before any output of the second run.
    let outputs = listing(&s, "demo/work-out");
    assert_eq!(outputs.len(), 60 + 1);
    let last_first_run = first_run
        .iter()
        .map(|k| {
            outputs[k.trim_start_matches("data://demo/work/in/")]
                .1
                .clone()
        })
        .max()
        .unwrap();
    let first_second_run = finished
        .iter()
        .filter(|(_, f)| f["run"] == 2)
        .map(|(k, _)| {
            outputs[k.trim_start_matches("data://demo/work/in/")]
                .1
                .clone()
        })
        .min()
        .unwrap();
    assert!(
        last_first_run < first_second_run,
        "run-1 outputs ({last_first_run}) all predate run-2 outputs ({first_second_run})"
    );
}

#[test]
fn submitting_checks_rights_locations_and_settings() {
    let s = Server::start();
    s.deploy_ok("noop", "demo/noop@1.0.0", "");
    upload(
        &s,
        &[("demo/src/in/a.txt".into(), "text/plain", b"a".to_vec())],
    );
    let key = |owner: &str, scopes: &[&str]| {
        json(
            s.req(Method::POST, "/v1/keys")
                .json(&json!({"owner": owner, "scopes": scopes}))
                .send()
                .unwrap(),
            201,
        )["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let post = |key: &str, algo: &str, body: Value| {
        s.http
            .post(format!("{}/v1/algo/{algo}/jobs", s.url))
            .header("Authorization", format!("Simple {key}"))
            .json(&body)
            .send()
            .unwrap()
    };
    let good = json!({"input": "data://demo/src/in/", "output": "data://demo/dst/"});

    let reader = key("demo", &["invoke", "data:read"]);
    assert_error(
        post(&reader, "demo/noop", good.clone()),
        403,
        "AuthError",
        "data:write",
    );
    let no_invoke = key("demo", &["data:read", "data:write"]);
    assert_error(
        post(&no_invoke, "demo/noop", good.clone()),
        403,
        "AuthError",
        "invoke",
    );
    let stranger = key("other", &["invoke", "data:read", "data:write"]);
    // Another owner's algorithm reads as a missing one.
    assert_error(
        post(&stranger, "demo/noop", good.clone()),
        404,
        "NotFound",
        "algorithm demo/noop not found",
    );

    let admin = s.key.clone();
    assert_error(
        post(&admin, "demo/missing", good.clone()),
        404,
        "NotFound",
        "demo/missing",
    );
    assert_error(
        post(
            &admin,
            "demo/noop",
            json!({"input": "data://demo/src/none/", "output": "data://demo/dst/"}),
        ),
        404,
        "NotFound",
        "data://demo/src/none",
    );
    assert_error(
        post(
            &admin,
            "demo/noop",
            json!({"input": "data://demo/src/", "output": "data://demo/src/in/out/"}),
        ),
        400,
        "InputError",
        "overlaps",
    );
    assert_error(
        post(
            &admin,
            "demo/noop",
            json!({"input": "data://demo/src/in/", "output": "data://demo/dst/", "maxConcurrency": 0}),
        ),
        400,
        "InputError",
        "maxConcurrency",
    );
    assert_error(
        post(
            &admin,
            "demo/noop",
            json!({"input": "data://demo/src/in/", "output": "data://demo/dst/", "errorThreshold": -2}),
        ),
        400,
        "InputError",
        "errorThreshold",
    );
    assert_error(
        post(
            &admin,
            "demo/noop",
            json!({"input": "demo/src/in/", "output": "data://demo/dst/"}),
        ),
        400,
        "InputError",
        "data://",
    );

    // The owner's key with the three scopes runs it; the job is the owner's.
    let owner = key("demo", &["invoke", "data:read", "data:write"]);
    let r = post(&owner, "demo/noop", good);
    let submitted = json(r, 202);
    assert_eq!(submitted["owner"], "demo");
    let id = submitted["id"].as_str().unwrap();
    let done = wait_end(&s, id);
    assert_eq!(done["status"], "Completed");
    assert_eq!(get_text(&s, "demo/dst/a.txt"), "a");
    assert_error(
        s.req(Method::GET, "/v1/jobs?status=finished")
            .send()
            .unwrap(),
        400,
        "InputError",
        "status",
    );
    let completed = json(
        s.req(Method::GET, "/v1/jobs?status=completed")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(completed["jobs"].as_array().unwrap().len(), 1);
}

/// The lifecycle hook, in process: told once per ended job, after the final
/// state is durable; ends not yet announced are announced by the next start.
#[test]
fn the_job_observer_hears_of_every_end_after_it_is_durable() {
    use std::sync::{Arc, Mutex};
    use wasmgrid::app::App;
    use wasmgrid::auth::{Caller, Scope};
    use wasmgrid::jobs::{
        JobObserver, JobOptions, JobRecord, JobService, JobSpec, JobStatus, JobsConfig,
    };
    use wasmgrid::registry::{DeployRequest, VersionSettings};

    // The recorder reads the job through the app's own (never started) job
    // service, over the same store as the service under test.
    struct Recorder {
        app: Mutex<Option<Arc<App>>>,
        seen: Mutex<Vec<(String, JobStatus, JobStatus)>>,
    }
    impl JobObserver for Recorder {
        fn job_ended(&self, job: &JobRecord) {
            // What the store holds at the time of the call.
            let stored = self
                .app
                .lock()
                .unwrap()
                .as_ref()
                .map(|app| {
                    let admin = Caller {
                        key_id: "t".into(),
                        owner: "admin".into(),
                        scopes: vec![Scope::Admin],
                        compat: Default::default(),
                        hops: 0,
                    };
                    app.jobs.get(&admin, &job.id).unwrap().status
                })
                .unwrap();
            self.seen
                .lock()
                .unwrap()
                .push((job.id.clone(), job.status, stored));
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let owner = Caller {
        key_id: "k".into(),
        owner: "demo".into(),
        scopes: vec![Scope::Invoke, Scope::DataRead, Scope::DataWrite],
        compat: Default::default(),
        hops: 0,
    };
    let recorder = Arc::new(Recorder {
        app: Mutex::new(None),
        seen: Mutex::new(Vec::new()),
    });
    let job_id = {
        let app = App::open(dir.path(), Default::default(), Default::default()).unwrap();
        *recorder.app.lock().unwrap() = Some(app.clone());
        // The service under test, built with the recorder as its observer.
        let jobs = JobService::new(
            app.job_queue.clone(),
            app.records.clone(),
            app.data.clone(),
            app.invoker.clone(),
            app.metrics.clone(),
            JobsConfig::default(),
            Some(recorder.clone()),
        );
        rt.block_on(async {
            app.registry
                .deploy(
                    DeployRequest {
                        owner: "demo".into(),
                        name: "noop".into(),
                        version: "1.0.0".into(),
                        settings: VersionSettings::default(),
                        source_hash: None,
                    },
                    guest("noop").into(),
                )
                .await
                .unwrap();
            for i in 0..3 {
                let p = wasmgrid::data::DataPath::new("demo", "in", &format!("f{i}.txt")).unwrap();
                app.data
                    .put(
                        wasmgrid::data::Principal::Key(&owner),
                        &p,
                        "text/plain",
                        b"x",
                    )
                    .unwrap();
            }
            // Submitted before `start`: the resume scan must not run it twice.
            let spec = |out: &str| {
                JobSpec::for_endpoint("demo/noop", "data://demo/in/", out, JobOptions::default())
                    .unwrap()
            };
            let job = jobs.submit(&owner, spec("data://demo/out/")).await.unwrap();
            jobs.start().await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while recorder.seen.lock().unwrap().is_empty() {
                assert!(Instant::now() < deadline, "observer never called");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let done = jobs.get(&owner, &job.id).unwrap();
            assert_eq!(done.counts.succeeded, 3);
            assert_eq!(done.runs, 1, "one runner, not two");
            jobs.shutdown(Duration::from_secs(5)).await;
            job.id
        })
    };
    {
        let seen = recorder.seen.lock().unwrap();
        assert_eq!(
            *seen,
            vec![(job_id.clone(), JobStatus::Completed, JobStatus::Completed)],
            "told once, with the final state already in the store"
        );
    }
    *recorder.app.lock().unwrap() = None; // release the store

    // An end the observer was not told about (a crash right after the final
    // commit) is announced by the next start.
    {
        let store = wasmgrid::store::EmbeddedStore::open(dir.path()).unwrap();
        use wasmgrid::store::records::{Bucket, Records};
        let entry = rt
            .block_on(store.get(Bucket::Jobs, &job_id))
            .unwrap()
            .unwrap();
        let mut rec: JobRecord = serde_json::from_slice(&entry.value).unwrap();
        assert!(rec.notified);
        rec.notified = false;
        let value = serde_json::to_vec(&rec).unwrap();
        rt.block_on(store.update(Bucket::Jobs, &job_id, value.into(), entry.rev))
            .unwrap();
    }
    recorder.seen.lock().unwrap().clear();
    let app = App::open(dir.path(), Default::default(), Default::default()).unwrap();
    *recorder.app.lock().unwrap() = Some(app.clone());
    let jobs = JobService::new(
        app.job_queue.clone(),
        app.records.clone(),
        app.data.clone(),
        app.invoker.clone(),
        app.metrics.clone(),
        JobsConfig::default(),
        Some(recorder.clone()),
    );
    rt.block_on(async {
        assert_eq!(jobs.start().await.unwrap(), 0, "nothing to resume");
        let deadline = Instant::now() + Duration::from_secs(30);
        while recorder.seen.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "not re-announced");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert_eq!(recorder.seen.lock().unwrap()[0].0, job_id);
    *recorder.app.lock().unwrap() = None;
}
