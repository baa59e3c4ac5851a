//! The edge benchmark's output: one Markdown table of every run, the ratios
//! to the limit and to the Node.js peer (run by run, since each pair ran
//! back to back on the same machine), and CPU per request.

use super::durable::Check;
use super::report::LoadReport;
use super::servers::Kind;
use std::collections::BTreeMap;
use std::fmt::Write;

pub struct RunResult {
    pub kind: Kind,
    pub concurrency: usize,
    /// 1-based: the n-th round of the interleaved runs.
    pub round: usize,
    pub report: LoadReport,
    pub check: Option<Check>,
    /// What the server wrote to stdout and stderr over the whole run.
    pub log_bytes: Option<u64>,
}

/// Runs of one server at one concurrency, in round order.
fn runs(results: &[RunResult], kind: Kind, concurrency: usize) -> Vec<&RunResult> {
    let mut v: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.kind == kind && r.concurrency == concurrency)
        .collect();
    v.sort_by_key(|r| r.round);
    v
}

fn concurrencies(results: &[RunResult]) -> Vec<usize> {
    let mut seen = vec![];
    for r in results {
        if !seen.contains(&r.concurrency) {
            seen.push(r.concurrency);
        }
    }
    seen
}

/// `1,234`.
fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let (sign, digits) = s.split_at(usize::from(s.starts_with('-')));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// The values of the runs as `a` or `min–max`.
fn span(values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match values.len() {
        0 => "n/a".into(),
        _ if fmt(min) == fmt(max) => fmt(min),
        _ => format!("{}–{}", fmt(min), fmt(max)),
    }
}

fn millis(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.1}")
    }
}

fn non_2xx(runs: &[&RunResult]) -> String {
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let (mut no_answer, mut answered) = (0, 0);
    for r in runs {
        answered += r.report.answered();
        no_answer += r.report.transport_errors;
        for (s, n) in &r.report.statuses {
            if !s.starts_with('2') {
                *by_status.entry(s.clone()).or_default() += n;
            }
        }
    }
    if by_status.len() == 1 && no_answer == 0 && by_status.values().sum::<u64>() == answered {
        let (s, n) = by_status.iter().next().expect("one");
        return format!("all {n} answers {s}");
    }
    let mut parts: Vec<String> = by_status.iter().map(|(s, n)| format!("{n}× {s}")).collect();
    if no_answer > 0 {
        parts.push(format!("{no_answer}× no answer"));
    }
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join(", ")
    }
}

fn durable(kind: Kind, runs: &[&RunResult]) -> String {
    let checks: Vec<&Check> = runs.iter().filter_map(|r| r.check.as_ref()).collect();
    if !kind.is_connectord() {
        return "— (stores nothing)".into();
    }
    if checks.len() < runs.len() {
        return "NOT CHECKED".into();
    }
    if kind == Kind::BadSignature {
        return match checks.iter().filter(|c| !c.nothing_recorded()).count() {
            0 => "ok: nothing recorded".into(),
            n => format!("FAILED: deliveries recorded in {n} run(s)"),
        };
    }
    match checks.iter().find(|c| !c.ok()) {
        Some(bad) => bad.describe(),
        None => {
            let n: usize = checks.iter().map(|c| c.accepted).sum();
            format!(
                "ok: {} of {} 202s",
                thousands(n as f64),
                thousands(n as f64)
            )
        }
    }
}

/// The table of all runs, concurrency by concurrency.
pub fn table(results: &[RunResult]) -> String {
    let mut out = String::new();
    out.push_str(
        "| server | connections | requests/s | p50 | p99 | max | non-2xx | server CPU s per 1k requests | load generator CPU s per 1k | server RSS at end | other load during the run (cores) | durable check |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in concurrencies(results) {
        for kind in [
            Kind::Sqlite,
            Kind::Postgres,
            Kind::Octokit,
            Kind::Limit,
            Kind::BadSignature,
        ] {
            let rs = runs(results, kind, c);
            if rs.is_empty() {
                continue;
            }
            let col = |f: &dyn Fn(&LoadReport) -> Option<f64>| -> Vec<f64> {
                rs.iter().filter_map(|r| f(&r.report)).collect()
            };
            let rps: Vec<String> = rs
                .iter()
                .map(|r| thousands(r.report.requests_per_sec))
                .collect();
            let label = match kind {
                Kind::Postgres => format!("{} (CPU incl. PostgreSQL's)", kind.label()),
                _ => kind.label().to_owned(),
            };
            let _ = writeln!(
                out,
                "| {label} | {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                rps.join(" / "),
                span(&col(&|r| Some(r.p50_ms)), millis) + " ms",
                span(&col(&|r| Some(r.p99_ms)), millis) + " ms",
                span(&col(&|r| Some(r.max_ms)), millis) + " ms",
                non_2xx(&rs),
                span(&col(&|r| r.server_cpu_per_1k()), |x| format!("{x:.3}")),
                span(&col(&|r| r.load_cpu_per_1k()), |x| format!("{x:.3}")),
                span(&col(&|r| r.rss_end_kib.map(|k| k as f64 / 1024.0)), |x| {
                    format!("{x:.0}")
                }) + " MiB",
                span(&col(&|r| r.other_cores()), |x| format!("{x:.2}")),
                durable(kind, &rs),
            );
        }
    }
    out
}

