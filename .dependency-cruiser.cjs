// The layer check: dependency arrows point down only (ARCHITECTURE.md § Layers).
//   cli/ server/  ->  engine/  ->  model/        store/* implement engine/store.ts
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "model-is-pure",
      comment: "model/ is pure: no other layer, no I/O libraries",
      severity: "error",
      from: { path: "^src/model/" },
      to: { path: "^src/(engine|store|server|cli)/|node_modules/(pg|better-sqlite3|undici|fastify)/|^(fs|net|http|https|child_process)$" },
    },
    {
      name: "engine-does-not-know-stores-or-faces",
      comment: "engine/ talks to storage only through the Store interface it declares",
      severity: "error",
      from: { path: "^src/engine/" },
      to: { path: "^src/(store|server|cli)/|node_modules/(pg|better-sqlite3|fastify)/" },
    },
    {
      name: "stores-below-faces",
      severity: "error",
      from: { path: "^src/store/" },
      to: { path: "^src/(server|cli)/|^src/engine/(?!store\\.ts|errors\\.ts)" },
    },
    {
      name: "server-below-cli",
      severity: "error",
      from: { path: "^src/server/" },
      to: { path: "^src/cli/" },
    },
    { name: "no-cycles", severity: "error", from: {}, to: { circular: true, dependencyTypesNot: ["type-only"] } },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsConfig: { fileName: "tsconfig.json" },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "require", "node", "default"], extensions: [".ts", ".js"] },
  },
};
