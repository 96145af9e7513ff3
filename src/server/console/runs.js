// Run history (filters and cursor paging) and one run: its header, the explanation of where it
// is and why, the run thread step by step, its items and approvals, and stop / cancel, and for an
// ended run re-trigger or redrive (on its own version or the current one), the right one advised.

import { useState } from "preact/hooks";
import {
  ActionButton,
  AutomationName,
  ErrorBox,
  Facts,
  Json,
  Loading,
  RUN_STATUSES,
  Status,
  TERMINAL,
  Time,
  api,
  fmtDuration,
  fromLocalInput,
  href,
  html,
  navigate,
  qs,
  runAsText,
  toLocalInput,
  useAutomations,
  useInterval,
  useLoad,
} from "./lib.js";
import { Graph } from "./graph.js";
import { ApprovalsTable } from "./approvals.js";
import { SubjectResume } from "./subjects.js";

const FILTERS = ["automation_id", "status", "subject_id", "started_after", "started_before"];
const PAGE_SIZES = [10, 25, 50, 100];

// ---------------------------------------------------------------------------------------------
// Run history

export function RunsPage({ query }) {
  const automations = useAutomations();
  const limit = Number(query.limit) || 25;
  const key = JSON.stringify(query);
  const runs = useLoad(() => api("GET", `/v1/automation-runs${qs({ ...pick(query, FILTERS), cursor: query.cursor, limit })}`), [key]);
  const list = runs.data?.items ?? [];

  return html`<section aria-labelledby="runs-h">
    <h1 id="runs-h">Runs</h1>
    <${RunFilters} key=${key} query=${query} limit=${limit} automations=${automations.data} />
    <${ErrorBox} error=${automations.error} title="Automations" />
    <${ErrorBox} error=${runs.error} />
    ${runs.loading && !runs.data ? html`<${Loading} what="Loading runs" />` : null}
    ${
      runs.data
        ? html`<table class="runs">
      <caption>
        ${list.length === 0 ? "No runs match." : `${list.length} run${list.length === 1 ? "" : "s"}${query.cursor ? " (a later page)" : ""}, newest first`}
      </caption>
      <thead><tr>
        <th scope="col">Run</th><th scope="col">Automation</th><th scope="col">Version</th><th scope="col">Status</th>
        <th scope="col">Subject</th><th scope="col">Trigger</th><th scope="col">Started</th><th scope="col">Duration</th><th scope="col">Items</th>
      </tr></thead>
      <tbody>
        ${list.map(
          (r) => html`<tr>
          <td><a href=${href(`/runs/${r.id}`)}><code>${r.id}</code></a></td>
          <td><${AutomationName} id=${r.automation_id} automations=${automations.data} /></td>
          <td>v${r.version}</td>
          <td><${Status} status=${r.status} />${r.exit_reason && r.exit_reason !== r.status && r.exit_reason !== "completed" ? html` <span class="muted">${r.exit_reason}</span>` : null}</td>
          <td>${r.subject_id ? html`<a href=${href("/runs", { subject_id: r.subject_id })} title=${`Runs of subject ${r.subject_id}`}>${r.subject_id}</a>` : html`<span class="muted">—</span>`}</td>
          <td>${r.trigger_type}</td>
          <td><${Time} iso=${r.started_at} /></td>
          <td>${r.completed_at ? fmtDuration(Date.parse(r.completed_at) - Date.parse(r.started_at)) : html`<span class="muted">running</span>`}</td>
          <td>${r.items_total ? `${r.items_total}${r.items_failed ? `, ${r.items_failed} failed` : ""}` : html`<span class="muted">—</span>`}</td>
        </tr>`,
        )}
      </tbody>
    </table>
    <nav class="pager" aria-label="Pages of runs">
      ${query.cursor ? html`<a class="button" href=${href("/runs", { ...query, cursor: "" })}>First page</a>` : null}
      ${runs.data.next_cursor ? html`<a class="button" rel="next" href=${href("/runs", { ...query, cursor: runs.data.next_cursor })}>Next page</a>` : null}
      <label>Per page
        <select value=${String(limit)} onChange=${(e) => navigate("/runs", { ...query, cursor: "", limit: e.currentTarget.value })}>
          ${[...new Set([...PAGE_SIZES, limit])].sort((a, b) => a - b).map((n) => html`<option value=${String(n)}>${n}</option>`)}
        </select>
      </label>
      <button type="button" onClick=${() => runs.reload(true)}>Refresh</button>
    </nav>`
        : null
    }
  </section>`;
}

