//! Structured logs: JSON lines on stderr, and the same records as text lines on
//! `/dev/kmsg` (when PID 1 or asked) so that `dmesg` in the guest shows them.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use slog::{o, Drain, Key, Level, Logger, OwnedKVList, Record, Serializer, KV};

/// Name that prefixes kmsg lines and fills the `name` field of JSON lines.
pub const LOG_NAME: &str = "pith-agent";

/// Records the log thread may have queued; more are dropped, and counted in
/// a "dropped messages" record (slog-async's overflow strategy).
const LOG_QUEUE: usize = 256;

/// Keeps the async log thread alive; dropping it flushes what is queued.
pub struct LogGuard(#[allow(dead_code)] Option<slog_async::AsyncGuard>);

/// Builds the agent's root logger.
///
/// `kmsg` names the kernel log device to copy records to (normally `/dev/kmsg`).
/// When it cannot be opened the reason is returned beside the logger, to be logged.
pub fn init(level: Level, kmsg: Option<&Path>) -> (Logger, LogGuard, Option<String>) {
    let json = slog_json::Json::new(RecordWriter::default())
        .add_default_keys()
        .add_key_value(o!("module" => slog::FnValue(|r: &Record| r.module())))
        .build()
        .fuse();
    let mut kmsg_error = None;
    let kmsg_drain = kmsg.and_then(|p| match KmsgDrain::open(p) {
        Ok(d) => Some(d),
        Err(e) => {
            kmsg_error = Some(format!("open {}: {e}; logging to stderr only", p.display()));
            None
        }
    });
    let both = slog::Duplicate::new(json, OptionalDrain(kmsg_drain)).ignore_res();
    let (logger, guard) = queued(
        both,
        level,
        o!("name" => LOG_NAME, "pid" => std::process::id(), "version" => crate::AGENT_VERSION),
    );
    (logger, guard, kmsg_error)
}

/// A logger whose records `inner` writes on the log thread.
fn queued<D>(
    inner: D,
    level: Level,
    values: slog::OwnedKV<impl slog::SendSyncRefUnwindSafeKV + 'static>,
) -> (Logger, LogGuard)
where
    D: Drain<Ok = (), Err = slog::Never> + Send + 'static,
{
    // The queue's slots are allocated and written when it is made, so its
    // length is resident memory from the start (~120 bytes a slot): 256
    // records of burst, at the agent's info level a few hundred calls' worth.
    let (drain, guard) = slog_async::Async::new(Barriers(inner).fuse())
        .chan_size(LOG_QUEUE)
        .build_with_guard();
    // Filtered before the queue: a record below the level (every RPC's debug
    // line, normally) costs a comparison, not a copy into the log thread.
    let filtered = slog::LevelFilter::new(drain.fuse(), level).fuse();
    (Logger::root(filtered, values), LogGuard(Some(guard)))
}

/// Tag of the record [`flush`] queues; the log thread writes nothing for it.
const FLUSH_TAG: &str = "pith-log-flush";

/// Flush records queued and reached by the log thread, and its signal.
static BARRIERS: (Mutex<Counts>, Condvar) = (Mutex::new(Counts { sent: 0, reached: 0 }), Condvar::new());

struct Counts {
    sent: u64,
    reached: u64,
}

/// Waits (up to `bound`) until every record logged before this call is
/// written. For the moments the process is about to be replaced or to end
/// without unwinding (an upgrade's `execve`, `exit`): the log thread's queue
/// dies with the process image, and with it the lines that say why.
pub fn flush(log: &Logger, bound: Duration) {
    let (counts, signal) = &BARRIERS;
    let Ok(mut c) = counts.lock() else { return };
    c.sent += 1;
    let target = c.sent;
    // Critical passes every level filter; the queue keeps records in order,
    // so the log thread reaches this one after all logged before it. The
    // queue drops rather than blocks when full, so holding the lock is safe.
    slog::crit!(log, #FLUSH_TAG, "");
    let deadline = std::time::Instant::now() + bound;
    while c.reached < target {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        match signal.wait_timeout(c, left) {
            Ok((next, _)) => c = next,
            Err(_) => return,
        }
    }
}

/// The log thread's side of [`flush`]: counts flush records, passes the rest.
struct Barriers<D>(D);

impl<D: Drain<Ok = (), Err = slog::Never>> Drain for Barriers<D> {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        if record.tag() != FLUSH_TAG {
            return self.0.log(record, values);
        }
        let (counts, signal) = &BARRIERS;
        if let Ok(mut c) = counts.lock() {
            c.reached += 1;
            signal.notify_all();
        }
        Ok(())
    }
}

/// Standard error, one `write` per record. slog-json writes a record token by
/// token (some 70 writes a line on unbuffered stderr); the keeper and the
/// agent, and across an upgrade the old and the new binary, share the
/// destination (a file, a pipe, the guest's console), so their lines came
/// out cut into each other and were lost to a JSON reader.
#[derive(Default)]
struct RecordWriter {
    buf: Vec<u8>,
}

impl std::io::Write for RecordWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        // A record ends with its newline; JSON escapes any inside it.
        if self.buf.ends_with(b"\n") {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = std::io::stderr().lock().write_all(&self.buf);
        self.buf.clear();
        r
    }
}

