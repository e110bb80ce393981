//! Batch-job throughput: files per second through a job over a folder of
//! 10,000 small files with the `noop` guest, against the raw in-process invoke
//! rate at the same concurrency (same payloads, no data reads or writes).
//!
//! Run: `cargo bench -p wasmgrid --bench jobs` (builds guest-examples first).
//! Figures are medians of five raw/job pairs: calls or files per second, and
//! the process's CPU time per call or file (which machine load disturbs
//! less). Two figures compare each job run with the raw run just before it
//! (on a shared machine, load drifts), as the median over the pairs: the job
//! machinery's overhead per file (job CPU µs per file minus raw CPU µs per
//! call) and the ratio job files/s ÷ raw calls/s. The job's time runs from
//! submit to `Completed` as the API would report it (listing, invocations,
//! durable outputs and progress records, summary), in a fresh temporary data
//! directory.
//!
//! Environment: `JOBS_BENCH_REUSE=N` deploys `noop` with `reuse=N` (warm
//! instances, for both the raw calls and the job; default 0: a fresh instance
//! per call), `JOBS_BENCH_FILES` (the folder's files and the raw calls per
//! run, default 10000), `JOBS_BENCH_RUNS` (pairs per concurrency, default 5),
//! `JOBS_BENCH_CONCURRENCY` (e.g. `2` or `1,8`; default `1,2,4,8`),
//! `JOBS_BENCH_ONLY=job` or `raw` (one side only, for `perf record`; no
//! overhead or ratio then).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasmgrid::app::App;
use wasmgrid::auth::{Caller, Scope};
use wasmgrid::data::{DataPath, Principal};
use wasmgrid::engine::{EngineConfig, Payload};
use wasmgrid::invoker::Call;
use wasmgrid::jobs::{JobOptions, JobSpec, JobStatus};
use wasmgrid::registry::{DeployRequest, Deployed, VersionSettings};

const FILES: usize = 10_000;
const RUNS: usize = 5;

/// What to run, from the environment (see the module docs).
struct Plan {
    /// Files in the input folder, and raw calls per run.
    files: usize,
    /// The noop version's `reuse` setting.
    reuse: u32,
    runs: usize,
    concurrency: Vec<usize>,
    raw: bool,
    job: bool,
}

impl Plan {
    fn from_env() -> Plan {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let files = var("JOBS_BENCH_FILES").map_or(FILES, |v| v.parse().expect("JOBS_BENCH_FILES"));
        let reuse = var("JOBS_BENCH_REUSE").map_or(0, |v| v.parse().expect("JOBS_BENCH_REUSE"));
        let runs = var("JOBS_BENCH_RUNS").map_or(RUNS, |v| v.parse().expect("JOBS_BENCH_RUNS"));
        let concurrency = var("JOBS_BENCH_CONCURRENCY").map_or(vec![1, 2, 4, 8], |v| {
            v.split(',')
                .map(|c| c.trim().parse().expect("JOBS_BENCH_CONCURRENCY"))
                .collect()
        });
        let only = var("JOBS_BENCH_ONLY");
        Plan {
            files: files.max(1),
            reuse,
            runs: runs.max(1),
            concurrency,
            raw: only.as_deref() != Some("job"),
            job: only.as_deref() != Some("raw"),
        }
    }
}

fn admin() -> Caller {
    Caller {
        key_id: "bench".into(),
        owner: "bench".into(),
        scopes: vec![Scope::Admin],
        compat: Default::default(),
        hops: 0,
    }
}

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::cpu_time;

#[path = "support/guests.rs"]
mod guests;
use guests::build_guest;

/// A rate (items per second of wall time) and the CPU time per item.
#[derive(Clone, Copy, Default)]
struct Rate {
    per_sec: f64,
    cpu_us: f64,
}

