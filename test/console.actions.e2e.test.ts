// Every operator action in the console, end to end: Debian's headless Chromium (playwright-core,
// nothing downloaded) against a real engine on the embedded store and the API on 127.0.0.1, with
// a loopback service that is down until the test brings it back. Pause and resume a subject (also
// from the run it holds), approve and reject with comments, redrive a run that failed after five
// attempts (it completes), stop and cancel, activate and pause an automation, simulate with forced
// branches, the events view, and a viewer who sees every control disabled. The rough edges mended
// each have an assertion: no focus ring on a page container after navigation, the real attempt
// count, "Retryable: no" for a final failure, no API path with {id} in the advice, a decided
// approval out of the pending list, one thread entry per wait. A small set of screenshots of the
// main views is written to test/screenshots/console-*.png (ignored by git: each run rewrites them).
//
// The server pieces the console relies on (GET /v1/me, GET / → console, /favicon.ico, the console
// URL printed by `weft serve`) are checked over HTTP on both stores.

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BOOTSTRAP_ADMIN } from "../src/engine/admin.js";
import type { Engine } from "../src/engine/engine.js";
import { type Api, startApi } from "./helpers/api.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const TOKEN = "console-actions-admin-token-0123456789abcdef";
const SHOTS = fileURLToPath(new URL("./screenshots/", import.meta.url));
/** Wait for what the page shows (it renders after its API calls answer); generous for a loaded machine. */
const poll = <T>(fn: () => Promise<T>) => expect.poll(fn, { timeout: 15_000, interval: 50 });

/** A service that answers 503 until `up` is set (then 200), counting the calls it got. */
function startFlaky(): Promise<{ url: string; up: boolean; calls: number; close(): Promise<void> }> {
  const state = { url: "", up: false, calls: 0, close: () => Promise.resolve() };
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      if (req.url?.startsWith("/flaky")) state.calls++;
      const ok = !req.url?.startsWith("/flaky") || state.up;
      res.writeHead(ok ? 200 : 503, { "content-type": "application/json" });
      res.end(JSON.stringify(ok ? { ok: true } : { error: "maintenance" }));
    });
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      state.close = () => new Promise<void>((r) => server.close(() => r()));
      resolve(state);
    }),
  );
}

