//! Keeps the Grafana dashboards and the dashboard views honest: every panel's
//! SQL in `deploy/grafana/dashboards/*.json` is expanded the way Grafana's
//! Postgres datasource expands its macros and executed against a freshly
//! migrated database holding a few deliveries, once as the migration's user
//! and once as the read-only role `herald_dashboard`. A schema change that
//! breaks a panel, or a panel that needs more than the role may read, fails
//! here. The views' columns are checked against their documented list, and
//! the role must not be able to read `webhooks` (secrets live there).

use std::path::{Path, PathBuf};

use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The documented columns of the views (docs/operations.md, "Views"), in
/// order. Adding a column means adding it here and there.
const VIEWS: &[(&str, &[&str])] = &[
    (
        "herald_delivery_log",
        &[
            "id",
            "tenant",
            "event",
            "webhook_id",
            "target_url",
            "method",
            "state",
            "attempts",
            "last_status_code",
            "last_error",
            "last_error_kind",
            "fired_at",
            "last_attempt_at",
            "next_attempt_at",
            "finished_at",
            "last_duration_ms",
            "payload_kind",
            "resent_from",
        ],
    ),
    (
        "herald_webhook_health_hourly",
        &[
            "webhook_id",
            "tenant",
            "event",
            "hour",
            "fired",
            "succeeded",
            "failed",
            "cancelled",
            "pending",
            "success_rate",
            "attempts",
            "p50_ms",
            "p95_ms",
            "scheduled",
        ],
    ),
    (
        "herald_target_stats",
        &[
            "target_url",
            "webhooks",
            "attempts",
            "failures",
            "failure_rate",
            "p50_ms",
            "p95_ms",
            "last_attempt_at",
            "last_failure_at",
            "last_error",
        ],
    ),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A database for this test, dropped at the end even on panic.
struct ScratchDb {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDb {
    async fn create() -> ScratchDb {
        let admin_url =
            std::env::var("HERALD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
        let name = format!("herald_dash_test_{}", Uuid::new_v4().simple());
        connect(&admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create {name}: {e}"));
        let url = herald_store::with_database(&admin_url, &name);
        ScratchDb {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async { connect(&admin_url).await.batch_execute(&sql).await })
        })
        .join();
    }
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to Postgres: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The time range the macros expand to, as Grafana writes it (RFC 3339, UTC).
struct TimeRange {
    from: String,
    to: String,
}

/// Seconds of a Grafana interval such as `1m`, `'5m'`, `30s`, `1h`.
fn interval_seconds(arg: &str) -> u64 {
    let arg = arg.trim().trim_matches('\'');
    let (number, unit) = arg.split_at(arg.find(|c: char| !c.is_ascii_digit()).unwrap_or(arg.len()));
    let n: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("interval {arg:?}"));
    n * match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => panic!("unsupported interval unit {other:?} in {arg:?}"),
    }
}

/// Expands the Grafana Postgres macros the dashboards use into plain SQL,
/// the way the datasource does. Any other `$` left over is an error: an
/// unknown macro or a template variable this test cannot fill in.
fn expand_macros(sql: &str, range: &TimeRange) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(start) = rest.find("$__") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let name_len = after
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(after.len());
        let name = &after[..name_len];
        let tail = &after[name_len..];
        assert!(
            tail.starts_with('('),
            "macro $__{name} without arguments in:\n{sql}"
        );
        // Find the matching parenthesis.
        let mut depth = 0;
        let mut end = None;
        for (i, c) in tail.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let end = end.unwrap_or_else(|| panic!("unbalanced $__{name}( in:\n{sql}"));
        let args: Vec<&str> = tail[1..end]
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        let expanded = match (name, args.as_slice()) {
            ("timeFilter", [column]) => {
                format!("{column} BETWEEN '{}' AND '{}'", range.from, range.to)
            }
            ("timeFrom", []) => format!("'{}'", range.from),
            ("timeTo", []) => format!("'{}'", range.to),
            ("time", [column]) => format!("{column} AS \"time\""),
            ("timeGroup" | "timeGroupAlias", [column, interval, ..]) => {
                let s = interval_seconds(interval);
                let group = format!("floor(extract(epoch from {column})/{s})*{s}");
                if name == "timeGroupAlias" {
                    format!("{group} AS \"time\"")
                } else {
                    group
                }
            }
            _ => panic!("macro $__{name} with {args:?} is not supported by this test:\n{sql}"),
        };
        out.push_str(&expanded);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    assert!(
        !out.contains('$'),
        "after expanding the macros, a `$` is left (template variable?):\n{out}"
    );
    out
}

/// A panel query: dashboard file, panel title, format, SQL.
struct PanelQuery {
    file: String,
    title: String,
    format: String,
    datasource_uid: Option<String>,
    sql: String,
}

