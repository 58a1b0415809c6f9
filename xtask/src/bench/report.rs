//! From runs to conclusions: per-configuration medians (with min–max over rounds), ratios
//! taken pairwise within a round, the targets, and the markdown table.

use super::args::Mode;
use super::run::{Config, Kind, Run};
use super::stats::{Spread, spread};

/// One configuration over all its rounds.
pub(crate) struct Summary {
    pub(crate) config: usize,
    pub(crate) rounds_ok: usize,
    pub(crate) rps: Option<Spread>,
    pub(crate) vs_ceiling: Option<Spread>,
    pub(crate) vs_node_rr: Option<Spread>,
    pub(crate) p50_us: Option<Spread>,
    pub(crate) p99_us: Option<Spread>,
    pub(crate) p999_us: Option<Spread>,
    pub(crate) jain: Option<Spread>,
    pub(crate) max_over_min: Option<Spread>,
    pub(crate) primary_cpu_s_per_1k_conn: Option<Spread>,
    pub(crate) all_cpu_us_per_conn: Option<Spread>,
    pub(crate) all_cpu_us_per_request: Option<Spread>,
    pub(crate) server_cores: Option<Spread>,
    pub(crate) generator_cores: Option<Spread>,
    pub(crate) primary_rss_kib: Option<Spread>,
    pub(crate) worker_rss_kib: Option<Spread>,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
}

/// One of the targets, measured.
pub(crate) struct Target {
    pub(crate) name: &'static str,
    pub(crate) goal: &'static str,
    pub(crate) measured: Option<Spread>,
    /// `None` when it could not be measured.
    pub(crate) pass: Option<bool>,
    pub(crate) note: String,
}

/// The runs of all configurations, and how to find one.
pub(crate) struct Results<'a> {
    pub(crate) configs: &'a [Config],
    pub(crate) runs: &'a [Run],
}

