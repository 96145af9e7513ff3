// Automations: the list (activate / pause from it), and one automation with its immutable version
// history (what changed from one version to the next), the graph of the version chosen, and a
// simulation of the current version (an event pasted or uploaded, branches forced, the path shown).

import { useState } from "preact/hooks";
import { ActionButton, ErrorBox, Facts, Json, Loading, Status, Time, api, href, html, useAutomations, useLoad } from "./lib.js";
import { Graph } from "./graph.js";

/** Activate or pause, from the list or the automation's page. */
function ToggleButton({ automation: a, onDone, onError }) {
  const toggle = a.status === "active" ? "pause" : "activate";
  return html`<${ActionButton} label=${toggle === "pause" ? "Pause" : "Activate"} onError=${onError}
    confirmText=${toggle === "pause" ? `Pause ${a.name}? It stops taking new runs; runs in flight go on.` : `Activate ${a.name}? It starts taking new runs.`}
    onAct=${async () => {
      await api("POST", `/v1/automations/${encodeURIComponent(a.id)}/${toggle}`);
      await onDone();
    }} />`;
}

export function AutomationsPage() {
  const list = useAutomations();
  const [error, setError] = useState(null);
  return html`<section aria-labelledby="auto-h">
    <h1 id="auto-h">Automations</h1>
    <${ErrorBox} error=${list.error} />
    <${ErrorBox} error=${error} title="Activate or pause" />
    ${list.loading && !list.data ? html`<${Loading} what="Loading automations" />` : null}
    ${
      list.data
        ? html`<table class="automations">
      <caption>${list.data.list.length === 0 ? "No automations yet (weft apply -f FILE creates them)." : `${list.data.list.length} automation${list.data.list.length === 1 ? "" : "s"}`}</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Key</th><th scope="col">Status</th><th scope="col">Version</th><th scope="col">Updated</th><th scope="col"><span class="sr-only">Runs</span></th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
      <tbody>${list.data.list.map(
        (a) => html`<tr data-automation=${a.id}>
        <td><a href=${href(`/automations/${a.id}`)}>${a.name}</a></td>
        <td><code>${a.key}</code></td>
        <td><${Status} status=${a.status} /></td>
        <td>v${a.version}</td>
        <td><${Time} iso=${a.updated_at} /></td>
        <td><a href=${href("/runs", { automation_id: a.id })}>Runs</a></td>
        <td><${ToggleButton} automation=${a} onError=${setError} onDone=${() => list.reload(true)} /></td>
      </tr>`,
      )}</tbody>
    </table>`
        : null
    }
  </section>`;
}

async function loadAutomation(id) {
  const enc = encodeURIComponent(id);
  const automation = await api("GET", `/v1/automations/${enc}`);
  const versions = await Promise.all(Array.from({ length: automation.version }, (_, i) => api("GET", `/v1/automations/${enc}/versions/${i + 1}`)));
  return { automation, versions };
}

