// The Weft console: sign in with an API token, then runs, events, subjects, approvals, ops and
// automations, each a hash route (#/runs, #/runs/<id>, #/subjects/<id>, #/approvals, #/ops,
// #/automations, #/automations/<id>).
// Everything it shows comes from the public /v1 API, called with the token the user pasted.

import { render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { ErrorBox, Me, api, focusHeading, href, html, navigate, parseHash, token } from "./lib.js";
import { RunPage, RunsPage } from "./runs.js";
import { ApprovalsPage } from "./approvals.js";
import { OpsPage } from "./ops.js";
import { AutomationPage, AutomationsPage } from "./automations.js";
import { EventPage, EventsPage } from "./events.js";
import { SubjectPage, SubjectsPage } from "./subjects.js";

const NAV = [
  ["/runs", "Runs"],
  ["/events", "Events"],
  ["/subjects", "Subjects"],
  ["/approvals", "Approvals"],
  ["/ops", "Ops"],
  ["/automations", "Automations"],
];

function Login({ onSignedIn, reason }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const t = value.trim();
    if (!t) return;
    setBusy(true);
    setError(null);
    try {
      // Any cheap authenticated read proves the token; a viewer's token may read this too.
      await api("GET", "/v1/automations", undefined, t);
      onSignedIn(t);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<main id="main" class="login">
    <h1>Weft console</h1>
    <form onSubmit=${submit} aria-describedby="token-help">
      <label for="token">API token</label>
      <input id="token" name="token" type="password" autocomplete="off" spellcheck="false" required
        value=${value} onInput=${(e) => setValue(e.currentTarget.value)} autofocus />
      <p id="token-help" class="muted">
        The admin token is printed when <code>weft start</code> first runs; <code>weft admin-token</code> issues another,
        and <code>POST /v1/tokens</code> issues one per user. It is kept in this browser tab only (sessionStorage) and sent only to this server.
      </p>
      <button type="submit" class="primary" disabled=${busy}>${busy ? "Checking…" : "Sign in"}</button>
    </form>
    ${reason ? html`<${ErrorBox} error=${reason} title="Signed out" />` : null}
    <${ErrorBox} error=${error} title="Sign-in failed" />
  </main>`;
}

function Page({ route }) {
  const [first, second] = route.parts;
  switch (first) {
    case "runs":
      return second ? html`<${RunPage} key=${second} id=${second} query=${route.query} />` : html`<${RunsPage} query=${route.query} />`;
    case "events":
      return second ? html`<${EventPage} key=${second} id=${second} />` : html`<${EventsPage} query=${route.query} />`;
    case "subjects":
      return second ? html`<${SubjectPage} key=${second} id=${second} />` : html`<${SubjectsPage} />`;
    case "approvals":
      return html`<${ApprovalsPage} query=${route.query} />`;
    case "ops":
      return html`<${OpsPage} query=${route.query} />`;
    case "automations":
      return second ? html`<${AutomationPage} key=${second} id=${second} query=${route.query} />` : html`<${AutomationsPage} />`;
    default:
      return html`<h1>Not found</h1><p>No console page at <code>${route.path}</code>. <a href=${href("/runs")}>Runs</a></p>`;
  }
}

function App() {
  const [route, setRoute] = useState(parseHash);
  const [signedIn, setSignedIn] = useState(() => token.get() !== null);
  const [reason, setReason] = useState(null);
  const [me, setMe] = useState(null);
  const main = useRef(null);
  const firstRender = useRef(true);

  useEffect(() => {
    const onHash = () => setRoute(parseHash());
    const onOut = (e) => {
      setReason(e.detail ?? null);
      setSignedIn(false);
    };
    window.addEventListener("hashchange", onHash);
    window.addEventListener("weft:signed-out", onOut);
    return () => {
      window.removeEventListener("hashchange", onHash);
      window.removeEventListener("weft:signed-out", onOut);
    };
  }, []);

  // Who is signed in: the pages offer only what the role may do.
  useEffect(() => {
    if (!signedIn) return;
    setMe(null);
    // Not known (an older server, a refused call): offer the controls and let the API decide.
    api("GET", "/v1/me").then(setMe, () => setMe({ role: null, unknown: true }));
  }, [signedIn]);

  // A new page: its name in the title, and focus on its heading (a screen reader starts there).
  const section = NAV.find(([p]) => route.path.startsWith(p));
  useEffect(() => {
    document.title = `${route.parts[1] ?? section?.[1] ?? "Weft"} · Weft console`;
    if (firstRender.current) {
      firstRender.current = false;
      return undefined;
    }
    window.scrollTo(0, 0);
    return focusHeading(main.current);
  }, [route.path]);

  if (!signedIn) {
    return html`<${Login} reason=${reason} onSignedIn=${(t) => {
      token.set(t);
      setReason(null);
      setSignedIn(true);
      if (!route.parts[0]) navigate("/runs");
    }} />`;
  }
  const signOut = () => {
    token.clear();
    setReason(null);
    setSignedIn(false);
  };
  return html`
    <a class="skip" href="#main" onClick=${(e) => {
      e.preventDefault();
      focusHeading(main.current);
    }}>Skip to content</a>
    <header class="top">
      <a class="brand" href=${href("/runs")}>Weft</a>
      <nav aria-label="Console">
        <ul>${NAV.map(([p, label]) => html`<li><a href=${href(p)} aria-current=${section?.[0] === p ? "page" : undefined}>${label}</a></li>`)}</ul>
      </nav>
      ${me && !me.unknown ? html`<span class="whoami muted" data-testid="whoami">${me.user_id} · ${me.role}</span>` : null}
      <button type="button" class="link" onClick=${signOut}>Sign out</button>
    </header>
    <${Me.Provider} value=${me}>
      <main id="main" ref=${main}><${Page} route=${route} /></main>
    </${Me.Provider}>`;
}

render(html`<${App} />`, document.getElementById("root"));
