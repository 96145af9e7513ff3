import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** Node 22 for the peers that need it: installed by the devDependency bench/peers/node22 into its
 *  own node_modules (never the project's .bin, where it would replace Node 20 in npm scripts). */
export function node22(): string | null {
  const platform = process.platform === "win32" ? "win" : process.platform;
  const prefix = process.platform === "darwin" && process.arch === "arm64" ? "node-bin" : "node";
  const bin = fileURLToPath(
    new URL(`./peers/node22/node_modules/${prefix}-${platform}-${process.arch}/bin/${platform === "win" ? "node.exe" : "node"}`, import.meta.url),
  );
  return existsSync(bin) ? bin : null;
}
