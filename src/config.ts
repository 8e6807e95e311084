import { z } from 'zod';
import { parseMemory } from './jobs/size.js';

/**
 * The gateway's settings, parsed once at start-up from flags and the environment (flags win).
 * Nothing else in `src/` reads `process.env`.
 */
const GatewayConfigSchema = z.object({
  port: z.coerce.number().int().min(0).max(65535).default(8080),
  host: z.string().min(1).default('127.0.0.1'),
  dataDir: z.string().min(1).default('./.corral'),
  jwtSecret: z.string().min(32, 'CORRAL_JWT_SECRET must be at least 32 bytes').optional(),
  jwtIssuer: z.string().min(1).default('corral'),
  jwtAudience: z.string().min(1).default('corral'),
  jwks: z.string().min(1).optional(),
  /** Images the gateway accepts before any agent has reported its own. */
  defaultImages: z
    .string()
    .default('busybox')
    .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean)),
  defaultImage: z.string().default('busybox'),
  /** Largest request body in bytes. */
  bodyLimit: z.coerce.number().int().positive().default(1024 * 1024),
  /** A scrape token that may read /metrics without an admin JWT. */
  metricsToken: z.string().min(16).optional(),
  /** `full`: each commit is fsynced (grouped per event-loop tick); `normal`: WAL without fsync per commit. */
  sync: z.enum(['full', 'normal']).default('full'),
  /** Group the commits of one event-loop turn into one fsync (on by default; off only to compare). */
  groupCommit: z
    .enum(['true', 'false', '1', '0'])
    .default('true')
    .transform((v) => v === 'true' || v === '1'),
  /** How long an attempt's lease lasts without a heartbeat, in ms. */
  leaseMs: z.coerce.number().int().positive().default(15_000),
  /**
   * How long a queued job may wait while no connected agent could take it — none offers its
   * image, or none has the CPUs its cpuset names or the memory it asks for — before it ends
   * `failed` with reason `unplaceable`. Counted from the later of the job becoming runnable and
   * the last time an agent offered its image (or the gateway's start, so agents can dial in).
   */
  placementWaitMs: z.coerce.number().int().positive().default(10 * 60_000),
  /**
   * Memory kept back on every agent for the node itself (the agent, the kernel, container
   * overhead): placement never promises jobs more than an agent's reported memory minus this.
   * Bytes, or a size such as "512M".
   */
  memoryReserve: z
    .union([z.number(), z.string()])
    .default('256M')
    .transform((v, ctx) => {
      const bytes = parseMemory(v);
      if (bytes === undefined || bytes < 0) {
        ctx.addIssue({ code: 'custom', message: 'must be bytes or a size such as "512M"' });
        return z.NEVER;
      }
      return bytes;
    }),
  /** Let callbacks reach loopback and private addresses (off: a tenant could probe the gateway's network). */
  callbackPrivate: z
    .enum(['true', 'false', '1', '0'])
    .default('false')
    .transform((v) => v === 'true' || v === '1'),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /**
   * On SIGTERM the gateway refuses new work (503) and waits up to this long, in ms, for running
   * attempts to end and report before it exits. `corral up` passes it to its local agent too.
   */
  drainMs: z.coerce.number().int().min(0).default(30_000),
  /**
   * Days a finished job — its output, attempts and callback deliveries — is kept before the
   * retention sweep deletes it, with idempotency keys and hourly usage; a tenant's quota
   * `retentionDays` overrides it for that tenant's jobs and hours. At least a day: callbacks are
   * retried for up to 24 h after a job ends.
   */
  retentionDays: z.coerce.number().int().min(1).max(36_500).default(7),
  /**
   * MiB of database pages the gateway keeps in its own memory (SQLite's page cache), beyond the
   * kernel's page cache. The gateway's resident memory grows by up to this much as the database
   * grows past it, then stays; pages not held are read back from the kernel's cache.
   */
  dbCacheMib: z.coerce.number().int().min(1).max(4096).default(16),
  /**
   * Requests one tenant may hold open at once: output follows (`?follow=1`, refused 429 past it)
   * and `?wait` holds (answered at once, without holding, past it). Each holds a socket and a
   * listener on every output chunk.
   */
  maxHoldsPerTenant: z.coerce.number().int().min(1).max(100_000).default(100),
  /** Base URL printed in trigger and console links. */
  publicUrl: z.string().url().optional(),
});

