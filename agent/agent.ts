import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { PROTOCOL_VERSION, type GatewayMessage } from '../src/protocol/messages.js';
import { hostCapacity, type AgentConfig } from './config.js';
import { Connection } from './connection.js';
import { ensureExecutor } from './executor/build.js';
import { ensureHostLimits } from './lxc/host-limits.js';
import { hostSlots, IdmapAllocator } from './lxc/idmap.js';
import { listImages, shareImage } from './lxc/images.js';
import { Pool } from './pool/pool.js';
import { destroyLeftovers } from './pool/container.js';
import { Runner } from './runner.js';

/** Longest a pool change waits before it is reported (changes in between share one report). */
const POOL_REPORT_MS = 100;

export interface Agent {
  pool: Pool;
  runner: Runner;
  connection: Connection;
  images: string[];
  /**
   * Stops taking runs (tells the gateway, and says zero slots in any later hello) and waits until
   * the attempts it holds have ended and the gateway acknowledged their results (while the link
   * is up; over a broken link, sent or kept is enough), or `ms` passed; `stop()` follows.
   */
  drain(ms: number): Promise<void>;
  /** Closes the link and destroys every container (attempts still running end with them). */
  stop(): Promise<void>;
}

/** How often a drain looks whether the last attempt has ended. */
const DRAIN_POLL_MS = 50;

/**
 * Starts an agent: builds the executor if needed, finds its images, warms the pool, dials the
 * gateway, and runs what it is sent until stopped.
 */
export async function startAgent(config: AgentConfig, log: Logger = pino({ level: config.logLevel, base: { svc: 'agent', agent: config.name } })): Promise<Agent> {
  const executor = await ensureExecutor(config.stateDir);
  const found = await listImages(config);
  const images = config.images.length ? config.images.filter((i) => found.includes(i)) : found;
  for (const i of config.images) if (!found.includes(i)) log.warn({ image: i }, 'image not found on this node; build it with corral image build');
  if (images.length === 0) log.warn('no images on this node: run "corral image build busybox"');

  for (const i of images) shareImage(config, i);
  // Host root's inotify/fanotify limits must hold every container's share (see host-limits.ts).
  for (const c of ensureHostLimits(config.slots + config.maxIdle + config.warm * images.length)) {
    if (c.error) log.warn(c, 'a host limit is below what the containers need and could not be raised; run scripts/install-host.sh');
    else log.info(c, 'raised a host limit so that every container gets its share');
  }

  const env = { agent: config.name, lxcPath: config.lxcPath, executor, diskBytes: config.disk, rootImages: config.rootImages };
  const leftovers = await destroyLeftovers(env);
  if (leftovers) log.warn({ count: leftovers }, 'destroyed containers left by a previous run');
  const slots = hostSlots().filter((b) => b !== config.idmapBase);
  if (slots.length === 0) throw new Error('no subordinate id ranges for root besides the images\' one: run scripts/install-host.sh (it adds root ranges to /etc/subuid and /etc/subgid)');
  const idmap = new IdmapAllocator({
    file: join(config.stateDir, `idmap-${config.name}.json`),
    slots,
    imageBase: config.idmapBase,
    inUse: (b) => pool.holdsRange(b),
    lockDir: config.idLockDir,
  });
  const pool: Pool = new Pool({
    env,
    images: () => images,
    idmap,
    sharedRange: (image) => (config.rootImages.includes(image) ? config.idmapBase : undefined),
    warm: config.warm,
    maxUses: config.maxUses,
    idleTtlMs: config.idleTtl * 1000,
    maxIdle: config.maxIdle,
    maxIdlePerTenant: config.maxIdlePerTenant,
    idleMemoryMax: config.idleMemoryMax,
    log,
  });
  let heartbeat: NodeJS.Timeout | undefined;
  let draining = false;
  let stopped: Promise<void> | undefined;
  const state = () => ({ images, pool: pool.summary(), running: runner.running() });
  const connection = new Connection({
    gateway: config.gateway,
    token: config.token,
    log,
    hello: () => ({
      type: 'hello',
      version: PROTOCOL_VERSION,
      agent: config.name,
      capacity: { ...hostCapacity(config.memory), slots: draining ? 0 : config.slots },
      ...state(),
    }),
  });
  const runner: Runner = new Runner({
    pool,
    send: (m) => connection.send(m),
    log,
    pids: config.pids,
    killGraceMs: config.killGraceMs,
    jobUid: config.jobUid,
    rootImages: config.rootImages,
    slots: config.slots,
    images,
  });

  const handlers: { [T in GatewayMessage['type']]: (m: Extract<GatewayMessage, { type: T }>) => void } = {
    welcome(m) {
      clearInterval(heartbeat);
      heartbeat = setInterval(() => connection.send({ type: 'heartbeat', ...state() }), m.heartbeatMs);
      heartbeat.unref();
    },
    run(m) {
      void runner.run(m);
    },
    cancel(m) {
      runner.cancel(m.jobId, m.fence);
    },
    ack() {
      // The connection forgets the acknowledged result (see Connection.results).
    },
  };
  connection.on('message', (m) => {
    try {
      (handlers[m.type] as (m: GatewayMessage) => void)(m);
    } catch (err) {
      log.error({ err, type: m.type }, 'gateway message handler failed');
    }
  });
  connection.on('close', () => clearInterval(heartbeat));

  // Pool changes reach the gateway within POOL_REPORT_MS instead of with the next heartbeat:
  // placement prefers an agent that holds a warm container for the job's tenant and image.
  let poolReport: NodeJS.Timeout | undefined;
  pool.on('pool:changed', () => {
    if (poolReport || !connection.open) return;
    poolReport = setTimeout(() => {
      poolReport = undefined;
      connection.send({ type: 'pool', pool: pool.summary() });
    }, POOL_REPORT_MS);
  });

  pool.start();
  connection.start();
  return {
    pool,
    runner,
    connection,
    images,
    async drain(ms) {
      if (!draining) {
        draining = true;
        connection.send({ type: 'draining' });
        log.info({ running: runner.running().length, drainMs: ms }, 'draining: no new runs; waiting for running attempts');
      }
      const deadline = Date.now() + ms;
      // Done when nothing runs and, while the link is up, the gateway has acknowledged every
      // result (it is on its disk): a stop right after loses nothing even if the gateway dies.
      const busy = () => runner.running().length > 0 || (connection.open && connection.unacknowledged > 0);
      while (busy() && Date.now() < deadline) await new Promise((r) => setTimeout(r, DRAIN_POLL_MS));
      const left = runner.running().length;
      if (left > 0) log.warn({ running: left }, 'drain timed out: the attempts still running end with their containers and are re-run elsewhere');
    },
    stop() {
      // Once: a second stop (the parent went away mid-drain) waits for the first.
      stopped ??= (async () => {
        clearInterval(heartbeat);
        clearTimeout(poolReport);
        // Frames already sent (the last results) go out before the close frame.
        connection.close();
        await pool.stop();
        // Its containers are gone: other agents on this host may use its ranges now.
        idmap.close();
      })();
      return stopped;
    },
  };
}
