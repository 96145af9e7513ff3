// Who may call each route: every route declares it in its config (`config: { role }`), the API's
// request hook enforces exactly that declaration, and docs/roles.md is generated from the same
// declarations (`npm run docs:roles`; a test fails when the page and the code disagree).

import { hasRouteRole, ROUTE_ROLES, type RouteRole } from "../engine/identity.js";

/**
 * A route's declaration: the least role its caller must hold (with a bearer token), or
 * `public` (no token: liveness, the OpenAPI document) or `signature` (no token: a webhook
 * delivery, authenticated by its Standard Webhooks signature).
 */
export type RouteAccess = RouteRole | "public" | "signature";

const ACCESS: readonly string[] = [...ROUTE_ROLES, "public", "signature"];

export function isRouteAccess(v: unknown): v is RouteAccess {
  return typeof v === "string" && ACCESS.includes(v);
}

/** Whether the route asks for a bearer token (and so a role) at all. */
export function needsToken(access: RouteAccess): access is RouteRole {
  return access !== "public" && access !== "signature";
}

export interface RouteDeclaration {
  method: string;
  url: string;
  role: RouteAccess;
}

/** The matrix's columns: a representative caller of each kind. */
const COLUMNS: { title: string; caller: { role: "viewer" | "member" | "admin"; instance_admin: boolean } }[] = [
  { title: "viewer", caller: { role: "viewer", instance_admin: false } },
  { title: "member", caller: { role: "member", instance_admin: false } },
  { title: "admin", caller: { role: "admin", instance_admin: false } },
  { title: "instance admin", caller: { role: "admin", instance_admin: true } },
];

/** `:id` as `{id}`, as the OpenAPI document and the README write paths. */
const displayPath = (url: string) => url.replace(/:([A-Za-z_]+)/g, "{$1}");

const METHOD_ORDER = ["GET", "POST", "PUT", "PATCH", "DELETE"];

function byPathThenMethod(a: RouteDeclaration, b: RouteDeclaration): number {
  if (a.url !== b.url) return a.url < b.url ? -1 : 1;
  return METHOD_ORDER.indexOf(a.method) - METHOD_ORDER.indexOf(b.method);
}

function cell(access: RouteAccess, caller: (typeof COLUMNS)[number]["caller"]): string {
  if (access === "public") return "yes (no token)";
  if (access === "signature") return "signature";
  return hasRouteRole(caller, access) ? "yes" : "no";
}

/** docs/roles.md for these routes. */
export function renderRoleMatrix(routes: readonly RouteDeclaration[]): string {
  const rows = [...routes].sort(byPathThenMethod);
  const lines = [
    "# Roles: who may call each route",
    "",
    "Generated from the routes' own declarations by `npm run docs:roles`; do not edit by hand (a test",
    "fails when this page and the code disagree).",
    "",
    "Every route declares the least role its caller must hold (`config: { role }`), and the API's",
    "request hook refuses anyone below it with 403 `auth.forbidden` (details: `required`, `role`)",
    "before the request body is read; a route without a declaration fails to register. Roles rank",
    "`viewer` < `member` < `admin` within one workspace; the *instance admin* (the bootstrap admin of",
    "the default workspace) is an admin who also creates workspaces and reads `/metrics`.",
    "",
    "`yes` means the role passes the route's role check. Some routes then apply a finer rule of their",
    "own, unchanged by this table: a run that executes as a specific user is visible (and controllable)",
    "only by that user and admins; enrolling or retriggering such a run needs someone who could have",
    "chosen its run-as (403 `auth.run_as_forbidden`); an approval is decided only by its approvers;",
    "a non-admin issues and revokes only their own tokens; only an instance admin changes an instance",
    "admin. Every route answers only from the caller's workspace (another workspace's ids are 404).",
    "",
    `| method | path | declared | ${COLUMNS.map((c) => c.title).join(" | ")} |`,
    `| --- | --- | --- | ${COLUMNS.map(() => "---").join(" | ")} |`,
    ...rows.map((r) => `| ${r.method} | \`${displayPath(r.url)}\` | \`${r.role}\` | ${COLUMNS.map((c) => cell(r.role, c.caller)).join(" | ")} |`),
    "",
    "`yes (no token)`: the route takes no token at all. `signature`: no token; the request is",
    "accepted only with a valid Standard Webhooks signature made with the hook's secret. The",
    "console's pages and assets (`/`, `/favicon.ico`, `/console/…`) are static files served without a token; they call",
    "the routes above with the user's own token. A worker process has no API: its ops port",
    "(`WEFT_METRICS_PORT`) serves only `/healthz` and `/metrics`, without a token, for the monitoring",
    "network.",
    "",
  ];
  return lines.join("\n");
}
