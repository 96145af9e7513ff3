// Shared pieces of the console: the API client (bearer token from sessionStorage, errors with
// their code), hash routing helpers, formatting, and small components every page uses.

import { createContext, h } from "preact";
import { useCallback, useContext, useEffect, useRef, useState } from "preact/hooks";
import htm from "htm";

export const html = htm.bind(h);

// ---------------------------------------------------------------------------------------------
// Token and API

const TOKEN_KEY = "weft.console.token";

/** Kept for this tab only: sessionStorage ends with the tab, and nothing is sent but to this origin. */
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** One call to the API; a non-2xx answer throws ApiError with the envelope's code and message. */
export async function api(method, path, body, bearer = token.get()) {
  const headers = { authorization: `Bearer ${bearer ?? ""}`, accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, "network.unreachable", `could not reach the server (${e.message})`);
  }
  const text = await res.text();
  let data = null;
  try {
    data = text === "" ? null : JSON.parse(text);
  } catch {
    data = null;
  }
  if (!res.ok) {
    const env = data && typeof data === "object" ? data.error : null;
    const err = new ApiError(res.status, env?.code ?? `http.status_${res.status}`, env?.message ?? (text.slice(0, 300) || res.statusText), env?.details ?? {});
    // The tab's token stopped working (revoked, or the store was reset): back to the sign-in page.
    if (res.status === 401 && bearer === token.get() && bearer !== null) {
      token.clear();
      window.dispatchEvent(new CustomEvent("weft:signed-out", { detail: err }));
    }
    throw err;
  }
  return data;
}

/** Query string from an object, leaving out empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}

// ---------------------------------------------------------------------------------------------
// Routing (#/path?query)

export function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/runs";
  const at = raw.indexOf("?");
  const path = at < 0 ? raw : raw.slice(0, at);
  const query = at < 0 ? "" : raw.slice(at + 1);
  return { path, parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: Object.fromEntries(new URLSearchParams(query)) };
}

export const href = (path, params = {}) => `#${path}${qs(params)}`;
export const navigate = (path, params = {}) => {
  location.hash = href(path, params);
};

// ---------------------------------------------------------------------------------------------
// Loading data

/**
 * Run `load` now and whenever `deps` change; `reload(true)` refreshes without blanking the page.
 * A slower earlier answer never overwrites a later one.
 */
export function useLoad(load, deps) {
  const [state, setState] = useState({ loading: true, data: null, error: null });
  const seq = useRef(0);
  const run = useCallback(async (quiet = false) => {
    const n = ++seq.current;
    if (!quiet) setState((s) => ({ ...s, loading: true, error: null }));
    try {
      const data = await load();
      if (n === seq.current) setState({ loading: false, data, error: null });
    } catch (error) {
      if (n === seq.current) setState((s) => ({ loading: false, data: quiet ? s.data : null, error }));
    }
  }, deps);
  useEffect(() => {
    void run(false);
  }, [run]);
  return { ...state, reload: run };
}

/** Call `fn` every `ms` while `active`. */
export function useInterval(fn, ms, active) {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    if (!active) return undefined;
    const t = setInterval(() => saved.current(), ms);
    return () => clearInterval(t);
  }, [ms, active]);
}

// ---------------------------------------------------------------------------------------------
// Formatting

// The model's lists (model/run-status.ts); the browser cannot import it, so a test holds these equal.
export const TERMINAL = new Set(["completed", "completed_with_failures", "failed", "cancelled", "exited"]);
export const RUN_STATUSES = [
  "pending",
  "running",
  "waiting",
  "retrying",
  "interrupted",
  "completed",
  "completed_with_failures",
  "failed",
  "cancelled",
  "exited",
];

const pad = (n) => String(n).padStart(2, "0");

/** Local time, to the second: 2026-05-01 10:00:03. */
export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${m % 60} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

/** "3 min ago" / "in 2 h" against now. */
export function fmtAgo(iso, now = Date.now()) {
  if (!iso) return "";
  const d = Date.parse(iso) - now;
  const txt = fmtDuration(Math.abs(d)).replace(/ \d+ (s|min)$/, "");
  return d <= 0 ? `${txt} ago` : `in ${txt}`;
}

/** An ISO time as the value of a datetime-local input (local time, minutes). */
export function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
export const fromLocalInput = (v) => (v ? new Date(v).toISOString() : "");

export const runAsText = (ra) => (!ra ? "—" : ra.type === "user" ? `user ${ra.user_id}` : "workspace");

// ---------------------------------------------------------------------------------------------
// Components

