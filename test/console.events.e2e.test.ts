// The console's events view in headless Chromium (Debian's; nothing is downloaded): search events
// by subject, open one, and read why each automation did or did not take it.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { startApi, type Api } from "./helpers/api.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

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
const TOKEN = "console-events-admin-token";

const ending = (key: string, name: string, eventName: string) => ({
  key,
  name,
  triggers: [{ type: "event", name: eventName }],
  root: "e",
  nodes: [{ key: "e", kind: "end" }],
  edges: [],
});

describe("console events view (embedded store)", () => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;
  let browser: BrowserContext;
  let profile: string;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    ts = await makeStore("embedded");
    engine = await startEngine({ store: ts.store, dispatchPollMs: 20 });
    api = await startApi(engine, TOKEN);
    profile = mkdtempSync(join(tmpdir(), "weft-chromium-"));
    browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  });
  afterAll(async () => {
    await browser?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
    await api?.close();
    await engine?.stop();
    await ts?.destroy();
  });

  it("finds the event by subject and shows the explanation table", async () => {
    await engine.createAutomation(WS, ending("welcome", "Welcome", "user.signed_up"));
    await engine.createAutomation(WS, ending("winback", "Win back", "user.churned"));
    const { event_id } = await engine.ingest(WS, { type: "user.signed_up", subject_id: "ct_42" });
    await engine.ingest(WS, { type: "user.signed_up", subject_id: "ct_other" });
    await until("the event dispatched", async () => (await engine.getEvent(WS, event_id)).dispatched_at !== null);

    const page = browser.pages()[0] ?? (await browser.newPage());
    page.setDefaultTimeout(15_000);
    page.on("pageerror", (e) => pageErrors.push(`pageerror: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error" && !/Failed to load resource: the server responded with a status of 40[14]/.test(m.text()))
        pageErrors.push(`console: ${m.text()}`);
    });
    await page.goto(`${api.base}/console/#/events`);
    await page.fill("#token", TOKEN);
    await page.click("button[type=submit]");
    await page.click("nav >> text=Events");
    await page.fill("input[name=subject_id]", "ct_42");
    await page.click("form[aria-label='Search events'] button[type=submit]");
    await page.waitForSelector("table.events caption >> text=1 event, newest first");
    await page.click(`tr[data-event="${event_id}"] a`);
    const welcome = await page.textContent('tr[data-automation="welcome"]');
    expect(welcome).toMatch(/yes.*run_.*taken/);
    const winback = await page.textContent('tr[data-automation="winback"]');
    expect(winback).toContain("event_name_differs");
    expect(winback).toContain('It listens for "user.churned"; this event is "user.signed_up".');
    expect(await page.textContent("h1")).toContain(event_id);
    expect(pageErrors).toEqual([]);
  });
});