function RunFilters({ query, limit, automations }) {
  // Keyed by the query: a new hash (a link, back/forward) starts the form from what the list shows.
  const [form, setForm] = useState(() => formFrom(query));
  const set = (name) => (e) => setForm({ ...form, [name]: e.currentTarget.value });
  const filtered = FILTERS.some((f) => query[f]);
  const submit = (e) => {
    e.preventDefault();
    navigate("/runs", {
      automation_id: form.automation_id,
      status: form.status,
      subject_id: form.subject_id.trim(),
      started_after: fromLocalInput(form.started_after),
      started_before: fromLocalInput(form.started_before),
      limit: limit === 25 ? "" : limit,
    });
  };
  return html`
    <form class="filters" onSubmit=${submit} aria-label="Filter runs">
      <label>Automation
        <select name="automation_id" value=${form.automation_id} onChange=${set("automation_id")}>
          <option value="">All automations</option>
          ${(automations?.list ?? []).map((a) => html`<option value=${a.id}>${a.name}</option>`)}
        </select>
      </label>
      <label>Status
        <select name="status" value=${form.status} onChange=${set("status")}>
          <option value="">Any status</option>
          ${RUN_STATUSES.map((s) => html`<option value=${s}>${s.replace(/_/g, " ")}</option>`)}
        </select>
      </label>
      <label>Subject
        <input name="subject_id" value=${form.subject_id} onInput=${set("subject_id")} placeholder="e.g. ct_123" autocomplete="off" />
      </label>
      <label>Started after
        <input type="datetime-local" name="started_after" value=${form.started_after} onInput=${set("started_after")} />
      </label>
      <label>Started before
        <input type="datetime-local" name="started_before" value=${form.started_before} onInput=${set("started_before")} />
      </label>
      <div class="filter-actions">
        <button type="submit" class="primary">Apply filters</button>
        ${filtered ? html`<a class="button" href=${href("/runs")}>Clear</a>` : null}
      </div>
    </form>
  `;
}

const pick = (o, keys) => Object.fromEntries(keys.filter((k) => o[k]).map((k) => [k, o[k]]));
const formFrom = (q) => ({
  automation_id: q.automation_id ?? "",
  status: q.status ?? "",
  subject_id: q.subject_id ?? "",
  started_after: toLocalInput(q.started_after),
  started_before: toLocalInput(q.started_before),
});

// ---------------------------------------------------------------------------------------------
// One run

async function loadRun(id) {
  const enc = encodeURIComponent(id);
  const [run, explain, steps, items, approvals] = await Promise.all([
    api("GET", `/v1/automation-runs/${enc}`),
    api("GET", `/v1/automation-runs/${enc}/explain`),
    api("GET", `/v1/automation-runs/${enc}/steps`),
    // One bounded page of items (a fan-out may have 100,000); the run's counts give the whole.
    api("GET", `/v1/automation-runs/${enc}/items?limit=200`),
    api("GET", "/v1/approvals?limit=200").catch(() => ({ items: [] })),
  ]);
  // The version the run is pinned to, for its graph, and the automation's current version, for
  // the redrive advice (missing is not fatal: the thread still shows).
  const [version, automation] = await Promise.all([
    api("GET", `/v1/automations/${encodeURIComponent(run.automation_id)}/versions/${run.version}`).catch(() => null),
    api("GET", `/v1/automations/${encodeURIComponent(run.automation_id)}`).catch(() => null),
  ]);
  return {
    run,
    automation,
    explain,
    steps: steps.items,
    items: items.items,
    moreItems: items.next_cursor !== null,
    approvals: approvals.items.filter((a) => a.run_id === id),
    version,
  };
}