fn panel_queries() -> Vec<PanelQuery> {
    let dir = root().join("deploy/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/grafana/dashboards")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboard JSON in {}", dir.display());
    let mut queries = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let dashboard: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()));
        let mut panels: Vec<serde_json::Value> =
            dashboard["panels"].as_array().cloned().unwrap_or_default();
        // Rows hold their panels when collapsed.
        while let Some(panel) = panels.pop() {
            if let Some(nested) = panel["panels"].as_array() {
                panels.extend(nested.iter().cloned());
            }
            for target in panel["targets"].as_array().into_iter().flatten() {
                let uid = target["datasource"]["uid"]
                    .as_str()
                    .or_else(|| panel["datasource"]["uid"].as_str())
                    .map(str::to_owned);
                let sql = target["rawSql"]
                    .as_str()
                    .unwrap_or_else(|| {
                        panic!(
                            "panel {:?} in {} has a target without rawSql",
                            panel["title"],
                            file.display()
                        )
                    })
                    .to_owned();
                queries.push(PanelQuery {
                    file: file.file_name().unwrap().to_string_lossy().into_owned(),
                    title: panel["title"].as_str().unwrap_or("").to_owned(),
                    format: target["format"]
                        .as_str()
                        .unwrap_or("time_series")
                        .to_owned(),
                    datasource_uid: uid,
                    sql,
                });
            }
        }
    }
    queries
}

/// The uid of the provisioned Postgres datasource.
fn provisioned_datasource_uid() -> String {
    let text = std::fs::read_to_string(
        root().join("deploy/grafana/provisioning/datasources/postgres.yaml"),
    )
    .expect("datasource provisioning");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("uid:"))
        .map(|uid| uid.trim().trim_matches(['"', '\'']).to_owned())
        .expect("the datasource has a uid")
}

/// A few deliveries and attempts around `now`: every state, successes and
/// failures, so that every panel has rows to show.
async fn insert_rows(client: &Client) {
    client
        .batch_execute(
            "INSERT INTO webhooks (id, tenant, event, method, url, signing_secret)
             VALUES ('00000000-0000-7000-8000-000000000001', '', 'order.created', 'POST',
                     'https://shop.example/hook', 'plain:whsec_secret');

             INSERT INTO deliveries (id, tenant, event, webhook_id, target_url, method, payload,
                 payload_kind, fired_at, state, attempts, last_status_code, last_error,
                 last_attempt_at, next_attempt_at, finished_at)
             SELECT gen_random_uuid(), '', 'order.created',
                    CASE WHEN n % 2 = 0 THEN '00000000-0000-7000-8000-000000000001'::uuid
                         ELSE '00000000-0000-7000-8000-000000000002'::uuid END,
                    CASE WHEN n % 2 = 0 THEN 'https://shop.example/hook'
                         ELSE 'https://erp.example/in' END,
                    'POST', '{\"order\":1}', 'json',
                    now() - n * interval '3 minutes',
                    (ARRAY['succeeded', 'failed', 'pending', 'cancelled'])[n % 4 + 1],
                    CASE WHEN n % 4 = 3 THEN 0 ELSE 2 END,
                    CASE n % 4 WHEN 0 THEN 200 WHEN 1 THEN 500 WHEN 2 THEN 503 END,
                    CASE n % 4 WHEN 1 THEN 'HTTP 500' WHEN 2 THEN 'HTTP 503' END,
                    now() - n * interval '3 minutes' + interval '5 seconds',
                    CASE WHEN n % 4 = 2 THEN now() + interval '4 minutes' END,
                    CASE WHEN n % 4 <> 2 THEN now() - n * interval '3 minutes' END
             FROM generate_series(1, 40) n;

             INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, url,
                 status_code, error_kind, error_message)
             SELECT d.id, a, d.fired_at + a * interval '5 seconds', 20 + a * 7 + length(d.tenant),
                    d.target_url,
                    CASE WHEN a = 1 THEN 500 ELSE d.last_status_code END,
                    CASE WHEN a = 1 OR d.state <> 'succeeded' THEN 'http_status' END,
                    CASE WHEN a = 1 OR d.state <> 'succeeded' THEN 'HTTP 500' END
             FROM deliveries d, generate_series(1, d.attempts) a;",
        )
        .await
        .expect("insert rows");
}

