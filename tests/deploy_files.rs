//! The files an operator installs or deploys from: the Debian unit and its packaged config, the
//! opt-in hardening drop-in, the Containerfile and the Kubernetes manifests. What systemd,
//! dpkg and lintian say about the built package is scripts/package-test.sh's job; this checks
//! the promises those files make, fast, on every test run.
use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A unit file's `[Service]` (or any section's) settings, `key -> values` in order.
fn section(unit: &str, name: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut inside = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{name}]");
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {line}"));
            out.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    out
}

/// systemd.exec(5) (252): these force `NoNewPrivileges=yes`, which breaks jobs that use sudo
/// or setuid programs, so none of them may be in the default unit.
const IMPLY_NO_NEW_PRIVILEGES: &[&str] = &[
    "NoNewPrivileges",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "PrivateDevices",
    "ProtectClock",
    "ProtectHostname",
    "ProtectKernelLogs",
    "ProtectKernelModules",
    "ProtectKernelTunables",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallLog",
    "DynamicUser",
];

#[test]
fn the_unit_supervises_the_node_as_the_issue_and_readme_say() {
    let unit = read("deploy/debian/cronlease.service");
    let service = section(&unit, "Service");
    let one = |k: &str| -> &str {
        match service.get(k).map(Vec::as_slice) {
            Some([v]) => v,
            other => panic!("{k}: {other:?}"),
        }
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("User"), "cronlease");
    assert_eq!(one("KillMode"), "mixed");
    assert_eq!(one("OOMPolicy"), "continue");
    assert_eq!(one("RestartPreventExitStatus"), "2");
    assert_eq!(one("StateDirectory"), "cronlease");
    assert_eq!(one("ConfigurationDirectory"), "cronlease");
    assert!(one("WatchdogSec").ends_with('s'));
    let reload = &service["ExecReload"];
    assert!(
        reload.len() == 2 && reload[0].contains("cronlease check") && reload[1].contains("-HUP"),
        "ExecReload must validate first, then signal: {reload:?}"
    );
    assert!(one("ExecStart").starts_with("/usr/bin/cronlease run --config "));
    for key in IMPLY_NO_NEW_PRIVILEGES.iter().chain(&["ProtectSystem"]) {
        assert!(
            !service.contains_key(*key),
            "{key} would apply to every job: it belongs in hardening.conf"
        );
    }
    let install = section(&unit, "Install");
    assert_eq!(install["WantedBy"], ["multi-user.target"]);
}

#[test]
fn the_hardening_drop_in_holds_what_the_default_leaves_out() {
    let drop_in = section(&read("deploy/debian/hardening.conf"), "Service");
    for key in [
        "NoNewPrivileges",
        "ProtectSystem",
        "ReadWritePaths",
        "PrivateTmp",
    ] {
        assert!(
            drop_in.contains_key(key),
            "{key} missing from hardening.conf"
        );
    }
    assert_eq!(drop_in["ProtectSystem"], ["strict"]);
    assert!(drop_in["ReadWritePaths"][0].contains("/var/lib/cronlease"));
}

#[test]
fn the_packaged_jobs_file_is_valid_and_runs_nothing() {
    let config = cronlease::config::load(&Path::new(ROOT).join("deploy/debian/jobs.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !config.jobs.is_empty(),
        "the example job is there, to be copied"
    );
    assert!(
        config.jobs.iter().all(|j| !j.enabled),
        "a fresh install must run nothing until edited"
    );
}

#[test]
fn the_containerfile_runs_the_node_under_an_init_as_non_root() {
    let file = read("deploy/container/Containerfile");
    let mut stages = 0;
    let (mut user, mut entrypoint) = (None, None);
    for line in file.lines().map(str::trim) {
        let (instr, rest) = line.split_once(' ').unwrap_or((line, ""));
        match instr {
            "FROM" => stages += 1,
            "USER" => user = Some(rest.to_string()),
            "ENTRYPOINT" => entrypoint = Some(rest.to_string()),
            _ => {}
        }
    }
    assert_eq!(stages, 2, "a build stage and a slim runtime stage");
    let user = user.expect("a USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric UID");
    assert_ne!(uid, 0, "not root");
    let entrypoint: Vec<String> =
        serde_json::from_str(&entrypoint.expect("an ENTRYPOINT")).expect("exec form");
    assert!(
        entrypoint[0].ends_with("tini"),
        "an init reaps job orphans: {entrypoint:?}"
    );
    assert!(entrypoint.ends_with(&["/usr/bin/cronlease".into(), "run".into()]));
    assert!(file.contains("STATE_DIRECTORY=/var/lib/cronlease"));
}

#[test]
fn the_kubernetes_manifests_parse_and_hold_together() {
    let text = read("deploy/kubernetes/cronlease.yaml");
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_yaml_ng::Value::deserialize(d).expect("valid YAML"))
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    // The ConfigMap's jobs file validates as cronlease would read it.
    let jobs = kind("ConfigMap")["data"]["jobs.toml"]
        .as_str()
        .expect("data.jobs.toml");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.toml");
    std::fs::write(&path, jobs).unwrap();
    let config = cronlease::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let grace = config.node.shutdown_grace.as_secs();

    let pod = &kind("Deployment")["spec"]["template"]["spec"];
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        termination > grace,
        "terminationGracePeriodSeconds {termination} must outlast shutdown_grace {grace}s"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let mounted = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == "/etc/cronlease");
    assert!(
        mounted,
        "the ConfigMap is mounted where CRONLEASE_CONFIG points"
    );
    // Bound beyond loopback: the node needs tokens (it refuses to start without), from a
    // Secret mounted where --http-token-file points, not readable by others.
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--http-token-file")
        .expect("--http-token-file");
    let token_dir = std::path::Path::new(args[at + 1]).parent().unwrap();
    // Published at the pod's IP, so the other pods can relay its live output.
    let advertise = args
        .iter()
        .position(|a| *a == "--http-advertise")
        .expect("--http-advertise");
    assert_eq!(args[advertise + 1], "$(POD_IP):9100");
    assert!(container["env"].as_sequence().unwrap().iter().any(
        |e| e["name"] == "POD_IP" && e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    ));
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"].as_str() == token_dir.to_str())
        .expect("the tokens' directory is mounted");
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("its volume");
    // `0440`: octal as Kubernetes' YAML 1.1 reads it (a YAML 1.2 reader sees a string).
    let mode = &volume["secret"]["defaultMode"];
    let octal = match mode.as_u64() {
        Some(n) => format!("{n:o}"),
        None => mode
            .as_str()
            .expect("a Secret with a mode")
            .trim_start_matches('0')
            .to_string(),
    };
    assert_eq!(octal, "440", "{mode:?}");
}
