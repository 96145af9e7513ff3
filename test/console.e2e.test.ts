// The web console end to end, as a person uses it: a real engine on the embedded store and the
// API on 127.0.0.1, real runs (one completed; six failed on a 401 from a loopback CRM, which is a
// failure spike; one waiting on an approval; a fan-out with items, one failed), and Debian's
// headless Chromium driven by playwright-core through every page. The approval is decided by
// clicking its button, and the run it held resumes and completes. A screenshot of each page goes
// to test/screenshots/ (ignored by git).

import { mkdirSync, mkdtempSync, rmSync, existsSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance } from "fastify";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BOOTSTRAP_ADMIN } from "../src/engine/admin.js";
import type { Engine } from "../src/engine/engine.js";
import { buildApp } from "../src/server/app.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { makeStore, type TestStore } from "./helpers/stores.js";

const CHROMIUM = "/usr/bin/chromium";
/** As the machine notes say: no background traffic (the network here is closed), no sandbox as root. */
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
const TOKEN = "console-e2e-admin-token";
const SHOTS = fileURLToPath(new URL("./screenshots/", import.meta.url));
/** Wait for what the page shows (it renders after its API calls answer); generous for a loaded CI machine. */
const poll = <T>(fn: () => Promise<T>) => expect.poll(fn, { timeout: 15_000, interval: 50 });

/** The outside world of these runs: a CRM that refuses the key, an endpoint that accepts, a KYC service that rejects one account. */
function startLoopback(): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const json = (status: number, body: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      if (req.url?.startsWith("/crm/")) return json(401, { error: { type: "invalid_api_key", message: "The API key sk_live_…x9 was revoked" } });
      if (req.url === "/kyc/acc_3") return json(422, { error: "account acc_3 has no email on file" });
      return json(200, { ok: true, path: req.url });
    });
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        close: () => new Promise<void>((r) => server.close(() => r())),
      }),
    ),
  );
}

