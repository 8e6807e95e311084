/**
 * Runs `fn` on every item, at most `limit` at once; resolves when all have settled (a rejection
 * is the caller's to catch inside `fn`: one failure must not leave the rest undone).
 *
 * @example
 *   await eachBounded(containers, 8, (c) => c.destroy().catch(log));
 */
export async function eachBounded<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
