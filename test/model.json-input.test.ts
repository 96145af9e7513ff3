// The input checks every outside JSON passes before anything walks or stores it: depth and text,
// each problem located by a JSON pointer.
import { describe, expect, it } from "vitest";
import { checkJsonInput, MAX_JSON_DEPTH } from "../src/model/json-input.js";

describe("checkJsonInput", () => {
  it("accepts ordinary JSON, including numbers, booleans and nulls at any place", () => {
    expect(checkJsonInput({ a: [1, "x", null, true, { b: "é😀" }], c: {} })).toBeNull();
  });

  it("names the exact place of U+0000 and of a lone surrogate, escaping the pointer", () => {
    expect(checkJsonInput({ a: [0, { "b/c": "x\u0000" }] })).toMatchObject({ code: "request.bad_text", pointer: "/a/1/b~1c" });
    expect(checkJsonInput({ ok: "fine", "t~": ["\ud800"] }, "/payload")).toMatchObject({ code: "request.bad_text", pointer: "/payload/t~0/0" });
    expect(checkJsonInput({ x: { "k\u0000": 1 } })).toMatchObject({ code: "request.bad_text", pointer: "/x/k\u0000" });
  });

  it("refuses nesting deeper than the limit, at the first level too deep, without recursing", () => {
    let deep: unknown = 1;
    for (let i = 0; i < MAX_JSON_DEPTH; i++) deep = [deep];
    expect(checkJsonInput(deep)).toBeNull();
    let tooDeep: unknown = 1;
    for (let i = 0; i < 200_000; i++) tooDeep = { a: tooDeep };
    const p = checkJsonInput(tooDeep);
    expect(p?.code).toBe("request.too_deep");
    expect(p?.pointer).toBe("/a".repeat(MAX_JSON_DEPTH));
  });
});
