//! Keeps deploy/ honest: docker-compose.yml, the Dockerfile, the k8s
//! manifests and the scripts are read here (no Docker engine is needed) and
//! checked against the services' documented options (`docs/configuration.md`)
//! and against the `herald` CLI itself. It lives with the end-to-end tests
//! because it tests the services and deploy/, not the CLI.
//!
//! It only reads files; it must never change one or start a container.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use herald_console::ConsoleArgs;
use serde_norway::Value;

/// A service option as `docs/configuration.md` documents it:
/// (flag, environment variable, applies to ingest, applies to sender,
/// applies to the console).
struct Documented {
    flag: String,
    env: String,
    ingest: bool,
    sender: bool,
    console: bool,
}

/// The rows of the generated tables of `docs/configuration.md` (the
/// `configuration_doc` test keeps them equal to the services' clap
/// structs). The `common` table applies to both services, the
/// `herald-ingest`, `herald-sender` and `herald-console` tables to one.
fn documented_options() -> Vec<Documented> {
    let doc = read("docs/configuration.md");
    let mut rows = Vec::new();
    for (table, ingest, sender, console) in [
        ("common", true, true, false),
        ("herald-ingest", true, false, false),
        ("herald-sender", false, true, false),
        ("herald-console", false, false, true),
    ] {
        let start = format!("<!-- generated: {table} -->");
        let end = format!("<!-- end generated: {table} -->");
        let section = doc
            .split(&start)
            .nth(1)
            .and_then(|rest| rest.split(&end).next())
            .unwrap_or_else(|| panic!("docs/configuration.md has no {table} table"));
        for line in section.lines().filter(|l| l.starts_with("| `--")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // `--flag <VALUE>` or `--flag`.
            let option = cells[1].trim_matches('`');
            let flag = option.split(' ').next().unwrap().to_owned();
            let env = cells[2].trim_matches('`').to_owned();
            rows.push(Documented {
                flag,
                env,
                ingest,
                sender,
                console,
            });
        }
    }
    assert!(
        rows.len() >= 10,
        "docs/configuration.md's tables look empty"
    );
    rows
}

/// The documented (flag, env) pairs of one service binary.
fn options_of(binary: &str) -> Vec<(String, String)> {
    if binary == "herald-console" {
        return console_options();
    }
    documented_options()
        .into_iter()
        .filter(|d| match binary {
            "herald-ingest" => d.ingest,
            "herald-sender" => d.sender,
            other => panic!("{other} is not a service binary"),
        })
        .map(|d| (d.flag, d.env))
        .collect()
}

/// Herald Console's (flag, env) pairs, read from its clap struct
/// (`herald_console::ConsoleArgs`) and checked against
/// `docs/configuration.md`: its own table, plus `HERALD_LOG_FORMAT`, the one
/// option of the common table it takes. It has no database, broker or
/// admin-key option at all.
fn console_options() -> Vec<(String, String)> {
    let command = ConsoleArgs::command();
    let options: Vec<(String, String)> = command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_string_lossy().into_owned();
            let long = arg.get_long()?;
            Some((format!("--{long}"), env))
        })
        .collect();
    assert!(
        options.iter().any(|(_, e)| e == "HERALD_CONSOLE_LISTEN")
            && options
                .iter()
                .any(|(_, e)| e == "HERALD_CONSOLE_INGEST_URL"),
        "ConsoleArgs reads HERALD_CONSOLE_LISTEN and HERALD_CONSOLE_INGEST_URL: {options:?}"
    );
    let documented = documented_options();
    for (flag, env) in &options {
        assert!(
            documented.iter().any(|d| d.flag == *flag
                && d.env == *env
                && (d.console || (d.ingest && d.sender && env == "HERALD_LOG_FORMAT"))),
            "herald-console: {flag} ({env}) is not documented for it in docs/configuration.md"
        );
        assert!(
            !CREDENTIALS.contains(&env.as_str()),
            "herald-console must not take {env}"
        );
    }
    for d in documented.iter().filter(|d| d.console) {
        assert!(
            options.iter().any(|(f, e)| *f == d.flag && *e == d.env),
            "docs/configuration.md documents {} ({}) for herald-console, which ConsoleArgs lacks",
            d.flag,
            d.env
        );
    }
    options
}

/// Variables that hold passwords or keys of the services: the console gets
/// none of them (it acts with the signed-in person's API key only).
const CREDENTIALS: &[&str] = &[
    "HERALD_DATABASE_URL",
    "HERALD_READ_DATABASE_URL",
    "HERALD_AMQP_URL",
    "HERALD_ADMIN_KEY",
    "HERALD_ENCRYPTION_KEY",
    "HERALD_TOKEN",
];

