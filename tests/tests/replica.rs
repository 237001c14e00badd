//! The delivery log read from a real streaming replica
//! (`HERALD_READ_DATABASE_URL`): the test starts a primary and a standby of
//! its own (initdb + pg_basebackup, as the `postgres` OS user, on free
//! ports, in a temporary directory) and removes both at the end, also when
//! it fails. The machine's own server on 5432 only holds the throw-away
//! database of the `TestEnv` and is otherwise left alone.
//!
//! Replica lag is made deterministic by pausing the standby's replay
//! (`pg_wal_replay_pause()`): a delivery fired meanwhile is on the primary
//! only. Needs root (to run the servers as `postgres`) and PostgreSQL's
//! server binaries (14 or newer), found in `/usr/lib/postgresql/*/bin` or
//! named by `HERALD_TEST_PG_BIN`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use herald_proto::v1::{GetDeliveryRequest, GetWebhookSummaryRequest, ListDeliveriesRequest};
use herald_store::Store;
use herald_tests::{TestEnv, connect_pg, eventually};
use metrics_exporter_prometheus::PrometheusHandle;
use tonic::Code;
use uuid::Uuid;

/// Longest wait for any one condition; the whole test stays under a minute.
const WAIT: Duration = Duration::from_secs(15);
const WHOLE_TEST: Duration = Duration::from_secs(60);

/// A primary and its streaming standby, stopped and removed on drop.
struct Pair {
    bin: PathBuf,
    dir: PathBuf,
    primary_port: u16,
    replica_port: u16,
}

