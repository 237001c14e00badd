//! Admin's calls for ordered delivery: resuming an ordering key that a
//! final failure stopped, and listing a webhook's stopped keys.
//!
//! The stop itself is the sender's (it owns the key's partition); this
//! module only reads and removes it, and resends through the publisher,
//! which routes a delivery with a key to the key's partition, so resent
//! deliveries queue in Fire order behind whatever the key has queued.
//! It must not attempt or record deliveries.

use std::time::SystemTime;

use herald_core::ordering::OrderingKey;
use herald_proto::v1::{
    ListStoppedKeysRequest, ListStoppedKeysResponse, ResumeOrderingKeyRequest,
    ResumeOrderingKeyResponse, StoppedKey,
};
use herald_store::OrderingStore;
use tonic::Status;
use uuid::Uuid;

use crate::AdminService;
use crate::admin::{parse_id, store_status};
use crate::delivery_log::resend_message;
use crate::ingest::unix_ms;

/// Most deliveries one ResumeOrderingKey resends (the failed one and those
/// held since); a key with more is resumed in several calls' worth of
/// resends only if the operator replays the rest.
const MAX_RESEND: i64 = 10_000;
/// Most stopped keys ListStoppedKeys answers.
const MAX_LISTED: i64 = 1_000;

impl AdminService {
    fn ordering(&self) -> OrderingStore {
        OrderingStore::new(self.store.pool().clone())
    }

    pub(crate) async fn resume_key_checked(
        &self,
        req: ResumeOrderingKeyRequest,
    ) -> Result<ResumeOrderingKeyResponse, Status> {
        let webhook_id = parse_id("webhook_id", &req.webhook_id)?;
        let Some(key) = OrderingKey::parse(req.ordering_key)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
        else {
            return Err(Status::invalid_argument(
                "ordering_key: is required; name the key to resume (ListStoppedKeys lists them)",
            ));
        };
        let ordering = self.ordering();
        // What to resend is read before the stop goes, so that the sender
        // cannot start holding nothing back between the two.
        let (failed, held) = match ordering
            .stopped_by(webhook_id, key.as_str())
            .await
            .map_err(store_status)?
        {
            Some(failed) if req.resend => {
                let held = ordering
                    .held_after(webhook_id, key.as_str(), failed, MAX_RESEND - 1)
                    .await
                    .map_err(store_status)?;
                (failed, held)
            }
            Some(failed) => (failed, Vec::new()),
            None => {
                return Err(Status::not_found(format!(
                    "ordering key {:?} of webhook {webhook_id} is not stopped; nothing to resume",
                    key.as_str()
                )));
            }
        };
        let mut originals = Vec::with_capacity(held.len() + 1);
        if req.resend {
            originals.push(
                self.store
                    .get_delivery(failed)
                    .await
                    .map_err(store_status)?,
            );
            originals.extend(held);
        }
        let messages = if originals.is_empty() {
            Vec::new()
        } else {
            let webhook = self.enabled_webhook(webhook_id)?;
            originals
                .iter()
                .map(|original| resend_message(original, &webhook))
                .collect::<Result<Vec<_>, _>>()?
        };
        ordering
            .resume(webhook_id, key.as_str())
            .await
            .map_err(store_status)?;
        // One after the other, each confirmed before the next: the
        // partition queue's order is the order the sender attempts them in.
        let mut delivery_ids = Vec::with_capacity(messages.len());
        for message in &messages {
            self.publisher.publish(message).await.map_err(|e| {
                Status::unavailable(format!(
                    "the key is resumed, but only {} of {} deliveries could be resent ({e}); \
                     resend the rest with ResendDelivery, in order",
                    delivery_ids.len(),
                    messages.len()
                ))
            })?;
            delivery_ids.push(Uuid::from_slice(&message.delivery_id).unwrap_or_default());
        }
        crate::scheduled::record(
            &self.log,
            messages,
            crate::scheduled::first_attempt_in(&self.publisher),
        );
        tracing::info!(%webhook_id, ordering_key = key.as_str(), stopped_by = %failed, resent = delivery_ids.len(), "ordering key resumed");
        Ok(ResumeOrderingKeyResponse {
            stopped_by: failed.to_string(),
            delivery_ids: delivery_ids.iter().map(Uuid::to_string).collect(),
        })
    }

    pub(crate) async fn stopped_keys_checked(
        &self,
        req: ListStoppedKeysRequest,
    ) -> Result<ListStoppedKeysResponse, Status> {
        let webhook_id = parse_id("webhook_id", &req.webhook_id)?;
        let stops = self
            .ordering()
            .stops(webhook_id, MAX_LISTED)
            .await
            .map_err(store_status)?;
        Ok(ListStoppedKeysResponse {
            keys: stops
                .into_iter()
                .map(
                    |(key, stopped_by, at): (String, Uuid, SystemTime)| StoppedKey {
                        ordering_key: key,
                        stopped_by: stopped_by.to_string(),
                        stopped_at_unix_ms: unix_ms(at),
                    },
                )
                .collect(),
        })
    }
}
