//! `crmdump.toml` (or `--config FILE`): defaults for any flag, so that cron lines and
//! orchestrator tasks stay short. Every key is a flag's long name (`max_file_size` or
//! `max-file-size`); a flag given on the command line wins over the file. Values are strings,
//! numbers, booleans (a switch such as `no_history = true`) or arrays (joined by commas);
//! `${VAR}` in a string reads the environment. A key that is no flag of any command is an
//! error naming it; secrets are refused, they come from the environment only.
//!
//! The file becomes flags before clap parses them, so one parser and one set of validators
//! serve both the command line and the file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::error::{Error, Result};

/// Read when present and no `--config` is given.
pub const DEFAULT_FILE: &str = "crmdump.toml";

/// The command line with the config file's keys inserted as flags of the subcommand.
pub fn expand_args(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let strings: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let explicit = config_flag(&strings);
    let path = match &explicit {
        Some(p) => PathBuf::from(p),
        None if Path::new(DEFAULT_FILE).exists() => PathBuf::from(DEFAULT_FILE),
        None => return Ok(args),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Config(format!("cannot read the config file {}: {e}", path.display())))?;
    let root = crate::cli::Cli::command();
    let Some((position, sub)) =
        strings.iter().enumerate().skip(1).find_map(|(i, a)| root.find_subcommand(a).map(|s| (i, s.clone())))
    else {
        return Ok(args);
    };
    let flags = flags_from(&text, &path, &root, &sub, &strings)?;
    let mut out = args;
    out.splice(position + 1..position + 1, flags.into_iter().map(OsString::from));
    Ok(out)
}

/// The value of `--config FILE` or `--config=FILE`.
fn config_flag(args: &[String]) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == "--config" { args.get(i + 1).cloned() } else { a.strip_prefix("--config=").map(str::to_string) }
    })
}

/// Flags for `sub` from the TOML `text`, leaving out those the command line already has.
fn flags_from(
    text: &str,
    path: &Path,
    root: &clap::Command,
    sub: &clap::Command,
    given: &[String],
) -> Result<Vec<String>> {
    let where_ = path.display();
    let table: toml::Table =
        text.parse().map_err(|e| Error::Config(format!("the config file {where_} is not valid TOML: {e}")))?;
    let long_names = |c: &clap::Command| -> Vec<String> {
        c.get_arguments().filter_map(|a| a.get_long().map(str::to_string)).collect::<Vec<_>>()
    };
    let known: Vec<String> = root.get_subcommands().flat_map(long_names).chain(long_names(root)).collect();
    // Global flags (quiet, log_format) apply to every command.
    let globals: Vec<String> =
        root.get_arguments().filter(|a| a.is_global_set()).filter_map(|a| a.get_long().map(str::to_string)).collect();
    let here: Vec<String> = long_names(sub).into_iter().chain(globals).collect();
    let mut flags = Vec::new();
    for (key, value) in &table {
        let flag = key.replace('_', "-");
        if is_secret(&flag) {
            return Err(Error::Config(format!(
                "{where_}: '{key}' looks like a secret; secrets come from the environment only (HUBSPOT_ACCESS_TOKEN, the AWS variables), never from a file or a flag"
            )));
        }
        if !known.contains(&flag) {
            return Err(Error::Config(format!(
                "{where_}: unknown key '{key}'; keys are the long names of crmdump's flags (see `crmdump <command> --help`), for example max_file_size"
            )));
        }
        if flag == "config" {
            return Err(Error::Config(format!(
                "{where_}: 'config' cannot name another config file; give it with --config on the command line"
            )));
        }
        if !here.contains(&flag) {
            continue;
        }
        let on_command_line = given.iter().any(|a| a == &format!("--{flag}") || a.starts_with(&format!("--{flag}=")));
        if on_command_line {
            continue;
        }
        match value {
            toml::Value::Boolean(true) => flags.push(format!("--{flag}")),
            toml::Value::Boolean(false) => {}
            other => flags.push(format!("--{flag}={}", scalar(other, key, &where_.to_string())?)),
        }
    }
    Ok(flags)
}