describe("web console in headless Chromium (embedded store)", () => {
  let ts: TestStore;
  let engine: Engine;
  let app: FastifyInstance;
  let base = "";
  let loopback: Awaited<ReturnType<typeof startLoopback>>;
  let profile = "";
  let browser: BrowserContext | undefined;
  let page: Page;
  const pageErrors: string[] = [];
  const ids = { welcome: "", crm: "", refund: "", kyc: "", completed: "", failed: "", waiting: "", fanout: "", failedAll: [] as string[] };

  const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  const open = async (hash: string) => {
    await page.goto(`${base}/console/#${hash}`);
  };

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium), as .ci/run does; this test never downloads a browser`);
    }
    mkdirSync(SHOTS, { recursive: true });
    loopback = await startLoopback();
    ts = await makeStore("embedded");
    engine = await startEngine({ store: ts.store });
    app = buildApp({ engine, adminToken: TOKEN });
    await app.listen({ host: "127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;

    // A completed run (its automation then gets a second version, for the history).
    const welcome = await engine.createAutomation(WS, {
      key: "welcome",
      name: "Welcome email",
      root: "greet",
      nodes: [
        { key: "greet", kind: "set", config: { assign: { greeting: "'Hello ' + context.name" } } },
        {
          key: "send",
          kind: "http_request",
          config: { method: "POST", url: `${loopback.url}/mail`, body: { to: "{{ subject.id }}", text: "{{ context.greeting }}" } },
        },
        { key: "done", kind: "end" },
      ],
      edges: [
        { from: "greet", port: "next", to: "send" },
        { from: "send", port: "next", to: "done" },
      ],
    });
    ids.welcome = welcome.id;
    ids.completed = (await engine.enroll(WS, welcome.id, { subject_id: "ct_ada", context_overrides: { name: "Ada" } })).run.id;
    expect((await settle(engine, ids.completed)).status).toBe("completed");
    await engine.updateAutomation(WS, welcome.id, {
      key: "welcome",
      name: "Welcome email",
      root: "greet",
      nodes: [
        { key: "greet", kind: "set", config: { assign: { greeting: "'Hello ' + context.name" } } },
        { key: "vip", kind: "branch", config: { condition: "context.name == 'Ada'" } },
        {
          key: "send",
          kind: "http_request",
          config: { method: "POST", url: `${loopback.url}/mail`, body: { to: "{{ subject.id }}", text: "{{ context.greeting }}" } },
        },
        { key: "done", kind: "end" },
      ],
      edges: [
        { from: "greet", port: "next", to: "vip" },
        { from: "vip", port: "true", to: "send" },
        { from: "vip", port: "false", to: "done" },
        { from: "send", port: "next", to: "done" },
      ],
    });

    // Six runs fail on the CRM's 401 within the hour: a failed run to explain, and a spike.
    const crm = await engine.createAutomation(WS, {
      key: "crm-sync",
      name: "CRM sync",
      root: "push",
      nodes: [
        {
          key: "push",
          kind: "http_request",
          config: {
            method: "POST",
            url: `${loopback.url}/crm/contacts`,
            headers: { Authorization: "Bearer sk_live_revoked" },
            body: { id: "{{ subject.id }}" },
          },
        },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "push", port: "next", to: "done" }],
    });
    ids.crm = crm.id;
    for (let i = 1; i <= 6; i++) {
      const run = (await engine.enroll(WS, crm.id, { subject_id: `ct_${i}`, context_overrides: {} })).run;
      expect((await settle(engine, run.id)).status).toBe("failed");
      ids.failedAll.push(run.id);
    }
    ids.failed = ids.failedAll[0]!;

    // A run parked on an approval.
    const refund = await engine.createAutomation(WS, {
      key: "refund",
      name: "Refund approval",
      root: "ask",
      nodes: [
        { key: "ask", kind: "approval", config: { title: "Refund 120 EUR to {{ subject.id }}", approvers: [] } },
        { key: "pay", kind: "http_request", config: { method: "POST", url: `${loopback.url}/refunds`, body: { subject: "{{ subject.id }}" } } },
        { key: "done", kind: "end" },
      ],
      edges: [
        { from: "ask", port: "approved", to: "pay" },
        { from: "ask", port: "rejected", to: "done" },
        { from: "pay", port: "next", to: "done" },
      ],
    });
    ids.refund = refund.id;
    ids.waiting = (await engine.enroll(WS, refund.id, { subject_id: "ct_bob", context_overrides: {} })).run.id;
    expect((await settle(engine, ids.waiting, (r) => r.status === "waiting")).waiting_for).toBe("approval");

    // A fan-out over four accounts; the KYC service rejects one.
    const kyc = await engine.createAutomation(WS, {
      key: "kyc-review",
      name: "Weekly KYC review",
      root: "fanout",
      nodes: [
        {
          key: "fanout",
          kind: "for_each",
          config: {
            items: "context.accounts",
            subject: "item.id",
            action: { kind: "http_request", config: { method: "POST", url: `${loopback.url}/kyc/{{ item.id }}`, body: { account: "{{ item.id }}" } } },
            concurrency: 2,
          },
        },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "fanout", port: "next", to: "done" }],
    });
    ids.kyc = kyc.id;
    ids.fanout = (
      await engine.enroll(WS, kyc.id, {
        subject_id: null,
        context_overrides: { accounts: [{ id: "acc_1" }, { id: "acc_2" }, { id: "acc_3" }, { id: "acc_4" }] },
      })
    ).run.id;
    expect((await settle(engine, ids.fanout)).status).toBe("completed_with_failures");

    profile = mkdtempSync(join(tmpdir(), "weft-chromium-"));
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 900 },
    });
    page = browser.pages()[0] ?? (await browser.newPage());
    page.setDefaultTimeout(15_000);
    page.on("pageerror", (e) => pageErrors.push(`pageerror: ${e.message}`));
    page.on("console", (m) => {
      // API errors the page shows on purpose (a wrong token, a run that does not exist) Chromium also logs as failed resources.
      if (m.type() === "error" && !/Failed to load resource: the server responded with a status of 40[14]/.test(m.text()))
        pageErrors.push(`console: ${m.text()}`);
    });
  });

  afterAll(async () => {
    await browser?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
    await app?.close();
    await engine?.stop();
    await ts?.destroy();
    await loopback?.close();
  });

  it("serves the page, its modules and preact/htm from node_modules, outside the OpenAPI document", async () => {
    const index = await fetch(`${base}/console/`);
    expect(index.status).toBe(200);
    expect(index.headers.get("content-type")).toMatch(/text\/html/);
    expect(index.headers.get("content-security-policy")).toMatch(/script-src 'self' 'sha256-/);
    expect(await index.text()).toContain('type="importmap"');
    for (const path of ["app.js", "lib.js", "app.css", "vendor/preact.module.js", "vendor/hooks.module.js", "vendor/htm.module.js"]) {
      const r = await fetch(`${base}/console/${path}`);
      expect(r.status, path).toBe(200);
    }
    expect((await fetch(`${base}/console/../package.json`)).status).toBe(404);
    expect((await fetch(`${base}/console/vendor/react.js`)).status).toBe(404);
    const doc = (await (await fetch(`${base}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths).filter((p) => p.startsWith("/console"))).toEqual([]);
  });

  it("signs in with a pasted token; a wrong one is refused with its code", async () => {
    await open("/runs");
    await poll(() => page.getByLabel("API token").isVisible()).toBe(true);
    await shot("01-login");
    await page.getByLabel("API token").fill("not-a-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await poll(() => page.getByRole("alert").textContent()).toContain("auth.invalid_token");
    await page.getByLabel("API token").fill(TOKEN);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Runs", level: 1 }).waitFor();
    expect(await page.evaluate("sessionStorage.getItem('weft.console.token')")).toBe(TOKEN);
  });

  it("lists the run history, filters it and pages through it by cursor", async () => {
    const rows = page.locator("table.runs tbody tr");
    await poll(() => rows.count()).toBe(9);
    await shot("02-runs");
    await page.getByLabel("Status").selectOption("failed");
    await page.getByLabel("Automation").selectOption(ids.crm);
    await page.getByRole("button", { name: "Apply filters" }).click();
    await poll(() => page.evaluate("location.hash")).toContain("status=failed");
    await poll(() => rows.count()).toBe(6);
    expect(await page.locator("table.runs tbody .badge").allTextContents()).toEqual(Array(6).fill("failed"));
    await page.getByLabel("Subject").fill("ct_2");
    await page.getByRole("button", { name: "Apply filters" }).click();
    await poll(() => rows.count()).toBe(1);
    await poll(() => rows.first().textContent()).toContain(ids.failedAll[1]!);

    await open("/runs?limit=5");
    await poll(() => rows.count()).toBe(5);
    const firstPage = await page.locator("table.runs tbody tr td:first-child").allTextContents();
    await page.getByRole("link", { name: "Next page" }).click();
    await poll(() => rows.count()).toBe(4);
    const secondPage = await page.locator("table.runs tbody tr td:first-child").allTextContents();
    expect(new Set([...firstPage, ...secondPage]).size).toBe(9);
    expect(await page.getByRole("link", { name: "Next page" }).count()).toBe(0);
  });

  it("explains a failed run: the CRM refused the credentials (HTTP 401), and what to do", async () => {
    await open(`/runs/${ids.failed}`);
    const why = page.getByTestId("explanation");
    await poll(() => why.textContent()).toContain("refused the credentials (HTTP 401)");
    const text = (await why.textContent())!;
    expect(text).toContain('Failed at step "push"');
    expect(text).toContain("invalid_api_key");
    expect(text).toContain("Check the token or secret");
    expect(text).toContain("http.status_401");
    // The thread: the step, its resolved input (the credential redacted), its error.
    const step = page.locator("ol.thread > li");
    expect(await step.count()).toBe(1);
    const stepText = (await step.first().textContent())!;
    expect(stepText).toContain("http_request");
    expect(stepText).toContain("[redacted]");
    expect(stepText).not.toContain("sk_live_revoked");
    expect(stepText).toContain("permanent");
    expect(await page.locator("section[aria-labelledby=facts-h] dl").textContent()).toContain("CRM sync");
    await shot("03-run-failed");
  });

  it("shows a completed run's thread: every step in order, ports, input and output", async () => {
    await open(`/runs/${ids.completed}`);
    await poll(() => page.locator("ol.thread > li").count()).toBe(3);
    expect(await page.locator("ol.thread .step-key").allTextContents()).toEqual(["greet", "send", "done"]);
    const send = page.locator("ol.thread > li").nth(1);
    expect(await send.textContent()).toContain("Hello Ada");
    expect(await send.textContent()).toContain(`${ids.completed}/send/`);
    expect(await page.getByTestId("explanation").textContent()).toContain("Finished at");
    await shot("04-run-completed");
  });

  it("says the waiting run waits for an approval, by whom, and what would wake it", async () => {
    await open(`/runs/${ids.waiting}`);
    const why = page.getByTestId("explanation");
    await poll(() => why.textContent()).toContain("Waiting since");
    const text = (await why.textContent())!;
    expect(text).toMatch(/for approval apr_\S+ \("Refund 120 EUR to ct_bob"\)/);
    expect(text).toContain("Waiting forapproval");
    expect(text).toContain("a decision by any member");
    expect(await page.locator("section[aria-labelledby=appr-h] table").textContent()).toContain("Refund 120 EUR to ct_bob");
    await shot("05-run-waiting");
  });

  it("shows a fan-out's items with outcome, attempts, subject and error", async () => {
    await open(`/runs/${ids.fanout}`);
    const rows = page.locator("table.items tbody tr");
    await poll(() => rows.count()).toBe(4);
    const failed = rows.filter({ hasText: "acc_3" });
    expect(await failed.textContent()).toContain("http.status_422");
    expect(await failed.getByRole("button", { name: "Retry" }).count()).toBe(1);
    expect(await rows.filter({ hasText: "succeeded" }).count()).toBe(3);
    expect(await page.getByTestId("explanation").textContent()).toContain("1 of 4 items failed");
    await shot("06-run-items");
  });

  it("approves from the inbox; the run resumes and completes, and the inbox says who decided", async () => {
    await open("/approvals");
    const inbox = page.locator("table.approvals").first();
    const row = inbox.locator("tbody tr", { hasText: "Refund 120 EUR to ct_bob" });
    await row.waitFor();
    await shot("07-approvals");
    await row.getByRole("button", { name: "Approve" }).click();
    // Decided is no longer pending: the row leaves the inbox (and is listed under the decisions below).
    await poll(() => row.count()).toBe(0);
    const done = await settle(engine, ids.waiting);
    expect(done.status).toBe("completed");
    const steps = await engine.listSteps(WS, ids.waiting);
    expect(steps.map((s) => s.node_key)).toContain("pay");
    expect(steps.find((s) => s.node_key === "ask" && s.outcome === "succeeded")?.exited_via_port_key).toBe("approved");
    // Also listed under the decisions, with the decider.
    await poll(() => page.locator("section[aria-labelledby=recent-h] table").textContent()).toContain(`by user:${BOOTSTRAP_ADMIN}`);
    await shot("08-approvals-decided");
    await open(`/runs/${ids.waiting}`);
    await poll(() => page.getByTestId("explanation").textContent()).toContain("Finished at");
    expect(await page.locator("section[aria-labelledby=appr-h] table").textContent()).toContain(`by user:${BOOTSTRAP_ADMIN}`);
  });

  it("ops: overdue and queue numbers, failed runs per automation, the chart with the spike marked", async () => {
    // The page reads counts from ops/overview and one bounded page of failed runs, never every run.
    const runLists: URL[] = [];
    const onRequest = (r: { url(): string }) => {
      const u = new URL(r.url());
      if (u.pathname === "/v1/automation-runs") runLists.push(u);
    };
    page.on("request", onRequest);
    await open("/ops");
    const failed = page.locator("table.failed tbody tr", { hasText: "CRM sync" });
    await failed.waitFor();
    expect(await failed.textContent()).toMatch(/CRM sync66Spike/);
    expect(await page.locator(".stats").textContent()).toContain("overdue runs");
    expect(await page.getByRole("alert").textContent()).toContain("Failure spike");
    const chart = page.locator("svg.chart-svg");
    expect(await chart.locator(".bars rect").count()).toBeGreaterThanOrEqual(1);
    expect(await chart.locator(`.spike-marker[data-automation="${ids.crm}"]`).count()).toBe(1);
    expect(await chart.locator("desc").textContent()).toContain("6 failed runs");
    page.off("request", onRequest);
    expect(runLists.length).toBeGreaterThanOrEqual(1);
    for (const u of runLists) {
      expect(Number(u.searchParams.get("limit"))).toBeLessThanOrEqual(200);
      expect(u.searchParams.has("cursor")).toBe(false);
    }
    await shot("09-ops");
  });

  it("automations: the list, one automation's version history, and its graph", async () => {
    await open("/automations");
    const rows = page.locator("table.automations tbody tr");
    await poll(() => rows.count()).toBe(4);
    await shot("10-automations");
    await page.getByRole("link", { name: "Welcome email" }).click();
    await page.getByRole("heading", { name: "Version history" }).waitFor();
    const versions = page.locator("table.versions tbody tr");
    await poll(() => versions.count()).toBe(2);
    expect(await versions.first().textContent()).toContain("added vip");
    const graph = page.locator("svg.graph-svg");
    expect(await graph.locator("g.node").count()).toBe(4);
    expect(await graph.locator("text.port").allTextContents()).toEqual(expect.arrayContaining(["next", "true", "false"]));
    await shot("11-automation-graph");
    await page.getByRole("link", { name: "v1", exact: true }).click();
    await poll(() => graph.locator("g.node").count()).toBe(3);

    await open(`/automations/${ids.refund}`);
    await page.getByRole("heading", { name: "Graph of version 1" }).waitFor();
    expect(await page.locator("svg.graph-svg text.port").allTextContents()).toEqual(expect.arrayContaining(["approved", "rejected", "next"]));
    await shot("12-automation-approval-graph");
  });

  it("stops a run from its page (after a confirm) and reports API errors with their code", async () => {
    const run = (await engine.enroll(WS, ids.refund, { subject_id: "ct_eve", context_overrides: {} })).run;
    await settle(engine, run.id, (r) => r.status === "waiting");
    await open(`/runs/${run.id}`);
    await page.getByRole("button", { name: "Stop" }).waitFor();
    page.once("dialog", (d) => void d.accept());
    await page.getByRole("button", { name: "Stop" }).click();
    await poll(() => page.getByTestId("explanation").textContent()).toContain("Exited (admin_stopped)");
    expect((await engine.getRun(WS, run.id)).exit_reason).toBe("admin_stopped");
    await open("/runs/run_does_not_exist");
    await poll(() => page.getByRole("alert").textContent()).toContain("run.not_found");
    expect(pageErrors).toEqual([]);
  });
});
