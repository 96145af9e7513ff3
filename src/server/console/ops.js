// The ops dashboard: is the engine keeping up (overdue runs and schedules, queue depth, the
// oldest due run) and is something breaking (failed runs per automation, with the spike flag of
// GET /v1/ops/overview, and failures per hour drawn from one bounded page of the newest failed
// run summaries: the per-automation counts come from the overview, never from fetching every run).

import { AutomationName, ErrorBox, Loading, Time, api, fmtAgo, href, html, navigate, qs, useAutomations, useInterval, useLoad } from "./lib.js";

const HOUR = 3_600_000;
const WINDOWS = [6, 24, 72, 168];
/** The chart draws at most this many failed runs (one page); the table's counts are the overview's, complete. */
const CHART_RUNS = 200;
const PALETTE = ["#1f5fbf", "#b3261e", "#00796b", "#8e24aa", "#ef6c00", "#5d4037", "#3949ab", "#558b2f", "#c2185b", "#455a64"];

async function loadOps(hours) {
  const now = Date.now();
  const end = Math.ceil((now + 1) / HOUR) * HOUR;
  const start = end - hours * HOUR;
  const [overview, overdue, failed, limits] = await Promise.all([
    api("GET", `/v1/ops/overview?window_hours=${hours}`),
    api("GET", "/v1/ops/overdue"),
    api("GET", `/v1/automation-runs${qs({ status: "failed", started_after: new Date(start).toISOString(), limit: CHART_RUNS })}`),
    api("GET", "/v1/limits"),
  ]);
  return { overview, overdue, failed: { items: failed.items, truncated: failed.next_cursor !== null }, limits, start, end, now };
}

export function OpsPage({ query }) {
  const hours = WINDOWS.includes(Number(query.hours)) ? Number(query.hours) : 24;
  const automations = useAutomations();
  const ops = useLoad(() => loadOps(hours), [hours]);
  useInterval(() => ops.reload(true), 15_000, true);

  return html`<section aria-labelledby="ops-h">
    <header class="page-head">
      <h1 id="ops-h">Operations</h1>
      <form class="filters inline" onSubmit=${(e) => e.preventDefault()} aria-label="Time window">
        <label>Window
          <select value=${String(hours)} onChange=${(e) => navigate("/ops", { hours: e.currentTarget.value })}>
            ${WINDOWS.map((h) => html`<option value=${String(h)}>last ${h < 48 ? `${h} hours` : `${h / 24} days`}</option>`)}
          </select>
        </label>
        <button type="button" onClick=${() => ops.reload(true)}>Refresh</button>
      </form>
    </header>
    <${ErrorBox} error=${ops.error} />
    ${ops.loading && !ops.data ? html`<${Loading} what="Loading the overview" />` : null}
    ${ops.data ? html`<${Dashboard} data=${ops.data} hours=${hours} automations=${automations.data} />` : null}
  </section>`;
}

