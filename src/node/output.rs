//! What a run printed, kept with its record: the tail of its output lines (stdout and stderr
//! interleaved in the order the node read them, as the labelled `job_output` lines), at most
//! the job's `output_limit` bytes, and how many bytes before the tail were dropped.
//!
//! The runner appends every line it logs ([`OutputTail::push`]); the tick writes the tail with
//! the run's outcome, and while a long run goes, at most once per `output_refresh` when it
//! changed ([`OutputTail::changed_since`]), so a crash does not lose all of it.
use std::sync::Mutex;

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
}

impl OutputTail {
    /// A tail of at most `limit` bytes (0 keeps nothing).
    pub fn new(limit: usize) -> OutputTail {
        OutputTail {
            limit,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Append one output line (a newline is added).
    pub fn push(&self, line: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.version += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
