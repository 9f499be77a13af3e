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

/// `verify ROOT` checks the whole root: a date a killed run left without a manifest, a file
/// crmdump did not write, and the upload marker of an older version are each reported with what
/// to do, and the exit is 1; the committed date still verifies on its own.
#[test]
fn verify_of_a_root_names_an_uncommitted_date_and_whatever_is_not_an_export() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().to_str().unwrap();
    let export = |date: &str, scale: &str| {
        let mut c = crmdump();
        c.args(["export", "--source", "sandbox", "--sandbox-scale", scale, "--no-history", "--date", date])
            .args(["--dest", dest]);
        c
    };
    assert_success(&run(&mut export(DATE, "60")));
    assert_eq!(verify(dir.path()).0, Some(0));
    let mut killed = export("2026-11-21", "3000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        dir.path().join("2026-11-21").exists()
    });
    assert!(started, "the second run started writing");
    std::thread::sleep(std::time::Duration::from_millis(300));
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(!dir.path().join("2026-11-21/_manifest.json").exists(), "killed before its commit");
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    std::fs::create_dir_all(dir.path().join("_crmdump/uploads/2026-11-19")).unwrap();
    std::fs::write(dir.path().join("_crmdump/uploads/2026-11-19/abc.json"), b"{}").unwrap();
    let (code, stdout) = verify(dir.path());
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("PROBLEM 2026-11-21/: no manifest") && stdout.contains("export 2026-11-21 again"),
        "{stdout}"
    );
    assert!(stdout.contains("PROBLEM notes.txt: not crmdump's"), "{stdout}");
    assert!(stdout.contains("PROBLEM _crmdump/uploads/2026-11-19/abc.json") && stdout.contains("abort"), "{stdout}");
    let committed = stdout.lines().find(|l| l.starts_with(&format!("{DATE} (daily)"))).expect("the committed date");
    assert!(committed.ends_with(" 0 problems"), "{committed}");
    let (code, _) = verify(&dir.path().join(DATE));
    assert_eq!(code, Some(0), "the committed day folder alone verifies");
}