function Dashboard({ data, hours, automations }) {
  const { overview: o, overdue } = data;
  const spikes = o.failed_runs.filter((f) => f.spike);
  return html`
    ${
      spikes.length > 0
        ? html`<div class="alert-box" role="alert">
      <strong>Failure spike:</strong> ${spikes.map((s, i) => html`${i ? ", " : ""}<${AutomationName} id=${s.automation_id} automations=${automations} /> (${s.last_hour} in the last hour)`)}.
      A spike across several automations at once usually means a deployed change broke something.
    </div>`
        : null
    }
    <ul class="stats" aria-label="Engine health">
      <li class=${o.overdue_runs > 0 ? "stat warn" : "stat"}><span class="n">${o.overdue_runs}</span> overdue runs</li>
      <li class=${o.overdue_schedules > 0 ? "stat warn" : "stat"}><span class="n">${o.overdue_schedules}</span> overdue schedules</li>
      <li class="stat"><span class="n">${o.queue_depth.due_runs}</span> runs due now (queue depth)</li>
      <li class="stat"><span class="n">${o.queue_depth.undispatched_events}</span> events not yet dispatched</li>
      <li class="stat">${
        o.oldest_due_run
          ? html`<span class="n small"><a href=${href(`/runs/${o.oldest_due_run.id}`)}><code>${o.oldest_due_run.id}</code></a></span> oldest due run, due <${Time} iso=${o.oldest_due_run.due_at} /> (${fmtAgo(o.oldest_due_run.due_at)})`
          : html`<span class="n">—</span> no run is due`
      }</li>
    </ul>
    <section aria-labelledby="fail-h">
      <h2 id="fail-h">Failures per automation over time</h2>
      <${FailureChart} runs=${data.failed.items} start=${data.start} end=${data.end} automations=${automations} spikes=${spikes} />
      ${data.failed.truncated ? html`<p class="muted">Only the newest ${data.failed.items.length} failed runs are drawn.</p>` : null}
      <table class="failed">
        <caption>Failed runs per automation in the last ${hours} hours</caption>
        <thead><tr><th scope="col">Automation</th><th scope="col">In the window</th><th scope="col">Last hour</th><th scope="col">Spike</th><th scope="col"><span class="sr-only">Runs</span></th></tr></thead>
        <tbody>
          ${o.failed_runs.length === 0 ? html`<tr><td colspan="5" class="muted">No failed runs in this window.</td></tr>` : null}
          ${[...o.failed_runs]
            .sort((a, b) => b.in_window - a.in_window)
            .map(
              (f) => html`<tr>
            <td><${AutomationName} id=${f.automation_id} automations=${automations} /></td>
            <td>${f.in_window}</td><td>${f.last_hour}</td>
            <td>${f.spike ? html`<span class="badge spike">Spike</span>` : html`<span class="muted">no</span>`}</td>
            <td><a href=${href("/runs", { automation_id: f.automation_id, status: "failed", started_after: new Date(data.start).toISOString() })}>Failed runs</a></td>
          </tr>`,
            )}
        </tbody>
      </table>
    </section>
    <section aria-labelledby="flow-h">
      <h2 id="flow-h">Flow control</h2>
      <p class="muted">The busiest keys of concurrency rules and shared limits: slots held and runs waiting for one.</p>
      <table class="flow">
        <caption>Busiest flow-control keys</caption>
        <thead><tr><th scope="col">Limit</th><th scope="col">Key</th><th scope="col">Held</th><th scope="col">Waiting</th></tr></thead>
        <tbody>
          ${data.limits.busiest_keys.length === 0 ? html`<tr><td colspan="4" class="muted">No slot is held and nothing waits.</td></tr>` : null}
          ${data.limits.busiest_keys.map(
            (k) => html`<tr>
            <td>${k.limit}</td><td><code>${k.key}</code></td><td>${k.held}</td><td>${k.waiting}</td>
          </tr>`,
          )}
        </tbody>
      </table>
    </section>
    <section aria-labelledby="overdue-h">
      <h2 id="overdue-h">Overdue</h2>
      <p class="muted">Overdue: due longer ago than the grace period and not yet claimed by any worker — the engine is behind, not failing.</p>
      <table class="overdue">
        <caption>Overdue runs and schedules per automation</caption>
        <thead><tr><th scope="col">Automation</th><th scope="col">Runs</th><th scope="col">Schedules</th><th scope="col">Oldest due</th></tr></thead>
        <tbody>
          ${overdue.by_automation.length === 0 ? html`<tr><td colspan="4" class="muted">Nothing is overdue.</td></tr>` : null}
          ${overdue.by_automation.map(
            (r) => html`<tr>
            <td><${AutomationName} id=${r.automation_id} automations=${automations} /></td>
            <td>${r.runs}</td><td>${r.schedules}</td><td><${Time} iso=${r.oldest_due_at} ago /></td>
          </tr>`,
          )}
        </tbody>
      </table>
    </section>`;
}