/// Environment variables the `herald` CLI reads.
const CLI_ENV: &[&str] = &[
    "HERALD_SERVER",
    "HERALD_TENANT",
    "HERALD_TOKEN",
    "HERALD_CA_CERT",
    "HERALD_CLIENT_CERT",
    "HERALD_CLIENT_KEY",
];
/// Subcommands of the service binaries.
const SERVICE_SUBCOMMANDS: &[&str] = &["serve", "migrate"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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
        let (options, env_allowed): (Vec<(String, String)>, Vec<String>) = match binary.as_str() {
            "herald-ingest" | "herald-sender" => {
                let options = options_of(&binary);
                let env = options.iter().map(|(_, e)| e.clone()).collect();
                let sub = cmd.get(1).map_or("serve", String::as_str);
                assert!(
                    SERVICE_SUBCOMMANDS.contains(&sub) || sub.starts_with("--"),
                    "{name}: {binary} has no subcommand {sub:?}"
                );
                (options, env)
            }
            "herald-console" => {
                // No subcommands: the console's own parser takes the command.
                ConsoleArgs::try_parse_from(&cmd)
                    .unwrap_or_else(|e| panic!("{name}: `{}` does not parse: {e}", cmd.join(" ")));
                let options = options_of(&binary);
                let env = options.iter().map(|(_, e)| e.clone()).collect();
                (options, env)
            }
            "herald" => {
                // The real CLI parses the command, so compose cannot drift from it.
                herald_cli::Cli::try_parse_from(&cmd)
                    .unwrap_or_else(|e| panic!("{name}: `{}` does not parse: {e}", cmd.join(" ")));
                (Vec::new(), CLI_ENV.iter().map(|e| e.to_string()).collect())
            }
            other => panic!(
                "{name}: command must start with herald-ingest, herald-sender, herald-console or herald, not {other:?}"
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
                env_allowed.contains(var),
                "{name}: {var} is not a documented environment variable of {binary}"
            );
        }
        seen.push(binary);
    }
    for binary in ["herald-ingest", "herald-sender", "herald-console", "herald"] {
        assert!(seen.iter().any(|b| b == binary), "no service runs {binary}");
    }
}

#[test]
fn compose_runs_the_console_against_ingest_without_credentials() {
    let compose = compose();
    let console = find_service(&compose, "console");
    assert!(
        !console.is_null(),
        "docker-compose.yml has a console service"
    );
    assert_eq!(command(&console), ["herald-console"]);
    assert!(
        is_herald_image(&console),
        "the console runs the Herald image"
    );

    // It reaches ingest's gRPC port by its compose name.
    let ingest = find_service(&compose, "ingest");
    let grpc_port = ingest["environment"]["HERALD_LISTEN"]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .expect("ingest sets HERALD_LISTEN");
    assert_eq!(
        console["environment"]["HERALD_CONSOLE_INGEST_URL"].as_str(),
        Some(format!("http://ingest:{grpc_port}").as_str()),
        "the console calls ingest's gRPC port"
    );
    assert!(
        strings(&ingest["ports"]).contains(&format!("{grpc_port}:{grpc_port}")),
        "ingest publishes its gRPC port"
    );
    assert_eq!(
        console["depends_on"]["ingest"]["condition"].as_str(),
        Some("service_healthy"),
        "the console waits for ingest"
    );
    for dep in ["postgres", "rabbitmq", "migrate"] {
        assert!(
            console["depends_on"][dep].is_null(),
            "the console talks to ingest only, not {dep}"
        );
    }

    // No database, broker or admin credentials: nothing but its own options
    // and the log settings, and no value that is a database or broker URL.
    let names = env_names(&console);
    for var in CREDENTIALS {
        assert!(
            !names.iter().any(|n| n == var),
            "console must not get {var}"
        );
    }
    let own: Vec<String> = console_options().into_iter().map(|(_, e)| e).collect();
    for var in &names {
        assert!(
            own.contains(var) || var == "RUST_LOG",
            "console: {var} is not one of herald-console's variables ({own:?})"
        );
    }
    if let Some(env) = console["environment"].as_mapping() {
        for (k, v) in env {
            let v = v.as_str().unwrap_or_default();
            assert!(
                !v.starts_with("postgres") && !v.starts_with("amqp"),
                "console: {k:?} holds a database or broker URL"
            );
        }
    }

    // People open it from the host.
    assert!(
        strings(&console["ports"]).iter().any(|p| p == "8080:8080"),
        "the console publishes :8080"
    );
}