export function RunPage({ id, query }) {
  const automations = useAutomations();
  const res = useLoad(() => loadRun(id), [id]);
  const [actionError, setActionError] = useState(null);
  const [notice, setNotice] = useState(query.notice ?? null);
  const live = res.data && !TERMINAL.has(res.data.run.status);
  useInterval(() => res.reload(true), 2000, live);

  if (res.loading && !res.data) return html`<${Loading} what="Loading the run" />`;
  if (!res.data) return html`<h1>Run <code>${id}</code></h1><${ErrorBox} error=${res.error} />`;
  const { run, automation, explain, steps, items, moreItems, approvals, version } = res.data;
  const terminal = TERMINAL.has(run.status);
  const control = (verb, body) => async () => {
    setActionError(null);
    const out = await api("POST", `/v1/automation-runs/${encodeURIComponent(run.id)}/${verb}`, body);
    if (verb === "retrigger") {
      navigate(`/runs/${out.id}`, { notice: `Re-triggered from ${run.id}${out.duplicate ? " (an existing re-trigger was returned)" : ""}.` });
      return;
    }
    const done = { stop: "Run stopped.", cancel: "Run cancelled.", redrive: `Redriven on version ${out?.version}: it resumes at its failed step.` };
    setNotice(done[verb]);
    await res.reload(true);
  };
  const rec = recovery(run, steps, automation);
  const marks = new Map();
  for (const s of steps) marks.set(s.node_key, s.outcome === "failed" ? "failed" : "visited");
  if (!terminal && run.current_node_key) marks.set(run.current_node_key, "current");

  return html`<article class="run" aria-labelledby="run-h">
    <header class="page-head">
      <h1 id="run-h">Run <code>${run.id}</code> <${Status} status=${run.status} /></h1>
      <div class="actions" role="group" aria-label="Run controls">
        <${ActionButton} label="Stop" disabled=${terminal} onError=${setActionError} onAct=${control("stop")}
          confirmText=${`Stop run ${run.id}? It exits with admin_stopped at its current step.`} />
        <${ActionButton} label="Cancel" disabled=${terminal} onError=${setActionError} onAct=${control("cancel")}
          confirmText=${`Cancel run ${run.id}? Items not started are skipped; items in flight finish.`} />
        <button type="button" onClick=${() => res.reload(true)}>Refresh</button>
      </div>
    </header>
    ${notice ? html`<p class="notice" role="status">${notice}</p>` : null}
    <${ErrorBox} error=${actionError} title="Control" />
    <${ErrorBox} error=${res.error} title="Refresh" />

    <${Explanation} explain=${explain} steps=${steps} run=${run} onChanged=${() => res.reload(true)} />

    ${terminal ? html`<${Recovery} run=${run} rec=${rec} control=${control} onError=${setActionError} />` : null}

    <section aria-labelledby="facts-h">
      <h2 id="facts-h">Run</h2>
      <${Facts} rows=${[
        ["Status", html`<${Status} status=${run.status} />`],
        ["Exit reason", run.exit_reason ?? html`<span class="muted">—</span>`],
        [
          "Automation",
          html`<${AutomationName} id=${run.automation_id} automations=${automations.data} /> <a href=${href(`/automations/${run.automation_id}`, { v: run.version })}>version ${run.version}</a>`,
        ],
        [
          "Subject",
          run.subject_id ? html`<a href=${href("/runs", { subject_id: run.subject_id })}>${run.subject_id}</a>` : html`<span class="muted">none</span>`,
        ],
        ["Trigger", html`${run.trigger_type}${run.event_id ? html` · event <code>${run.event_id}</code>` : null}`],
        ["Trace id", html`<code>${run.trace_id}</code>`],
        ["Runs as", runAsText(run.run_as)],
        ["Current node", run.current_node_key ? html`<code>${run.current_node_key}</code>` : null],
        ["Waiting for", run.waiting_for ? html`${run.waiting_for}${run.waiting_until ? html` until <${Time} iso=${run.waiting_until} />` : null}` : null],
        ["Interruptions", String(run.interruptions)],
        ["Attempt", String(currentAttempt(run, steps))],
        ["Items", run.items_total ? `${run.items_total} total, ${run.items_failed} failed` : "none"],
        ["Started", html`<${Time} iso=${run.started_at} ago />`],
        [
          "Completed",
          run.completed_at
            ? html`<${Time} iso=${run.completed_at} /> (${fmtDuration(Date.parse(run.completed_at) - Date.parse(run.started_at))})`
            : html`<span class="muted">not yet</span>`,
        ],
      ]} />
    </section>

    <section aria-labelledby="thread-h">
      <h2 id="thread-h">Run thread <span class="muted">(${threadEntries(steps).length} step${threadEntries(steps).length === 1 ? "" : "s"})</span></h2>
      ${steps.length === 0 ? html`<p class="muted">No step has run yet.</p>` : html`<ol class="thread">${threadEntries(steps).map((s, i) => html`<${Step} step=${s} n=${i + 1} />`)}</ol>`}
    </section>

    ${items.length > 0 ? html`<${Items} items=${items} more=${moreItems} run=${run} onChanged=${() => res.reload(true)} />` : null}

    ${
      approvals.length > 0
        ? html`<section aria-labelledby="appr-h">
      <h2 id="appr-h">Approvals of this run</h2>
      <${ApprovalsTable} approvals=${approvals} caption="Approvals requested by this run" showRun=${false} onDecided=${() => res.reload(true)} />
    </section>`
        : null
    }

    ${
      version
        ? html`<section aria-labelledby="path-h">
      <h2 id="path-h">Its path through version ${run.version}</h2>
      <${Graph} definition=${version.definition} label=${`Graph of version ${run.version}, with the nodes this run visited marked`} marks=${marks} />
    </section>`
        : null
    }

    <section aria-labelledby="data-h">
      <h2 id="data-h">Data</h2>
      <details><summary>Context</summary><${Json} value=${run.context} label="Run context" /></details>
      <details><summary>Trigger event</summary><${Json} value=${run.event} label="Trigger event" /></details>
    </section>
  </article>`;
}

