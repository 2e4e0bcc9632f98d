//! The bearer tokens of the HTTP interface and what each may do: from `--http-token-file
//! PATH`, else `CRONLEASE_HTTP_TOKEN` (one operate token).
//!
//! The file holds one token per line with its role:
//!
//! ```text
//! # the dashboard of the on-call team: sees everything, changes nothing
//! read    4f1c0e2a9b7d83e6c5a1f0b2d4e6a8c1
//! # the deploy pipeline: also pauses, resumes and triggers
//! operate 9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d
//! ```
//!
//! Several of each role are allowed (rotation: add the new token, reload, move the clients,
//! remove the old one, reload). A file of one bare token line means one operate token, as a
//! token file did before roles. Blank lines and `#` comments are skipped. Refused with the
//! reason (at start: exit 2; on a reload: the tokens in force are kept): a token shorter than
//! [`MIN_TOKEN_CHARS`], one with spaces or non-ASCII, one given twice, an unknown role, and a
//! file that other users can read or write, or its group write (`chmod 600` or `640`). An
//! error never repeats a token.
//!
//! A token travels only in the `Authorization: Bearer` header, never in a cookie, so a page of
//! another site cannot make a browser send it (no cross-site request forgery), and it is
//! compared in constant time with every configured token.
use std::path::Path;

/// The shortest token accepted: a guessable token would be worse than none.
pub const MIN_TOKEN_CHARS: usize = 16;

/// What a token may do. `Operate` includes `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Everything a page shows: status, cluster, runs, output, live output, metrics.
    Read,
    /// Also pause, resume and trigger.
    Operate,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
        }
    }
}

/// Why the tokens cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("--http-token-file {path}: cannot read it: {message}")]
    Read { path: String, message: String },
    #[error(
        "--http-token-file {path}: other users can read or write it (mode {mode:04o}); \
         `chmod 600 {path}` (or 640 for a group that may read it)"
    )]
    Exposed { path: String, mode: u32 },
    #[error("{source_name}: no token in it")]
    Empty { source_name: String },
    #[error(
        "{source_name}: the token is {len} characters; use at least {MIN_TOKEN_CHARS} (e.g. \
         `openssl rand -hex 32`)"
    )]
    Short { source_name: String, len: usize },
    #[error("{source_name}: the token must be printable ASCII without spaces")]
    Characters { source_name: String },
    #[error(
        "{source_name}: something follows the token; a line is `read TOKEN` or `operate \
         TOKEN` (a comment is a line of its own, starting with #)"
    )]
    Trailing { source_name: String },
    /// `word` is shown only when it looks like a misspelt role, never when it may be a token.
    #[error(
        "{source_name}: {} each line is `read TOKEN` or `operate TOKEN` (only a file of one \
         line may hold a bare token, meaning one operate token)",
        match word { Some(w) => format!("{w:?} is not a role:"), None => "no role:".to_string() }
    )]
    Role {
        source_name: String,
        word: Option<String>,
    },
    #[error("{source_name}: the same token is given twice (line {first} and here)")]
    Twice { source_name: String, first: usize },
}

/// One token (kept out of `Debug` output).
#[derive(Clone)]
struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

/// The configured tokens and their roles.
#[derive(Debug, Clone)]
pub struct Tokens {
    entries: Vec<(Role, Secret)>,
}

/// What a request's `Authorization` header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// No bearer token.
    Missing,
    /// A token that is not configured.
    Wrong,
    /// A configured token, with its role.
    Valid(Role),
}

impl Tokens {
    /// The tokens of `file`, else one operate token from `env` (`CRONLEASE_HTTP_TOKEN`'s value);
    /// `None` when neither is given.
    pub fn load(file: Option<&Path>, env: Option<String>) -> Result<Option<Tokens>, TokenError> {
        match (file, env) {
            (Some(path), _) => Tokens::from_file(path).map(Some),
            (None, Some(value)) => {
                let source_name = "CRONLEASE_HTTP_TOKEN".to_string();
                let secret = checked(value.trim(), &source_name)?;
                Ok(Some(Tokens {
                    entries: vec![(Role::Operate, secret)],
                }))
            }
            (None, None) => Ok(None),
        }
    }

