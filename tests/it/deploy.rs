//! The deployment recipes in deploy/: the Kubernetes manifests pass the Kubernetes API
//! schemas (kubernetes-validate, strict), every crmdump command line in them and in the
//! Airflow DAG parses, and the DAG compiles. (scripts/check-airflow imports the DAG in Airflow
//! itself; scripts/check-image builds and runs the container image.)

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    let validator = python().parent().unwrap().join("kubernetes-validate");
    Command::new(&validator)
        .args(["--strict", "--no-warn"])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("{} (run scripts/test, which installs it): {e}", validator.display()))
}

/// The `args` of every container in `file`, as YAML reads them.
fn container_args(file: &Path) -> Vec<Vec<String>> {
    const READ: &str = r#"
import json, sys, yaml
found = []
def walk(node):
    if isinstance(node, dict):
        if "containers" in node:
            found.extend(c.get("args", []) for c in node["containers"])
        for value in node.values():
            walk(value)
    elif isinstance(node, list):
        for value in node:
            walk(value)
for doc in yaml.safe_load_all(open(sys.argv[1])):
    walk(doc)
print(json.dumps(found))
"#;
    let out = Command::new(python()).args(["-c", READ]).arg(file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs crmdump with `args` and no credentials: the command line parses (clap would say
/// "Usage:") and stops at the configuration (exit 2), before any network or file access.
fn assert_parses(args: &[String], whence: &str) {
    let out = run(crmdump()
        .args(args)
        .env_remove("CRMDUMP_HUBSPOT_CLIENT_SECRET")
        .env_remove("CRMDUMP_PIPEDRIVE_WEBHOOK_USER")
        .env_remove("CRMDUMP_PIPEDRIVE_WEBHOOK_PASSWORD"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Usage:"), "{whence}: crmdump {args:?} does not parse: {stderr}");
    assert_eq!(out.status.code(), Some(2), "{whence}: {stderr}");
    assert!(stderr.contains("invalid configuration"), "{whence}: {stderr}");
}

#[test]
#[ignore = "needs kubernetes-validate: run scripts/test"]
fn kubernetes_manifests_pass_the_api_schemas_and_their_commands_parse() {
    let files = manifests();
    assert!(files.len() >= 4, "{files:?}");
    let out = validate(&files);
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    for kind in ["cronjob/", "deployment/", "service/", "persistentvolumeclaim/", "secret/"] {
        assert!(said.contains(kind), "a {kind} was validated: {said}");
    }
    // The validator is strict: a misspelt field fails it.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(deploy("kubernetes/cronjob-export.yaml")).unwrap();
    std::fs::write(&broken, text.replace("concurrencyPolicy:", "concurrencyPolicyy:")).unwrap();
    assert!(!validate(&[broken]).status.success(), "a misspelt field is refused");

    let mut commands = 0;
    for file in &files {
        for args in container_args(file) {
            assert_parses(&args, &file.display().to_string());
            commands += 1;
        }
    }
    assert_eq!(commands, 3, "the export, the reconcile and the listener");
}

#[test]
#[ignore = "needs Python: run scripts/test"]
fn the_airflow_dag_compiles_and_its_commands_parse() {
    let dag = deploy("airflow/crmdump_dag.py");
    let out = Command::new(python()).args(["-m", "py_compile"]).arg(&dag).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The DAG's command lines, built as its tasks build them.
    const COMMANDS: &str = r#"
import ast, json, sys
tree = ast.parse(open(sys.argv[1]).read())
found = []
for node in ast.walk(tree):
    if isinstance(node, ast.List) and node.elts and isinstance(node.elts[0], ast.Constant) \
            and node.elts[0].value in ("export", "backfill"):
        found.append([e.value if isinstance(e, ast.Constant) else None for e in node.elts])
print(json.dumps(found))
"#;
    let out = Command::new(python()).args(["-c", COMMANDS]).arg(&dag).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let commands: Vec<Vec<Option<String>>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(commands.len(), 2, "an export and a backfill: {commands:?}");
    for command in commands {
        // Values computed at run time (the account's source, dates) take sample values.
        let mut args: Vec<String> = Vec::new();
        for arg in &command {
            let sample = match args.last().map(String::as_str) {
                Some("--source") => "hubspot",
                Some("--date" | "--from" | "--to") => "2026-11-20",
                Some("--dest") => "s3://my-bucket/crm/{source}/{account}",
                _ => "x",
            };
            args.push(arg.clone().unwrap_or_else(|| sample.to_string()));
        }
        assert_parses(&args, "crmdump_dag.py");
    }
}
