//! GitHub's documented webhook examples (`@octokit/webhooks-examples`, about
//! 330 payloads over 58 events), each signed over the exact bytes sent and
//! posted with its event name and a fresh delivery id. None may get a 4xx or
//! 5xx, and each answer must follow the rules for its event.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

const INSTALLATION_ACTIONS: [&str; 5] = [
    "created",
    "deleted",
    "suspend",
    "unsuspend",
    "new_permissions_accepted",
];
const REPOSITORY_ACTIONS: [&str; 5] = [
    "renamed",
    "transferred",
    "deleted",
    "archived",
    "unarchived",
];
const HANDLED_EVENTS: [&str; 5] = [
    "push",
    "installation",
    "installation_repositories",
    "repository",
    "ping",
];

/// A branch the test tracks: (installation id, repository id, branch).
type TrackedKey = (i64, i64, String);

fn branch_push_key(example: &Value) -> Option<TrackedKey> {
    let branch = example["ref"].as_str()?.strip_prefix("refs/heads/")?;
    if example["deleted"].as_bool() == Some(true) {
        return None;
    }
    Some((
        example.pointer("/installation/id")?.as_i64()?,
        example.pointer("/repository/id")?.as_i64()?,
        branch.to_owned(),
    ))
}

async fn all_delivery_ids(app: &TestApp) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/deliveries?limit=200&cursor={c}"),
            None => "/v1/admin/deliveries?limit=200".to_owned(),
        };
        let (status, body) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for d in body["items"].as_array().expect("items") {
            out.insert(d["id"].as_str().expect("id").to_owned());
        }
        match body["nextCursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
            _ => return out,
        }
    }
}

