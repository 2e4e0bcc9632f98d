//! Log formats: human-readable lines (`pretty`) or one flat JSON object per line (`json`).
//!
//! Both formats are written by one small [`tracing_subscriber::Layer`] that collects an event's
//! fields (and the fields of the spans it is in) into a flat [`Record`], then renders it with a
//! pure function ([`format_json`] / [`format_pretty`]) and hands the whole line to a writer
//! thread of its own ([`StdoutWriter`]), so lines never interleave and a slow stdout (a pipe
//! nobody reads, a job flooding its output faster than the terminal shows it) never blocks the
//! async workers that renew the node's leases. Lines beyond the writer's queue are dropped and
//! counted (`log_lines_dropped`), never waited for. [`flush`] waits for the queue at exit.
//!
//! Stable field names (other programs read them): `event`, `job`, `node`, `term`, `fire_time`,
//! `holder`, `outcome`, `exit_code`, `stream`, `line`. Event names include `lease_acquired`,
//! `lease_lost`, `lease_released`, `tick_run`, `sitting_out`, `job_output`, `job_finished`,
//! `job_error`, `node_started`, `node_stopped`, `store_error`.
//!
//! The node id given to [`init`] is added to every line that has no `node` field.
use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write as _};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The filter used when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str =
    "info,hyper=warn,hyper_util=warn,h2=warn,tonic=warn,tower=warn,tokio_cron_scheduler=warn,gcloud_sdk=off";

/// Installs the global subscriber: events go to stdout, one line each, in `format`.
/// The level filter comes from `RUST_LOG` if set, else [`DEFAULT_FILTER`].
/// Calling it again (e.g. from tests) is harmless: the first subscriber stays.
pub fn init(format: LogFormat, node: &str) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => match EnvFilter::try_new(&s) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("warning: ignoring invalid RUST_LOG {s:?}: {e}");
                EnvFilter::new(DEFAULT_FILTER)
            }
        },
        _ => EnvFilter::new(DEFAULT_FILTER),
    };
    let color = format == LogFormat::Pretty
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let layer = FlatLayer {
        format,
        node: node.to_string(),
        color,
        sink: Sink::Stdout(StdoutWriter::start({
            let node = node.to_string();
            move |lost| {
                let mut rec = Record::new(Utc::now(), Level::WARN)
                    .with("event", "log_lines_dropped")
                    .with("dropped", Value::U64(lost));
                rec.message = Some(format!(
                    "{lost} log line(s) dropped: stdout did not keep up"
                ));
                match format {
                    LogFormat::Json => format_json(&rec, &node),
                    LogFormat::Pretty => format_pretty(&rec, &node, &chrono::Local, color),
                }
            }
        })),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
}

