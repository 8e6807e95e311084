/**
 * Control characters (C0, DEL, C1) and the bidirectional overrides, which a hostile job name or
 * command could use to move the cursor, recolour, retitle or reorder the terminal. Tab and newline
 * are in the set too: a table cell is one line.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** Makes one table cell safe to print: each unsafe character becomes a visible `\xHH` / `\uHHHH`. */
export function clean(text: string): string {
  return text.replace(UNSAFE, (ch) => {
    const code = ch.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/** Shortens a cleaned cell to `max` characters, marking the cut. */
export function clip(text: string, max: number): string {
  return text.length > max ? text.slice(0, max - 3) + '...' : text;
}

/**
 * Aligned columns, two spaces apart, every cell cleaned; the last column is left ragged.
 * `right` names the columns (by index) that hold numbers and align right.
 *
 * @example
 *   process.stdout.write(table([['ID', 'STATE'], [job.id, job.state]]));
 */
export function table(rows: string[][], right: ReadonlySet<number> = new Set()): string {
  const safe = rows.map((r) => r.map(clean));
  const widths = safe[0]!.map((_, c) => Math.max(...safe.map((r) => r[c]!.length)));
  return safe
    .map((r) => r.map((cell, c) => (c === r.length - 1 && !right.has(c) ? cell : right.has(c) ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd())
    .map((line) => line + '\n')
    .join('');
}

/** `key: value` lines for one object's fields, values cleaned; null and empty values are left out. */
export function fields(o: Record<string, unknown>, skip: ReadonlySet<string> = new Set()): string {
  const lines: string[] = [];
  for (const [k, v] of Object.entries(o)) {
    if (skip.has(k) || v === null || v === undefined) continue;
    if (typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0) continue;
    lines.push(`${k}: ${clean(typeof v === 'string' ? v : JSON.stringify(v))}\n`);
  }
  return lines.join('');
}
