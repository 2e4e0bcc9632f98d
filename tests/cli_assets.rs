//! The command line's packaged surfaces, run through the real binary: completion scripts that
//! a shell accepts, man pages, and `--config` from `CRONLEASE_CONFIG`.
use std::process::Command;

fn cronlease() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cronlease"))
}

#[test]
fn completions_parse_and_name_only_public_commands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = cronlease().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("backfill"), "{shell}");
        assert!(
            !script.contains("__watchdog") && !script.contains("__man"),
            "{shell}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cronlease.bash");
    let out = cronlease().args(["completions", "bash"]).output().unwrap();
    std::fs::write(&file, out.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-c")
        .arg(format!(". {} && complete -p cronlease", file.display()))
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}

#[test]
fn man_pages_are_written_one_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let status = cronlease().arg("__man").arg(dir.path()).status().unwrap();
    assert!(status.success());
    for page in ["cronlease.1", "cronlease-run.1", "cronlease-completions.1"] {
        assert!(dir.path().join(page).exists(), "{page}");
    }
}

#[test]
fn the_config_comes_from_cronlease_config_in_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("elsewhere.toml");
    std::fs::write(
        &jobs,
        "[[job]]\nname = \"from_env\"\nschedule = \"0 3 * * *\"\nsay = \"hi\"\n",
    )
    .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let out = cronlease()
        .args(["check", "--count", "1"])
        .env("CRONLEASE_CONFIG", &jobs)
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("from_env"));
    // Neither the variable nor ./jobs.toml (nor a packaged file on this host): exit 2, naming
    // the file it looked for.
    if std::path::Path::new(cronlease::cli::PACKAGED_CONFIG).exists() {
        return;
    }
    let out = cronlease()
        .arg("check")
        .env_remove("CRONLEASE_CONFIG")
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("jobs.toml"));
}
