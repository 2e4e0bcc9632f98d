//! A run's output kept with its record, with real nodes on a real emulator: cut at the job's
//! `output_limit` with a marker, refreshed while a long run goes, and shown by
//! `cronlease logs` (exit 0 for an ok run, 1 otherwise, 2 for usage errors).
mod common;

use std::time::Duration;

use common::{cli as cronlease, wait_until, write_config, Emulator, Node};

const CONFIG: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
    [[job]]\nname = \"chatty\"\nschedule = \"0 0 1 1 *\"\noutput_limit = \"1KiB\"\n\
    shell = \"for i in $(seq 1 300); do echo line $i; done\"\n\n\
    [[job]]\nname = \"quiet\"\nschedule = \"0 0 1 1 *\"\nsay = \"hello\"\n\n\
    [[job]]\nname = \"fail\"\nschedule = \"0 0 1 1 *\"\nshell = \"echo oops >&2; exit 3\"\n\n\
    [[job]]\nname = \"long\"\nschedule = \"0 0 1 1 *\"\noutput_refresh = \"1s\"\n\
    shell = \"echo started; sleep 5; echo done\"\n";

#[test]
fn a_runs_output_is_kept_cut_at_its_limit_and_shown_by_logs() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG);
    let _n1 = Node::spawn(&emu, &cfg, "n1");
    let _n2 = Node::spawn(&emu, &cfg, "n2");
    for job in ["chatty", "quiet"] {
        let out = cronlease(&emu, &cfg, &["trigger", job, "--wait"]);
        assert_eq!(out.code, Some(0), "{job}: {}\n{}", out.stdout, out.stderr);
    }

    // Cut at 1 KiB, with a marker; the tail ends with the last line.
    let out = cronlease(&emu, &cfg, &["logs", "chatty"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut lines = out.stdout.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("== chatty @ ") && header.contains(": ok, exit code 0"),
        "{header}"
    );
    let marker = lines.next().unwrap();
    assert!(
        marker.starts_with("[... ") && marker.contains("earlier bytes of output not kept"),
        "{marker}"
    );
    let kept: Vec<&str> = lines.collect();
    assert_eq!(kept.last(), Some(&"line 300"));
    let kept_bytes: usize = kept.iter().map(|l| l.len() + 1).sum();
    assert!(kept_bytes <= 1024, "{kept_bytes} bytes kept");
    let total: usize = (1..=300).map(|i| format!("line {i}\n").len()).sum();
    let cut: usize = marker
        .trim_start_matches("[... ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        cut + kept_bytes >= total - 12 && cut + kept_bytes <= total,
        "cut {cut} + kept {kept_bytes} vs {total}"
    );

    let out = cronlease(&emu, &cfg, &["logs", "quiet"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.ends_with("==\nhello\n"), "{}", out.stdout);

    // A failed run: its stderr is kept too, and logs exits 1.
    let out = cronlease(&emu, &cfg, &["trigger", "fail", "--wait"]);
    assert_eq!(out.code, Some(1));
    let out = cronlease(&emu, &cfg, &["logs", "fail", "--last", "5"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stdout.contains(": failed, exit code 3") && out.stdout.contains("\noops\n"),
        "{}",
        out.stdout
    );

    // A long run: its tail is in the store while it goes (output_refresh = 1s).
    let out = cronlease(&emu, &cfg, &["trigger", "long"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut seen = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            seen = cronlease(&emu, &cfg, &["logs", "long"]).stdout;
            seen.contains(": running on n") && seen.contains("\nstarted\n")
        }),
        "the running run's tail was not written while it went: {seen}"
    );
    assert!(wait_until(Duration::from_secs(15), || {
        cronlease(&emu, &cfg, &["logs", "long"])
            .stdout
            .ends_with("started\ndone\n")
    }));

    // Usage errors.
    let out = cronlease(&emu, &cfg, &["logs", "nosuch"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let out = cronlease(&emu, &cfg, &["logs", "quiet", "--last", "0"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let out = cronlease(&emu, &cfg, &["logs", "quiet", "2020-01-01T00:00:00Z"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("no run at"), "{}", out.stderr);
}
