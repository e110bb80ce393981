//! The floor of a batch job's durable writes: CPU per file of just the four
//! store inserts a finished file costs (output record, output content, its
//! `FileCreated` event in the outbox, the job's progress record), committed
//! through `Store::transact` in batches as the job committer does, with the
//! sizes a `noop` job over small files writes. No encoding, checks or
//! invocations: what remains when everything else is free.
//!
//! Run: `cargo bench -p wasmgrid --bench job_writes`. See docs/PERFORMANCE.md
//! ("Batch jobs").

use std::time::Instant;
use wasmgrid::store::EmbeddedStore;
use wasmgrid::store::raw::{Store, Table};

const FILES: usize = 20_000;

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::cpu_time;

/// Writes `FILES` files' worth of `tables`, `batch` files per transaction,
/// and prints CPU and wall time per file.
fn run(label: &str, tables: &[Table], batch: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("store");
    let (record, content, event, progress) = (
        vec![1u8; 90],
        vec![2u8; 32],
        vec![b'e'; 470],
        vec![b'p'; 60],
    );
    let (started, cpu) = (Instant::now(), cpu_time());
    let files: Vec<usize> = (0..FILES).collect();
    for chunk in files.chunks(batch) {
        store
            .transact(&mut |txn| {
                for i in chunk {
                    let out = format!("bench/out/in/f{i:05}.txt");
                    for table in tables {
                        match *table {
                            Table::FILES => txn.put(Table::FILES, &out, &record)?,
                            Table::FILE_DATA => txn.put(Table::FILE_DATA, &out, &content)?,
                            Table::OUTBOX => txn.append(Table::OUTBOX, &event).map(|_| ())?,
                            _ => txn.put(
                                Table::JOB_FILES,
                                &format!("job-0123456789a-01234567/in/f{i:05}.txt"),
                                &progress,
                            )?,
                        }
                    }
                }
                Ok(())
            })
            .expect("commit");
    }
    let (wall, cpu) = (
        started.elapsed().as_secs_f64(),
        (cpu_time() - cpu).as_secs_f64(),
    );
    println!(
        "{label:<44} {batch:>5} files/commit: {:5.2} µs CPU/file, {:5.2} µs wall/file",
        cpu * 1e6 / FILES as f64,
        wall * 1e6 / FILES as f64
    );
}

fn main() {
    // `cargo bench` passes `--bench`; no filter is supported.
    let all = [
        Table::FILES,
        Table::FILE_DATA,
        Table::OUTBOX,
        Table::JOB_FILES,
    ];
    for _ in 0..2 {
        run("record + content + event + progress", &all, 1000);
        run("record + content + event + progress", &all, 4000);
        run("record only (90 B)", &[Table::FILES], 1000);
        run("content only (32 B)", &[Table::FILE_DATA], 1000);
        run("event only (470 B, outbox)", &[Table::OUTBOX], 1000);
        run("progress only (60 B)", &[Table::JOB_FILES], 1000);
    }
}