#[tokio::test]
async fn every_panel_runs_against_the_schema_as_the_dashboard_role() {
    let db = ScratchDb::create().await;
    herald_store::migrate(&db.url).await.expect("migrate");
    let client = connect(&db.url).await;
    insert_rows(&client).await;

    let row = client
        .query_one(
            "SELECT to_char((now() - interval '6 hours') AT TIME ZONE 'UTC',
                            'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    to_char((now() + interval '1 minute') AT TIME ZONE 'UTC',
                            'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
            &[],
        )
        .await
        .unwrap();
    let range = TimeRange {
        from: row.get(0),
        to: row.get(1),
    };

    let uid = provisioned_datasource_uid();
    let queries = panel_queries();
    assert!(queries.len() >= 5, "the dashboard has its panels");
    for query in &queries {
        let context = format!("panel {:?} in {}", query.title, query.file);
        assert_eq!(
            query.datasource_uid.as_deref(),
            Some(uid.as_str()),
            "{context} uses the provisioned datasource"
        );
        let sql = expand_macros(&query.sql, &range);
        let rows = client
            .query(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{context} fails:\n{sql}\n{e:?}"));
        assert!(!rows.is_empty(), "{context} shows nothing:\n{sql}");
        if query.format == "time_series" {
            assert_eq!(
                rows[0].columns()[0].name(),
                "time",
                "{context}: a time series starts with its time column"
            );
        }

        // The same as the read-only role.
        client
            .batch_execute("SET ROLE herald_dashboard")
            .await
            .unwrap();
        let as_role = client.query(&sql, &[]).await;
        client.batch_execute("RESET ROLE").await.unwrap();
        let as_role = as_role
            .unwrap_or_else(|e| panic!("{context} fails as herald_dashboard:\n{sql}\n{e:?}"));
        assert_eq!(as_role.len(), rows.len(), "{context} as herald_dashboard");
    }

    // The views have their documented columns, and the role reads them.
    for (view, columns) in VIEWS {
        let actual: Vec<String> = client
            .query(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1
                 ORDER BY ordinal_position",
                &[view],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(&actual, columns, "columns of {view}");
        client
            .batch_execute("SET ROLE herald_dashboard")
            .await
            .unwrap();
        let read = client.query(&format!("SELECT * FROM {view}"), &[]).await;
        client.batch_execute("RESET ROLE").await.unwrap();
        let read = read.unwrap_or_else(|e| panic!("{view} as herald_dashboard: {e:?}"));
        assert!(!read.is_empty(), "{view} has rows");
    }

    // Nothing else: not the webhooks (secrets), not the migration history.
    for forbidden in [
        "SELECT * FROM webhooks",
        "SELECT signing_secret FROM webhooks",
        "SELECT * FROM refinery_schema_history",
        "DELETE FROM deliveries",
        "UPDATE delivery_attempts SET duration_ms = 0",
    ] {
        client
            .batch_execute("SET ROLE herald_dashboard")
            .await
            .unwrap();
        let result = client.query(forbidden, &[]).await;
        client.batch_execute("RESET ROLE").await.unwrap();
        let err = result.expect_err(forbidden);
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{forbidden}: {err:?}"
        );
    }
    let can_login: bool = client
        .query_one(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'herald_dashboard'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !can_login,
        "herald_dashboard is NOLOGIN; users are members of it"
    );
}

/// The role-creating `DO` block of the V4 migration, for `role`.
fn role_block(role: &str) -> String {
    let migration = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/V4__dashboards_retention.sql"),
    )
    .expect("V4 migration");
    let start = migration
        .find("DO $$")
        .expect("the migration has a DO block");
    let end = start + migration[start..].find("$$;").expect("end of the DO block") + 3;
    migration[start..end].replace("herald_dashboard", role)
}

#[tokio::test]
async fn concurrent_migrations_of_several_databases_race_safely_on_the_role() {
    // The role is cluster-wide, so the real herald_dashboard exists after the
    // first migration ever and cannot be dropped while databases grant it.
    // The race is therefore exercised with the migration's own DO block under
    // a fresh role name, in several migrated databases at the same moment.
    let mut dbs = Vec::new();
    for _ in 0..8 {
        dbs.push(ScratchDb::create().await);
    }
    let migrated =
        futures_util::future::join_all(dbs.iter().map(|db| herald_store::migrate(&db.url))).await;
    for result in migrated {
        result.expect("concurrent migrate of different databases");
    }
    let role = format!("herald_dash_race_{}", Uuid::new_v4().simple());
    let block = role_block(&role);
    let mut clients = Vec::new();
    for db in &dbs {
        clients.push(connect(&db.url).await);
    }
    let results =
        futures_util::future::join_all(clients.iter().map(|c| c.batch_execute(&block))).await;
    let mut granted = Vec::new();
    for client in &clients {
        granted.push(
            client
                .query_one(
                    "SELECT has_table_privilege($1, 'herald_delivery_log', 'SELECT')",
                    &[&role],
                )
                .await,
        );
    }
    drop(clients);
    let admin_url = dbs[0].admin_url.clone();
    drop(dbs);
    connect(&admin_url)
        .await
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .expect("drop the race role");
    for result in results {
        result.expect("every concurrent creation succeeds");
    }
    for result in granted {
        assert!(
            result.unwrap().get::<_, bool>(0),
            "every database grants the role"
        );
    }
}

#[test]
fn macros_expand_like_grafana() {
    let range = TimeRange {
        from: "2026-01-01T00:00:00Z".into(),
        to: "2026-01-01T06:00:00Z".into(),
    };
    assert_eq!(
        expand_macros(
            "SELECT $__timeGroupAlias(fired_at, 1m), count(*) FROM deliveries \
             WHERE $__timeFilter(fired_at) AND fired_at < $__timeTo() GROUP BY 1",
            &range
        ),
        "SELECT floor(extract(epoch from fired_at)/60)*60 AS \"time\", count(*) FROM deliveries \
         WHERE fired_at BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-01T06:00:00Z' \
         AND fired_at < '2026-01-01T06:00:00Z' GROUP BY 1"
    );
    assert_eq!(
        expand_macros("$__timeGroup(a.started_at, '5m')", &range),
        "floor(extract(epoch from a.started_at)/300)*300"
    );
}
