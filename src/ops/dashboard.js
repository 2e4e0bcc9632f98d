"use strict";
// The node's poll, from the page (the script itself is the same for every node).
const POLL_MS = Number(document.querySelector('meta[name="cronlease-poll-ms"]').content) || 1000;
// The token of this tab, kept in its sessionStorage and sent as a bearer header with every
// read and action (never a cookie: another site's page cannot make the browser send it).
const TOKEN_KEY = "cronlease-token";
function tokenKept() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function bearer(headers, token) {
  const t = token === undefined ? tokenKept() : token;
  return t ? Object.assign({}, headers, { "Authorization": "Bearer " + t }) : Object.assign({}, headers);
}
// A read of this node, with the tab's token when it keeps one.
function readNode(url, options) {
  const o = Object.assign({ cache: "no-store" }, options);
  o.headers = bearer(o.headers);
  return fetch(url, o);
}
// What the buttons may do, from the x-cronlease-actions header of the node's answers:
// "allowed" (this token operates), "login" (no token yet: they ask for one), "none" (a read
// token, or a node whose writes are off: no buttons); null until the node answered.
let actions = null;
const buttonsShown = () => actions === "allowed" || actions === "login";
const MARK = { ok: "✓", failed: "✗", timeout: "◷", lost: "?", running: "▶", skipped: "–" };
// What the page holds: every job's row as last read (keyed by name), the nodes, and the
// version of the rows, sent back as ?since= so that a poll brings only what changed.
const jobs = new Map();
let nodes = [];
let version = null;
// The serving node's clock minus this browser's, so that countdowns and ages follow the
// cluster's time even when the browser's clock is off.
let skew = 0;
// The state filters: what each means of a job's row.
const STATES = {
  failing: job => failing(job),
  running: job => job.runs.some(x => x.outcome === "running"),
  paused: job => !!job.paused,
  drifting: job => !!(job.drift && job.drift.length),
  unled: job => job.state !== "held",
};
const TITLES = {
  failing: "its last finished run failed, timed out or was lost",
  running: "a run of it is going on",
  paused: "paused",
  drifting: "the live nodes run different definitions of it",
  unled: "no live holder: its lease is free, its holder dead, or expiring",
};
// The filter as the URL keeps it (?q=name&state=failing,paused): a name substring, and any
// of the states ticked.
const filter = { q: "", states: new Set() };
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}
function ago(ms) {
  const s = Math.round(ms / 1000);
  if (Math.abs(s) < 90) return s + " s";
  const m = Math.round(s / 60);
  if (Math.abs(m) < 90) return m + " min";
  return Math.round(m / 60) + " h";
}
// Failing: its last finished run (a run going on does not clear a failure yet).
function failing(job) {
  const last = job.runs.find(x => x.outcome !== "running");
  return !!last && ["failed", "timeout", "lost"].includes(last.outcome);
}
function took(x) {
  return x.finished_at ? ((new Date(x.finished_at) - new Date(x.started_at)) / 1000).toFixed(1) + " s" : "running";
}
// Job rows are built once and updated in place, only when their data changed, so a focused
// button stays what it is and a poll of 10,000 unchanged jobs touches nothing.
const rows = new Map();
function setText(node, text) { if (node.textContent !== text) node.textContent = text; }
// Rows near the screen: only they get their run marks drawn and their countdown ticked.
const near = new Set();
const sight = new IntersectionObserver(entries => {
  for (const e of entries) {
    const r = rows.get(e.target.dataset.job);
    if (!r) continue;
    if (e.isIntersecting) { near.add(r); paint(r); } else near.delete(r);
  }
}, { rootMargin: "800px 0px" });
function jobRow(name) {
  let r = rows.get(name);
  if (r) return r;
  // Explicit roles: the rows are laid out as grids, which some browsers take for not a table.
  r = { name, tr: el("tr", { "data-job": name, role: "row" }), cells: {}, flags: {} };
  const link = el("a", { class: "job", href: "#job=" + encodeURIComponent(name), title: "open " + name + "'s runs" }, name);
  r.tr.append(el("th", { scope: "row", role: "rowheader" }, link));
  for (const c of ["state", "leader", "term", "next", "strip"]) {
    r.cells[c] = el("td", { class: c === "strip" ? "wide" : c, role: "cell" });
    r.tr.append(r.cells[c]);
  }
  if (buttonsShown()) addButtons(r);
  rows.set(name, r);
  sight.observe(r.tr);
  return r;
}
// A row's buttons, made only while the node's answers say they are to be shown.
function addButtons(r) {
  if (r.actions) return;
  r.actions = el("td", { class: "actions", role: "cell" });
  r.pause = button("Pause", r.name, "pause");
  r.resume = button("Resume", r.name, "resume");
  r.trigger = button("Run now", r.name, "trigger");
  r.actions.append(r.pause, r.resume, r.trigger);
  r.tr.append(r.actions);
  if (r.job) showButtons(r, r.job);
}
function dropButtons(r) {
  if (!r.actions) return;
  r.actions.remove();
  r.actions = r.pause = r.resume = r.trigger = null;
}
function showButtons(r, job) {
  r.pause.hidden = !!job.paused;
  r.resume.hidden = !job.paused;
  r.trigger.hidden = !job.enabled;
}
function setActions(mode) {
  if (mode === actions) return;
  actions = mode;
  const show = buttonsShown();
  document.getElementById("jobs").classList.toggle("no-actions", !show);
  for (const r of rows.values()) if (show) addButtons(r); else dropButtons(r);
  showAuth();
}
function matches(r) {
  if (filter.q && !r.name.toLowerCase().includes(filter.q.toLowerCase())) return false;
  return filter.states.size === 0 || [...filter.states].some(s => r.flags[s]);
}
// A row's data changed: its cells now; its marks and countdown when it is near the screen.
function update(r, job) {
  r.job = job;
  for (const s in STATES) r.flags[s] = STATES[s](job);
  r.tr.className = r.flags.failing ? "failing" : "";
  r.tr.hidden = !matches(r);
  const state = job.paused ? "paused" : job.state;
  const extra = (r.flags.drifting ? " · drift" : "") + (job.enabled ? "" : " · off");
  const why = job.paused ? " by " + job.paused.by + (job.paused.note ? ": " + job.paused.note : "") : "";
  setText(r.cells.state, state + why + extra);
  r.cells.state.className = "state " + (job.paused ? "paused" : job.state);
  setText(r.cells.leader, job.leader || "—");
  setText(r.cells.term, job.leader ? String(job.term) : "—");
  if (r.actions) showButtons(r, job);
  if (near.has(r)) paint(r);
}
function paint(r) {
  const job = r.job;
  if (!job) return;
  const now = Date.now() + skew;
  const next = job.next_fire_time ? new Date(job.next_fire_time) : null;
  setText(r.cells.next, next ? (next > now ? "in " + ago(next - now) : "due") : "—");
  const sig = job.runs.map(x => x.fire_time + x.outcome).join();
  if (r.sig === sig) return;
  r.sig = sig;
  const strip = el("div", { class: "strip" });
  for (const x of job.runs) {
    const kind = MARK[x.outcome] ? x.outcome : "other";
    const mark = el("button", { type: "button", class: "run " + kind, "data-fire": x.fire_time, title: x.fire_time + ": " + x.outcome + " on " + x.node + ", " + took(x), "aria-label": x.outcome + " at " + x.fire_time + ": show output" }, MARK[x.outcome] || "!");
    mark.addEventListener("click", () => openRun(job.name, x.fire_time));
    strip.append(mark);
  }
  r.cells.strip.replaceChildren(strip);
}
// Takes in a report (`full`: every job; else the rows changed and the names removed) and
// touches only the rows that changed; the table is reordered (failing first, then the file's
// order) only when a row came, went, or changed place.
function take(list, removed, full) {
  if (full) {
    list.forEach((job, i) => { job.position = i; });
    const keep = new Set(list.map(j => j.name));
    removed = [...jobs.keys()].filter(n => !keep.has(n));
  }
  let reorder = false;
  for (const name of removed) {
    jobs.delete(name);
    const r = rows.get(name);
    if (r) { sight.unobserve(r.tr); near.delete(r); r.tr.remove(); rows.delete(name); reorder = true; }
  }
  for (const job of list) {
    const old = jobs.get(job.name);
    jobs.set(job.name, job);
    const r = jobRow(job.name);
    const was = r.flags.failing;
    update(r, job);
    if (!old || old.position !== job.position || was !== r.flags.failing) reorder = true;
  }
  if (reorder) order();
  if (list.length || removed.length) counts();
}
function order() {
  const sorted = [...rows.values()].sort((a, b) => b.flags.failing - a.flags.failing || a.job.position - b.job.position);
  const tbody = document.querySelector("#jobs tbody");
  // Moving a row out of the document and back drops the focus inside it: put it back.
  const focused = document.activeElement;
  sorted.forEach((r, i) => { if (tbody.children[i] !== r.tr) tbody.insertBefore(r.tr, tbody.children[i] || null); });
  if (focused && focused !== document.activeElement && focused.isConnected) focused.focus({ preventScroll: true });
}
// The state filters with how many jobs are in each, and how many rows the filter shows.
const chips = {};
function counts() {
  const n = Object.fromEntries(Object.keys(STATES).map(s => [s, 0]));
  let shown = 0;
  for (const r of rows.values()) {
    for (const s in n) if (r.flags[s]) n[s]++;
    if (!r.tr.hidden) shown++;
  }
  for (const s in n) setText(chips[s].count, String(n[s]));
  const filtered = filter.q || filter.states.size;
  setText(document.getElementById("shown"), filtered ? shown + " of " + rows.size + " jobs shown" : rows.size + " jobs");
  document.getElementById("jobs-empty").hidden = !(filtered && shown === 0 && rows.size > 0);
}
function refilter() {
  for (const r of rows.values()) r.tr.hidden = !matches(r);
  for (const s in chips) chips[s].button.setAttribute("aria-pressed", String(filter.states.has(s)));
  counts();
  const p = new URLSearchParams();
  if (filter.q) p.set("q", filter.q);
  if (filter.states.size) p.set("state", [...filter.states].join(","));
  const query = p.toString();
  history.replaceState(history.state, "", location.pathname + (query ? "?" + query : "") + location.hash);
}
function readFilter() {
  const p = new URLSearchParams(location.search);
  filter.q = p.get("q") || "";
  filter.states = new Set((p.get("state") || "").split(",").filter(s => s in STATES));
  document.getElementById("filter").value = filter.q;
}
// The nodes table, from the nodes and the rows (the jobs each holds in its session).
function drawNodes() {
  const now = Date.now() + skew;
  const held = new Map();
  for (const job of jobs.values()) {
    if (job.leader && (job.state === "held" || job.state === "expiring")) {
      if (!held.has(job.leader)) held.set(job.leader, []);
      held.get(job.leader).push(job.name);
    }
  }
  const body = el("tbody");
  for (const n of nodes) {
    const mine = (held.get(n.id) || []).sort();
    const row = el("tr", { "data-node": n.id });
    row.append(el("th", { scope: "row" }, n.id));
    row.append(el("td", {}, ago(now - new Date(n.started_at)) + " ago"));
    row.append(el("td", {}, n.heartbeat_age_s.toFixed(1) + " s"));
    row.append(el("td", {}, n.clock_offset_ms == null ? "—" : n.clock_offset_ms + " ms"));
    row.append(el("td", {}, n.live ? "yes" : "no"));
    row.append(el("td", {}, mine.length === 0 ? "—" : mine.length <= 10 ? mine.join(", ") : mine.length + " jobs: " + mine.slice(0, 5).join(", ") + ", …"));
    body.append(row);
  }
  document.querySelector("#nodes tbody").replaceWith(body);
}
// Every second: the countdowns of the rows near the screen (and nothing else).
function tick() { for (const r of near) paint(r); }
function button(label, job, action) {
  const b = el("button", { type: "button", "data-action": action, "aria-label": label + " " + job }, label);
  b.addEventListener("click", () => act(job, action));
  return b;
}
async function act(job, action) {
  const field = document.getElementById("token");
  const token = field.value.trim() || tokenKept();
  if (!token) {
    tell("To pause, resume or run a job, enter an operate token here first.", "warn");
    field.focus();
    return;
  }
  if (action === "trigger" && !confirm("Run " + job + " now?")) return;
  let body = "";
  if (action === "pause") {
    const note = prompt("Pause " + job + ": why? (optional)", "");
    if (note === null) return;
    body = JSON.stringify({ note });
  }
  try {
    const r = await fetch("/api/jobs/" + encodeURIComponent(job) + "/" + action, {
      method: "POST", headers: bearer({ "Content-Type": "application/json" }, token), body,
    });
    const answer = await r.json().catch(() => ({}));
    const error = answer.error || r.status + " " + r.statusText;
    if (r.ok) {
      tell(job + ": " + (answer.result || "run requested"));
    } else if (r.status === 401) {
      tell(job + ": that token was refused (" + error + ")", "warn");
    } else if (r.status === 403 && /insufficient_scope/.test(r.headers.get("www-authenticate") || "")) {
      tell(job + ": this token can only read (" + error + ")", "warn");
    } else {
      tell(job + ": " + error, "warn");
    }
    // The token typed in is this tab's from now on, unless the node refused it.
    if (r.status !== 401 && token !== tokenKept()) useToken(token, false);
  } catch (e) {
    tell(job + ": " + e.message, "warn");
  }
  poll();
}
// The token form (#auth): shown where a token matters: the buttons ask for one, a read was
// refused for want of one, or the tab keeps one (to change or forget it).
// Why the reads stopped: null while they are answered, else "missing", "wrong" or "limited".
let refused = null;
function showAuth() {
  document.getElementById("auth").classList.toggle("shown", buttonsShown() || refused !== null || tokenKept() !== "");
  document.getElementById("forget").hidden = tokenKept() === "";
}
// The line beside the token form: what an action did, or why the page shows nothing.
// `kind`: "warn" to stand out; an "auth" line goes once the reads are answered again.
let noticeKind = "";
function tell(text, kind) {
  const n = document.getElementById("notice");
  setText(n, text || "");
  noticeKind = text ? kind || "" : "";
  n.className = noticeKind === "" ? "" : "warn";
}
// After a token was given: say what it may do, once the node answered with it.
let checking = false;
function useToken(token, check) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById("token").value = token;
  halted = false;
  if (refused === "wrong" || refused === "missing") refused = null;
  checking = check && !!token;
  showAuth();
  if (check) {
    if (Date.now() < holdUntil) tell("Too many wrong tokens from this address: the page tries this one in " + Math.ceil((holdUntil - Date.now()) / 1000) + " s.", "auth");
    else tell(token ? "Checking the token…" : "");
    poll(true);
    // A job's view opened without a token (a link to it) is read again with this one.
    if (reopen && token) {
      const name = reopen;
      reopen = null;
      history.replaceState(history.state, "", location.pathname + location.search + "#job=" + encodeURIComponent(name));
      openJob(name);
    }
  }
}
// The dialogs are modal: while the node wants a token, they close, so that the token form
// (behind them) can be used; a job's view opens again once a token is given.
let reopen = null;
function closeForToken() {
  const view = document.getElementById("job-view");
  if (view.open) { reopen = document.getElementById("job-title").textContent; view.close(); }
  const run = document.getElementById("detail");
  if (run.open) run.close();
}
// A read refused for its token (401) or for too many wrong tokens from this address (429).
function refusedRead(r, body) {
  if (r.status === 429) {
    const given = Number(r.headers.get("retry-after"));
    const secs = given > 0 ? Math.ceil(given) : 60;
    holdUntil = Date.now() + secs * 1000;
    refused = "limited";
    tell("Too many wrong tokens from this address: the node refuses every read for " + secs + " s; the page asks again then.", "auth");
    showAuth();
    return;
  }
  // 401: no poll until a token is given; what the page showed goes (this tab may not read it).
  const had = tokenKept() !== "";
  halted = true;
  refused = had ? "wrong" : "missing";
  checking = false;
  if (had) sessionStorage.removeItem(TOKEN_KEY);
  forgetReport();
  setActions(null);
  closeForToken();
  const field = document.getElementById("token");
  field.value = "";
  tell(had ? "That token was refused (" + (body.error || "401") + "): enter another one." : "This node needs a token to show its jobs: enter a read or operate token.", "auth");
  showAuth();
  field.focus();
}
function forgetReport() {
  take([], [], true);
  nodes = [];
  version = null;
  drawNodes();
  setText(document.getElementById("store"), "");
  setText(document.getElementById("updated"), "");
}
// One run, in the dialog: its record (header and kept output) from the store, then, while it
// runs, its output live (this node relays it from the node that runs it).
let detail = null;
const sleep = ms => new Promise(done => setTimeout(done, ms));
function openRun(job, fire) {
  if (detail) detail.abort();
  detail = new AbortController();
  const signal = detail.signal;
  document.getElementById("detail-title").textContent = job + " @ " + fire;
  document.getElementById("detail-head").textContent = "loading…";
  document.getElementById("detail-output").textContent = "";
  document.getElementById("detail-live").textContent = "";
  const dialog = document.getElementById("detail");
  if (!dialog.open) dialog.showModal();
  showRun("/api/runs/" + encodeURIComponent(job) + "/" + encodeURIComponent(fire), signal)
    .catch(e => { if (!signal.aborted) document.getElementById("detail-live").textContent = e.message; });
}
async function readRun(base, signal, streamed) {
  const r = await readNode(base, { signal });
  const body = await r.json();
  // Another run was opened (or the dialog closed) meanwhile: not this one's to show.
  if (signal.aborted) throw new DOMException("closed", "AbortError");
  if (!r.ok) throw new Error(body.error);
  document.getElementById("detail-head").textContent = body.header;
  // Just after a streamed run, its record lags behind what was streamed until the outcome lands.
  if (streamed && body.running) return body;
  const kept = (body.cut_marker ? body.cut_marker + "\n" : "") + body.output;
  document.getElementById("detail-output").textContent = kept || (body.running ? "" : "(no output kept)");
  return body;
}
async function showRun(base, signal) {
  const say = text => { if (!signal.aborted) document.getElementById("detail-live").textContent = text; };
  let run = await readRun(base, signal);
  if (!run.running) return;
  say("following the run live…");
  const r = await readNode(base + "/live", { signal });
  let streamed = false;
  if (r.ok) {
    const out = document.getElementById("detail-output");
    out.textContent = "";
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let shown = 0;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
        out.append(value);
        // Bounded: past 1 MB, the older half goes.
        shown += value.length;
        if (shown > 1048576) { out.textContent = out.textContent.slice(-524288); shown = 524288; }
        if (atEnd) out.scrollTop = out.scrollHeight;
      }
      streamed = true;
      say("the run ended; reading its outcome…");
    } catch (e) {
      if (signal.aborted) return;
      say("the stream broke off (" + e.message + "): its node may have died; waiting for the store to close the run…");
    }
  } else {
    const body = await r.json().catch(() => ({}));
    say((body.error || r.statusText) + "; reading the store…");
  }
  // The outcome lands in the store a moment after the stream's end. A run that cannot be
  // followed shows what the store keeps (its node refreshes it every output_refresh).
  while (!signal.aborted) {
    run = await readRun(base, signal, streamed);
    if (!run.running) { say(""); return; }
    await sleep(2000);
  }
}
function banner(text) {
  const b = document.getElementById("banner");
  b.textContent = text || "";
  b.className = text ? "shown" : "";
}
let polling = false;
// No poll while a read was refused for its token (until one is given: `halted`) or for too
// many wrong tokens from this address (until `holdUntil`); `again`: a poll asked for while
// one was under way (a token given) follows it.
let halted = false;
let holdUntil = 0;
let again = false;
async function poll(now) {
  if (polling) { again = again || now === true; return; }
  if (halted || Date.now() < holdUntil) return;
  // One poll at a time, each bounded: a slow node never piles requests up.
  polling = true;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 5000);
  let token = "";
  try {
    token = tokenKept();
    // With the version of the rows the page has: only what changed since (a node that does
    // not know that version, restarted say, answers with the whole report).
    const url = "/api/cluster" + (version ? "?since=" + encodeURIComponent(version) : "");
    const r = await readNode(url, { signal: abort.signal });
    // (A refusal's body may be anything; a report's must be whole.)
    const body = await r.json().catch(e => { if (r.ok) throw e; return {}; });
    // The token changed meanwhile: this answer is the old one's; the next poll asks again.
    if (token !== tokenKept()) { again = true; return; }
    if (r.status === 401 || r.status === 429) { refusedRead(r, body); return; }
    setActions(r.headers.get("x-cronlease-actions") || "none");
    if (refused !== null) refused = null;
    if (noticeKind === "auth") tell("");
    // A node that shows its jobs to anyone takes a token it does not know for none: drop it.
    if (token && actions === "login") {
      sessionStorage.removeItem(TOKEN_KEY);
      document.getElementById("token").value = "";
      checking = false;
      tell("That token was refused: it is not one of this node's (which shows its jobs without one).", "warn");
    }
    showAuth();
    if (r.ok) {
      const delta = body.since !== undefined;
      take(body.jobs, delta ? body.removed : [], !delta);
      nodes = body.nodes;
      setText(document.getElementById("store"), body.store);
      version = r.headers.get("x-cronlease-version");
      skew = new Date(body.generated_at) - Date.now();
      banner("");
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
      if (checking) {
        checking = false;
        tell(actions === "allowed" ? "Token accepted: it may pause, resume and run jobs." : "Token accepted: it can only read.");
      }
    } else if (r.status === 503 || r.status === 500) {
      // The node's last good report, for a page that has nothing yet; a page that has rows
      // keeps them and their version, so that it asks only for what changed once the node
      // reads the store again (not the whole report after each hiccup).
      if (body.last_good && version === null) {
        take(body.last_good.jobs, [], true);
        nodes = body.last_good.nodes;
      }
      banner("This node has lost the store: " + body.error + " (showing what it last read)");
    } else {
      banner("This node refuses to show its jobs (" + r.status + "): " + (body.error || r.statusText));
    }
    drawNodes();
  } catch (e) {
    banner("This node does not answer: " + e.message);
  } finally {
    clearTimeout(timer);
    polling = false;
    if (again) { again = false; setTimeout(poll, 0); }
  }
}
// A job's own view, opened from its name (the URL keeps it: #job=NAME): its last runs read
// from the store once per open, drawn here (no chart library, no network but that read).
let viewing = null;
function svg(tag, attrs, ...kids) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}
function chart(runs) {
  // Oldest left; a bar's height is the run's duration against the longest.
  const [W, H, TOP, BASE] = [600, 130, 16, 112];
  const list = [...runs].reverse();
  const ms = x => x.duration_ms == null ? null : x.duration_ms;
  const most = Math.max(1, ...list.map(x => ms(x) || 0));
  const step = W / Math.max(list.length, 1);
  const g = [svg("text", { x: 4, y: 12 }, (most / 1000).toFixed(1) + " s"), svg("line", { x1: 0, x2: W, y1: BASE, y2: BASE, stroke: "#d0d7de" })];
  list.forEach((x, i) => {
    const kind = MARK[x.outcome] ? x.outcome : "other";
    const h = ms(x) == null ? 2 : Math.max(1, (ms(x) / most) * (BASE - TOP));
    g.push(svg("rect", { class: "bar " + kind, x: (i * step + step * 0.1).toFixed(1), y: (BASE - h).toFixed(1), width: Math.max(1, step * 0.8).toFixed(1), height: h.toFixed(1), "data-fire": x.fire_time },
      svg("title", {}, x.fire_time + ": " + x.outcome + ", " + took(x))));
  });
  if (list.length) {
    g.push(svg("text", { x: 4, y: H - 4 }, new Date(list[0].fire_time).toLocaleString()));
    g.push(svg("text", { x: W - 4, y: H - 4, "text-anchor": "end" }, new Date(list[list.length - 1].fire_time).toLocaleString()));
  }
  document.getElementById("job-chart").replaceChildren(...g);
}
async function openJob(name) {
  const dialog = document.getElementById("job-view");
  if (viewing) viewing.abort();
  viewing = new AbortController();
  const signal = viewing.signal;
  setText(document.getElementById("job-title"), name);
  const say = text => setText(document.getElementById("job-schedule"), text);
  say("loading…");
  for (const id of ["job-counts", "job-chart", "job-next"]) document.getElementById(id).replaceChildren();
  document.querySelector("#job-runs tbody").replaceChildren();
  if (!dialog.open) dialog.showModal();
  try {
    const r = await readNode("/api/jobs/" + encodeURIComponent(name), { signal });
    const view = await r.json();
    if (signal.aborted) return;
    if (r.status === 401) { closeForToken(); return; }
    if (!r.ok) { say(view.error); return; }
    say(view.schedule + " (" + view.timezone + "), " + view.action + (view.enabled ? "" : ", off") + ": the last " + view.runs.length + " runs, read at " + new Date().toLocaleTimeString());
    document.getElementById("job-counts").replaceChildren(...Object.entries(view.counts).map(([outcome, n]) => el("span", { "data-outcome": outcome }, outcome + " " + n)));
    chart(view.runs);
    const now = Date.now() + skew;
    document.getElementById("job-next").replaceChildren(...view.next_fire_times.map(t => el("li", { "data-fire": t }, t + " (in " + ago(new Date(t) - now) + ")")));
    document.querySelector("#job-runs tbody").replaceChildren(...view.runs.map(x => {
      const open = el("button", { type: "button", class: "run-link", "data-fire": x.fire_time }, x.fire_time);
      open.addEventListener("click", () => openRun(name, x.fire_time));
      return el("tr", {}, el("td", {}, open), el("td", { class: "outcome" }, x.outcome + (x.reason ? " (" + x.reason + ")" : "")), el("td", {}, took(x)), el("td", {}, x.node));
    }));
  } catch (e) {
    if (!signal.aborted) say(e.message);
  }
}
// The view follows the URL's #job=NAME: a link to it opens it, Back closes it.
function followHash() {
  const m = location.hash.match(/^#job=(.+)$/);
  const dialog = document.getElementById("job-view");
  if (m) openJob(decodeURIComponent(m[1]));
  else if (dialog.open) dialog.close();
}
window.addEventListener("hashchange", followHash);
document.getElementById("job-view").addEventListener("close", () => {
  if (viewing) viewing.abort();
  viewing = null;
  if (location.hash.startsWith("#job=")) history.replaceState(history.state, "", location.pathname + location.search);
});
document.getElementById("detail").addEventListener("close", () => { if (detail) detail.abort(); detail = null; });
// The token form: submitted here (it never navigates; the policy forbids form actions).
document.getElementById("token").value = tokenKept();
document.getElementById("auth").addEventListener("submit", e => {
  e.preventDefault();
  useToken(document.getElementById("token").value.trim(), true);
});
document.getElementById("forget").addEventListener("click", () => useToken("", true));
showAuth();
for (const s in STATES) {
  const count = el("span", { class: "count" }, "0");
  const b = el("button", { type: "button", class: "chip", "data-state": s, "aria-pressed": "false", title: "only jobs: " + TITLES[s] }, s + " ", count);
  b.addEventListener("click", () => {
    if (filter.states.has(s)) filter.states.delete(s); else filter.states.add(s);
    refilter();
  });
  chips[s] = { button: b, count };
  document.getElementById("state-filters").append(b);
}
document.getElementById("filter").addEventListener("input", e => { filter.q = e.target.value; refilter(); });
readFilter();
refilter();
followHash();
poll();
setInterval(poll, POLL_MS);
setInterval(tick, 1000);