    /// The tokens of a token file (see the module docs), its mode checked first.
    pub fn from_file(path: &Path) -> Result<Tokens, TokenError> {
        let shown = path.display().to_string();
        let read_error = |e: std::io::Error| TokenError::Read {
            path: shown.clone(),
            message: e.to_string(),
        };
        // The mode of the file read (one handle: no swap between the check and the read).
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata().map_err(read_error)?.permissions().mode() & 0o7777;
            // Others may neither read nor write it; a group may read it, not add a token.
            if mode & 0o026 != 0 {
                return Err(TokenError::Exposed { path: shown, mode });
            }
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).map_err(read_error)?;
        Tokens::parse(&text, &format!("--http-token-file {shown}"))
    }

    /// Parse a token file's text; `source_name` leads every error.
    pub fn parse(text: &str, source_name: &str) -> Result<Tokens, TokenError> {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let mut entries: Vec<(Role, Secret, usize)> = Vec::new();
        for &(number, line) in &lines {
            let at = format!("{source_name}:{number}");
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or_default();
            let (role, token) = match (first, words.next(), lines.len()) {
                ("read", Some(token), _) => (Role::Read, token),
                ("operate", Some(token), _) => (Role::Operate, token),
                (_, None, 1) => (Role::Operate, first),
                (word, _, _) => {
                    // A short word of letters is a misspelt role; anything else may be a
                    // token, which an error message must not repeat.
                    let role_like =
                        word.len() <= 12 && word.bytes().all(|b| b.is_ascii_alphabetic());
                    return Err(TokenError::Role {
                        source_name: at,
                        word: role_like.then(|| word.to_string()),
                    });
                }
            };
            if words.next().is_some() {
                return Err(TokenError::Trailing { source_name: at });
            }
            let secret = checked(token, &at)?;
            if let Some((_, _, first)) = entries.iter().find(|(_, s, _)| s.0 == secret.0) {
                return Err(TokenError::Twice {
                    source_name: at,
                    first: *first,
                });
            }
            entries.push((role, secret, number));
        }
        if entries.is_empty() {
            return Err(TokenError::Empty {
                source_name: source_name.to_string(),
            });
        }
        Ok(Tokens {
            entries: entries.into_iter().map(|(r, s, _)| (r, s)).collect(),
        })
    }

    /// What an `Authorization` header value (`Bearer <token>`) carries. Every configured token
    /// is compared, each in constant time, whichever matches.
    pub fn check(&self, authorization: Option<&str>) -> Presented {
        let Some(given) = authorization.and_then(bearer) else {
            return Presented::Missing;
        };
        let mut found = None;
        for (role, secret) in &self.entries {
            if constant_time_eq(given.as_bytes(), &secret.0) {
                found = Some(*role);
            }
        }
        found.map_or(Presented::Wrong, Presented::Valid)
    }

    /// Whether any token may operate.
    pub fn any_operate(&self) -> bool {
        self.entries.iter().any(|(r, _)| *r == Role::Operate)
    }

    /// How many tokens of each role: (read, operate), for the log of a reload.
    pub fn counts(&self) -> (usize, usize) {
        let read = self
            .entries
            .iter()
            .filter(|(r, _)| *r == Role::Read)
            .count();
        (read, self.entries.len() - read)
    }

    /// The token a client sends (`cronlease logs --follow`): the first read token, else the
    /// first operate token (the least that does).
    pub fn for_client(&self) -> String {
        let pick = self
            .entries
            .iter()
            .find(|(r, _)| *r == Role::Read)
            .or_else(|| self.entries.first());
        pick.map(|(_, s)| String::from_utf8_lossy(&s.0).into_owned())
            .unwrap_or_default()
    }
}

/// The token of a `Bearer` header value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A token that is long enough and plain.
fn checked(token: &str, source_name: &str) -> Result<Secret, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty {
            source_name: source_name.to_string(),
        });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Characters {
            source_name: source_name.to_string(),
        });
    }
    let len = token.chars().count();
    if len < MIN_TOKEN_CHARS {
        return Err(TokenError::Short {
            source_name: source_name.to_string(),
            len,
        });
    }
    Ok(Secret(token.as_bytes().to_vec()))
}