impl Results<'_> {
    /// The configuration of `kind` in `mode` under the built-in generator (`generators`
    /// processes of it).
    fn find(&self, mode: Mode, kind: &Kind, generators: u32) -> Option<usize> {
        self.configs
            .iter()
            .position(|c| c.mode == mode && &c.kind == kind && c.generators == generators && !c.wrk)
    }

    /// `a`'s all-server CPU per connection over `b`'s (`close` mode), within rounds.
    fn cpu_ratio(&self, a: Option<usize>, b: Option<usize>) -> Option<Spread> {
        self.paired(a, b, |x, y| {
            let (x, y) = (x.all_cpu_us_per_conn(Mode::Close)?, y.all_cpu_us_per_conn(Mode::Close)?);
            (y > 0.0).then(|| x / y)
        })
    }

    fn ok_runs(&self, config: usize) -> impl Iterator<Item = &Run> {
        self.runs.iter().filter(move |r| r.config == config && r.ok())
    }

    fn over(&self, config: usize, f: impl Fn(&Run) -> Option<f64>) -> Option<Spread> {
        spread(self.ok_runs(config).filter_map(f))
    }

    /// `f(a's run, b's run)` for every round both succeeded in, summarised.
    fn paired(
        &self,
        a: Option<usize>,
        b: Option<usize>,
        f: impl Fn(&Run, &Run) -> Option<f64>,
    ) -> Option<Spread> {
        let (a, b) = (a?, b?);
        spread(self.ok_runs(a).filter_map(|ra| {
            let rb = self.ok_runs(b).find(|rb| rb.round == ra.round)?;
            f(ra, rb)
        }))
    }

    fn rps_ratio(&self, a: Option<usize>, b: Option<usize>) -> Option<Spread> {
        self.paired(a, b, |x, y| (y.rps() > 0.0).then(|| x.rps() / y.rps()))
    }

    pub(crate) fn summaries(&self) -> Vec<Summary> {
        (0..self.configs.len()).map(|i| self.summary(i)).collect()
    }

    fn summary(&self, i: usize) -> Summary {
        let mode = self.configs[i].mode;
        let ceiling = self.find(mode, &Kind::Ceiling, 1);
        let node_rr = self.find(mode, &Kind::Node("rr"), 1);
        let kib = |v: Option<u64>| v.map(|k| k as f64);
        Summary {
            config: i,
            rounds_ok: self.ok_runs(i).count(),
            rps: self.over(i, |r| Some(r.rps())),
            vs_ceiling: self.rps_ratio(Some(i), ceiling),
            vs_node_rr: self.rps_ratio(Some(i), node_rr),
            p50_us: self.over(i, |r| r.latency_us(0.5)),
            p99_us: self.over(i, |r| r.latency_us(0.99)),
            p999_us: self.over(i, |r| r.latency_us(0.999)),
            jain: self.over(i, Run::jain),
            max_over_min: self.over(i, Run::max_over_min),
            primary_cpu_s_per_1k_conn: self.over(i, |r| r.primary_cpu_s_per_1k_conn(mode)),
            all_cpu_us_per_conn: self.over(i, |r| r.all_cpu_us_per_conn(mode)),
            all_cpu_us_per_request: self.over(i, Run::all_cpu_us_per_request),
            server_cores: self.over(i, |r| Some(r.server_cores())),
            generator_cores: self.over(i, |r| Some(r.generator_cores())),
            primary_rss_kib: self.over(i, |r| kib(r.primary_rss_kib)),
            worker_rss_kib: self.over(i, |r| kib(r.worker_rss_kib)),
            requests: self.ok_runs(i).map(|r| r.outcome.requests).sum(),
            errors: self.runs.iter().filter(|r| r.config == i).map(|r| r.outcome.errors).sum(),
        }
    }

    /// The targets, each measured pairwise within rounds where it compares two rows.
    pub(crate) fn targets(&self) -> Vec<Target> {
        let close = |kind: Kind| self.find(Mode::Close, &kind, 1);
        let herd = |p: &str| Kind::Herd(p.to_string());
        let (rr, none) = (close(herd("rr")), close(herd("none")));
        let (node_rr, ceiling) = (close(Kind::Node("rr")), close(Kind::Ceiling));
        let mut targets = Vec::new();
        let check = |measured: Option<Spread>, ok: &dyn Fn(f64) -> bool| {
            (measured, measured.map(|m| ok(m.median)))
        };
        let missing = |what: Option<usize>, why: &str| {
            if what.is_none() { why.to_string() } else { String::new() }
        };

        let (m, pass) = check(self.rps_ratio(rr, node_rr), &|x| x >= 2.5);
        let note = missing(node_rr, "no node rr row (node not found or --no-node)");
        targets.push(Target {
            name: "close: herd rr req/s ÷ node rr",
            goal: "≥ 2.5×",
            measured: m,
            pass,
            note,
        });

        let (m, pass) = check(self.rps_ratio(rr, ceiling), &|x| x >= 0.90);
        targets.push(Target {
            name: "close: herd rr req/s ÷ ceiling",
            goal: "≥ 0.90",
            measured: m,
            pass,
            note: String::new(),
        });

        let primary = self.paired(rr, node_rr, |a, b| {
            let (a, b) = (
                a.primary_cpu_s_per_1k_conn(Mode::Close)?,
                b.primary_cpu_s_per_1k_conn(Mode::Close)?,
            );
            (b > 0.0).then(|| a / b)
        });
        let (m, pass) = check(primary, &|x| x <= 0.25);
        let note = missing(node_rr, "no node rr row");
        targets.push(Target {
            name: "close: herd rr primary CPU/conn ÷ node rr primary",
            goal: "≤ 0.25",
            measured: m,
            pass,
            note,
        });

        let extra = self.paired(rr, none, |a, b| {
            Some(a.all_cpu_us_per_conn(Mode::Close)? - b.all_cpu_us_per_conn(Mode::Close)?)
        });
        let (m, pass) = check(extra, &|x| x <= 10.0);
        targets.push(Target {
            name: "close: all herd CPU µs/conn, rr − none",
            goal: "≤ +10 µs",
            measured: m,
            pass,
            note: String::new(),
        });

        for policy in ["rr", "least-conn"] {
            let config = close(herd(policy));
            let fewest = config.and_then(|c| self.ok_runs(c).map(|r| r.outcome.connections).min());
            let (m, pass) = check(config.and_then(|c| self.over(c, Run::jain)), &|x| x >= 0.99);
            let note = match fewest {
                Some(n) if n < 10_000 => format!("only {n} connections in a run (< 10,000)"),
                Some(n) => format!("≥ {n} connections per run"),
                None => String::new(),
            };
            let name = if policy == "rr" {
                "close: Jain index, herd rr"
            } else {
                "close: Jain index, herd least-conn"
            };
            targets.push(Target { name, goal: "≥ 0.99", measured: m, pass, note });
        }

        // The async rows: herd-axum against what a user would run instead (one process, a
        // multi-thread runtime with as many threads as workers).
        let axum = |mode: Mode, kind: Kind| self.find(mode, &kind, 1);
        let herd_axum = |p: &str| Kind::HerdAxum(p.to_string());
        let single = |mode: Mode| axum(mode, Kind::AxumSingle);
        let async_targets: [(&'static str, &'static str, Mode, &str, f64); 3] = [
            (
                "keepalive: herd-axum reuseport ÷ axum 1-proc",
                "≥ 0.95",
                Mode::KeepAlive,
                "reuseport",
                0.95,
            ),
            ("close: herd-axum reuseport ÷ axum 1-proc", "≥ 1.0", Mode::Close, "reuseport", 1.0),
            ("close: herd-axum rr ÷ axum 1-proc", "≥ 0.90", Mode::Close, "rr", 0.90),
        ];
        for (name, goal, mode, policy, floor) in async_targets {
            let (ours, theirs) = (axum(mode, herd_axum(policy)), single(mode));
            let (m, pass) = check(self.rps_ratio(ours, theirs), &|x| x >= floor);
            let note =
                missing(ours.and(theirs), "no async rows (--no-axum, or the policy skipped)");
            targets.push(Target { name, goal, measured: m, pass, note });
        }

        // herd's own overhead: hello's serving code with herd against the same code in
        // processes that bind with SO_REUSEPORT themselves (`bare`).
        let bare = close(Kind::Bare);
        let no_bare = |c: Option<usize>| missing(c.and(bare), "no bare row or policy skipped");
        for (policy, name) in [
            ("reuseport", "close: herd reuseport all CPU/conn ÷ bare"),
            ("none", "close: herd none all CPU/conn ÷ bare"),
        ] {
            let ours = close(herd(policy));
            let (m, pass) = check(self.cpu_ratio(ours, bare), &|x| x <= 1.05);
            targets
                .push(Target { name, goal: "≤ 1.05×", measured: m, pass, note: no_bare(ours) });
        }
        let extra = self.paired(rr, bare, |a, b| {
            Some(a.all_cpu_us_per_conn(Mode::Close)? - b.all_cpu_us_per_conn(Mode::Close)?)
        });
        let (m, pass) = check(extra, &|x| x <= 8.0);
        let name = "close: all CPU µs/conn, herd rr − bare";
        targets.push(Target { name, goal: "≤ +8 µs", measured: m, pass, note: no_bare(rr) });
        let bare_ka = self.find(Mode::KeepAlive, &Kind::Bare, 1);
        for (policy, name) in [
            ("reuseport", "keepalive: herd reuseport req/s ÷ bare"),
            ("none", "keepalive: herd none req/s ÷ bare"),
            ("rr", "keepalive: herd rr req/s ÷ bare"),
        ] {
            let ours = self.find(Mode::KeepAlive, &herd(policy), 1);
            let (m, pass) = check(self.rps_ratio(ours, bare_ka), &|x| x >= 0.97);
            let note = missing(ours.and(bare_ka), "no bare row or policy skipped");
            targets.push(Target { name, goal: "≥ 0.97×", measured: m, pass, note });
        }

        // The event-loop server clustered by herd against nginx, same worker count.
        let evloop = |p: &str| Kind::Evloop(p.to_string());
        let nginx_ka = self.find(Mode::KeepAlive, &Kind::Nginx, 1);
        let nginx_close = close(Kind::Nginx);
        for (policy, name) in [
            ("reuseport", "keepalive: herd-evloop reuseport req/s ÷ nginx"),
            ("none", "keepalive: herd-evloop none req/s ÷ nginx"),
        ] {
            let ours = self.find(Mode::KeepAlive, &evloop(policy), 1);
            let (m, pass) = check(self.rps_ratio(ours, nginx_ka), &|x| x >= 1.0);
            let note = missing(ours.and(nginx_ka), "no nginx row (not found, or --no-nginx)");
            targets.push(Target { name, goal: "≥ 1.0×", measured: m, pass, note });
        }
        for (policy, name) in [
            ("reuseport", "close: herd-evloop reuseport all CPU/conn ÷ nginx"),
            ("none", "close: herd-evloop none all CPU/conn ÷ nginx"),
        ] {
            let ours = close(evloop(policy));
            let (m, pass) = check(self.cpu_ratio(ours, nginx_close), &|x| x <= 1.1);
            let note = missing(ours.and(nginx_close), "no nginx row (not found, or --no-nginx)");
            targets.push(Target { name, goal: "≤ 1.1×", measured: m, pass, note });
        }

        let reuseport = self.find(Mode::KeepAlive, &herd("reuseport"), 1);
        for policy in ["none", "rr", "least-conn"] {
            let config = self.find(Mode::KeepAlive, &herd(policy), 1);
            let (m, pass) = check(self.rps_ratio(config, reuseport), &|x| x >= 0.90);
            let name = match policy {
                "none" => "keepalive: herd none req/s ÷ reuseport",
                "rr" => "keepalive: herd rr req/s ÷ reuseport",
                _ => "keepalive: herd least-conn req/s ÷ reuseport",
            };
            targets.push(Target { name, goal: "≥ 0.90", measured: m, pass, note: String::new() });
        }
        targets
    }

    /// Whether a second generator process raises the ceiling, per mode: the two-generator
    /// ceiling over the one-generator ceiling within rounds, and how busy the machine was.
    pub(crate) fn generator_check(&self) -> Vec<GeneratorCheck> {
        [Mode::Close, Mode::KeepAlive]
            .into_iter()
            .filter_map(|mode| {
                let two = self.find(mode, &Kind::Ceiling, 2)?;
                let one = self.find(mode, &Kind::Ceiling, 1);
                let busy =
                    |c: usize| self.over(c, |r| Some(r.server_cores() + r.generator_cores()));
                Some(GeneratorCheck {
                    mode,
                    ratio: self.rps_ratio(Some(two), one),
                    generator_cores: one.and_then(|c| self.over(c, |r| Some(r.generator_cores()))),
                    busy_cores: one.and_then(busy),
                })
            })
            .collect()
    }
}

