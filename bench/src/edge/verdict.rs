//! What the edge benchmark concludes from its runs: the checks that fail it
//! (durability always; in the smoke also the answers), and the soak's line.

use super::report::LoadReport;
use super::servers::Kind;
use super::table::RunResult;

/// What must hold of every run: durability always; in the smoke also that
/// every good request got a 2xx and every bad one a 401.
pub fn checks(results: &[RunResult], smoke: bool) -> Vec<String> {
    let mut failures = vec![];
    for r in results {
        let what = format!(
            "{}, {} connections, round {}",
            r.kind.label(),
            r.concurrency,
            r.round
        );
        let report = &r.report;
        match (&r.check, r.kind) {
            (Some(c), Kind::BadSignature) if !c.nothing_recorded() => {
                failures.push(format!("{what}: {} deliveries recorded", c.recorded))
            }
            (Some(c), Kind::Sqlite | Kind::Postgres) if !c.ok() => {
                failures.push(format!("{what}: {}", c.describe()))
            }
            (None, k) if k.is_connectord() => failures.push(format!("{what}: not checked")),
            _ => {}
        }
        if !smoke {
            continue;
        }
        if report.answered() == 0 {
            failures.push(format!("{what}: no answers"));
        } else if r.kind == Kind::BadSignature {
            if report.statuses.get("401") != Some(&report.answered()) || report.transport_errors > 0
            {
                failures.push(format!("{what}: not all 401: {:?}", report.statuses));
            }
        } else if report.non_2xx() > 0 {
            failures.push(format!(
                "{what}: non-2xx answers {:?}, {} without an answer",
                report.statuses, report.transport_errors
            ));
        }
    }
    failures
}

pub fn soak_summary(r: &LoadReport) -> String {
    let mib = |k: u64| k as f64 / 1024.0;
    match (r.rss_kib.first(), r.rss_kib.last()) {
        (Some(&(t0, a)), Some(&(t1, b))) if r.rss_kib.len() >= 2 => format!(
            "\nResident size of connectord: {:.1} MiB after {t0:.0} s, {:.1} MiB after {t1:.0} s of load: {:.2}× (goal ≤ 1.5×).\n",
            mib(a),
            mib(b),
            b as f64 / a as f64
        ),
        _ => "\nResident size: not sampled.\n".into(),
    }
}
