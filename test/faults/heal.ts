import type { AttemptRow, DbView } from './checker.js';
import type { FaultRecord } from './faults.js';

export interface HealRow {
  fault: string;
  target: string;
  /** Seconds from the run's start. */
  at: number;
  lasted: number;
  /** Attempts the fault caught on its agent (running when it began); the gateway's faults catch every one running. */
  caught: number;
  /**
   * Fault → the first caught job completing on another agent (a survivor), seconds; if none had
   * to move, → the first finishing on its own agent; for the gateway's faults, → the first job
   * placed after it completing.
   */
  healed: string;
  /** Fault → the last caught job final, seconds. */
  allDone: string;
  note: string;
}

const RAN = new Set(['exit', 'timeout', 'oom', 'cancelled']);
const secs = (ms: number) => (ms / 1000).toFixed(1);

/** How long each fault took to heal, from the attempts the database kept. */
export function healTimes(faults: FaultRecord[], db: DbView, runStart: number): HealRow[] {
  const all: AttemptRow[] = [...db.attempts.values()].flat();
  return faults.map((f) => {
    const onGateway = f.target === 'gateway';
    const caught = all.filter((t) => (onGateway || t.agent === f.target) && t.claimedAt <= f.at && (t.endedAt === null || t.endedAt >= f.at));
    const done = (t: AttemptRow) => t.endedAt !== null && t.reason !== null && RAN.has(t.reason);
    let healed: number | undefined;
    let sameAgent: string | undefined;
    if (onGateway) {
      // The first job placed after the fault began that ran to its end.
      healed = Math.min(...all.filter((t) => t.claimedAt > f.at && done(t)).map((t) => t.endedAt!));
    } else {
      const ids = new Set(caught.map((t) => t.jobId));
      healed = Math.min(...all.filter((t) => ids.has(t.jobId) && t.agent !== f.target && t.claimedAt > f.at && done(t)).map((t) => t.endedAt!));
      // Nothing had to move (the fault was short of the lease): when its own agent finished one.
      if (!Number.isFinite(healed)) {
        const own = Math.min(...caught.filter((t) => done(t) && t.endedAt! >= f.at).map((t) => t.endedAt!));
        if (Number.isFinite(own)) sameAgent = secs(own - f.at) + ' (same agent)';
      }
    }
    const lastOf = (jobId: string) => Math.max(...(db.attempts.get(jobId) ?? []).filter((t) => t.endedAt !== null).map((t) => t.endedAt!));
    const allDone = caught.length ? Math.max(...caught.map((t) => lastOf(t.jobId))) : -Infinity;
    return {
      fault: f.kind,
      target: f.target,
      at: Math.round((f.at - runStart) / 1000),
      lasted: Number(secs((f.undoneAt ?? f.at) - f.at)),
      caught: caught.length,
      healed: Number.isFinite(healed) ? secs(healed! - f.at) : (sameAgent ?? '—'),
      allDone: Number.isFinite(allDone) ? secs(allDone - f.at) : '—',
      note: f.note ?? '',
    };
  });
}