fn scalar(value: &toml::Value, key: &str, file: &str) -> Result<String> {
    Ok(match value {
        toml::Value::String(s) => expand_env(s, key, file)?,
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Array(items) => items.iter().map(|v| scalar(v, key, file)).collect::<Result<Vec<_>>>()?.join(","),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Table(_) => {
            return Err(Error::Config(format!("{file}: '{key}' is a table; keys take plain values")));
        }
    })
}

/// Replaces every `${NAME}` with the environment variable `NAME`.
fn expand_env(text: &str, key: &str, file: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| Error::Config(format!("{file}: '{key}' has a '${{' without its closing '}}'")))?;
        let name = &after[..end];
        let value = std::env::var(name).map_err(|_| {
            Error::Config(format!("{file}: '{key}' reads ${{{name}}}, which is not set in the environment"))
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_secret(flag: &str) -> bool {
    ["token", "secret", "password", "access-key", "api-key"].iter().any(|s| flag.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(toml: &str, args: &[&str]) -> Result<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, toml).unwrap();
        let mut argv: Vec<OsString> = vec!["crmdump".into()];
        argv.extend(args.iter().map(OsString::from));
        argv.extend(["--config".into(), file.into_os_string()]);
        Ok(expand_args(argv)?.iter().map(|a| a.to_string_lossy().into_owned()).collect())
    }

    #[test]
    fn keys_become_flags_the_command_line_wins_and_the_environment_is_read() {
        // SAFETY: tests in this module are the only readers of this variable.
        unsafe { std::env::set_var("CRMDUMP_TEST_BUCKET", "my-bucket") };
        let args = expand(
            "dest = \"s3://${CRMDUMP_TEST_BUCKET}/crm\"\nmax_file_size = \"1MiB\"\nno_history = true\nobjects = [\"contacts\", \"deals\"]\nfrom = \"2026-01-01\"\n",
            &["export", "--max-file-size", "2MiB"],
        )
        .unwrap();
        assert!(args.contains(&"--dest=s3://my-bucket/crm".to_string()), "{args:?}");
        assert!(args.contains(&"--no-history".to_string()) && args.contains(&"--objects=contacts,deals".to_string()));
        assert!(!args.iter().any(|a| a == "--max-file-size=1MiB"), "the command line wins: {args:?}");
        assert!(!args.iter().any(|a| a.starts_with("--from")), "backfill's keys are left to backfill");
        assert_eq!(&args[1], "export");
    }

    #[test]
    fn reconcile_is_a_config_key_of_export_only() {
        let args = expand("reconcile = true\n", &["export"]).unwrap();
        assert!(args.contains(&"--reconcile".to_string()), "{args:?}");
        let args = expand("reconcile = true\n", &["backfill", "--from", "2026-01-01", "--to", "2026-01-02"]).unwrap();
        assert!(!args.contains(&"--reconcile".to_string()), "{args:?}");
    }

    #[test]
    fn global_keys_take_effect_for_every_command() {
        let args = expand("quiet = true\nlog_format = \"json\"\n", &["verify", "./x"]).unwrap();
        assert!(args.contains(&"--quiet".to_string()) && args.contains(&"--log-format=json".to_string()), "{args:?}");
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(&args).unwrap();
        assert!(cli.global.quiet && matches!(cli.global.log_format, crate::cli::LogFormat::Json));
        let e = expand("config = \"other.toml\"\n", &["export"]).unwrap_err().to_string();
        assert!(e.contains("'config'"), "{e}");
    }

    #[test]
    fn unknown_keys_secrets_and_unset_variables_are_errors_naming_them() {
        let e = expand("max_fil_size = 3\n", &["export"]).unwrap_err().to_string();
        assert!(e.contains("unknown key 'max_fil_size'"), "{e}");
        let e = expand("hubspot_access_token = \"pat\"\n", &["export"]).unwrap_err().to_string();
        assert!(e.contains("secret") && e.contains("HUBSPOT_ACCESS_TOKEN") && !e.contains("pat\""), "{e}");
        let e = expand("dest = \"${CRMDUMP_NOT_SET_ANYWHERE}\"\n", &["export"]).unwrap_err().to_string();
        assert!(e.contains("CRMDUMP_NOT_SET_ANYWHERE"), "{e}");
    }
}