/// `f(a) / f(b)`, one ratio per round in which both servers ran.
fn ratio(
    results: &[RunResult],
    a: Kind,
    b: Kind,
    c: usize,
    f: impl Fn(&LoadReport) -> Option<f64>,
) -> Option<Vec<f64>> {
    let (ra, rb) = (runs(results, a, c), runs(results, b, c));
    let v: Vec<f64> = ra
        .iter()
        .filter_map(|x| {
            let y = rb.iter().find(|y| y.round == x.round)?;
            let (fx, fy) = (f(&x.report)?, f(&y.report)?);
            (fy > 0.0).then(|| fx / fy)
        })
        .collect();
    (!v.is_empty()).then_some(v)
}

fn times(v: &[f64]) -> String {
    v.iter()
        .map(|x| {
            if *x < 0.1 {
                format!("{x:.3}×")
            } else {
                format!("{x:.2}×")
            }
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Requests/s ratios (and the bad signature's CPU against the limit's),
/// round by round, with the goals next to them.
pub fn ratios(results: &[RunResult]) -> String {
    let mut out = String::from(
        "| connections | SQLite / limit (goal ≥ 0.60×) | SQLite / octokit (goal ≥ 1.5×) | PostgreSQL / limit (goal ≥ 0.40×) | PostgreSQL / octokit | octokit / limit | CPU of a bad signature / the limit's 202 (goal ≤ 1×) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for c in concurrencies(results) {
        let rps = |a, b| {
            ratio(results, a, b, c, |r| Some(r.requests_per_sec))
                .map_or("n/a".into(), |v| times(&v))
        };
        let cpu = ratio(results, Kind::BadSignature, Kind::Limit, c, |r| {
            r.server_cpu_per_1k()
        })
        .map_or("n/a".into(), |v| times(&v));
        let _ = writeln!(
            out,
            "| {c} | {} | {} | {} | {} | {} | {cpu} |",
            rps(Kind::Sqlite, Kind::Limit),
            rps(Kind::Sqlite, Kind::Octokit),
            rps(Kind::Postgres, Kind::Limit),
            rps(Kind::Postgres, Kind::Octokit),
            rps(Kind::Octokit, Kind::Limit),
        );
    }
    out
}

/// Microseconds of CPU per request, averaged over the runs: the server's own
/// process, PostgreSQL's processes, and the load generator.
pub fn cpu_per_request(results: &[RunResult]) -> String {
    let mut out = String::from(
        "| server | connections | server µs/request | of which PostgreSQL | load generator µs/request | server log bytes/request |\n\
         |---|---|---|---|---|---|\n",
    );
    for c in concurrencies(results) {
        for kind in [
            Kind::Sqlite,
            Kind::Postgres,
            Kind::Octokit,
            Kind::Limit,
            Kind::BadSignature,
        ] {
            let rs = runs(results, kind, c);
            let (mut server, mut pg, mut load, mut n) = (0.0, 0.0, 0.0, 0.0);
            let (mut log, mut answered) = (0u64, 0u64);
            for r in &rs {
                let req = r.report.requests as f64;
                if req == 0.0 {
                    continue;
                }
                server += (r.report.server_cpu_secs.unwrap_or(0.0)
                    + r.report.postgres_cpu_secs.unwrap_or(0.0))
                    * 1e6
                    / req;
                pg += r.report.postgres_cpu_secs.unwrap_or(0.0) * 1e6 / req;
                load += r.report.load_cpu_secs.unwrap_or(0.0) * 1e6 / req;
                n += 1.0;
                log += r.log_bytes.unwrap_or(0);
                answered += r.report.answered();
            }
            if n == 0.0 {
                continue;
            }
            let pg = if kind == Kind::Postgres {
                format!("{:.0}", pg / n)
            } else {
                "—".into()
            };
            let log = if answered > 0 {
                format!("{:.0}", log as f64 / answered as f64)
            } else {
                "n/a".into()
            };
            let _ = writeln!(
                out,
                "| {} | {c} | {:.0} | {pg} | {:.0} | {log} |",
                kind.label(),
                server / n,
                load / n
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_in_the_docs() {
        assert_eq!(thousands(42_400.4), "42,400");
        assert_eq!(thousands(980.0), "980");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
        assert_eq!(span(&[1.0, 2.5], millis), "1.00–2.50");
        assert_eq!(span(&[12.34, 3.0], millis), "3.00–12.3");
        assert_eq!(span(&[3.0], millis), "3.00");
        assert_eq!(times(&[0.0213, 1.5]), "0.021× / 1.50×");
    }
}