export type GatewayConfig = z.infer<typeof GatewayConfigSchema>;

const ENV_KEYS: Record<keyof z.input<typeof GatewayConfigSchema>, string> = {
  port: 'CORRAL_PORT',
  host: 'CORRAL_HOST',
  dataDir: 'CORRAL_DATA',
  jwtSecret: 'CORRAL_JWT_SECRET',
  jwtIssuer: 'CORRAL_JWT_ISSUER',
  jwtAudience: 'CORRAL_JWT_AUDIENCE',
  jwks: 'CORRAL_JWKS',
  defaultImages: 'CORRAL_IMAGES',
  defaultImage: 'CORRAL_DEFAULT_IMAGE',
  bodyLimit: 'CORRAL_BODY_LIMIT',
  metricsToken: 'CORRAL_METRICS_TOKEN',
  sync: 'CORRAL_SYNC',
  groupCommit: 'CORRAL_GROUP_COMMIT',
  leaseMs: 'CORRAL_LEASE_MS',
  placementWaitMs: 'CORRAL_PLACEMENT_WAIT_MS',
  memoryReserve: 'CORRAL_MEMORY_RESERVE',
  callbackPrivate: 'CORRAL_CALLBACK_PRIVATE',
  logLevel: 'CORRAL_LOG_LEVEL',
  drainMs: 'CORRAL_DRAIN_MS',
  retentionDays: 'CORRAL_RETENTION_DAYS',
  dbCacheMib: 'CORRAL_DB_CACHE_MIB',
  maxHoldsPerTenant: 'CORRAL_MAX_HOLDS_PER_TENANT',
  publicUrl: 'CORRAL_PUBLIC_URL',
};

/** Flag names are the kebab-case keys: `--data-dir` or its short form `--data`. */
const FLAG_ALIASES: Record<string, string> = { data: 'dataDir' };

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, ch: string) => ch.toUpperCase());
}

/** The flag name of a config field: `leaseMs` → `lease-ms`. */
export function kebab(field: string): string {
  return field.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}

/**
 * Merges environment and flags into one raw record keyed by config field.
 * Unknown flags are left for the caller to reject.
 */
export function mergeSources(
  keys: Record<string, string>,
  flags: Record<string, string | boolean>,
  env: NodeJS.ProcessEnv,
  aliases: Record<string, string> = {},
): Record<string, unknown> {
  const raw: Record<string, unknown> = {};
  for (const [field, envKey] of Object.entries(keys)) {
    const v = env[envKey];
    if (v !== undefined && v !== '') raw[field] = v;
  }
  for (const [flag, value] of Object.entries(flags)) {
    const field = aliases[flag] ?? camel(flag);
    if (field in keys) raw[field] = value;
  }
  return raw;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Parses a zod schema and turns its issues into one readable ConfigError. */
export function parseConfig<T extends z.ZodTypeAny>(schema: T, raw: unknown, keys: Record<string, string>): z.infer<T> {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const lines = result.error.issues.map((i) => {
    const field = String(i.path[0] ?? '');
    return `${keys[field] ?? field}: ${i.message}`;
  });
  throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`);
}

export function loadGatewayConfig(
  flags: Record<string, string | boolean> = {},
  env: NodeJS.ProcessEnv = process.env,
): GatewayConfig {
  return parseConfig(GatewayConfigSchema, mergeSources(ENV_KEYS, flags, env, FLAG_ALIASES), ENV_KEYS);
}

/** The gateway's flags as typed on the command line (`--lease-ms`), with `--data` for `--data-dir`. */
export const GATEWAY_FLAGS: readonly string[] = [...Object.keys(ENV_KEYS).map(kebab), ...Object.keys(FLAG_ALIASES)];
