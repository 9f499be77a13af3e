//! The repository as a newcomer reads it: modules import only from the layers below them,
//! every table and column users rely on is documented in `docs/`, and nothing points outside
//! the repository.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// The layers of `src/`, lowest first (docs/ARCHITECTURE.md explains them). A module may
/// import from the layers below its own, never from its own layer's neighbours or above.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["model", "schema", "http"],
    &["extract"],
    &["split"],
    &["write"],
    &["sink"],
    &["ddl", "state", "progress", "webhook"],
    &["pipeline", "status"],
    &["run"],
    &["cli"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The modules of ours that `code` names: `use crate::a::…`, `use crate::{a, b::…}` and
/// inline `crate::a::…` paths.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(inner.split(',').map(|item| ident(item.trim())).filter(|m| !m.is_empty()));
        } else {
            let m = ident(after);
            if !m.is_empty() {
                out.insert(m);
            }
        }
        rest = after;
    }
    out
}

/// Every `src/` module imports only from layers below its own; tests at the bottom of a
/// file (after `#[cfg(test)]`) may use anything. Only a run (and the CLI's `sandbox`
/// command) starts the sandbox.
#[test]
fn modules_import_only_from_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong: Vec<String> = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap().to_string_lossy().to_string();
        if relative == "lib.rs" || relative == "main.rs" {
            continue;
        }
        let module = relative.split('/').next().unwrap().trim_end_matches(".rs").to_string();
        let Some(own) = layer(&module) else {
            wrong
                .push(format!("{relative}: module {module} is in no layer; add it to LAYERS and docs/ARCHITECTURE.md"));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let code = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
        for named in named_modules(code) {
            if named == module {
                continue;
            }
            if named == "sandbox" {
                if module != "cli" && module != "run" {
                    wrong.push(format!("{relative}: only a run or the CLI may start the sandbox"));
                }
                continue;
            }
            match layer(&named) {
                Some(l) if l < own => {}
                Some(_) => wrong.push(format!("{relative}: {module} imports {named}, which is not below it")),
                None => wrong.push(format!("{relative}: imports crate::{named}, which is in no layer")),
            }
        }
    }
    assert!(files.len() > 40, "found the sources ({} files)", files.len());
    assert!(wrong.is_empty(), "imports against the layer order:\n{}", wrong.join("\n"));
}

#[test]
fn the_layer_check_sees_every_form_of_import() {
    let code = "use crate::error::Result;\nuse crate::{schema::X, http};\nlet x = crate::sink::Sink::open(d);";
    let named: Vec<String> = named_modules(code).into_iter().collect();
    assert_eq!(named, ["error", "http", "schema", "sink"]);
}

