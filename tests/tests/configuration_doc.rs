//! `docs/configuration.md` is generated from the services' clap structs:
//! this test fails when the file differs from what the code writes, and
//! rewrites it when run with `UPDATE_DOCS=1` (rust-analyzer's
//! `generate_config_documentation` is the model). It never touches the
//! hand-written prose outside the `generated` markers.

use std::path::{Path, PathBuf};

use herald_console::ConsoleArgs;
use herald_ingest::IngestArgs;
use herald_sender::SenderArgs;
use herald_service::options_doc;

const COMMAND: &str = "UPDATE_DOCS=1 cargo test -p herald-tests --test configuration_doc";

fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md")
}

/// The file as it is, and as the code writes it.
fn current_and_generated() -> (String, String) {
    let path = doc_path();
    let current = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let generated = options_doc::update(
        &current,
        &[
            options_doc::common(),
            options_doc::service::<IngestArgs>("herald-ingest"),
            options_doc::service::<SenderArgs>("herald-sender"),
            options_doc::service::<ConsoleArgs>("herald-console"),
        ],
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (current, generated)
}

#[test]
fn configuration_doc_is_up_to_date() {
    let (current, generated) = current_and_generated();
    if generated == current {
        return;
    }
    let path = doc_path();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("updated {}", path.display());
        return;
    }
    let first_difference = current
        .lines()
        .zip(generated.lines())
        .position(|(a, b)| a != b)
        .map_or_else(
            || "the files differ in length".to_owned(),
            |line| format!("first difference at line {}", line + 1),
        );
    panic!(
        "docs/configuration.md is not what the options declare ({first_difference}); \
         rewrite it with\n\n    {COMMAND}\n\nand commit the result"
    );
}

#[test]
fn every_option_of_each_service_is_documented_once() {
    // The generated text, not the file, so that this holds while the other
    // test rewrites the file.
    let (_, doc) = current_and_generated();
    for (binary, variables) in [
        ("herald-ingest", env_vars::<IngestArgs>()),
        ("herald-sender", env_vars::<SenderArgs>()),
        ("herald-console", env_vars::<ConsoleArgs>()),
    ] {
        for env in variables {
            let cell = format!("| `{env}` |");
            assert_eq!(
                doc.matches(&cell).count(),
                1,
                "{binary}: {env} appears once in docs/configuration.md"
            );
        }
    }
}

/// The environment variables a service's command line reads.
fn env_vars<T: clap::CommandFactory>() -> Vec<String> {
    T::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect()
}
