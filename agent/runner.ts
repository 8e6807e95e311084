import { constants } from 'node:os';
import type { Logger } from 'pino';
import { MAX_OUTPUT_CHUNK_BYTES, type AgentMessage, type GatewayMessage } from '../src/protocol/messages.js';
import type { ExitStatus } from './executor/client.js';
import type { Limits, Usage } from './lxc/cgroup.js';
import type { Container } from './pool/container.js';
import type { Pool } from './pool/pool.js';

type Run = Extract<GatewayMessage, { type: 'run' }>;
type Result = Extract<AgentMessage, { type: 'ended' }>['result'];

const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, n]) => [n, name]));
/** How long a run may go before its start is reported on its own (see Runner.attempt). */
const STARTED_AFTER_MS = 20;
/** How often a running attempt's CPU time is sampled (what is charged if its cgroup disappears). */
const USAGE_SAMPLE_MS = 1000;
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The job's stdin bytes: an invoke's raw body arrives base64 (binary-safe), a JSON job's as text. */
function stdinOf(spec: { stdin?: string | undefined; stdinBase64?: string | undefined }): Buffer | undefined {
  if (spec.stdinBase64 !== undefined) return Buffer.from(spec.stdinBase64, 'base64');
  return spec.stdin === undefined ? undefined : Buffer.from(spec.stdin);
}

export interface RunnerOptions {
  pool: Pool;
  send: (msg: AgentMessage) => void;
  log: Logger;
  pids: number;
  killGraceMs: number;
  /** The uid a job runs as inside its container. */
  jobUid: number;
  /** Images whose jobs run as root inside the user namespace. */
  rootImages: readonly string[];
  /** Attempts at once (what the agent announced): a `run` past them is answered at once. */
  slots: number;
  /** Images this agent offers: a `run` for another is answered at once. */
  images: readonly string[];
}

interface Active {
  jobId: string;
  fence: number;
  container?: Container;
  /** Why the attempt is being stopped, once it is. */
  stopping?: 'timeout' | 'cancelled';
  kill?: (reason: 'timeout' | 'cancelled') => void;
  /** The container of an attempt that ended before its `started` frame went out. */
  unreported?: string;
}

/**
 * Runs attempts: takes a container from the pool, applies the job's limits to its cgroup, hands
 * the command to the container's executor, streams output, enforces the timeout, and reports the
 * exit with CPU time and peak memory from the cgroup.
 *
 * Deadlines do not depend on the executor: at the timeout (or a cancel) the executor is asked to
 * TERM the job, and `killGraceMs` later the agent kills the container's whole cgroup from the
 * host and destroys the container, whether the executor answered, froze, or died. An executor
 * that breaks its protocol or goes away costs that attempt (`agent_error`, charged to the job's
 * own retries) and that container, nothing else.
 *
 * Every `run` is answered: one it cannot start (no free slot, an image it lacks, a duplicate)
 * gets an `ended` at once, as the platform's fault, so the gateway re-queues the job without
 * using its retries instead of waiting out a lease. A `run` for a job it still runs under an
 * older fence (the gateway gave that attempt up) stops the old attempt and runs the new one.
 */
export class Runner {
  /** The attempt the agent runs for each job; superseded ones leave it while they are stopped. */
  private readonly active = new Map<string, Active>();

  constructor(private readonly o: RunnerOptions) {}

  running(): Array<{ jobId: string; fence: number }> {
    return [...this.active.values()].map((a) => ({ jobId: a.jobId, fence: a.fence }));
  }

  get size(): number {
    return this.active.size;
  }

  cancel(jobId: string, fence: number): void {
    const a = this.active.get(jobId);
    if (a && a.fence === fence) {
      if (a.kill) a.kill('cancelled');
      else a.stopping = 'cancelled';
    }
  }

  async run(m: Run): Promise<void> {
    const prior = this.active.get(m.jobId);
    if (prior) {
      // An equal fence is a duplicate the gateway will read as this attempt's end: stop it too.
      if (prior.fence <= m.fence) this.supersede(prior);
      if (prior.fence >= m.fence) return this.refuse(m, `duplicate run: attempt with fence ${prior.fence} already ran here`);
    }
    const refusal = this.cannotStart(m);
    if (refusal) return this.refuse(m, refusal);
    const a: Active = { jobId: m.jobId, fence: m.fence };
    this.active.set(m.jobId, a);
    let result: Result;
    try {
      result = await this.attempt(m, a);
    } catch (err) {
      this.o.log.error({ err, jobId: m.jobId }, 'attempt failed on the agent');
      result = { exitCode: null, signal: null, reason: 'agent_error', detail: String((err as Error).message ?? err).slice(0, 1000) };
      if (a.container) this.o.pool.release(a.container, true);
    }
    if (this.active.get(m.jobId) === a) this.active.delete(m.jobId);
    this.o.send({ type: 'ended', jobId: m.jobId, fence: m.fence, result, ...(a.unreported !== undefined && { container: a.unreported }) });
  }

