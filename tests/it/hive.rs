//! `--layout hive`: `<dest>/<TABLE>/dt=<date>/part-...`, manifests under `_manifests/`,
//! read back as a hive-partitioned dataset by pyarrow; re-runs leave no stale part.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::support::*;

fn export(dest: &Path, date: &str, max: &str) {
    let out = run(crmdump()
        .args(["export", "--source", "sandbox", "--sandbox-scale", "80", "--no-history", "--layout", "hive"])
        .args(["--date", date, "--max-file-size", max, "--dest", dest.to_str().unwrap()]));
    assert_success(&out);
}

fn files_of(root: &Path, date: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for table in std::fs::read_dir(root).unwrap() {
        let dir = table.unwrap().path().join(format!("dt={date}"));
        if let Ok(parts) = std::fs::read_dir(&dir) {
            for p in parts {
                out.insert(p.unwrap().path().strip_prefix(root).unwrap().to_string_lossy().to_string());
            }
        }
    }
    out
}

fn manifest_files(root: &Path, date: &str) -> (serde_json::Value, BTreeSet<String>) {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join(format!("_manifests/{date}.json"))).unwrap()).unwrap();
    let files = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_string()))
        .collect();
    (m, files)
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn hive_layout_partitions_by_date_and_reruns_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    export(root, "2026-11-20", "64KiB");
    export(root, "2026-11-21", "15MiB");
    let first = files_of(root, "2026-11-20");
    let (m, listed) = manifest_files(root, "2026-11-20");
    assert_eq!(m["layout"], "hive");
    assert_eq!(first, listed, "the day's partition folders hold exactly the manifest's files");
    assert!(listed.iter().all(|p| p.contains("/dt=2026-11-20/part-")), "{listed:?}");

    // Re-run the first day with bigger parts: fewer files, none stale; the other day untouched.
    let other_day = files_of(root, "2026-11-21");
    export(root, "2026-11-20", "15MiB");
    let (_, listed) = manifest_files(root, "2026-11-20");
    assert_eq!(files_of(root, "2026-11-20"), listed);
    assert!(listed.len() < first.len());
    assert_eq!(files_of(root, "2026-11-21"), other_day);
    let out = run(crmdump().args(["verify", root.to_str().unwrap()]));
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let days: Vec<&str> = stdout.lines().filter(|l| l.contains(" (hive)")).collect();
    assert!(days.len() == 2 && days.iter().all(|l| l.ends_with(" 0 problems")), "{stdout}");

    // An independent reader sees one table partitioned by dt.
    let python = python();
    let script = "import sys, pyarrow.dataset as ds\n\
        d = ds.dataset(sys.argv[1], format='csv', partitioning='hive')\n\
        t = d.to_table()\n\
        print(t.num_rows, sorted(set(str(v) for v in t.column('dt').to_pylist())))";
    let out = Command::new(python).args(["-c", script]).arg(root.join("OWNERS")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let g = generator(1, 80);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{} ['2026-11-20', '2026-11-21']", 2 * g.owners.len())
    );
}
