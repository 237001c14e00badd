//! Keeps deploy/ honest: docker-compose.yml, the Dockerfile and the scripts
//! are read here (no Docker engine is needed) and checked against the
//! services' documented command line and against the `herald` CLI itself.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde_norway::Value;

// The services' documented options (README, "Configuration"), as
// (flag, environment variable).

/// Options every service binary takes.
const SHARED_OPTIONS: &[(&str, &str)] = &[
    ("--database-url", "HERALD_DATABASE_URL"),
    ("--amqp-url", "HERALD_AMQP_URL"),
    ("--queue-prefix", "HERALD_QUEUE_PREFIX"),
    ("--queue-type", "HERALD_QUEUE_TYPE"),
    ("--schedule", "HERALD_SCHEDULE"),
    ("--log-format", "HERALD_LOG_FORMAT"),
    ("--db-pool-size", "HERALD_DB_POOL_SIZE"),
    ("--config-refresh-ms", "HERALD_CONFIG_REFRESH_MS"),
];
/// Options of herald-ingest only.
const INGEST_OPTIONS: &[(&str, &str)] = &[
    ("--listen", "HERALD_LISTEN"),
    ("--max-payload-bytes", "HERALD_MAX_PAYLOAD_BYTES"),
];
/// Options of herald-sender only.
const SENDER_OPTIONS: &[(&str, &str)] = &[
    ("--prefetch", "HERALD_PREFETCH"),
    ("--id-header", "HERALD_ID_HEADER"),
    ("--attempt-header", "HERALD_ATTEMPT_HEADER"),
    ("--extra-ca-file", "HERALD_EXTRA_CA_FILE"),
    ("--write-batch", "HERALD_WRITE_BATCH"),
    ("--drain-timeout-secs", "HERALD_DRAIN_TIMEOUT_SECS"),
];
/// Environment variables the `herald` CLI reads.
const CLI_ENV: &[&str] = &["HERALD_SERVER", "HERALD_TENANT"];
/// Subcommands of the service binaries.
const SERVICE_SUBCOMMANDS: &[&str] = &["serve", "migrate"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn compose() -> Value {
    serde_norway::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is valid YAML")
}

fn services(compose: &Value) -> Vec<(String, Value)> {
    compose["services"]
        .as_mapping()
        .expect("docker-compose.yml has services")
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().expect("service names are strings").to_owned(),
                v.clone(),
            )
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .map(|v| v.as_str().expect("list entries are strings").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A service's command as a list (exec form), or empty.
fn command(service: &Value) -> Vec<String> {
    match &service["command"] {
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        other => strings(other),
    }
}

/// A service's environment variable names, from the mapping or the list form.
fn env_names(service: &Value) -> Vec<String> {
    match &service["environment"] {
        Value::Mapping(m) => m
            .keys()
            .map(|k| k.as_str().expect("env names are strings").to_owned())
            .collect(),
        Value::Sequence(_) => strings(&service["environment"])
            .iter()
            .map(|kv| kv.split('=').next().unwrap_or_default().to_owned())
            .collect(),
        _ => Vec::new(),
    }
}

fn is_migrate(name: &str, service: &Value) -> bool {
    let cmd = command(service);
    name == "migrate"
        && cmd.len() == 2
        && matches!(cmd[0].as_str(), "herald-ingest" | "herald-sender")
        && cmd[1] == "migrate"
}

fn is_herald_image(service: &Value) -> bool {
    !service["build"].is_null()
        || service["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("herald:"))
}

#[test]
fn every_service_has_a_healthcheck_or_is_the_migration() {
    let compose = compose();
    let services = services(&compose);
    assert!(
        services.len() >= 6,
        "rabbitmq, postgres, migrate, ingest, sender, receiver"
    );
    for (name, service) in &services {
        if is_migrate(name, service) {
            assert!(
                service["healthcheck"].is_null(),
                "{name}: a one-shot has no healthcheck"
            );
            assert_eq!(
                service["restart"].as_str(),
                Some("no"),
                "{name} must not restart"
            );
            continue;
        }
        let test = strings(&service["healthcheck"]["test"]);
        assert!(
            test.len() >= 2 && matches!(test[0].as_str(), "CMD" | "CMD-SHELL"),
            "{name}: needs a healthcheck (test: [CMD, ...]), has {:?}",
            service["healthcheck"]
        );
    }
}

#[test]
fn every_dependency_has_a_condition() {
    let compose = compose();
    let services = services(&compose);
    let find = |n: &str| services.iter().find(|(name, _)| name == n).map(|(_, s)| s);
    for (name, service) in &services {
        let Some(deps) = service.get("depends_on") else {
            continue;
        };
        let deps = deps
            .as_mapping()
            .unwrap_or_else(|| panic!("{name}: depends_on must be a mapping with conditions"));
        for (dep, spec) in deps {
            let dep = dep.as_str().unwrap();
            let target = find(dep).unwrap_or_else(|| panic!("{name} depends on unknown {dep}"));
            let condition = spec["condition"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} -> {dep}: no condition"));
            match condition {
                "service_healthy" => assert!(
                    !target["healthcheck"].is_null(),
                    "{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                ),
                "service_completed_successfully" => assert!(
                    is_migrate(dep, target),
                    "{name} waits for {dep} to complete, but it is not the one-shot migration"
                ),
                other => panic!("{name} -> {dep}: condition {other:?} (use service_healthy)"),
            }
        }
    }
    let ingest = find("ingest").expect("an ingest service");
    for dep in ["rabbitmq", "postgres", "migrate"] {
        assert!(
            !ingest["depends_on"][dep].is_null(),
            "ingest must depend on {dep}"
        );
    }
    assert_eq!(
        find("sender").unwrap()["deploy"]["replicas"].as_u64(),
        Some(2)
    );
}

#[test]
fn herald_services_run_herald_binaries_with_documented_options() {
    let compose = compose();
    let mut seen = Vec::new();
    for (name, service) in services(&compose) {
        if !is_herald_image(&service) {
            assert!(
                env_names(&service)
                    .iter()
                    .all(|e| !e.starts_with("HERALD_")),
                "{name} is not a Herald service but sets HERALD_* variables"
            );
            continue;
        }
        let cmd = command(&service);
        let binary = cmd.first().cloned().unwrap_or_default();
        let (options, env_allowed): (Vec<(&str, &str)>, Vec<&str>) = match binary.as_str() {
            "herald-ingest" | "herald-sender" => {
                let own = if binary == "herald-ingest" {
                    INGEST_OPTIONS
                } else {
                    SENDER_OPTIONS
                };
                let options: Vec<_> = SHARED_OPTIONS.iter().chain(own).copied().collect();
                let env = options.iter().map(|(_, e)| *e).collect();
                let sub = cmd.get(1).map_or("serve", String::as_str);
                assert!(
                    SERVICE_SUBCOMMANDS.contains(&sub) || sub.starts_with("--"),
                    "{name}: {binary} has no subcommand {sub:?}"
                );
                (options, env)
            }
            "herald" => {
                // The real CLI parses the command, so compose cannot drift from it.
                herald_cli::Cli::try_parse_from(&cmd)
                    .unwrap_or_else(|e| panic!("{name}: `{}` does not parse: {e}", cmd.join(" ")));
                (Vec::new(), CLI_ENV.to_vec())
            }
            other => panic!(
                "{name}: command must start with herald-ingest, herald-sender or herald, not {other:?}"
            ),
        };
        for arg in cmd.iter().skip(1).filter(|a| a.starts_with("--")) {
            if binary == "herald" {
                continue;
            }
            let flag = arg.split('=').next().unwrap();
            assert!(
                options.iter().any(|(f, _)| *f == flag),
                "{name}: {binary} has no documented option {flag}"
            );
        }
        for var in env_names(&service)
            .iter()
            .filter(|e| e.starts_with("HERALD_"))
        {
            assert!(
                env_allowed.contains(&var.as_str()),
                "{name}: {var} is not a documented environment variable of {binary}"
            );
        }
        seen.push(binary);
    }
    for binary in ["herald-ingest", "herald-sender", "herald"] {
        assert!(seen.iter().any(|b| b == binary), "no service runs {binary}");
    }
}

#[test]
fn dockerfile_builds_and_ships_the_three_binaries() {
    let dockerfile = read("deploy/docker/Dockerfile");
    assert!(dockerfile.contains("FROM rust:1.95-bookworm AS build"));
    assert!(dockerfile.contains("FROM debian:bookworm-slim"));
    assert!(
        dockerfile.contains("-p herald-ingest -p herald-sender -p herald-cli"),
        "builds the three packages"
    );
    for binary in ["herald-ingest", "herald-sender", "herald"] {
        assert!(
            dockerfile.contains(&format!("/out/{binary} "))
                || dockerfile.contains(&format!("/out/{binary}\n")),
            "the runtime image gets {binary}"
        );
    }
    assert!(
        dockerfile.contains("USER herald"),
        "runs as the non-root user herald"
    );
    assert!(dockerfile.contains("ca-certificates"));
    assert!(
        !dockerfile
            .lines()
            .any(|l| l.trim_start().starts_with("ENTRYPOINT")),
        "compose sets the command; no entrypoint"
    );
    let ignore = read(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        ".dockerignore excludes target/"
    );
}

#[test]
fn ci_runs_the_documented_commands() {
    let ci = read(".ci/run");
    for cmd in [
        "cargo fmt --all -- --check",
        "cargo clippy --workspace --all-targets -- -D warnings",
        "cargo test --workspace",
    ] {
        assert!(ci.contains(cmd), ".ci/run must run `{cmd}`");
    }
    assert!(ci.contains("set -euo pipefail"));
}

#[test]
fn scripts_are_valid_bash() {
    let Ok(status) = std::process::Command::new("bash").arg("--version").output() else {
        eprintln!("no bash here; skipping the syntax check");
        return;
    };
    assert!(status.status.success());
    for script in [".ci/run", "deploy/local/run.sh", "deploy/local/services.sh"] {
        let out = std::process::Command::new("bash")
            .arg("-n")
            .arg(root().join(script))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bash -n {script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_local_demo_uses_real_cli_commands() {
    // The herald invocations of deploy/local/run.sh, as the script spells them.
    let script = read("deploy/local/run.sh");
    // (what run.sh contains, the arguments as this test spells them)
    let cases: &[(&str, &[&str])] = &[
        (
            "receive --listen",
            &["receive", "--listen", "127.0.0.1:9000", "--fail-first", "1"],
        ),
        (
            "webhooks list --tenant",
            &["webhooks", "list", "--tenant", "t", "--event", "e"],
        ),
        ("webhooks delete", &["webhooks", "delete", "id"]),
        (
            "webhooks create --tenant",
            &[
                "webhooks",
                "create",
                "--tenant",
                "t",
                "--event",
                "e",
                "--url",
                "http://a/",
                "--header",
                "X-Demo: x",
                "--description",
                "d",
            ],
        ),
        (
            "fire \"$EVENT\" --tenant",
            &["fire", "e", "--tenant", "t", "--json", "{}"],
        ),
        ("--json delivery", &["--json", "delivery", "id"]),
    ];
    for (marker, case) in cases {
        assert!(
            script.contains(marker),
            "run.sh no longer runs `herald {marker}`; update this test"
        );
        herald_cli::Cli::try_parse_from(std::iter::once(&"herald").chain(case.iter()))
            .unwrap_or_else(|e| panic!("herald {}: {e}", case.join(" ")));
    }
}
