//! Puts a job's execution context ([`crate::config::context`]) on its process: environment,
//! working directory, user and groups, resource limits and niceness.
//!
//! [`prepare`] runs in the node before the spawn and does what may fail for this run alone
//! (read the env file, resolve `${VAR}`s, look at the working directory, list the user's
//! groups): its error is the run's `failed` reason, never a secret. [`apply`] sets the
//! environment and directory on the command and installs a `pre_exec` step that runs in the
//! child between fork and exec, where only async-signal-safe calls are allowed (no allocation:
//! everything it needs was computed by [`prepare`]): setrlimit, setpriority, setgroups, setgid,
//! setuid, in that order (limits and priority while still root; the user last, so nothing is
//! left to a process that dropped its privileges). The process group, timeout, watchdog and
//! output capture of [`crate::node::runner`] are the same for every user.
//!
//! The environment, in order (a later one wins): the node's own (for a job run as another
//! user only PATH, LANG, LC_ALL and TZ of it, and SHELL=/bin/sh, as cron does: the node's
//! token and store credentials stay the node's), HOME/USER/LOGNAME of `user` (as cron sets
//! them), `env_file`, `env`, then cronlease's `CRONLEASE_*`, which nothing overrides.
use std::ffi::CString;
use std::path::PathBuf;

use crate::config::context::{parse_env_file, ExecContext, Limits};

/// What the child needs, computed before the fork. No `Debug`: `env` holds secrets.
#[derive(Default)]
pub struct Prepared {
    env: Vec<(String, String)>,
    working_dir: Option<PathBuf>,
    identity: Option<Switch>,
    limits: Limits,
    nice: Option<i32>,
}

/// A switch of user or group (only a root node makes one).
#[derive(Clone)]
struct Switch {
    uid: Option<u32>,
    gid: u32,
    groups: Vec<libc::gid_t>,
    /// Another user: the process starts from a clean environment (below), and enters its
    /// working directory as that user, after the switch, so it cannot start in a directory
    /// the user could not reach.
    other_user: bool,
    working_dir: Option<CString>,
}

/// What a job run as another user keeps of the node's environment, as cron passes little more
/// than these: nothing else of the node's (its HTTP token, the store's credentials) reaches
/// another user.
const KEPT_FOR_ANOTHER_USER: [&str; 4] = ["PATH", "LANG", "LC_ALL", "TZ"];

/// Everything of `ctx` that is read or checked at run time; `Err` is the run's reason.
pub async fn prepare(ctx: &ExecContext) -> Result<Prepared, String> {
    if ctx.is_empty() {
        return Ok(Prepared::default());
    }
    let mut env = Vec::new();
    if let Some(user) = ctx.identity.as_ref().and_then(|i| i.user.as_ref()) {
        let home = user
            .home
            .as_ref()
            .map_or_else(|| "/".to_string(), |h| h.display().to_string());
        let name = user.name.clone().unwrap_or_else(|| user.uid.to_string());
        env.push(("HOME".to_string(), home));
        env.push(("USER".to_string(), name.clone()));
        env.push(("LOGNAME".to_string(), name));
    }
    if let Some(path) = &ctx.env_file {
        let text = tokio::fs::read_to_string(path).await.map_err(|e| {
            format!(
                "env_file {}: cannot read it: {}",
                path.display(),
                io_text(&e)
            )
        })?;
        let vars =
            parse_env_file(&text).map_err(|e| format!("env_file {}: {e}", path.display()))?;
        env.extend(vars);
    }
    env.extend(ctx.resolved_env(|v| std::env::var(v).ok())?);
    if let Some(dir) = &ctx.working_dir {
        match tokio::fs::metadata(dir).await {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("working_dir {} is not a directory", dir.display())),
            Err(e) => return Err(format!("working_dir {}: {}", dir.display(), io_text(&e))),
        }
    }
    let (euid, egid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let identity = match &ctx.identity {
        None => None,
        // Naming this node's own user and group changes nothing: no switch (which a node not
        // run as root could not make).
        Some(id) if id.user.as_ref().is_none_or(|u| u.uid == euid) && id.gid == egid => None,
        Some(id) if euid != 0 => {
            return Err(format!(
                "running as {} needs a node run as root (this one runs as uid {euid}, gid {egid})",
                id.describe()
            ))
        }
        Some(id) => {
            // The user's supplementary groups as they are now (a membership change needs
            // no restart); a user with no database entry gets only its group.
            let groups = match id.user.as_ref().and_then(|u| u.name.as_ref()) {
                Some(name) => {
                    let name = CString::new(name.as_str())
                        .map_err(|_| format!("user {name:?} holds a NUL byte"))?;
                    let gid = nix::unistd::Gid::from_raw(id.gid);
                    let list =
                        tokio::task::spawn_blocking(move || nix::unistd::getgrouplist(&name, gid))
                            .await
                            .map_err(|e| format!("cannot list the user's groups: {e}"))?
                            .map_err(|e| format!("cannot list the user's groups: {}", e.desc()))?;
                    list.into_iter().map(|g| g.as_raw()).collect()
                }
                None => vec![id.gid],
            };
            let other_user = id.user.as_ref().is_some_and(|u| u.uid != euid);
            let working_dir = match (&ctx.working_dir, other_user) {
                (Some(dir), true) => Some(
                    CString::new(dir.as_os_str().as_encoded_bytes())
                        .map_err(|_| format!("working_dir {} holds a NUL byte", dir.display()))?,
                ),
                _ => None,
            };
            Some(Switch {
                uid: id.user.as_ref().map(|u| u.uid),
                gid: id.gid,
                groups,
                other_user,
                working_dir,
            })
        }
    };
    Ok(Prepared {
        env,
        working_dir: ctx.working_dir.clone(),
        identity,
        limits: ctx.limits,
        nice: ctx.nice,
    })
}

