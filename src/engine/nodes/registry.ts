// The built-in node kinds and their handlers: what a run executes, and what a simulation drives.

import { agentNode } from "./agent.js";
import { approvalNode } from "./approval.js";
import { BUILTIN_HANDLERS } from "./builtins.js";
import { forEachNode } from "./for-each.js";
import { httpRequestNode } from "./http-request.js";
import type { NodeHandler } from "./types.js";
import { inputNode, waitForEventNode } from "./waits.js";

export const NODE_HANDLERS: readonly NodeHandler[] = [...BUILTIN_HANDLERS, httpRequestNode, waitForEventNode, inputNode, approvalNode, forEachNode, agentNode];