  /** Why `m` cannot start here, if it cannot. Attempts being stopped hold no slot the gateway counts. */
  private cannotStart(m: Run): string | undefined {
    if (!this.o.images.includes(m.spec.image)) return `image "${m.spec.image}" is not on this agent`;
    let busy = 0;
    for (const a of this.active.values()) if (!a.stopping) busy++;
    if (busy >= this.o.slots) return `no free slot (${busy} of ${this.o.slots} busy)`;
    return undefined;
  }

  /** Answers a run it will not start: the platform's fault, so the job is re-queued without using a retry. */
  private refuse(m: Run, detail: string): void {
    this.o.log.warn({ jobId: m.jobId, fence: m.fence, detail }, 'run refused');
    this.o.send({ type: 'ended', jobId: m.jobId, fence: m.fence, result: { exitCode: null, signal: null, reason: 'agent_error', fault: 'platform', detail } });
  }

  /** Stops an attempt the gateway no longer holds; it reports its end under its own (stale) fence. */
  private supersede(a: Active): void {
    this.active.delete(a.jobId);
    this.o.log.info({ jobId: a.jobId, fence: a.fence }, 'attempt superseded by a newer run: stopping it');
    if (a.kill) a.kill('cancelled');
    else a.stopping = 'cancelled';
  }

  /** Takes a container and sets the attempt's limits on it; returns it with its usage so far. */
  private async prepare(m: Run, a: Active, limits: Limits, fresh: boolean): Promise<{ c: Container; before: Usage }> {
    const { container: c } = await this.o.pool.acquire(m.tenant, m.spec.image, fresh);
    a.container = c;
    const key = JSON.stringify(limits);
    // cgroup writes cost ~0.2 ms per attempt here (bench/invoke.ts); skip them when nothing changed.
    if (c.applied !== key) {
      c.applied = undefined;
      c.cgroup.apply(limits);
      c.applied = key;
    }
    c.cgroup.resetPeak();
    return { c, before: c.cgroup.usage() };
  }

