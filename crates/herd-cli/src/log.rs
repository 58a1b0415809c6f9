//! `herd run`'s log lines: the facade's lifecycle events (feature `tracing`, target
//! `herd::primary`) and herd's own, one line each on stderr, `herd: ` and the event's
//! message, which names the worker, its pid, the place and the durations.
//!
//! `HERD_LOG` filters them as `RUST_LOG` does (`tracing-subscriber`'s `EnvFilter`: `warn`,
//! `herd::primary=debug`, ...), default `info`; `--quiet` is `warn`. `RUST_LOG` is left to
//! the workers, which inherit the environment.
//!
//! A line that cannot be written (`EPIPE`: the reader of stderr is gone) is dropped: herd
//! and its workers run on (SIGPIPE stays ignored in herd, Rust's default; workers start with
//! it at its default).
//!
//! Until every first worker is ready, the facade's lines are held: a failed start prints one
//! line, the failure (as `herd run` always has), and a good one prints them when it is done.

use std::io::Write;
use std::sync::Mutex;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// The environment variable that filters the lines.
pub const FILTER_VAR: &str = "HERD_LOG";

/// What becomes of the facade's lines now.
enum Mode {
    /// Held, during the start.
    Holding(Vec<u8>),
    /// Written at once.
    Passing,
    /// Dropped, every line, after a failed start: its one line says it.
    Dropping,
}

static MODE: Mutex<Mode> = Mutex::new(Mode::Passing);

fn mode() -> std::sync::MutexGuard<'static, Mode> {
    MODE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Installs the subscriber for the process: `quiet` keeps warnings and errors only (unless
/// `HERD_LOG` says otherwise).
pub fn init(quiet: bool) -> Result<(), String> {
    let default = if quiet { "warn" } else { "info" };
    let filter = match std::env::var(FILTER_VAR) {
        Ok(text) if !text.is_empty() => tracing_subscriber::EnvFilter::try_new(&text)
            .map_err(|e| format!("{FILTER_VAR}={text:?}: {e}"))?,
        _ => tracing_subscriber::EnvFilter::new(default),
    };
    *mode() = Mode::Holding(Vec::new());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .event_format(Line)
        .with_writer(Stderr)
        .try_init()
        .map_err(|e| format!("log: {e}"))
}

/// Writes the lines held during the start, and every later one at once.
pub fn release() {
    let mut mode = mode();
    if let Mode::Holding(lines) = std::mem::replace(&mut *mode, Mode::Passing) {
        let _ = std::io::stderr().lock().write_all(&lines);
    }
}

/// Writes one line of herd's own on stderr, outside the log (`eprintln!` without its panic
/// on a broken pipe: the line is lost, herd runs on).
pub fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Throws away the lines held during a start that failed, and every later one: the failure's
/// one line says it.
pub fn discard() {
    *mode() = Mode::Dropping;
}

/// `herd: MESSAGE`.
struct Line;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut message = Message(String::new());
        event.record(&mut message);
        writeln!(writer, "herd: {}", message.0)
    }
}

/// The `message` field of an event.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// Standard error, or the held lines for the facade's events (and herd's own start-up
/// warnings, target `herd::run`) during the start.
struct Stderr;

/// Where one line goes.
enum Out {
    /// One of herd's own lines: written, unless a failed start drops everything.
    Own,
    /// The facade's: held during the start.
    Facade,
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match (&mut *mode(), self) {
            (Mode::Dropping, _) => return Ok(buf.len()),
            (Mode::Holding(held), Out::Facade) => {
                held.extend_from_slice(buf);
                return Ok(buf.len());
            }
            _ => {}
        }
        // A line that cannot be written (stderr's reader gone: a logger restarting) is lost,
        // never the service: an error here would be reported by tracing-subscriber with
        // `eprintln!`, which panics on a broken pipe, and took every worker down with herd.
        let _ = std::io::stderr().lock().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Out;

    fn make_writer(&'a self) -> Out {
        Out::Own
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Out {
        if meta.target().starts_with("herd::") { Out::Facade } else { Out::Own }
    }
}
