import pino, { type Logger } from 'pino';
import { AgentHub } from './agents/hub.js';
import { TokenVerifier } from './auth/verifier.js';
import { loadOrCreateSecret } from './auth/secret.js';
import type { GatewayConfig } from './config.js';
import { ensurePrivateDataDir } from './datadir.js';
import { openStore, type Store } from './db/open.js';
import { ImageRegistry } from './images/registry.js';
import { Admission } from './jobs/admission.js';
import { JobService } from './jobs/service.js';
import { JobWaiters } from './jobs/waiters.js';
import { TenantHolds } from './jobs/holds.js';
import { buildCallbacks, type Callbacks, type CallbackTuning } from './callbacks/index.js';
import { SecretBox } from './secrets/box.js';
import { FunctionService } from './functions/service.js';
import { TriggerService } from './triggers/service.js';
import { Metrics } from './metrics/metrics.js';
import { OutputStore } from './output/store.js';
import { RetentionSweeper } from './retention/sweeper.js';
import { JobMachine, type Clock } from './queue/machine.js';
import { Scheduler } from './scheduler/scheduler.js';
import { TenantService } from './tenants/service.js';
import { UsageMeter } from './usage/meter.js';
import { UsageService } from './usage/service.js';
import { join } from 'node:path';

/** Everything the routes and loops use, built once from the config and passed down. */
export interface Services {
  config: GatewayConfig;
  log: Logger;
  store: Store;
  secret: Uint8Array;
  verifier: TokenVerifier;
  machine: JobMachine;
  output: OutputStore;
  tenants: TenantService;
  images: ImageRegistry;
  admission: Admission;
  usage: UsageService;
  jobs: JobService;
  functions: FunctionService;
  /** Seals secrets kept in the database (key: `$CORRAL_DATA/secrets.key`). */
  box: SecretBox;
  triggers: TriggerService;
  holds: TenantHolds;
  waiters: JobWaiters;
  hub: AgentHub;
  scheduler: Scheduler;
  metrics: Metrics;
  callbacks: Callbacks;
  /** Deletes finished jobs and other records past their retention (started by startGateway). */
  retention: RetentionSweeper;
}

export interface BuildOptions {
  clock?: Clock;
  log?: Logger;
  /** Base of the retry backoff in ms (1 s by default). */
  backoffBaseMs?: number;
  /** A database file other than `$CORRAL_DATA/corral.db` (":memory:" in tests). */
  dbFile?: string;
  /** Callback deliverer overrides (tests: jitter, timeouts, poll interval, retry schedule). */
  callbacks?: CallbackTuning;
}

export function buildServices(config: GatewayConfig, o: BuildOptions = {}): Services {
  const log = o.log ?? pino({ level: config.logLevel, base: { svc: 'gateway' } });
  // Before anything is written: the database and secrets go in here.
  ensurePrivateDataDir(config.dataDir);
  const store = openStore(o.dbFile ?? join(config.dataDir, 'corral.db'), config.sync, config.groupCommit, { cacheMib: config.dbCacheMib });
  const secret = loadOrCreateSecret(config.dataDir, config.jwtSecret);
  const verifier = new TokenVerifier({ secret, issuer: config.jwtIssuer, audience: config.jwtAudience, ...(config.jwks && { jwks: config.jwks }) });
  const machine = new JobMachine(store.sqlite, { leaseMs: config.leaseMs, ...(o.clock && { clock: o.clock }), ...(o.backoffBaseMs !== undefined && { backoffBaseMs: o.backoffBaseMs }) });
  const output = new OutputStore(store.sqlite);
  // Usage rolls up in the transaction of every attempt's end: registered before anything can end one.
  new UsageMeter(store.sqlite, machine);
  const tenants = new TenantService(store);
  const usage = new UsageService(store.sqlite, tenants, machine.clock);
  const images = new ImageRegistry(config.defaultImages, { placementWaitMs: config.placementWaitMs, ...(o.clock && { clock: o.clock }) });
  let hub: AgentHub | undefined;
  const admission = new Admission(store.sqlite, images, () => hub?.agents() ?? [], config.memoryReserve, usage);
  const jobs = new JobService(store, machine, tenants, admission, config.defaultImage);
  const functions = new FunctionService(store, tenants, admission, jobs, config.defaultImage);
  const box = SecretBox.load(config.dataDir);
  const triggers = new TriggerService(store, box, functions, tenants, o.clock);
  const holds = new TenantHolds(config.maxHoldsPerTenant);
  const waiters = new JobWaiters(machine, store.durable, holds);
  const metrics = new Metrics(store.sqlite, { agents: () => hub?.count() ?? 0, defaultMetrics: true });
  hub = new AgentHub({ machine, output, images, metrics, log, verifier, heartbeatMs: Math.max(500, Math.floor(config.leaseMs / 3)), commit: store.commit });
  const scheduler = new Scheduler(store.sqlite, machine, hub, tenants, log, {
    images,
    placementWaitMs: config.placementWaitMs,
    memoryReserveBytes: config.memoryReserve,
    usage,
    diskFullRefusals: store.diskFullRefusals,
  });
  const callbacks = buildCallbacks({ config, store, machine, jobs, box, clock: o.clock, log }, o.callbacks);
  const retention = new RetentionSweeper({
    store,
    tenants,
    defaultDays: config.retentionDays,
    log,
    clock: machine.clock,
    onDeleted: (kind, n) => metrics.retentionDeleted.inc({ kind }, n),
  });
  return { config, log, store, secret, verifier, machine, output, tenants, images, admission, usage, jobs, functions, box, triggers, holds, waiters, hub, scheduler, metrics, callbacks, retention };
}
