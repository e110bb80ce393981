//! `wasmgrid job`: submit batch jobs and follow them (thin client of `/v1/jobs`).

use super::{Client, split_target};
use anyhow::{Context as _, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use std::time::Duration;

/// How often `job wait` polls the job.
const POLL: Duration = Duration::from_millis(250);

/// `wasmgrid job ...`.
#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Run an algorithm over a data:// folder (or file): owner/name[@version].
    Submit {
        /// owner/name or owner/name@version (1.2.3, 1.2 or 1).
        target: String,
        /// Input: data://owner/collection/folder/ (every file under it) or a file.
        #[arg(long)]
        input: String,
        /// Output folder: data://owner/collection/folder/.
        #[arg(long)]
        output: String,
        /// Invocations at once (default 4).
        #[arg(long)]
        max_concurrency: Option<u32>,
        /// Failed files tolerated before the job fails; -1 tolerates any (default).
        #[arg(long, allow_hyphen_values = true)]
        error_threshold: Option<i64>,
        /// Files per invocation (default 1; above 1 the algorithm gets a JSON array).
        #[arg(long)]
        mini_batch_size: Option<u32>,
        /// Retries per file for transient errors, timeouts and overload (default 3).
        #[arg(long)]
        retries: Option<u32>,
        /// Timeout per invocation, in seconds (default: the version's).
        #[arg(long)]
        timeout: Option<f64>,
        /// Follow the job with a progress bar until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Follow a job with a progress bar until it ends (exit status 1 unless it Completed).
    Wait {
        /// Job id.
        id: String,
    },
    /// Show a job: status, counts, timings, first errors.
    Status {
        /// Job id.
        id: String,
        /// Print the job's JSON.
        #[arg(long)]
        json: bool,
    },
    /// List your jobs, newest first (an admin key sees every job).
    Ls {
        /// Only jobs in this status (Queued, Running, Completed, Failed, Canceled).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Cancel a job: no new files start; finished outputs stay.
    Cancel {
        /// Job id.
        id: String,
    },
}

/// Runs a `job` command.
pub fn run_job(client: &Client, cmd: JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Submit {
            target,
            input,
            output,
            max_concurrency,
            error_threshold,
            mini_batch_size,
            retries,
            timeout,
            wait,
        } => {
            let (owner, name, version) = split_target(&target)?;
            let path = match version {
                Some(v) => format!("/v1/algo/{owner}/{name}/{v}/jobs"),
                None => format!("/v1/algo/{owner}/{name}/jobs"),
            };
            let mut body = serde_json::json!({"input": input, "output": output});
            if let Some(n) = max_concurrency {
                body["maxConcurrency"] = n.into();
            }
            if let Some(n) = error_threshold {
                body["errorThreshold"] = n.into();
            }
            if let Some(n) = mini_batch_size {
                body["miniBatchSize"] = n.into();
            }
            if let Some(n) = retries {
                body["retries"] = n.into();
            }
            if let Some(t) = timeout {
                body["timeout"] = t.into();
            }
            let job = client
                .send(
                    Method::POST,
                    &path,
                    &[],
                    Some((serde_json::to_vec(&body)?, "application/json")),
                )?
                .json()?;
            let id = job["id"].as_str().unwrap_or_default().to_string();
            eprintln!(
                "submitted {id}: {}@{} over {} -> {}",
                job["algorithm"].as_str().unwrap_or("?"),
                job["version"].as_str().unwrap_or("?"),
                job["input"].as_str().unwrap_or("?"),
                job["output"].as_str().unwrap_or("?"),
            );
            if wait {
                wait_for(client, &id)
            } else {
                println!("{id}");
                eprintln!("follow it with: wasmgrid job wait {id}");
                Ok(())
            }
        }
        JobCommand::Wait { id } => wait_for(client, &id),
        JobCommand::Status { id, json } => {
            let job = get(client, &id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print_status(&job);
            }
            Ok(())
        }
        JobCommand::Ls { status, limit } => {
            let mut query = vec![("limit", limit.clamp(1, 1000).to_string())];
            if let Some(s) = status {
                query.push(("status", s));
            }
            let v = client.send(Method::GET, "/v1/jobs", &query, None)?.json()?;
            let jobs = v["jobs"].as_array().cloned().unwrap_or_default();
            if jobs.is_empty() {
                println!(
                    "no jobs (submit one with `wasmgrid job submit owner/name --input data://... --output data://...`)"
                );
            }
            for j in jobs {
                let c = &j["counts"];
                println!(
                    "{}  {:<9}  {}@{}  {}/{} done, {} failed  {}",
                    j["id"].as_str().unwrap_or("?"),
                    j["status"].as_str().unwrap_or("?"),
                    j["algorithm"].as_str().unwrap_or("?"),
                    j["version"].as_str().unwrap_or("?"),
                    c["succeeded"].as_u64().unwrap_or(0) + c["failed"].as_u64().unwrap_or(0),
                    c["total"].as_u64().unwrap_or(0),
                    c["failed"].as_u64().unwrap_or(0),
                    j["created"].as_str().unwrap_or(""),
                );
            }
            Ok(())
        }
        JobCommand::Cancel { id } => {
            let job = client
                .send(Method::POST, &format!("/v1/jobs/{id}/cancel"), &[], None)?
                .json()?;
            match job["status"].as_str() {
                Some("Canceled") => println!("canceled {id}"),
                Some(other) => println!("{id} had already ended: {other}"),
                None => println!("{id}: {job}"),
            }
            Ok(())
        }
    }
}

fn get(client: &Client, id: &str) -> anyhow::Result<serde_json::Value> {
    if id.is_empty() || id.contains('/') {
        bail!("{id:?} is not a job id (job-...): list jobs with `wasmgrid job ls`");
    }
    client
        .send(Method::GET, &format!("/v1/jobs/{id}"), &[], None)?
        .json()
        .with_context(|| format!("reading job {id}"))
}

fn counts(job: &serde_json::Value) -> (u64, u64, u64) {
    let c = &job["counts"];
    (
        c["total"].as_u64().unwrap_or(0),
        c["succeeded"].as_u64().unwrap_or(0),
        c["failed"].as_u64().unwrap_or(0),
    )
}

/// Polls the job with a live progress bar (on a terminal) until it ends;
/// prints the outcome; fails unless the job Completed.
fn wait_for(client: &Client, id: &str) -> anyhow::Result<()> {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {prefix} [{wide_bar}] {pos}/{len} files  {msg}  {elapsed} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(id.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    let job = loop {
        let job = get(client, id)?;
        let (total, succeeded, failed) = counts(&job);
        let status = job["status"].as_str().unwrap_or("?").to_string();
        if total > 0 {
            bar.set_length(total);
        }
        bar.set_position(succeeded + failed);
        bar.set_message(if failed > 0 {
            format!("{status}, {failed} failed")
        } else {
            status.clone()
        });
        if matches!(status.as_str(), "Completed" | "Failed" | "Canceled") {
            break job;
        }
        std::thread::sleep(POLL);
    };
    bar.finish_and_clear();
    print_status(&job);
    match job["status"].as_str() {
        Some("Completed") => Ok(()),
        Some(other) => bail!(
            "job {id} ended {other}{}",
            job["message"]
                .as_str()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
        None => bail!("job {id}: unexpected answer {job}"),
    }
}

fn print_status(job: &serde_json::Value) {
    let s = |k: &str| job[k].as_str().unwrap_or("-").to_string();
    let (total, succeeded, failed) = counts(job);
    let pending = job["counts"]["pending"].as_u64().unwrap_or(0);
    println!("{}  {}", s("id"), s("status"));
    println!("  algorithm  {}@{}", s("algorithm"), s("version"));
    println!("  input      {}", s("input"));
    println!("  output     {}", s("output"));
    println!(
        "  files      {total} total, {succeeded} succeeded, {failed} failed, {pending} pending"
    );
    let duration = job["duration"]
        .as_f64()
        .map(|d| format!(" ({d:.3} s)"))
        .unwrap_or_default();
    println!(
        "  time       created {}, started {}, ended {}{duration}",
        s("created"),
        s("started"),
        s("ended")
    );
    if let Some(m) = job["message"].as_str() {
        println!("  message    {m}");
    }
    let errors = job["errors"].as_array().cloned().unwrap_or_default();
    if !errors.is_empty() {
        println!("  first errors:");
        for e in &errors {
            println!(
                "    {}  {}: {}",
                e["file"].as_str().unwrap_or("?"),
                e["error_type"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("")
            );
        }
        if failed as usize > errors.len() {
            println!(
                "    ... all failures: GET /v1/jobs/{}/files?status=failed",
                s("id")
            );
        }
    }
}