describe.each(STORE_KINDS)("what the console needs of the server (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;

  beforeAll(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store });
    api = await startApi(engine, TOKEN);
  });
  afterAll(async () => {
    await api?.close();
    await engine?.stop();
    await ts?.destroy();
  });

  it("GET /v1/me says whom the token acts as, for every role; no token is 401", async () => {
    const me = await api.call<{ user_id: string; role: string; workspace_id: string; instance_admin: boolean }>("GET", "/v1/me");
    expect(me.status).toBe(200);
    expect(me.body).toEqual({ user_id: BOOTSTRAP_ADMIN, workspace_id: WS, role: "admin", instance_admin: true });
    const viewer = await api.call<{ id: string }>("POST", "/v1/users", { name: "Vera", role: "viewer" });
    const token = await api.call<{ token: string }>("POST", "/v1/tokens", { user_id: viewer.body.id });
    const asViewer = await fetch(`${api.base}/v1/me`, { headers: { authorization: `Bearer ${token.body.token}` } });
    expect(asViewer.status).toBe(200);
    expect(await asViewer.json()).toEqual({ user_id: viewer.body.id, workspace_id: WS, role: "viewer", instance_admin: false });
    const none = await fetch(`${api.base}/v1/me`);
    expect(none.status).toBe(401);
    expect(((await none.json()) as { error: { code: string } }).error.code).toBe("auth.missing_token");
  });

  it("GET / leads to the console, and /favicon.ico is an icon (no 404)", async () => {
    const root = await fetch(`${api.base}/`, { redirect: "manual" });
    expect(root.status).toBe(302);
    expect(root.headers.get("location")).toBe("/console/");
    const icon = await fetch(`${api.base}/favicon.ico`);
    expect(icon.status).toBe(200);
    expect(icon.headers.get("content-type")).toBe("image/x-icon");
    const bytes = Buffer.from(await icon.arrayBuffer());
    // An ICO header: reserved 0, type 1 (icon), one image of 16×16.
    expect([...bytes.subarray(0, 8)]).toEqual([0, 0, 1, 0, 1, 0, 16, 16]);
    expect(bytes.length).toBe(6 + 16 + 40 + 16 * 16 * 4 + 16 * 4);
    // Neither is API: both stay out of the OpenAPI document.
    const doc = (await (await fetch(`${api.base}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths)).not.toContain("/");
    expect(Object.keys(doc.paths)).not.toContain("/favicon.ico");
    expect(Object.keys(doc.paths)).toContain("/v1/me");
  });

  it("weft serve prints the console's URL at start", async () => {
    const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "serve", "--role", "api"], {
      cwd: ROOT,
      env: {
        ...process.env,
        ...(ts.kind === "embedded" ? { WEFT_DATABASE_URL: "" } : {}),
        ...ts.env,
        WEFT_SAMPLE: "0",
        WEFT_PORT: "0",
        WEFT_ADMIN_TOKEN: TOKEN,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      let out = "";
      const line = await new Promise<RegExpExecArray>((resolve, reject) => {
        child.stdout!.on("data", (d: Buffer) => {
          out += d.toString();
          const m = /listening on (http:\/\/\S+)[\s\S]*console at (http:\/\/\S+)/.exec(out);
          if (m) resolve(m);
        });
        child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
        child.on("exit", () => reject(new Error(`serve exited: ${out}`)));
      });
      expect(line[2]).toBe(`${line[1]}/console/`);
      const page = await fetch(line[2]!);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain("Weft console");
    } finally {
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await gone;
    }
  });
});

describe("every operator action in headless Chromium (embedded store)", () => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;
  let flaky: Awaited<ReturnType<typeof startFlaky>>;
  let profile = "";
  let browser: BrowserContext | undefined;
  let page: Page;
  let viewerToken = "";
  const pageErrors: string[] = [];
  const ids = { flaky: "", refund: "", hold: "", branchy: "", failed: "" };

  /** The first screenful only: the committed set stays small. */
  const shot = (name: string) => page.screenshot({ path: join(SHOTS, `console-${name}.png`) });
  const open = (p: Page, hash: string) => p.goto(`${api.base}/console/#${hash}`);
  const signIn = async (p: Page, token: string) => {
    await open(p, "/runs");
    await p.getByLabel("API token").fill(token);
    await p.getByRole("button", { name: "Sign in" }).click();
    await p.getByRole("heading", { name: "Runs", level: 1 }).waitFor();
  };
  const watch = (p: Page) => {
    p.setDefaultTimeout(15_000);
    p.on("pageerror", (e) => pageErrors.push(`pageerror: ${e.message}`));
    p.on("console", (m) => {
      // API refusals the page shows on purpose Chromium also logs as failed resources.
      if (m.type() === "error" && !/Failed to load resource: the server responded with a status of 40[134]/.test(m.text()))
        pageErrors.push(`console: ${m.text()}`);
    });
  };
  /** Accept the next confirm() the page asks. */
  const confirmNext = (p: Page) => p.once("dialog", (d) => void d.accept());

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); this test never downloads a browser`);
    }
    mkdirSync(SHOTS, { recursive: true });
    flaky = await startFlaky();
    ts = await makeStore("embedded");
    engine = await startEngine({ store: ts.store, dispatchPollMs: 20 });
    api = await startApi(engine, TOKEN);

    // Notes a contact, then calls a service that is down: five attempts, then the run fails.
    ids.flaky = (
      await engine.createAutomation(WS, {
        key: "crm-push",
        name: "CRM push",
        root: "note",
        nodes: [
          { key: "note", kind: "http_request", config: { method: "POST", url: `${flaky.url}/notes`, body: { id: "{{ subject.id }}" } } },
          {
            key: "push",
            kind: "http_request",
            config: { method: "POST", url: `${flaky.url}/flaky`, body: { id: "{{ subject.id }}" } },
            retry: { max_attempts: 5, initial_ms: 5, max_ms: 20 },
          },
          { key: "done", kind: "end" },
        ],
        edges: [
          { from: "note", port: "next", to: "push" },
          { from: "push", port: "next", to: "done" },
        ],
      })
    ).id;
    ids.failed = (await engine.enroll(WS, ids.flaky, { subject_id: "ct_flo", context_overrides: {} })).run.id;
    expect((await settle(engine, ids.failed)).status).toBe("failed");
    expect(flaky.calls).toBe(5);

    ids.refund = (
      await engine.createAutomation(WS, {
        key: "refund",
        name: "Refund approval",
        root: "ask",
        nodes: [
          { key: "ask", kind: "approval", config: { title: "Refund {{ subject.id }}", approvers: [] } },
          { key: "paid", kind: "set", config: { assign: { paid: "true" } } },
          { key: "done", kind: "end" },
        ],
        edges: [
          { from: "ask", port: "approved", to: "paid" },
          { from: "ask", port: "rejected", to: "done" },
          { from: "paid", port: "next", to: "done" },
        ],
      })
    ).id;

    // Waits for an event about its subject: for stop, cancel, and a subject pause that holds it.
    ids.hold = (
      await engine.createAutomation(WS, {
        key: "hold",
        name: "Wait for a reply",
        root: "wait",
        nodes: [
          { key: "wait", kind: "wait_for_event", config: { event: "reply.sent" } },
          { key: "done", kind: "end" },
        ],
        edges: [{ from: "wait", port: "received", to: "done" }],
      })
    ).id;

    ids.branchy = (
      await engine.createAutomation(WS, {
        key: "vip",
        name: "VIP welcome",
        triggers: [{ type: "event", name: "user.signed_up" }],
        root: "vip",
        nodes: [
          { key: "vip", kind: "branch", config: { condition: "event.payload.plan == 'pro'" } },
          { key: "gift", kind: "set", config: { assign: { gift: "true" } } },
          { key: "done", kind: "end" },
        ],
        edges: [
          { from: "vip", port: "true", to: "gift" },
          { from: "vip", port: "false", to: "done" },
          { from: "gift", port: "next", to: "done" },
        ],
      })
    ).id;

    const viewer = await api.call<{ id: string }>("POST", "/v1/users", { name: "Vera", role: "viewer" });
    viewerToken = (await api.call<{ token: string }>("POST", "/v1/tokens", { user_id: viewer.body.id })).body.token;

    profile = mkdtempSync(join(tmpdir(), "weft-chromium-"));
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 900 },
    });
    page = browser.pages()[0] ?? (await browser.newPage());
    watch(page);
    await signIn(page, TOKEN);
  });

  afterAll(async () => {
    await browser?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
    await api?.close();
    await engine?.stop();
    await ts?.destroy();
    await flaky?.close();
  });

  it("after navigation the page's heading has focus, and no page container shows a focus ring", async () => {
    const focused = () =>
      // The page's globals, in the browser (this file is typed for Node, without the DOM).
      page.evaluate<{ tag: string; text: string; outline: string }>(`(() => {
        const el = document.activeElement;
        const css = el ? getComputedStyle(el) : null;
        return { tag: el?.tagName ?? "", text: el?.textContent ?? "", outline: css ? css.outlineStyle + " " + css.outlineWidth : "" };
      })()`);
    for (const [label, heading] of [
      ["Events", "Events"],
      ["Subjects", "Subjects"],
      ["Approvals", "Approvals"],
      ["Automations", "Automations"],
      ["Runs", "Runs"],
    ] as const) {
      // By keyboard, as the focus heuristics draw a ring for it: focus the link, press Enter.
      await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: label }).focus();
      await page.keyboard.press("Enter");
      await page.getByRole("heading", { name: heading, level: 1 }).waitFor();
      await poll(async () => (await focused()).tag).not.toMatch(/^(BODY|A)$/);
      // Whatever took focus draws no ring, and it is the heading, not a container.
      expect((await focused()).outline).toMatch(/^none |\b0px$/);
      await poll(async () => (await focused()).tag).toBe("H1");
      expect((await focused()).text).toBe(heading);
    }
    // The run page renders its heading after its API answers: focus still lands on it.
    await page.getByRole("link", { name: ids.failed }).focus();
    await page.keyboard.press("Enter");
    await poll(async () => (await focused()).tag).toBe("H1");
    expect((await focused()).outline).toMatch(/^none |\b0px$/);
    // A control keeps its visible focus.
    await page.getByRole("button", { name: "Refresh" }).focus();
    await page.keyboard.press("Shift+Tab");
    await page.keyboard.press("Tab");
    expect((await focused()).outline).toMatch(/^solid 3px$/);
  });

  it("a run failed after five attempts: the real count, Retryable no, redrive advised; redriven, it completes", async () => {
    await open(page, `/runs/${ids.failed}`);
    const why = page.getByTestId("explanation");
    await poll(() => why.textContent()).toContain('Failed at step "push"');
    const facts = async (box: ReturnType<Page["locator"]>) =>
      Object.fromEntries(
        await box.locator("dl > div").evaluateAll((ds) => ds.map((d) => [d.querySelector("dt")!.textContent, d.querySelector("dd")!.textContent])),
      );
    const cause = await facts(why.locator(".cause"));
    expect(cause.Attempts).toBe("5");
    expect(cause.Retryable).toMatch(/^no\b/);
    expect(cause.Retryable).toContain("final after 5 attempts");
    expect((await facts(page.locator("section[aria-labelledby=facts-h]"))).Attempt).toBe("5");
    // The advice names console actions, never an API path with a placeholder.
    const text = (await why.textContent())!;
    expect(text).not.toContain("{id}");
    expect(text).not.toMatch(/POST \/v1\//);
    expect(text).toContain("the Redrive buttons");
    const recovery = page.getByTestId("recovery");
    expect(await recovery.textContent()).toContain("Recommended: Redrive on its own version (v1)");
    expect(await recovery.textContent()).toContain("the 1 step that succeeded is not run again");
    const redrive = recovery.getByRole("button", { name: "Redrive on its version (v1)" });
    expect(await redrive.getAttribute("class")).toContain("primary");
    expect(await recovery.getByRole("button", { name: "Re-trigger" }).count()).toBe(1);
    await shot("run-failed");

    flaky.up = true;
    confirmNext(page);
    await redrive.click();
    await poll(() => why.textContent()).toContain("Finished at");
    expect((await engine.getRun(WS, ids.failed)).status).toBe("completed");
    expect(flaky.calls).toBe(6);
    // The step that succeeded before the failure was not sent again.
    const steps = await engine.listSteps(WS, ids.failed);
    expect(steps.filter((s) => s.node_key === "note").length).toBe(1);
    await poll(() => page.locator("ol.thread .step-key").allTextContents()).toEqual(["note", "push", "push", "push", "push", "push", "push", "done"]);
    // The fifth attempt's failure was the end of it then: not "retryable" like the four before.
    const badges = await page.locator("ol.thread .step-error .badge").allTextContents();
    expect(badges).toEqual([...Array(4).fill("retryable"), "final: attempts used up"]);
  });

  it("advises redrive on the current version when a newer one exists, and can take it", async () => {
    flaky.up = false;
    const run = (await engine.enroll(WS, ids.flaky, { subject_id: "ct_gus", context_overrides: {} })).run;
    expect((await settle(engine, run.id)).status).toBe("failed");
    const a = await engine.getAutomation(WS, ids.flaky);
    await engine.updateAutomation(WS, ids.flaky, { ...(a.definition as Record<string, unknown>), name: "CRM push (fixed)" });
    flaky.up = true;
    await open(page, `/runs/${run.id}`);
    const recovery = page.getByTestId("recovery");
    await poll(() => recovery.textContent()).toContain("Recommended: Redrive on the current version (v2, newer than its v1)");
    const current = recovery.getByRole("button", { name: "Redrive on the current version (v2)" });
    expect(await current.getAttribute("class")).toContain("primary");
    confirmNext(page);
    await current.click();
    await poll(() => page.getByTestId("explanation").textContent()).toContain("Finished at");
    const done = await engine.getRun(WS, run.id);
    expect(done.status).toBe("completed");
    expect(done.version).toBe(2);
  });

  it("approves and rejects with comments: the decided leave the pending list, each wait is one thread entry", async () => {
    const yes = (await engine.enroll(WS, ids.refund, { subject_id: "ct_ann", context_overrides: {} })).run.id;
    const no = (await engine.enroll(WS, ids.refund, { subject_id: "ct_ben", context_overrides: {} })).run.id;
    for (const id of [yes, no]) await settle(engine, id, (r) => r.status === "waiting");
    await open(page, "/approvals");
    const pending = page.locator("table.approvals").first();
    const rowOf = (title: string) => pending.locator("tbody tr", { hasText: title });
    await rowOf("Refund ct_ann").waitFor();
    await rowOf("Refund ct_ben").waitFor();
    await shot("approvals");

    await rowOf("Refund ct_ann").getByPlaceholder("Comment (optional)").fill("within policy");
    await rowOf("Refund ct_ann").getByRole("button", { name: "Approve" }).click();
    await poll(() => rowOf("Refund ct_ann").count()).toBe(0);
    await rowOf("Refund ct_ben").getByPlaceholder("Comment (optional)").fill("duplicate claim");
    await rowOf("Refund ct_ben").getByRole("button", { name: "Reject" }).click();
    await poll(() => rowOf("Refund ct_ben").count()).toBe(0);
    const decided = page.locator("section[aria-labelledby=recent-h] table");
    // The list of decisions refreshes after each decision: wait for the second one to be on it.
    await poll(() => decided.textContent()).toContain("duplicate claim");
    const text = (await decided.textContent())!;
    expect(text).toMatch(/Refund ct_ann.*approved by user:/);
    expect(text).toMatch(/Refund ct_ben.*rejected by user:.*duplicate claim/);

    expect((await settle(engine, yes)).status).toBe("completed");
    expect((await settle(engine, no)).status).toBe("completed");
    const approvals = (await engine.listApprovals(WS, undefined, 50)).filter((a) => a.run_id === yes || a.run_id === no);
    expect(approvals.map((a) => [a.run_id, a.status, a.comment]).sort()).toEqual(
      [
        [yes, "approved", "within policy"],
        [no, "rejected", "duplicate claim"],
      ].sort(),
    );

    // The approval step was recorded as two rows (parked, then decided): the thread shows one.
    expect((await engine.listSteps(WS, yes)).filter((s) => s.node_key === "ask").length).toBe(2);
    await open(page, `/runs/${yes}`);
    await poll(() => page.locator("ol.thread .step-key").allTextContents()).toEqual(["ask", "paid", "done"]);
    expect(await page.locator("ol.thread > li").first().textContent()).toContain("waited from");
    expect(await page.locator("#thread-h").textContent()).toContain("3 steps");
    await shot("run-completed");
  });

  it("pauses a subject with a reason and an end, resumes it from the run it holds and from its page", async () => {
    const run = (await engine.enroll(WS, ids.hold, { subject_id: "ct_hal", context_overrides: {} })).run;
    await settle(engine, run.id, (r) => r.status === "waiting");
    await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: "Subjects" }).click();
    await page.getByLabel("Subject id").fill("ct_hal");
    await page.getByRole("button", { name: "Open" }).click();
    await page.getByRole("heading", { name: "Subject ct_hal", level: 1 }).waitFor();
    await poll(() => page.locator("table.controls caption").textContent()).toContain("Not paused");

    // The reason is required: the browser will not send the form without it.
    await page.getByRole("button", { name: "Pause subject" }).click();
    expect(await engine.listPauses(WS, "ct_hal")).toEqual([]);
    await page.getByLabel("Reason (required)").fill("asked for a break");
    await page.getByLabel("Until (optional)").fill("2099-01-01T10:30");
    await page.getByRole("button", { name: "Pause subject" }).click();
    await poll(() => page.locator("table.controls tbody tr").count()).toBe(1);
    const pauses = await engine.listPauses(WS, "ct_hal");
    expect(pauses.map((p) => [p.automation_id, p.pause_reason])).toEqual([["", "asked for a break"]]);
    expect(new Date(pauses[0]!.paused_until!).getFullYear()).toBe(2099);
    expect(await page.locator("table.controls tbody").textContent()).toContain("asked for a break");
    await shot("subject");

    // The event that would wake the run comes while the subject is paused: it parks instead.
    await engine.ingest(WS, { type: "reply.sent", subject_id: "ct_hal" });
    await settle(engine, run.id, (r) => r.waiting_for === "subject_resume");
    await open(page, `/runs/${run.id}`);
    const why = page.getByTestId("explanation");
    const resume = why.getByRole("button", { name: "Resume ct_hal (every automation)" });
    await resume.waitFor();
    expect(await why.textContent()).not.toMatch(/POST \/v1\/subjects/);
    confirmNext(page);
    await resume.click();
    expect((await settle(engine, run.id)).status).toBe("completed");
    expect(await engine.listPauses(WS, "ct_hal")).toEqual([]);

    // Per automation, and resumed from the subject's page.
    await open(page, "/subjects/ct_hal");
    await page.getByLabel("Reason (required)").fill("only this one");
    await page.getByLabel("Automation").selectOption(ids.hold);
    await page.getByRole("button", { name: "Pause subject" }).click();
    const row = page.locator(`table.controls tr[data-pause="${ids.hold}"]`);
    await row.waitFor();
    expect((await engine.listPauses(WS, "ct_hal")).map((p) => p.automation_id)).toEqual([ids.hold]);
    confirmNext(page);
    await row.getByRole("button", { name: "Resume" }).click();
    await poll(() => page.locator("table.controls caption").textContent()).toContain("Not paused");
    expect(await engine.listPauses(WS, "ct_hal")).toEqual([]);
  });

  it("stops one run and cancels another from their pages", async () => {
    const a = (await engine.enroll(WS, ids.hold, { subject_id: "ct_sam", context_overrides: {} })).run.id;
    const b = (await engine.enroll(WS, ids.hold, { subject_id: "ct_tom", context_overrides: {} })).run.id;
    for (const id of [a, b]) await settle(engine, id, (r) => r.status === "waiting");
    await open(page, `/runs/${a}`);
    confirmNext(page);
    await page.getByRole("button", { name: "Stop" }).click();
    await poll(() => page.getByTestId("explanation").textContent()).toContain("Exited (admin_stopped)");
    expect((await engine.getRun(WS, a)).exit_reason).toBe("admin_stopped");
    // A stopped run may be redriven too; with nothing succeeded it says re-triggering would repeat nothing.
    expect(await page.getByTestId("recovery").textContent()).toContain("Redrive on its own version (v1)");
    await open(page, `/runs/${b}`);
    confirmNext(page);
    await page.getByRole("button", { name: "Cancel" }).click();
    await poll(() => page.getByTestId("explanation").textContent()).toContain("Cancelled at");
    expect((await engine.getRun(WS, b)).status).toBe("cancelled");
    expect(
      await page
        .getByTestId("recovery")
        .getByRole("button", { name: /Redrive/ })
        .count(),
    ).toBe(0);
  });

  it("pauses and activates an automation from the list", async () => {
    await open(page, "/automations");
    const row = page.locator(`tr[data-automation="${ids.branchy}"]`);
    await row.waitFor();
    confirmNext(page);
    await row.getByRole("button", { name: "Pause" }).click();
    await poll(() => row.locator(".badge").textContent()).toBe("paused");
    expect((await engine.getAutomation(WS, ids.branchy)).status).toBe("paused");
    await shot("automations");
    confirmNext(page);
    await row.getByRole("button", { name: "Activate" }).click();
    await poll(() => row.locator(".badge").textContent()).toBe("active");
    expect((await engine.getAutomation(WS, ids.branchy)).status).toBe("active");
  });

  it("simulates with a pasted event and forced branches (field or file); a bad JSON names its field", async () => {
    await open(page, `/automations/${ids.branchy}`);
    await page.getByRole("heading", { name: "Simulate version 1" }).waitFor();
    const result = page.getByTestId("simulation");
    await page.getByLabel("Trigger event (JSON)").fill(JSON.stringify({ type: "user.signed_up", payload: { plan: "pro" } }));
    await page.getByRole("button", { name: "Simulate", exact: true }).click();
    await poll(() => result.locator(".sim-path").textContent()).toBe("vip[true] → gift[next] → done");
    // Forced: the branch takes false whatever the event says.
    await page.getByLabel("Forced branches (JSON: node key → port)").fill('{"vip": "false"}');
    await page.getByRole("button", { name: "Simulate", exact: true }).click();
    await poll(() => result.locator(".sim-path").textContent()).toBe("vip[false, forced] → done");
    expect(await result.locator("svg.graph-svg g.node.mark-visited").count()).toBe(2);
    await result.scrollIntoViewIfNeeded();
    await shot("simulate");
    // From a file.
    await page.getByLabel("Forced branches (JSON: node key → port)").fill("");
    await page
      .getByLabel("Forced branches from a file")
      .setInputFiles({ name: "branches.json", mimeType: "application/json", buffer: Buffer.from('{"vip": "true"}') });
    await poll(() => page.getByLabel("Forced branches (JSON: node key → port)").inputValue()).toBe('{"vip": "true"}');
    await page.getByLabel("Event from a file").setInputFiles({
      name: "event.json",
      mimeType: "application/json",
      buffer: Buffer.from(JSON.stringify({ type: "user.signed_up", payload: { plan: "free" } })),
    });
    await poll(() => page.getByLabel("Trigger event (JSON)").inputValue()).toContain('"plan":"free"');
    await page.getByRole("button", { name: "Simulate", exact: true }).click();
    await poll(() => result.locator(".sim-path").textContent()).toBe("vip[true, forced] → gift[next] → done");
    // Unforced, the uploaded event takes the branch's own way.
    await page.getByLabel("Forced branches (JSON: node key → port)").fill("");
    await page.getByRole("button", { name: "Simulate", exact: true }).click();
    await poll(() => result.locator(".sim-path").textContent()).toBe("vip[false] → done");
    await page.getByLabel("Trigger event (JSON)").fill("{not json");
    await page.getByRole("button", { name: "Simulate", exact: true }).click();
    await poll(() => page.getByRole("alert").textContent()).toContain("console.invalid_json");
    expect(await page.getByRole("alert").textContent()).toContain("(at /event)");
    // Nothing was run by the simulations.
    expect((await api.call<{ items: unknown[] }>("GET", `/v1/automations/${ids.branchy}/runs`)).body.items).toEqual([]);
  });

  it("the events view lists a sent event and explains it", async () => {
    const { event_id } = await engine.ingest(WS, { type: "user.signed_up", subject_id: "ct_eve", payload: { plan: "pro" } });
    await poll(async () => (await engine.getEvent(WS, event_id)).dispatched_at !== null).toBe(true);
    await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: "Events" }).click();
    const row = page.locator(`tr[data-event="${event_id}"]`);
    await row.waitFor();
    await shot("events");
    await row.getByRole("link").click();
    await poll(() => page.locator(`tr[data-automation="vip"]`).textContent()).toMatch(/taken/);
  });

  it("a viewer sees every control disabled; forced past that, the API's 403 is shown plainly", async () => {
    await engine.enroll(WS, ids.refund, { subject_id: "ct_vic", context_overrides: {} });
    const held = (await engine.enroll(WS, ids.hold, { subject_id: "ct_val", context_overrides: {} })).run.id;
    await settle(engine, held, (r) => r.status === "waiting");
    const vp = await browser!.newPage();
    watch(vp);
    try {
      await signIn(vp, viewerToken);
      await poll(() => vp.getByTestId("whoami").textContent()).toContain("viewer");
      await open(vp, `/runs/${held}`);
      for (const name of ["Stop", "Cancel"]) {
        const b = vp.getByRole("button", { name });
        await b.waitFor();
        expect(await b.isDisabled()).toBe(true);
        expect(await b.getAttribute("title")).toContain("viewer");
      }
      await open(vp, `/runs/${ids.failed}`);
      await vp.getByTestId("recovery").waitFor();
      for (const b of await vp.getByTestId("recovery").getByRole("button").all()) expect(await b.isDisabled()).toBe(true);
      await open(vp, "/approvals");
      const row = vp.locator("table.approvals").first().locator("tbody tr", { hasText: "Refund ct_vic" });
      await row.waitFor();
      expect(await row.getByRole("button", { name: "Approve" }).isDisabled()).toBe(true);
      expect(await row.getByRole("button", { name: "Reject" }).isDisabled()).toBe(true);
      await open(vp, "/subjects/ct_val");
      await vp.getByRole("button", { name: "Pause subject" }).waitFor();
      expect(await vp.getByRole("button", { name: "Pause subject" }).isDisabled()).toBe(true);
      await open(vp, "/automations");
      await vp.locator(`tr[data-automation="${ids.branchy}"]`).waitFor();
      expect(await vp.locator(`tr[data-automation="${ids.branchy}"]`).getByRole("button", { name: "Pause" }).isDisabled()).toBe(true);
      // Simulation writes nothing: a viewer may run it.
      await open(vp, `/automations/${ids.branchy}`);
      await vp.getByRole("button", { name: "Simulate", exact: true }).click();
      await poll(() => vp.getByTestId("simulation").locator(".sim-path").textContent()).toContain("vip");

      // Past the disabled button (as a stale page would be): the refusal is shown, with its code.
      await open(vp, "/subjects/ct_val");
      await vp.getByLabel("Reason (required)").waitFor();
      await vp.evaluate(`for (const el of document.querySelectorAll("input, button")) el.disabled = false`);
      await vp.getByLabel("Reason (required)").fill("not allowed");
      await vp.getByRole("button", { name: "Pause subject" }).click();
      await poll(() => vp.getByRole("alert").textContent()).toContain("auth.forbidden");
      expect(await vp.getByRole("alert").textContent()).toContain("Not allowed for your role");
      expect(await engine.listPauses(WS, "ct_val")).toEqual([]);
    } finally {
      await vp.close();
    }
    expect(pageErrors).toEqual([]);
  });
});
