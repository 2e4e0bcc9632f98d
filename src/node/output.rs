//! What a run printed, kept with its record: the tail of its output lines (stdout and stderr
//! interleaved in the order the node read them, as the labelled `job_output` lines), at most
//! the job's `output_limit` bytes, and how many bytes before the tail were dropped.
//!
//! The runner appends every line it logs ([`OutputTail::push`]); the tick writes the tail with
//! the run's outcome, and while a long run goes, at most once per `output_refresh` when it
//! changed ([`OutputTail::changed_since`]), so a crash does not lose all of it.
//!
//! Live readers (`GET /runs/{job}/{fire_time}/output`, `cronlease logs --follow`) take
//! [`OutputTail::subscribe`]: the kept tail and a stream of the lines pushed after it, taken
//! under the tail's lock, so that no line falls between the two or shows in both. The stream
//! ends when the run does ([`OutputTail::close`], called by [`LiveGuard`]'s drop). The runs
//! going on a node are found by job and fire time in its [`LiveOutputs`].
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

/// How many lines a live reader may fall behind before it misses some (it is told how many:
/// [`lag_marker`]). Bounded so that a stuck reader cannot make a chatty job's node grow.
pub const LIVE_LINES: usize = 1024;

/// A run's output tail.
pub struct OutputTail {
    limit: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The kept text: at most `2 * limit` bytes between compactions, `limit` after.
    text: String,
    /// Bytes dropped from the front so far.
    cut: u64,
    /// Bumped by every push.
    version: u64,
    /// Where pushed lines go to live readers.
    live: Live,
}

/// The live stream of a tail. The channel is made by the first subscriber only: most runs are
/// never followed, and a channel of [`LIVE_LINES`] slots per run would be waste.
#[derive(Default)]
enum Live {
    /// Nobody subscribed yet.
    #[default]
    Idle,
    Open(broadcast::Sender<Arc<str>>),
    /// The run ended: no more lines; a late subscriber gets an ended stream.
    Closed,
}

/// What [`OutputTail::subscribe`] returns: the tail as it is, and every line pushed after.
pub struct Subscription {
    /// The kept tail (at most `limit` bytes).
    pub text: String,
    /// The bytes dropped before `text`.
    pub cut: u64,
    /// The lines pushed after the snapshot, without their newline; `Closed` once the run has
    /// ended and every line before that was read; `Lagged(n)` if this reader fell `n` behind.
    pub lines: broadcast::Receiver<Arc<str>>,
}

