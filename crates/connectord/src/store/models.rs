//! Rows as the admin API shows them (camelCase JSON), and the inputs that create them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

pub use super::states::{
    ConnectorStatus, DeliveryOutcome, SyncStatus, SyncTrigger, TargetHealth, TargetStatus,
};

/// Milliseconds since the Unix epoch, the store's only time representation.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 (UTC, millisecond precision) for API output.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorInstance {
    pub id: String,
    /// Always `github` for now.
    #[serde(rename = "type")]
    pub connector_type: String,
    pub installation_id: i64,
    pub account_login: Option<String>,
    pub status: ConnectorStatus,
    pub repository_selection: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub permissions: Option<serde_json::Value>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub id: String,
    pub connector_id: String,
    pub repository_full_name: String,
    pub repository_id: Option<i64>,
    pub branch: String,
    /// Empty for the whole repository, else a directory ending in `/`.
    pub path_prefix: String,
    /// Files larger than this are skipped (`too_large`), not fetched.
    pub max_file_bytes: i64,
    /// `inactive`: the installation was deleted; `inaccessible`: the repository was removed from the installation; `deleted`: the repository was deleted.
    pub status: TargetStatus,
    /// `pending`: never synced.
    pub health: TargetHealth,
    pub archived: bool,
    /// The head of the last push recorded for the branch.
    pub latest_head_sha: Option<String>,
    pub last_synced_sha: Option<String>,
    pub last_synced_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct SyncCounts {
    pub created: i64,
    pub updated: i64,
    pub deleted: i64,
    pub skipped: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct FileFailure {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncEvent {
    pub id: String,
    pub connector_target_id: String,
    pub delivery_id: Option<String>,
    pub trigger: SyncTrigger,
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Null until resolved for initial and manual syncs.
    pub head_sha: Option<String>,
    pub status: SyncStatus,
    pub counts: SyncCounts,
    /// Skipped files by reason (`unchanged`, `too_large`, `symlink`, `submodule`, `lfs_pointer`).
    pub skipped_reasons: BTreeMap<String, i64>,
    pub failures: Vec<FileFailure>,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// When a queued (retrying) event will next be tried.
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The `X-GitHub-Delivery` id (replays get `<id>:replay:<n>`).
    pub id: String,
    pub event: String,
    pub action: Option<String>,
    pub installation_id: Option<i64>,
    pub repository_id: Option<i64>,
    pub repository_full_name: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub head_sha: Option<String>,
    pub hook_id: Option<String>,
    pub hook_installation_target_id: Option<String>,
    /// `duplicate`: the same head was already queued.
    pub outcome: DeliveryOutcome,
    pub reason: Option<String>,
    pub sync_event_ids: Vec<String>,
    /// Whether the raw body is still retained (and so can be replayed).
    pub body_retained: bool,
    pub replay_of: Option<String>,
    pub received_at: String,
}

/// `GithubConnectorSyncJob`: exactly the spec's fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GithubConnectorSyncJob {
    /// Always `github`.
    pub connector_type: String,
    pub connector_instance_id: String,
    pub connector_target_id: String,
    pub connector_sync_event_id: String,
    /// Null for initial, manual and resync jobs, which no delivery caused.
    pub delivery_id: Option<String>,
    pub installation_id: i64,
    /// Null when the target was added by name and no push has told us its id yet.
    pub repository_id: Option<i64>,
    pub repository_full_name: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Null for initial and manual syncs: the worker resolves the branch head when it runs.
    pub head_sha: Option<String>,
}

/// A job a worker holds under a lease. `attempt` fences every later state change.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job_id: String,
    pub attempt: i64,
    pub max_attempts: i64,
    pub job: GithubConnectorSyncJob,
    /// The target's path prefix, for the reconciler.
    pub path_prefix: String,
    /// Files larger than this are skipped, not fetched.
    pub max_file_bytes: i64,
}

/// A verified delivery about to be recorded.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub event: String,
    pub action: Option<String>,
    pub installation_id: Option<i64>,
    pub repository_id: Option<i64>,
    pub repository_full_name: Option<String>,
    pub git_ref: Option<String>,
    pub head_sha: Option<String>,
    pub hook_id: Option<String>,
    pub hook_installation_target_id: Option<String>,
    pub content_type: String,
    /// The raw body as received (shared, not copied, on its way to the store).
    pub body: bytes::Bytes,
    pub replay_of: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Accepted,
    Ignored,
    Duplicate,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Ignored => "ignored",
            Outcome::Duplicate => "duplicate",
        }
    }
}

/// What ingress answers, and what a replay returns.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestOutcome {
    pub delivery_id: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sync_event_ids: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct NewTarget {
    pub repository_full_name: crate::domain::RepoFullName,
    pub repository_id: Option<i64>,
    pub branch: crate::domain::BranchName,
    pub path_prefix: crate::domain::PathPrefix,
    pub max_file_bytes: i64,
}

/// One page of a list, newest first; pass `nextCursor` back as `cursor` for the next.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Keyset pagination: newest first; `cursor` is opaque (the key of the previous page's last item).
#[derive(Debug, Clone)]
pub struct Page {
    pub limit: i64,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SyncEventFilter {
    pub target_id: Option<String>,
    pub status: Option<SyncStatus>,
}

/// What a failed sync says about its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureHealth {
    /// `failing`, unless the target already carries a more specific flag.
    Failing,
    /// `inaccessible`: the App cannot read the repository any more.
    Inaccessible,
}