export function Time({ iso, ago = false }) {
  if (!iso) return html`<span class="muted">—</span>`;
  return html`<time datetime=${iso} title=${iso}>${fmtTime(iso)}${ago ? html` <span class="muted">(${fmtAgo(iso)})</span>` : null}</time>`;
}

// ---------------------------------------------------------------------------------------------
// Who is signed in (GET /v1/me), and what that role may do

/** The signed-in caller: { user_id, workspace_id, role, instance_admin }, or null while loading. */
export const Me = createContext(null);

/**
 * Whether the signed-in role may change things. Viewers read; members and admins act (the API
 * decides in the end: a 403 it answers is still shown). Unknown while /v1/me loads: no.
 */
export function useCanAct() {
  const me = useContext(Me);
  return me !== null && me.role !== "viewer";
}

/** Why a control is disabled for this caller, for its title (empty when it is not). */
export function useReadOnlyNote() {
  const me = useContext(Me);
  return me?.role === "viewer" ? "Your role (viewer) may read but not act" : "";
}

// ---------------------------------------------------------------------------------------------
// Focus after navigation

/**
 * Move focus to the page's heading (a screen reader starts there) once it is rendered. The
 * heading gets tabindex=-1 and the stylesheet shows no outline for that case only: a page
 * container never carries a focus ring. Returns a function that stops waiting.
 */
export function focusHeading(root) {
  if (!root) return () => {};
  const tryFocus = () => {
    const h1 = root.querySelector("h1");
    if (!h1) return false;
    h1.setAttribute("tabindex", "-1");
    h1.focus({ preventScroll: true });
    return true;
  };
  if (tryFocus()) return () => {};
  // Most pages render their heading after their first API answer.
  const obs = new MutationObserver(() => {
    if (tryFocus()) obs.disconnect();
  });
  obs.observe(root, { childList: true, subtree: true });
  const t = setTimeout(() => obs.disconnect(), 10_000);
  return () => {
    obs.disconnect();
    clearTimeout(t);
  };
}

/** An API error as the user needs it: its code and its message (a 403 says plainly it is not allowed). */
export function ErrorBox({ error, title }) {
  if (!error) return null;
  const code = error.code ?? "console.error";
  return html`<div class="error-box" role="alert">
    ${title ? html`<strong>${title}: </strong>` : null}${error.status === 403 ? html`<strong>Not allowed for your role or account. </strong>` : null}<code class="code">${code}</code> ${error.message}
    ${error.details?.pointer ? html` <span class="muted">(at ${error.details.pointer})</span>` : null}
  </div>`;
}

export function Loading({ what = "Loading" }) {
  return html`<p class="loading" role="status">${what}…</p>`;
}

export function Status({ status }) {
  if (!status) return html`<span class="muted">—</span>`;
  return html`<span class=${`badge st-${status}`}>${status.replace(/_/g, " ")}</span>`;
}

export function Json({ value, label }) {
  if (value === undefined) return html`<span class="muted">—</span>`;
  return html`<pre class="json" tabindex="0" aria-label=${label}>${JSON.stringify(value, null, 2)}</pre>`;
}

/** A definition list from [term, value] pairs; null values are left out. */
export function Facts({ rows, className = "facts" }) {
  return html`<dl class=${className}>
    ${rows.filter((r) => r && r[1] !== null && r[1] !== undefined).map(([k, v]) => html`<div><dt>${k}</dt><dd>${v}</dd></div>`)}
  </dl>`;
}

/** A button that asks before it acts, shows "working", and reports the API error; disabled for a viewer. */
export function ActionButton({ label, confirmText, onAct, className = "", disabled = false, onError, title }) {
  const canAct = useCanAct();
  const note = useReadOnlyNote();
  const [busy, setBusy] = useState(false);
  const click = async () => {
    if (confirmText && !window.confirm(confirmText)) return;
    setBusy(true);
    try {
      await onAct();
    } catch (e) {
      onError?.(e);
    } finally {
      setBusy(false);
    }
  };
  return html`<button type="button" class=${className} disabled=${disabled || busy || !canAct} title=${note || title} aria-busy=${busy ? "true" : "false"} onClick=${click}>${busy ? `${label}…` : label}</button>`;
}

/** Automation names by id, for tables that only have the id. */
export function useAutomations() {
  return useLoad(async () => {
    const res = await api("GET", "/v1/automations");
    return { list: res.items, byId: new Map(res.items.map((a) => [a.id, a])) };
  }, []);
}

export function AutomationName({ id, automations }) {
  const a = automations?.byId.get(id);
  return html`<a href=${href(`/automations/${id}`)}>${a ? a.name : id}</a>`;
}
