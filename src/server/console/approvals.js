// The approvals inbox: pending decisions with approve / reject (the caller is recorded as the
// approver), and afterwards who decided, when, and with what comment.

import { useState } from "preact/hooks";
import { AutomationName, ErrorBox, Loading, Status, Time, api, href, html, navigate, useAutomations, useCanAct, useLoad, useReadOnlyNote } from "./lib.js";

const FILTER = ["pending", "approved", "rejected", "timed_out", "cancelled", "all"];

export function ApprovalsPage({ query }) {
  const status = FILTER.includes(query.status) ? query.status : "pending";
  const automations = useAutomations();
  const list = useLoad(() => api("GET", `/v1/approvals?limit=200${status === "all" ? "" : `&status=${status}`}`), [status]);
  // Decided lately: what the inbox held and who answered (kept in view after a decision here).
  const recent = useLoad(
    async () => (status === "pending" ? (await api("GET", "/v1/approvals?limit=200")).items.filter((a) => a.status !== "pending") : []),
    [status],
  );
  const [announce, setAnnounce] = useState("");
  const decided = (a) => {
    setAnnounce(`${a.status === "approved" ? "Approved" : "Rejected"} "${a.title}" as ${a.decided_by}.`);
    void list.reload(true);
    void recent.reload(true);
  };

  return html`<section aria-labelledby="appr-h">
    <h1 id="appr-h">Approvals</h1>
    <form class="filters inline" onSubmit=${(e) => e.preventDefault()} aria-label="Which approvals">
      <label>Show
        <select value=${status} onChange=${(e) => navigate("/approvals", { status: e.currentTarget.value === "pending" ? "" : e.currentTarget.value })}>
          ${FILTER.map((s) => html`<option value=${s}>${s === "all" ? "all approvals" : s.replace("_", " ")}</option>`)}
        </select>
      </label>
      <button type="button" onClick=${() => {
        void list.reload(true);
        void recent.reload(true);
      }}>Refresh</button>
    </form>
    <p class="sr-only" role="status" aria-live="polite">${announce}</p>
    ${announce ? html`<p class="notice">${announce}</p>` : null}
    <${ErrorBox} error=${list.error} />
    ${list.loading && !list.data ? html`<${Loading} what="Loading approvals" />` : null}
    ${
      list.data
        ? html`<${ApprovalsTable} approvals=${list.data.items} automations=${automations.data} onDecided=${decided} pendingOnly=${status === "pending"}
      caption=${list.data.items.length === 0 ? (status === "pending" ? "Nothing waits for a decision." : "No approvals.") : `${list.data.items.length} ${status === "all" ? "" : status.replace("_", " ")} approval${list.data.items.length === 1 ? "" : "s"}`} />`
        : null
    }
    ${
      status === "pending" && recent.data && recent.data.length > 0
        ? html`<section aria-labelledby="recent-h">
      <h2 id="recent-h">Decided</h2>
      <${ApprovalsTable} approvals=${recent.data.slice(0, 25)} automations=${automations.data} caption="The latest decisions, newest first" />
    </section>`
        : null
    }
  </section>`;
}

/**
 * Approvals as a table; pending rows get a comment field and approve / reject buttons. A row
 * decided here is replaced by the API's answer, so the table says who decided at once; in a list
 * of pending approvals (`pendingOnly`) it leaves instead: decided is not pending.
 */
export function ApprovalsTable({ approvals, automations, caption, onDecided, showRun = true, pendingOnly = false }) {
  const [updated, setUpdated] = useState(() => new Map());
  const rows = approvals.map((a) => updated.get(a.id) ?? a).filter((a) => !pendingOnly || a.status === "pending");
  const done = (a) => {
    setUpdated(new Map(updated).set(a.id, a));
    onDecided?.(a);
  };
  return html`<table class="approvals">
    <caption>${caption}</caption>
    <thead><tr>
      <th scope="col">Title</th>${showRun ? html`<th scope="col">Run</th><th scope="col">Automation</th>` : null}<th scope="col">Node</th>
      <th scope="col">Approvers</th><th scope="col">Requested</th><th scope="col">Expires</th><th scope="col">Decision</th>
    </tr></thead>
    <tbody>${rows.map(
      (a) => html`<tr data-approval=${a.id}>
      <td>${a.title || html`<span class="muted">(untitled)</span>`}${a.item_id ? html` <span class="muted">(item ${a.item_id})</span>` : null}</td>
      ${showRun ? html`<td><a href=${href(`/runs/${a.run_id}`)}><code>${a.run_id}</code></a></td><td><${AutomationName} id=${a.automation_id} automations=${automations} /></td>` : null}
      <td><code>${a.node_key}</code></td>
      <td>${a.approvers.length ? a.approvers.join(", ") : html`<span class="muted">any member</span>`}</td>
      <td><${Time} iso=${a.created_at} ago /></td>
      <td>${a.expires_at ? html`<${Time} iso=${a.expires_at} ago />` : html`<span class="muted">never</span>`}</td>
      <td>${
        a.status === "pending"
          ? html`<${Decide} approval=${a} onDone=${done} />`
          : html`<div class="decision">
        <${Status} status=${a.status} />
        ${a.decided_by ? html` by <strong class="decided-by">${a.decided_by}</strong>` : null}
        ${a.decided_at ? html` at <${Time} iso=${a.decided_at} />` : null}
        ${a.comment ? html`<div class="muted">“${a.comment}”</div>` : null}
      </div>`
      }</td>
    </tr>`,
    )}</tbody>
  </table>`;
}

function Decide({ approval, onDone }) {
  const canAct = useCanAct();
  const note = useReadOnlyNote();
  const [comment, setComment] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const decide = async (verb) => {
    setBusy(true);
    setError(null);
    try {
      const a = await api("POST", `/v1/approvals/${encodeURIComponent(approval.id)}/${verb}`, comment.trim() ? { comment: comment.trim() } : {});
      onDone(a);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const cid = `comment-${approval.id}`;
  return html`<div class="decide">
    <label class="sr-only" for=${cid}>Comment on “${approval.title}” (optional)</label>
    <input id=${cid} value=${comment} onInput=${(e) => setComment(e.currentTarget.value)} placeholder="Comment (optional)" maxlength="2000" disabled=${!canAct} />
    <button type="button" class="primary" disabled=${busy || !canAct} title=${note} onClick=${() => decide("approve")} aria-label=${`Approve “${approval.title}”`}>Approve</button>
    <button type="button" class="danger" disabled=${busy || !canAct} title=${note} onClick=${() => decide("reject")} aria-label=${`Reject “${approval.title}”`}>Reject</button>
    <${ErrorBox} error=${error} />
  </div>`;
}