/**
 * The thread as a person reads it: a wait is recorded as two step rows (the node parks as
 * `waiting`, and the row of the same visit that ends the wait), shown as ONE entry: the row that
 * ended it, with when the wait began. A wait still in progress shows its `waiting` row.
 */
export function threadEntries(steps) {
  const ended = new Map();
  for (const s of steps) if (s.outcome !== "waiting") ended.set(`${s.node_key}#${s.visit}`, s);
  const waitedFrom = new Map();
  const out = [];
  for (const s of steps) {
    const visit = `${s.node_key}#${s.visit}`;
    if (s.outcome === "waiting" && ended.has(visit)) {
      if (!waitedFrom.has(visit)) waitedFrom.set(visit, s.started_at);
      continue;
    }
    out.push(waitedFrom.has(visit) ? { ...s, waited_since: waitedFrom.get(visit) } : s);
  }
  return out;
}

/** The attempt the run is at, from its steps: a failed run's cursor is reset, its last step row still counts. */
function currentAttempt(run, steps) {
  const last = [...steps].reverse().find((s) => s.node_key === run.current_node_key) ?? steps[steps.length - 1];
  return Math.max(run.attempt, last?.attempt ?? 0);
}

/**
 * Which way back an ended run has, and which one to take. Redrive (a failed run, or one an
 * operator stopped) resumes the same run at its failed step under the same idempotency keys, so
 * the steps that succeeded are not run again; re-trigger starts a new run from the root for the
 * same trigger event, repeating every effect. Redrive on the current version when a newer
 * version exists (the fix is usually there), else on its own.
 */
export function recovery(run, steps, automation) {
  const redrivable = run.status === "failed" || (run.status === "exited" && run.exit_reason === "admin_stopped");
  const current = automation?.version ?? run.version;
  const succeeded = steps.filter((s) => s.outcome === "succeeded").length;
  if (!redrivable)
    return {
      redrivable,
      current,
      recommended: "retrigger",
      why: "Only a failed or stopped run can be redriven; re-trigger starts a new run of the current version for the same event.",
    };
  const version = current > run.version ? "current" : "own";
  const where = version === "current" ? `on the current version (v${current}, newer than its v${run.version})` : `on its own version (v${run.version})`;
  if (succeeded > 0) {
    return {
      redrivable,
      current,
      recommended: `redrive-${version}`,
      why: `Redrive ${where}: it resumes at the failed step, and the ${succeeded} step${succeeded === 1 ? "" : "s"} that succeeded ${succeeded === 1 ? "is" : "are"} not run again. Re-triggering would repeat their effects.`,
    };
  }
  return {
    redrivable,
    current,
    recommended: `redrive-${version}`,
    why: `Redrive ${where}: it resumes this run at its first step, keeping its history in one place. No step succeeded before the failure, so re-triggering (a new run from the start) would repeat nothing either.`,
  };
}

