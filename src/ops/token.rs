//! The bearer token that unlocks the HTTP interface's write endpoints (pause, resume,
//! trigger): from `--http-token-file PATH`, else `CRONLEASE_HTTP_TOKEN`. Without one the
//! interface is read-only and every write endpoint answers 403.
//!
//! The token travels only in the `Authorization: Bearer` header, never in a cookie, so a page
//! of another site cannot make a browser send it (no cross-site request forgery), and it is
//! compared in constant time.
use std::path::Path;

/// The shortest token accepted: a guessable token would be worse than none.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Why the token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("--http-token-file {path}: cannot read it: {message}")]
    Read { path: String, message: String },
    #[error("{source_name}: the token is empty")]
    Empty { source_name: String },
    #[error(
        "{source_name}: the token is {len} characters; use at least {MIN_TOKEN_CHARS} (e.g. \
         `openssl rand -hex 32`)"
    )]
    Short { source_name: String, len: usize },
    #[error("{source_name}: the token must be printable ASCII without spaces")]
    Characters { source_name: String },
}

/// A configured token.
#[derive(Clone)]
pub struct HttpToken(Vec<u8>);

impl std::fmt::Debug for HttpToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpToken(..)")
    }
}

impl HttpToken {
    /// The token of `file` (its first line), else of `env` (`CRONLEASE_HTTP_TOKEN`'s value);
    /// `None` when neither is given.
    pub fn load(file: Option<&Path>, env: Option<String>) -> Result<Option<HttpToken>, TokenError> {
        let (text, source_name) = match (file, env) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|e| TokenError::Read {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                let first = text.lines().next().unwrap_or_default().trim().to_string();
                (first, format!("--http-token-file {}", path.display()))
            }
            (None, Some(value)) => (value.trim().to_string(), "CRONLEASE_HTTP_TOKEN".into()),
            (None, None) => return Ok(None),
        };
        if text.is_empty() {
            return Err(TokenError::Empty { source_name });
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Characters { source_name });
        }
        let len = text.chars().count();
        if len < MIN_TOKEN_CHARS {
            return Err(TokenError::Short { source_name, len });
        }
        Ok(Some(HttpToken(text.into_bytes())))
    }

    /// Whether an `Authorization` header value carries this token (`Bearer <token>`).
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(given) = authorization.and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        }) else {
            return false;
        };
        constant_time_eq(given.trim().as_bytes(), &self.0)
    }
}

/// Equal bytes, in a time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_compared_whole() {
        let t = HttpToken(b"0123456789abcdef".to_vec());
        assert!(t.accepts(Some("Bearer 0123456789abcdef")));
        assert!(!t.accepts(Some("Bearer 0123456789abcde")));
        assert!(!t.accepts(Some("Bearer 0123456789abcdefg")));
        assert!(!t.accepts(Some("0123456789abcdef")));
        assert!(!t.accepts(Some("Basic 0123456789abcdef")));
        assert!(!t.accepts(None));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
    }

    #[test]
    fn tokens_come_from_the_file_first_and_must_be_long() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret-s3cret-s3cret\n").unwrap();
        let t = HttpToken::load(Some(&file), Some("ignored-ignored-ignored".into()))
            .unwrap()
            .unwrap();
        assert!(t.accepts(Some("Bearer s3cret-s3cret-s3cret")));
        let t = HttpToken::load(None, Some("from-the-environment".into()))
            .unwrap()
            .unwrap();
        assert!(t.accepts(Some("Bearer from-the-environment")));
        assert!(HttpToken::load(None, None).unwrap().is_none());
        assert!(matches!(
            HttpToken::load(None, Some("short".into())),
            Err(TokenError::Short { len: 5, .. })
        ));
        assert!(matches!(
            HttpToken::load(None, Some("  ".into())),
            Err(TokenError::Empty { .. })
        ));
        assert!(matches!(
            HttpToken::load(None, Some("has a space in it!!".into())),
            Err(TokenError::Characters { .. })
        ));
        assert!(matches!(
            HttpToken::load(Some(&dir.path().join("nope")), None),
            Err(TokenError::Read { .. })
        ));
    }
}
