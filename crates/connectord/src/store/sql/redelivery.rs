//! What the failed-delivery redelivery asks of the store: was a delivery
//! recorded, and the at-most-once claim on asking GitHub to redeliver it.

use super::SqlStore;
use crate::store::models::Millis;
use crate::store::Result;
use futures::FutureExt;

impl SqlStore {
    /// Whether a delivery with this `X-GitHub-Delivery` is recorded (any outcome).
    pub(super) async fn delivery_is_recorded(&self, guid: &str) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM webhook_delivery WHERE delivery_id = $1 LIMIT 1")
                .bind(guid)
                .fetch_optional(&self.read)
                .await?;
        Ok(found.is_some())
    }

    /// Records that redelivery of `guid` is being asked for; `false` if it
    /// was already (by this or another process): then it must not be asked again.
    pub(super) async fn claim_redelivery_of(
        &self,
        guid: &str,
        hook_delivery_id: i64,
        now: Millis,
    ) -> Result<bool> {
        let guid = guid.to_owned();
        self.write(move |c| {
            async move {
                let row: Option<String> = sqlx::query_scalar(
                    "INSERT INTO redelivery_request (delivery_guid, hook_delivery_id, requested_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (delivery_guid) DO NOTHING RETURNING delivery_guid",
                )
                .bind(guid)
                .bind(hook_delivery_id)
                .bind(now)
                .fetch_optional(&mut *c)
                .await?;
                Ok(row.is_some())
            }
            .boxed()
        })
        .await
    }

    /// Drops the claim on `guid`: GitHub refused the request, so it was not
    /// redelivered and a later pass may ask again.
    pub(super) async fn release_redelivery_of(&self, guid: &str) -> Result<()> {
        let guid = guid.to_owned();
        self.write(move |c| {
            async move {
                sqlx::query("DELETE FROM redelivery_request WHERE delivery_guid = $1")
                    .bind(guid)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            }
            .boxed()
        })
        .await
    }

    /// Forgets claims older than `before` (past GitHub's redelivery window).
    pub(super) async fn prune_redelivery_claims_before(&self, before: Millis) -> Result<u64> {
        self.write(move |c| {
            async move {
                let done = sqlx::query("DELETE FROM redelivery_request WHERE requested_at < $1")
                    .bind(before)
                    .execute(&mut *c)
                    .await?;
                Ok(done.rows_affected())
            }
            .boxed()
        })
        .await
    }
}
