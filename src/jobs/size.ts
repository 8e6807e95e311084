/**
 * Memory sizes in words. Its own module, free of zod and OpenAPI, because the configuration
 * (which the agent imports too) parses sizes as well.
 */
const MEMORY_UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };
const MEMORY_TEXT = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i;

/** "256M", "1.5G", "512MiB" or a byte count → bytes. */
export function parseMemory(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) ? value : undefined;
  const m = MEMORY_TEXT.exec(value.trim());
  if (!m) return undefined;
  const bytes = Math.floor(Number(m[1]) * (MEMORY_UNITS[(m[2] ?? '').toUpperCase()] ?? NaN));
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}