/// Sets `prepared` on `cmd` (before cronlease's own variables are added).
pub fn apply(cmd: &mut tokio::process::Command, prepared: Prepared) {
    let other_user = prepared.identity.as_ref().is_some_and(|i| i.other_user);
    if other_user {
        cmd.env_clear();
        for name in KEPT_FOR_ANOTHER_USER {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        cmd.env("SHELL", "/bin/sh");
    }
    cmd.envs(prepared.env);
    // Another user's directory is entered after the switch (in the closure below).
    if let (Some(dir), false) = (&prepared.working_dir, other_user) {
        cmd.current_dir(dir);
    }
    let limits = rlimits(&prepared.limits);
    let (nice, identity) = (prepared.nice, prepared.identity);
    if limits.is_empty() && nice.is_none() && identity.is_none() {
        return;
    }
    // SAFETY: the closure only makes async-signal-safe system calls on data computed before
    // the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for (resource, value) in &limits {
                let limit = libc::rlimit {
                    rlim_cur: value.0,
                    rlim_max: value.1,
                };
                if libc::setrlimit(*resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(n) = nice {
                if libc::setpriority(libc::PRIO_PROCESS, 0, n) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(id) = &identity {
                if libc::setgroups(id.groups.len(), id.groups.as_ptr()) != 0
                    || libc::setgid(id.gid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(uid) = id.uid {
                    if libc::setuid(uid) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(dir) = &id.working_dir {
                    if libc::chdir(dir.as_ptr()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
}

/// (resource, (soft, hard)) for each limit set. `cpu`: SIGXCPU at the limit, SIGKILL a second
/// later if the job ignores it.
#[allow(clippy::useless_conversion)]
fn rlimits(l: &Limits) -> Vec<(libc::__rlimit_resource_t, (libc::rlim_t, libc::rlim_t))> {
    let mut out = Vec::new();
    let both = |n: u64| (n as libc::rlim_t, n as libc::rlim_t);
    if let Some(n) = l.nofile {
        out.push((libc::RLIMIT_NOFILE, both(n)));
    }
    if let Some(n) = l.processes {
        out.push((libc::RLIMIT_NPROC, both(n)));
    }
    if let Some(n) = l.memory {
        out.push((libc::RLIMIT_AS, both(n)));
    }
    if let Some(n) = l.cpu {
        out.push((
            libc::RLIMIT_CPU,
            (n as libc::rlim_t, n.saturating_add(1) as libc::rlim_t),
        ));
    }
    if let Some(n) = l.core {
        out.push((libc::RLIMIT_CORE, both(n)));
    }
    out
}

/// What a signal that ended the job says about its limits: SIGXCPU is the cpu limit (a
/// `timeout`); others are named as they are.
pub fn signal_reason(signal: &str, limits: &Limits) -> String {
    match signal {
        "SIGXCPU" => format!(
            "killed by SIGXCPU: it used its cpu limit ({}s of CPU time)",
            limits.cpu.unwrap_or_default()
        ),
        "SIGKILL" if limits.cpu.is_some() => {
            "killed by SIGKILL (the cpu limit's hard stop, or another sender)".to_string()
        }
        "SIGSEGV" | "SIGABRT" | "SIGBUS" if limits.memory.is_some() => format!(
            "killed by {signal} (with a memory limit of {} bytes: an allocation past it fails)",
            limits.memory.unwrap_or_default()
        ),
        other => format!("killed by {other}"),
    }
}

fn io_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_env_file_or_directory_is_the_runs_reason() {
        let ctx = ExecContext {
            env_file: Some("/nonexistent/secrets.env".into()),
            ..ExecContext::default()
        };
        let Err(e) = prepare(&ctx).await else {
            panic!("prepared")
        };
        assert_eq!(
            e,
            "env_file /nonexistent/secrets.env: cannot read it: No such file or directory"
        );
        let ctx = ExecContext {
            working_dir: Some("/nonexistent/dir".into()),
            ..ExecContext::default()
        };
        let Err(e) = prepare(&ctx).await else {
            panic!("prepared")
        };
        assert_eq!(e, "working_dir /nonexistent/dir: No such file or directory");
    }

    #[tokio::test]
    async fn env_layers_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("e.env");
        std::fs::write(&file, "A=from-file\nB=from-file\n").unwrap();
        let ctx = ExecContext {
            env: vec![("B".into(), "from-env".into())],
            env_file: Some(file),
            ..ExecContext::default()
        };
        let Ok(p) = prepare(&ctx).await else {
            panic!("not prepared")
        };
        // Later entries win when the command sets them in order.
        assert_eq!(
            p.env,
            [
                ("A".to_string(), "from-file".to_string()),
                ("B".into(), "from-file".into()),
                ("B".into(), "from-env".into())
            ]
        );
    }
}
