//! The states of connectors, targets and syncs as closed enums. The database
//! keeps them as text (readable in `sqlite3`/`psql`, and the SQL's own
//! literals such as `status = 'queued'` stay plain); everything in Rust and
//! in the API goes through these types, so a misspelt state fails to compile
//! and an unknown one read back from the database is an error, not a string
//! passed along.

use crate::store::StoreError;

/// A state's text was none of the known ones.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} `{value}`; one of {expected}")]
pub struct UnknownState {
    pub kind: &'static str,
    pub value: String,
    pub expected: String,
}

impl From<UnknownState> for StoreError {
    /// Read back from the database: the row holds what no code writes.
    fn from(e: UnknownState) -> Self {
        StoreError::Internal(e.into())
    }
}

macro_rules! states {
    ($(#[$m:meta])* $name:ident ($kind:literal) { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownState;

            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownState {
                        kind: $kind,
                        value: s.chars().take(64).collect(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}

states! {
    /// A connector (one GitHub App installation).
    ConnectorStatus ("connector status") {
        Active = "active",
        Suspended = "suspended",
        Deleted = "deleted",
    }
}

states! {
    /// Whether a target is tracked.
    TargetStatus ("target status") {
        Active = "active",
        /// The installation was deleted.
        Inactive = "inactive",
        /// The repository was removed from the installation.
        Inaccessible = "inaccessible",
        /// The repository was deleted.
        Deleted = "deleted",
        /// Deleted through the admin API (never listed).
        Removed = "removed",
    }
}

states! {
    /// How a target's syncs are going.
    TargetHealth ("target health") {
        /// Never synced.
        Pending = "pending",
        Ok = "ok",
        Failing = "failing",
        Inaccessible = "inaccessible",
        BranchDeleted = "branch_deleted",
    }
}

states! {
    /// A sync event (and its job) from queued to a final state.
    SyncStatus ("sync status") {
        Queued = "queued",
        Running = "running",
        Completed = "completed",
        /// Completed with per-file failures.
        Partial = "partial",
        Failed = "failed",
        /// A newer push for the same target replaced it before it ran.
        Superseded = "superseded",
        Cancelled = "cancelled",
    }
}

states! {
    /// What queued a sync.
    SyncTrigger ("sync trigger") {
        Push = "push",
        /// The target was created.
        Initial = "initial",
        /// An admin asked for it.
        Manual = "manual",
        /// Access to the repository came back.
        Resync = "resync",
        /// The missed-push pass found the branch at a head no push brought.
        Reconcile = "reconcile",
    }
}

states! {
    /// What ingress did with a delivery.
    DeliveryOutcome ("delivery outcome") {
        Accepted = "accepted",
        Ignored = "ignored",
        Duplicate = "duplicate",
    }
}

impl SyncStatus {
    /// No further change happens to an event in this state.
    pub fn is_final(self) -> bool {
        !matches!(self, SyncStatus::Queued | SyncStatus::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_text_and_json() {
        for s in SyncStatus::ALL {
            assert_eq!(s.as_str().parse::<SyncStatus>().unwrap(), *s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in TargetHealth::ALL {
            assert_eq!(s.as_str().parse::<TargetHealth>().unwrap(), *s);
        }
        assert_eq!(TargetHealth::BranchDeleted.as_str(), "branch_deleted");
    }

    #[test]
    fn unknown_text_names_what_is_expected() {
        let e = "done".parse::<SyncStatus>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown sync status `done`; one of queued, running, completed, partial, failed, superseded, cancelled"
        );
    }
}