/// The same server under wrk and under the built-in generator, within rounds.
pub(crate) struct WrkCheck {
    pub(crate) mode: Mode,
    pub(crate) server: String,
    /// wrk's req/s over the built-in generator's.
    pub(crate) rps: Option<Spread>,
    /// All-server CPU per connection under wrk over the built-in's (`close` mode).
    pub(crate) cpu_per_conn: Option<Spread>,
}

impl WrkCheck {
    pub(crate) fn line(&self) -> String {
        let cpu = match self.mode {
            Mode::Close => format!(", CPU/conn {}", with_range(self.cpu_per_conn, ratio)),
            Mode::KeepAlive => String::new(),
        };
        format!("{} {}: req/s {}{cpu}", self.mode.name(), self.server, with_range(self.rps, ratio))
    }
}

impl Results<'_> {
    /// Every server run under both generators: wrk's figures over the built-in's.
    pub(crate) fn wrk_check(&self) -> Vec<WrkCheck> {
        self.configs
            .iter()
            .enumerate()
            .filter(|(_, c)| c.wrk)
            .map(|(i, c)| {
                let builtin = self.find(c.mode, &c.kind, 1);
                WrkCheck {
                    mode: c.mode,
                    server: c.label().trim_end_matches(", wrk").to_string(),
                    rps: self.rps_ratio(Some(i), builtin),
                    cpu_per_conn: self.cpu_ratio(Some(i), builtin),
                }
            })
            .collect()
    }
}