/// The PostgreSQL server binaries: `HERALD_TEST_PG_BIN`, or the newest
/// Debian-installed version that has `pg_basebackup` (the same packages the
/// machine's own server on 5432 comes from).
fn pg_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("HERALD_TEST_PG_BIN") {
        return PathBuf::from(bin);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_basebackup").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect(
        "PostgreSQL server binaries in /usr/lib/postgresql/*/bin (or set HERALD_TEST_PG_BIN)",
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Runs `program args` as the `postgres` OS user and fails with its output.
fn as_postgres(program: &Path, args: &[&str]) {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {} (needs root and runuser): {e}",
                program.display()
            )
        });
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Pair {
    /// initdb, start the primary, pg_basebackup the standby, start it.
    fn start() -> Pair {
        let bin = pg_bin();
        let dir = std::env::temp_dir().join(format!("herald-replica-{}", Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).expect("temporary directory");
        // From here on the guard removes the directory whatever fails.
        let pair = Pair {
            bin,
            dir,
            primary_port: free_port(),
            replica_port: free_port(),
        };
        let chown = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&pair.dir)
            .status()
            .expect("chown");
        assert!(chown.success(), "chown of {} failed", pair.dir.display());
        let primary = pair.path("primary");
        let replica = pair.path("replica");
        as_postgres(
            &pair.bin.join("initdb"),
            &["-D", &primary, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        let hba = pair.dir.join("primary/pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        text.push_str("\nhost replication all 127.0.0.1/32 trust\n");
        std::fs::write(&hba, text).expect("pg_hba.conf written");
        pair.pg_ctl_start(&primary, pair.primary_port);
        as_postgres(
            &pair.bin.join("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &pair.primary_port.to_string(),
                "-U",
                "postgres",
                "-D",
                &replica,
                "-R",
                "-X",
                "stream",
            ],
        );
        pair.pg_ctl_start(&replica, pair.replica_port);
        pair
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn pg_ctl_start(&self, data: &str, port: u16) {
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.dir.display()
        );
        as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data,
                "-o",
                &options,
                "-l",
                &format!("{data}.log"),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the standby at once, as a crash would.
    fn stop_replica(&self) {
        as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", &self.path("replica"), "-m", "immediate", "-w", "stop"],
        );
    }

    fn url(port: u16, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/{database}")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for data in ["replica", "primary"] {
            let data = self.path(data);
            if Path::new(&data).join("postmaster.pid").exists() {
                let _ = Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(self.bin.join("pg_ctl"))
                    .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of the sample `name` (with its labels, as rendered) in the
/// Prometheus text, if present.
fn sample(metrics: &PrometheusHandle, name: &str) -> Option<f64> {
    metrics.render().lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

fn ids(page: &herald_proto::v1::ListDeliveriesResponse) -> Vec<String> {
    page.deliveries.iter().map(|d| d.id.clone()).collect()
}

/// Whether the server at `url` has the delivery in the log view.
async fn has_delivery(url: &str, id: &str) -> bool {
    let Ok(client) = connect_pg(url).await else {
        return false;
    };
    let id = Uuid::parse_str(id).unwrap();
    client
        .query_one(
            "SELECT count(*) FROM deliveries_with_scheduled WHERE id = $1",
            &[&id],
        )
        .await
        .is_ok_and(|row| row.get::<_, i64>(0) == 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_reads_the_replica_and_finds_what_it_lacks_on_the_primary() {
    let pair = tokio::task::spawn_blocking(Pair::start)
        .await
        .expect("cluster set-up");
    tokio::time::timeout(WHOLE_TEST, scenario(&pair))
        .await
        .expect("the replica test finishes within a minute");
}

async fn scenario(pair: &Pair) {
    let admin_url = Pair::url(pair.primary_port, "postgres");
    connect_pg(&admin_url)
        .await
        .expect("own primary reachable")
        .batch_execute("CREATE DATABASE herald")
        .await
        .expect("database created");
    let primary_url = Pair::url(pair.primary_port, "herald");
    let replica_url = Pair::url(pair.replica_port, "herald");
    // The schema first, and on the replica before ingest starts: a replica
    // that cannot answer yet would (rightly) be skipped for a few seconds,
    // and the list below would then come from the primary.
    herald_store::migrate(&primary_url)
        .await
        .expect("migrations on the primary");
    eventually(WAIT, "the replica has replayed the schema", || async {
        match connect_pg(&replica_url).await {
            Ok(client) => client
                .query_one(
                    "SELECT to_regclass('deliveries_with_scheduled') IS NOT NULL",
                    &[],
                )
                .await
                .is_ok_and(|row| row.get::<_, bool>(0)),
            Err(_) => false,
        }
    })
    .await;

    // Deliveries stay scheduled: no sender runs, so the log only changes
    // by what this test fires.
    // The recorder is process-wide; this binary has this one test.
    let metrics = herald_service::http::install_prometheus().expect("metrics recorder");
    let mut env = TestEnv::new("30s").await.expect("test environment");
    let (primary, replica) = (primary_url.clone(), replica_url.clone());
    env.start_ingest_on(env.queue.clone(), None, move |config| {
        config.database_url = primary.into();
        config.read_database_url = Some(replica.into());
    })
    .await
    .expect("ingest up");
    let webhook = env
        .webhook("order.created", "POST", "http://127.0.0.1:9/hook")
        .await;
    let mut admin = env.admin().await;
    let list = |admin: &mut herald_proto::v1::admin_client::AdminClient<_>| {
        let mut admin = admin.clone();
        async move {
            admin
                .list_deliveries(ListDeliveriesRequest::default())
                .await
                .expect("ListDeliveries answers")
                .into_inner()
        }
    };

    // The replica follows: a delivery fired now reaches it and the list.
    let first = env.fire_json("order.created", r#"{"n":1}"#).await.remove(0);
    eventually(WAIT, "the first delivery is on the replica", || {
        has_delivery(&replica_url, &first)
    })
    .await;
    eventually(WAIT, "the first delivery is listed", || {
        let page = list(&mut admin);
        let first = first.clone();
        async move { ids(&page.await).contains(&first) }
    })
    .await;

    // Lag, made deterministic: the standby keeps receiving WAL but does not
    // replay it.
    let replica_db = connect_pg(&replica_url).await.expect("replica reachable");
    replica_db
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("replay paused");
    eventually(WAIT, "replay is paused", || async {
        replica_db
            .query_one("SELECT pg_get_wal_replay_pause_state()::text", &[])
            .await
            .is_ok_and(|row| row.get::<_, String>(0) == "paused")
    })
    .await;

    let second = env.fire_json("order.created", r#"{"n":2}"#).await.remove(0);
    eventually(WAIT, "the second delivery is on the primary", || {
        has_delivery(&primary_url, &second)
    })
    .await;
    assert!(
        !has_delivery(&replica_url, &second).await,
        "replay is paused, so the replica must not have the second delivery"
    );

    // (a) A lookup by id finds it anyway: the replica's NOT_FOUND is checked
    // on the primary.
    let found = admin
        .get_delivery(GetDeliveryRequest { id: second.clone() })
        .await
        .expect("a delivery missing on the replica is found on the primary")
        .into_inner();
    assert_eq!(found.id, second);
    assert_eq!(found.state, "scheduled");
    assert!(
        sample(
            &metrics,
            r#"herald_read_replica_fallbacks_total{reason="not_found"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "the look-up on the primary is counted"
    );
    // An id nobody has stays NOT_FOUND.
    let status = admin
        .get_delivery(GetDeliveryRequest {
            id: Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // (b) Lists come from the replica as it is: the second delivery is not
    // there while replay is paused (the documented lag), the first is.
    let page = list(&mut admin).await;
    assert!(ids(&page).contains(&first), "{page:?}");
    assert!(
        !ids(&page).contains(&second),
        "listed from the primary? {page:?}"
    );
    let summary = admin
        .get_webhook_summary(GetWebhookSummaryRequest {
            webhook_id: webhook.id.clone(),
            ..Default::default()
        })
        .await
        .expect("summary")
        .into_inner();
    assert_eq!(summary.fired, 1, "the summary is the replica's too");
    // The lag the gauge reports shows once the standby received WAL it has
    // not replayed (streaming is asynchronous, hence the wait).
    let replica_store = Store::new(herald_store::pool(&replica_url, 1).expect("replica pool"));
    eventually(WAIT, "a paused standby reports lag", || async {
        replica_store
            .replica_lag()
            .await
            .is_ok_and(|lag| lag > Duration::ZERO)
    })
    .await;

    eventually(WAIT, "ingest's lag gauge shows the lag", || async {
        sample(&metrics, "herald_read_replica_lag_seconds").is_some_and(|lag| lag > 0.0)
    })
    .await;

    replica_db
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("replay resumed");
    eventually(WAIT, "the second delivery is listed after resume", || {
        let page = list(&mut admin);
        let second = second.clone();
        async move { ids(&page.await).contains(&second) }
    })
    .await;
    eventually(WAIT, "the lag is back to zero", || async {
        replica_store
            .replica_lag()
            .await
            .is_ok_and(|lag| lag == Duration::ZERO)
    })
    .await;
    drop(replica_db);
    drop(replica_store);

    // (c) The replica gone: reads fall back to the primary instead of failing.
    pair.stop_replica();
    let third = env.fire_json("order.created", r#"{"n":3}"#).await.remove(0);
    eventually(WAIT, "the third delivery is on the primary", || {
        has_delivery(&primary_url, &third)
    })
    .await;
    let page = list(&mut admin).await;
    for id in [&first, &second, &third] {
        assert!(ids(&page).contains(id), "{id} missing from {page:?}");
    }
    let found = admin
        .get_delivery(GetDeliveryRequest { id: third.clone() })
        .await
        .expect("GetDelivery answers without the replica")
        .into_inner();
    assert_eq!(found.id, third);
    let summary = admin
        .get_webhook_summary(GetWebhookSummaryRequest {
            webhook_id: webhook.id.clone(),
            ..Default::default()
        })
        .await
        .expect("summary without the replica")
        .into_inner();
    assert_eq!(summary.fired, 3);
    assert!(
        sample(
            &metrics,
            r#"herald_read_replica_fallbacks_total{reason="unavailable"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "reads that went to the primary instead are counted"
    );
    drop(env);
}