export function AutomationPage({ id, query }) {
  const res = useLoad(() => loadAutomation(id), [id]);
  const [error, setError] = useState(null);
  if (res.loading && !res.data) return html`<${Loading} what="Loading the automation" />`;
  if (!res.data) return html`<h1>Automation <code>${id}</code></h1><${ErrorBox} error=${res.error} />`;
  const { automation: a, versions } = res.data;
  const chosen = Math.min(Math.max(1, Number(query.v) || a.version), a.version);
  const v = versions[chosen - 1];
  const def = v.definition;

  return html`<article aria-labelledby="a-h">
    <header class="page-head">
      <h1 id="a-h">${a.name} <${Status} status=${a.status} /></h1>
      <div class="actions" role="group" aria-label="Automation controls">
        <a class="button" href=${href("/runs", { automation_id: a.id })}>Runs</a>
        <${ToggleButton} automation=${a} onError=${setError} onDone=${() => res.reload(true)} />
        <a class="button" href="#sim-h" onClick=${(e) => {
          e.preventDefault();
          document.getElementById("sim-h")?.scrollIntoView({ block: "start" });
        }}>Simulate</a>
      </div>
    </header>
    <${ErrorBox} error=${error} />
    <${Facts} rows=${[
      ["Id", html`<code>${a.id}</code>`],
      ["Key", html`<code>${a.key}</code>`],
      ["Current version", `v${a.version}`],
      ["Created", html`<${Time} iso=${a.created_at} />`],
      ["Updated", html`<${Time} iso=${a.updated_at} />`],
      ["Webhooks", a.hooks?.length ? html`${a.hooks.map((h) => html`<code>POST ${h.path}</code> `)}` : null],
    ]} />

    <section aria-labelledby="hist-h">
      <h2 id="hist-h">Version history</h2>
      <p class="muted">Versions are immutable; a run stays on the version it started with.</p>
      <table class="versions">
        <caption>${versions.length} version${versions.length === 1 ? "" : "s"}, newest first</caption>
        <thead><tr><th scope="col">Version</th><th scope="col">Created</th><th scope="col">Nodes</th><th scope="col">Changes from the one before</th></tr></thead>
        <tbody>${[...versions].reverse().map(
          (ver) => html`<tr class=${ver.version === chosen ? "selected" : ""}>
          <td><a href=${href(`/automations/${a.id}`, { v: ver.version })} aria-current=${ver.version === chosen ? "true" : undefined}>v${ver.version}</a>${ver.version === a.version ? html` <span class="badge">current</span>` : null}</td>
          <td><${Time} iso=${ver.created_at} /></td>
          <td>${(ver.definition.nodes ?? []).length}</td>
          <td>${changes(versions[ver.version - 2]?.definition, ver.definition)}</td>
        </tr>`,
        )}</tbody>
      </table>
    </section>

    <section aria-labelledby="graph-h">
      <h2 id="graph-h">Graph of version ${chosen}</h2>
      <${Graph} definition=${def} label=${`Graph of ${a.name} version ${chosen}`} />
      <h3>Triggers</h3>
      ${
        (def.triggers ?? []).length === 0
          ? html`<p class="muted">No triggers: runs start by enrollment only.</p>`
          : html`<ul>
        ${def.triggers.map((t) => html`<li><strong>${t.type}</strong> ${triggerText(t)}</li>`)}
      </ul>`
      }
      <details><summary>Definition (JSON)</summary><${Json} value=${def} label=${`Definition of version ${chosen}`} /></details>
    </section>

    <${Simulate} automation=${a} definition=${versions[a.version - 1].definition} />
  </article>`;
}

/** A JSON object from a text field, or an error naming the field (never a half-parsed value). */
function parseObject(text, field) {
  if (!text.trim()) return undefined;
  let v;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw { code: "console.invalid_json", message: `${field} is not JSON: ${e.message}`, details: { pointer: `/${field}` } };
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    throw { code: "console.invalid_json", message: `${field} must be a JSON object`, details: { pointer: `/${field}` } };
  }
  return v;
}

/** A file's text into a field (a local read: nothing is uploaded until Simulate is pressed). */
const loadFile = (setText) => async (e) => {
  const file = e.currentTarget.files?.[0];
  if (file) setText(await file.text());
};

/**
 * Simulate the current version: writes and sends nothing, so a viewer may run it too. The event
 * and the forced branches come from a field or a file; the path it takes is listed and marked on
 * the graph.
 */
