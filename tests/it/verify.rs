//! `crmdump verify` accepts a sound export and names every kind of mismatch.

use std::path::Path;

use crate::support::*;

fn verify(path: &Path) -> (Option<i32>, String) {
    let out = run(crmdump().args(["verify", path.to_str().unwrap()]));
    (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn verify_accepts_a_sound_export_and_names_each_mismatch() {
    for format in ["csv", "parquet"] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(crmdump()
            .args(["export", "--source", "sandbox", "--sandbox-scale", "60", "--no-history", "--date", DATE])
            .args(["--format", format, "--dest", dir.path().to_str().unwrap()]));
        assert_success(&out);
        let day = dir.path().join(DATE);
        let (code, stdout) = verify(dir.path());
        assert_eq!(code, Some(0), "{stdout}");
        assert!(stdout.contains("0 problems"));
        assert_eq!(verify(&day).0, Some(0), "a day folder verifies too");

        let ext = if format == "csv" { "csv.gz" } else { "parquet" };
        let corrupt = day.join(format!("OWNERS/part-00000.{ext}"));
        let mut bytes = std::fs::read(&corrupt).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&corrupt, &bytes).unwrap();
        std::fs::remove_file(day.join(format!("PIPELINES/part-00000.{ext}"))).unwrap();
        std::fs::write(day.join(format!("OWNERS/part-00007.{ext}")), b"stray").unwrap();
        let (code, stdout) = verify(&day);
        assert_eq!(code, Some(1), "{stdout}");
        assert!(stdout.contains(&format!("OWNERS/part-00000.{ext}: sha256")), "{stdout}");
        assert!(
            stdout.contains(&format!("PIPELINES/part-00000.{ext}: listed in the manifest but missing")),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("OWNERS/part-00007.{ext}: not listed")), "{stdout}");

        std::fs::remove_file(day.join("_manifest.json")).unwrap();
        let (code, stdout) = verify(&day);
        assert_eq!(code, Some(1), "{stdout}");
    }
}
