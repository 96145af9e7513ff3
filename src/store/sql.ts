// SQL text built from the model's constants, so a list in a query cannot drift from the rule.

/** `('a', 'b')` for an `IN` clause; the values are the model's own constants, quoted defensively. */
export function sqlList(values: readonly string[]): string {
  return `(${values.map((v) => `'${v.replaceAll("'", "''")}'`).join(", ")})`;
}
