//! The client examples of docs/clients/, each run by its real interpreter
//! (bash with curl, PHP with its curl extension, Python with grpcio, Node)
//! against an in-process ingest that requires API keys: with a fire key each
//! must print exactly one delivery id that Herald logged, and with a wrong
//! key each must exit 1 and print ingest's refusal.
//!
//! A missing interpreter or module fails the test with the package to
//! install: CI installs them (.ci/run), so a skip would only hide that the
//! examples were never run.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use herald_ingest::{AuthMode, BootstrapKey, IngestConfig};
use herald_proto::v1::{
    CreateApiKeyRequest, CreateWebhookRequest, Delivery, GetDeliveryRequest,
    admin_client::AdminClient,
};
use herald_tests::TestEnv;
use herald_tests::auth::{Authed, Token, channel};
use tonic::Code;

/// The bootstrap admin key of the test's ingest.
const ADMIN_KEY: &str = "bootstrap-admin-key-for-client-tests-0123456789";

/// The tenant the examples fire for, through `HERALD_TENANT`.
const TENANT: &str = "shop-1";

/// A key Herald never issued: well-formed, so ingest looks it up and
/// refuses it as unknown rather than as malformed.
const WRONG_TOKEN: &str = "hrk_this-key-was-never-issued-0123456789";

/// What ingest says about an unknown key (crates/herald-ingest/src/auth.rs).
const REFUSAL: &str = "unknown or revoked API key";

/// How long one example may take; a hung client fails instead of hanging
/// the suite.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// One example and the interpreter that runs it.
struct Example {
    file: &'static str,
    program: &'static str,
    /// A command that succeeds only where the interpreter has everything
    /// the example needs.
    probe: &'static [&'static str],
    /// What to install when the probe fails.
    install: &'static str,
}

const EXAMPLES: &[Example] = &[
    Example {
        file: "fire.sh",
        program: "bash",
        probe: &["-c", "command -v curl"],
        install: "apt-get install bash curl",
    },
    Example {
        file: "fire.php",
        program: "php",
        probe: &["-r", "exit(extension_loaded('curl') ? 0 : 1);"],
        install: "apt-get install php-cli php-curl",
    },
    Example {
        file: "fire.py",
        program: "python3",
        probe: &["-c", "import grpc, grpc_tools.protoc"],
        install: "python3 -m pip install grpcio grpcio-tools (the python3 first on PATH, \
                  as .ci/run does)",
    },
    Example {
        file: "fire.mjs",
        program: "node",
        probe: &["-e", "process.exit(typeof fetch === 'function' ? 0 : 1)"],
        install: "apt-get install nodejs (Node 18 or later, for fetch)",
    },
];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// A directory removed when dropped, also when the test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path =
            std::env::temp_dir().join(format!("herald-clients-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a program to its end with the given environment; `None` when it
/// could not be started at all (not installed).
async fn run(
    program: &str,
    args: &[&str],
    env: &[(&str, String)],
) -> Option<std::io::Result<Output>> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(e)),
    };
    Some(
        match tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output()).await {
            Ok(output) => output,
            Err(_) => Err(std::io::Error::other(format!(
                "{program} did not finish within {CLIENT_TIMEOUT:?}"
            ))),
        },
    )
}

/// Why an interpreter cannot run its example, naming what to install.
async fn missing(example: &Example) -> Option<String> {
    let ready = match run(example.program, example.probe, &[]).await {
        None => false,
        Some(Ok(output)) => output.status.success(),
        Some(Err(e)) => return Some(format!("{}: {e}", example.program)),
    };
    (!ready).then(|| {
        format!(
            "{} cannot run {}: {}",
            example.program, example.file, example.install
        )
    })
}