/// The ceiling with two generator processes against one.
pub(crate) struct GeneratorCheck {
    pub(crate) mode: Mode,
    /// Two generators' req/s over one's, within rounds.
    pub(crate) ratio: Option<Spread>,
    /// One generator's CPU, in cores.
    pub(crate) generator_cores: Option<Spread>,
    /// Server plus one generator, in cores.
    pub(crate) busy_cores: Option<Spread>,
}

impl GeneratorCheck {
    /// A change counts only if the median moves by more than 5% and every round agrees.
    pub(crate) fn verdict(&self) -> &'static str {
        match self.ratio {
            None => "not measured",
            Some(r) if r.median > 1.05 && r.min > 1.0 => {
                "two generators raise the ceiling: one generator limits it, read ratios with care"
            }
            Some(r) if r.median < 0.95 && r.max < 1.0 => {
                "two generators lower the ceiling: more load processes only add contention"
            }
            Some(_) => "two generators do not raise the ceiling consistently (within noise)",
        }
    }

    pub(crate) fn line(&self, cores: usize) -> String {
        format!(
            "{}: {} — {}; one generator used {} cores, server + generator {} of {cores}",
            self.mode.name(),
            with_range(self.ratio, ratio),
            self.verdict(),
            median(self.generator_cores, ratio),
            median(self.busy_cores, ratio),
        )
    }
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn median(s: Option<Spread>, format: impl Fn(f64) -> String) -> String {
    match s {
        Some(s) if s.median.is_infinite() => "∞".into(),
        Some(s) => format(s.median),
        None => "–".into(),
    }
}