function Recovery({ run, rec, control, onError }) {
  const btn = (key, label, verb, body, confirmText) =>
    html`<${ActionButton} label=${label} className=${rec.recommended === key ? "primary" : ""} onError=${onError} onAct=${control(verb, body)} confirmText=${confirmText} />`;
  return html`<section class="recovery" aria-labelledby="recover-h" data-testid="recovery">
    <h2 id="recover-h">Run it again</h2>
    <p class="advice"><strong>Recommended:</strong> ${rec.why}</p>
    <div class="actions" role="group" aria-label="Run it again">
      ${
        rec.redrivable
          ? html`${btn("redrive-own", `Redrive on its version (v${run.version})`, "redrive", { version: "own" }, `Redrive run ${run.id} on version ${run.version}? It resumes at its failed step.`)}
        ${rec.current !== run.version ? btn("redrive-current", `Redrive on the current version (v${rec.current})`, "redrive", { version: "current" }, `Redrive run ${run.id} on the current version ${rec.current}? It resumes at its failed step.`) : null}`
          : null
      }
      ${btn("retrigger", "Re-trigger", "retrigger", {}, `Start a new run of this automation from the start, for the same trigger event as ${run.id}?`)}
    </div>
  </section>`;
}

/**
 * Advice from the API names API calls; in the console each becomes the action it means (a link
 * to the page or button that does it), and a placeholder left in a path is filled with the run's id.
 */
export function ConsoleText({ text, run }) {
  if (!text) return null;
  const RULES = [
    [
      /\(?POST \/v1\/automation-runs\/[^/\s)]+\/retrigger\)?/,
      () => html`(the <a href="#recover-h" onClick=${(e) => jumpTo(e, "recover-h")}>Re-trigger</a> button)`,
    ],
    [
      /\(?POST \/v1\/automation-runs\/[^/\s)]+\/redrive\)?/,
      () => html`(the <a href="#recover-h" onClick=${(e) => jumpTo(e, "recover-h")}>Redrive</a> buttons)`,
    ],
    [/POST \/v1\/approvals\/\{id\}\/approve or reject/, () => html`<a href=${href("/approvals")}>Approve or Reject in Approvals</a>`],
    [
      /POST \/v1\/subjects\/([^/\s,]+)\/automation-resume/,
      (m) => html`the Resume button below (or <a href=${href(`/subjects/${m[1]}`)}>subject ${m[1]}</a>'s page)`,
    ],
  ];
  const parts = [];
  // Only a run path's placeholder is this run's id; the rules below turn every known call into its action.
  let rest = text.replaceAll("/v1/automation-runs/{id}/", `/v1/automation-runs/${run.id}/`);
  for (;;) {
    let best = null;
    for (const [re, render] of RULES) {
      const m = re.exec(rest);
      if (m && (!best || m.index < best.m.index)) best = { m, render };
    }
    if (!best) break;
    parts.push(rest.slice(0, best.m.index), best.render(best.m));
    rest = rest.slice(best.m.index + best.m[0].length);
  }
  parts.push(rest);
  return html`${parts}`;
}

