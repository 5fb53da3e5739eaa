//! The optional configuration file (`--config FILE` or `FHIRSTREAM_CONFIG`)
//! and `fhirstream config`, which prints the effective configuration.
//!
//! The file is TOML whose keys are the flag names of the settings (every
//! flag with a `FHIRSTREAM_*` fallback), e.g. `nats-url = "nats://..."`.
//! Its values become clap's defaults before the command line is parsed, so
//! the precedence is flag > environment > file > built-in default and
//! every value goes through the same parser as the flag would. Clap stays
//! the one description of the settings: nothing here lists them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory as _, FromArgMatches as _};

use crate::config::{Cli, Command};

/// The id clap gives the config-file argument (the `Cli::config_file` field).
const CONFIG_ID: &str = "config_file";

/// Parses the process's arguments with its config file, or prints the
/// problem and exits (2, as clap does for other usage errors).
pub fn parse_or_exit() -> Cli {
    match parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(LoadError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the config file {} is not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("the config file {} has an unknown setting `{key}`{hint}", path.display())]
    Unknown { path: PathBuf, key: String, hint: String },
    #[error("the config file {} has an invalid value for `{key}`: {message}", path.display())]
    Invalid { path: PathBuf, key: String, message: String },
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

/// Parses `argv` (program name first) with the config file it names, if any.
pub fn parse_from<I, T>(argv: I) -> Result<Cli, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    // Kept as declared: setting defaults reorders clap's arguments, and the
    // rendered file should follow the order of `--help`.
    let declared = with_config_flag(Cli::command());
    let mut cmd = declared.clone();
    if let Some(path) = config_path(&cmd, &argv) {
        let table = read(&path)?;
        cmd = apply(cmd, &path, &table)?;
    }
    let matches = cmd.clone().try_get_matches_from(&argv)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let Command::Config(args) = &mut cli.command {
        let sub = matches.subcommand_matches("config").expect("the config subcommand matched");
        let sub_cmd = declared.find_subcommand("config").expect("the config subcommand exists");
        args.effective = render(&[(&declared, &matches), (sub_cmd, sub)]);
    }
    Ok(cli)
}

/// Lets every subcommand take `--config` too (`fhirstream serve --config
/// f.toml`); not global, because `tenants configure` has a `--config` of
/// its own.
fn with_config_flag(cmd: clap::Command) -> clap::Command {
    let flag = cmd.get_arguments().find(|a| a.get_id() == CONFIG_ID).expect("Cli has --config").clone();
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    names.into_iter().fold(cmd, |cmd, name| {
        let flag = flag.clone();
        cmd.mut_subcommand(name, |sc| sc.arg(flag))
    })
}

/// The config file named on the command line (before or after the
/// subcommand) or in `FHIRSTREAM_CONFIG`. A lenient parse finds it, so a
/// setting only the file provides is not yet missing.
fn config_path(cmd: &clap::Command, argv: &[OsString]) -> Option<PathBuf> {
    let matches = cmd.clone().ignore_errors(true).try_get_matches_from(argv).ok()?;
    let top = (matches.value_source(CONFIG_ID), matches.get_one::<PathBuf>(CONFIG_ID));
    let sub = matches
        .subcommand()
        .and_then(|(_, m)| m.try_get_one::<PathBuf>(CONFIG_ID).ok().flatten().map(|p| (m.value_source(CONFIG_ID), p)));
    match (top, sub) {
        ((_, _), Some((Some(ValueSource::CommandLine), p))) => Some(p.clone()),
        ((_, Some(p)), _) => Some(p.clone()),
        (_, Some((_, p))) => Some(p.clone()),
        _ => None,
    }
}

fn read(path: &Path) -> Result<toml::Table, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.into(), source })?;
    text.parse::<toml::Table>().map_err(|e| LoadError::Syntax { path: path.into(), message: e.to_string() })
}

/// A setting is an argument with an environment fallback; its key is its
/// long flag name.
fn is_setting(arg: &clap::Arg) -> bool {
    arg.get_env().is_some() && arg.get_long().is_some() && arg.get_id() != CONFIG_ID
}

/// Makes every key of `table` the default of the settings of that name, in
/// the top-level command and each subcommand, after checking it.
fn apply(mut cmd: clap::Command, path: &Path, table: &toml::Table) -> Result<clap::Command, LoadError> {
    for (key, value) in table {
        // (subcommand or None for the top level, argument id)
        let mut targets: Vec<(Option<String>, clap::Id)> = Vec::new();
        let mut check: Option<clap::Arg> = None;
        let mut consider = |sub: Option<&str>, arg: &clap::Arg| {
            if is_setting(arg) && arg.get_long() == Some(key.as_str()) {
                targets.push((sub.map(str::to_owned), arg.get_id().clone()));
                check.get_or_insert_with(|| arg.clone());
            }
        };
        cmd.get_arguments().for_each(|a| consider(None, a));
        for sc in cmd.get_subcommands() {
            sc.get_arguments().for_each(|a| consider(Some(sc.get_name()), a));
        }
        let Some(arg) = check else {
            let kebab = key.replace('_', "-");
            let hint = if kebab != *key && table_knows(&cmd, &kebab) {
                format!(" (keys are flag names: did you mean `{kebab}`?)")
            } else {
                " (keys are the flag names of `fhirstream serve --help`, e.g. `nats-url`)".into()
            };
            return Err(LoadError::Unknown { path: path.into(), key: key.clone(), hint });
        };
        let invalid = |message: String| LoadError::Invalid { path: path.into(), key: key.clone(), message };
        let values = scalars(&arg, value).map_err(invalid)?;
        validate(&arg, &values).map_err(invalid)?;
        for (sub, id) in targets {
            let set = |a: clap::Arg| a.required(false).default_values(values.clone());
            cmd = match sub {
                None => cmd.mut_arg(id, set),
                Some(sub) => cmd.mut_subcommand(sub, |sc| sc.mut_arg(id, set)),
            };
        }
    }
    Ok(cmd)
}

