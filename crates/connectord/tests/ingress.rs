//! Black-box tests of `POST /v1/webhooks/connectors/github`: the signature
//! check before any parsing, the bad inputs that must be refused without a
//! trace, both content types, secret rotation, dedupe, and concurrent load on
//! the group-commit writer.

mod common;

use common::*;
use connectord::ingress::signature::sign;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;

/// GitHub's documented test vector.
const GITHUB_VECTOR_SECRET: &str = "It's a Secret to Everybody";
const GITHUB_VECTOR_BODY: &str = "Hello, World!";
const GITHUB_VECTOR_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

const MIB: usize = 1024 * 1024;

/// Starts the real application with `secret` as its current webhook secret.
async fn spawn_app_with_secret(secret: &str) -> TestApp {
    spawn_app_with(TestOptions {
        webhook_secret: Some(secret.to_owned()),
        ..Default::default()
    })
    .await
}

/// Headers of a well-formed delivery, signed with the test secret over `body`.
fn signed_headers(event: &str, delivery: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("x-github-event", event.into()),
        ("x-github-delivery", delivery.into()),
        ("x-hub-signature-256", sign(SECRET.as_bytes(), body)),
    ]
}

fn without(headers: &[(&'static str, String)], name: &str) -> Vec<(&'static str, String)> {
    headers
        .iter()
        .filter(|(k, _)| *k != name)
        .cloned()
        .collect()
}

fn with(
    headers: &[(&'static str, String)],
    name: &'static str,
    value: impl Into<String>,
) -> Vec<(&'static str, String)> {
    let mut h = without(headers, name);
    h.push((name, value.into()));
    h
}

/// A hex head SHA that differs for every `n`.
fn head(n: usize) -> String {
    format!("{:040x}", n + 1)
}

/// Every recorded delivery, following `nextCursor`.
async fn all_deliveries(app: &TestApp) -> Vec<Value> {
    let mut out = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/deliveries?limit=200&cursor={c}"),
            None => "/v1/admin/deliveries?limit=200".to_owned(),
        };
        let (status, body) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        out.extend(body["items"].as_array().cloned().expect("items"));
        match body["nextCursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
            _ => return out,
        }
    }
}

async fn sync_event_count(app: &TestApp) -> usize {
    let (status, body) = app.get("/v1/admin/sync-events?limit=200").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["items"].as_array().expect("items");
    assert!(
        body["nextCursor"].is_null(),
        "more than one page of sync events; count would be wrong"
    );
    items.len()
}

async fn assert_not_recorded(app: &TestApp, delivery: &str, case: &str) {
    let (status, body) = app.get(&format!("/v1/admin/deliveries/{delivery}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{case}: a rejected delivery must not be recorded, got {body}"
    );
}

/// A header value as text, whether the API renders it as a string or a number.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

conformance! {
#[tokio::test]
async fn github_documented_signature_vector_passes_verification_through_the_real_router() {
    let app = spawn_app_with_secret(GITHUB_VECTOR_SECRET).await;
    let headers = |sig: &str, delivery: &str| {
        vec![
            ("content-type", "application/json".to_owned()),
            ("x-github-event", "ping".to_owned()),
            ("x-github-delivery", delivery.to_owned()),
            ("x-hub-signature-256", sig.to_owned()),
        ]
    };

    // The documented signature is accepted; the body is then parsed and is not JSON.
    let (status, body) = app
        .post_raw(
            &headers(GITHUB_VECTOR_SIGNATURE, "vector-ok"),
            GITHUB_VECTOR_BODY.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a correctly signed non-JSON body must get past the signature check and fail parsing: {body}"
    );
    assert!(
        body.to_lowercase().contains("json"),
        "the 400 should say the body is not JSON: {body}"
    );

    // Any other signature of the same body is refused before parsing.
    let flipped = GITHUB_VECTOR_SIGNATURE.replace("757107", "757108");
    let wrong_secret = sign(
        b"It's a Secret to Everybody!",
        GITHUB_VECTOR_BODY.as_bytes(),
    );
    for (i, sig) in [flipped, wrong_secret, sign(SECRET.as_bytes(), b"x")]
        .iter()
        .enumerate()
    {
        let (status, body) = app
            .post_raw(
                &headers(sig, &format!("vector-bad-{i}")),
                GITHUB_VECTOR_BODY.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{sig}: {body}");
        assert_eq!(body, "invalid signature");
    }

    // And a correctly signed JSON body with that secret goes all the way through.
    let ping = br#"{"zen":"Design for failure.","hook_id":1}"#;
    let (status, body) = app
        .post_raw(
            &headers(&sign(GITHUB_VECTOR_SECRET.as_bytes(), ping), "vector-json"),
            ping.to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn bad_inputs_are_refused_with_their_status_and_leave_no_record() {
    let app = spawn_app().await;
    let connector = app.create_connector(42).await;
    app.create_target(&connector, "octo/docs", Some(99), "main")
        .await;
    let events_before = sync_event_count(&app).await;

    let push = serde_json::to_vec(&push_payload(
        42,
        99,
        "octo/docs",
        "main",
        &sha('a'),
        &sha('b'),
    ))
    .expect("json");

    // The legacy SHA-1 header, correctly computed over this body with the test
    // secret (python: hmac.new(b"test-webhook-secret", BODY, hashlib.sha1)).
    let sha1_body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#.to_vec();
    let sha1_sig = "sha1=98febe40e5bcca63f9b86bae4809bf73d4417ea4";

    let good = sign(SECRET.as_bytes(), &push);
    let hex_part = good.trim_start_matches("sha256=").to_owned();

    let form_without_payload = b"zen=hello&hook_id=1".to_vec();
    let mut form_headers = signed_headers("ping", "d-form", &form_without_payload);
    form_headers = with(
        &form_headers,
        "content-type",
        "application/x-www-form-urlencoded",
    );

    let no_repo = serde_json::to_vec(&json!({
        "ref": "refs/heads/main", "before": sha('a'), "after": sha('b'),
        "installation": {"id": 42}, "commits": []
    }))
    .expect("json");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes();
    let deep_obj = format!("{}1{}", r#"{"a":"#.repeat(5_000), "}".repeat(5_000)).into_bytes();
    let not_utf8 = vec![0xff, 0xfe, b'{', 0x80, b'}'];
    let bad_sha_push = serde_json::to_vec(&json!({
        "ref": "refs/heads/main", "before": "nope", "after": sha('b'),
        "repository": {"id": 99, "full_name": "octo/docs"}, "installation": {"id": 42}
    }))
    .expect("json");
    let ref_not_string = serde_json::to_vec(&json!({
        "ref": 7, "before": sha('a'), "after": sha('b'),
        "repository": {"id": 99, "full_name": "octo/docs"}, "installation": {"id": 42}
    }))
    .expect("json");
    let installation_without_id = serde_json::to_vec(&json!({
        "action": "created", "installation": {"account": {"login": "x"}}
    }))
    .expect("json");

    struct Case {
        name: &'static str,
        delivery: String,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        status: StatusCode,
        exact_body: Option<&'static str>,
    }
    let case = |name: &'static str,
                delivery: &str,
                headers: Vec<(&'static str, String)>,
                body: Vec<u8>,
                status: StatusCode,
                exact_body: Option<&'static str>| Case {
        name,
        delivery: delivery.to_owned(),
        headers,
        body,
        status,
        exact_body,
    };
    let push_headers = |d: &str| signed_headers("push", d, &push);
    let signed = |event: &str, d: &str, body: &[u8]| signed_headers(event, d, body);

    let too_big = vec![b' '; 25 * MIB + 1];

    let cases = vec![
        case(
            "no signature",
            "d-nosig",
            without(&push_headers("d-nosig"), "x-hub-signature-256"),
            push.clone(),
            StatusCode::UNAUTHORIZED,
            Some("missing signature"),
        ),
        case(
            "wrong signature",
            "d-wrong",
            with(
                &push_headers("d-wrong"),
                "x-hub-signature-256",
                sign(b"not-the-secret", &push),
            ),
            push.clone(),
            StatusCode::UNAUTHORIZED,
            Some("invalid signature"),
        ),
        case(
            "signature for another body",
            "d-other",
            with(
                &push_headers("d-other"),
                "x-hub-signature-256",
                sign(SECRET.as_bytes(), b"{\"another\":\"body\"}"),
            ),
            push.clone(),
            StatusCode::UNAUTHORIZED,
            Some("invalid signature"),
        ),
        case(
            "only the legacy sha1 X-Hub-Signature header, correctly computed",
            "d-sha1-only",
            with(
                &without(
                    &signed("ping", "d-sha1-only", &sha1_body),
                    "x-hub-signature-256",
                ),
                "x-hub-signature",
                sha1_sig,
            ),
            sha1_body.clone(),
            StatusCode::UNAUTHORIZED,
            Some("missing signature"),
        ),
        case(
            "sha1= value in X-Hub-Signature-256",
            "d-sha1-in-256",
            with(
                &signed("ping", "d-sha1-in-256", &sha1_body),
                "x-hub-signature-256",
                sha1_sig,
            ),
            sha1_body.clone(),
            StatusCode::UNAUTHORIZED,
            Some("invalid signature"),
        ),
        case(
            "truncated hex",
            "d-trunc",
            with(
                &push_headers("d-trunc"),
                "x-hub-signature-256",
                format!("sha256={}", &hex_part[..63]),
            ),
            push.clone(),
            StatusCode::UNAUTHORIZED,
            Some("invalid signature"),
        ),
        case(
            "hex with a trailing extra digit",
            "d-long",
            with(
                &push_headers("d-long"),
                "x-hub-signature-256",
                format!("{good}0"),
            ),
            push.clone(),
            StatusCode::UNAUTHORIZED,
            Some("invalid signature"),
        ),
        case(
            "non-hex digest",
            "d-nonhex",
            with(
                &push_headers("d-nonhex"),
                "x-hub-signature-256",
                format!("sha256=zz{}", &hex_part[2..]),
            ),
            push.clone(),
            StatusCode::UNAUTHORIZED,
            Some("invalid signature"),
        ),
        case(
            "uppercase SHA256= prefix",
            "d-upper",
            with(
                &push_headers("d-upper"),
                "x-hub-signature-256",
                format!("SHA256={hex_part}"),
            ),
            push.clone(),
            StatusCode::UNAUTHORIZED,
            Some("invalid signature"),
        ),
        case(
            "bare hex without sha256= prefix",
            "d-bare",
            with(
                &push_headers("d-bare"),
                "x-hub-signature-256",
                hex_part.clone(),
            ),
            push.clone(),
            StatusCode::UNAUTHORIZED,
            Some("invalid signature"),
        ),
        case(
            "empty signature header",
            "d-emptysig",
            with(&push_headers("d-emptysig"), "x-hub-signature-256", ""),
            push.clone(),
            StatusCode::UNAUTHORIZED,
            None,
        ),
        case(
            "empty body with a valid signature",
            "d-empty",
            signed("push", "d-empty", b""),
            vec![],
            StatusCode::BAD_REQUEST,
            None,
        ),
        case(
            "invalid JSON with a valid signature",
            "d-badjson",
            signed("push", "d-badjson", b"{\"ref\": refs/heads/main"),
            b"{\"ref\": refs/heads/main".to_vec(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        case(
            "missing X-GitHub-Event",
            "d-noevent",
            without(&push_headers("d-noevent"), "x-github-event"),
            push.clone(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        case(
            "missing X-GitHub-Delivery",
            "d-nodelivery",
            without(&push_headers("d-nodelivery"), "x-github-delivery"),
            push.clone(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        case(
            "25 MiB + 1 byte body",
            "d-toobig",
            signed("push", "d-toobig", &too_big),
            too_big.clone(),
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
        ),
        case(
            "form-encoded body without a payload field",
            "d-form",
            form_headers,
            form_without_payload,
            StatusCode::BAD_REQUEST,
            None,
        ),
        case(
            "a JSON array payload",
            "d-array",
            signed("push", "d-array", b"[1,2,3]"),
            b"[1,2,3]".to_vec(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        case(
            "a push without repository",
            "d-norepo",
            signed("push", "d-norepo", &no_repo),
            no_repo.clone(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        case(
            "a push whose before is not a SHA",
            "d-badsha",
            signed("push", "d-badsha", &bad_sha_push),
            bad_sha_push.clone(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        case(
            "a push whose ref is not a string",
            "d-refnum",
            signed("push", "d-refnum", &ref_not_string),
            ref_not_string.clone(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        case(
            "an installation event without installation.id",
            "d-noinst",
            signed("installation", "d-noinst", &installation_without_id),
            installation_without_id.clone(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        case(
            "deeply nested JSON array",
            "d-deep",
            signed("push", "d-deep", &deep),
            deep.clone(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        case(
            "deeply nested JSON object",
            "d-deepobj",
            signed("ping", "d-deepobj", &deep_obj),
            deep_obj.clone(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        case(
            "a body that is not UTF-8",
            "d-notutf8",
            signed("push", "d-notutf8", &not_utf8),
            not_utf8.clone(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        case(
            "an event name that is not a GitHub event name",
            "d-badevent",
            with(&push_headers("d-badevent"), "x-github-event", "Push Event!"),
            push.clone(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        case(
            "X-GitHub-Event not ASCII (not the same as missing)",
            "d-utf8event",
            with(&push_headers("d-utf8event"), "x-github-event", "püsh"),
            push.clone(),
            StatusCode::BAD_REQUEST,
            Some("the X-GitHub-Event header is not plain ASCII text"),
        ),
    ];

    for c in &cases {
        let (status, body) = app.post_raw(&c.headers, c.body.clone()).await;
        assert!(
            !status.is_server_error(),
            "{}: never 5xx, got {status} {body}",
            c.name
        );
        assert_eq!(status, c.status, "{}: {body}", c.name);
        if let Some(exact) = c.exact_body {
            assert_eq!(body, exact, "{}", c.name);
        }
        if c.status == StatusCode::BAD_REQUEST {
            assert!(
                !body.trim().is_empty(),
                "{}: the 400 needs a message",
                c.name
            );
        }
        assert_not_recorded(&app, &c.delivery, c.name).await;
    }

    // A delivery id that is not a plausible id, and one far too long: 400, never 500.
    for (name, id) in [
        ("delivery id with spaces", "not a valid id".to_owned()),
        ("delivery id of 10 000 characters", "a".repeat(10_000)),
    ] {
        let (status, body) = app
            .post_raw(
                &with(&push_headers("x"), "x-github-delivery", id),
                push.clone(),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
    }

    let recorded = all_deliveries(&app).await;
    assert!(
        recorded.is_empty(),
        "no rejected delivery may be recorded, found {recorded:?}"
    );
    assert_eq!(
        sync_event_count(&app).await,
        events_before,
        "no rejected delivery may queue a sync"
    );
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_body_of_exactly_25_mib_is_within_the_cap() {
    let app = spawn_app().await;
    // A valid ping payload padded to exactly 25 MiB.
    let prefix = br#"{"zen":"Design for failure.","hook_id":1,"pad":""#;
    let suffix = br#""}"#;
    let mut body = Vec::with_capacity(25 * MIB);
    body.extend_from_slice(prefix);
    body.resize(25 * MIB - suffix.len(), b'x');
    body.extend_from_slice(suffix);
    assert_eq!(body.len(), 25 * MIB);

    let (status, text) = app
        .post_raw(&signed_headers("ping", "d-25mib", &body), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, delivery) = app.get("/v1/admin/deliveries/d-25mib").await;
    assert_eq!(status, StatusCode::OK, "{delivery}");
    assert_eq!(delivery["outcome"], "ignored");

    // The same size of non-JSON is refused as bad JSON, not as too large.
    let junk = vec![b'x'; 25 * MIB];
    let (status, text) = app
        .post_raw(&signed_headers("ping", "d-25mib-junk", &junk), junk)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn form_encoded_push_to_a_tracked_branch_queues_a_sync_with_its_head() {
    let app = spawn_app().await;
    let connector = app.create_connector(42).await;
    let (target, _) = app
        .create_target(&connector, "octo/docs", Some(99), "main")
        .await;
    let payload = push_payload(42, 99, "octo/docs", "main", &sha('a'), &sha('c'));
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
        .into_bytes();
    let headers = with(
        &signed_headers("push", "d-form-push", &form),
        "content-type",
        "application/x-www-form-urlencoded",
    );
    let (status, text) = app.post_raw(&headers, form.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    let body: Value = serde_json::from_str(&text).expect("json answer");
    assert_eq!(body["outcome"], "accepted");
    assert_eq!(body["deliveryId"], "d-form-push");
    let ids = body["syncEventIds"].as_array().expect("syncEventIds");
    assert_eq!(ids.len(), 1, "{body}");
    let event = app.sync_event(ids[0].as_str().expect("id")).await;
    assert_eq!(event["status"], "queued");
    assert_eq!(event["headSha"], sha('c'));
    assert_eq!(event["deliveryId"], "d-form-push");
    assert_eq!(event["connectorTargetId"], target);

    // The signature is over the raw form body: the JSON inside it, signed alone, does not verify.
    let mut resigned = with(
        &headers,
        "x-hub-signature-256",
        sign(SECRET.as_bytes(), payload.to_string().as_bytes()),
    );
    resigned = with(&resigned, "x-github-delivery", "d-form-resigned");
    let (status, text) = app.post_raw(&resigned, form).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert_not_recorded(&app, "d-form-resigned", "form signed over inner JSON").await;
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn during_secret_rotation_both_current_and_previous_secrets_verify_but_no_other() {
    let app = spawn_app_with(TestOptions {
        previous_secret: Some("the-previous-secret".into()),
        ..TestOptions::default()
    })
    .await;
    let connector = app.create_connector(42).await;
    app.create_target(&connector, "octo/docs", Some(99), "main")
        .await;

    let post = |secret: &'static str, delivery: &'static str, after: String| {
        let body = serde_json::to_vec(&push_payload(
            42,
            99,
            "octo/docs",
            "main",
            &sha('a'),
            &after,
        ))
        .expect("json");
        let headers = with(
            &signed_headers("push", delivery, &body),
            "x-hub-signature-256",
            sign(secret.as_bytes(), &body),
        );
        let app = &app;
        async move { app.post_raw(&headers, body).await }
    };

    let (status, text) = post(SECRET, "d-current", sha('b')).await;
    assert_eq!(status, StatusCode::ACCEPTED, "current secret: {text}");
    let (status, text) = post("the-previous-secret", "d-previous", sha('c')).await;
    assert_eq!(status, StatusCode::ACCEPTED, "previous secret: {text}");
    let (status, text) = post("some-third-secret", "d-third", sha('d')).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "third secret: {text}");
    assert_eq!(text, "invalid signature");
    assert_not_recorded(&app, "d-third", "third secret").await;

    for d in ["d-current", "d-previous"] {
        let (status, body) = app.get(&format!("/v1/admin/deliveries/{d}")).await;
        assert_eq!(status, StatusCode::OK, "{d}: {body}");
        assert_eq!(body["outcome"], "accepted", "{d}");
    }
    // Which secret verified is counted, so a rotation ends on evidence.
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for slot in ["current", "previous"] {
        assert!(
            metrics.lines().any(|l| l.starts_with("connectord_webhook_verified_total")
                && l.contains(&format!("secret=\"{slot}\""))),
            "no verified count for the {slot} secret:\n{metrics}"
        );
    }
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn without_a_previous_secret_configured_only_the_current_secret_verifies() {
    let app = spawn_app().await;
    let body = br#"{"zen":"Approachable is better than simple.","hook_id":1}"#.to_vec();
    let headers = with(
        &signed_headers("ping", "d-prev-unset", &body),
        "x-hub-signature-256",
        sign(b"", &body),
    );
    let (status, text) = app.post_raw(&headers, body).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an empty key must never verify: {text}"
    );
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn redelivery_of_a_recorded_delivery_is_a_duplicate_and_queues_nothing_new() {
    let app = spawn_app().await;
    let connector = app.create_connector(42).await;
    app.create_target(&connector, "octo/docs", Some(99), "main")
        .await;
    let payload = push_payload(42, 99, "octo/docs", "main", &sha('a'), &sha('b'));

    let (status, first) = app.deliver_json("push", "d-redeliver", &payload).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let events_after_first = sync_event_count(&app).await;

    for _ in 0..2 {
        let (status, again) = app.deliver_json("push", "d-redeliver", &payload).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["outcome"], "duplicate", "{again}");
        assert_eq!(again["deliveryId"], "d-redeliver");
    }
    assert_eq!(
        sync_event_count(&app).await,
        events_after_first,
        "a redelivery must cause nothing new"
    );

    // A redelivery whose body differs (a replay attack with a valid signature,
    // or an edited payload) is still the same delivery: nothing new.
    let other = push_payload(42, 99, "octo/docs", "main", &sha('b'), &sha('e'));
    let (status, again) = app.deliver_json("push", "d-redeliver", &other).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["outcome"], "duplicate");
    assert_eq!(sync_event_count(&app).await, events_after_first);

    // The record of the original delivery still says what it did.
    let (status, recorded) = app.get("/v1/admin/deliveries/d-redeliver").await;
    assert_eq!(status, StatusCode::OK, "{recorded}");
    assert_eq!(recorded["outcome"], "accepted", "{recorded}");
    assert_eq!(recorded["syncEventIds"], first["syncEventIds"]);
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn ping_and_unhandled_events_are_answered_200_ignored_and_recorded() {
    let app = spawn_app().await;
    let (status, ping) = app
        .deliver_json(
            "ping",
            "d-ping",
            &json!({"zen": "Non-blocking is better than blocking.", "hook_id": 1, "hook": {"type": "App"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ping}");
    assert_eq!(ping["outcome"], "ignored");
    assert_eq!(ping["deliveryId"], "d-ping");
    assert!(
        ping.get("syncEventIds")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty()),
        "{ping}"
    );

    let (status, star) = app
        .deliver_json(
            "star",
            "d-star",
            &json!({"action": "created", "starred_at": "2019-05-15T15:20:40Z",
                    "repository": {"id": 99, "full_name": "octo/docs"}, "sender": {"login": "octocat"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{star}");
    assert_eq!(star["outcome"], "ignored");
    assert!(star["reason"].is_string(), "an ignore says why: {star}");

    for (id, event) in [("d-ping", "ping"), ("d-star", "star")] {
        let (status, recorded) = app.get(&format!("/v1/admin/deliveries/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{id}: {recorded}");
        assert_eq!(recorded["outcome"], "ignored", "{recorded}");
        assert_eq!(recorded["event"], event, "{recorded}");
    }
    assert_eq!(
        app.get("/v1/admin/deliveries/d-star").await.1["action"],
        "created"
    );
    assert_eq!(sync_event_count(&app).await, 0);
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn hook_id_and_hook_installation_target_id_headers_are_recorded_on_the_delivery() {
    let app = spawn_app().await;
    let body = br#"{"zen":"Speak like a human.","hook_id":123456}"#.to_vec();
    let mut headers = signed_headers("ping", "d-hook", &body);
    headers.push(("x-github-hook-id", "123456".into()));
    headers.push(("x-github-hook-installation-target-id", "7890".into()));
    headers.push((
        "x-github-hook-installation-target-type",
        "integration".into(),
    ));
    let (status, text) = app.post_raw(&headers, body).await;
    assert_eq!(status, StatusCode::OK, "{text}");

    let (status, d) = app.get("/v1/admin/deliveries/d-hook").await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(value_text(&d["hookId"]), "123456", "{d}");
    assert_eq!(value_text(&d["hookInstallationTargetId"]), "7890", "{d}");

    // Without the headers they are absent, not invented.
    let body = br#"{"zen":"Keep it simple.","hook_id":1}"#.to_vec();
    let (status, text) = app
        .post_raw(&signed_headers("ping", "d-nohook", &body), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (_, d) = app.get("/v1/admin/deliveries/d-nohook").await;
    assert!(d["hookId"].is_null(), "{d}");
    assert!(d["hookInstallationTargetId"].is_null(), "{d}");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_hundred_concurrent_signed_pushes_are_all_answered_and_every_acknowledged_one_is_recorded(
) {
    let app = spawn_app().await;
    let connector = app.create_connector(42).await;
    const TARGETS: usize = 5;
    let mut targets = vec![];
    for t in 0..TARGETS {
        let repo_id = 1000 + t as i64;
        let (id, _) = app
            .create_target(&connector, &format!("octo/repo-{t}"), Some(repo_id), "main")
            .await;
        targets.push(id);
    }

    let requests = (0..100).map(|i| {
        let t = i % TARGETS;
        let payload = push_payload(
            42,
            1000 + t as i64,
            &format!("octo/repo-{t}"),
            "main",
            &sha('1'),
            &head(i),
        );
        let body = serde_json::to_vec(&payload).expect("json");
        let delivery = format!("load-{i:03}");
        let app = &app;
        async move {
            let (status, text) = app
                .post_raw(&signed_headers("push", &delivery, &body), body)
                .await;
            (delivery, head(i), t, status, text)
        }
    });
    let answers = futures::future::join_all(requests).await;

    let mut accepted = 0;
    let mut sync_events = HashSet::new();
    for (delivery, head_sha, _t, status, text) in &answers {
        assert!(
            *status == StatusCode::ACCEPTED || *status == StatusCode::OK,
            "{delivery}: expected 202 or 200, got {status} {text}"
        );
        let body: Value = serde_json::from_str(text).expect("json answer");
        assert_eq!(body["deliveryId"], delivery.as_str());
        if *status == StatusCode::ACCEPTED {
            accepted += 1;
            assert_eq!(body["outcome"], "accepted", "{body}");
            let ids = body["syncEventIds"].as_array().expect("syncEventIds");
            assert!(!ids.is_empty(), "{body}");
            for id in ids {
                let event = app.sync_event(id.as_str().expect("id")).await;
                assert_eq!(event["headSha"], head_sha.as_str(), "{event}");
                assert_eq!(event["deliveryId"], delivery.as_str(), "{event}");
                sync_events.insert(id.as_str().expect("id").to_owned());
            }
        }
        // Every answered delivery (202 or 200) was recorded durably first.
        let (status, recorded) = app.get(&format!("/v1/admin/deliveries/{delivery}")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{delivery} answered but not recorded"
        );
        assert_eq!(recorded["outcome"], body["outcome"], "{recorded}");
    }
    // Distinct heads and deliveries: every push to a tracked branch is acted on.
    assert_eq!(accepted, 100, "distinct new heads must all be accepted");
    assert_eq!(sync_events.len(), 100, "each push has its own sync event");
    assert_eq!(all_deliveries(&app).await.len(), 100);

    // Per target, only the newest-queued push may still be queued; the rest were superseded.
    for target in &targets {
        let events = app.events_of(target).await;
        let queued = events.iter().filter(|e| e["status"] == "queued").count();
        assert_eq!(
            queued, 1,
            "exactly one job per target left queued (the others superseded): {events:?}"
        );
    }
    app.stop().await;
}
}