/** The explanation: the first thing on the page, because "why is it here?" is the question. */
function Explanation({ explain, steps, run, onChanged }) {
  const f = explain.failed_step;
  const failedStep = f ? [...steps].reverse().find((s) => s.node_key === f.node_key && s.outcome === "failed") : null;
  const tone =
    f || explain.status === "failed"
      ? "bad"
      : explain.overdue || explain.status === "completed_with_failures"
        ? "warn"
        : TERMINAL.has(explain.status)
          ? "done"
          : "live";
  return html`<section class=${`explain tone-${tone}`} aria-labelledby="explain-h" data-testid="explanation">
    <h2 id="explain-h">Why it is ${explain.status === "completed" ? "done" : "here"}
      ${explain.overdue ? html` <span class="badge overdue">Overdue</span>` : null}</h2>
    <p class="summary"><${ConsoleText} text=${explain.summary} run=${run} /></p>
    ${
      explain.waiting
        ? html`<${Facts} className="facts compact" rows=${[
            ["Waiting for", html`<strong>${explain.waiting.for}</strong>`],
            ["Since", html`<${Time} iso=${explain.waiting.since} ago />`],
            ["Until", explain.waiting.until ? html`<${Time} iso=${explain.waiting.until} ago />` : "no deadline"],
            ["What would wake it", html`<${ConsoleText} text=${explain.waiting.wakes_on} run=${run} />`],
          ]} />
          ${explain.waiting.for === "subject_resume" && run.subject_id ? html`<${SubjectResume} subjectId=${run.subject_id} automationId=${run.automation_id} onResumed=${onChanged} />` : null}`
        : null
    }
    ${
      explain.lease
        ? html`<${Facts} className="facts compact" rows=${[
            ["Held by worker", html`<code>${explain.lease.owner}</code>`],
            ["Lease expires", html`<${Time} iso=${explain.lease.expires_at} ago />`],
          ]} />`
        : null
    }
    ${
      f
        ? html`<div class="cause">
      <h3>Failed step <a href=${failedStep ? `#step-${failedStep.id}` : undefined} onClick=${(e) => jumpTo(e, failedStep && `step-${failedStep.id}`)}><code>${f.node_key}</code></a></h3>
      <${Facts} className="facts compact" rows=${[
        ["Likely cause", html`<${ConsoleText} text=${f.cause} run=${run} />`],
        ["What to do", html`<strong><${ConsoleText} text=${f.advice} run=${run} /></strong>`],
        ["Error", html`<code class="code">${f.code}</code> ${f.message}`],
        ["Attempts", failedStep ? String(failedStep.attempt) : null],
        ["Retryable", retryableText(f, failedStep, run)],
      ]} />
    </div>`
        : null
    }
  </section>`;
}

/**
 * A failed run's failure is final: the engine will not try again by itself, whatever kind of
 * error it was. "yes" only while the run still retries (it never does once failed).
 */
function retryableText(f, failedStep, run) {
  if (!TERMINAL.has(run.status)) return f.retryable ? "yes" : "no";
  if (!f.retryable) return "no";
  return `no (final after ${failedStep?.attempt ?? "its"} attempt${failedStep?.attempt === 1 ? "" : "s"}; this kind of error is retried, and a redrive tries again)`;
}

/** In-page links would change the route hash: scroll and focus instead. */
function jumpTo(e, id) {
  e.preventDefault();
  const el = id && document.getElementById(id);
  if (!el) return;
  el.scrollIntoView({ block: "start" });
  el.focus({ preventScroll: true });
  const d = el.querySelector("details");
  if (d) d.open = true;
}

/** A step's error as the operator needs it: retried, or the end (a failed step is not tried again by itself). */
function stepErrorKind(s) {
  if (!s.error.retryable) return "permanent";
  return s.outcome === "failed" ? "final: attempts used up" : "retryable";
}

