// The sample automation the quickstart loads into an empty workspace.

export const SAMPLE_AUTOMATION = {
  key: "welcome",
  name: "Welcome a new contact",
  subject: "{{ event.subject_id }}",
  reentry: { policy: "skip_if_active" },
  root: "greet",
  nodes: [
    { key: "greet", kind: "set", config: { assign: { greeting: "'Hello, ' + (has(context.name) ? context.name : 'friend') + '!'" } } },
    { key: "vip", kind: "branch", config: { condition: "has(context.plan) && context.plan == 'pro'" } },
    { key: "pause", kind: "delay", config: { duration_ms: 2000 } },
    { key: "tag", kind: "set", config: { assign: { tier: "'pro'" } } },
    { key: "done", kind: "end" },
  ],
  edges: [
    { from: "greet", port: "next", to: "vip" },
    { from: "vip", port: "true", to: "tag" },
    { from: "vip", port: "false", to: "pause" },
    { from: "tag", port: "next", to: "pause" },
    { from: "pause", port: "next", to: "done" },
  ],
};
