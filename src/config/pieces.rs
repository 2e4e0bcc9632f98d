//! The jobs file in pieces: each `[[job]]` table (with its `[job.…]` sub-tables) is parsed on
//! its own, and the rest of the file as one document with the jobs blanked out.
//!
//! Why: the TOML parser builds a tree of the whole document before anything is read from it,
//! about 35 bytes of tree per byte of text (21 MB for 10,000 jobs, 270 MB for 100,000), and
//! the raw jobs deserialized from it all exist at once beside it. That was a node's peak
//! memory at start-up and at every reload. In pieces, one job's tree exists at a time.
//!
//! The pieces are found with the TOML lexer (`toml_parser`, the parser's own), so a line that
//! looks like a header inside a multi-line string or a multi-line array or inline table is
//! never taken for one. Offsets stay the whole file's: the rest keeps every byte in place
//! (blanks, with its line breaks kept), and a piece's offsets are shifted by where it starts.
use std::borrow::Cow;
use std::ops::Range;

use toml_parser::lexer::TokenKind;
use toml_parser::Source;

/// A jobs file split for parsing.
pub struct Pieces<'a> {
    /// The file with every job piece blanked out (the same bytes everywhere else).
    pub rest: Cow<'a, str>,
    /// Where each `[[job]]` piece is, in file order.
    pub jobs: Vec<Range<usize>>,
}

/// Split `text` (see the module doc). Never fails: text the lexer cannot make sense of ends
/// up in a piece or the rest as it is, and their parse reports it where it is.
pub fn split(text: &str) -> Pieces<'_> {
    let mut tokens = Source::new(text).lex().peekable();
    // Brackets and braces open in a value: a line break inside them starts no statement.
    let mut depth = 0usize;
    let mut line_start = true;
    let mut open: Option<usize> = None;
    let mut jobs = Vec::new();
    while let Some(token) = tokens.next() {
        match token.kind() {
            TokenKind::Newline => {
                if depth == 0 {
                    line_start = true;
                }
            }
            TokenKind::Whitespace | TokenKind::Comment => {}
            TokenKind::LeftSquareBracket if line_start && depth == 0 => {
                // A header: `[table]` or `[[array]]`, its first key and whether it goes on.
                line_start = false;
                let at = token.span().start();
                let array = tokens
                    .next_if(|t| t.kind() == TokenKind::LeftSquareBracket)
                    .is_some();
                while tokens
                    .next_if(|t| t.kind() == TokenKind::Whitespace)
                    .is_some()
                {}
                let is_job = tokens.next().is_some_and(|key| {
                    let span = key.span();
                    matches!(
                        text.get(span.start()..span.end()),
                        Some("job" | "\"job\"" | "'job'")
                    )
                });
                while tokens
                    .next_if(|t| t.kind() == TokenKind::Whitespace)
                    .is_some()
                {}
                let dotted = tokens.peek().is_some_and(|t| t.kind() == TokenKind::Dot);
                match (is_job, array, dotted) {
                    // A new job: the piece before it (if any) ends here.
                    (true, true, false) => {
                        jobs.extend(open.replace(at).map(|start| start..at));
                    }
                    // A sub-table of the job being read stays in its piece (with no job
                    // open, it stays in the rest, whose parse says what is wrong).
                    (true, _, true) => {}
                    _ => jobs.extend(open.take().map(|start| start..at)),
                }
                // The header's other tokens (keys, `]`) go through the arms below: a `]`
                // at depth 0 leaves it at 0.
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => {
                depth += 1;
                line_start = false;
            }
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                depth = depth.saturating_sub(1);
                line_start = false;
            }
            _ => line_start = false,
        }
    }
    jobs.extend(open.map(|start| start..text.len()));
    let rest = if jobs.is_empty() {
        Cow::Borrowed(text)
    } else {
        let mut bytes = text.as_bytes().to_vec();
        for range in &jobs {
            for b in &mut bytes[range.clone()] {
                if *b != b'\n' && *b != b'\r' {
                    *b = b' ';
                }
            }
        }
        // Pieces start at a `[` and end where another header starts or at the end: whole
        // characters, so blanking them keeps the text UTF-8.
        Cow::Owned(String::from_utf8(bytes).expect("pieces are whole characters"))
    };
    Pieces { rest, jobs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> Vec<&str> {
        split(text).jobs.into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn each_job_is_a_piece_with_its_sub_tables_and_the_rest_keeps_its_place() {
        let text = "[node]\nid = \"n\"\n\n[[job]]\nname = \"a\"\n[job.env]\nK = \"v\"\n\
                    [[job]] # second\nname = \"b\"\n\n[[notify]]\nname = \"s\"\n";
        assert_eq!(
            pieces(text),
            [
                "[[job]]\nname = \"a\"\n[job.env]\nK = \"v\"\n",
                "[[job]] # second\nname = \"b\"\n\n"
            ]
        );
        let rest = split(text).rest.into_owned();
        assert_eq!(rest.len(), text.len());
        assert_eq!(rest.lines().count(), text.lines().count());
        assert!(rest.starts_with("[node]\nid = \"n\"\n"));
        assert!(rest.ends_with("[[notify]]\nname = \"s\"\n"));
        assert!(!rest.contains("job"));
    }

    #[test]
    fn headers_in_strings_arrays_and_inline_tables_are_not_headers() {
        let text = "[[job]]\nname = \"a\"\nsh = \"\"\"\n[[job]]\n[node]\n\"\"\"\n\
                    args = [\n  [\"job\"],\n]\nenv = {\n  K = \"[x]\"\n}\n\
                    [[ \"job\" ]]\nname = 'b'\n";
        let found = pieces(text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("args = ["));
        assert!(found[1].starts_with("[[ \"job\" ]]"));
    }

    #[test]
    fn a_file_without_job_tables_is_left_whole() {
        let text = "job = [{ name = \"a\" }]\n[job]\nname = \"x\"\n[jobs.x]\n";
        let split = split(text);
        assert!(split.jobs.is_empty());
        assert!(matches!(split.rest, Cow::Borrowed(_)));
    }

    #[test]
    fn a_byte_order_mark_does_not_hide_the_first_job() {
        let text = "\u{feff}[[job]]\nname = \"a\"\n[[job]]\nname = \"b\"\n";
        assert_eq!(pieces(text).len(), 2);
        assert!(split(text).rest.starts_with('\u{feff}'));
    }

    #[test]
    fn multibyte_text_in_a_piece_blanks_to_valid_text() {
        let text = "[[job]]\nname = \"ä€\"\n[node]\n";
        let split = split(text);
        assert_eq!(split.rest.len(), text.len());
        assert!(split.rest.ends_with("[node]\n"));
    }
}