function Simulate({ automation: a, definition }) {
  const [form, setForm] = useState({ event: "", context: "", branches: "", subject_id: "", start: "" });
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (name) => (e) => setForm({ ...form, [name]: e.currentTarget.value });
  const setText = (name) => (text) => setForm((f) => ({ ...f, [name]: text }));
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    setBusy(true);
    try {
      const body = {};
      const event = parseObject(form.event, "event");
      const context = parseObject(form.context, "test_context");
      const branches = parseObject(form.branches, "branch_choices");
      if (event) body.event = event;
      if (context) body.test_context = context;
      if (branches) body.branch_choices = branches;
      if (form.subject_id.trim()) body.subject_id = form.subject_id.trim();
      if (form.start) body.start_node_key = form.start;
      setResult(await api("POST", `/v1/automations/${encodeURIComponent(a.id)}/simulate`, body));
    } catch (err) {
      setResult(null);
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const marks = new Map((result?.steps ?? []).map((s) => [s.node_key, s.error ? "failed" : "visited"]));
  return html`<section aria-labelledby="sim-h" class="simulate">
    <h2 id="sim-h">Simulate version ${a.version}</h2>
    <p class="muted">Walks the current version as a run would, with what you give it; it sends and writes nothing.</p>
    <form class="sim-form" onSubmit=${submit} aria-label="Simulate">
      <label>Trigger event (JSON)
        <textarea name="event" rows="5" value=${form.event} onInput=${set("event")} placeholder='{"type": "signup", "payload": {"plan": "pro"}}' spellcheck="false"></textarea>
      </label>
      <label>Event from a file
        <input type="file" name="event_file" accept="application/json,.json" onChange=${loadFile(setText("event"))} />
      </label>
      <label>Test context (JSON)
        <textarea name="test_context" rows="3" value=${form.context} onInput=${set("context")} placeholder='{"name": "Ada"}' spellcheck="false"></textarea>
      </label>
      <label>Forced branches (JSON: node key → port)
        <textarea name="branch_choices" rows="3" value=${form.branches} onInput=${set("branches")} placeholder='{"vip": "false"}' spellcheck="false"></textarea>
      </label>
      <label>Forced branches from a file
        <input type="file" name="branches_file" accept="application/json,.json" onChange=${loadFile(setText("branches"))} />
      </label>
      <label>Subject
        <input name="subject_id" value=${form.subject_id} onInput=${set("subject_id")} placeholder="ct_123" autocomplete="off" />
      </label>
      <label>Start at
        <select name="start_node_key" value=${form.start} onChange=${set("start")}>
          <option value="">the root</option>
          ${(definition.nodes ?? []).map((n) => html`<option value=${n.key}>${n.key}</option>`)}
        </select>
      </label>
      <div class="filter-actions"><button type="submit" class="primary" disabled=${busy}>${busy ? "Simulating…" : "Simulate"}</button></div>
    </form>
    <${ErrorBox} error=${error} title="Simulation" />
    ${
      result
        ? html`<div class="sim-result" data-testid="simulation">
      <p><strong>Simulated path</strong> (<${Status} status=${result.status} />${result.exit_reason ? ` ${result.exit_reason}` : ""}):
        <span class="sim-path">${result.steps.map((s, i) => html`${i ? " → " : ""}<code>${s.node_key}</code>${s.port ? html`<span class="muted">[${s.port}${s.forced ? ", forced" : ""}]</span>` : null}`)}</span></p>
      <ol class="sim-steps">${result.steps.map(
        (s) => html`<li data-node=${s.node_key}>
        <strong>${s.node_key}</strong> <span class="kind">${s.kind}</span> ${s.port ? html`→ <code>${s.port}</code>` : null} ${s.forced ? html`<span class="badge">forced</span>` : null}
        ${s.error ? html`<div class="step-error"><code class="code">${s.error.code}</code> ${s.error.message}</div>` : null}
        ${s.note ? html`<div class="muted">${s.note}</div>` : null}
        ${s.would_send !== undefined ? html`<details><summary>Would send</summary><${Json} value=${s.would_send} label=${`What ${s.node_key} would send`} /></details>` : null}
        <details><summary>Resolved</summary><${Json} value=${s.resolved} label=${`${s.node_key} resolved`} /></details>
      </li>`,
      )}</ol>
      <${Graph} definition=${definition} label=${`Graph of ${a.name} version ${a.version}, with the simulated path marked`} marks=${marks} />
      <details><summary>Context at the end</summary><${Json} value=${result.context} label="Simulated context" /></details>
    </div>`
        : null
    }
  </section>`;
}

function triggerText(t) {
  if (t.type === "record") return `${t.entity} ${(t.on ?? []).join("/")}${t.fields ? ` of ${t.fields.join(", ")}` : ""}${t.filter ? ` where ${t.filter}` : ""}`;
  if (t.type === "event") return `${t.name}${t.filter ? ` where ${t.filter}` : ""}`;
  if (t.type === "schedule") return `${t.cron}${t.timezone ? ` (${t.timezone})` : ""}`;
  return "";
}

/** What changed between two versions, in a line: nodes added, removed, changed; edges; triggers. */
function changes(before, after) {
  if (!before) return html`<span class="muted">first version</span>`;
  const map = (d) => new Map((d.nodes ?? []).map((n) => [n.key, JSON.stringify(n)]));
  const b = map(before);
  const a = map(after);
  const added = [...a.keys()].filter((k) => !b.has(k));
  const removed = [...b.keys()].filter((k) => !a.has(k));
  const changed = [...a.keys()].filter((k) => b.has(k) && b.get(k) !== a.get(k));
  const parts = [];
  if (added.length) parts.push(`added ${added.join(", ")}`);
  if (removed.length) parts.push(`removed ${removed.join(", ")}`);
  if (changed.length) parts.push(`changed ${changed.join(", ")}`);
  if (JSON.stringify(before.edges ?? []) !== JSON.stringify(after.edges ?? [])) parts.push("edges");
  if (JSON.stringify(before.triggers ?? []) !== JSON.stringify(after.triggers ?? [])) parts.push("triggers");
  const rest = ["name", "root", "subject", "reentry", "run_as"].filter((k) => JSON.stringify(before[k]) !== JSON.stringify(after[k]));
  if (rest.length) parts.push(rest.join(", "));
  return parts.length ? parts.join("; ") : html`<span class="muted">no change</span>`;
}
