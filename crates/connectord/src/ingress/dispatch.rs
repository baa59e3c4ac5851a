//! Dispatch by event: each handler turns a verified envelope into a [`Plan`],
//! the list of state changes the store applies atomically with the delivery
//! record. Handlers do no I/O, so what a delivery *means* is decided here and
//! tested without a database.

use super::envelope::{Fields, GithubWebhookEnvelope};
use crate::domain::{EventName, Sha};
use serde_json::Value;

/// What a delivery asks of the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Valid but nothing to do: answered 200 with this reason code.
    Ignore(String),
    Push(PushPlan),
    Installation(InstallationPlan),
    InstallationRepositories(InstallationRepositoriesPlan),
    Repository(RepositoryPlan),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PushPlan {
    pub installation_id: Option<i64>,
    pub repository_id: i64,
    pub repository_full_name: String,
    pub git_ref: String,
    pub branch: String,
    pub before: Sha,
    pub after: Sha,
    /// The branch was deleted (`after` is all zeros).
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InstallationAction {
    Created,
    Deleted,
    Suspend,
    Unsuspend,
    NewPermissionsAccepted,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InstallationPlan {
    pub installation_id: i64,
    pub action: InstallationAction,
    pub account_login: Option<String>,
    pub repository_selection: Option<String>,
    pub permissions: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RepoRef {
    pub id: i64,
    pub full_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InstallationRepositoriesPlan {
    pub installation_id: i64,
    pub added: Vec<RepoRef>,
    pub removed: Vec<RepoRef>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RepositoryAction {
    /// `renamed` or `transferred`: the repository now answers to this name.
    Moved {
        full_name: String,
    },
    Deleted,
    Archived(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RepositoryPlan {
    pub installation_id: Option<i64>,
    pub repository_id: i64,
    pub action: RepositoryAction,
}

/// A payload that is valid JSON but lacks what its event requires: answered 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct BadPayload(pub String);

/// What of the payload [`dispatch`] reads for `event`: the lifecycle handlers
/// read lists and objects (repositories, permissions, the account); a push,
/// a ping and every ignored event only the routing fields.
pub fn fields_for(event: &EventName) -> Fields {
    match event.as_str() {
        "installation" | "installation_repositories" | "repository" => Fields::Whole,
        _ => Fields::Routing,
    }
}

/// `githubWebhookIngress()`'s dispatch step.
pub fn dispatch(env: &GithubWebhookEnvelope) -> Result<Plan, BadPayload> {
    match env.event.as_str() {
        "push" => handle_github_push_event(env),
        "installation" => handle_github_installation_event(env),
        "installation_repositories" => handle_github_installation_repositories_event(env),
        "repository" => handle_github_repository_event(env),
        "ping" => Ok(Plan::Ignore("ping".into())),
        _ => Ok(Plan::Ignore("event_not_handled".into())),
    }
}

fn required<'a>(env: &'a GithubWebhookEnvelope, ptr: &str) -> Result<&'a Value, BadPayload> {
    env.payload
        .pointer(ptr)
        .filter(|v| !v.is_null())
        .ok_or_else(|| {
            BadPayload(format!(
                "{} payload lacks `{}`",
                env.event.as_str(),
                &ptr[1..].replace('/', ".")
            ))
        })
}

fn required_i64(env: &GithubWebhookEnvelope, ptr: &str) -> Result<i64, BadPayload> {
    required(env, ptr)?
        .as_i64()
        .ok_or_else(|| BadPayload(format!("`{}` must be an integer", &ptr[1..])))
}

fn required_str<'a>(env: &'a GithubWebhookEnvelope, ptr: &str) -> Result<&'a str, BadPayload> {
    required(env, ptr)?
        .as_str()
        .ok_or_else(|| BadPayload(format!("`{}` must be a string", &ptr[1..])))
}

fn required_sha(env: &GithubWebhookEnvelope, ptr: &str) -> Result<Sha, BadPayload> {
    Sha::parse(required_str(env, ptr)?).map_err(|e| BadPayload(format!("`{}`: {e}", &ptr[1..])))
}

pub fn handle_github_push_event(env: &GithubWebhookEnvelope) -> Result<Plan, BadPayload> {
    let git_ref = required_str(env, "/ref")?;
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        let reason = if git_ref.starts_with("refs/tags/") {
            "tag_push"
        } else {
            "not_a_branch"
        };
        return Ok(Plan::Ignore(reason.into()));
    };
    let before = required_sha(env, "/before")?;
    let after = required_sha(env, "/after")?;
    let deleted = env
        .payload
        .get("deleted")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || after.is_zero();
    Ok(Plan::Push(PushPlan {
        installation_id: env.installation_id,
        repository_id: required_i64(env, "/repository/id")?,
        repository_full_name: required_str(env, "/repository/full_name")?.to_owned(),
        git_ref: git_ref.to_owned(),
        branch: branch.to_owned(),
        before,
        after,
        deleted,
    }))
}

pub fn handle_github_installation_event(env: &GithubWebhookEnvelope) -> Result<Plan, BadPayload> {
    let action = match env.action.as_deref() {
        Some("created") => InstallationAction::Created,
        Some("deleted") => InstallationAction::Deleted,
        Some("suspend") => InstallationAction::Suspend,
        Some("unsuspend") => InstallationAction::Unsuspend,
        Some("new_permissions_accepted") => InstallationAction::NewPermissionsAccepted,
        _ => return Ok(Plan::Ignore("action_not_handled".into())),
    };
    let p = &env.payload;
    Ok(Plan::Installation(InstallationPlan {
        installation_id: required_i64(env, "/installation/id")?,
        action,
        account_login: p
            .pointer("/installation/account/login")
            .and_then(Value::as_str)
            .map(str::to_owned),
        repository_selection: p
            .pointer("/installation/repository_selection")
            .and_then(Value::as_str)
            .map(str::to_owned),
        permissions: p
            .pointer("/installation/permissions")
            .filter(|v| v.is_object())
            .cloned(),
    }))
}

fn repo_refs(v: Option<&Value>) -> Vec<RepoRef> {
    v.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|r| {
                    Some(RepoRef {
                        id: r.get("id")?.as_i64()?,
                        full_name: r
                            .get("full_name")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn handle_github_installation_repositories_event(
    env: &GithubWebhookEnvelope,
) -> Result<Plan, BadPayload> {
    match env.action.as_deref() {
        Some("added") | Some("removed") => {}
        _ => return Ok(Plan::Ignore("action_not_handled".into())),
    }
    Ok(Plan::InstallationRepositories(
        InstallationRepositoriesPlan {
            installation_id: required_i64(env, "/installation/id")?,
            added: repo_refs(env.payload.get("repositories_added")),
            removed: repo_refs(env.payload.get("repositories_removed")),
        },
    ))
}

pub fn handle_github_repository_event(env: &GithubWebhookEnvelope) -> Result<Plan, BadPayload> {
    let action = match env.action.as_deref() {
        Some("renamed") | Some("transferred") => RepositoryAction::Moved {
            full_name: required_str(env, "/repository/full_name")?.to_owned(),
        },
        Some("deleted") => RepositoryAction::Deleted,
        Some("archived") => RepositoryAction::Archived(true),
        Some("unarchived") => RepositoryAction::Archived(false),
        _ => return Ok(Plan::Ignore("action_not_handled".into())),
    };
    Ok(Plan::Repository(RepositoryPlan {
        installation_id: env.installation_id,
        repository_id: required_i64(env, "/repository/id")?,
        action,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeliveryId, EventName};
    use serde_json::json;

    fn env(event: &str, payload: Value) -> GithubWebhookEnvelope {
        GithubWebhookEnvelope::new(
            DeliveryId::parse("d").unwrap(),
            EventName::parse(event).unwrap(),
            payload,
        )
    }

    fn push(r: &str, after: &str) -> Value {
        json!({"ref": r, "before": "1".repeat(40), "after": after,
               "repository": {"id": 5, "full_name": "o/r"}, "installation": {"id": 3}})
    }

    #[test]
    fn branch_push_becomes_a_push_plan() {
        let Plan::Push(p) =
            dispatch(&env("push", push("refs/heads/main", &"2".repeat(40)))).unwrap()
        else {
            panic!("expected a push plan")
        };
        assert_eq!(
            (
                p.branch.as_str(),
                p.repository_id,
                p.installation_id,
                p.deleted
            ),
            ("main", 5, Some(3), false)
        );
    }

    #[test]
    fn tag_push_is_ignored() {
        let plan = dispatch(&env("push", push("refs/tags/v1", &"2".repeat(40)))).unwrap();
        assert!(matches!(plan, Plan::Ignore(r) if r == "tag_push"));
    }

    #[test]
    fn branch_deletion_is_flagged() {
        let Plan::Push(p) =
            dispatch(&env("push", push("refs/heads/x", crate::domain::ZERO_SHA))).unwrap()
        else {
            panic!("expected a push plan")
        };
        assert!(p.deleted);
    }

    #[test]
    fn push_without_repository_is_bad_payload() {
        let err = dispatch(&env(
            "push",
            json!({"ref":"refs/heads/a","before":"1".repeat(40),"after":"2".repeat(40)}),
        ))
        .unwrap_err();
        assert!(err.0.contains("repository"), "{err}");
    }

    #[test]
    fn unknown_events_and_actions_are_ignored() {
        assert!(matches!(
            dispatch(&env("star", json!({}))).unwrap(),
            Plan::Ignore(_)
        ));
        assert!(
            matches!(dispatch(&env("ping", json!({}))).unwrap(), Plan::Ignore(r) if r == "ping")
        );
        assert!(matches!(
            dispatch(&env(
                "repository",
                json!({"action":"edited","repository":{"id":1}})
            ))
            .unwrap(),
            Plan::Ignore(_)
        ));
    }

    #[test]
    fn installation_repositories_lists_both_sides() {
        let Plan::InstallationRepositories(p) = dispatch(&env(
            "installation_repositories",
            json!({"action":"removed","installation":{"id":9},"repositories_added":[],
                   "repositories_removed":[{"id":1,"full_name":"o/a"},{"id":2}]}),
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(p.removed.len(), 2);
        assert_eq!(p.removed[1].full_name, None);
    }
}
