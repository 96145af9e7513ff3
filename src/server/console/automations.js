// Automations: the list, and one automation with its immutable version history (what changed
// from one version to the next) and the graph of the version chosen.

import { useState } from "preact/hooks";
import { ActionButton, ErrorBox, Facts, Json, Loading, Status, Time, api, href, html, useAutomations, useLoad } from "./lib.js";
import { Graph } from "./graph.js";

export function AutomationsPage() {
  const list = useAutomations();
  return html`<section aria-labelledby="auto-h">
    <h1 id="auto-h">Automations</h1>
    <${ErrorBox} error=${list.error} />
    ${list.loading && !list.data ? html`<${Loading} what="Loading automations" />` : null}
    ${
      list.data
        ? html`<table class="automations">
      <caption>${list.data.list.length === 0 ? "No automations yet (POST /v1/automations creates one)." : `${list.data.list.length} automation${list.data.list.length === 1 ? "" : "s"}`}</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Key</th><th scope="col">Status</th><th scope="col">Version</th><th scope="col">Updated</th><th scope="col"><span class="sr-only">Runs</span></th></tr></thead>
      <tbody>${list.data.list.map(
        (a) => html`<tr>
        <td><a href=${href(`/automations/${a.id}`)}>${a.name}</a></td>
        <td><code>${a.key}</code></td>
        <td><${Status} status=${a.status} /></td>
        <td>v${a.version}</td>
        <td><${Time} iso=${a.updated_at} /></td>
        <td><a href=${href("/runs", { automation_id: a.id })}>Runs</a></td>
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
  const toggle = a.status === "active" ? "pause" : "activate";

  return html`<article aria-labelledby="a-h">
    <header class="page-head">
      <h1 id="a-h">${a.name} <${Status} status=${a.status} /></h1>
      <div class="actions" role="group" aria-label="Automation controls">
        <a class="button" href=${href("/runs", { automation_id: a.id })}>Runs</a>
        <${ActionButton} label=${toggle === "pause" ? "Pause" : "Activate"} onError=${setError}
          confirmText=${toggle === "pause" ? `Pause ${a.name}? It stops taking new runs; runs in flight go on.` : `Activate ${a.name}? It starts taking new runs.`}
          onAct=${async () => {
            await api("POST", `/v1/automations/${encodeURIComponent(a.id)}/${toggle}`);
            await res.reload(true);
          }} />
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
  </article>`;
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
