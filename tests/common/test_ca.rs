//! A throwaway certificate authority made with the `openssl` command (installed by
//! `scripts/deps.sh`): a CA and server certificates it signs, for tests over TLS.
use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA in a directory: `ca.crt` and `ca.key`.
pub struct TestCa {
    dir: PathBuf,
    name: String,
}

/// Run a shell script in `dir`; panic with its stderr if it fails.
fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

impl TestCa {
    /// A new CA named `name` (its files are `{name}-ca.crt`, `{name}-ca.key` in `dir`).
    pub fn new(dir: &Path, name: &str) -> TestCa {
        sh(
            dir,
            &format!(
                "openssl req -x509 {EC} -keyout {name}-ca.key -out {name}-ca.crt -days 2 \
                 -subj '/CN=cronlease test CA {name}' 2>/dev/null"
            ),
        );
        TestCa {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    /// The CA's certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.crt", self.name))
    }

    /// A server certificate and its key (mode 600), `{stem}.crt` and `{stem}.key`, for
    /// `sans` (an openssl subjectAltName value, e.g. `IP:127.0.0.1,DNS:localhost`).
    pub fn issue(&self, stem: &str, sans: &str) -> (PathBuf, PathBuf) {
        let ca = &self.name;
        sh(
            &self.dir,
            &format!(
                "openssl req {EC} -keyout {stem}.key -out {stem}.csr -subj '/CN={stem}' 2>/dev/null
                 printf 'subjectAltName={sans}\\nextendedKeyUsage=serverAuth\\n' > {stem}.ext
                 openssl x509 -req -in {stem}.csr -CA {ca}-ca.crt -CAkey {ca}-ca.key \
                   -CAcreateserial -out {stem}.crt -days 2 -extfile {stem}.ext 2>/dev/null
                 chmod 600 {stem}.key"
            ),
        );
        (
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.key")),
        )
    }
}
