//! The README's "Configuration" table is the contract for the services'
//! options: this runs the real `herald-ingest --help` and `herald-sender
//! --help` and checks that the table lists exactly the options, environment
//! variables and defaults each binary prints.
//!
//! The binaries are built first (`cargo build -p herald-ingest -p
//! herald-sender`, same profile and target directory as this test), so the
//! check never runs against stale binaries.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One row of the README's Configuration table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    flag: String,
    env: String,
    /// `None` for "none".
    default: Option<String>,
}

/// The rows of the README's Configuration table, with the binaries each
/// applies to: no qualifier = both; `(ingest)`, `(sender)`, `(ingest, sender)`.
fn readme_table() -> Vec<(Row, bool, bool)> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("README has a Configuration section");
    let section = section.split("\n## ").next().unwrap();
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert!(cells.len() >= 6, "README row has too few cells: {line}");
        let (option, env, default) = (cells[1], cells[2], cells[3]);
        let flag = option
            .split('`')
            .nth(1)
            .unwrap_or_else(|| panic!("no `--flag` in {line}"))
            .to_owned();
        let qualifier = option
            .split_once('(')
            .map(|(_, q)| q.trim_end_matches(')').to_owned());
        let (ingest, sender) = match &qualifier {
            None => (true, true),
            Some(q) => (q.contains("ingest"), q.contains("sender")),
        };
        assert!(
            ingest || sender,
            "README row {flag}: qualifier {qualifier:?} names neither ingest nor sender"
        );
        let env = env.trim_matches('`').to_owned();
        assert!(
            env.starts_with("HERALD_"),
            "README row {flag}: env var {env:?}"
        );
        let default = match default {
            "none" => None,
            d => Some(d.trim_matches('`').to_owned()),
        };
        rows.push((Row { flag, env, default }, ingest, sender));
    }
    assert!(rows.len() >= 10, "README's Configuration table looks empty");
    rows
}

/// `target/<profile>`: this test runs as `target/<profile>/deps/config_table-…`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// Builds herald-ingest and herald-sender (a no-op when they are up to date)
/// into the directory of this test's profile and returns that directory.
fn binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = profile_dir();
        let profile = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let target_dir = dir.parent().unwrap();
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .current_dir(root())
            .args([
                "build",
                "--quiet",
                "-p",
                "herald-ingest",
                "-p",
                "herald-sender",
            ])
            .arg("--target-dir")
            .arg(target_dir);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cargo.arg("--release");
            }
            other => {
                cargo.args(["--profile", other]);
            }
        }
        let out = cargo.output().expect("running cargo build");
        assert!(
            out.status.success(),
            "cargo build -p herald-ingest -p herald-sender failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for binary in ["herald-ingest", "herald-sender"] {
            let path = dir.join(format!("{binary}{}", std::env::consts::EXE_SUFFIX));
            assert!(path.is_file(), "{} was not built", path.display());
        }
        dir
    })
}

/// `binary --help`, run without any HERALD_* variable in its environment
/// (clap prints the current value of an option's variable).
fn help(binary: &str) -> String {
    let path = binaries().join(format!("{binary}{}", std::env::consts::EXE_SUFFIX));
    let mut cmd = Command::new(&path);
    cmd.arg("--help");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            cmd.env_remove(&name);
        }
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    assert!(out.status.success(), "{binary} --help failed");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The text between `[<tag>: ` and its closing `]` in `text`.
fn bracket<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let start = text.find(&format!("[{tag}: "))? + tag.len() + 3;
    let end = text[start..].find(']')? + start;
    Some(&text[start..end])
}

/// Parses clap's help: option lines look like
/// `      --queue-prefix <QUEUE_PREFIX>` followed by an indented description
/// ending in `[env: HERALD_QUEUE_PREFIX=] [default: herald]` (`[env: NAME]`
/// for options with hidden values; no `[default: …]` without a default).
fn help_options(help: &str) -> (Vec<Row>, Vec<String>) {
    let options = help
        .split("\nOptions:\n")
        .nth(1)
        .expect("help has an Options: section");
    // Every option: its lines joined.
    let mut blocks: Vec<String> = Vec::new();
    for line in options.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with('-') && indent <= 6 {
            blocks.push(line.trim().to_owned());
        } else if let Some(block) = blocks.last_mut() {
            block.push(' ');
            block.push_str(line.trim());
        }
    }
    let mut rows = Vec::new();
    let mut without_env = Vec::new();
    for block in blocks {
        let flag = block
            .split_whitespace()
            .map(|w| w.trim_end_matches(','))
            .find(|w| w.starts_with("--"))
            .unwrap_or_else(|| panic!("no long flag in {block:?}"))
            .to_owned();
        let Some(env) = bracket(&block, "env") else {
            without_env.push(flag);
            continue;
        };
        let env = env.split('=').next().unwrap().to_owned();
        let default = bracket(&block, "default").map(str::to_owned);
        rows.push(Row { flag, env, default });
    }
    (rows, without_env)
}

fn check(binary: &str, is_ingest: bool) {
    let help = help(binary);
    let (printed, without_env) = help_options(&help);
    assert_eq!(
        without_env,
        ["--help", "--version"],
        "{binary}: every option is a flag and an environment variable"
    );
    let printed: BTreeSet<Row> = printed.into_iter().collect();
    let documented: BTreeSet<Row> = readme_table()
        .into_iter()
        .filter(|(_, ingest, sender)| if is_ingest { *ingest } else { *sender })
        .map(|(row, _, _)| row)
        .collect();
    let missing: Vec<_> = printed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&printed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README's Configuration table disagrees with `{binary} --help`:\n  \
         printed by {binary} but not in the table (for {binary}): {missing:#?}\n  \
         in the table (for {binary}) but not printed: {extra:#?}"
    );
    for sub in ["serve", "migrate"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "{binary} has no subcommand {sub}"
        );
    }
}

#[test]
fn readme_table_matches_herald_ingest_help() {
    check("herald-ingest", true);
}

#[test]
fn readme_table_matches_herald_sender_help() {
    check("herald-sender", false);
}

#[test]
fn help_parser_reads_clap_output() {
    let help = "Usage: x\n\nOptions:\n      --queue-prefix <QUEUE_PREFIX>\n          Prefix \
                [env: HERALD_QUEUE_PREFIX=] [default: herald]\n      --database-url <URL>\n          \
                Postgres [env: HERALD_DATABASE_URL] [default: postgres://p@h:5432/herald]\n      \
                --extra-ca-file <F>  PEM [env: HERALD_EXTRA_CA_FILE=]\n  -h, --help\n          \
                Print help\n";
    let (rows, without_env) = help_options(help);
    assert_eq!(without_env, ["--help"]);
    assert_eq!(
        rows,
        [
            Row {
                flag: "--queue-prefix".into(),
                env: "HERALD_QUEUE_PREFIX".into(),
                default: Some("herald".into())
            },
            Row {
                flag: "--database-url".into(),
                env: "HERALD_DATABASE_URL".into(),
                default: Some("postgres://p@h:5432/herald".into())
            },
            Row {
                flag: "--extra-ca-file".into(),
                env: "HERALD_EXTRA_CA_FILE".into(),
                default: None
            },
        ]
    );
}
