//! The full results as JSON: `<target-dir>/herd-bench/bench-<UTC time>.json` and
//! `latest.json` beside it.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::args::Args;
use super::json::Json;
use super::machine::Machine;
use super::report::{Results, Summary, Target};
use super::run::Run;
use super::startup::Startup;
use super::stats::Spread;

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `2026-05-01T12:34:56Z` for a time.
pub(crate) fn utc(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", t / 3600, t / 60 % 60, t % 60)
}

fn spread(s: Option<Spread>) -> Json {
    match s {
        Some(s) => Json::Obj(vec![
            ("median", Json::num(s.median)),
            ("min", Json::num(s.min)),
            ("max", Json::num(s.max)),
        ]),
        None => Json::Null,
    }
}

fn opt_u64(v: Option<u64>) -> Json {
    Json::num(v.map(|v| v as f64))
}

fn run_json(results: &Results, r: &Run) -> Json {
    let c = &results.configs[r.config];
    let o = &r.outcome;
    let per_worker = o
        .per_worker
        .iter()
        .map(|(id, n)| {
            Json::Obj(vec![("id", Json::num(*id as f64)), ("requests", Json::num(*n as f64))])
        })
        .collect();
    Json::Obj(vec![
        ("label", Json::str(c.label())),
        ("mode", Json::str(c.mode.name())),
        ("server", Json::str(c.server())),
        ("policy", Json::str(c.policy())),
        ("generators", Json::num(f64::from(c.generators))),
        ("generator", Json::str(c.generator())),
        ("round", Json::num(r.round as f64 + 1.0)),
        ("ok", Json::Bool(r.ok())),
        ("failure", r.failed.as_ref().map_or(Json::Null, Json::str)),
        ("window_s", Json::num(o.window_s)),
        ("requests", Json::num(o.requests as f64)),
        ("errors", Json::num(o.errors as f64)),
        ("first_error", o.first_error.as_ref().map_or(Json::Null, Json::str)),
        ("connections", Json::num(o.connections as f64)),
        ("requests_per_s", Json::num(r.ok().then(|| r.rps()))),
        (
            "latency_us",
            Json::Obj(vec![
                ("p50", Json::num(r.latency_us(0.5))),
                ("p99", Json::num(r.latency_us(0.99))),
                ("p99_9", Json::num(r.latency_us(0.999))),
            ]),
        ),
        ("per_worker", Json::Arr(per_worker)),
        ("expected_workers", Json::num(r.expected_workers as f64)),
        ("jain", Json::num(r.jain())),
        ("max_over_min", Json::num(r.max_over_min())),
        ("primary_cpu_s", Json::num(r.primary_cpu_s)),
        ("all_cpu_s", Json::num(r.all_cpu_s)),
        ("server_processes", Json::num(r.processes as f64)),
        ("primary_cpu_s_per_1k_conn", Json::num(r.primary_cpu_s_per_1k_conn(c.mode))),
        ("all_cpu_us_per_conn", Json::num(r.all_cpu_us_per_conn(c.mode))),
        ("all_cpu_us_per_request", Json::num(r.all_cpu_us_per_request())),
        ("server_cores", Json::num(r.ok().then(|| r.server_cores()))),
        ("primary_rss_kib", opt_u64(r.primary_rss_kib)),
        ("worker_rss_kib_max", opt_u64(r.worker_rss_kib)),
        ("generator_cpu_s", Json::num(o.cpu_s)),
        ("generator_cores", Json::num(r.ok().then(|| r.generator_cores()))),
    ])
}

fn summary_json(results: &Results, s: &Summary) -> Json {
    let c = &results.configs[s.config];
    Json::Obj(vec![
        ("label", Json::str(c.label())),
        ("mode", Json::str(c.mode.name())),
        ("generator", Json::str(c.generator())),
        ("rounds_ok", Json::num(s.rounds_ok as f64)),
        ("requests", Json::num(s.requests as f64)),
        ("errors", Json::num(s.errors as f64)),
        ("requests_per_s", spread(s.rps)),
        ("ratio_to_ceiling", spread(s.vs_ceiling)),
        ("ratio_to_node_rr", spread(s.vs_node_rr)),
        ("p50_us", spread(s.p50_us)),
        ("p99_us", spread(s.p99_us)),
        ("p99_9_us", spread(s.p999_us)),
        ("jain", spread(s.jain)),
        ("max_over_min", spread(s.max_over_min)),
        ("primary_cpu_s_per_1k_conn", spread(s.primary_cpu_s_per_1k_conn)),
        ("all_cpu_us_per_conn", spread(s.all_cpu_us_per_conn)),
        ("all_cpu_us_per_request", spread(s.all_cpu_us_per_request)),
        ("server_cores", spread(s.server_cores)),
        ("generator_cores", spread(s.generator_cores)),
        ("primary_rss_kib", spread(s.primary_rss_kib)),
        ("worker_rss_kib_max", spread(s.worker_rss_kib)),
    ])
}

fn startup_json(s: &Startup) -> Json {
    let list = |v: &[f64]| Json::Arr(v.iter().map(|&x| Json::num(x)).collect());
    Json::Obj(vec![
        ("label", Json::str(&s.label)),
        ("workers", Json::num(super::startup::WORKERS as f64)),
        ("workers_seen", Json::num(s.workers_seen as f64)),
        ("exec_to_listening_ms", spread(s.ms())),
        ("exec_to_listening_ms_rounds", list(&s.ms)),
        ("idle_primary_rss_kib", spread(s.primary_rss())),
        ("idle_worker_rss_kib_max", spread(s.worker_rss())),
        ("failures", Json::Arr(s.failures.iter().map(Json::str).collect())),
    ])
}

