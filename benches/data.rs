//! Criterion benchmarks of the data layer's hot loops (`cargo bench --bench data`). The
//! end-to-end figures (ingest rows/s, peak memory) come from `voltlens bench data`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use voltlens::data::anchor::Cutoffs;
use voltlens::data::derive::{CellDerivation, RowDeriver, StepTracker};

/// A 5 Ah cell alternating 1C discharge and charge, one row every 5 s.
fn rows(n: usize) -> Vec<(f64, f32, f32)> {
    (0..n)
        .map(|r| {
            let k = (r % 720) as f32 / 720.0;
            let charging = (r / 720) % 2 == 1;
            let (i, v) = if charging { (5.0, 3.2 + 0.9 * k) } else { (-5.0, 4.1 - 0.9 * k) };
            (r as f64 * 5.0, i, v)
        })
        .collect()
}

fn derive_two_passes(c: &mut Criterion) {
    let data = rows(200_000);
    let mut group = c.benchmark_group("derive");
    group.throughput(Throughput::Elements(data.len() as u64));
    group.bench_function("step tracker + row deriver", |b| {
        b.iter(|| {
            let mut tracker = StepTracker::new(Some(5.0));
            for &(t, i, v) in &data {
                tracker.push(t, i, v, None, None);
            }
            let cell = CellDerivation::from_steps(&tracker, Some(5.0), Cutoffs::default());
            let mut deriver = RowDeriver::new(&cell, tracker.steps());
            data.iter().map(|&(t, i, _)| deriver.next(t, i, None).soc).sum::<f32>()
        })
    });
    group.finish();
}

criterion_group!(benches, derive_two_passes);
criterion_main!(benches);