fn tracked_files() -> Vec<String> {
    let out = Command::new("git")
        .args(["ls-files"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git lists the tracked files");
    assert!(out.status.success(), "git ls-files: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// What in `line` points outside the repository: the shared folder it was built from, its
/// reference documents and specification, or an issue number (the word issue or a hash sign
/// before a number); a GitHub address (`owner/repo` with a number, another project's issue)
/// is not ours.
fn points_outside(line: &str) -> Option<&'static str> {
    // Spelled in pieces so that this file does not match itself.
    let shared = ["..", "/shared"].concat();
    let reference = ["reference", "/"].concat();
    if line.contains(&shared) {
        return Some("the shared folder");
    }
    if line.contains(&reference) {
        return Some("a reference document");
    }
    let bytes = line.as_bytes();
    let word = |at: usize, len: usize| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + len).copied();
        !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !after.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let spec = ["SP", "EC"].concat();
    if line.match_indices(&spec).any(|(at, _)| word(at, spec.len())) {
        return Some("the specification it was built from");
    }
    let lower = line.to_ascii_lowercase();
    for (at, _) in lower.match_indices("issue") {
        let rest = lower[at..].trim_start_matches("issues").trim_start_matches("issue");
        let rest = rest.trim_start_matches(' ').trim_start_matches('#');
        let starts_word = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
        if starts_word && rest.starts_with(|c: char| c.is_ascii_digit()) {
            return Some("an issue number");
        }
    }
    for (at, _) in line.match_indices('#') {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let digit_after = bytes.get(at + 1).is_some_and(u8::is_ascii_digit);
        if digit_after && before.is_none_or(|b| b == b' ' || b == b'(') {
            return Some("an issue number");
        }
    }
    None
}

#[test]
fn the_outside_check_tells_references_from_ordinary_text() {
    assert!(points_outside(&["see ..", "/shared/x.md"].concat()).is_some());
    assert!(points_outside(&["as ", "SP", "EC section 4 says"].concat()).is_some());
    assert!(points_outside(&["fixed in iss", "ue 16"].concat()).is_some());
    assert!(points_outside(&["(", "#12)"].concat()).is_some());
    assert!(points_outside("estuary/connectors#5180 saw disorder").is_none());
    assert!(points_outside("WriterSpec and SPECIAL_VALUE, tissue 3").is_none());
}

/// Someone who clones the repository has only the repository: no tracked file points at the
/// folder it was built from or at an issue number.
#[test]
fn no_tracked_file_points_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut wrong = Vec::new();
    let files = tracked_files();
    // The vendors' specs under fixtures/specs are copies, not our words.
    for file in files.iter().filter(|f| !f.starts_with("fixtures/specs/")) {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else { continue };
        for (n, line) in text.lines().enumerate() {
            if let Some(what) = points_outside(line) {
                wrong.push(format!("{file}:{}: {what}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(files.len() > 50, "git listed the repository ({} files)", files.len());
    assert!(wrong.is_empty(), "{} lines point outside the repository:\n{}", wrong.len(), wrong.join("\n"));
}

/// Every table and every fixed column `crmdump tables --json` prints, for both sandbox
/// flavours, is documented in `docs/` (property and event columns by their naming rule).
#[test]
fn every_table_and_fixed_column_is_documented() {
    let docs_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut docs = String::new();
    for entry in std::fs::read_dir(&docs_dir).expect("docs/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    let documented = |word: &str| docs.contains(&format!("`{word}`"));
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut tables_seen = 0;
    for flavor in ["hubspot", "pipedrive"] {
        let out = run(crmdump().args([
            "tables",
            "--json",
            "--source",
            "sandbox",
            "--sandbox-flavor",
            flavor,
            "--sandbox-scale",
            "20",
        ]));
        assert_success(&out);
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let table: Value = serde_json::from_str(line).unwrap();
            let name = table["table"].as_str().unwrap().to_string();
            tables_seen += 1;
            // Per-type tables are documented by their pattern.
            let pattern = table_pattern(&name);
            if !documented(&pattern) {
                missing.entry(pattern.clone()).or_default().push("(table)".into());
            }
            for column in table["columns"].as_array().unwrap() {
                let column = column["name"].as_str().unwrap();
                let rule = column_rule(&name, column);
                if !documented(&rule) {
                    missing.entry(pattern.clone()).or_default().push(rule);
                }
            }
        }
    }
    for columns in missing.values_mut() {
        columns.sort();
        columns.dedup();
    }
    assert!(tables_seen > 30, "tables --json listed the tables ({tables_seen})");
    assert!(missing.is_empty(), "documented nowhere in docs/ (as `NAME`): {missing:#?}");
}

/// `OBJECTS_CONTACTS` → `OBJECTS_<PLURAL>`, `ASSOCIATIONS_CONTACTS_TO_COMPANIES` →
/// `ASSOCIATIONS_<FROM>_TO_<TO>`, `EVENTS_E_VISITED_PAGE` → `EVENTS_<EVENT>`.
fn table_pattern(name: &str) -> String {
    if name.starts_with("OBJECTS_") {
        "OBJECTS_<PLURAL>".into()
    } else if name.starts_with("ASSOCIATIONS_") {
        "ASSOCIATIONS_<FROM>_TO_<TO>".into()
    } else if name.starts_with("EVENTS_") {
        "EVENTS_<EVENT>".into()
    } else {
        name.into()
    }
}

/// A column as the docs name it: property columns (of object and event tables) and the id
/// columns of per-pair association tables by their naming rule, any other by its name.
fn column_rule(table: &str, column: &str) -> String {
    if column.starts_with("PROPERTY_") {
        "PROPERTY_<NAME>".into()
    } else if table.starts_with("ASSOCIATIONS_") && column.ends_with("_OBJECTID") {
        "<SINGULAR>_OBJECTID".into()
    } else {
        column.into()
    }
}