/// Equal bytes, in a time that does not depend on where they differ (`subtle`: no early exit
/// the optimiser could add).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "read-read-read-read-1";
    const O: &str = "operate-operate-operate-2";

    #[test]
    fn bearer_tokens_are_compared_whole_and_give_their_role() {
        let t = Tokens::parse(&format!("read {R}\noperate {O}\n"), "f").unwrap();
        assert_eq!(
            t.check(Some(&format!("Bearer {R}"))),
            Presented::Valid(Role::Read)
        );
        assert_eq!(
            t.check(Some(&format!("bearer {O}"))),
            Presented::Valid(Role::Operate)
        );
        assert_eq!(t.check(Some(&format!("Bearer {R}x"))), Presented::Wrong);
        assert_eq!(
            t.check(Some(&format!("Bearer {}", &R[1..]))),
            Presented::Wrong
        );
        assert_eq!(t.check(Some(R)), Presented::Missing);
        assert_eq!(t.check(Some(&format!("Basic {R}"))), Presented::Missing);
        assert_eq!(t.check(Some("Bearer ")), Presented::Missing);
        assert_eq!(t.check(None), Presented::Missing);
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
        assert_eq!(t.counts(), (1, 1));
        assert_eq!(t.for_client(), R);
        assert!(!format!("{t:?}").contains(R));
    }

    #[test]
    fn a_bare_line_alone_is_an_operate_token_and_bad_lines_are_named() {
        let t = Tokens::parse(&format!("# old style\n{O}\n\n"), "f").unwrap();
        assert_eq!(
            t.check(Some(&format!("Bearer {O}"))),
            Presented::Valid(Role::Operate)
        );
        // A bare token among role lines, or a reversed line: refused, the token not repeated.
        for text in [
            format!("read {R}\n{O}\n"),
            format!("read {R}\n{O} operate\n"),
        ] {
            let e = Tokens::parse(&text, "f").unwrap_err();
            assert!(matches!(e, TokenError::Role { word: None, .. }), "{e}");
            assert!(e.to_string().starts_with("f:2: no role: "), "{e}");
            assert!(!e.to_string().contains(O), "{e}");
        }
        let admin = Tokens::parse(&format!("admin {R}\n"), "f").unwrap_err();
        assert!(
            admin.to_string().contains("\"admin\" is not a role"),
            "{admin}"
        );
        assert!(matches!(
            Tokens::parse("read short\n", "f"),
            Err(TokenError::Short { len: 5, .. })
        ));
        assert!(matches!(
            Tokens::parse(&format!("read {R}\noperate {R}\n"), "f"),
            Err(TokenError::Twice { first: 1, .. })
        ));
        let trailing = Tokens::parse(&format!("read {R} # ci\n"), "f").unwrap_err();
        assert!(
            matches!(trailing, TokenError::Trailing { .. }),
            "{trailing}"
        );
        assert!(!trailing.to_string().contains(R), "{trailing}");
        assert!(matches!(
            Tokens::parse("# nothing\n\n", "f"),
            Err(TokenError::Empty { .. })
        ));
    }

    #[test]
    fn tokens_come_from_the_file_first_which_others_may_not_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret-s3cret-s3cret\n").unwrap();
        for mode in [0o644, 0o660, 0o602] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let exposed = Tokens::load(Some(&file), None).unwrap_err();
            assert!(matches!(exposed, TokenError::Exposed { .. }), "{exposed}");
            assert!(exposed.to_string().contains("chmod 600"), "{exposed}");
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let t = Tokens::load(Some(&file), Some("ignored-ignored-ignored".into()))
            .unwrap()
            .unwrap();
        assert_eq!(
            t.check(Some("Bearer s3cret-s3cret-s3cret")),
            Presented::Valid(Role::Operate)
        );
        let t = Tokens::load(None, Some("from-the-environment".into()))
            .unwrap()
            .unwrap();
        assert_eq!(
            t.check(Some("Bearer from-the-environment")),
            Presented::Valid(Role::Operate)
        );
        assert!(Tokens::load(None, None).unwrap().is_none());
        assert!(matches!(
            Tokens::load(None, Some("short".into())),
            Err(TokenError::Short { len: 5, .. })
        ));
        assert!(matches!(
            Tokens::load(None, Some("  ".into())),
            Err(TokenError::Empty { .. })
        ));
        assert!(matches!(
            Tokens::load(None, Some("has a space in it!!".into())),
            Err(TokenError::Characters { .. })
        ));
        assert!(matches!(
            Tokens::load(Some(&dir.path().join("nope")), None),
            Err(TokenError::Read { .. })
        ));
    }
}