/// Formats a time the way log fields and `CRONLEASE_FIRE_TIME` carry it: RFC 3339, UTC, whole
/// seconds unless there is a fraction (`2026-11-22T14:35:00Z`).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// One field value, typed so that JSON keeps numbers as numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl Value {
    fn as_text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::I64(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
        }
    }

    fn push_json(&self, out: &mut String) {
        match self {
            Value::Str(s) => push_json_str(out, s),
            Value::I64(v) => {
                let _ = write!(out, "{v}");
            }
            Value::U64(v) => {
                let _ = write!(out, "{v}");
            }
            Value::F64(v) => out.push_str(&serde_json::Value::from(*v).to_string()),
            Value::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::I64(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

/// One event, its fields flattened (span fields first, the event's own fields override them).
#[derive(Debug, Clone)]
pub struct Record {
    pub ts: DateTime<Utc>,
    pub level: Level,
    pub target: String,
    pub message: Option<String>,
    /// In recording order; names are unique.
    pub fields: Vec<(String, Value)>,
}

impl Record {
    pub fn new(ts: DateTime<Utc>, level: Level) -> Record {
        Record {
            ts,
            level,
            target: String::new(),
            message: None,
            fields: Vec::new(),
        }
    }

    /// Sets a field, replacing an earlier value of the same name in place.
    pub fn set(&mut self, name: &str, value: Value) {
        if name == "message" {
            self.message = Some(value.as_text());
            return;
        }
        match self.fields.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.fields.push((name.to_string(), value)),
        }
    }

    /// Builder-style [`Record::set`], handy in tests.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Record {
        self.set(name, value.into());
        self
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    fn get_text(&self, name: &str) -> Option<String> {
        self.get(name).map(Value::as_text)
    }

    /// The message; for events without one, the output line or the event name.
    fn msg(&self) -> String {
        if let Some(m) = &self.message {
            return m.clone();
        }
        self.get_text("line")
            .or_else(|| self.get_text("event"))
            .unwrap_or_default()
    }
}

/// Keys the JSON format owns; an event field of that name is written as `field_<name>`.
const JSON_RESERVED: [&str; 4] = ["ts", "level", "msg", "target"];
/// Fields written first (in this order), then the rest in recording order.
const LEADING: [&str; 3] = ["event", "job", "node"];

/// One JSON object, no trailing newline: `{"ts":…,"level":"INFO","msg":…,"event":…,…}`.
/// All fields are top level; the node is filled in from `default_node` when missing.
/// `target` is added only for events without an `event` field (library messages).
pub fn format_json(rec: &Record, default_node: &str) -> String {
    let mut out = String::with_capacity(192);
    out.push_str("{\"ts\":");
    push_json_str(
        &mut out,
        &rec.ts.to_rfc3339_opts(SecondsFormat::Millis, true),
    );
    out.push_str(",\"level\":");
    push_json_str(&mut out, rec.level.as_str());
    out.push_str(",\"msg\":");
    push_json_str(&mut out, &rec.msg());
    if rec.get("event").is_none() && !rec.target.is_empty() {
        out.push_str(",\"target\":");
        push_json_str(&mut out, &rec.target);
    }
    let put = |out: &mut String, k: &str, v: &Value| {
        out.push(',');
        if JSON_RESERVED.contains(&k) {
            push_json_str(out, &format!("field_{k}"));
        } else {
            push_json_str(out, k);
        }
        out.push(':');
        v.push_json(out);
    };
    for key in LEADING {
        match rec.get(key) {
            Some(v) => put(&mut out, key, v),
            None if key == "node" => put(&mut out, key, &Value::Str(default_node.to_string())),
            None => {}
        }
    }
    for (k, v) in &rec.fields {
        if !LEADING.contains(&k.as_str()) {
            put(&mut out, k, v);
        }
    }
    out.push('}');
    out
}

/// One human-readable line, no trailing newline.
///
/// `job_output` events print the job's own line, labelled: `[job@node] line`.
/// Other events: `HH:MM:SS.mmm LEVEL [job@node] msg key=value …` with the time in `tz`,
/// `[node]` alone when there is no job, values with spaces quoted.
/// `color` adds ANSI colours to the time and level (only for terminals).
pub fn format_pretty<Tz: TimeZone>(rec: &Record, default_node: &str, tz: &Tz, color: bool) -> String
where
    Tz::Offset: fmt::Display,
{
    let node = rec
        .get_text("node")
        .unwrap_or_else(|| default_node.to_string());
    let label = match rec.get_text("job") {
        Some(job) => format!("[{job}@{node}]"),
        None => format!("[{node}]"),
    };
    let event = rec.get_text("event");
    if event.as_deref() == Some("job_output") {
        let line = rec.get_text("line").unwrap_or_default();
        return format!("{label} {line}");
    }

    let mut out = String::with_capacity(160);
    let time = rec.ts.with_timezone(tz).format("%H:%M:%S%.3f");
    let level = format!("{:<5}", rec.level.as_str());
    if color {
        let _ = write!(
            out,
            "\x1b[2m{time}\x1b[0m {}{level}\x1b[0m ",
            level_color(rec.level)
        );
    } else {
        let _ = write!(out, "{time} {level} ");
    }
    out.push_str(&label);
    let (msg, covered) = match human(rec, tz) {
        Some((m, covered)) => (m, covered),
        None => (
            rec.message
                .clone()
                .unwrap_or_else(|| event.unwrap_or_default()),
            &[][..],
        ),
    };
    if !msg.is_empty() {
        out.push(' ');
        push_escaped_controls(&mut out, &msg);
    }
    for (k, v) in &rec.fields {
        if matches!(k.as_str(), "event" | "job" | "node" | "line") || covered.contains(&k.as_str())
        {
            continue;
        }
        let _ = write!(out, " {k}=");
        match v {
            Value::Str(s) => push_pretty_str(&mut out, s),
            other => out.push_str(&other.as_text()),
        }
    }
    out
}

/// The human sentence of the events an operator reads most, with the fields it states (which
/// the pretty line then leaves out). JSON keeps every field; this is presentation only.
fn human<Tz: TimeZone>(rec: &Record, tz: &Tz) -> Option<(String, &'static [&'static str])>
where
    Tz::Offset: fmt::Display,
{
    let text = |k: &str| rec.get_text(k).unwrap_or_default();
    let term = text("term");
    // Fire times in the same zone as the line's own time, seconds only.
    let fire = rec.get_text("fire_time").map(|f| {
        DateTime::parse_from_rfc3339(&f)
            .map(|t| t.with_timezone(tz).format("%H:%M:%S").to_string())
            .unwrap_or(f)
    });
    let event = rec.get_text("event")?;
    if matches!(event.as_str(), "tick_run" | "sitting_out" | "job_finished") && fire.is_none() {
        return None;
    }
    let fire = fire.unwrap_or_default();
    let sentence = match event.as_str() {
        "tick_run" => {
            let late = rec
                .get_text("lateness_ms")
                .map(|ms| format!(", {ms} ms late"))
                .unwrap_or_default();
            (
                format!("running the {fire} tick (term {term}{late})"),
                &["fire_time", "term", "lateness_ms"][..],
            )
        }
        "sitting_out" => {
            let why = match rec.get_text("reason").as_deref() {
                Some("already_run") => "it already ran".to_string(),
                Some("fenced") => format!("the lease is no longer ours (term {term})"),
                _ => {
                    let holder = rec.get_text("holder").filter(|h| !h.is_empty());
                    match holder {
                        Some(h) => format!("{h} leads (term {term})"),
                        None => "nobody leads yet".to_string(),
                    }
                }
            };
            (
                format!("sitting out the {fire} tick: {why}"),
                &["fire_time", "term", "holder", "reason"][..],
            )
        }
        "job_finished" => {
            let outcome = text("outcome");
            let code = rec
                .get_text("exit_code")
                .filter(|c| outcome != "ok" || c != "0")
                .map(|c| format!(" (exit {c})"))
                .unwrap_or_default();
            let secs = rec
                .get_text("duration_ms")
                .and_then(|d| d.parse::<f64>().ok())
                .map(|ms| {
                    if ms < 1000.0 {
                        format!(" in {ms:.0} ms")
                    } else {
                        format!(" in {:.1}s", ms / 1000.0)
                    }
                })
                .unwrap_or_default();
            (
                format!("the {fire} tick finished: {outcome}{code}{secs}"),
                &["fire_time", "term", "outcome", "exit_code", "duration_ms"][..],
            )
        }
        "lease_acquired" => {
            let from = rec
                .get_text("previous")
                .map(|p| format!(", from {p}"))
                .unwrap_or_default();
            (
                format!("leading now (term {term}{from})"),
                &["term", "previous"][..],
            )
        }
        "lease_released" => (
            format!("lease released (term {term}, {})", text("reason")),
            &["term", "reason"][..],
        ),
        "lease_lost" => {
            let why = rec.message.clone().unwrap_or_else(|| "lease lost".into());
            (format!("{why} (term {term})"), &["term"][..])
        }
        _ => return None,
    };
    Some(sentence)
}

fn level_color(level: Level) -> &'static str {
    match level {
        Level::ERROR => "\x1b[31m",
        Level::WARN => "\x1b[33m",
        Level::INFO => "\x1b[32m",
        Level::DEBUG => "\x1b[34m",
        Level::TRACE => "\x1b[35m",
    }
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json's string escaping; writing a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// A pretty value: bare if it is a plain token, else quoted with Rust escapes.
fn push_pretty_str(out: &mut String, s: &str) {
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=');
    if plain {
        out.push_str(s);
    } else {
        let _ = write!(out, "{s:?}");
    }
}

/// Keeps a message on one line: control characters other than tab are escaped.
fn push_escaped_controls(out: &mut String, s: &str) {
    for c in s.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

/// If `s` is the `Debug` rendering of a string (`"a \"b\""`), returns the string itself.
fn strip_debug_quotes(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return None, // an unescaped quote: not one Debug string
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                '0' => out.push('\0'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                'u' => {
                    if chars.next()? != '{' {
                        return None;
                    }
                    let mut hex = String::new();
                    loop {
                        match chars.next()? {
                            '}' => break,
                            h => hex.push(h),
                        }
                    }
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// Collects tracing field values into a [`Record`].
struct Collect<'a>(&'a mut Record);

impl Collect<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        // Bridged `log` records carry their metadata as fields; the layer does not show them.
        if name.starts_with("log.") {
            return;
        }
        self.0.set(name, value);
    }
}

impl Visit for Collect<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::U64(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = match i64::try_from(value) {
            Ok(v) => Value::I64(v),
            Err(_) => Value::Str(value.to_string()),
        };
        self.put(field, v);
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = match u64::try_from(value) {
            Ok(v) => Value::U64(v),
            Err(_) => Value::Str(value.to_string()),
        };
        self.put(field, v);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(value.to_string()));
    }
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.put(
            field,
            Value::Str(String::from_utf8_lossy(value).into_owned()),
        );
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::Str(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        let text = strip_debug_quotes(&text).unwrap_or(text);
        self.put(field, Value::Str(text));
    }
}

