// Per-step permission sets (least privilege). A permission is `namespace:resource`:
//   http:<host>        outbound HTTP to that host (`http:*.example.com` for its subdomains, `http:*` for any)
//   tool:<name>        an agent step may call that tool
//   secret:<name>      read that secret in templates and expressions (`secret:*` for all)
//   action:<kind>      a for_each item may run that action kind
// Anything a step tries outside its set is blocked and recorded as a policy violation. A node that
// declares no set is held only by what its kind always checks (an agent's tool list, an action's
// own declared set). Pure.

export interface PolicyViolation {
  code: "policy.violation";
  /** The permission the step would have needed. */
  permission: string;
  message: string;
  at: number;
}

/**
 * Does `granted` allow `wanted`? Exact match, `ns:*`, or `ns:*.suffix` for host-like resources.
 * Host names fold case (DNS does); secret, tool and action names are matched as spelled, since
 * `A` and `a` are two different secrets.
 */
export function allows(granted: readonly string[], wanted: string): boolean {
  const i = wanted.indexOf(":");
  if (i < 0) return granted.includes(wanted);
  const ns = wanted.slice(0, i);
  const fold = (s: string) => (ns === "http" ? s.toLowerCase() : s);
  const res = fold(wanted.slice(i + 1));
  for (const g of granted) {
    const j = g.indexOf(":");
    if (j < 0 || g.slice(0, j) !== ns) continue;
    const pat = fold(g.slice(j + 1));
    if (pat === "*" || pat === res) return true;
    if (pat.startsWith("*.") && res.endsWith(pat.slice(1)) && res.length > pat.length - 1) return true;
  }
  return false;
}

/** The namespaces a permission may name; anything else would grant nothing and is refused when a definition is validated. */
export const PERMISSION_NAMESPACES = ["http", "tool", "secret", "action"] as const;

/** Why `p` is not a permission this engine knows, or null when it is one. */
export function permissionProblem(p: string): string | null {
  const i = p.indexOf(":");
  const ns = i < 0 ? "" : p.slice(0, i);
  if (ns === "http" && p.startsWith("http://")) return `"${p}" is a URL; a permission names the host alone: "http:${p.slice(7).split("/")[0]}"`;
  if (ns === "https")
    return `"${p}" is a URL; a permission names the host alone: "http:${
      p
        .slice(i + 1)
        .replace(/^\/\//, "")
        .split("/")[0]
    }" (it covers https too)`;
  const near = PERMISSION_NAMESPACES.find((n) => ns === `${n}s` || `${ns}s` === n);
  if (near !== undefined) return `"${p}" is not a permission (did you mean "${near}:${p.slice(i + 1)}"?)`;
  if (!(PERMISSION_NAMESPACES as readonly string[]).includes(ns)) {
    return `"${p}" is not a permission: use ${PERMISSION_NAMESPACES.map((n) => `${n}:<${n === "http" ? "host" : n === "action" ? "kind" : "name"}>`).join(", ")}`;
  }
  if (p.length === i + 1) return `"${p}" names no ${ns === "http" ? "host" : "name"} (use "${ns}:*" for all)`;
  return null;
}

export function violation(permission: string, message: string, at: number): PolicyViolation {
  return { code: "policy.violation", permission, message, at };
}

/** The permission an outbound HTTP call to `url` needs (`http:<host>`), or null for a URL that does not parse. */
export function httpPermission(url: string): string | null {
  try {
    return `http:${new URL(url).hostname.replace(/^\[|\]$/g, "").toLowerCase()}`;
  } catch {
    return null;
  }
}

/**
 * The `http:<host>` permission a request to `url` needs and `granted` does not give, or null when it
 * may go (`granted` null: no set declared, so only the SSRF guard applies). Asked of the first URL
 * and of every redirect hop alike.
 */
export function missingHttpPermission(granted: readonly string[] | null, url: string | URL): string | null {
  if (granted === null) return null;
  const wanted = httpPermission(typeof url === "string" ? url : url.href);
  return wanted !== null && !allows(granted, wanted) ? wanted : null;
}

/**
 * The set a call runs with: what it declared, narrowed (never widened) by the node's `permissions`
 * when the node declares them — the entries of the node's set that the declared set allows. One
 * rule for a custom-action node, a fan-out item and an agent's tool call.
 */
export function narrow(declared: readonly string[], nodePermissions: readonly string[] | null): string[] {
  if (nodePermissions === null) return [...declared];
  return nodePermissions.filter((p) => allows(declared, p));
}