function Step({ step: s, n }) {
  const failed = s.outcome === "failed" || s.outcome === "retrying";
  return html`<li class=${`step out-${s.outcome}`} id=${`step-${s.id}`} tabindex="-1" aria-label=${`Step ${n}: ${s.node_key}, ${s.outcome}`}>
    <div class="step-head">
      <span class="step-n" aria-hidden="true">${n}</span>
      <strong class="step-key">${s.node_key}</strong>
      <span class="kind">${s.node_kind}</span>
      <${Status} status=${s.outcome} />
      <span class="ports">${s.entered_via_port_key ? html`in <code>${s.entered_via_port_key}</code>` : "start"} → ${s.exited_via_port_key ? html`out <code>${s.exited_via_port_key}</code>` : html`<span class="muted">no port</span>`}</span>
      <span class="muted">visit ${s.visit} · attempt ${s.attempt} · ${s.waited_since ? html`waited from <${Time} iso=${s.waited_since} /> · ` : null}${fmtDuration(s.duration_ms)} · <${Time} iso=${s.started_at} /></span>
    </div>
    <div class="step-body">
      <${Facts} className="facts compact" rows=${[
        ["Idempotency key", html`<code>${s.idempotency_key}</code>`],
        ["Finished", html`<${Time} iso=${s.finished_at} />`],
      ]} />
      ${
        s.error
          ? html`<div class="step-error" role="note" aria-label="Step error">
        <code class="code">${s.error.code}</code> ${s.error.message}
        <span class=${`badge ${s.error.retryable && s.outcome !== "failed" ? "st-retrying" : "st-failed"}`}>${stepErrorKind(s)}</span>
        ${s.error.details && Object.keys(s.error.details).length ? html`<details open=${failed}><summary>Error details</summary><${Json} value=${s.error.details} label="Error details" /></details>` : null}
      </div>`
          : null
      }
      ${
        s.policy_violations.length
          ? html`<div class="violations" role="note" aria-label="Policy violations">
        <strong>Policy violations</strong>
        <ul>${s.policy_violations.map((v) => html`<li><code>${v.permission}</code> ${v.message}</li>`)}</ul>
      </div>`
          : null
      }
      ${
        s.logs.length
          ? html`<div class="logs"><strong>Logs</strong>
        <ul>${s.logs.map((l) => html`<li class=${`log-${l.level}`}><span class="badge">${l.level}</span> <time datetime=${new Date(l.at).toISOString()}>${new Date(l.at).toLocaleTimeString()}</time> ${l.message}${l.data !== undefined ? html` <code>${JSON.stringify(l.data)}</code>` : null}</li>`)}</ul>
      </div>`
          : null
      }
      <details open=${failed}><summary>Input (templates resolved)</summary><${Json} value=${s.input} label=${`Input of ${s.node_key}`} /></details>
      <details open=${failed}><summary>Output</summary><${Json} value=${s.output} label=${`Output of ${s.node_key}`} /></details>
    </div>
  </li>`;
}

function Items({ items, more, run, onChanged }) {
  const [error, setError] = useState(null);
  const counts = {};
  for (const i of items) counts[i.outcome] = (counts[i.outcome] ?? 0) + 1;
  return html`<section aria-labelledby="items-h">
    <h2 id="items-h">Items</h2>
    <p>${Object.entries(counts).map(([k, v]) => html`<span class="count"><${Status} status=${k} /> ${v}</span> `)}</p>
    <${ErrorBox} error=${error} title="Retry" />
    <table class="items">
      <caption>${more ? `The first ${items.length} of ${run.items_total} items of the fan-out (${run.items_failed} failed in all)` : `${items.length} item${items.length === 1 ? "" : "s"} of the fan-out`}</caption>
      <thead><tr><th scope="col">#</th><th scope="col">Subject</th><th scope="col">Action</th><th scope="col">Outcome</th><th scope="col">Attempts</th><th scope="col">Error</th><th scope="col">Finished</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
      <tbody>${items.map(
        (i) => html`<tr>
        <td>${i.index}</td>
        <td>${i.subject_id ?? html`<span class="muted">—</span>`}</td>
        <td><code>${i.action_kind}</code></td>
        <td><${Status} status=${i.outcome} /></td>
        <td>${i.attempts}</td>
        <td>${
          i.error
            ? html`<code class="code">${i.error.code}</code> ${i.error.message}${
                i.error.details && Object.keys(i.error.details).length
                  ? html`<details><summary>Error details</summary><${Json} value=${i.error.details} label=${`Error details of item ${i.index}`} /></details>`
                  : null
              }`
            : i.next_attempt_at
              ? html`next attempt <${Time} iso=${i.next_attempt_at} />`
              : html`<span class="muted">—</span>`
        }</td>
        <td><${Time} iso=${i.finished_at} /></td>
        <td>${
          i.outcome === "failed"
            ? html`<${ActionButton} label="Retry" onError=${setError}
          confirmText=${`Retry item ${i.index} of run ${run.id} with the same idempotency key?`}
          onAct=${async () => {
            await api("POST", `/v1/automation-runs/${encodeURIComponent(run.id)}/items/${encodeURIComponent(i.id)}/retry`);
            onChanged();
          }} />`
            : null
        }</td>
      </tr>`,
      )}</tbody>
    </table>
  </section>`;
}
