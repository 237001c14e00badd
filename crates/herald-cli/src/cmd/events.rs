//! `herald events`: the configured events of a tenant with their webhooks
//! (`Ingest.ListEvents`).
//!
//! This module only shows what the API answers; it must never filter or
//! regroup the webhooks itself.

use herald_proto::v1::ListEventsRequest;

use crate::client::{Connection, api, connect};
use crate::output::{self, print_json};

/// `herald events`: one row per (event, webhook).
pub async fn run(conn: &Connection, json: bool, tenant: String) -> anyhow::Result<()> {
    let mut c = connect(conn).await?;
    let answer = api(c.ingest.list_events(ListEventsRequest { tenant }).await)?;
    if json {
        print_json(&output::list_events_json(&answer));
    } else if answer.events.is_empty() {
        eprintln!("no events configured for this tenant");
    } else {
        print!("{}", output::events_table(&answer.events));
    }
    Ok(())
}
