// Installs the Node 22 runtime the peer benchmarks need (graphile-worker 0.18 and pg-boss 12
// require Node >= 22) from the npm registry's platform binary package (node-<os>-<arch>, the
// package the `node` package itself installs), into this folder's node_modules. It is not a
// dependency of the project on purpose: a `node` bin in the project's node_modules/.bin would
// replace Node 20 in every npm script (and better-sqlite3 is built for Node 20).
// Never fails the project's install: without it the peers that need Node 22 are reported as
// not run.
const { spawnSync } = require("node:child_process");
const { existsSync } = require("node:fs");
const { join } = require("node:path");
const VERSION = require("./package.json").config.nodeVersion;
const platform = process.platform === "win32" ? "win" : process.platform;
const arch = platform === "win" && process.arch === "ia32" ? "x86" : process.arch;
const prefix = process.platform === "darwin" && process.arch === "arm64" ? "node-bin" : "node";
const pkg = `${prefix}-${platform}-${arch}`;
const bin = join(__dirname, "node_modules", pkg, "bin", platform === "win" ? "node.exe" : "node");
if (process.env.WEFT_SKIP_PEER_NODE || existsSync(bin)) process.exit(0);
const env = { ...process.env, npm_config_global: "false", npm_config_save: "false", npm_config_package_lock: "false" };
const r = spawnSync(
  platform === "win" ? "npm.cmd" : "npm",
  ["install", "--no-save", "--no-package-lock", "--no-audit", "--no-fund", "--prefix", __dirname, `${pkg}@${VERSION}`],
  { stdio: "inherit", env, shell: platform === "win" },
);
if (r.status !== 0) console.warn(`weft-bench-node22: could not install ${pkg}@${VERSION}; the peers that need Node 22 will be reported as not run`);
process.exit(0);
