//! A throw-away database per test, so that tests can run in parallel against
//! one Postgres server without seeing each other's rows.

use tokio_postgres::NoTls;
use uuid::Uuid;

use crate::{Pool, migrate, pool, with_database};

/// Where the Postgres server is, unless `HERALD_TEST_DATABASE_URL` says
/// otherwise. Its database is only used to create and drop the test ones.
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database created for one test and dropped when this value is dropped,
/// even if the test panicked.
pub(crate) struct TestDb {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDb {
    /// Creates an empty database.
    pub(crate) async fn create() -> TestDb {
        let admin_url =
            std::env::var("HERALD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
        let name = format!("herald_store_test_{}", Uuid::new_v4().simple());
        let admin = connect(&admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let url = with_database(&admin_url, &name);
        TestDb {
            admin_url,
            name,
            url,
        }
    }

    /// Creates a database with the schema applied.
    pub(crate) async fn migrated() -> TestDb {
        let db = TestDb::create().await;
        migrate(db.url()).await.expect("migrate");
        db
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn pool(&self) -> Pool {
        pool(&self.url, 8).expect("pool")
    }

    /// Inserts a bare webhook row (the columns without defaults only) and
    /// returns its id, for tests of tables that refer to one.
    pub(crate) async fn webhook_row(&self) -> Uuid {
        let id = Uuid::now_v7();
        self.connect()
            .await
            .execute(
                "INSERT INTO webhooks (id, event, method, url) \
                 VALUES ($1, 'order.created', 'POST', 'https://example.com/')",
                &[&id],
            )
            .await
            .expect("webhook row");
        id
    }

    /// A plain connection to the test database, outside any pool.
    pub(crate) async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be the single-threaded
        // one, so the database is dropped from a thread with its own runtime.
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let admin = connect(&admin_url).await;
                admin.batch_execute(&sql).await
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(database = %self.name, error = %e, "dropping test database failed")
            }
            Err(_) => tracing::warn!(database = %self.name, "dropping test database panicked"),
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(async move {
        // Ends when the client is dropped or the database is dropped.
        let _ = connection.await;
    });
    client
}