/// `median (min–max)`, or the median alone when the spread is a single value.
pub(crate) fn with_range(s: Option<Spread>, format: impl Fn(f64) -> String) -> String {
    match s {
        Some(s) if s.min == s.max => format(s.median),
        Some(s) => format!("{} ({}–{})", format(s.median), format(s.min), format(s.max)),
        None => "–".into(),
    }
}

pub(crate) fn ratio(x: f64) -> String {
    format!("{x:.2}")
}

/// The markdown table, one row per configuration.
pub(crate) fn table(configs: &[Config], summaries: &[Summary]) -> String {
    let mut out = String::from(
        "| mode | server | req/s median (min–max) | × ceiling | × node rr | p50 ms | p99 ms | p99.9 ms \
         | Jain | max/min | primary CPU s/1k conn | all CPU µs/conn | server cores | gen cores \
         | primary RSS MiB | worker RSS MiB | errors |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let ms = |us: f64| format!("{:.2}", us / 1000.0);
    let mib = |kib: f64| format!("{:.1}", kib / 1024.0);
    for s in summaries {
        let c = &configs[s.config];
        let cells = [
            c.mode.name().to_string(),
            c.label(),
            with_range(s.rps, thousands),
            median(s.vs_ceiling, ratio),
            median(s.vs_node_rr, ratio),
            median(s.p50_us, ms),
            median(s.p99_us, ms),
            median(s.p999_us, ms),
            median(s.jain, |x| format!("{x:.4}")),
            median(s.max_over_min, ratio),
            median(s.primary_cpu_s_per_1k_conn, |x| format!("{x:.4}")),
            median(s.all_cpu_us_per_conn, |x| format!("{x:.1}")),
            median(s.server_cores, ratio),
            median(s.generator_cores, ratio),
            median(s.primary_rss_kib, mib),
            median(s.worker_rss_kib, mib),
            if s.rounds_ok == 0 { "run failed".into() } else { s.errors.to_string() },
        ];
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// The targets as markdown lines.
pub(crate) fn targets_text(targets: &[Target]) -> String {
    let mut out = String::new();
    for t in targets {
        let verdict = match t.pass {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let note = if t.note.is_empty() { String::new() } else { format!("; {}", t.note) };
        out.push_str(&format!(
            "- {} (target {}): {} — {verdict}{note}\n",
            t.name,
            t.goal,
            with_range(t.measured, |x| format!("{x:.3}")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        let s = Spread { median: 2.0, min: 1.0, max: 3.0 };
        assert_eq!(with_range(Some(s), ratio), "2.00 (1.00–3.00)");
        assert_eq!(with_range(None, ratio), "–");
    }
}