/// The worker's report of a finished reconciliation. `changes` are applied to
/// the content store in the same transaction that completes the job.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub head_sha: Option<String>,
    pub counts: SyncCounts,
    /// Skips by reason: `unchanged`, `too_large`, `symlink`, `submodule`, `lfs_pointer`.
    pub skipped_reasons: BTreeMap<String, i64>,
    pub failures: Vec<FileFailure>,
    pub changes: Vec<DocumentChange>,
}

/// One change to a target's stored documents. An upsert names a blob the
/// reconciler has already written with [`Store::put_blob`](crate::store::Store::put_blob):
/// the completion moves document rows, never bytes.
#[derive(Debug, Clone)]
pub enum DocumentChange {
    Upsert {
        path: String,
        blob_sha: String,
        size: i64,
        is_binary: bool,
    },
    Delete {
        path: String,
    },
}

/// A stored document's metadata.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub path: String,
    /// The git blob SHA of the content (also the `ETag` of the raw document).
    pub blob_sha: String,
    pub size: i64,
    pub is_binary: bool,
    pub updated_at: String,
    /// The sync that last wrote it.
    pub sync_event_id: String,
}

/// One synced revision of a target: the documents as that sync left them.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// The commit synced (null only for a revision recorded before heads were).
    pub head_sha: Option<String>,
    /// The change feed's last `seq` in this revision (0: none yet).
    pub seq: i64,
    /// False when the sync ended `partial` (some files kept their older content).
    pub complete: bool,
    /// The sync that made it (null for the revision recorded at migration).
    pub sync_event_id: Option<String>,
    pub created_at: String,
}

/// One page of a target's documents, all from one revision.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentListing {
    pub items: Vec<Document>,
    /// Pass back as `cursor`: later pages stay on this page's revision.
    #[schema(nullable)]
    pub next_cursor: Option<String>,
    /// The revision every item of this listing belongs to (null: nothing synced yet).
    #[schema(nullable)]
    pub revision: Option<Revision>,
}

/// What retention keeps of the content store.
#[derive(Debug, Clone, Copy)]
pub struct ContentRetention {
    /// Revisions kept per target, newest first, whatever their age.
    pub keep_revisions: i64,
    /// Older revisions are dropped once made before this.
    pub revisions_before: Millis,
    /// Unreferenced blobs are collected only if written before this: a sync
    /// writes its blobs before the transaction that points documents at them.
    pub blobs_before: Millis,
}

/// One entry of a target's change feed.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeEntry {
    pub seq: i64,
    pub target_id: String,
    pub path: String,
    /// `created`, `updated` or `deleted`.
    pub op: String,
    /// Null for deletions.
    pub blob_sha: Option<String>,
    pub sync_event_id: String,
    /// The revision (head SHA) the change belongs to: `?revision=` on the documents API.
    pub head_sha: Option<String>,
}

/// A target as the missed-push pass sees it just before asking GitHub for
/// its branch head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadPollTarget {
    pub id: String,
    pub installation_id: i64,
    pub repository_full_name: String,
    pub branch: String,
    /// The head of the last push recorded (or the last head the pass saw).
    pub latest_head_sha: Option<String>,
    pub last_synced_sha: Option<String>,
    /// The newest sync not replaced by a later one: its head (`None` for a
    /// sync that resolves the branch when it runs) and status.
    pub newest_sync: Option<(Option<String>, SyncStatus)>,
}

impl HeadPollTarget {
    /// Whether GitHub's `head` differs from what the target is at or on its
    /// way to. A failed sync of that same head is not queued again: it failed
    /// after all its attempts, and a new push or an admin's sync retries it.
    pub fn needs_sync(&self, head: &str) -> bool {
        match &self.newest_sync {
            Some((Some(h), _)) => h != head,
            // Queued or running without a head: it reads the branch itself.
            Some((None, status)) if !status.is_final() => false,
            _ => self.last_synced_sha.as_deref() != Some(head),
        }
    }
}

#[cfg(test)]
mod head_poll_tests {
    use super::*;

    fn target(
        last_synced: Option<&str>,
        newest: Option<(Option<&str>, SyncStatus)>,
    ) -> HeadPollTarget {
        HeadPollTarget {
            id: "tgt".into(),
            installation_id: 1,
            repository_full_name: "o/r".into(),
            branch: "main".into(),
            latest_head_sha: None,
            last_synced_sha: last_synced.map(str::to_owned),
            newest_sync: newest.map(|(h, s)| (h.map(str::to_owned), s)),
        }
    }

    #[test]
    fn a_head_is_synced_when_nothing_is_at_or_on_its_way_to_it() {
        use SyncStatus::*;
        // Never synced, nothing queued.
        assert!(target(None, None).needs_sync("b"));
        // At the head already.
        assert!(!target(Some("b"), Some((Some("b"), Completed))).needs_sync("b"));
        // Behind: the webhook for `c` never came.
        assert!(target(Some("b"), Some((Some("b"), Completed))).needs_sync("c"));
        // On its way there.
        assert!(!target(Some("b"), Some((Some("c"), Queued))).needs_sync("c"));
        assert!(!target(Some("b"), Some((Some("c"), Running))).needs_sync("c"));
        // On its way somewhere else (an overtaken push): go to GitHub's head.
        assert!(target(Some("b"), Some((Some("c"), Queued))).needs_sync("d"));
        // Failed for good at this head: not retried by the pass.
        assert!(!target(Some("a"), Some((Some("b"), Failed))).needs_sync("b"));
        // A head-less sync resolves the branch itself.
        assert!(!target(None, Some((None, Queued))).needs_sync("b"));
        // A finished head-less sync: compare with what it synced.
        assert!(!target(Some("b"), Some((None, Failed))).needs_sync("b"));
        assert!(target(Some("a"), Some((None, Failed))).needs_sync("b"));
    }
}