/** Failed runs per hour, stacked per automation, as inline SVG; a marker where ops/overview flags a spike. */
export function FailureChart({ runs, start, end, automations, spikes }) {
  const n = Math.round((end - start) / HOUR);
  const ids = [...new Set([...runs.map((r) => r.automation_id), ...spikes.map((s) => s.automation_id)])];
  const color = new Map(ids.map((id, i) => [id, PALETTE[i % PALETTE.length]]));
  const buckets = Array.from({ length: n }, () => new Map());
  for (const r of runs) {
    const i = Math.floor((Date.parse(r.started_at) - start) / HOUR);
    if (i < 0 || i >= n) continue;
    buckets[i].set(r.automation_id, (buckets[i].get(r.automation_id) ?? 0) + 1);
  }
  const totals = buckets.map((b) => [...b.values()].reduce((x, y) => x + y, 0));
  const max = Math.max(1, ...totals);
  const step = niceStep(max);
  const top = Math.ceil(max / step) * step;
  const W = 760,
    H = 240,
    L = 40,
    R = 16,
    T = 26,
    B = 36;
  const bw = (W - L - R) / n;
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const name = (id) => automations?.byId.get(id)?.name ?? id;
  const label = (t) => {
    const d = new Date(t);
    return n > 48 ? `${d.getMonth() + 1}/${d.getDate()} ${String(d.getHours()).padStart(2, "0")}h` : `${String(d.getHours()).padStart(2, "0")}:00`;
  };
  const every = Math.max(1, Math.ceil(n / 8));
  const total = runs.length;
  const desc =
    total === 0
      ? "No failed runs in this window."
      : `${total} failed runs over ${n} hours; most in one hour: ${max}.${spikes.length ? ` Spike flagged for ${spikes.map((s) => name(s.automation_id)).join(", ")}.` : ""}`;
  return html`<figure class="chart">
    <svg viewBox=${`0 0 ${W} ${H}`} role="img" aria-labelledby="chart-t chart-d" class="chart-svg" preserveAspectRatio="xMidYMid meet">
      <title id="chart-t">Failed runs per hour, per automation</title>
      <desc id="chart-d">${desc}</desc>
      <g class="axis">
        ${Array.from({ length: top / step + 1 }, (_, i) => i * step).map(
          (v) => html`<g>
          <line x1=${L} x2=${W - R} y1=${y(v)} y2=${y(v)} class="grid" />
          <text x=${L - 6} y=${y(v) + 4} text-anchor="end">${v}</text>
        </g>`,
        )}
        ${buckets.map((_, i) => (i % every === 0 ? html`<text x=${L + i * bw + bw / 2} y=${H - B + 16} text-anchor="middle">${label(start + i * HOUR)}</text>` : null))}
        <text x=${W - R} y=${H - 4} text-anchor="end" class="muted-text">hour started (local time)</text>
      </g>
      <g class="bars">
        ${buckets.map((b, i) => {
          let acc = 0;
          return ids
            .filter((id) => b.get(id))
            .map((id) => {
              const v = b.get(id);
              const y0 = y(acc + v);
              acc += v;
              return html`<rect x=${L + i * bw + 1} width=${Math.max(1, bw - 2)} y=${y0} height=${y(acc - v) - y0} fill=${color.get(id)}>
              <title>${`${name(id)}: ${v} failed, ${label(start + i * HOUR)}`}</title>
            </rect>`;
            });
        })}
      </g>
      ${spikes.map((s, k) => {
        const x = L + (n - 1) * bw + bw / 2;
        const yy = y(totals[n - 1] ?? 0) - 6 - k * 14;
        return html`<g class="spike-marker" data-automation=${s.automation_id}>
          <path d=${`M${x - 6},${yy - 10} L${x + 6},${yy - 10} L${x},${yy} z`} fill=${color.get(s.automation_id)} stroke="#7a0000" />
          <text x=${x - 9} y=${yy - 2} text-anchor="end" class="spike-label">spike: ${name(s.automation_id)} (${s.last_hour}/h)</text>
        </g>`;
      })}
    </svg>
    <figcaption>
      <ul class="legend" aria-label="Automations in the chart">
        ${ids.length === 0 ? html`<li class="muted">No failed runs in this window.</li>` : null}
        ${ids.map((id) => html`<li><span class="swatch" style=${{ background: color.get(id) }} aria-hidden="true"></span>${name(id)}</li>`)}
      </ul>
      <details>
        <summary>The chart as a table</summary>
        <table class="chart-table">
          <caption>Failed runs per hour (hours with none are left out)</caption>
          <thead><tr><th scope="col">Hour</th>${ids.map((id) => html`<th scope="col">${name(id)}</th>`)}</tr></thead>
          <tbody>${buckets.map((b, i) => (totals[i] ? html`<tr><th scope="row">${label(start + i * HOUR)}</th>${ids.map((id) => html`<td>${b.get(id) ?? 0}</td>`)}</tr>` : null))}</tbody>
        </table>
      </details>
    </figcaption>
  </figure>`;
}

function niceStep(max) {
  const raw = max / 4;
  const p = 10 ** Math.floor(Math.log10(Math.max(1, raw)));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return Math.max(1, m * p);
  return Math.max(1, 10 * p);
}
