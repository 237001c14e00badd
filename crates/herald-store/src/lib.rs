//! Postgres pool, migrations, webhook configuration (with a live cache) and the delivery/attempt tables.
