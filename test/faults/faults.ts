import type { AgentNode, FaultCluster } from './cluster.js';
import { blackhole, heal } from './netns.js';
import { until } from './procs.js';

export const FAULT_KINDS = ['agent kill -9', 'agent SIGSTOP', 'link black-hole', 'proxy delay', 'proxy stall', 'proxy cut', 'gateway kill -9', 'disk full'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** One fault as it happened: what, on which process, when it began and when the harness undid it. */
export interface FaultRecord {
  kind: FaultKind;
  target: string;
  /** ms since the epoch. */
  at: number;
  /** When the harness ended the fault (restart, SIGCONT, heal, free); the system may take longer. */
  undoneAt?: number;
  note?: string;
}

export interface ScheduleOptions {
  leaseMs: number;
  /** ms between the starts of two faults. */
  gapMs: number;
  seed: number;
}

/** xorshift32: the schedule is a function of the seed, printed with the report. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Acts on the cluster while the workload runs: every kind of fault once, in the seed's order,
 * each agent fault on a random agent, one at a time with
 * `gapMs` between starts. Faults that cut an agent off last past the lease, so its attempts are
 * taken from it and re-run elsewhere, and its late results must be rejected.
 */
export async function runFaults(c: FaultCluster, o: ScheduleOptions, stop: () => boolean): Promise<FaultRecord[]> {
  const random = rng(o.seed);
  const pick = () => c.agents[Math.floor(random() * c.agents.length)]!;
  const order: FaultKind[] = [...FAULT_KINDS];
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  // A final kill -9 of an agent: agents die more often than anything else does.
  order.push('agent kill -9');
  const past = o.leaseMs + 4000;
  const records: FaultRecord[] = [];
  for (const kind of order) {
    if (stop()) break;
    const began = Date.now();
    const r: FaultRecord = { kind, target: 'gateway', at: began };
    records.push(r);
    const agent = pick();
    switch (kind) {
      case 'agent kill -9':
        r.target = agent.name;
        await agent.proc.kill9();
        await sleep(3000);
        agent.proc.start();
        break;
      case 'agent SIGSTOP':
        r.target = agent.name;
        agent.proc.pause();
        await sleep(past);
        agent.proc.resume();
        break;
      case 'link black-hole':
        r.target = agent.name;
        blackhole(agent.ns);
        await sleep(past);
        heal(agent.ns);
        break;
      case 'proxy delay':
        r.target = agent.name;
        r.note = '300 ms per chunk for 15 s';
        agent.proxy.delay(300);
        await sleep(15_000);
        agent.proxy.delay(0);
        break;
      case 'proxy stall':
        r.target = agent.name;
        r.note = `held both ways for ${past} ms`;
        agent.proxy.stall(true);
        await sleep(past);
        agent.proxy.stall(false);
        break;
      case 'proxy cut':
        r.target = agent.name;
        r.note = await cuts(agent);
        break;
      case 'gateway kill -9':
        await c.gateway.kill9();
        await sleep(2000);
        c.gateway.start();
        await until(async () => (await fetch(`${c.base}/healthz`)).ok, 30_000, 'the gateway to come back');
        break;
      case 'disk full': {
        const bytes = c.data.fill();
        r.note = `filled with ${(bytes / 2 ** 20).toFixed(1)} MiB, held 10 s`;
        await sleep(10_000);
        c.data.free();
        break;
      }
    }
    r.undoneAt = Date.now();
    const next = began + o.gapMs;
    if (next > Date.now()) await sleep(next - Date.now());
  }
  return records;
}

/** Three cuts two seconds apart: the agent reconnects in between. */
async function cuts(agent: AgentNode): Promise<string> {
  const n: number[] = [];
  for (let i = 0; i < 3; i++) {
    n.push(agent.proxy.cut());
    await sleep(2000);
  }
  return `3 cuts, 2 s apart (connections cut: ${n.join(', ')})`;
}