fn table_knows(cmd: &clap::Command, key: &str) -> bool {
    let known = |a: &clap::Arg| is_setting(a) && a.get_long() == Some(key);
    cmd.get_arguments().any(known) || cmd.get_subcommands().any(|sc| sc.get_arguments().any(known))
}

/// The value(s) clap should see for one key.
fn scalars(arg: &clap::Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    let flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
    let many = matches!(arg.get_action(), ArgAction::Append);
    let one = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err("expected a string, a number or a boolean".to_owned()),
    };
    match value {
        toml::Value::Boolean(_) if flag => one(value).map(|v| vec![v]),
        _ if flag => Err("expected true or false".into()),
        toml::Value::Array(items) if many => items.iter().map(one).collect(),
        toml::Value::Array(_) => Err("expected one value, not a list".into()),
        _ => one(value).map(|v| vec![v]),
    }
}

/// Runs the values through the flag's own parser, so the file accepts
/// exactly what the command line does.
fn validate(arg: &clap::Arg, values: &[String]) -> Result<(), String> {
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return Ok(());
    }
    let long = arg.get_long().expect("settings have a long flag");
    let probe = arg.clone().required(false).env(None::<&str>).default_values(Vec::<String>::new());
    let mut argv: Vec<String> = Vec::new();
    for v in values {
        argv.push(format!("--{long}={v}"));
    }
    clap::Command::new("fhirstream").no_binary_name(true).arg(probe).try_get_matches_from(argv).map(drop).map_err(|e| {
        let text = e.to_string();
        let useful = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("For more information"));
        useful.collect::<Vec<_>>().join(" ").trim_start_matches("error: ").to_owned()
    })
}

/// The effective settings of `levels` (a command and its matches, outer
/// first) as a TOML config file. Secrets are commented out and redacted,
/// so feeding the output back never installs a placeholder as a secret.
fn render(levels: &[(&clap::Command, &ArgMatches)]) -> String {
    let mut out = String::from(
        "# fhirstream effective configuration (flag > FHIRSTREAM_* environment > config file > default).\n\
         # Secrets are redacted: give them through their environment variables.\n",
    );
    for (cmd, matches) in levels {
        for arg in cmd.get_arguments().filter(|a| is_setting(a)) {
            let key = arg.get_long().expect("settings have a long flag");
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
            if let Some(help) = arg.get_help() {
                out.push_str(&format!("\n# {} ({env})\n", help.to_string().replace('\n', " ")));
            } else {
                out.push_str(&format!("\n# ({env})\n"));
            }
            out.push_str(&line(arg, key, matches));
        }
    }
    out
}

fn line(arg: &clap::Arg, key: &str, matches: &ArgMatches) -> String {
    let id = arg.get_id().as_str();
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return format!("{key} = {}\n", matches.get_flag(id));
    }
    let raw: Vec<String> =
        matches.get_raw(id).map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect()).unwrap_or_default();
    if raw.is_empty() {
        return format!("# {key} = (unset)\n");
    }
    if arg.is_hide_env_values_set() {
        return format!("# {key} = \"<redacted>\"\n");
    }
    let value = if matches!(arg.get_action(), ArgAction::Append) {
        toml::Value::Array(raw.iter().map(|v| toml::Value::String(redact_url(v))).collect())
    } else {
        let v = &raw[0];
        match v.parse::<i64>() {
            Ok(i) => toml::Value::Integer(i),
            Err(_) => toml::Value::String(redact_url(v)),
        }
    };
    format!("{key} = {value}\n")
}

/// A URL with its password replaced (database and NATS URLs may carry one).
pub fn redact_url(value: &str) -> String {
    match url::Url::parse(value) {
        Ok(mut u) if u.password().is_some() => {
            if u.set_password(Some("REDACTED")).is_ok() {
                u.to_string()
            } else {
                value.to_owned()
            }
        }
        _ => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_inside_a_url_is_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_url("postgres://fhir:s3cret@db.internal:5432/fhirstream"),
            "postgres://fhir:REDACTED@db.internal:5432/fhirstream"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn the_tenant_configuration_flag_is_not_taken_for_a_config_file() {
        let argv = ["fhirstream", "tenants", "configure", "acme", "--name", "A", "--config", "{\"allowed_types\":[]}"];
        let Command::Tenants(t) = parse_from(argv).unwrap().command else { panic!("not tenants") };
        match t.action {
            crate::config::TenantAction::Configure { config, .. } => assert_eq!(config, "{\"allowed_types\":[]}"),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_still_checked_without_a_file() {
        assert!(parse_from(["fhirstream", "serve", "--listen", "nowhere"]).is_err());
        assert!(parse_from(["fhirstream", "serve", "--listen", "127.0.0.1:1"]).is_ok());
    }
}
