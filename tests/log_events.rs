//! The facade's lifecycle log lines (feature `tracing`), as an application's subscriber gets
//! them: a collecting layer in this test process, whose primary runs `cluster-worker`
//! fixtures. A rolling restart says when it begins, each worker it replaces and its end; a
//! respawn says which worker died, how, and the backoff; each with its structured fields.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd::{Event, Signal};
use herd_tests::cluster::{fixture_settings, respawning, serving};
use herd_tests::may_fork;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

const WORKER: &str = env!("CARGO_BIN_EXE_cluster-worker");

/// One event: its level, target, and every field (the message under `message`) as text.
#[derive(Debug, Clone)]
struct Record {
    level: tracing::Level,
    target: String,
    fields: BTreeMap<String, String>,
}

impl Record {
    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }

    fn seconds(&self, name: &str) -> f64 {
        self.field(name).parse().unwrap_or_else(|_| panic!("{name} in {self:?}"))
    }
}

/// A layer that keeps every event.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Record>>>);

impl Collect {
    fn records(&self) -> Vec<Record> {
        self.0.lock().unwrap().clone()
    }

    /// The events whose message starts with `start`.
    fn starting(&self, start: &str) -> Vec<Record> {
        self.records().into_iter().filter(|r| r.field("message").starts_with(start)).collect()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Collect {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let meta = event.metadata();
        self.0.lock().unwrap().push(Record {
            level: *meta.level(),
            target: meta.target().to_owned(),
            fields,
        });
    }
}

#[test]
fn a_subscriber_gets_the_restart_and_the_respawn_with_their_fields() {
    let _forks = may_fork();
    let collect = Collect::default();
    let subscriber = tracing_subscriber::registry().with(collect.clone());
    // The primary's thread is this one: its events go to this subscriber.
    tracing::subscriber::with_default(subscriber, || {
        let ms = Duration::from_millis;
        let settings = respawning(fixture_settings(WORKER, "rr"), ms(50), ms(50), 10);
        let (mut c, old, _) = serving(settings, 2);
        let old_pids: Vec<u32> = old.iter().map(|&id| c.primary.worker(id).unwrap().pid).collect();

        c.primary.restart_all();
        let end = c.wait_for("the restart ends", |e| {
            matches!(e, Event::Restarted | Event::RestartAborted { .. })
        });
        assert!(matches!(end, Event::Restarted), "{end:?}; seen {:?}", c.seen);
        let begins = collect.starting("rolling restart of");
        assert_eq!(begins.len(), 1, "{begins:?}");
        assert_eq!((begins[0].field("workers"), begins[0].level), ("2", tracing::Level::INFO));
        assert_eq!(begins[0].target, "herd::primary");
        let replaced: Vec<Record> = collect
            .records()
            .into_iter()
            .filter(|r| r.fields.contains_key("ready_seconds"))
            .collect();
        assert_eq!(replaced.len(), 2, "one line per replaced worker: {replaced:?}");
        for (record, (&old_id, place)) in replaced.iter().zip(old.iter().zip(0..)) {
            let new: herd::WorkerId = record.field("worker").parse().unwrap();
            let new_pid = c.primary.worker(new).map(|w| w.pid).expect("the replacement runs");
            assert_eq!(record.field("old"), old_id.to_string(), "{record:?}");
            assert_eq!(record.field("place"), place.to_string(), "{record:?}");
            assert_eq!(record.field("pid"), new_pid.to_string(), "{record:?}");
            assert!(!old_pids.contains(&new_pid), "{record:?}");
            assert!(record.seconds("ready_seconds") > 0.0, "{record:?}");
        }
        let ends = collect.starting("restarted:");
        assert_eq!(ends.len(), 1, "{:?}", collect.records());
        assert_eq!(ends[0].field("replaced"), "2");
        assert!(ends[0].seconds("seconds") >= replaced[0].seconds("ready_seconds"), "{ends:?}");

        // A crash: the respawn line names the worker, its pid, place, how it died, the backoff.
        let victim = c.primary.workers().find(|w| w.place == Some(1)).expect("place 1");
        c.primary.kill(victim.id, Signal::Kill).unwrap();
        let event = c.wait_for("the respawn", |e| matches!(e, Event::Respawning { .. }));
        let Event::Respawning { worker, place, delay } = event else { unreachable!() };
        assert_eq!((worker, place), (victim.id, 1));
        let respawns = collect.starting("respawning worker");
        assert_eq!(respawns.len(), 1, "{:?}", collect.records());
        let r = &respawns[0];
        assert_eq!(r.level, tracing::Level::WARN, "{r:?}");
        assert_eq!(r.field("worker"), victim.id.to_string(), "{r:?}");
        assert_eq!(r.field("pid"), victim.pid.to_string(), "{r:?}");
        assert_eq!(r.field("place"), "1", "{r:?}");
        assert!(r.field("status").contains("SIGKILL"), "{r:?}");
        assert_eq!(r.seconds("backoff_seconds"), delay.as_secs_f64(), "{r:?}");
        assert!(r.seconds("uptime_seconds") > 0.0, "{r:?}");
        let exits = collect.starting(&format!("worker {} (pid {}) exited", victim.id, victim.pid));
        assert_eq!(exits.len(), 1, "{:?}", collect.records());
    });
}
