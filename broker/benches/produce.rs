//! Append and read throughput of one partition's log, in records per second.
//!
//! `cargo bench -p eddy-broker --bench produce`. 100-byte values, 1,000 records per batch, as
//! `eddy bench` measures end to end; this isolates the log (no flusher, no runtime).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eddy_broker::log::batch::BatchBuilder;
use eddy_broker::{Log, TopicConfig};

const RECORDS_PER_BATCH: usize = 1_000;

fn batch() -> bytes::BytesMut {
    let mut builder = BatchBuilder::new(0, RECORDS_PER_BATCH * 120);
    for i in 0..RECORDS_PER_BATCH as u64 {
        builder.push(0, Some(&i.to_be_bytes()), Some(&[b'x'; 100]), &[]);
    }
    builder.finish()
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), TopicConfig::default(), 0, 0).expect("open");
    let template = batch();
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(RECORDS_PER_BATCH as u64));
    group.bench_function("append_batch_of_1000", |b| {
        b.iter(|| {
            let mut one = template.clone();
            log.append(&mut one, 0).expect("append")
        })
    });
    group.bench_function("build_batch_of_1000", |b| b.iter(batch));
    group.bench_function("read_batch_of_1000", |b| {
        b.iter(|| log.read(0, 1).expect("read"))
    });
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
