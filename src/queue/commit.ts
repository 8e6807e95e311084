import type { JobMachine } from './machine.js';

/**
 * Runs `fn` — job transitions among other writes — in the next grouped commit, and emits the
 * events its transitions raised once the commit resolves: after the fsync for a durable write
 * (so a `job:ended` that answers a waiter reports a state already on disk), at COMMIT for a lazy
 * one. A write that rolls back, alone or with its whole group, emits nothing.
 */
export async function commitTransitions<T>(
  commit: <U>(fn: () => U, o?: { durable?: boolean }) => Promise<U>,
  machine: JobMachine,
  fn: () => T,
  o: { durable?: boolean } = {},
): Promise<T> {
  let emit = () => {};
  const value = await commit(() => {
    const out = machine.collect(fn);
    emit = out.emit;
    return out.value;
  }, o);
  emit();
  return value;
}
