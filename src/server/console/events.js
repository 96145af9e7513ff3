// Events: search by subject, type and key (#/events), and an event's page (#/events/<id>) with
// why each automation that could have taken it did or did not, from GET /v1/events/{id}/explain.

import { useState } from "preact/hooks";
import { ErrorBox, Facts, Json, Loading, Time, api, href, html, navigate, qs, useLoad } from "./lib.js";

/** A named event by its name; a record change as `record <entity>` (the stored name of a record event is its entity). */
const typeText = (e) => (e.type === "event" ? e.name : e.type === "record" && e.name ? `record ${e.name}` : e.type);

export function EventsPage({ query }) {
  const [form, setForm] = useState({ subject_id: query.subject_id ?? "", type: query.type ?? "", key: query.key ?? "" });
  const filters = { subject_id: query.subject_id, type: query.type, key: query.key, cursor: query.cursor, limit: 50 };
  const list = useLoad(() => api("GET", `/v1/events${qs(filters)}`), [query.subject_id, query.type, query.key, query.cursor]);
  const field = (name, label, hint) => html`<label>${label}
    <input name=${name} value=${form[name]} placeholder=${hint} onInput=${(e) => setForm({ ...form, [name]: e.currentTarget.value })} />
  </label>`;
  const search = (e) => {
    e.preventDefault();
    navigate("/events", { subject_id: form.subject_id.trim(), type: form.type.trim(), key: form.key.trim() });
  };
  const rows = list.data?.items ?? [];
  return html`<section aria-labelledby="events-h">
    <h1 id="events-h">Events</h1>
    <form class="filters" onSubmit=${search} aria-label="Search events">
      ${field("subject_id", "Subject", "ct_123")}
      ${field("type", "Type", "record, or an event name")}
      ${field("key", "Key", "the key it was sent with")}
      <button type="submit" class="primary">Search</button>
    </form>
    <${ErrorBox} error=${list.error} />
    ${list.loading && !list.data ? html`<${Loading} what="Loading events" />` : null}
    ${
      list.data
        ? html`<table class="events">
      <caption>${rows.length === 0 ? "No events match." : `${rows.length} event${rows.length === 1 ? "" : "s"}, newest first`}</caption>
      <thead><tr><th scope="col">Event</th><th scope="col">Type</th><th scope="col">Subject</th><th scope="col">Key</th>
        <th scope="col">Received</th><th scope="col">Dispatched</th></tr></thead>
      <tbody>${rows.map(
        (e) => html`<tr data-event=${e.id}>
        <td><a href=${href(`/events/${e.id}`)}><code>${e.id}</code></a></td>
        <td>${typeText(e)}</td><td>${e.subject_id ?? html`<span class="muted">—</span>`}</td><td><code>${e.key}</code></td>
        <td><${Time} iso=${e.received_at} ago /></td>
        <td>${e.dispatched_at ? html`<${Time} iso=${e.dispatched_at} /> <span class="muted">(${e.runs_created} run${e.runs_created === 1 ? "" : "s"})</span>` : html`<strong>not yet</strong>`}</td>
      </tr>`,
      )}</tbody>
    </table>`
        : null
    }
    ${list.data?.next_cursor ? html`<p><a href=${href("/events", { subject_id: query.subject_id, type: query.type, key: query.key, cursor: list.data.next_cursor })}>Older events</a></p>` : null}
  </section>`;
}

export function EventPage({ id }) {
  const data = useLoad(async () => {
    const [event, why] = await Promise.all([api("GET", `/v1/events/${encodeURIComponent(id)}`), api("GET", `/v1/events/${encodeURIComponent(id)}/explain`)]);
    return { event, why };
  }, [id]);
  if (data.error) return html`<${ErrorBox} error=${data.error} title=${`Event ${id}`} />`;
  if (!data.data) return html`<${Loading} what="Loading the event" />`;
  const { event: e, why } = data.data;
  return html`<section aria-labelledby="event-h">
    <p><a href=${href("/events")}>← Events</a></p>
    <h1 id="event-h">Event <code>${e.id}</code></h1>
    <${Facts} rows=${[
      ["Type", typeText(e)],
      ["Subject", e.subject_id ?? "—"],
      ["Key", html`<code>${e.key}</code>`],
      ["Source", e.source],
      ["Received", html`<${Time} iso=${e.received_at} ago />`],
      ["Dispatched", e.dispatched_at ? html`<${Time} iso=${e.dispatched_at} />` : "not yet"],
    ]} />
    <h2>Why it did or did not start runs</h2>
    <p class=${why.dispatched || why.dispatcher_alive ? "summary" : "summary error-box"} role=${why.dispatcher_alive ? null : "alert"}>${why.summary}</p>
    <table class="explain">
      <caption>${why.automations.length === 0 ? "No automation of this workspace has a trigger that could take this event." : "Every automation that could have taken it"}</caption>
      <thead><tr><th scope="col">Automation</th><th scope="col">Taken</th><th scope="col">Run</th><th scope="col">Code</th><th scope="col">Why</th></tr></thead>
      <tbody>${why.automations.map(
        (a) => html`<tr data-automation=${a.key}>
        <td><a href=${href(`/automations/${a.automation_id}`)}>${a.name}</a> <span class="muted">v${a.version}</span></td>
        <td>${a.taken ? "yes" : "no"}</td>
        <td>${a.run_id ? html`<a href=${href(`/runs/${a.run_id}`)}><code>${a.run_id}</code></a>` : html`<span class="muted">—</span>`}</td>
        <td><code class="code">${a.code}</code></td>
        <td>${a.reason}</td>
      </tr>`,
      )}</tbody>
    </table>
    <h2>Body</h2>
    <${Json} value=${e.body} label="Event body" />
  </section>`;
}
