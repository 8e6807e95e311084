import type { Logger } from 'pino';
import { LeaseLost } from '../errors/domain.js';
import type { ImageRegistry } from '../images/registry.js';
import type { Metrics } from '../metrics/metrics.js';
import type { OutputStore } from '../output/store.js';
import type { AgentMessage } from '../protocol/messages.js';
import type { JobMachine } from '../queue/machine.js';
import { release, warmKey, type AgentConn } from './conn.js';
import type { AgentHub } from './hub.js';

export interface HandlerDeps {
  machine: JobMachine;
  output: OutputStore;
  images: ImageRegistry;
  metrics: Metrics;
  log: Logger;
  hub: AgentHub;
}

type Msg<T extends AgentMessage['type']> = Extract<AgentMessage, { type: T }>;

/**
 * One small handler per message type. Every frame about an attempt is fenced twice: by its fence
 * (the job's current attempt) and by its sender (the agent that holds it); a frame that fails
 * either changes nothing, and an attempt reported running that fails either is stopped there.
 */
const handlers: { [T in Exclude<AgentMessage['type'], 'hello'>]: (d: HandlerDeps, a: AgentConn, m: Msg<T>) => void } = {
  heartbeat(d, a, m) {
    a.lastSeen = Date.now();
    setPool(a, m.pool);
    if (m.images.join('\0') !== a.images.join('\0')) {
      a.images = m.images;
      d.images.setAgentImages(a.id, m.images);
    }
    const reported = new Set<string>();
    for (const r of m.running) {
      reported.add(r.jobId);
      const held = d.machine.renewOne(r.jobId, r.fence, a.id);
      if (!held) {
        // Superseded, deleted or another agent's: only the slot of this very attempt is freed —
        // the job's current attempt may hold one here under a newer fence.
        if (a.running.get(r.jobId) === r.fence) release(a, r.jobId);
        d.hub.sendTo(a, { type: 'cancel', jobId: r.jobId, fence: r.fence });
      } else if (held.cancelRequested) {
        // Sent again until the agent ends the attempt or stops reporting it: a cancel issued while
        // the agent was away, or lost on the way, still arrives.
        d.hub.sendTo(a, { type: 'cancel', jobId: r.jobId, fence: r.fence });
      }
    }
    // Attempts the agent did not report and the gateway gave up on (lease expired, job deleted)
    // no longer hold a slot; reported ones were just checked by renewOne.
    for (const [jobId, fence] of a.running) if (!reported.has(jobId) && !d.machine.isCurrent(jobId, fence, a.id)) release(a, jobId);
  },

  pool(_d, a, m) {
    setPool(a, m.pool);
  },

  draining(d, a) {
    // No free slots from now on: placement passes the agent by; its running attempts keep their leases.
    a.capacity = { ...a.capacity, slots: 0 };
    d.log.info({ agent: a.id, running: a.running.size }, 'agent draining: no new runs are sent to it');
  },

  started(d, a, m) {
    try {
      d.machine.start(m.jobId, m.fence, m.container, d.machine.clock(), a.id);
    } catch (err) {
      if (!(err instanceof LeaseLost)) throw err;
      d.hub.sendTo(a, { type: 'cancel', jobId: m.jobId, fence: m.fence });
    }
  },

  output(d, a, m) {
    // The store checks the fence; the sender is checked here (an attempt ended while its agent was
    // away still has its output sent after the reconnect, so the database decides, not `a.running`).
    if (d.machine.isCurrent(m.jobId, m.fence, a.id)) d.output.append(m.jobId, m.fence, m.stream, Buffer.from(m.data, 'base64'), m.offset);
  },

  ended(d, a, m) {
    if (a.running.get(m.jobId) === m.fence) release(a, m.jobId);
    try {
      if (m.container !== undefined) d.machine.start(m.jobId, m.fence, m.container, d.machine.clock() - Math.round(m.result.wallMs ?? 0), a.id);
      if (m.outputBytes && d.machine.isCurrent(m.jobId, m.fence, a.id)) d.output.settle(m.jobId, m.fence, m.outputBytes);
      d.machine.finish(m.jobId, m.fence, m.result, a.id);
      d.metrics.attemptsEnded.inc({ reason: m.result.reason });
    } catch (err) {
      if (!(err instanceof LeaseLost)) throw err;
      d.log.info({ agent: a.id, jobId: m.jobId, fence: m.fence }, 'late result for a superseded attempt rejected');
    }
    d.hub.emit('capacity');
  },
};

function setPool(a: AgentConn, pool: Msg<'pool'>['pool']): void {
  a.pool = pool;
  a.warm = new Map(pool.warm.map((w) => [warmKey(w.tenant, w.image), w.idle]));
}

export function handleMessage(d: HandlerDeps, a: AgentConn, m: AgentMessage): void {
  if (m.type === 'hello') return;
  (handlers[m.type] as (d: HandlerDeps, a: AgentConn, m: AgentMessage) => void)(d, a, m);
}
