// Subjects: look one up (#/subjects), and on its page (#/subjects/<id>) see the pauses in force,
// pause it (for every automation or one, with a required reason and an optional end) and resume
// it, through POST /v1/subjects/{id}/automation-pause and /automation-resume.

import { useState } from "preact/hooks";
import {
  ActionButton,
  AutomationName,
  ErrorBox,
  Loading,
  Time,
  api,
  fromLocalInput,
  href,
  html,
  navigate,
  useAutomations,
  useCanAct,
  useLoad,
  useReadOnlyNote,
} from "./lib.js";

export function SubjectsPage() {
  const [id, setId] = useState("");
  const open = (e) => {
    e.preventDefault();
    if (id.trim()) navigate(`/subjects/${encodeURIComponent(id.trim())}`);
  };
  return html`<section aria-labelledby="subjects-h">
    <h1 id="subjects-h">Subjects</h1>
    <p class="muted">A subject is whom a run is about (a contact, an account). Pausing one holds its runs and keeps new ones from starting, for every automation or for one.</p>
    <form class="filters" onSubmit=${open} aria-label="Open a subject">
      <label>Subject id
        <input name="subject_id" value=${id} onInput=${(e) => setId(e.currentTarget.value)} placeholder="e.g. ct_123" autocomplete="off" required />
      </label>
      <button type="submit" class="primary">Open</button>
    </form>
  </section>`;
}

export function SubjectPage({ id }) {
  const automations = useAutomations();
  const controls = useLoad(() => api("GET", `/v1/subjects/${encodeURIComponent(id)}/automation-controls`), [id]);
  const [notice, setNotice] = useState(null);
  const [error, setError] = useState(null);
  const changed = async (text) => {
    setError(null);
    setNotice(text);
    await controls.reload(true);
  };
  const rows = controls.data?.items ?? [];
  const resume = (automationId) => async () => {
    setError(null);
    const out = await resumeSubject(id, automationId);
    await changed(out.resumed ? `Resumed ${id}${automationId ? " for that automation" : " for every automation"}.` : `${id} was no longer paused there.`);
  };

  return html`<article aria-labelledby="subject-h">
    <p><a href=${href("/subjects")}>← Subjects</a></p>
    <header class="page-head">
      <h1 id="subject-h">Subject <code>${id}</code></h1>
      <div class="actions" role="group" aria-label="Subject links">
        <a class="button" href=${href("/runs", { subject_id: id })}>Runs of this subject</a>
        <a class="button" href=${href("/events", { subject_id: id })}>Events about it</a>
      </div>
    </header>
    ${notice ? html`<p class="notice" role="status">${notice}</p>` : null}
    <${ErrorBox} error=${error} title="Pause or resume" />
    <section aria-labelledby="controls-h">
      <h2 id="controls-h">Pauses in force</h2>
      <${ErrorBox} error=${controls.error} />
      ${controls.loading && !controls.data ? html`<${Loading} what="Loading its pauses" />` : null}
      ${
        controls.data
          ? html`<table class="controls">
        <caption>${rows.length === 0 ? "Not paused: its runs go on and new ones may start." : `${rows.length} pause${rows.length === 1 ? "" : "s"}`}</caption>
        <thead><tr><th scope="col">Applies to</th><th scope="col">Reason</th><th scope="col">Until</th><th scope="col">Since</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
        <tbody>${rows.map(
          (p) => html`<tr data-pause=${p.automation_id ?? "all"}>
          <td>${p.automation_id ? html`<${AutomationName} id=${p.automation_id} automations=${automations.data} />` : html`<strong>every automation</strong>`}</td>
          <td>${p.pause_reason}</td>
          <td>${p.paused_until ? html`<${Time} iso=${p.paused_until} ago />` : html`<span class="muted">until resumed</span>`}</td>
          <td><${Time} iso=${p.created_at} ago /></td>
          <td><${ActionButton} label="Resume" onError=${setError} onAct=${resume(p.automation_id)}
            confirmText=${`Resume ${id}${p.automation_id ? " for this automation" : " for every automation"}? Its parked runs go on.`} /></td>
        </tr>`,
        )}</tbody>
      </table>`
          : null
      }
    </section>
    <${PauseForm} id=${id} automations=${automations.data} onPaused=${(p) => changed(`Paused ${id}${p.automation_id ? " for one automation" : " for every automation"}: ${p.pause_reason}.`)} onError=${setError} />
  </article>`;
}

