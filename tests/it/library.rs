//! crmdump as a library: `run::export` and `run::backfill` run without the binary, against the
//! in-process sandbox, and what they commit is read back with the `csv` crate (which the
//! exporter's own writer does not use) and compared with the generator's ground truth.

use std::collections::BTreeSet;
use std::io::Read;

use crmdump::run::{self, BackfillDay, BackfillSettings, ExportSettings, OutputSettings, SourceKind, SourceSettings};

use crate::support::*;

const SEED: u64 = 4;
const SCALE: u64 = 60;

fn source() -> SourceSettings {
    let mut source = SourceSettings::new(SourceKind::Sandbox);
    source.sandbox.seed = SEED;
    source.sandbox.scale = SCALE;
    source.sandbox.anchor = Some(anchor());
    source.objects = Some(vec!["contacts".into(), "deals".into()]);
    source
}

/// The ids in a table's parts, read with the `csv` crate from the gzip parts the manifest lists.
fn ids(day: &std::path::Path, manifest: &serde_json::Value, table: &str) -> BTreeSet<String> {
    let entry = manifest["tables"].as_array().unwrap().iter().find(|t| t["name"] == table).unwrap();
    let mut ids = BTreeSet::new();
    for file in entry["files"].as_array().unwrap() {
        let bytes = std::fs::read(day.join(file["path"].as_str().unwrap())).unwrap();
        let mut text = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut text).unwrap();
        let mut reader = csv::Reader::from_reader(&text[..]);
        let column = reader.headers().unwrap().iter().position(|h| h == "OBJECTID").unwrap();
        for record in reader.records() {
            ids.insert(record.unwrap()[column].to_string());
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_runs_through_the_library_and_says_it_is_the_sandboxs() {
    let dir = tempfile::tempdir().unwrap();
    let date: chrono::NaiveDate = DATE.parse().unwrap();
    let settings = ExportSettings {
        date: Some(date),
        ..ExportSettings::new(source(), OutputSettings::new(dir.path().to_str().unwrap()))
    };
    let outcome = run::export(&settings).await.expect("the export commits");
    let manifest_path = dir.path().join(DATE).join("_manifest.json");
    assert_eq!(outcome.day.manifest_key, format!("{DATE}/_manifest.json"));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["sandbox"], true, "a sandbox export says so");
    assert_eq!(manifest["mode"], "full");
    assert_eq!(manifest["account"].as_str().unwrap(), outcome.day.manifest.account);

    // Every contact the generator holds (live and archived) is in OBJECTS_CONTACTS, once.
    let g = generator(SEED, SCALE);
    let t = g.type_index("contacts").unwrap();
    let expected: BTreeSet<String> =
        (0..g.count(t)).filter(|&i| !g.is_gone(t, i)).map(|i| g.types[t].id_of(i).to_string()).collect();
    assert_eq!(ids(&dir.path().join(DATE), &manifest, "OBJECTS_CONTACTS"), expected);

    // The state was written after the commit: the next date's run is incremental.
    let next = ExportSettings { date: date.succ_opt(), ..settings.clone() };
    let again = run::export(&next).await.expect("the next night commits");
    assert_eq!(again.day.manifest.mode, "incremental");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_runs_through_the_library_day_by_day() {
    let dir = tempfile::tempdir().unwrap();
    let day = |d: &str| d.parse::<chrono::NaiveDate>().unwrap();
    let settings = BackfillSettings {
        source: source(),
        output: OutputSettings::new(dir.path().to_str().unwrap()),
        from: day("2026-10-29"),
        to: day("2026-10-31"),
        force: false,
        progress: Default::default(),
    };
    let mut seen = Vec::new();
    let outcome = run::backfill(&settings, |d| {
        seen.push(match d {
            BackfillDay::Skipped(date) => format!("{date} skipped"),
            BackfillDay::Committed { date, .. } => format!("{date} committed"),
        })
    })
    .await
    .expect("the backfill commits");
    assert_eq!(seen, ["2026-10-29 committed", "2026-10-30 committed", "2026-10-31 committed"]);
    assert_eq!((outcome.exported, outcome.skipped), (3, 0));
    let again = run::backfill(&settings, |_| {}).await.unwrap();
    assert_eq!((again.exported, again.skipped), (0, 3), "committed days are skipped");
    for d in ["2026-10-29", "2026-10-30", "2026-10-31"] {
        assert!(dir.path().join(d).join("_manifest.json").exists(), "{d}");
    }
}