  private async attempt(m: Run, a: Active): Promise<Result> {
    const { spec } = m;
    const limits = { memoryBytes: spec.memory, cpu: spec.cpu, cpuset: spec.cpuset, pids: this.o.pids };
    let c: Container;
    let before: Usage;
    try {
      ({ c, before } = await this.prepare(m, a, limits, spec.fresh));
    } catch (err) {
      // A warm container the tenant's earlier jobs left unable to take these limits (v1 refuses a
      // memory limit below what its tmpfs already holds) must not cost anyone an attempt, nor
      // buy the tenant a free retry: recycle it and start clean.
      if (!a.container || a.stopping) throw err;
      this.o.pool.release(a.container, true);
      a.container = undefined;
      ({ c, before } = await this.prepare(m, a, limits, true));
    }
    if (a.stopping) {
      this.o.pool.release(c, false);
      return { exitCode: null, signal: null, reason: 'cancelled' };
    }
    const uid = this.o.rootImages.includes(spec.image) ? 0 : this.o.jobUid;
    // Only a root job can make child cgroups (and hide an OOM kill in one); others skip the walk.
    const root = uid === 0;
    const oomBelow = root ? c.cgroup.oomKillsBelow() : 0;
    // A container whose init dies loses its cgroup (LXC removes it), and with it the counters:
    // a sample every second keeps what the attempt used for its charge.
    let last = before;
    let lastPeak: number | undefined;
    const sampler = setInterval(() => {
      try {
        last = c.cgroup.usage();
        lastPeak = c.cgroup.peakMemoryBytes();
      } catch {
        /* the cgroup is gone: keep the last sample */
      }
    }, USAGE_SAMPLE_MS);
    sampler.unref();
    const started = performance.now();

    const argv = typeof spec.command === 'string' ? ['/bin/sh', '-c', spec.command] : spec.command;
    const stdin = stdinOf(spec);
    const env = { PATH: DEFAULT_PATH, HOME: uid === 0 ? '/root' : '/tmp', CORRAL_JOB_ID: m.jobId, CORRAL_ATTEMPT: String(m.attempt), ...spec.env };
    const forward = (stream: 'stdout' | 'stderr') => (data: Buffer) => {
      for (let i = 0; i < data.length; i += MAX_OUTPUT_CHUNK_BYTES) {
        this.o.send({ type: 'output', jobId: m.jobId, fence: m.fence, stream, data: data.subarray(i, i + MAX_OUTPUT_CHUNK_BYTES).toString('base64') });
      }
    };
    const onOut = forward('stdout');
    const onErr = forward('stderr');

    let startedTimer: NodeJS.Timeout | undefined;
    const status = await new Promise<ExitStatus | 'lost' | 'killed'>((resolve) => {
      let grace: NodeJS.Timeout | undefined;
      const kill = (reason: 'timeout' | 'cancelled') => {
        if (a.stopping && grace) return;
        a.stopping = reason;
        c.exec.kill(constants.signals.SIGTERM);
        // From the host, with or without the executor's help.
        grace = setTimeout(() => {
          c.cgroup.killAll();
          done('killed');
        }, this.o.killGraceMs);
      };
      a.kill = kill;
      const timer = setTimeout(() => kill('timeout'), spec.timeout * 1000);
      const done = (s: ExitStatus | 'lost' | 'killed') => {
        clearTimeout(timer);
        if (startedTimer) {
          clearTimeout(startedTimer);
          startedTimer = undefined;
          a.unreported = c.name;
        }
        clearTimeout(grace);
        c.exec.off('stdout', onOut);
        c.exec.off('stderr', onErr);
        c.exec.off('exit', done);
        c.exec.off('close', onClose);
        resolve(s);
      };
      const onClose = () => done('lost');
      c.exec.on('stdout', onOut);
      c.exec.on('stderr', onErr);
      c.exec.once('exit', done);
      c.exec.once('close', onClose);
      // One byte past the cap tells the gateway the output was cut.
      const outputBudget = spec.maxOutputBytes === undefined ? Number.MAX_SAFE_INTEGER : spec.maxOutputBytes + 1;
      c.exec.run({ argv, env, uid, gid: uid, outputBudget, ...(stdin !== undefined && { stdin }) });
      // A job that ends within STARTED_AFTER_MS reports its start with its end, in one frame.
      startedTimer = setTimeout(() => {
        startedTimer = undefined;
        this.o.send({ type: 'started', jobId: m.jobId, fence: m.fence, container: c.name });
      }, STARTED_AFTER_MS);
      if (a.stopping) kill(a.stopping);
    });

    const wallMs = performance.now() - started;
    clearInterval(sampler);
    let after = last;
    let peak = lastPeak;
    try {
      after = c.cgroup.usage();
      peak = c.cgroup.peakMemoryBytes();
    } catch {
      /* the cgroup went with a dead init: charge the last sample */
    }
    // CPU time is charged however the attempt ended.
    const usage = { cpuSeconds: Math.max(0, after.cpuNs - before.cpuNs) / 1e9, ...(peak !== undefined && { peakMemoryBytes: peak }), wallMs };
    if (status === 'killed') {
      this.o.pool.release(c, true);
      return { exitCode: null, signal: 'SIGKILL', reason: a.stopping!, ...usage };
    }
    if (status === 'lost') {
      // The job is the one thing that ran in there: a broken executor is charged to the job.
      c.cgroup.killAll();
      this.o.pool.release(c, true);
      if (a.stopping) return { exitCode: null, signal: 'SIGKILL', reason: a.stopping, ...usage };
      return { exitCode: null, signal: null, reason: 'agent_error', fault: 'job', detail: c.exec.failure ?? 'the container executor went away', ...usage };
    }
    const oom = after.oomKills > before.oomKills || (root && c.cgroup.oomKillsBelow() > oomBelow);
    const signal = status.signal === null ? null : (SIGNAL_NAMES.get(status.signal) ?? `SIG${status.signal}`);
    const reason: Result['reason'] = a.stopping ?? (oom ? 'oom' : 'exit');
    // Anything but the executor still alive (the executor could not reap it, or lies) would
    // outlive the job: such a container is not reused. pids.current counts child cgroups too.
    const dirty = !status.clean || c.cgroup.tasks() > 1;
    this.o.pool.release(c, reason !== 'exit' || dirty);
    return { exitCode: status.code, signal, reason, ...usage };
  }
}