function PauseForm({ id, automations, onPaused, onError }) {
  const canAct = useCanAct();
  const note = useReadOnlyNote();
  const [form, setForm] = useState({ automation_id: "", pause_reason: "", paused_until: "" });
  const [busy, setBusy] = useState(false);
  const set = (name) => (e) => setForm({ ...form, [name]: e.currentTarget.value });
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    onError(null);
    try {
      const body = { pause_reason: form.pause_reason.trim() };
      if (form.automation_id) body.automation_id = form.automation_id;
      if (form.paused_until) body.paused_until = fromLocalInput(form.paused_until);
      const p = await api("POST", `/v1/subjects/${encodeURIComponent(id)}/automation-pause`, body);
      setForm({ automation_id: "", pause_reason: "", paused_until: "" });
      await onPaused(p);
    } catch (err) {
      onError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<section aria-labelledby="pause-h">
    <h2 id="pause-h">Pause</h2>
    <form class="filters" onSubmit=${submit} aria-label=${`Pause ${id}`}>
      <label>Reason (required)
        <input name="pause_reason" value=${form.pause_reason} onInput=${set("pause_reason")} required maxlength="200" placeholder="e.g. asked not to be contacted" />
      </label>
      <label>Automation
        <select name="automation_id" value=${form.automation_id} onChange=${set("automation_id")}>
          <option value="">Every automation</option>
          ${(automations?.list ?? []).map((a) => html`<option value=${a.id}>${a.name}</option>`)}
        </select>
      </label>
      <label>Until (optional)
        <input type="datetime-local" name="paused_until" value=${form.paused_until} onInput=${set("paused_until")} />
      </label>
      <div class="filter-actions">
        <button type="submit" class="danger" disabled=${busy || !canAct} title=${note}>${busy ? "Pausing…" : "Pause subject"}</button>
      </div>
    </form>
  </section>`;
}

const resumeSubject = (id, automationId) =>
  api("POST", `/v1/subjects/${encodeURIComponent(id)}/automation-resume`, automationId ? { automation_id: automationId } : {});

/**
 * On a run parked because its subject is paused: a Resume button for each pause that holds it
 * (one for every automation, or one for the run's automation), instead of an API call to copy.
 */
export function SubjectResume({ subjectId, automationId, onResumed }) {
  const [error, setError] = useState(null);
  const controls = useLoad(() => api("GET", `/v1/subjects/${encodeURIComponent(subjectId)}/automation-controls`), [subjectId]);
  const holding = (controls.data?.items ?? []).filter((p) => p.automation_id === null || p.automation_id === automationId);
  return html`<div class="subject-resume" role="group" aria-label=${`Resume ${subjectId}`}>
    ${holding.map(
      (
        p,
      ) => html`<${ActionButton} label=${`Resume ${subjectId}${p.automation_id ? " for this automation" : " (every automation)"}`} className="primary" onError=${setError}
        confirmText=${`Resume ${subjectId}${p.automation_id ? " for this automation" : " for every automation"}? Paused because: ${p.pause_reason}.`}
        onAct=${async () => {
          await resumeSubject(subjectId, p.automation_id);
          await onResumed?.();
        }} />`,
    )}
    <a href=${href(`/subjects/${subjectId}`)}>Subject ${subjectId}</a>
    <${ErrorBox} error=${error ?? controls.error} title="Resume" />
  </div>`;
}