/// A drain that may be absent.
struct OptionalDrain<D>(Option<D>);

impl<D: Drain<Ok = (), Err = slog::Never>> Drain for OptionalDrain<D> {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        if let Some(d) = &self.0 {
            d.log(record, values)?;
        }
        Ok(())
    }
}

/// Writes each record as one `<prio>pith-agent: LEVEL msg k=v ...` line to the
/// kernel log. One `write` per record: the kernel takes a write as one message.
pub struct KmsgDrain {
    file: Mutex<File>,
}

/// Longest line the kernel keeps whole (its limit is just under 1 KiB).
const KMSG_MAX: usize = 976;

impl KmsgDrain {
    /// Opens the kernel log device (or any file, in tests) for appending.
    pub fn open(path: &Path) -> std::io::Result<KmsgDrain> {
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(KmsgDrain { file: Mutex::new(file) })
    }
}

/// Renders a record as the kmsg line (without the trailing write).
pub fn kmsg_line(record: &Record, values: &OwnedKVList) -> String {
    let prio = match record.level() {
        Level::Critical => 2,
        Level::Error => 3,
        Level::Warning => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    };
    let mut line = format!("<{prio}>{LOG_NAME}: {} {}", record.level().as_short_str(), record.msg());
    let mut s = TextKv(&mut line);
    let _ = record.kv().serialize(record, &mut s);
    let _ = values.serialize(record, &mut s);
    if line.len() > KMSG_MAX {
        let mut cut = KMSG_MAX;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line.push('\n');
    line
}

impl Drain for KmsgDrain {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let line = kmsg_line(record, values);
        if let Ok(mut f) = self.file.lock() {
            // A full or rate-limited kernel log must not stop the agent.
            let _ = f.write_all(line.as_bytes());
        }
        Ok(())
    }
}

struct TextKv<'a>(&'a mut String);

impl Serializer for TextKv<'_> {
    fn emit_arguments(&mut self, key: Key, val: &std::fmt::Arguments) -> slog::Result {
        if matches!(key, "name" | "pid" | "version") {
            return Ok(()); // the kmsg prefix already says who logs
        }
        let v = val.to_string();
        if v.contains(' ') || v.is_empty() {
            let _ = write!(self.0, " {key}={v:?}");
        } else {
            let _ = write!(self.0, " {key}={v}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slog::{info, warn};

    /// Keeps the messages it is given, slowly, as a busy console would.
    #[derive(Clone, Default)]
    struct Slow(std::sync::Arc<Mutex<Vec<String>>>);

    impl Drain for Slow {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, record: &Record, _: &OwnedKVList) -> Result<(), slog::Never> {
            std::thread::sleep(Duration::from_millis(30));
            self.0.lock().unwrap().push(record.msg().to_string());
            Ok(())
        }
    }

    #[test]
    fn flush_returns_once_earlier_records_are_written() {
        let kept = Slow::default();
        let (log, _guard) = queued(kept.clone(), Level::Info, o!());
        for m in ["pausing", "handing over", "last words"] {
            info!(log, "{m}");
        }
        slog::debug!(log, "below the level");
        flush(&log, Duration::from_secs(30));
        // Nothing of the flush's own record is written.
        assert_eq!(*kept.0.lock().unwrap(), ["pausing", "handing over", "last words"]);
        info!(log, "after");
        flush(&log, Duration::from_secs(30));
        assert_eq!(kept.0.lock().unwrap().last().map(String::as_str), Some("after"));
    }

    #[test]
    fn kmsg_lines_carry_priority_message_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg");
        std::fs::write(&path, "").unwrap();
        let drain = KmsgDrain::open(&path).unwrap();
        let log = Logger::root(drain.fuse(), o!("name" => LOG_NAME, "subsystem" => "server"));
        info!(log, "listening"; "address" => "unix:///tmp/a b.sock");
        warn!(log, "bad frame"; "reason" => "oversized");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            "<6>pith-agent: INFO listening address=\"unix:///tmp/a b.sock\" subsystem=server"
        );
        assert_eq!(
            lines[1],
            "<4>pith-agent: WARN bad frame reason=oversized subsystem=server"
        );
    }

    #[test]
    fn long_records_are_cut_to_one_kernel_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg");
        std::fs::write(&path, "").unwrap();
        let log = Logger::root(KmsgDrain::open(&path).unwrap().fuse(), o!());
        info!(log, "{}", "x".repeat(5000));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() <= KMSG_MAX + 4, "{}", text.len());
        assert!(text.ends_with("...\n"));
    }
}
