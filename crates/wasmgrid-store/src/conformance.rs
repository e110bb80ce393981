//! The contract tests of [`Records`], [`Leases`], [`Blobs`],
//! [`DeliveryQueues`] and [`ChangeLog`], written once
//! and run against every backend: the embedded one in this crate's tests
//! (`tests/conformance.rs`), the NATS one on a real 3-node JetStream cluster
//! in `wasmgrid-store-nats`'s tests.
//!
//! Each function panics on a broken guarantee (they are test code). Where a
//! backend cannot give a guarantee, [`Backend`] says so explicitly and the
//! check is replaced by what that backend does promise; nothing is skipped
//! silently.

#![allow(clippy::unwrap_used, clippy::panic)]

use crate::blobs::{BlobId, BlobReader, Blobs, Digest};
use crate::changelog::{ChangeLog, Feed};
use crate::leases::Leases;
use crate::queues::{Dedup, DeliveryQueues, Enqueue, Leased, QueueCounts, SubId};
use crate::records::{Bucket, Change, Entry, Records, RecordsExt};
use crate::{Page, StoreError};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// What a backend does and does not promise, for the checks that differ.
#[derive(Debug, Clone, Copy)]
pub struct Backend {
    /// The backend's name, in failure messages.
    pub name: &'static str,
    /// Every lease is granted at once (one process: embedded). Otherwise a
    /// held lease is refused to a second caller until released or expired.
    pub single_process_leases: bool,
    /// The clock-skew margin after a lease's TTL before another caller may
    /// take it over (NATS: 5 s; embedded: none).
    pub lease_margin: Duration,
    /// `settled` lists only blobs the store was told are `recorded`
    /// (embedded). Otherwise it relies on the grace period alone, so a
    /// finished blob older than `grace` is listed recorded or not.
    pub tracks_recorded: bool,
    /// Two concurrent `update`s from the same revision: exactly one wins.
    /// Not on a clustered NATS 2.9.10 stream (STORAGE.md rule 3, nats-server
    /// #4320, fixed in 2.9.21): there both may succeed.
    pub exact_concurrent_update: bool,
    /// A second [`ChangeLog::append`] with the same dedup id within the
    /// window is dropped (NATS, by `Nats-Msg-Id`). Not embedded: it logs it
    /// again, and consumers deduplicate by the event id.
    pub dedups_appends: bool,
    /// A reader opened on a data blob keeps reading its content when the
    /// blob is deleted meanwhile (embedded: the open file). Not NATS: a
    /// delete purges the object's chunks, so a reader still going fails.
    pub reads_survive_delete: bool,
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn keys(p: &Page<Entry>) -> Vec<String> {
    p.items.iter().map(|e| e.key.clone()).collect()
}

/// create is create-once, update and delete check the revision, a deleted
/// record can be created again at a higher revision.
pub async fn records_create_update_delete(r: &dyn Records) {
    let r1 = r.create(Bucket::Topics, "t", b("{\"v\":1}")).await.unwrap();
    assert!(r1 >= 1);
    assert!(matches!(
        r.create(Bucket::Topics, "t", b("{}")).await,
        Err(StoreError::Exists {
            bucket: "topics",
            ..
        })
    ));
    let r2 = r
        .update(Bucket::Topics, "t", b("{\"v\":2}"), r1)
        .await
        .unwrap();
    assert!(r2 > r1);
    match r.update(Bucket::Topics, "t", b("{\"v\":3}"), r1).await {
        Err(StoreError::Changed {
            expected, found, ..
        }) => assert_eq!((expected, found), (r1, Some(r2))),
        other => panic!("stale update: {other:?}"),
    }
    assert!(matches!(
        r.delete(Bucket::Topics, "t", Some(r1)).await,
        Err(StoreError::Changed { .. })
    ));
    assert!(matches!(
        r.update(Bucket::Topics, "gone", b("{}"), 1).await,
        Err(StoreError::Changed { found: None, .. })
    ));
    let got = r.get(Bucket::Topics, "t").await.unwrap().unwrap();
    assert_eq!(
        (got.key.as_str(), got.value, got.rev),
        ("t", b("{\"v\":2}"), r2)
    );
    r.delete(Bucket::Topics, "t", Some(r2)).await.unwrap();
    assert!(r.get(Bucket::Topics, "t").await.unwrap().is_none());
    // Deleting a missing record unconditionally does nothing.
    r.delete(Bucket::Topics, "t", None).await.unwrap();
    r.delete(Bucket::Topics, "never", None).await.unwrap();
    // Re-created after a delete: a fresh, higher revision.
    let r3 = r.create(Bucket::Topics, "t", b("{}")).await.unwrap();
    assert!(r3 > r2);
    // put is last-writer-wins and raises the revision.
    let r4 = r.put(Bucket::Topics, "t", b("{\"p\":1}")).await.unwrap();
    assert!(r4 > r3);
    // JSON helpers over the trait object.
    let typed = r
        .get_json::<serde_json::Value>(Bucket::Topics, "t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((typed.value["p"].as_i64(), typed.rev), (Some(1), r4));
}

/// A version number is never reused: a tombstoned version cannot be
/// created again (STORAGE.md rule 4).
pub async fn records_versions_are_never_reused(r: &dyn Records) {
    let key = "o/a/1.0.0";
    let rev = r
        .create_announced(Bucket::Versions, key, b("{\"v\":1}"), b("{\"event\":1}"))
        .await
        .unwrap();
    assert!(matches!(
        r.create(Bucket::Versions, key, b("{}")).await,
        Err(StoreError::Exists { .. })
    ));
    r.update_announced(
        Bucket::Versions,
        key,
        b("{\"deleted\":true}"),
        rev,
        b("{\"event\":2}"),
    )
    .await
    .unwrap();
    assert!(
        matches!(
            r.create(Bucket::Versions, key, b("{}")).await,
            Err(StoreError::Exists { .. })
        ),
        "a tombstone keeps the number taken"
    );
    // Another version of the same algorithm is its own key.
    r.create(Bucket::Versions, "o/a/1.0.1", b("{}"))
        .await
        .unwrap();
}

/// Keys with bytes a backend must escape are stored and listed as written.
pub async fn records_keep_any_key_part(r: &dyn Records) {
    let odd = [
        "o/my file.txt",
        "o/100%",
        "o/a_b=c",
        "o/..env",
        "o/résumé",
        "my_org/x",
    ];
    for k in odd {
        r.put(Bucket::Secrets, k, b(k)).await.unwrap();
    }
    for k in odd {
        let e = r.get(Bucket::Secrets, k).await.unwrap().unwrap();
        assert_eq!((e.key.as_str(), e.value), (k, b(k)));
    }
    let mut want: Vec<&str> = odd
        .iter()
        .copied()
        .filter(|k| k.starts_with("o/"))
        .collect();
    want.sort_unstable();
    let listed = r.list_all(Bucket::Secrets, "o/").await.unwrap();
    assert_eq!(
        listed.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        want
    );
}

/// Listings page in key order under a prefix of whole parts.
pub async fn records_list_pages_in_key_order(r: &dyn Records) {
    for k in ["a/3", "a/1", "a/2", "ab/1", "b/1"] {
        r.put(Bucket::Subscriptions, k, b(k)).await.unwrap();
    }
    r.put(Bucket::Subscriptions, "a/4", b("gone"))
        .await
        .unwrap();
    r.delete(Bucket::Subscriptions, "a/4", None).await.unwrap();
    let p1 = r.list(Bucket::Subscriptions, "a/", None, 2).await.unwrap();
    assert_eq!(keys(&p1), ["a/1", "a/2"]);
    assert!(p1.next.is_some());
    let p2 = r
        .list(Bucket::Subscriptions, "a/", p1.next.as_deref(), 2)
        .await
        .unwrap();
    assert_eq!(keys(&p2), ["a/3"]);
    assert_eq!(p2.next, None);
    assert_eq!(
        r.list_all(Bucket::Subscriptions, "").await.unwrap().len(),
        5
    );
    assert!(
        r.list(Bucket::Subscriptions, "zz/", None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(p1.items[0].value, b("a/1"));
}

async fn next_change(w: &mut BoxStream<'static, Result<Change, StoreError>>) -> Change {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("a watch change within 20 s")
        .expect("the watch goes on")
        .expect("no watch error")
}

/// A watch reports the snapshot, then Synced, then live puts and deletes
/// under its prefix only, per key in revision order.
pub async fn records_watch_snapshot_then_live(r: &dyn Records) {
    // An empty prefix syncs at once.
    let mut empty = r.watch(Bucket::Jobs, "none/").await.unwrap();
    assert_eq!(next_change(&mut empty).await, Change::Synced);
    r.put(Bucket::Keys, "w/a", b("1")).await.unwrap();
    r.put(Bucket::Keys, "w/gone", b("x")).await.unwrap();
    r.delete(Bucket::Keys, "w/gone", None).await.unwrap();
    r.put(Bucket::Keys, "other", b("x")).await.unwrap();
    let mut w = r.watch(Bucket::Keys, "w/").await.unwrap();
    match next_change(&mut w).await {
        Change::Put(e) => assert_eq!((e.key.as_str(), e.value), ("w/a", b("1"))),
        other => panic!("{other:?}"),
    }
    assert_eq!(next_change(&mut w).await, Change::Synced);
    r.put(Bucket::Keys, "other2", b("not watched"))
        .await
        .unwrap();
    r.put(Bucket::Topics, "w/b", b("other bucket"))
        .await
        .unwrap();
    let rb = r.put(Bucket::Keys, "w/b", b("2")).await.unwrap();
    r.delete(Bucket::Keys, "w/a", None).await.unwrap();
    let mut last = 0;
    for i in 0..5 {
        last = r.put(Bucket::Keys, "w/c", b(&i.to_string())).await.unwrap();
    }
    match next_change(&mut w).await {
        Change::Put(e) => assert_eq!((e.key.as_str(), e.rev), ("w/b", rb)),
        other => panic!("{other:?}"),
    }
    match next_change(&mut w).await {
        Change::Deleted { key, rev } => assert!(key == "w/a" && rev > rb),
        other => panic!("{other:?}"),
    }
    // Quick changes of one key may coalesce (the contract): values and
    // revisions only go forward, and the last put is always seen.
    let (mut prev, mut prev_value) = (0, -1);
    while prev != last {
        match next_change(&mut w).await {
            Change::Put(e) => {
                assert_eq!(e.key, "w/c");
                let value: i32 = std::str::from_utf8(&e.value).unwrap().parse().unwrap();
                assert!(e.rev > prev && value > prev_value, "{e:?} after rev {prev}");
                (prev, prev_value) = (e.rev, value);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(prev_value, 4);
}

/// Ids are unique within a scope.
pub async fn records_next_id_is_unique(r: &dyn Records) {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let id = r.next_id("subscription").await.unwrap();
        assert!(id != 0 && seen.insert(id), "id {id} handed out twice");
    }
}

/// Two updates from one revision at the same time: exactly one wins where
/// the backend promises it; otherwise at least one does (rule 3).
pub async fn records_concurrent_updates(r: &dyn Records, backend: Backend) {
    let rev = r
        .create(Bucket::Collections, "o/race", b("0"))
        .await
        .unwrap();
    let (a, c) = tokio::join!(
        r.update(Bucket::Collections, "o/race", b("a"), rev),
        r.update(Bucket::Collections, "o/race", b("c"), rev),
    );
    let wins = [&a, &c].iter().filter(|x| x.is_ok()).count();
    if backend.exact_concurrent_update {
        assert_eq!(wins, 1, "{}: {a:?} {c:?}", backend.name);
    } else {
        // STORAGE.md rule 3: both may win on nats-server < 2.9.21 clustered.
        assert!(wins >= 1, "{}: {a:?} {c:?}", backend.name);
    }
    for lost in [&a, &c].into_iter().filter(|x| x.is_err()) {
        assert!(matches!(lost, Err(StoreError::Changed { .. })), "{lost:?}");
    }
}

/// Every Records check, in sequence, on one store.
pub async fn records_all(r: &dyn Records, backend: Backend) {
    records_create_update_delete(r).await;
    records_versions_are_never_reused(r).await;
    records_keep_any_key_part(r).await;
    records_list_pages_in_key_order(r).await;
    records_watch_snapshot_then_live(r).await;
    records_next_id_is_unique(r).await;
    records_concurrent_updates(r, backend).await;
}

/// Epochs increase; a held lease goes to one holder at a time (or, in one
/// process, to every caller); renew keeps it, release frees it, expiry
/// frees it after the TTL and the backend's margin.
pub async fn leases(l: &dyn Leases, backend: Backend) {
    let ttl = Duration::from_secs(30);
    let before = Instant::now();
    let a = l.acquire("sweep/blobs", ttl).await.unwrap().unwrap();
    assert_eq!(a.name, "sweep/blobs");
    assert!(a.valid_until >= before + ttl && a.valid_until <= Instant::now() + ttl);
    let second = l.acquire("sweep/blobs", ttl).await.unwrap();
    let current = if backend.single_process_leases {
        let b2 = second.expect("one process: granted at once");
        assert!(b2.epoch > a.epoch, "a new grant is a new epoch");
        b2
    } else {
        assert!(
            second.is_none(),
            "{}: a held lease is refused",
            backend.name
        );
        // Another name is its own lease.
        let other = l.acquire("sweep/temp", ttl).await.unwrap().unwrap();
        l.release(other).await.unwrap();
        a.clone()
    };
    let renewed = l.renew(&current, ttl).await.unwrap().unwrap();
    assert_eq!(
        (renewed.epoch, &renewed.name),
        (current.epoch, &current.name)
    );
    assert!(renewed.valid_until >= current.valid_until);
    l.release(renewed).await.unwrap();
    let c = l.acquire("sweep/blobs", ttl).await.unwrap().unwrap();
    assert!(
        c.epoch > current.epoch,
        "released: taken again at a higher epoch"
    );
    // Expiry: a short lease, not renewed, is free after its TTL and margin.
    let short = Duration::from_millis(300);
    let s = l.acquire("job/expiring", short).await.unwrap().unwrap();
    tokio::time::sleep(short + backend.lease_margin + Duration::from_millis(500)).await;
    let t = l.acquire("job/expiring", ttl).await.unwrap().unwrap();
    assert!(t.epoch > s.epoch);
    if !backend.single_process_leases {
        // The old holder's renewal fails: it lost the lease.
        assert!(l.renew(&s, ttl).await.unwrap().is_none());
    }
}

fn digest(byte: u8) -> Digest {
    Digest(format!("sha256:{}", hex::encode([byte; 32])))
}

async fn read_all(mut r: BlobReader) -> Vec<u8> {
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    out
}

/// Components are stored once per digest and read back whole.
pub async fn blobs_components(s: &dyn Blobs) {
    let d = digest(0xab);
    assert!(s.get_component(&d).await.unwrap().is_none());
    let big: Bytes = (0..300_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    s.put_component(&d, big.clone()).await.unwrap();
    // Same digest again: the first bytes stay.
    s.put_component(&d, Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert_eq!(s.get_component(&d).await.unwrap().unwrap(), big);
    let bad = Digest("../../etc/passwd".into());
    assert!(s.put_component(&bad, Bytes::new()).await.is_err());
    assert!(s.get_component(&bad).await.is_err());
    s.delete_component(&d).await.unwrap();
    s.delete_component(&d).await.unwrap();
    assert!(s.get_component(&d).await.unwrap().is_none());
}

/// Data blobs stream in chunk by chunk and read from any offset.
pub async fn blobs_stream_and_offsets(s: &dyn Blobs, backend: Backend) {
    let mut sink = s.create().await.unwrap();
    let mut want = Vec::new();
    // 40 chunks of 10 000 bytes: several 128 KiB object chunks.
    for i in 0..40u8 {
        let chunk = vec![i; 10_000];
        want.extend_from_slice(&chunk);
        sink.write(Bytes::from(chunk)).await.unwrap();
    }
    let (id, size) = sink.finish().await.unwrap();
    assert_eq!(size, 400_000);
    assert!(id.as_str().starts_with("data-") && id.as_str().len() == 37);
    let (total, r) = s.open(&id, 0).await.unwrap().unwrap();
    assert_eq!(total, 400_000);
    assert_eq!(read_all(r).await, want);
    for offset in [1, 131_072, 200_000, 399_990, 400_000] {
        let (total, r) = s.open(&id, offset).await.unwrap().unwrap();
        assert_eq!(total, 400_000);
        assert_eq!(
            read_all(r).await,
            want[offset as usize..],
            "offset {offset}"
        );
    }
    // An empty blob.
    let (empty, n) = s.create().await.unwrap().finish().await.unwrap();
    assert_eq!(n, 0);
    let (total, r) = s.open(&empty, 0).await.unwrap().unwrap();
    assert_eq!((total, read_all(r).await.len()), (0, 0));
    if backend.reads_survive_delete {
        let (_, r) = s.open(&id, 0).await.unwrap().unwrap();
        s.delete(&id).await.unwrap();
        assert_eq!(read_all(r).await, want, "a reader outlives a delete");
    }
    s.delete(&id).await.unwrap();
    s.delete(&id).await.unwrap();
    assert!(s.open(&id, 0).await.unwrap().is_none());
    assert!(s.open(&BlobId("../store.redb".into()), 0).await.is_err());
    s.delete(&empty).await.unwrap();
}

/// An abandoned upload never becomes a blob; `settled` lists finished blobs
/// past the grace period (and, where tracked, only recorded ones).
pub async fn blobs_uploads_and_settled(s: &dyn Blobs, backend: Backend) {
    let mut dropped = s.create().await.unwrap();
    dropped.write(Bytes::from_static(b"half")).await.unwrap();
    drop(dropped);
    let mut open = s.create().await.unwrap();
    open.write(Bytes::from_static(b"x")).await.unwrap();
    assert!(s.settled(Duration::ZERO).await.unwrap().is_empty());
    let (id, _) = open.finish().await.unwrap();
    if backend.tracks_recorded {
        assert!(
            s.settled(Duration::ZERO).await.unwrap().is_empty(),
            "finished but not recorded: still an upload"
        );
    }
    s.recorded(&id).await;
    // A finished blob's timestamp may be a little behind this clock.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.settled(Duration::ZERO).await.unwrap(), vec![id.clone()]);
    assert!(
        s.settled(Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty(),
        "finished just now: not older than an hour's grace"
    );
    s.delete(&id).await.unwrap();
    assert!(s.settled(Duration::ZERO).await.unwrap().is_empty());
}

/// Every Blobs check, in sequence, on one store.
pub async fn blobs_all(s: &dyn Blobs, backend: Backend) {
    blobs_components(s).await;
    blobs_stream_and_offsets(s, backend).await;
    blobs_uploads_and_settled(s, backend).await;
}

// ---- DeliveryQueues ----

/// The dedup window the queue tests ingest with.
const WINDOW: Duration = Duration::from_secs(600);

fn cloud_event(id: &str) -> String {
    format!(r#"{{"specversion":"1.0","id":"{id}","source":"/conformance","type":"t"}}"#)
}

fn event_id(l: &Leased) -> String {
    let v: serde_json::Value = serde_json::from_str(l.event.get()).unwrap();
    v["id"].as_str().unwrap_or_default().to_string()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Leases until `n` entries of `sub` are held (a cluster backend may hand an
/// entry out a moment after its ingest returned), for at most 10 s.
async fn lease_n(q: &dyn DeliveryQueues, sub: SubId, n: usize) -> Vec<Leased> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "leased {} of {n} entries within 10 s",
            out.len()
        );
        let page = q.lease(sub, n - out.len()).await.unwrap();
        if page.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        out.extend(page);
    }
    out
}

/// Waits (at most 10 s) until `sub`'s counts satisfy `ok`.
async fn counts_until(
    q: &dyn DeliveryQueues,
    sub: SubId,
    ok: impl Fn(&QueueCounts) -> bool,
) -> QueueCounts {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counts = q.counts(sub).await.unwrap();
        if ok(&counts) {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "counts of {sub:?} stayed at {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An ingest fans each event out to its subscriptions, reports what it did,
/// and drops a repeat within the window; leases hand entries out in order,
/// each once while held; acknowledged entries leave the queue.
pub async fn queues_ingest_lease_ack(q: &dyn DeliveryQueues) {
    let (s1, s2) = (SubId(0x11), SubId(0x12));
    q.create_queue(s1).await.unwrap();
    q.create_queue(s2).await.unwrap();
    let events = [cloud_event("1"), cloud_event("2"), cloud_event("3")];
    let dedup = |id| {
        Some(Dedup {
            topic: "t",
            source: "/conformance",
            id,
        })
    };
    let batch = [
        Enqueue {
            event: &events[0],
            subs: &[s1, s2],
            dedup: dedup("1"),
            log_seq: None,
        },
        Enqueue {
            event: &events[1],
            subs: &[s1],
            dedup: dedup("2"),
            log_seq: None,
        },
        Enqueue {
            event: &events[2],
            subs: &[],
            dedup: dedup("3"),
            log_seq: None,
        },
    ];
    let report = q.ingest(&batch, WINDOW).await.unwrap();
    assert_eq!(
        (
            report.accepted,
            report.duplicates,
            report.deliveries,
            report.dropped
        ),
        (3, 0, 3, 1)
    );
    let mut per_sub = report.per_sub.clone();
    per_sub.sort_unstable();
    assert_eq!(per_sub, vec![(s1, 2), (s2, 1)]);
    // The same event again within the window queues nothing.
    let again = q.ingest(&batch[..1], WINDOW).await.unwrap();
    assert_eq!(
        (again.accepted, again.duplicates, again.deliveries),
        (0, 1, 0)
    );

    let leased = lease_n(q, s1, 2).await;
    let ids: Vec<String> = leased.iter().map(event_id).collect();
    assert_eq!(ids, ["1", "2"], "enqueue order");
    let since = now_ms() - 60_000;
    for l in &leased {
        assert_eq!((l.attempts, l.last_outcome.as_deref()), (0, None));
        assert!(
            l.enqueued_ms > since && l.enqueued_ms <= now_ms() + 5_000,
            "{l:?}"
        );
        assert!(l.size >= l.event.get().len(), "{l:?}");
    }
    // Held entries are not handed out again.
    assert!(q.lease(s1, 10).await.unwrap().is_empty());
    assert_eq!(lease_n(q, s2, 1).await.len(), 1);
    assert_eq!(q.counts(s1).await.unwrap().depth(), 2);
    q.ack(s1, leased.into_iter().map(|l| l.token).collect())
        .await
        .unwrap();
    q.flush().await.unwrap();
    counts_until(q, s1, |c| c.depth() == 0).await;
    assert!(q.lease(s1, 10).await.unwrap().is_empty());
}

/// A retry keeps the entry with its attempt state; a dead letter moves it
/// out of the queue with its record; a redrive brings it back, fresh.
pub async fn queues_retry_dead_letter_redrive(q: &dyn DeliveryQueues) {
    let s = SubId(0x21);
    q.create_queue(s).await.unwrap();
    let event = cloud_event("r1");
    let batch = [Enqueue {
        event: &event,
        subs: &[s],
        dedup: None,
        log_seq: None,
    }];
    q.ingest(&batch, WINDOW).await.unwrap();
    let mut entry = lease_n(q, s, 1).await.remove(0);
    let attempted = now_ms();
    entry.attempts = 1;
    entry.last_outcome = Some("HTTP 500".into());
    entry.last_attempt_ms = Some(attempted);
    entry.not_before_ms = attempted + 700;
    q.retry(s, &entry).await.unwrap();
    q.flush().await.unwrap();
    let entry = if q.redelivers_retries() {
        // Handed out again when due, not before, with its attempt state.
        assert!(q.lease(s, 10).await.unwrap().is_empty(), "due in 700 ms");
        let again = lease_n(q, s, 1).await.remove(0);
        assert!(now_ms() >= attempted + 600, "redelivered before its delay");
        assert_eq!(
            (
                again.attempts,
                again.last_outcome.as_deref(),
                again.last_attempt_ms
            ),
            (1, Some("HTTP 500"), Some(attempted))
        );
        again
    } else {
        // The worker keeps it and schedules it itself; the queue still holds it.
        assert_eq!(q.counts(s).await.unwrap().depth(), 1);
        entry
    };
    let record = serde_json::to_vec(&serde_json::json!({
        "event": serde_json::from_str::<serde_json::Value>(&event).unwrap(),
        "deadLetterReason": "MaxDeliveryAttemptsExceeded",
    }))
    .unwrap();
    q.dead_letter(s, entry.token, record.clone()).await.unwrap();
    q.flush().await.unwrap();
    counts_until(q, s, |c| c.depth() == 0 && c.dead == 1).await;
    let page = q.dead_letters(s, None, 10).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].1, record);
    assert_eq!(page.next, None);

    assert_eq!(q.redrive(s, Some(&["other".to_string()])).await.unwrap(), 0);
    assert_eq!(q.redrive(s, Some(&["r1".to_string()])).await.unwrap(), 1);
    assert!(q.dead_letters(s, None, 10).await.unwrap().items.is_empty());
    let back = lease_n(q, s, 1).await.remove(0);
    assert_eq!((event_id(&back), back.attempts), ("r1".to_string(), 0));
    q.ack(s, vec![back.token]).await.unwrap();
    q.flush().await.unwrap();
    counts_until(q, s, |c| *c == QueueCounts::default()).await;
}

/// Dead letters page by sequence; dropping a queue removes its entries and
/// dead letters, and a second drop is harmless.
pub async fn queues_pages_and_drop(q: &dyn DeliveryQueues) {
    let s = SubId(0x31);
    q.create_queue(s).await.unwrap();
    let events: Vec<String> = (0..4).map(|i| cloud_event(&format!("d{i}"))).collect();
    let batch: Vec<Enqueue> = events
        .iter()
        .map(|e| Enqueue {
            event: e,
            subs: std::slice::from_ref(&s),
            dedup: None,
            log_seq: None,
        })
        .collect();
    q.ingest(&batch, WINDOW).await.unwrap();
    let leased = lease_n(q, s, 4).await;
    for l in leased.into_iter().take(3) {
        let record = format!(r#"{{"event":{}}}"#, l.event.get()).into_bytes();
        q.dead_letter(s, l.token, record).await.unwrap();
    }
    q.flush().await.unwrap();
    counts_until(q, s, |c| c.dead == 3).await;
    let first = q.dead_letters(s, None, 2).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let after: u64 = first.next.as_deref().unwrap().parse().unwrap();
    assert_eq!(after, first.items[1].0);
    let rest = q.dead_letters(s, Some(after), 2).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.next, None);
    assert!(rest.items[0].0 > after);

    q.drop_queue(s).await.unwrap();
    q.drop_queue(s).await.unwrap();
    assert_eq!(q.counts(s).await.unwrap(), QueueCounts::default());
    assert!(q.dead_letters(s, None, 10).await.unwrap().items.is_empty());
}

/// `lease_wait` on an empty queue: shared queues hold the request and hand
/// out an entry ingested meanwhile as soon as it is stored (well before the
/// wait ends), or nothing once the wait ends; the others answer at once.
pub async fn queues_lease_wait(q: &dyn DeliveryQueues) {
    let s = SubId(0x41);
    q.create_queue(s).await.unwrap();
    let shared = q.lease_time().is_some();
    let started = Instant::now();
    let empty = q
        .lease_wait(s, 10, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(empty.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the wait ended"
    );

    let event = cloud_event("w1");
    let batch = [Enqueue {
        event: &event,
        subs: std::slice::from_ref(&s),
        dedup: None,
        log_seq: None,
    }];
    let started = Instant::now();
    let (waited, ingested) = tokio::join!(q.lease_wait(s, 10, Duration::from_secs(30)), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        q.ingest(&batch, WINDOW).await
    });
    ingested.unwrap();
    let mut got = waited.unwrap();
    if shared {
        assert_eq!(got.len(), 1, "the entry ingested during the wait");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "handed out when stored, not when the 30 s wait ended"
        );
    } else {
        got.extend(lease_n(q, s, 1).await);
    }
    assert_eq!(event_id(&got[0]), "w1");
    q.ack(s, got.into_iter().map(|l| l.token).collect())
        .await
        .unwrap();
    q.flush().await.unwrap();
    counts_until(q, s, |c| c.ready == 0 && c.leased == 0).await;
    q.drop_queue(s).await.unwrap();
}

/// Every DeliveryQueues test.
pub async fn queues_all(q: &dyn DeliveryQueues) {
    queues_ingest_lease_ack(q).await;
    queues_retry_dead_letter_redrive(q).await;
    queues_pages_and_drop(q).await;
    queues_lease_wait(q).await;
}

// ---- ChangeLog ----

/// Reads (at most 10 s) until the read reaches `seq`: a cluster backend's
/// router may see an append a moment after it returned.
async fn read_upto(log: &dyn ChangeLog, seq: u64) -> crate::changelog::LogRead {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = log.read(10).await.unwrap();
        if read.upto.is_some_and(|u| u >= seq) {
            return read;
        }
        assert!(
            Instant::now() < deadline,
            "the log never showed entry {seq}: {read:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn logged_event(n: u32, ty: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"specversion":"1.0","id":"log-{n}","source":"/conformance","type":"{ty}"}}"#
    ))
}

/// Appends are numbered in order; the router reads after its position and
/// gets the same entries until it acknowledges them; inspection sees routed
/// and unrouted entries; the routing step (`ingest_routed`) queues entries
/// and moves the position in one call.
pub async fn changelog(log: &dyn ChangeLog, queues: &dyn DeliveryQueues, backend: Backend) {
    let empty = log.read(10).await.unwrap();
    assert_eq!((empty.entries.len(), empty.upto), (0, None));
    let a = log
        .append(Feed::Data, "c/1", logged_event(1, "wasmgrid.data.created"))
        .await
        .unwrap();
    let b = log
        .append(
            Feed::Algorithms,
            "c/2",
            logged_event(2, "wasmgrid.algorithms.deployed"),
        )
        .await
        .unwrap();
    let c = log
        .append(
            Feed::Jobs,
            "c/3",
            logged_event(3, "wasmgrid.jobs.completed"),
        )
        .await
        .unwrap();
    assert!(a < b && b < c, "{a} {b} {c}");
    let read = read_upto(log, c).await;
    let got: Vec<(u64, Feed)> = read.entries.iter().map(|l| (l.seq, l.feed)).collect();
    assert_eq!(
        got,
        [(a, Feed::Data), (b, Feed::Algorithms), (c, Feed::Jobs)]
    );
    assert_eq!(
        read.entries[1].event,
        logged_event(2, "wasmgrid.algorithms.deployed")
    );
    assert_eq!(read.upto, Some(c));
    // Not acknowledged: the same entries again.
    assert_eq!(log.read(10).await.unwrap(), read);
    log.ack(c).await.unwrap();
    assert_eq!(log.read(10).await.unwrap().upto, None);

    // A job end announced twice.
    let d = log
        .append(
            Feed::Jobs,
            "c/3",
            logged_event(3, "wasmgrid.jobs.completed"),
        )
        .await
        .unwrap();
    let again = log.read(10).await.unwrap();
    if backend.dedups_appends {
        assert_eq!(
            d, c,
            "{}: a duplicate append answers the first number",
            backend.name
        );
        assert_eq!(again.upto, None);
    } else {
        assert!(d > c);
        assert_eq!(read_upto(log, d).await.upto, Some(d));
        log.ack(d).await.unwrap();
    }

    // The router's step: queue and acknowledge together.
    let s = SubId(0x41);
    queues.create_queue(s).await.unwrap();
    let e = log
        .append(Feed::Data, "c/5", logged_event(5, "wasmgrid.data.deleted"))
        .await
        .unwrap();
    let read = read_upto(log, e).await;
    assert_eq!(read.upto, Some(e));
    let text = String::from_utf8(read.entries[0].event.to_vec()).unwrap();
    let routed = queues
        .ingest_routed(
            &[Enqueue {
                event: &text,
                subs: &[s],
                dedup: None,
                log_seq: Some(e),
            }],
            e,
        )
        .await
        .unwrap();
    assert_eq!(routed.deliveries, 1);
    assert_eq!(log.read(10).await.unwrap().upto, None);
    let leased = lease_n(queues, s, 1).await;
    assert_eq!(event_id(&leased[0]), "log-5");

    // Inspection: routed entries are kept.
    let all = log.inspect(0, 100).await.unwrap();
    let seqs: Vec<u64> = all.iter().map(|l| l.seq).collect();
    assert!(seqs.starts_with(&[a, b, c]), "{seqs:?}");
    assert_eq!(seqs.last(), Some(&e));
    let page = log.inspect(a, 2).await.unwrap();
    assert_eq!(page.iter().map(|l| l.seq).collect::<Vec<_>>(), [b, c]);
}

// ---- DataFiles ----

fn file_record(size: u64, blob: Option<&str>, folder: bool, expires: Option<u64>) -> Vec<u8> {
    crate::files::record::encode(&crate::files::FileRecord {
        size,
        content_type: "text/plain".into(),
        etag: format!("\"e{size}\""),
        last_modified: "2026-01-02T03:04:05.123Z".into(),
        blob: blob.map(str::to_string),
        folder,
        expires,
    })
}

fn file_event(key: &str, kind: &str) -> Vec<u8> {
    format!(
        r#"{{"specversion":"1.0","id":"{kind}:{key}","source":"/conformance","type":"wasmgrid.data.{kind}"}}"#
    )
    .into_bytes()
}

fn file_write(key: &str, content: &str) -> crate::files::FileWrite {
    crate::files::FileWrite {
        key: key.to_string(),
        record: file_record(content.len() as u64, None, false, None),
        blob: None,
        inline: b(content),
        event: Some(file_event(key, "created")),
        new_collection: Bytes::from_static(b"{\"implicit\":true}"),
    }
}

/// The ids of the next `n` events the log shows, acknowledging them; then
/// checks that no more come.
async fn drain_events(log: &dyn ChangeLog, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut ids = Vec::new();
    while ids.len() < n {
        let read = log.read(100).await.unwrap();
        for e in &read.entries {
            let v: serde_json::Value = serde_json::from_slice(&e.event).unwrap();
            ids.push(v["id"].as_str().unwrap().to_string());
        }
        if let Some(upto) = read.upto {
            log.ack(upto).await.unwrap();
        } else {
            assert!(
                Instant::now() < deadline,
                "the log showed {} of {n} events: {ids:?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let more = log.read(100).await.unwrap();
    assert!(
        more.entries.is_empty(),
        "unexpected events {:?}",
        more.entries
    );
    if let Some(upto) = more.upto {
        log.ack(upto).await.unwrap();
    }
    ids
}

fn level_names(level: &crate::files::Level) -> Vec<String> {
    use crate::files::Listed;
    level
        .entries
        .iter()
        .map(|e| match e {
            Listed::Folder(n) => format!("{n}/"),
            Listed::File(n, _) => n.clone(),
        })
        .collect()
}

fn no_delete_event(key: &str, rec: &crate::files::FileRecord) -> Option<Vec<u8>> {
    (!rec.folder).then(|| file_event(key, "deleted"))
}

/// Writes, reads, one-level and recursive listings, folders, deletes (with
/// the folders they leave empty), counters and change events, the same on
/// every backend.
pub async fn files_all(f: &dyn crate::files::DataFiles, log: &dyn ChangeLog) {
    use crate::files::{NotCounted, Occupancy, Written};
    // Writes and reads; events in order, one per write.
    let batch: Vec<_> = ["o/c/a", "o/c/b/x", "o/c/b/y", "o/c/d/e/f", "o/c/z"]
        .iter()
        .map(|k| file_write(k, &format!("content of {k}")))
        .collect();
    let written = f.write(&batch).await.unwrap();
    assert!(written.iter().all(|w| *w
        == Written::Done {
            replaced_blob: None
        }));
    let got = f.read("o/c/b/x").await.unwrap().unwrap();
    assert_eq!(got.inline.as_deref(), Some(&b"content of o/c/b/x"[..]));
    assert_eq!(f.stat("o/c/a").await.unwrap().unwrap().size, 16);
    assert!(f.read("o/c/nope").await.unwrap().is_none());
    let many = f.read_many(&["o/c/z", "o/c/nope", "o/c/a"]).await.unwrap();
    assert_eq!(
        many.iter().map(Option::is_some).collect::<Vec<_>>(),
        [true, false, true]
    );
    let ids = drain_events(log, 5).await;
    assert_eq!(
        ids,
        ["o/c/a", "o/c/b/x", "o/c/b/y", "o/c/d/e/f", "o/c/z"].map(|k| format!("created:{k}"))
    );

    // Overwrites name the blob they replace.
    let mut big = file_write("o/c/a", "");
    big.record = file_record(1 << 20, Some("blob-1"), false, None);
    big.blob = Some("blob-1".into());
    f.write(&[big]).await.unwrap();
    assert!(f.read("o/c/a").await.unwrap().unwrap().inline.is_none());
    let replaced = f
        .write(&[file_write("o/c/a", "small again")])
        .await
        .unwrap();
    assert_eq!(
        replaced,
        [Written::Done {
            replaced_blob: Some("blob-1".into())
        }]
    );
    drain_events(log, 2).await;

    // Folders: a marker makes a path a folder; it cannot be made twice.
    f.create_folder("o/c/m/", file_record(0, None, true, None))
        .await
        .unwrap();
    assert!(matches!(
        f.create_folder("o/c/m/", file_record(0, None, true, None))
            .await,
        Err(StoreError::Exists { .. })
    ));
    assert!(matches!(
        f.create_folder("o/c/z/", file_record(0, None, true, None))
            .await,
        Err(StoreError::Exists { .. })
    ));
    assert_eq!(
        f.write(&[file_write("o/c/m", "x")]).await.unwrap(),
        [Written::IsFolder]
    );
    assert_eq!(f.occupancy("o/c/m/").await.unwrap(), Occupancy::MarkerOnly);
    assert_eq!(f.occupancy("o/c/b/").await.unwrap(), Occupancy::Occupied);
    assert_eq!(f.occupancy("o/c/q/").await.unwrap(), Occupancy::Empty);

    // One level: files and folders in key order, paged by `next`.
    let root = f.list_level("o/c/", "o/c/", 100).await.unwrap();
    assert_eq!(level_names(&root), ["a", "b/", "d/", "m/", "z"]);
    assert!(root.exists && root.next.is_none());
    let first = f.list_level("o/c/", "o/c/", 2).await.unwrap();
    assert_eq!(level_names(&first), ["a", "b/"]);
    let next = first.next.clone().unwrap();
    let second = f.list_level("o/c/", &next, 2).await.unwrap();
    assert_eq!(level_names(&second), ["d/", "m/"]);
    let third = f
        .list_level("o/c/", &second.next.clone().unwrap(), 2)
        .await
        .unwrap();
    assert_eq!(level_names(&third), ["z"]);
    assert!(third.next.is_none());
    let marker_only = f.list_level("o/c/m/", "o/c/m/", 10).await.unwrap();
    assert!(marker_only.exists && marker_only.entries.is_empty());
    assert!(!f.list_level("o/c/q/", "o/c/q/", 10).await.unwrap().exists);

    // Recursively: every file in key order, markers left out, paged.
    let mut tree = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = f.list_tree("o/c/", after.as_deref(), 2, 0).await.unwrap();
        tree.extend(page.items.iter().map(|i| i.key.clone()));
        assert!(page.items.iter().all(|i| i.inline.is_none()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(tree, ["o/c/a", "o/c/b/x", "o/c/b/y", "o/c/d/e/f", "o/c/z"]);
    let with_content = f.list_tree("o/c/b/", None, 10, 1000).await.unwrap();
    assert_eq!(
        with_content.items[1].inline.as_deref(),
        Some(&b"content of o/c/b/y"[..])
    );
    assert_eq!(f.count_tree("o/c/").await.unwrap(), 5);
    assert_eq!(f.count_tree("o/c/b/").await.unwrap(), 2);

    // Deletes: the last file of a folder takes the folder (and its empty
    // parents) out of the listing.
    let removed = f.delete("o/c/d/e/f", &no_delete_event).await.unwrap();
    assert_eq!(removed.unwrap().size, "content of o/c/d/e/f".len() as u64);
    assert!(
        f.delete("o/c/d/e/f", &no_delete_event)
            .await
            .unwrap()
            .is_none()
    );
    let root = f.list_level("o/c/", "o/c/", 100).await.unwrap();
    assert_eq!(level_names(&root), ["a", "b/", "m/", "z"]);
    assert_eq!(f.occupancy("o/c/d/").await.unwrap(), Occupancy::Empty);
    drain_events(log, 1).await;
    // A path deleted and written again is listed again, with its event.
    f.write(&[file_write("o/c/d/e/f", "again")]).await.unwrap();
    assert_eq!(
        level_names(&f.list_level("o/c/", "o/c/", 100).await.unwrap()),
        ["a", "b/", "d/", "m/", "z"]
    );
    assert_eq!(drain_events(log, 1).await, ["created:o/c/d/e/f"]);

    // A whole tree, marker included.
    f.create_folder("o/c/b/k/", file_record(0, None, true, None))
        .await
        .unwrap();
    let removed = f.delete_tree("o/c/b/", &no_delete_event).await.unwrap();
    assert_eq!(removed.files, 2);
    assert_eq!(f.occupancy("o/c/b/").await.unwrap(), Occupancy::Empty);
    assert_eq!(
        level_names(&f.list_level("o/c/", "o/c/", 100).await.unwrap()),
        ["a", "d/", "m/", "z"]
    );
    let mut deleted = drain_events(log, 2).await;
    deleted.sort();
    assert_eq!(deleted, ["deleted:o/c/b/x", "deleted:o/c/b/y"]);

    // Counters: concurrent increments are never lost; one event each.
    let counter = |v: u64| {
        (
            file_record(v.to_string().len() as u64, None, false, None),
            Some(file_event(&format!("n={v}"), "created")),
        )
    };
    let tries = (0..8).map(|_| async {
        f.increment("o/k/n", 2, b("{}"), &counter)
            .await
            .unwrap()
            .unwrap()
    });
    let mut values = futures::future::join_all(tries).await;
    values.sort_unstable();
    assert_eq!(values, (1..=8).map(|i| i * 2).collect::<Vec<u64>>());
    let got = f.read("o/k/n").await.unwrap().unwrap();
    assert_eq!(got.inline.as_deref(), Some(&b"16"[..]));
    let mut events = drain_events(log, 8).await;
    events.sort();
    let mut expected: Vec<String> = (1..=8).map(|i| format!("created:n={}", i * 2)).collect();
    expected.sort();
    assert_eq!(events, expected);
    assert_eq!(
        f.increment("o/c/z", 1, Bytes::new(), &counter)
            .await
            .unwrap(),
        Err(NotCounted::NotACounter)
    );
    assert_eq!(
        f.increment("o/k/n", u64::MAX, Bytes::new(), &counter)
            .await
            .unwrap(),
        Err(NotCounted::Overflow)
    );

    // Temp files: expired ones are not listed and are swept without events.
    let mut old = file_write("o/t/old", "old");
    old.record = file_record(3, Some("blob-old"), false, Some(1));
    old.blob = Some("blob-old".into());
    old.event = None;
    let mut fresh = file_write("o/t/fresh", "fresh");
    fresh.event = None;
    f.write(&[old, fresh]).await.unwrap();
    assert_eq!(
        level_names(&f.list_level("o/t/", "o/t/", 10).await.unwrap()),
        ["fresh"]
    );
    let swept = f.delete_expired("o/t/", 10).await.unwrap();
    assert_eq!(
        (swept.files, swept.blobs),
        (1, vec!["blob-old".to_string()])
    );
    assert!(f.stat("o/t/old").await.unwrap().is_none());

    // Blob references: every record naming a blob, paged by key.
    let mut blobbed = file_write("o/c/big", "");
    blobbed.record = file_record(1 << 20, Some("blob-2"), false, None);
    blobbed.blob = Some("blob-2".into());
    blobbed.event = None;
    f.write(&[blobbed]).await.unwrap();
    let mut refs = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = f.blob_references(after.as_deref(), 2).await.unwrap();
        refs.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(refs, ["blob-2"]);
    drain_events(log, 0).await;
}

// ---- JobQueue ----

/// The record update the job tests use: the record counts the files
/// recorded (not those done already).
fn count_recorded(current: &[u8], files: &[crate::jobqueue::Recorded]) -> Result<Vec<u8>, String> {
    let n: usize = std::str::from_utf8(current)
        .map_err(|e| e.to_string())?
        .parse()
        .map_err(|e: std::num::ParseIntError| e.to_string())?;
    let new = files
        .iter()
        .filter(|f| **f != crate::jobqueue::Recorded::AlreadyDone)
        .count();
    Ok((n + new).to_string().into_bytes())
}

/// Finished files are recorded once (outputs, progress, record), an output
/// onto a folder records the folder's progress, nothing is written for a job
/// without a record, `close` writes the summary with the final record, and
/// progress pages in `rel` order within one job.
pub async fn jobqueue_all(
    q: &dyn crate::jobqueue::JobQueue,
    r: &dyn Records,
    f: &dyn crate::files::DataFiles,
) {
    use crate::files::Written;
    use crate::jobqueue::{FinishedFile, Recorded};
    let has_file = |key: &'static str| async move { f.stat(key).await.unwrap().is_some() };
    let counted = &count_recorded;

    // Once per file.
    r.create(Bucket::Jobs, "job-1", b("0")).await.unwrap();
    let mut with_blob = file_write("o/j/out/c.txt", "");
    with_blob.blob = Some("blob-c".into());
    let files = vec![
        FinishedFile {
            rel: "a.txt",
            output: Some(file_write("o/j/out/a.txt", "A")),
            progress: b"{\"ok\":1}",
        },
        FinishedFile {
            rel: "b.txt",
            output: None,
            progress: b"{\"ok\":0}",
        },
        FinishedFile {
            rel: "c.txt",
            output: Some(with_blob),
            progress: b"{\"ok\":1}",
        },
    ];
    let folder = |_: usize| b"{\"folder\":1}".to_vec();
    let done = q.finish("job-1", &files, &folder, counted).await.unwrap();
    assert_eq!(done.files, vec![Recorded::Done; 3]);
    assert_eq!(done.record, b"3");
    assert!(done.unused_blobs.is_empty());
    assert!(has_file("o/j/out/a.txt").await);
    assert_eq!(
        q.finished("job-1", &["a.txt", "b.txt", "z.txt"])
            .await
            .unwrap(),
        vec![true, true, false]
    );
    // Again: all done already, nothing counted twice, the blob unused.
    let again = q.finish("job-1", &files, &folder, counted).await.unwrap();
    assert_eq!(again.files, vec![Recorded::AlreadyDone; 3]);
    assert_eq!(again.record, b"3");
    assert_eq!(again.unused_blobs, ["blob-c"]);
    assert_eq!(
        &r.get(Bucket::Jobs, "job-1").await.unwrap().unwrap().value[..],
        b"3"
    );

    // An output onto a folder.
    r.create(Bucket::Jobs, "job-2", b("0")).await.unwrap();
    f.create_folder("o/j/out2/a.txt/", file_record(0, None, true, None))
        .await
        .unwrap();
    let onto_folder = vec![FinishedFile {
        rel: "a.txt",
        output: Some(file_write("o/j/out2/a.txt", "A")),
        progress: b"ok",
    }];
    let folder_progress = |i: usize| format!("folder {i}").into_bytes();
    let done = q
        .finish("job-2", &onto_folder, &folder_progress, counted)
        .await
        .unwrap();
    assert_eq!(done.files, vec![Recorded::OutputIsFolder]);
    let page = q.list_progress("job-2", None, 10).await.unwrap();
    assert_eq!(
        page.items,
        vec![("a.txt".to_string(), b"folder 0".to_vec())]
    );

    // No record, nothing written.
    let err = q
        .finish("job-9", &onto_folder, &folder_progress, counted)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("job-9 has no record"), "{err}");
    assert_eq!(q.finished("job-9", &["a.txt"]).await.unwrap(), vec![false]);
    let err = q
        .close(
            "job-9",
            &[file_write("o/j/out9/_summary.json", "{}")],
            counted,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("job-9 has no record"), "{err}");
    assert!(!has_file("o/j/out9/_summary.json").await);

    // Close: the summary with the final record.
    let (written, record) = q
        .close(
            "job-1",
            &[file_write("o/j/out/_summary.json", "{}")],
            counted,
        )
        .await
        .unwrap();
    assert_eq!(
        written,
        vec![Written::Done {
            replaced_blob: None
        }]
    );
    assert_eq!(record, b"3");
    assert!(has_file("o/j/out/_summary.json").await);

    // Progress pages in rel order, one job at a time.
    for job in ["job-3", "job-30"] {
        r.create(Bucket::Jobs, job, b("0")).await.unwrap();
        let progress: Vec<String> = ["c", "a", "b"]
            .iter()
            .map(|x| format!("{job}:{x}"))
            .collect();
        let files: Vec<FinishedFile> = ["c", "a", "b"]
            .iter()
            .zip(&progress)
            .map(|(rel, p)| FinishedFile {
                rel,
                output: None,
                progress: p.as_bytes(),
            })
            .collect();
        q.finish(job, &files, &|_| Vec::new(), counted)
            .await
            .unwrap();
    }
    let first = q.list_progress("job-3", None, 2).await.unwrap();
    let rels: Vec<&str> = first.items.iter().map(|(rel, _)| rel.as_str()).collect();
    assert_eq!(rels, ["a", "b"]);
    assert_eq!(first.next.as_deref(), Some("b"));
    let second = q
        .list_progress("job-3", first.next.as_deref(), 2)
        .await
        .unwrap();
    assert_eq!(second.items, vec![("c".to_string(), b"job-3:c".to_vec())]);
    assert_eq!(second.next, None);
}