/// The delivery as `GetDelivery` shows it, once ingest logged it (a moment
/// after Fire answered); `None` if it never appears.
async fn logged(admin: &mut AdminClient<Authed>, id: &str) -> Option<Delivery> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match admin
            .get_delivery(GetDeliveryRequest { id: id.into() })
            .await
        {
            Ok(delivery) => return Some(delivery.into_inner()),
            Err(status) if status.code() == Code::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => {
                eprintln!("GetDelivery {id}: {status:?}");
                return None;
            }
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_fires_and_reports_a_refused_key() {
    let mut env = TestEnv::new("1h").await.unwrap();
    let addr = env
        .start_ingest(env.queue.clone(), |c: &mut IngestConfig| {
            c.auth = AuthMode::Required;
            c.admin_key = Some(BootstrapKey::new(ADMIN_KEY).unwrap());
        })
        .await
        .unwrap();
    let mut admin = AdminClient::with_interceptor(channel(addr).await, Token::bearer(ADMIN_KEY));
    // No sender runs, and the one-hour schedule keeps each delivery in its
    // delay queue, so the target is never called.
    let webhook = admin
        .create_webhook(CreateWebhookRequest {
            tenant: TENANT.into(),
            event: "order.created".into(),
            method: "POST".into(),
            url: "http://127.0.0.1:9/hooks/orders".into(),
            ..Default::default()
        })
        .await
        .expect("webhook created")
        .into_inner();
    // The examples use what a shop would be given: a key that may only
    // fire, and only for its own tenant.
    let fire_token = admin
        .create_api_key(CreateApiKeyRequest {
            name: "client examples".into(),
            scopes: vec!["fire".into()],
            tenant: Some(TENANT.into()),
        })
        .await
        .expect("fire key created")
        .into_inner()
        .token;

    let clients = repository().join("docs/clients");
    let stubs = TempDir::new();
    let mut failures = Vec::new();
    let mut fired = 0;
    for example in EXAMPLES {
        if let Some(problem) = missing(example).await {
            failures.push(problem);
            continue;
        }
        let script = clients.join(example.file);
        let script = script.to_str().expect("UTF-8 path");
        let mut vars = vec![
            ("HERALD_URL", format!("http://{addr}")),
            ("HERALD_GRPC", addr.to_string()),
            ("HERALD_TENANT", TENANT.to_owned()),
        ];
        if example.program == "python3" {
            // The stubs are generated as docs/clients/README.md says, into
            // a directory of the test's own.
            let proto = repository().join("proto");
            let proto = proto.to_str().expect("UTF-8 path");
            let out = stubs.0.to_str().expect("UTF-8 path");
            let generated = run(
                "python3",
                &[
                    "-m",
                    "grpc_tools.protoc",
                    "-I",
                    proto,
                    &format!("--python_out={out}"),
                    &format!("--grpc_python_out={out}"),
                    &format!("{proto}/herald/v1/herald.proto"),
                ],
                &[],
            )
            .await
            .expect("python3 is installed")
            .expect("python3 ran");
            if !generated.status.success() {
                failures.push(format!(
                    "generating the Python stubs failed: {}",
                    text(&generated.stderr)
                ));
                continue;
            }
            vars.push(("PYTHONPATH", out.to_owned()));
        }

        // With the fire key: exactly one delivery id, one Herald logged.
        let mut with_key = vars.clone();
        with_key.push(("HERALD_TOKEN", fire_token.clone()));
        let started = Instant::now();
        let output = run(example.program, &[script], &with_key)
            .await
            .expect("the probe found the interpreter");
        let took = started.elapsed();
        match output {
            Err(e) => failures.push(format!("{}: {e}", example.file)),
            Ok(output) => {
                let stdout = text(&output.stdout);
                eprintln!(
                    "{}: {} in {} ms, printed {stdout:?}",
                    example.file,
                    output.status,
                    took.as_millis()
                );
                let ids: Vec<&str> = stdout.lines().collect();
                if !output.status.success() || ids.len() != 1 {
                    failures.push(format!(
                        "{} with a fire key: {}, stdout {stdout:?}, stderr {:?}; wanted exit 0 \
                         and one delivery id",
                        example.file,
                        output.status,
                        text(&output.stderr)
                    ));
                } else if ids[0].parse::<uuid::Uuid>().is_err() {
                    failures.push(format!(
                        "{} printed {:?}, not a delivery id",
                        example.file, ids[0]
                    ));
                } else {
                    fired += 1;
                    match logged(&mut admin, ids[0]).await {
                        Some(d) => {
                            assert_eq!(d.tenant, TENANT, "{}", example.file);
                            assert_eq!(d.event, "order.created", "{}", example.file);
                            assert_eq!(d.webhook_id, webhook.id, "{}", example.file);
                            assert_eq!(d.state, "scheduled", "{}", example.file);
                        }
                        None => failures.push(format!(
                            "{} printed {:?}, which the delivery log does not know",
                            example.file, ids[0]
                        )),
                    }
                }
            }
        }

        // With a key Herald never issued: exit 1 and ingest's refusal.
        let mut wrong_key = vars;
        wrong_key.push(("HERALD_TOKEN", WRONG_TOKEN.to_owned()));
        let started = Instant::now();
        let output = run(example.program, &[script], &wrong_key)
            .await
            .expect("the probe found the interpreter");
        let took = started.elapsed();
        match output {
            Err(e) => failures.push(format!("{} with a wrong key: {e}", example.file)),
            Ok(output) => {
                let stderr = text(&output.stderr);
                eprintln!(
                    "{} (wrong key): {} in {} ms, said {stderr:?}",
                    example.file,
                    output.status,
                    took.as_millis()
                );
                if output.status.code() != Some(1)
                    || !output.stdout.is_empty()
                    || !stderr.contains(REFUSAL)
                {
                    failures.push(format!(
                        "{} with a wrong key: {}, stdout {:?}, stderr {stderr:?}; wanted exit 1, \
                         nothing on stdout and {REFUSAL:?} on stderr",
                        example.file,
                        output.status,
                        text(&output.stdout)
                    ));
                }
            }
        }
    }

    // One message per successful Fire, none for the refused ones.
    let queued = env.queued_messages().await;
    if queued != fired {
        failures.push(format!(
            "{queued} messages queued after {fired} successful Fire calls"
        ));
    }
    assert!(
        failures.is_empty(),
        "client examples failed:\n{}",
        failures.join("\n")
    );
}
