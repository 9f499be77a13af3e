//! Throughput of the CPU-bound parts of an export, each through the code the export runs:
//! a page of JSON records (with property history) into Arrow batches, reported in bytes of
//! JSON per second; then the split, CSV encoding, the gzip part chunker and the Parquet
//! encoder, reported in bytes of CSV per second.
//!
//! `cargo bench --bench encode`

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crmdump::internals::{
    BatchBuilder, CsvGzipWriter, ObjectStream, OutputFormat, PartSink, PropertyDefinition, page_batches,
    property_column, split_objects, standard_type,
};

/// Discards parts but counts their bytes.
#[derive(Default)]
struct Discard(u64);

impl PartSink for Discard {
    fn begin_part(&mut self, index: usize) -> crmdump::Result<String> {
        Ok(format!("T/part-{index:05}.csv.gz"))
    }
    fn write(&mut self, bytes: &[u8]) -> crmdump::Result<()> {
        self.0 += bytes.len() as u64;
        Ok(())
    }
    fn finish_part(&mut self) -> crmdump::Result<()> {
        Ok(())
    }
    fn abort_part(&mut self) -> crmdump::Result<()> {
        Ok(())
    }
}

/// A contacts-like stream with 60 properties of mixed types.
fn stream() -> ObjectStream {
    let kinds = ["string", "number", "datetime", "enumeration", "bool", "date"];
    let names: Vec<String> = (0..60).map(|i| format!("property_{i:02}")).collect();
    let props = names
        .iter()
        .enumerate()
        .map(|(i, n)| PropertyDefinition {
            name: n.clone(),
            property_type: kinds[i % kinds.len()].to_string(),
            column: property_column(n),
        })
        .collect();
    ObjectStream::new(standard_type("contacts").unwrap().to_object_type(), props)
}

/// The value of property `i` (`p`) in record `r`, by property type.
fn sample_value(p: &PropertyDefinition, r: usize, i: usize) -> String {
    match p.property_type.as_str() {
        "number" => format!("{}.{}", r * 7 + i, r % 100),
        "datetime" => "2025-03-04T05:06:07.890Z".to_string(),
        "bool" => "true".to_string(),
        "date" => "2025-03-04".to_string(),
        _ => format!("value {r} of {i}, with \"quotes\""),
    }
}

fn page(stream: &ObjectStream, rows: usize, ingested: &Arc<str>) -> RecordBatch {
    let mut b = BatchBuilder::new(stream.raw.clone(), ingested.clone(), rows);
    for r in 0..rows {
        let id = (100_000 + r).to_string();
        b.push(Some("0-1"));
        b.push(Some(&id));
        b.push(Some("2024-01-01T00:00:00.000Z"));
        b.push(Some("2024-06-01T12:00:00.000Z"));
        b.push(Some("false"));
        b.push(None);
        for (i, p) in stream.properties.iter().enumerate() {
            let v = sample_value(p, r, i);
            b.push_canonical(if (r + i) % 7 == 0 { None } else { Some(&v) });
        }
        b.end_row();
    }
    b.finish().unwrap()
}

fn csv_bytes(batch: &RecordBatch) -> u64 {
    let rows = crmdump::internals::Rows::new(batch);
    let mut buf = Vec::new();
    (0..batch.num_rows())
        .map(|r| {
            buf.clear();
            rows.append(r, &mut buf);
            buf.len() as u64
        })
        .sum()
}

/// A HubSpot list page of `rows` records of `stream` with every property and, for every
/// third property, five historical values: the shape the export reads most of.
fn json_page(stream: &ObjectStream, rows: usize) -> Vec<u8> {
    let records: Vec<serde_json::Value> = (0..rows)
        .map(|r| {
            let mut properties = serde_json::Map::new();
            let mut history = serde_json::Map::new();
            for (i, p) in stream.properties.iter().enumerate() {
                let value = sample_value(p, r, i);
                if i % 3 == 0 {
                    let entries: Vec<serde_json::Value> = (0..5)
                        .map(|k| {
                            serde_json::json!({"value": format!("{value} v{k}"), "timestamp": format!("2025-0{}-01T00:00:00.000Z", 5 - k),
                                "sourceType": "CRM_UI", "sourceId": "userId:123", "updatedByUserId": 123})
                        })
                        .collect();
                    history.insert(p.name.clone(), entries.into());
                }
                properties.insert(p.name.clone(), value.into());
            }
            serde_json::json!({"id": (100_000 + r).to_string(), "properties": properties,
                "propertiesWithHistory": history, "createdAt": "2024-01-01T00:00:00.000Z",
                "updatedAt": "2024-06-01T12:00:00.000Z", "archived": false})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"results": records, "paging": {"next": {"after": "100100"}}})).unwrap()
}

fn benches(c: &mut Criterion) {
    let ingested: Arc<str> = "2026-11-23T00:00:00.000Z".into();
    let s = stream();

    let body = json_page(&s, 50);
    let mut g = c.benchmark_group("page_50x60_with_history");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("json_to_arrow", |b| b.iter(|| page_batches(&s, &body, 20, &ingested).unwrap()));
    g.finish();

    let raw = page(&s, 1000, &ingested);
    let typed = split_objects(&s, &raw, &ingested).unwrap().remove(1).batch;
    let csv_len = csv_bytes(&typed);

    let mut g = c.benchmark_group("objects_1000x60");
    g.throughput(Throughput::Bytes(csv_len));
    g.bench_function("split", |b| b.iter(|| split_objects(&s, &raw, &ingested).unwrap()));
    g.bench_function("csv_encode", |b| b.iter(|| csv_bytes(&typed)));
    for level in [1, 5, 6] {
        g.bench_function(format!("csv_gzip_parts_level{level}"), |b| {
            b.iter(|| {
                let mut w = CsvGzipWriter::new("OBJECTS_CONTACTS", &typed.schema(), Discard::default(), 1 << 20, level);
                w.write_batch(&typed).unwrap();
                w.finish().unwrap()
            })
        });
    }
    g.bench_function("parquet_zstd_parts", |b| {
        b.iter(|| {
            let mut w = OutputFormat::Parquet.encoder(&s.table, Discard::default(), 1 << 20, "bench");
            w.write_batch(&typed).unwrap();
            w.finish().unwrap()
        })
    });
    g.finish();
}

criterion_group!(encode, benches);
criterion_main!(encode);