conformance! {
#[tokio::test]
async fn every_documented_github_example_is_answered_by_the_rules_and_never_with_an_error() {
    let text = std::fs::read_to_string(fixtures_path()).expect("read the webhook examples corpus");
    let corpus: Vec<Value> = serde_json::from_str(&text).expect("corpus is a JSON array");
    let total: usize = corpus
        .iter()
        .map(|g| g["examples"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(
        corpus.len() >= 50 && total >= 300,
        "unexpectedly small corpus: {} events, {total} examples",
        corpus.len()
    );

    let app = spawn_app().await;

    // Track every branch that a (non-deleting) push example goes to.
    let mut tracked: HashMap<TrackedKey, String> = HashMap::new();
    let mut connectors: HashMap<i64, String> = HashMap::new();
    for group in &corpus {
        if group["name"] != "push" {
            continue;
        }
        for example in group["examples"].as_array().expect("examples") {
            let Some(key) = branch_push_key(example) else {
                continue;
            };
            if tracked.contains_key(&key) {
                continue;
            }
            let connector = match connectors.get(&key.0) {
                Some(c) => c.clone(),
                None => {
                    let c = app.create_connector(key.0).await;
                    connectors.insert(key.0, c.clone());
                    c
                }
            };
            let full_name = example
                .pointer("/repository/full_name")
                .and_then(Value::as_str)
                .expect("a push names its repository");
            let (target, _) = app
                .create_target(&connector, full_name, Some(key.1), &key.2)
                .await;
            tracked.insert(key, target);
        }
    }
    assert!(
        !tracked.is_empty(),
        "the corpus should contain pushes to branches"
    );
    let tracked_installations: HashSet<i64> = tracked.keys().map(|k| k.0).collect();
    let tracked_repos: HashSet<i64> = tracked.keys().map(|k| k.1).collect();
    // Targets whose installation was uninstalled by an earlier example stop being tracked.
    let mut uninstalled: HashSet<i64> = HashSet::new();
    // (target, head) already queued or synced by an earlier example.
    let mut heads_seen: HashSet<(String, String)> = HashSet::new();

    let mut summary: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut failures: Vec<String> = vec![];
    let mut tracked_pushes_accepted = 0;
    let mut posted = 0;

    for group in &corpus {
        let event = group["name"].as_str().expect("event name");
        for (i, example) in group["examples"]
            .as_array()
            .expect("examples")
            .iter()
            .enumerate()
        {
            posted += 1;
            let delivery = format!("corpus-{posted:04}-{event}-{i}");
            let bytes = serde_json::to_vec(example).expect("serialize example");
            let (status, text) = app.deliver(event, &delivery, &bytes).await;
            let action = example["action"].as_str().unwrap_or("");
            let label = format!("{event}#{i} ({action})");
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
            *summary
                .entry(event.to_owned())
                .or_default()
                .entry(format!(
                    "{} {}",
                    status.as_u16(),
                    body["outcome"].as_str().unwrap_or("?")
                ))
                .or_default() += 1;

            if status != StatusCode::OK && status != StatusCode::ACCEPTED {
                failures.push(format!("{label}: {status} {text}"));
                continue;
            }
            let outcome = body["outcome"].as_str().unwrap_or("");
            let reason = body["reason"].as_str().unwrap_or("");
            let sync_ids: Vec<String> = body["syncEventIds"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let mut check = |ok: bool, why: &str| {
                if !ok {
                    failures.push(format!("{label}: {why}; got {status} {body}"));
                }
            };
            check(
                body["deliveryId"] == delivery.as_str(),
                "answer names the delivery",
            );
            check(
                (status == StatusCode::ACCEPTED) == (outcome == "accepted"),
                "202 exactly when accepted",
            );
            check(
                ["accepted", "ignored", "duplicate"].contains(&outcome),
                "outcome is accepted|ignored|duplicate",
            );
            if status == StatusCode::OK && outcome == "ignored" {
                check(!reason.is_empty(), "an ignored delivery says why");
            }

            match event {
                "push" => {
                    let key = branch_push_key(example);
                    let target = key
                        .as_ref()
                        .filter(|k| !uninstalled.contains(&k.0))
                        .and_then(|k| tracked.get(k));
                    match target {
                        Some(target) => {
                            let after = example["after"].as_str().expect("after").to_lowercase();
                            let seen = heads_seen.contains(&(target.clone(), after.clone()));
                            if status == StatusCode::ACCEPTED {
                                check(!sync_ids.is_empty(), "tracked push enqueues a sync");
                                check(!seen, "a head already queued is not queued again");
                                for id in &sync_ids {
                                    let ev = app.sync_event(id).await;
                                    check(ev["headSha"] == after.as_str(), "sync event head");
                                    check(ev["connectorTargetId"] == target.as_str(), "target");
                                    check(ev["deliveryId"] == delivery.as_str(), "delivery");
                                    check(ev["status"] == "queued", "queued");
                                }
                                tracked_pushes_accepted += 1;
                            } else {
                                // Only a repeat of a head queued by an earlier example may be passed over.
                                check(
                                    seen,
                                    "a push of a new head to a tracked branch must be accepted",
                                );
                                check(
                                    (outcome == "duplicate" && reason == "already_queued")
                                        || (outcome == "ignored"
                                            && ["stale", "already_synced"].contains(&reason)),
                                    "repeat head: duplicate/already_queued or ignored stale",
                                );
                            }
                            heads_seen.insert((target.clone(), after));
                        }
                        None => {
                            check(status == StatusCode::OK, "untracked push is 200");
                            check(outcome == "ignored", "untracked push is ignored");
                            let is_tag = example["ref"]
                                .as_str()
                                .is_some_and(|r| r.starts_with("refs/tags/"));
                            if is_tag {
                                check(reason.contains("tag"), "tag push says it is a tag");
                            }
                        }
                    }
                }
                "installation" => {
                    if INSTALLATION_ACTIONS.contains(&action) {
                        check(status == StatusCode::ACCEPTED, "installation action is 202");
                        if let Some(id) =
                            example.pointer("/installation/id").and_then(Value::as_i64)
                        {
                            match action {
                                "deleted" => {
                                    uninstalled.insert(id);
                                }
                                "created" => {
                                    uninstalled.remove(&id);
                                }
                                _ => {}
                            }
                        }
                    } else {
                        check(status == StatusCode::OK, "other installation action is 200");
                    }
                }
                "installation_repositories" => {
                    let inst = example.pointer("/installation/id").and_then(Value::as_i64);
                    let touches = inst.is_some_and(|i| tracked_installations.contains(&i))
                        && ["repositories_added", "repositories_removed"]
                            .iter()
                            .flat_map(|k| example[*k].as_array().cloned().unwrap_or_default())
                            .any(|r| {
                                r["id"]
                                    .as_i64()
                                    .is_some_and(|id| tracked_repos.contains(&id))
                            });
                    if !touches {
                        check(
                            status == StatusCode::OK,
                            "installation_repositories touching no target is 200",
                        );
                    }
                }
                "repository" => {
                    let repo = example.pointer("/repository/id").and_then(Value::as_i64);
                    let inst = example.pointer("/installation/id").and_then(Value::as_i64);
                    let touches = REPOSITORY_ACTIONS.contains(&action)
                        && repo.is_some_and(|r| tracked_repos.contains(&r))
                        && inst.is_none_or(|i| tracked_installations.contains(&i));
                    if touches {
                        check(
                            status == StatusCode::ACCEPTED,
                            "repository event touching a target is 202",
                        );
                    } else {
                        check(
                            status == StatusCode::OK,
                            "repository event touching no target is 200",
                        );
                    }
                }
                "ping" => {
                    check(status == StatusCode::OK, "ping is 200");
                    check(outcome == "ignored", "ping is ignored");
                }
                _ => {
                    assert!(!HANDLED_EVENTS.contains(&event));
                    check(status == StatusCode::OK, "unhandled event is 200");
                    check(outcome == "ignored", "unhandled event is ignored");
                    check(sync_ids.is_empty(), "unhandled event queues nothing");
                }
            }
        }
    }

    println!("corpus: {posted} examples over {} events", corpus.len());
    for (event, counts) in &summary {
        let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        println!("  {event:32} {}", counts.join(", "));
    }
    println!("  tracked-branch pushes accepted: {tracked_pushes_accepted}");

    assert_eq!(posted, total);
    assert!(
        failures.is_empty(),
        "{} of {posted} examples broke the rules:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        tracked_pushes_accepted > 0,
        "pushes to a tracked branch in the corpus must enqueue a job"
    );

    // Every answered example was recorded.
    let recorded = all_delivery_ids(&app).await;
    assert_eq!(
        recorded.len(),
        total,
        "every 200/202 delivery is recorded exactly once"
    );
    app.stop().await;
}
}

/// The first corpus example of `event` for which `pred` holds.
fn example_where(corpus: &[Value], event: &str, pred: impl Fn(&Value) -> bool) -> Value {
    corpus
        .iter()
        .filter(|g| g["name"] == event)
        .flat_map(|g| g["examples"].as_array().cloned().unwrap_or_default())
        .find(|e| pred(e))
        .unwrap_or_else(|| panic!("the corpus has no matching {event} example"))
}

fn action_is(action: &'static str) -> impl Fn(&Value) -> bool {
    move |e: &Value| e["action"] == action
}

async fn connector_of(app: &TestApp, installation: i64) -> Value {
    let (status, body) = app.get("/v1/admin/connectors?limit=200").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|c| c["installationId"] == installation)
        .cloned()
        .unwrap_or_else(|| panic!("no connector for installation {installation}: {body}"))
}

async fn post_example(
    app: &TestApp,
    event: &str,
    delivery: &str,
    example: &Value,
) -> (StatusCode, Value) {
    let bytes = serde_json::to_vec(example).expect("serialize example");
    let (status, text) = app.deliver(event, delivery, &bytes).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

conformance! {
#[tokio::test]
async fn corpus_installation_and_repository_examples_change_the_connectors_and_targets_they_name() {
    let text = std::fs::read_to_string(fixtures_path()).expect("read the webhook examples corpus");
    let corpus: Vec<Value> = serde_json::from_str(&text).expect("corpus is a JSON array");
    let app = spawn_app().await;

    // repository renamed (installation 1, repository 186853261): the target follows the new name.
    let renamed = example_where(&corpus, "repository", action_is("renamed"));
    let new_name = renamed["repository"]["full_name"]
        .as_str()
        .expect("full_name");
    let c1 = app.create_connector(1).await;
    let (t1, _) = app
        .create_target(
            &c1,
            "Octocoders/name-before-rename",
            Some(186853261),
            "main",
        )
        .await;
    let (status, body) = post_example(&app, "repository", "c-renamed", &renamed).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.target(&t1).await["repositoryFullName"], new_name);

    // Actions we do not act on, even for a tracked repository: 200.
    let edited = example_where(&corpus, "repository", action_is("edited"));
    let (status, body) = post_example(&app, "repository", "c-edited", &edited).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "ignored");

    // installation_repositories removed (installation 2, repository 1296269):
    // the target becomes inaccessible and its pending job is cancelled.
    let removed = example_where(&corpus, "installation_repositories", action_is("removed"));
    let c2 = app.create_connector(2).await;
    let (t2, initial2) = app
        .create_target(&c2, "octocat/Hello-World", Some(1296269), "main")
        .await;
    let (status, body) =
        post_example(&app, "installation_repositories", "c-removed", &removed).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.target(&t2).await["status"], "inaccessible");
    assert_eq!(app.sync_event(&initial2).await["status"], "cancelled");

    // installation_repositories added for a target that is already active changes nothing: 200.
    let added = example_where(&corpus, "installation_repositories", action_is("added"));
    let c3 = app.create_connector(957387).await;
    let (t3, _) = app
        .create_target(&c3, "Codertocat/Space", Some(186853007), "main")
        .await;
    let (status, body) = post_example(&app, "installation_repositories", "c-added", &added).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.target(&t3).await["status"], "active");

    // installation created records the account login.
    let created = example_where(&corpus, "installation", action_is("created"));
    let (status, body) = post_example(&app, "installation", "c-created", &created).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let c = connector_of(&app, 957387).await;
    assert_eq!(c["status"], "active");
    assert_eq!(
        c["accountLogin"],
        created["installation"]["account"]["login"]
    );

    // new_permissions_accepted refreshes the recorded permissions.
    let perms = example_where(
        &corpus,
        "installation",
        action_is("new_permissions_accepted"),
    );
    let (status, body) = post_example(&app, "installation", "c-perms", &perms).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        connector_of(&app, 957387).await["permissions"],
        perms["installation"]["permissions"]
    );

    // suspend, then unsuspend.
    let suspend = example_where(&corpus, "installation", action_is("suspend"));
    let id = suspend["installation"]["id"]
        .as_i64()
        .expect("installation id");
    let (status, body) = post_example(&app, "installation", "c-suspend", &suspend).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(connector_of(&app, id).await["status"], "suspended");
    let unsuspend = example_where(&corpus, "installation", action_is("unsuspend"));
    let (status, body) = post_example(&app, "installation", "c-unsuspend", &unsuspend).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(connector_of(&app, id).await["status"], "active");

    // installation deleted (installation 2): the connector is deleted and its target no longer active.
    let deleted = example_where(&corpus, "installation", action_is("deleted"));
    let (status, body) = post_example(&app, "installation", "c-deleted", &deleted).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(connector_of(&app, 2).await["status"], "deleted");
    assert_ne!(app.target(&t2).await["status"], "active");
    // Installation 1's target is untouched by installation 2's removal.
    assert_eq!(app.target(&t1).await["status"], "active");
    app.stop().await;
}
}