fn target_json(t: &Target) -> Json {
    Json::Obj(vec![
        ("name", Json::str(t.name)),
        ("goal", Json::str(t.goal)),
        ("measured", spread(t.measured)),
        ("pass", t.pass.map_or(Json::Null, Json::Bool)),
        ("note", Json::str(&t.note)),
    ])
}

/// Everything about one `cargo xtask bench`.
pub(crate) struct Document<'a> {
    pub(crate) started: SystemTime,
    pub(crate) elapsed_s: f64,
    pub(crate) args: &'a Args,
    pub(crate) pinned: bool,
    pub(crate) machine: &'a Machine,
    pub(crate) notes: &'a [String],
    pub(crate) results: &'a Results<'a>,
    pub(crate) startups: &'a [Startup],
    /// The load rows' targets and the start-up rows'.
    pub(crate) targets: &'a [Target],
}

impl Document<'_> {
    fn json(&self) -> Json {
        let a = self.args;
        let m = self.machine;
        let r = self.results;
        let strings = |v: &[String]| Json::Arr(v.iter().map(Json::str).collect());
        let generator_check = r
            .generator_check()
            .into_iter()
            .map(|c| {
                Json::Obj(vec![
                    ("mode", Json::str(c.mode.name())),
                    ("two_over_one_generator_ratio", spread(c.ratio)),
                    ("one_generator_cores", spread(c.generator_cores)),
                    ("server_plus_generator_cores", spread(c.busy_cores)),
                    ("verdict", Json::str(c.verdict())),
                ])
            })
            .collect();
        Json::Obj(vec![
            ("schema", Json::str("herd-bench/1")),
            ("started_utc", Json::str(utc(self.started))),
            ("elapsed_s", Json::num(self.elapsed_s)),
            (
                "machine",
                Json::Obj(vec![
                    ("cpu", Json::str(&m.cpu)),
                    ("cores", Json::num(m.cores as f64)),
                    ("kernel", Json::str(&m.kernel)),
                    ("clock_tick_hz", Json::num(m.clock_tick)),
                    ("rustc", Json::str(&m.rustc)),
                    ("node", m.node.as_ref().map_or(Json::Null, Json::str)),
                    ("taskset", Json::Bool(m.taskset)),
                    ("nginx", m.nginx.as_ref().map_or(Json::Null, Json::str)),
                    ("wrk", m.wrk.as_ref().map_or(Json::Null, Json::str)),
                    ("load_average_at_end", Json::str(load_average())),
                ]),
            ),
            (
                "settings",
                Json::Obj(vec![
                    ("modes", Json::Arr(a.modes.iter().map(|m| Json::str(m.name())).collect())),
                    ("concurrency", Json::num(a.concurrency as f64)),
                    ("duration_s", Json::num(a.duration.as_secs_f64())),
                    ("warmup_s", Json::num(a.warmup.as_secs_f64())),
                    ("workers", Json::num(a.workers as f64)),
                    ("policies", strings(&a.policies)),
                    ("repeats", Json::num(a.repeats as f64)),
                    ("quick", Json::Bool(a.quick)),
                    ("pin_requested", Json::Bool(a.pin)),
                    ("pinned", Json::Bool(self.pinned)),
                ]),
            ),
            ("notes", strings(self.notes)),
            ("targets", Json::Arr(self.targets.iter().map(target_json).collect())),
            ("startup", Json::Arr(self.startups.iter().map(startup_json).collect())),
            ("generator_check", Json::Arr(generator_check)),
            (
                "wrk_check",
                Json::Arr(
                    r.wrk_check()
                        .into_iter()
                        .map(|c| {
                            Json::Obj(vec![
                                ("mode", Json::str(c.mode.name())),
                                ("server", Json::str(c.server)),
                                ("wrk_over_builtin_requests_per_s", spread(c.rps)),
                                ("wrk_over_builtin_cpu_per_conn", spread(c.cpu_per_conn)),
                            ])
                        })
                        .collect(),
                ),
            ),
            ("summary", Json::Arr(r.summaries().iter().map(|s| summary_json(r, s)).collect())),
            ("runs", Json::Arr(r.runs.iter().map(|run| run_json(r, run)).collect())),
        ])
    }

    /// Writes the timestamped file and `latest.json`; returns the timestamped file's path.
    pub(crate) fn write(&self, dir: &Path) -> Result<PathBuf, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let text = self.json().render();
        let stamp = utc(self.started).replace(':', "-");
        let path = dir.join(format!("bench-{stamp}.json"));
        for p in [path.clone(), dir.join("latest.json")] {
            std::fs::write(&p, &text).map_err(|e| format!("write {}: {e}", p.display()))?;
        }
        Ok(path)
    }
}

/// `/proc/loadavg`'s first three fields (1, 5 and 15 minutes), as text.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29 01:02:03
        assert_eq!(utc(t), "2000-02-29T01:02:03Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_599); // last second of 2025
        assert_eq!(utc(t), "2025-12-31T23:59:59Z");
    }
}