impl Rate {
    fn measure(items: usize, wall: Duration, cpu: Duration) -> Rate {
        Rate {
            per_sec: items as f64 / wall.as_secs_f64(),
            cpu_us: cpu.as_secs_f64() * 1e6 / items as f64,
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn content(i: usize) -> Vec<u8> {
    format!("file {i:05}: a small input line\n").into_bytes()
}

/// Writes the input folder: `files` files, committed 1,000 per transaction.
fn write_inputs(app: &App, caller: &Caller, files: usize) {
    let who = Principal::Key(caller);
    for chunk in (0..files).collect::<Vec<_>>().chunks(1000) {
        let staged: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let p = DataPath::new("bench", "inputs", &format!("in/f{i:05}.txt")).unwrap();
                app.data
                    .stage_write(who, &p, "text/plain", content(i).into())
                    .unwrap()
            })
            .collect();
        for written in app.data.write_staged(staged).unwrap() {
            written.expect("not a folder");
        }
    }
}

/// Calls per second of `invoker.call` from `concurrency` tasks, `calls` calls.
async fn raw_rate(
    app: &Arc<App>,
    deployed: &Arc<Deployed>,
    concurrency: usize,
    calls: usize,
) -> Rate {
    let next = Arc::new(AtomicUsize::new(0));
    let (started, cpu) = (Instant::now(), cpu_time());
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (app, deployed, next) = (app.clone(), deployed.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls {
                    return;
                }
                let input = Payload {
                    content_type: "text/plain".into(),
                    body: content(i).into(),
                };
                app.invoker
                    .call(Call::new(&deployed, input, None))
                    .await
                    .expect("noop call");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Rate::measure(calls, started.elapsed(), cpu_time() - cpu)
}

/// Files per second of a job with `maxConcurrency` = `concurrency` over the
/// input folder of `files` files.
async fn job_rate(
    app: &Arc<App>,
    caller: &Caller,
    concurrency: u32,
    run: usize,
    files: usize,
) -> Rate {
    let spec = JobSpec {
        owner: "bench".into(),
        name: "noop".into(),
        version: None,
        input: "data://bench/inputs/in/".into(),
        output: format!("data://bench/out-c{concurrency}-r{run}/"),
        options: JobOptions {
            max_concurrency: Some(concurrency),
            ..Default::default()
        },
    };
    let (started, cpu) = (Instant::now(), cpu_time());
    let job = app.jobs.submit(caller, spec).await.expect("submit");
    let done = loop {
        let j = app.jobs.get(caller, &job.id).expect("job");
        if j.status.is_terminal() {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let rate = Rate::measure(files, started.elapsed(), cpu_time() - cpu);
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.message);
    assert_eq!(done.counts.succeeded, files as u64);
    rate
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported here.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = App::open(dir.path(), EngineConfig::default(), Default::default()).unwrap();
    let caller = admin();
    let plan = Plan::from_env();
    let files = plan.files;
    let deployed = rt
        .block_on(app.registry.deploy(
            DeployRequest {
                owner: "bench".into(),
                name: "noop".into(),
                version: "1.0.0".into(),
                settings: VersionSettings {
                    reuse: plan.reuse,
                    ..VersionSettings::default()
                },
                source_hash: None,
            },
            build_guest("noop").into(),
        ))
        .expect("deploy noop");
    write_inputs(&app, &caller, files);
    let input = DataPath::new("bench", "inputs", "in").unwrap();
    assert_eq!(
        app.data
            .count_tree(Principal::Key(&caller), &input)
            .unwrap(),
        files as u64
    );
    rt.block_on(async {
        app.jobs.start().await.unwrap();
        // Warm up: first instantiations (and warm instances), page cache.
        raw_rate(&app, &deployed, 2, files).await;
        println!(
            "{files} files of ~32 bytes, noop guest (reuse {}), {} worker threads; medians of {} runs",
            plan.reuse,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            plan.runs
        );
        println!(
            "concurrency | raw calls/s | raw CPU µs/call | job files/s | job CPU µs/file | overhead µs/file | job / raw (lowest–highest)"
        );
        let both = plan.raw && plan.job;
        for &concurrency in &plan.concurrency {
            // Raw and job runs alternate, and each job run is compared with the
            // raw run just before it: on a shared machine, load drifts.
            let (mut raw, mut job, mut ratio, mut overhead) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for run in 0..plan.runs {
                let r = if plan.raw {
                    raw_rate(&app, &deployed, concurrency, files).await
                } else {
                    Rate::default()
                };
                let j = if plan.job {
                    job_rate(&app, &caller, concurrency as u32, run, files).await
                } else {
                    Rate::default()
                };
                ratio.push(j.per_sec / r.per_sec);
                overhead.push(j.cpu_us - r.cpu_us);
                raw.push(r);
                job.push(j);
            }
            let med = |v: &[Rate], f: fn(&Rate) -> f64| median(v.iter().map(f).collect());
            let compared = if both {
                let lowest = ratio.iter().copied().fold(f64::INFINITY, f64::min);
                let highest = ratio.iter().copied().fold(0.0, f64::max);
                format!(
                    "{:>16.1} | {:>8.2}x ({lowest:.2}–{highest:.2})",
                    median(overhead),
                    median(ratio)
                )
            } else {
                format!("{:>16} | {:>9}", "-", "-")
            };
            println!(
                "{concurrency:>11} | {:>11.0} | {:>15.1} | {:>11.0} | {:>15.1} | {compared}",
                med(&raw, |r| r.per_sec),
                med(&raw, |r| r.cpu_us),
                med(&job, |r| r.per_sec),
                med(&job, |r| r.cpu_us),
            );
        }
        app.jobs.shutdown(Duration::from_secs(5)).await;
    });
}
