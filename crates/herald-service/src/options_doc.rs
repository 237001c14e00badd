//! Writes the configuration reference (`docs/configuration.md`) from the
//! clap commands themselves, so the options, their environment variables,
//! defaults and help have one source: the `#[arg]` attributes. Each table
//! sits between a pair of markers in the document,
//! `<!-- generated: NAME -->` and `<!-- end generated: NAME -->`; the prose
//! around them is written by hand and kept as it is.
//! `tests/tests/configuration_doc.rs` fails when the file differs from what
//! this module writes (rust-analyzer's `generate_config_documentation` is
//! the model).
//!
//! This module renders text only. It must not read or write files (the test
//! does) and must not know the services' options beyond the clap commands
//! it is given.

use std::fmt::Write as _;

use clap::{Arg, Args as _, CommandFactory};

use crate::CommonOptions;

/// One generated table: where it goes (its marker name) and the options it
/// lists.
pub struct Section {
    marker: &'static str,
    command: clap::Command,
    /// Leaves out the options of [`CommonOptions`], which have their own
    /// table.
    without_common: bool,
}

/// The table of the options both services take.
pub fn common() -> Section {
    Section {
        marker: "common",
        command: CommonOptions::augment_args(clap::Command::new("common")),
        without_common: false,
    }
}

/// The table of one service's own options (the common ones left out),
/// under the marker `marker`.
pub fn service<T: CommandFactory>(marker: &'static str) -> Section {
    Section {
        marker,
        command: T::command(),
        without_common: true,
    }
}

/// Why a document cannot take the generated tables.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocError {
    #[error("the document has no `{0}` marker, or its end marker comes first")]
    MissingMarker(String),
}

/// `doc` with the table of each section between its markers.
pub fn update(doc: &str, sections: &[Section]) -> Result<String, DocError> {
    let mut doc = doc.to_owned();
    for section in sections {
        doc = splice(&doc, section.marker, &table(section))?;
    }
    Ok(doc)
}

/// The start marker of table `name`.
pub fn start_marker(name: &str) -> String {
    format!("<!-- generated: {name} -->")
}

/// The end marker of table `name`.
pub fn end_marker(name: &str) -> String {
    format!("<!-- end generated: {name} -->")
}

/// Replaces what lies between the markers of `name` with `table`.
fn splice(doc: &str, name: &str, table: &str) -> Result<String, DocError> {
    let (start, end) = (start_marker(name), end_marker(name));
    let missing = || DocError::MissingMarker(start.clone());
    let begin = doc.find(&start).ok_or_else(missing)? + start.len();
    let finish = begin + doc[begin..].find(&end).ok_or_else(missing)?;
    Ok(format!("{}\n{table}{}", &doc[..begin], &doc[finish..]))
}

/// The Markdown table of a section's options, in declaration order.
fn table(section: &Section) -> String {
    let common = CommonOptions::augment_args(clap::Command::new("common"));
    let is_common = |arg: &Arg| common.get_arguments().any(|c| c.get_id() == arg.get_id());
    let mut out = String::from("| Option | Environment variable | Default | Description |\n");
    out.push_str("|---|---|---|---|\n");
    for arg in section.command.get_arguments() {
        // Help and version are clap's own; hidden options are not for
        // operators.
        let builtin = matches!(arg.get_id().as_str(), "help" | "version");
        if builtin || arg.is_hide_set() || arg.is_positional() {
            continue;
        }
        if section.without_common && is_common(arg) {
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            flag(arg),
            arg.get_env()
                .map_or_else(|| "none".to_owned(), |env| code(&env.to_string_lossy())),
            default(arg),
            description(arg),
        );
    }
    out
}

/// `` `--flag <VALUE>` ``.
fn flag(arg: &Arg) -> String {
    let long = arg.get_long().unwrap_or_else(|| arg.get_id().as_str());
    match arg.get_value_names() {
        Some([value, ..]) => code(&format!("--{long} <{value}>")),
        _ => code(&format!("--{long}")),
    }
}

/// The default as typed on the command line; `""` for an empty one.
fn default(arg: &Arg) -> String {
    let values: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|value| value.to_string_lossy().into_owned())
        .collect();
    match values.as_slice() {
        [] => "none".to_owned(),
        [one] if one.is_empty() => code("\"\""),
        values => code(&values.join(",")),
    }
}

/// The help text on one line, then the values an enum option accepts.
fn description(arg: &Arg) -> String {
    let help = arg
        .get_long_help()
        .or_else(|| arg.get_help())
        .map(ToString::to_string)
        .unwrap_or_default();
    let mut text = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|value| !value.is_hide_set())
        .map(|value| match value.get_help() {
            Some(help) => format!("{} ({help})", code(value.get_name())),
            None => code(value.get_name()),
        })
        .collect();
    if !values.is_empty() {
        if !text.is_empty() && !text.ends_with('.') {
            text.push('.');
        }
        let _ = write!(text, " Values: {}.", values.join(", "));
    }
    // A `|` would end the table cell.
    text.trim().replace('|', "\\|")
}

/// `text` as Markdown inline code.
fn code(text: &str) -> String {
    format!("`{text}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    #[command(name = "herald-test")]
    struct Args {
        #[command(flatten)]
        common: CommonOptions,
        /// Address of the test endpoint | with a pipe.
        #[arg(long, env = "HERALD_TEST_LISTEN", default_value = "127.0.0.1:1")]
        test_listen: std::net::SocketAddr,
    }

    #[test]
    fn the_common_table_lists_every_common_option() {
        let table = table(&common());
        assert!(table.contains(
            "| `--queue-type <QUEUE_TYPE>` | `HERALD_QUEUE_TYPE` | `quorum` | RabbitMQ queue type"
        ));
        assert!(table.contains("Values: `quorum` (Replicated Raft queues"));
        assert!(table.contains("| `--ssrf-allow <SSRF_ALLOW>` | `HERALD_SSRF_ALLOW` | `\"\"` |"));
        assert!(
            table.contains(
                "| `--encryption-key <ENCRYPTION_KEY>` | `HERALD_ENCRYPTION_KEY` | none |"
            )
        );
        assert!(!table.contains("--help"));
    }

    #[test]
    fn a_service_table_leaves_out_the_common_options() {
        let table = table(&service::<Args>("test"));
        assert!(!table.contains("HERALD_QUEUE_TYPE"));
        // clap drops the doc comment's final period.
        let row = "| `--test-listen <TEST_LISTEN>` | `HERALD_TEST_LISTEN` | `127.0.0.1:1` \
                   | Address of the test endpoint \\| with a pipe |";
        assert!(table.contains(row), "{table}");
    }

    #[test]
    fn update_replaces_only_what_lies_between_the_markers() {
        let doc = "# Title\n\nbefore\n<!-- generated: test -->\nstale\n<!-- end generated: test -->\nafter\n";
        let updated = update(doc, &[service::<Args>("test")]).unwrap();
        assert!(updated.starts_with("# Title\n\nbefore\n<!-- generated: test -->\n| Option |"));
        assert!(updated.ends_with("|\n<!-- end generated: test -->\nafter\n"));
        assert!(!updated.contains("stale"));
        // Updating twice changes nothing.
        assert_eq!(
            update(&updated, &[service::<Args>("test")]).unwrap(),
            updated
        );
        assert_eq!(
            update("no markers", &[common()]),
            Err(DocError::MissingMarker("<!-- generated: common -->".into()))
        );
    }
}