impl OutputTail {
    /// A tail of at most `limit` bytes (0 keeps nothing).
    pub fn new(limit: usize) -> OutputTail {
        OutputTail {
            limit,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Append one output line (a newline is added), and hand it to live readers, if any
    /// (also with a zero limit: what is not kept can still be watched).
    pub fn push(&self, line: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.version += 1;
        if let Live::Open(tx) = &inner.live {
            // Sent under the lock: a subscriber's snapshot is either before or after it.
            if tx.receiver_count() > 0 {
                let _ = tx.send(Arc::from(line));
            }
        }
        if self.limit == 0 {
            inner.cut += line.len() as u64 + 1;
            return;
        }
        inner.text.push_str(line);
        inner.text.push('\n');
        // Compacted only past twice the limit: each byte is moved at most once or twice.
        if inner.text.len() > 2 * self.limit {
            Self::compact(&mut inner, self.limit);
        }
    }

    fn compact(inner: &mut Inner, limit: usize) {
        let excess = inner.text.len().saturating_sub(limit);
        if excess == 0 {
            return;
        }
        let mut at = excess;
        while !inner.text.is_char_boundary(at) {
            at += 1;
        }
        inner.text.drain(..at);
        inner.cut += at as u64;
    }

    /// The kept tail (at most `limit` bytes) and the bytes dropped before it.
    pub fn snapshot(&self) -> (String, u64) {
        let mut inner = self.inner.lock().unwrap();
        Self::compact(&mut inner, self.limit);
        (inner.text.clone(), inner.cut)
    }

    /// The kept tail, its cut, and a receiver of every line pushed after them, all taken
    /// under one lock: no line is missed or doubled between the snapshot and the stream.
    pub fn subscribe(&self) -> Subscription {
        let mut inner = self.inner.lock().unwrap();
        Self::compact(&mut inner, self.limit);
        let lines = match &inner.live {
            Live::Open(tx) => tx.subscribe(),
            Live::Idle => {
                let (tx, rx) = broadcast::channel(LIVE_LINES);
                inner.live = Live::Open(tx);
                rx
            }
            // Its sender dropped at once: the receiver reads `Closed`.
            Live::Closed => broadcast::channel(1).1,
        };
        Subscription {
            text: inner.text.clone(),
            cut: inner.cut,
            lines,
        }
    }

    /// The run has ended: live readers get the lines pushed so far, then the end.
    pub fn close(&self) {
        self.inner.lock().unwrap().live = Live::Closed;
    }

    /// The version now; pass it back to [`OutputTail::changed_since`].
    pub fn version(&self) -> u64 {
        self.inner.lock().unwrap().version
    }

    /// Whether anything was pushed since `version`.
    pub fn changed_since(&self, version: u64) -> bool {
        self.version() != version
    }
}

/// How `cronlease logs` and `status` mark a cut tail.
pub fn cut_marker(cut: u64) -> String {
    format!("[... {cut} earlier bytes of output not kept (output_limit) ...]")
}

/// How a live reader is told it fell behind by `n` lines (they are in the kept tail, if it
/// kept them).
pub fn lag_marker(n: u64) -> String {
    format!("[... {n} lines not shown: this reader fell behind ...]")
}

/// Whether `line` (without its newline) is a [`lag_marker`].
pub fn is_lag_marker(line: &str) -> bool {
    line.strip_prefix("[... ")
        .and_then(|rest| rest.strip_suffix(" lines not shown: this reader fell behind ...]"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The tails of the runs going on a node, by job and fire time, for live readers.
#[derive(Default)]
pub struct LiveOutputs {
    runs: Mutex<HashMap<String, (u64, Arc<OutputTail>)>>,
    next_id: AtomicU64,
}

impl LiveOutputs {
    /// Make a run's tail findable until the returned guard drops (the run ended, or its task
    /// was dropped), which also ends its live readers' streams.
    pub fn register(
        &self,
        job: &str,
        fire_time: DateTime<Utc>,
        tail: &Arc<OutputTail>,
    ) -> LiveGuard<'_> {
        let key = crate::store::RunRecord::key(job, fire_time);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.runs
            .lock()
            .unwrap()
            .insert(key.clone(), (id, tail.clone()));
        LiveGuard {
            outputs: self,
            key,
            id,
            tail: tail.clone(),
        }
    }

    /// The tail of the run of `job` at `fire_time` going on this node, if one is (fire times
    /// match to the millisecond, as run keys do).
    pub fn get(&self, job: &str, fire_time: DateTime<Utc>) -> Option<Arc<OutputTail>> {
        let key = crate::store::RunRecord::key(job, fire_time);
        self.runs.lock().unwrap().get(&key).map(|(_, t)| t.clone())
    }
}

/// A run's entry in [`LiveOutputs`]; dropping it removes the entry and closes the tail.
pub struct LiveGuard<'a> {
    outputs: &'a LiveOutputs,
    key: String,
    id: u64,
    tail: Arc<OutputTail>,
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        let mut runs = self.outputs.runs.lock().unwrap();
        // Only our own entry: never one a later run of the same key put there.
        if runs.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            runs.remove(&self.key);
        }
        drop(runs);
        self.tail.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::TryRecvError;

    #[test]
    fn keeps_the_last_bytes_and_counts_the_rest() {
        let tail = OutputTail::new(10);
        tail.push("hello");
        assert_eq!(tail.snapshot(), ("hello\n".to_string(), 0));
        let v = tail.version();
        tail.push("world!");
        assert!(tail.changed_since(v));
        // "hello\nworld!\n" is 13 bytes: the first 3 go.
        assert_eq!(tail.snapshot(), ("lo\nworld!\n".to_string(), 3));
        for i in 0..1000 {
            tail.push(&format!("line {i}"));
        }
        let (text, cut) = tail.snapshot();
        assert!(text.len() <= 10 && text.ends_with("line 999\n"), "{text:?}");
        assert_eq!(
            cut as usize + text.len(),
            13 + (0..1000)
                .map(|i| format!("line {i}\n").len())
                .sum::<usize>()
        );
    }

    #[test]
    fn never_cuts_inside_a_character() {
        let tail = OutputTail::new(5);
        tail.push("ééééé");
        let (text, cut) = tail.snapshot();
        assert!(text.len() <= 6 && text.ends_with('\n'), "{text:?}");
        assert_eq!(cut as usize + text.len(), "ééééé\n".len());
    }

    #[test]
    fn a_zero_limit_keeps_nothing() {
        let tail = OutputTail::new(0);
        tail.push("abc");
        assert_eq!(tail.snapshot(), (String::new(), 4));
    }

    /// Everything a receiver holds now, and whether its stream has ended.
    fn drain(rx: &mut broadcast::Receiver<Arc<str>>) -> (Vec<String>, bool) {
        let mut lines = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(line) => lines.push(line.to_string()),
                Err(TryRecvError::Empty) => return (lines, false),
                Err(TryRecvError::Closed) => return (lines, true),
                Err(TryRecvError::Lagged(n)) => lines.push(lag_marker(n)),
            }
        }
    }

