import { cpus, hostname, totalmem } from 'node:os';
import { z } from 'zod';
import { kebab, mergeSources, parseConfig } from '../src/config.js';

/** The agent's settings, parsed once at start-up from flags and the environment (flags win). */
const AgentConfigSchema = z.object({
  gateway: z.string().regex(/^wss?:\/\//, 'gateway must be a ws:// or wss:// URL'),
  token: z.string().min(1, 'an agent token is required (corral token --scope agent)'),
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'name must be 1-63 letters, digits, ".", "_" or "-"').default(hostname().split('.')[0] || 'agent'),
  /** Attempts run at once. */
  slots: z.coerce.number().int().min(1).max(1024).default(Math.max(2, cpus().length * 4)),
  /** Blank, pre-warmed containers kept ready per image. */
  warm: z.coerce.number().int().min(0).max(256).default(2),
  /** A container is recycled after this many attempts. */
  maxUses: z.coerce.number().int().min(1).default(500),
  /** An idle warm container is recycled after this many seconds. */
  idleTtl: z.coerce.number().int().min(1).default(300),
  /** Bytes a container may write to its root filesystem. */
  disk: z.coerce.number().int().min(16 * 1024 ** 2).default(256 * 1024 ** 2),
  /** Processes a job may have at once (a fork bomb stops here). */
  pids: z.coerce.number().int().min(8).max(65536).default(256),
  /** Grace between TERM and KILL on timeout or cancel, in ms. */
  killGraceMs: z.coerce.number().int().min(0).default(2000),
  /** Images to offer: all that exist on this node when empty. */
  images: z
    .string()
    .default('')
    .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean)),
  lxcPath: z.string().default('/var/lib/lxc'),
  /** Where the agent keeps its executor binary. */
  stateDir: z.string().default('/var/lib/corral'),
  /** First host uid/gid of the range that owns image files (see /etc/subuid); tenants get other ranges. */
  idmapBase: z.coerce.number().int().min(1).default(1_000_000),
  /**
   * Host-wide directory where agents claim id ranges, one lock file per range: every agent on a
   * host must use the same one, or two of them can give different tenants the same host ids.
   */
  idLockDir: z.string().min(1).default('/run/corral/idranges'),
  /** The uid (and gid) a job runs as inside its container. */
  jobUid: z.coerce.number().int().min(1).max(65534).default(1000),
  /** Images whose jobs run as root inside the user namespace (for package installs); comma-separated. */
  rootImages: z
    .string()
    .default('')
    .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean)),
  /** Idle warm containers kept in all; past it the least recently used is recycled. */
  maxIdle: z.coerce.number().int().min(0).max(4096).default(64),
  /** Idle warm containers kept per tenant. */
  maxIdlePerTenant: z.coerce.number().int().min(0).max(4096).default(8),
  /**
   * Bytes of memory a container may still hold after an attempt and be kept warm; past it, it is
   * recycled. The scheduler counts only running attempts' limits, so what an idle container holds
   * (files in /tmp, shm segments) is memory promised twice. A used busybox container holds ~0.4-0.7
   * MiB here; 1 MiB is the floor so that a clean one is never recycled for it.
   */
  idleMemoryMax: z.coerce.number().int().min(1024 ** 2).default(32 * 1024 ** 2),
  /** Bytes of memory limits this node offers (default: total memory less a reserve for the host). */
  memory: z.coerce.number().int().min(64 * 1024 ** 2).optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** On SIGTERM: how long, in ms, running attempts may take to finish and report before the agent stops anyway. */
  drainMs: z.coerce.number().int().min(0).default(30_000),
});

export type AgentConfig = z.infer<typeof AgentConfigSchema>;

const ENV_KEYS: Record<keyof z.input<typeof AgentConfigSchema>, string> = {
  gateway: 'CORRAL_GATEWAY',
  token: 'CORRAL_AGENT_TOKEN',
  name: 'CORRAL_AGENT_NAME',
  slots: 'CORRAL_SLOTS',
  warm: 'CORRAL_WARM',
  maxUses: 'CORRAL_MAX_USES',
  idleTtl: 'CORRAL_IDLE_TTL',
  disk: 'CORRAL_DISK_BYTES',
  pids: 'CORRAL_PIDS',
  killGraceMs: 'CORRAL_KILL_GRACE_MS',
  images: 'CORRAL_AGENT_IMAGES',
  lxcPath: 'CORRAL_LXC_PATH',
  stateDir: 'CORRAL_STATE_DIR',
  idmapBase: 'CORRAL_IDMAP_BASE',
  idLockDir: 'CORRAL_ID_LOCK_DIR',
  jobUid: 'CORRAL_JOB_UID',
  rootImages: 'CORRAL_ROOT_IMAGES',
  maxIdle: 'CORRAL_MAX_IDLE',
  maxIdlePerTenant: 'CORRAL_MAX_IDLE_PER_TENANT',
  idleMemoryMax: 'CORRAL_IDLE_MEMORY_MAX',
  memory: 'CORRAL_MEMORY_BYTES',
  logLevel: 'CORRAL_LOG_LEVEL',
  drainMs: 'CORRAL_DRAIN_MS',
};

/** The agent's flags as typed on the command line (`--max-uses`). */
export const AGENT_FLAGS: readonly string[] = Object.keys(ENV_KEYS).map(kebab);

export function loadAgentConfig(flags: Record<string, string | boolean> = {}, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  return parseConfig(AgentConfigSchema, mergeSources(ENV_KEYS, flags, env), ENV_KEYS);
}

/** Memory kept back for the host (agent, gateway, kernel) when the node's offer is not configured. */
const hostReserve = (total: number) => Math.max(512 * 1024 ** 2, Math.floor(total / 10));

/** What this node offers the scheduler: its CPUs and the memory limits it may hold at once. */
export const hostCapacity = (memory?: number) => ({ cpus: cpus().length, memoryBytes: memory ?? Math.max(64 * 1024 ** 2, totalmem() - hostReserve(totalmem())) });