/// Span fields, kept in the span's extensions.
struct SpanFields(Record);

/// Where formatted lines go.
/// How many lines may wait for stdout before new ones are dropped (at most a few MB).
const QUEUE_LINES: usize = 16_384;

enum Message {
    Line(String),
    Flush(std::sync::mpsc::Sender<()>),
}

/// The thread that owns stdout: writes queued lines in batches, flushing when the queue is
/// empty, and says how many were dropped once it has caught up.
struct StdoutWriter {
    queue: std::sync::mpsc::SyncSender<Message>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

static WRITER: std::sync::OnceLock<std::sync::mpsc::SyncSender<Message>> =
    std::sync::OnceLock::new();

impl StdoutWriter {
    /// `dropped_notice` renders the line that says how many were dropped, in the log format.
    fn start(dropped_notice: impl Fn(u64) -> String + Send + 'static) -> StdoutWriter {
        let writer = StdoutWriter::start_to(std::io::stdout(), QUEUE_LINES, dropped_notice);
        let _ = WRITER.set(writer.queue.clone());
        writer
    }

    fn start_to(
        target: impl std::io::Write + Send + 'static,
        capacity: usize,
        dropped_notice: impl Fn(u64) -> String + Send + 'static,
    ) -> StdoutWriter {
        let (queue, lines) = std::sync::mpsc::sync_channel::<Message>(capacity);
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, target);
                while let Ok(first) = lines.recv() {
                    let mut next = Some(first);
                    while let Some(message) = next.take() {
                        match message {
                            // Errors (a closed stdout) are ignored: logging must not take the
                            // node down.
                            Message::Line(line) => {
                                let _ = out.write_all(line.as_bytes());
                            }
                            Message::Flush(done) => {
                                let _ = out.flush();
                                let _ = done.send(());
                            }
                        }
                        next = lines.try_recv().ok();
                    }
                    let lost = counter.swap(0, std::sync::atomic::Ordering::Relaxed);
                    if lost > 0 {
                        let _ = writeln!(out, "{}", dropped_notice(lost));
                    }
                    let _ = out.flush();
                }
            });
        if let Err(e) = spawned {
            eprintln!("warning: cannot start the log writer thread: {e}");
        }
        StdoutWriter { queue, dropped }
    }

    fn send(&self, line: String) {
        if self.queue.try_send(Message::Line(line)).is_err() {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Wait (at most `within`) until every line logged so far is written to stdout: called once,
/// at the end of `main`, so that the last lines (`node_stopped`) are not lost at exit.
pub fn flush(within: std::time::Duration) {
    let Some(queue) = WRITER.get() else { return };
    let (done, written) = std::sync::mpsc::channel();
    if queue.send(Message::Flush(done)).is_ok() {
        let _ = written.recv_timeout(within);
    }
}

enum Sink {
    Stdout(StdoutWriter),
    #[cfg(test)]
    Memory(std::sync::Arc<std::sync::Mutex<Vec<String>>>),
}

/// The layer behind both formats.
struct FlatLayer {
    format: LogFormat,
    node: String,
    color: bool,
    sink: Sink,
}

impl<S> Layer<S> for FlatLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let mut rec = Record::new(Utc::now(), *attrs.metadata().level());
        attrs.record(&mut Collect(&mut rec));
        span.extensions_mut().replace(SpanFields(rec));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(SpanFields(rec)) = ext.get_mut::<SpanFields>() {
            values.record(&mut Collect(rec));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut rec = Record::new(Utc::now(), *meta.level());
        rec.target = meta.target().to_string();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &fields.fields {
                        rec.set(k, v.clone());
                    }
                }
            }
        }
        event.record(&mut Collect(&mut rec));
        let mut line = match self.format {
            LogFormat::Json => format_json(&rec, &self.node),
            LogFormat::Pretty => format_pretty(&rec, &self.node, &chrono::Local, self.color),
        };
        match &self.sink {
            Sink::Stdout(writer) => {
                line.push('\n');
                writer.send(line);
            }
            #[cfg(test)]
            Sink::Memory(lines) => lines.lock().unwrap().push(line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A stdout that nobody reads until the test says so.
    struct Stuck {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl std::io::Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cvar) = &*self.open;
            let _open = cvar
                .wait_while(lock.lock().unwrap(), |open| !*open)
                .unwrap();
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_stdout_never_blocks_the_logger_and_drops_are_said() {
        let open = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let written = Arc::new(Mutex::new(Vec::new()));
        let stuck = Stuck {
            open: open.clone(),
            written: written.clone(),
        };
        let writer = StdoutWriter::start_to(stuck, 8, |n| format!("dropped {n}\n"));
        let started = std::time::Instant::now();
        for i in 0..1000 {
            writer.send(format!("line {i}\n"));
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "sending to a stuck stdout blocked"
        );
        *open.0.lock().unwrap() = true;
        open.1.notify_all();
        let (done, flushed) = std::sync::mpsc::channel();
        writer.queue.send(Message::Flush(done)).unwrap();
        flushed
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        // A notice follows each batch whose lines were dropped while it was written (one or
        // more batches); wait until every line is either written or counted in one.
        let counts = |text: &str| {
            let kept = text.lines().filter(|l| l.starts_with("line ")).count();
            let dropped: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix("dropped ")?.parse().ok())
                .collect();
            (kept, dropped)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let text = loop {
            let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
            let (kept, dropped) = counts(&text);
            if kept + dropped.iter().sum::<usize>() >= 1000 || std::time::Instant::now() > deadline
            {
                break text;
            }
            std::thread::yield_now();
        };
        let (kept, dropped) = counts(&text);
        assert!(
            !dropped.is_empty(),
            "a line says how many were dropped: {text}"
        );
        assert_eq!(kept + dropped.iter().sum::<usize>(), 1000, "{text}");
        assert!(text.starts_with("line 0\n"), "lines keep their order");
    }

    fn ts() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 14, 35, 1).unwrap() + chrono::Duration::milliseconds(123)
    }

    fn tick_record() -> Record {
        let mut r = Record::new(ts(), Level::INFO)
            .with("event", "tick_run")
            .with("job", "a")
            .with("term", 3i64)
            .with("fire_time", "2026-11-22T14:35:00Z")
            .with("holder", "")
            .with("ok", true);
        r.message = Some("running tick".into());
        r
    }

    #[test]
    fn json_is_flat_and_typed() {
        let line = format_json(&tick_record(), "n1");
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(o["ts"], "2026-11-22T14:35:01.123Z");
        assert_eq!(o["level"], "INFO");
        assert_eq!(o["msg"], "running tick");
        assert_eq!(o["event"], "tick_run");
        assert_eq!(o["job"], "a");
        assert_eq!(o["node"], "n1");
        assert!(o["term"].is_i64());
        assert_eq!(o["term"], 3);
        assert_eq!(o["fire_time"], "2026-11-22T14:35:00Z");
        assert_eq!(o["holder"], "");
        assert_eq!(o["ok"], true);
        assert!(o.values().all(|v| !v.is_object() && !v.is_array()));
        assert!(line.starts_with(
            r#"{"ts":"2026-11-22T14:35:01.123Z","level":"INFO","msg":"running tick","event":"tick_run","job":"a","node":"n1","term":3"#
        ));
    }

    #[test]
    fn json_keeps_given_node_and_escapes() {
        let mut r = Record::new(ts(), Level::WARN)
            .with("node", "n2")
            .with("line", "say \"hi\"\n\u{1}");
        r.set("exit_code", Value::I64(-1));
        r.set("big", Value::U64(u64::MAX));
        r.set("ratio", Value::F64(0.5));
        r.set("ts", Value::Str("mine".into()));
        let v: serde_json::Value = serde_json::from_str(&format_json(&r, "n1")).unwrap();
        assert_eq!(v["node"], "n2");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["line"], "say \"hi\"\n\u{1}");
        assert_eq!(v["msg"], "say \"hi\"\n\u{1}");
        assert_eq!(v["exit_code"], -1);
        assert_eq!(v["big"], u64::MAX);
        assert_eq!(v["ratio"], 0.5);
        assert_eq!(v["field_ts"], "mine");
        assert_eq!(v["ts"], "2026-11-22T14:35:01.123Z");
    }

    #[test]
    fn pretty_job_output_is_the_labelled_line() {
        let r = Record::new(ts(), Level::INFO)
            .with("event", "job_output")
            .with("job", "go_preacher")
            .with("stream", "say")
            .with("line", "Go is the best modern programming language");
        assert_eq!(
            format_pretty(&r, "n1", &Utc, false),
            "[go_preacher@n1] Go is the best modern programming language"
        );
        assert_eq!(
            format_pretty(&r, "n1", &Utc, true),
            "[go_preacher@n1] Go is the best modern programming language"
        );
    }

    #[test]
    fn pretty_other_events() {
        let line = format_pretty(&tick_record(), "n1", &Utc, false);
        assert_eq!(
            line,
            r#"14:35:01.123 INFO  [a@n1] running the 14:35:00 tick (term 3) holder="" ok=true"#
        );
        let out = Record::new(ts(), Level::INFO)
            .with("event", "sitting_out")
            .with("job", "a")
            .with("node", "n2")
            .with("fire_time", "2026-11-22T14:35:00Z")
            .with("holder", "n1")
            .with("term", 4i64);
        assert_eq!(
            format_pretty(&out, "n1", &Utc, false),
            "14:35:01.123 INFO  [a@n2] sitting out the 14:35:00 tick: n1 leads (term 4)"
        );
        let done = Record::new(ts(), Level::INFO)
            .with("event", "job_finished")
            .with("job", "a")
            .with("fire_time", "2026-11-22T14:35:00Z")
            .with("term", 4i64)
            .with("outcome", "failed")
            .with("exit_code", 3i64)
            .with("duration_ms", 1250i64);
        assert_eq!(
            format_pretty(&done, "n1", &Utc, false),
            "14:35:01.123 INFO  [a@n1] the 14:35:00 tick finished: failed (exit 3) in 1.2s"
        );
        let mut r = Record::new(ts(), Level::ERROR)
            .with("event", "store_error")
            .with("node", "n3")
            .with("error", "connection refused: \"x\"");
        r.message = Some("cannot renew\nsecond line".into());
        assert_eq!(
            format_pretty(&r, "n1", &Utc, false),
            r#"14:35:01.123 ERROR [n3] cannot renew\nsecond line error="connection refused: \"x\"""#
        );
        // No message: the event name stands in.
        let r = Record::new(ts(), Level::WARN)
            .with("event", "lease_gone")
            .with("job", "b");
        assert_eq!(
            format_pretty(&r, "n1", &Utc, false),
            "14:35:01.123 WARN  [b@n1] lease_gone"
        );
        let tz = chrono::FixedOffset::east_opt(3600).unwrap();
        assert!(format_pretty(&r, "n1", &tz, false).starts_with("15:35:01.123 "));
        let colored = format_pretty(&r, "n1", &Utc, true);
        assert!(colored.contains("\x1b[33mWARN \x1b[0m [b@n1] lease_gone"));
    }

    #[test]
    fn debug_quotes_are_stripped() {
        assert_eq!(
            strip_debug_quotes(r#""a \"b\"\n""#).as_deref(),
            Some("a \"b\"\n")
        );
        assert_eq!(
            strip_debug_quotes(r#""\u{1b}x""#).as_deref(),
            Some("\u{1b}x")
        );
        assert_eq!(strip_debug_quotes("plain"), None);
        assert_eq!(strip_debug_quotes(r#""a" "b""#), None);
    }

    /// The real layer against real `tracing` macros and spans.
    #[test]
    fn layer_writes_flat_fields_from_events_and_spans() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let layer = |format| FlatLayer {
            format,
            node: "n1".into(),
            color: false,
            sink: Sink::Memory(lines.clone()),
        };
        let sub = tracing_subscriber::registry()
            .with(layer(LogFormat::Json))
            .with(layer(LogFormat::Pretty));
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("tick", job = "a", term = 1i64);
            let _g = span.enter();
            let name = String::from("quoted name");
            tracing::info!(
                event = "tick_run",
                term = 7i64,
                exit_code = 0,
                ok = true,
                who = ?name,
                shown = %name,
                "ran {}",
                "it"
            );
            tracing::info!(event = "job_output", stream = "stdout", line = "hello");
        });
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 4, "{lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["msg"], "ran it");
        assert_eq!(v["event"], "tick_run");
        assert_eq!(v["job"], "a");
        assert_eq!(v["node"], "n1");
        assert_eq!(v["term"], 7);
        assert_eq!(v["exit_code"], 0);
        assert_eq!(v["ok"], true);
        assert_eq!(v["who"], "quoted name");
        assert_eq!(v["shown"], "quoted name");
        assert!(v.get("target").is_none());
        assert!(
            lines[1].ends_with(
                r#" INFO  [a@n1] ran it term=7 exit_code=0 ok=true who="quoted name" shown="quoted name""#
            ),
            "{}",
            lines[1]
        );
        let v: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(v["line"], "hello");
        assert_eq!(v["stream"], "stdout");
        assert_eq!(lines[3], "[a@n1] hello");
    }

    #[test]
    fn rfc3339_is_utc_seconds() {
        let t = Utc.with_ymd_and_hms(2026, 11, 22, 14, 35, 0).unwrap();
        assert_eq!(rfc3339(t), "2026-11-22T14:35:00Z");
    }
}