#[test]
fn dockerfile_builds_and_ships_the_four_binaries() {
    let dockerfile = read("deploy/docker/Dockerfile");
    assert!(dockerfile.contains("FROM rust:1.95-bookworm AS build"));
    assert!(dockerfile.contains("FROM debian:bookworm-slim"));
    assert!(
        dockerfile.contains("-p herald-ingest -p herald-sender -p herald-cli -p herald-console"),
        "builds the four packages"
    );
    for binary in ["herald-ingest", "herald-sender", "herald", "herald-console"] {
        assert!(
            dockerfile.contains(&format!("target/dist/{binary} "))
                || dockerfile.contains(&format!("target/dist/{binary}\n")),
            "the build stage copies the dist {binary} out"
        );
        assert!(
            dockerfile.contains(&format!("/out/{binary} "))
                || dockerfile.contains(&format!("/out/{binary}\n")),
            "the runtime image gets {binary}"
        );
    }
    let expose = dockerfile
        .lines()
        .find(|l| l.starts_with("EXPOSE "))
        .expect("the image declares its ports");
    for port in ["50051", "9464", "9090", "8080"] {
        assert!(
            expose.split_whitespace().any(|p| p == port),
            "EXPOSE {port}"
        );
    }
    // Stripped binaries: the release profile keeps line tables for
    // profiling, which the image does not need.
    assert!(
        dockerfile.contains("cargo build --profile dist"),
        "builds with the dist profile"
    );
    assert!(
        dockerfile.contains("target/dist/herald-ingest"),
        "copies the dist binaries"
    );
    let manifest = read("Cargo.toml");
    assert!(
        manifest.contains("[profile.dist]\ninherits = \"release\""),
        "Cargo.toml declares the dist profile"
    );
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

#[test]
fn the_local_demo_starts_the_console() {
    let script = read("deploy/local/run.sh");
    let build = script
        .lines()
        .find(|l| l.starts_with("cargo build "))
        .expect("run.sh builds with cargo");
    for package in [
        "herald-ingest",
        "herald-sender",
        "herald-cli",
        "herald-console",
    ] {
        assert!(
            build.contains(&format!("-p {package}")),
            "run.sh builds {package}: {build}"
        );
    }
    // Continued lines joined, so that a command is one line.
    let joined = script.replace("\\\n", " ");
    let start = joined
        .lines()
        .find(|l| l.starts_with("start console "))
        .expect("run.sh starts the console with `start console ...`");
    assert!(
        start.ends_with("\"$BIN/herald-console\""),
        "the console takes its options from the environment: {start}"
    );
    // run.sh exports the services' credentials; the console gets none.
    let exports = |var: &str| {
        script.lines().map(str::trim).any(|l| {
            l.strip_prefix("export ")
                .is_some_and(|rest| rest == var || rest.starts_with(&format!("{var}=")))
        })
    };
    assert!(exports("HERALD_DATABASE_URL") && exports("HERALD_ADMIN_KEY"));
    for var in CREDENTIALS.iter().filter(|v| exports(v)) {
        assert!(
            start.contains(&format!("-u {var} ")),
            "run.sh exports {var}; the console must be started without it: {start}"
        );
    }
    // Started like the others, and waited for on its port.
    assert!(script.contains("wait_port console \"$CONSOLE_PID\" \"$CONSOLE_PORT\""));
    assert!(script.contains("CONSOLE_PORT=8080"));
    assert!(script.contains("\"$CONSOLE_URL/healthz\""));
    // Every HERALD_CONSOLE_* variable it sets is one of the console's.
    let own: Vec<String> = console_options().into_iter().map(|(_, e)| e).collect();
    let exported: Vec<&str> = script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export HERALD_CONSOLE_"))
        .map(|rest| rest.split('=').next().unwrap())
        .collect();
    assert!(!exported.is_empty(), "run.sh sets the console's options");
    for var in exported {
        let var = format!("HERALD_CONSOLE_{var}");
        assert!(
            own.contains(&var),
            "run.sh sets {var}, which the console lacks"
        );
    }
    assert!(
        script.contains("export HERALD_CONSOLE_LISTEN=\"127.0.0.1:$CONSOLE_PORT\""),
        "the console listens on loopback"
    );
    assert!(
        script.contains("export HERALD_CONSOLE_INGEST_URL=\"$HERALD_SERVER\""),
        "the console calls the local ingest"
    );
    assert!(
        script.contains("Herald Console: $CONSOLE_URL"),
        "run.sh prints the console's URL"
    );
}

// --- compose: healthchecks, Grafana ---------------------------------------------

fn find_service(compose: &Value, name: &str) -> Value {
    compose["services"][name].clone()
}

#[test]
fn compose_healthchecks_use_the_http_endpoints() {
    let compose = compose();
    let dockerfile = read("deploy/docker/Dockerfile");
    // (service, port of its /healthz, the variable that sets it, whether it
    // drains for HERALD_DRAIN_TIMEOUT_SECS on stop)
    for (service, port, var, drains) in [
        ("ingest", 9464, "HERALD_METRICS_LISTEN", true),
        ("sender", 9090, "HERALD_HTTP_LISTEN", true),
        // The console finishes its in-flight requests; it has no drain timeout.
        ("console", 8080, "HERALD_CONSOLE_LISTEN", false),
    ] {
        let s = find_service(&compose, service);
        let test = strings(&s["healthcheck"]["test"]).join(" ");
        assert!(
            test.contains(&format!("http://127.0.0.1:{port}/healthz")),
            "{service}: healthcheck should GET /healthz on {port}, is {test:?}"
        );
        assert_eq!(
            s["environment"][var].as_str(),
            Some(format!("0.0.0.0:{port}").as_str()),
            "{service} must listen on 0.0.0.0:{port} ({var}) for its healthcheck"
        );
        let binary = command(&s).first().cloned().unwrap_or_default();
        assert_eq!(
            drains,
            options_of(&binary)
                .iter()
                .any(|(_, e)| e == "HERALD_DRAIN_TIMEOUT_SECS"),
            "{service}: whether {binary} has HERALD_DRAIN_TIMEOUT_SECS"
        );
        if !drains {
            continue;
        }
        let grace = s["stop_grace_period"].as_str().unwrap_or("10s");
        let grace: u64 = grace.trim_end_matches('s').parse().unwrap();
        let drain: u64 = s["environment"]["HERALD_DRAIN_TIMEOUT_SECS"]
            .as_str()
            .unwrap_or("30")
            .parse()
            .unwrap();
        assert!(
            grace > drain,
            "{service}: stop_grace_period {grace}s must exceed the drain timeout {drain}s"
        );
    }
    // Whatever a Herald healthcheck runs must be in the runtime image.
    for (name, service) in services(&compose) {
        if is_herald_image(&service)
            && strings(&service["healthcheck"]["test"]).contains(&"curl".to_owned())
        {
            let runtime = dockerfile
                .split("FROM debian:bookworm-slim")
                .nth(1)
                .unwrap();
            assert!(
                runtime
                    .lines()
                    .any(|l| l.contains("apt-get install") && l.contains(" curl")),
                "{name}'s healthcheck runs curl, but the runtime image does not install it"
            );
        }
    }
}

#[test]
fn grafana_is_provisioned_from_deploy_grafana() {
    let compose = compose();
    let grafana = find_service(&compose, "grafana");
    assert!(
        grafana["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("grafana/grafana:11.")),
        "Grafana 11"
    );
    let volumes = strings(&grafana["volumes"]);
    let mount = |source: &str| {
        volumes
            .iter()
            .find_map(|v| {
                let mut parts = v.split(':');
                (parts.next() == Some(source)).then(|| parts.next().unwrap().to_owned())
            })
            .unwrap_or_else(|| panic!("grafana does not mount {source}"))
    };
    assert_eq!(
        mount("./deploy/grafana/provisioning"),
        "/etc/grafana/provisioning"
    );
    let dashboards_in_container = mount("./deploy/grafana/dashboards");
    for (source, _) in volumes.iter().filter_map(|v| v.split_once(':')) {
        if source.starts_with("./") {
            assert!(
                root().join(source).exists(),
                "grafana mounts missing {source}"
            );
        }
    }
    assert_eq!(
        grafana["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );

    let datasources: Value = serde_norway::from_str(&read(
        "deploy/grafana/provisioning/datasources/postgres.yaml",
    ))
    .unwrap();
    let ds = &datasources["datasources"][0];
    assert!(matches!(
        ds["type"].as_str(),
        Some("grafana-postgresql-datasource" | "postgres")
    ));
    let postgres = find_service(&compose, "postgres");
    assert_eq!(
        ds["url"].as_str(),
        Some("postgres:5432"),
        "the compose postgres"
    );
    assert_eq!(
        ds["jsonData"]["database"].as_str(),
        postgres["environment"]["POSTGRES_DB"].as_str()
    );

    let providers: Value =
        serde_norway::from_str(&read("deploy/grafana/provisioning/dashboards/herald.yaml"))
            .unwrap();
    let provider = &providers["providers"][0];
    assert_eq!(provider["type"].as_str(), Some("file"));
    assert_eq!(
        provider["options"]["path"].as_str(),
        Some(dashboards_in_container.as_str()),
        "the provider reads the directory compose mounts"
    );
}

// --- Kubernetes -------------------------------------------------------------

/// Every `.yaml` / `.yml` file under `dir`, recursively, relative to the root.
fn yaml_files(dir: &str) -> Vec<String> {
    fn walk(path: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join(dir), &mut files);
    let mut files: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    files.sort();
    files
}

/// The documents of a (possibly multi-document) YAML file.
fn documents(path: &str) -> Vec<Value> {
    let text = read(path);
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |current: &mut String| {
        if current.lines().any(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        }) {
            let doc: Value = serde_norway::from_str(current)
                .unwrap_or_else(|e| panic!("{path}: invalid YAML: {e}"));
            docs.push(doc);
        }
        current.clear();
    };
    for line in text.lines() {
        if line == "---" || line.starts_with("--- ") {
            flush(&mut current);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current);
    docs
}

/// Every Kubernetes object of every file under deploy/k8s, with its file.
fn k8s_objects() -> Vec<(String, Value)> {
    yaml_files("deploy/k8s")
        .into_iter()
        .flat_map(|f| documents(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or_default()
}

/// The objects of the base kustomization (files it lists, not the overlay's
/// patches), as (file, object).
fn base_objects() -> Vec<(String, Value)> {
    let kustomization = &documents("deploy/k8s/base/kustomization.yaml")[0];
    strings(&kustomization["resources"])
        .iter()
        .flat_map(|r| {
            documents(&format!("deploy/k8s/base/{r}"))
                .into_iter()
                .map(move |d| (r.clone(), d))
        })
        .collect()
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

fn containers(workload: &Value) -> Vec<Value> {
    pod_spec(workload)["containers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
}

fn base_config_map() -> Value {
    base_objects()
        .into_iter()
        .map(|(_, o)| o)
        .find(|o| kind(o) == "ConfigMap" && name(o) == "herald-config")
        .expect("the base has the ConfigMap herald-config")
}

#[test]
fn every_k8s_yaml_parses_and_is_an_object() {
    let files = yaml_files("deploy/k8s");
    assert!(files.len() >= 10, "deploy/k8s has its manifests: {files:?}");
    for (file, doc) in k8s_objects() {
        assert!(
            doc["apiVersion"].as_str().is_some() && !kind(&doc).is_empty(),
            "{file}: every document has apiVersion and kind"
        );
        if kind(&doc) != "Kustomization" {
            assert!(
                !name(&doc).is_empty(),
                "{file}: a {} without a name",
                kind(&doc)
            );
        }
    }
}

#[test]
fn kustomizations_list_existing_files_and_every_manifest() {
    let kustomizations: Vec<String> = yaml_files("deploy/k8s")
        .into_iter()
        .filter(|f| f.ends_with("/kustomization.yaml"))
        .collect();
    assert_eq!(
        kustomizations,
        [
            "deploy/k8s/base/kustomization.yaml",
            "deploy/k8s/overlays/production/kustomization.yaml"
        ]
    );
    let mut listed = Vec::new();
    for k in &kustomizations {
        let dir = Path::new(k).parent().unwrap();
        let doc = &documents(k)[0];
        assert_eq!(kind(doc), "Kustomization", "{k}");
        let mut paths = strings(&doc["resources"]);
        if let Some(patches) = doc["patches"].as_sequence() {
            paths.extend(
                patches
                    .iter()
                    .filter_map(|p| p["path"].as_str().map(str::to_owned)),
            );
        }
        assert!(!paths.is_empty(), "{k} lists nothing");
        for p in paths {
            let path = root().join(dir).join(&p);
            if path.is_dir() {
                assert!(
                    path.join("kustomization.yaml").is_file(),
                    "{k}: {p} is a directory without kustomization.yaml"
                );
            } else {
                assert!(path.is_file(), "{k}: {p} does not exist");
                listed.push(dir.join(&p).to_string_lossy().replace('\\', "/"));
            }
        }
    }
    for file in yaml_files("deploy/k8s") {
        if file.ends_with("/kustomization.yaml") {
            continue;
        }
        if file.ends_with("secret.example.yaml") {
            assert!(
                !listed.contains(&file),
                "{file} is an example; the operator creates the Secret"
            );
            continue;
        }
        assert!(listed.contains(&file), "{file} is in no kustomization");
    }
    // The example shows what the workloads read.
    let secret = &documents("deploy/k8s/base/secret.example.yaml")[0];
    assert_eq!(kind(secret), "Secret");
    assert_eq!(name(secret), "herald-secrets");
}

#[test]
fn every_herald_variable_in_the_manifests_is_documented() {
    let documented: Vec<String> = documented_options().into_iter().map(|d| d.env).collect();
    let mut seen = Vec::new();
    for (file, doc) in k8s_objects() {
        let mut vars: Vec<String> = Vec::new();
        for map in [&doc["data"], &doc["stringData"]] {
            if let Some(m) = map.as_mapping() {
                vars.extend(m.keys().filter_map(|k| k.as_str().map(str::to_owned)));
            }
        }
        for c in containers(&doc) {
            if let Some(env) = c["env"].as_sequence() {
                vars.extend(
                    env.iter()
                        .filter_map(|e| e["name"].as_str().map(str::to_owned)),
                );
            }
        }
        for var in vars.into_iter().filter(|v| v.starts_with("HERALD_")) {
            assert!(
                documented.contains(&var),
                "{file}: {var} is not in docs/configuration.md"
            );
            seen.push(var);
        }
    }
    let compose = compose();
    for (name, service) in services(&compose) {
        for var in env_names(&service)
            .into_iter()
            .filter(|v| v.starts_with("HERALD_"))
        {
            assert!(
                documented.contains(&var) || CLI_ENV.contains(&var.as_str()),
                "docker-compose.yml {name}: {var} is not documented"
            );
        }
    }
    let config = base_config_map();
    for (var, value) in [
        ("HERALD_QUEUE_TYPE", "quorum"),
        ("HERALD_SCHEDULE", "5s,240s,480s"),
        ("HERALD_LOG_FORMAT", "json"),
        ("HERALD_LISTEN", "0.0.0.0:50051"),
        ("HERALD_METRICS_LISTEN", "0.0.0.0:9464"),
        ("HERALD_HTTP_LISTEN", "0.0.0.0:9090"),
        ("HERALD_PREFETCH", "256"),
        ("HERALD_CONSOLE_LISTEN", "0.0.0.0:8080"),
        ("HERALD_CONSOLE_INGEST_URL", "http://herald-ingest:50051"),
    ] {
        assert_eq!(config["data"][var].as_str(), Some(value), "ConfigMap {var}");
    }
    assert!(!config["data"]["HERALD_QUEUE_PREFIX"].is_null());
    for secret in ["HERALD_DATABASE_URL", "HERALD_AMQP_URL"] {
        assert!(
            config["data"][secret].is_null(),
            "{secret} holds a password: it belongs in the Secret, not the ConfigMap"
        );
    }
}

#[test]
fn k8s_containers_run_herald_commands_with_secrets_and_probes_on_declared_ports() {
    let config = base_config_map();
    let drain: u64 = config["data"]["HERALD_DRAIN_TIMEOUT_SECS"]
        .as_str()
        .unwrap_or("30")
        .parse()
        .unwrap();
    let mut commands = Vec::new();
    for (file, doc) in base_objects() {
        for c in containers(&doc) {
            let cname = c["name"].as_str().unwrap_or_default().to_owned();
            let what = format!("{file} {} {cname}", name(&doc));
            assert_eq!(
                c["image"].as_str(),
                Some("ghcr.io/herald-webhooks/herald:0.1.0"),
                "{what}: image"
            );
            let cmd = strings(&c["command"]);
            let binary = cmd.first().cloned().unwrap_or_default();
            let sub = cmd.get(1).map_or("", String::as_str);
            match binary.as_str() {
                "herald-console" => {
                    ConsoleArgs::try_parse_from(&cmd).unwrap_or_else(|e| {
                        panic!("{what}: `{}` does not parse: {e}", cmd.join(" "))
                    });
                }
                "herald-ingest" | "herald-sender" => {
                    assert_eq!(cmd.len(), 2, "{what}: `{}`", cmd.join(" "));
                    assert!(
                        SERVICE_SUBCOMMANDS.contains(&cmd[1].as_str()),
                        "{what}: {binary} has no subcommand {:?}",
                        cmd[1]
                    );
                }
                "herald" => {
                    herald_cli::Cli::try_parse_from(&cmd).unwrap_or_else(|e| {
                        panic!("{what}: `{}` does not parse: {e}", cmd.join(" "))
                    });
                }
                other => panic!("{what}: command must run a Herald binary, not {other:?}"),
            }
            commands.push(cmd.join(" "));

            // Security: non-root, read-only root filesystem.
            assert_eq!(
                c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
                Some(true),
                "{what}: readOnlyRootFilesystem"
            );
            let non_root = c["securityContext"]["runAsNonRoot"].as_bool() == Some(true)
                || pod_spec(&doc)["securityContext"]["runAsNonRoot"].as_bool() == Some(true);
            assert!(non_root, "{what}: runAsNonRoot");
            assert!(
                !c["resources"]["requests"].is_null() && !c["resources"]["limits"].is_null(),
                "{what}: resource requests and limits"
            );

            // Configuration from the ConfigMap, passwords from the Secret.
            let from_config = c["envFrom"].as_sequence().is_some_and(|s| {
                s.iter()
                    .any(|e| e["configMapRef"]["name"].as_str() == Some("herald-config"))
            });
            assert!(from_config, "{what}: envFrom the ConfigMap herald-config");
            let env = c["env"].as_sequence().cloned().unwrap_or_default();
            if binary == "herald-console" {
                // The console holds no credentials: no Secret at all.
                for e in &env {
                    let var = e["name"].as_str().unwrap_or_default();
                    assert!(
                        !CREDENTIALS.contains(&var) && e["valueFrom"]["secretKeyRef"].is_null(),
                        "{what}: the console reads no Secret ({var})"
                    );
                }
                let from_secret = c["envFrom"]
                    .as_sequence()
                    .is_some_and(|s| s.iter().any(|e| !e["secretRef"].is_null()));
                assert!(
                    !from_secret,
                    "{what}: the console reads no Secret (envFrom)"
                );
                let secret_volume = pod_spec(&doc)["volumes"]
                    .as_sequence()
                    .is_some_and(|s| s.iter().any(|v| !v["secret"].is_null()));
                assert!(!secret_volume, "{what}: the console mounts no Secret");
                for probe in ["readinessProbe", "livenessProbe"] {
                    assert_eq!(
                        c[probe]["httpGet"]["path"].as_str(),
                        Some("/healthz"),
                        "{what}: {probe} GETs /healthz (no sign-in needed)"
                    );
                }
            }
            let mut secrets = Vec::new();
            if binary != "herald-console" {
                secrets.push("HERALD_DATABASE_URL");
            }
            if sub == "serve" {
                secrets.push("HERALD_AMQP_URL");
            }
            for var in secrets {
                let e = env
                    .iter()
                    .find(|e| e["name"].as_str() == Some(var))
                    .unwrap_or_else(|| panic!("{what}: no {var}"));
                let r = &e["valueFrom"]["secretKeyRef"];
                assert_eq!(r["name"].as_str(), Some("herald-secrets"), "{what}: {var}");
                assert_eq!(r["key"].as_str(), Some(var), "{what}: {var}");
            }

            // Probes point at ports the container declares.
            let ports: Vec<(u64, String)> = c["ports"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| {
                    (
                        p["containerPort"].as_u64().unwrap(),
                        p["name"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                let p = &c[probe];
                if p.is_null() {
                    continue;
                }
                let port = ["grpc", "httpGet", "tcpSocket"]
                    .iter()
                    .find_map(|h| (!p[h].is_null()).then(|| p[h]["port"].clone()))
                    .unwrap_or_else(|| panic!("{what}: {probe} has no grpc/httpGet/tcpSocket"));
                let declared = match &port {
                    Value::Number(n) => ports.iter().any(|(p, _)| Some(*p) == n.as_u64()),
                    Value::String(s) => ports.iter().any(|(_, n)| n == s),
                    _ => false,
                };
                assert!(
                    declared,
                    "{what}: {probe} uses port {port:?}, not declared in {ports:?}"
                );
            }
            // Every declared port is one the process listens on (per the ConfigMap).
            let listen_vars: &[&str] = match binary.as_str() {
                "herald-ingest" if sub == "serve" => &["HERALD_LISTEN", "HERALD_METRICS_LISTEN"],
                "herald-sender" if sub == "serve" => &["HERALD_HTTP_LISTEN"],
                "herald-console" => &["HERALD_CONSOLE_LISTEN"],
                _ => &[],
            };
            let listening: Vec<u64> = listen_vars
                .iter()
                .map(|v| {
                    let addr = config["data"][*v]
                        .as_str()
                        .unwrap_or_else(|| panic!("ConfigMap has no {v}"));
                    assert!(
                        addr.starts_with("0.0.0.0:"),
                        "{v}={addr}: probes and scrapes come from outside the pod"
                    );
                    addr.rsplit(':').next().unwrap().parse().unwrap()
                })
                .collect();
            for (port, pname) in &ports {
                assert!(
                    listening.contains(port),
                    "{what}: declares port {port} ({pname}), but {listen_vars:?} listen on {listening:?}"
                );
            }
            if kind(&doc) == "Deployment" {
                assert_eq!(
                    listening.len(),
                    ports.len(),
                    "{what}: every listen address has a port"
                );
                let grace = pod_spec(&doc)["terminationGracePeriodSeconds"]
                    .as_u64()
                    .unwrap_or(30);
                // Only the services that drain for HERALD_DRAIN_TIMEOUT_SECS
                // (not the console) need the longer grace period.
                let drains = options_of(&binary)
                    .iter()
                    .any(|(_, e)| e == "HERALD_DRAIN_TIMEOUT_SECS");
                assert!(
                    !drains || grace > drain,
                    "{what}: terminationGracePeriodSeconds {grace} must exceed HERALD_DRAIN_TIMEOUT_SECS {drain}"
                );
            }
        }
    }
    commands.sort();
    assert_eq!(
        commands,
        [
            "herald-console",
            "herald-ingest migrate",
            "herald-ingest serve",
            "herald-sender serve"
        ]
    );
}

#[test]
fn k8s_services_target_declared_ports_and_budgets_select_pods() {
    let objects = base_objects();
    let deployments: Vec<&Value> = objects
        .iter()
        .map(|(_, o)| o)
        .filter(|o| kind(o) == "Deployment")
        .collect();
    let matches = |selector: &Value, d: &Value| {
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        selector.as_mapping().is_some_and(|m| {
            !m.is_empty() && m.iter().all(|(k, v)| &labels[k.as_str().unwrap()] == v)
        })
    };
    for (file, o) in &objects {
        match kind(o) {
            "Service" => {
                let d = deployments
                    .iter()
                    .find(|d| matches(&o["spec"]["selector"], d))
                    .unwrap_or_else(|| panic!("{file}: selects no Deployment"));
                let c = &containers(d)[0];
                for port in o["spec"]["ports"].as_sequence().unwrap() {
                    let target = &port["targetPort"];
                    let found = c["ports"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|p| &p["name"] == target || &p["containerPort"] == target);
                    assert!(
                        found,
                        "{file}: targetPort {target:?} is not a port of {}",
                        name(d)
                    );
                }
            }
            "PodDisruptionBudget" => {
                assert!(
                    deployments
                        .iter()
                        .any(|d| matches(&o["spec"]["selector"]["matchLabels"], d)),
                    "{file}: selects no Deployment"
                );
            }
            "Deployment" => {
                let selector = &o["spec"]["selector"]["matchLabels"];
                assert!(
                    matches(selector, o),
                    "{file}: selector does not match its pods"
                );
            }
            _ => {}
        }
    }
    for n in ["herald-ingest", "herald-sender"] {
        for k in ["Deployment", "PodDisruptionBudget"] {
            assert!(
                objects.iter().any(|(_, o)| kind(o) == k && name(o) == n),
                "the base has the {k} {n}"
            );
        }
    }
    assert!(
        objects
            .iter()
            .any(|(_, o)| kind(o) == "Service" && name(o) == "herald-ingest")
    );
    assert!(
        objects
            .iter()
            .any(|(_, o)| kind(o) == "Job" && name(o) == "herald-migrate")
    );

    // The console: a Deployment and a Service, and the ingest URL it is
    // given names the ingest Service's gRPC port.
    let find = |k: &str, n: &str| {
        objects
            .iter()
            .map(|(_, o)| o)
            .find(|o| kind(o) == k && name(o) == n)
            .unwrap_or_else(|| panic!("the base has the {k} {n}"))
    };
    let console = find("Deployment", "herald-console");
    let console_service = find("Service", "herald-console");
    assert!(matches(&console_service["spec"]["selector"], console));
    assert_eq!(
        console["spec"]["replicas"].as_u64(),
        Some(1),
        "sign-in sessions live in the console's memory: one replica"
    );
    assert!(
        console_service["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| p["port"].as_u64() == Some(8080)),
        "the Service herald-console serves 8080"
    );
    let config = base_config_map();
    let url = config["data"]["HERALD_CONSOLE_INGEST_URL"]
        .as_str()
        .expect("the ConfigMap sets HERALD_CONSOLE_INGEST_URL");
    let (host, port) = url
        .strip_prefix("http://")
        .and_then(|a| a.split_once(':'))
        .unwrap_or_else(|| panic!("HERALD_CONSOLE_INGEST_URL={url}: http://SERVICE:PORT"));
    let ingest_service = find("Service", host);
    let grpc = ingest_service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["port"].as_u64() == port.parse().ok())
        .unwrap_or_else(|| panic!("the Service {host} has no port {port}"));
    assert_eq!(
        grpc["targetPort"].as_str(),
        Some("grpc"),
        "{url}: the console calls ingest's gRPC port"
    );
}

#[test]
fn production_overlay_scales_and_spreads() {
    let dir = "deploy/k8s/overlays/production";
    let k = &documents(&format!("{dir}/kustomization.yaml"))[0];
    let replicas = |n: &str| {
        k["replicas"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|r| r["name"].as_str() == Some(n))
            .and_then(|r| r["count"].as_u64())
    };
    assert_eq!(replicas("herald-ingest"), Some(3));
    assert_eq!(replicas("herald-sender"), Some(3));
    // Sessions in memory: the console keeps the base's one replica.
    assert!(
        k["replicas"]
            .as_sequence()
            .unwrap()
            .iter()
            .all(|r| r["name"].as_str() != Some("herald-console")),
        "the overlay does not scale the console"
    );
    let objects: Vec<Value> = yaml_files(dir)
        .iter()
        .filter(|f| !f.ends_with("kustomization.yaml"))
        .flat_map(|f| documents(f))
        .collect();
    let hpa = objects
        .iter()
        .find(|o| kind(o) == "HorizontalPodAutoscaler")
        .expect("an HPA");
    assert_eq!(hpa["apiVersion"].as_str(), Some("autoscaling/v2"));
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"].as_str(),
        Some("herald-sender")
    );
    assert_eq!(hpa["spec"]["minReplicas"].as_u64(), Some(3));
    assert_eq!(hpa["spec"]["maxReplicas"].as_u64(), Some(20));
    let metric = &hpa["spec"]["metrics"][0]["resource"];
    assert_eq!(metric["name"].as_str(), Some("cpu"));
    assert_eq!(metric["target"]["averageUtilization"].as_u64(), Some(70));
    for n in ["herald-ingest", "herald-sender"] {
        assert!(
            objects.iter().any(|o| kind(o) == "Deployment"
                && name(o) == n
                && !pod_spec(o)["topologySpreadConstraints"].is_null()),
            "the overlay spreads {n}"
        );
    }
}

// --- RabbitMQ ---------------------------------------------------------------

#[test]
fn rabbitmq_definitions_do_not_fight_the_declared_arguments() {
    let defs: serde_json::Value =
        serde_json::from_str(&read("deploy/rabbitmq/definitions.json")).expect("valid JSON");
    assert!(
        defs["vhosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "herald"),
        "the vhost herald"
    );
    // Passwords do not go into the repository.
    for user in defs["users"].as_array().into_iter().flatten() {
        assert!(user.get("password").is_none() && user.get("password_hash").is_none());
    }
    // crates/herald-queue/src/topology.rs sets these as x-arguments on the
    // delay queues (x-queue-type on every queue). A policy must only add what
    // the code leaves open; `overflow` only on the work queue, which has none.
    const DECLARED: &[&str] = &[
        "queue-type",
        "message-ttl",
        "dead-letter-exchange",
        "dead-letter-routing-key",
        "dead-letter-strategy",
    ];
    let policies = defs["policies"].as_array().expect("policies");
    assert!(!policies.is_empty());
    for p in policies {
        let pname = p["name"].as_str().unwrap();
        assert_eq!(p["vhost"], "herald", "{pname}");
        let pattern = p["pattern"].as_str().unwrap();
        assert!(
            pattern.starts_with("^herald\\."),
            "{pname}: only Herald's queues"
        );
        let definition = p["definition"].as_object().unwrap();
        for key in definition.keys() {
            assert!(
                !DECLARED.contains(&key.as_str()),
                "{pname}: {key} is declared by the code; a policy would be ignored or conflict"
            );
            if key == "overflow" || key.starts_with("max-length") {
                // Every shard's work queue (herald.work, herald.work.1, ...;
                // HERALD_WORK_QUEUES), and none of the delay queues
                // (herald.delay.<ms>ms, herald.work.<k>.delay.<ms>ms).
                assert_eq!(
                    pattern, "^herald\\.work(\\.\\d+)?$",
                    "{pname}: {key} only on the work queues (delay queues declare x-overflow)"
                );
                assert_eq!(
                    definition.get("overflow").and_then(|v| v.as_str()),
                    Some("reject-publish"),
                    "{pname}: a length limit must reject publishes, never drop messages"
                );
            }
        }
        assert!(
            !definition.contains_key("delivery-limit"),
            "{pname}: a delivery limit drops messages without a dead-letter target"
        );
    }
    let conf = read("deploy/rabbitmq/rabbitmq.conf");
    assert!(conf.contains("load_definitions = /etc/rabbitmq/definitions.json"));
    for line in conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(
            line.contains(" = "),
            "rabbitmq.conf: `{line}` is not `key = value`"
        );
    }
}