    #[test]
    fn a_subscriber_gets_the_tail_then_every_later_line_once_then_the_end() {
        let tail = OutputTail::new(10);
        tail.push("one");
        tail.push("two");
        let mut sub = tail.subscribe();
        assert_eq!((sub.text.as_str(), sub.cut), ("one\ntwo\n", 0));
        tail.push("three");
        tail.push("four");
        let mut late = tail.subscribe();
        // The late one's tail is cut at the limit; what it has not kept it does not stream.
        assert_eq!((late.text.as_str(), late.cut), ("hree\nfour\n", 9));
        tail.push("five");
        tail.close();
        tail.push("late");
        assert_eq!(
            drain(&mut sub.lines),
            (vec!["three".into(), "four".into(), "five".into()], true)
        );
        assert_eq!(drain(&mut late.lines), (vec!["five".into()], true));
        // Subscribing to an ended run: its tail, and a stream that has ended.
        let mut ended = tail.subscribe();
        assert!(ended.text.ends_with("five\nlate\n"), "{:?}", ended.text);
        assert_eq!(drain(&mut ended.lines), (vec![], true));
    }

    #[test]
    fn with_a_zero_limit_lines_still_stream() {
        let tail = OutputTail::new(0);
        tail.push("gone");
        let mut sub = tail.subscribe();
        assert_eq!((sub.text.as_str(), sub.cut), ("", 5));
        tail.push("live");
        tail.close();
        assert_eq!(drain(&mut sub.lines), (vec!["live".into()], true));
        assert_eq!(tail.snapshot(), (String::new(), 10));
    }

    #[test]
    fn a_reader_that_falls_behind_is_told_how_far_and_goes_on() {
        let tail = OutputTail::new(100);
        let mut sub = tail.subscribe();
        let n = LIVE_LINES + 10;
        for i in 0..n {
            tail.push(&format!("{i}"));
        }
        tail.close();
        let (lines, ended) = drain(&mut sub.lines);
        assert!(ended);
        assert_eq!(lines[0], lag_marker(10));
        assert!(is_lag_marker(&lines[0]));
        assert_eq!(lines[1], "10");
        assert_eq!(lines.last().unwrap(), &format!("{}", n - 1));
        assert_eq!(lines.len(), LIVE_LINES + 1);
        assert!(!is_lag_marker(
            "[... x lines not shown: this reader fell behind ...]"
        ));
        assert!(!is_lag_marker("line 3"));
    }

    #[test]
    fn the_registry_finds_a_run_until_its_guard_drops() {
        let outputs = LiveOutputs::default();
        let at = DateTime::from_timestamp(1_800_000_000, 250_000_000).unwrap();
        let tail = Arc::new(OutputTail::new(100));
        let mut sub = tail.subscribe();
        let guard = outputs.register("backup", at, &tail);
        let found = outputs.get("backup", at).expect("registered");
        assert!(Arc::ptr_eq(&found, &tail));
        let whole_second = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert!(outputs.get("backup", whole_second).is_none());
        assert!(outputs.get("other", at).is_none());
        tail.push("going");
        // A second entry under the key (not a case that happens: a fire time is claimed once)
        // is not removed by the first one's guard.
        let second = Arc::new(OutputTail::new(100));
        let guard2 = outputs.register("backup", at, &second);
        drop(guard);
        assert!(Arc::ptr_eq(&outputs.get("backup", at).unwrap(), &second));
        assert_eq!(drain(&mut sub.lines), (vec!["going".into()], true));
        drop(guard2);
        assert!(outputs.get("backup", at).is_none());
    }
}
