//! Subscription matching cost per event at 10,000 subscriptions.
//!
//! Run: `cargo bench -p wasmgrid --bench filter`. 10,000 subscriptions over 200
//! event types and 500 subject prefixes, a third with an advanced filter
//! (`data.confidence` NumberGreaterThan) and a tenth for all types; events drawn
//! from the same distributions.

use criterion::{Criterion, criterion_group, criterion_main};
use wasmgrid::events::filter::{AdvancedFilter, Filter, SubscriptionIndex};

/// A small deterministic generator (no extra dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn bench(c: &mut Criterion) {
    let mut rng = Lcg(42);
    let mut index = SubscriptionIndex::new();
    for id in 0..10_000u64 {
        let all_types = rng.next().is_multiple_of(10);
        let mut f = Filter {
            included_event_types: (!all_types)
                .then(|| vec![format!("com.example.Type{}", rng.next() % 200)]),
            subject_begins_with: Some(format!("/tenants/{}/", rng.next() % 500)),
            ..Default::default()
        };
        if rng.next().is_multiple_of(3) {
            f.advanced_filters.push(AdvancedFilter {
                operator_type: "NumberGreaterThan".into(),
                key: "data.confidence".into(),
                value: Some(serde_json::json!((rng.next() % 100) as f64 / 100.0)),
                values: None,
            });
        }
        index.insert(id, f.compile().expect("valid filter"));
    }
    let events: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            serde_json::json!({
                "specversion": "1.0", "id": format!("e{i}"), "source": "/bench",
                "type": format!("com.example.Type{}", rng.next() % 200),
                "subject": format!("/tenants/{}/files/f{i}.csv", rng.next() % 500),
                "data": {"confidence": (rng.next() % 100) as f64 / 100.0}
            })
        })
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    c.bench_function("match one event against 10,000 subscriptions", |b| {
        b.iter(|| {
            i = (i + 1) % events.len();
            index.matching_into(&events[i], &mut out);
            out.len()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
