import { createHash } from 'node:crypto';
import { and, asc, count, eq, gt, ne, sql } from 'drizzle-orm';
import type { Store } from '../db/open.js';
import { functions } from '../db/schema/index.js';
import { LimitExceeded, NotFound, Unprocessable } from '../errors/domain.js';
import { DEFAULT_MEMORY_BYTES, type Admission } from '../jobs/admission.js';
import type { JobService, SubmitOptions } from '../jobs/service.js';
import { DEFAULT_TIMEOUT_SECONDS, MAX_INVOCATION_ENV_BYTES, MAX_INVOKE_STDIN_BYTES, toSpec, type JobRequest, type JobSpec } from '../jobs/spec.js';
import type { JobView } from '../jobs/view.js';
import type { Quota } from '../tenants/quota.js';
import type { TenantService } from '../tenants/service.js';
import { DEFAULT_CONTENT_TYPE, MAX_FUNCTIONS_PER_TENANT, type FunctionRequest, type FunctionView } from './schema.js';

export type FunctionRow = typeof functions.$inferSelect;

/** What a function fixes; `version` grows when any of it changes. */
type FunctionConfig = Omit<FunctionRow, 'tenant' | 'name' | 'version' | 'createdAt' | 'updatedAt'>;

/** One call of a function: its input and the caller's overrides. */
export interface Invocation {
  /** The raw request body: the job's stdin, byte for byte. */
  stdin: Buffer;
  /** Set as `CORRAL_CONTENT_TYPE` ('' when the request had none). */
  contentType: string;
  /** Set as `CORRAL_QUERY`: the query string without corral's own parameters. */
  query: string;
  /** Per-call limits, within the function's and the tenant's. */
  timeout?: number;
  memory?: number;
  /** More env from the caller (a trigger's `CORRAL_EVENT`, `CORRAL_DELIVERY_ID`). */
  env?: Record<string, string>;
}

const iso = (ms: number) => new Date(ms).toISOString();
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

export function toFunctionView(r: FunctionRow): FunctionView {
  return {
    name: r.name,
    tenant: r.tenant,
    version: r.version,
    image: r.image,
    command: r.command,
    timeout: r.timeout,
    retries: r.retries,
    cpu: r.cpu,
    cpuset: r.cpuset,
    memory: r.memory,
    env: r.env,
    maxConcurrent: r.maxConcurrent,
    contentType: r.contentType,
    description: r.description,
    callbackUrl: r.callbackUrl,
    createdAt: iso(r.createdAt),
    updatedAt: iso(r.updatedAt),
  };
}

/** The job request a function stands for (nulls are "unset"). */
function jobRequestOf(f: FunctionConfig, o: { timeout?: number | undefined; memory?: number | undefined; env?: Record<string, string> } = {}): JobRequest {
  const timeout = o.timeout ?? f.timeout;
  const memory = o.memory ?? f.memory;
  return {
    command: f.command,
    image: f.image,
    retries: f.retries,
    env: { ...f.env, ...o.env },
    ...(timeout !== null && { timeout }),
    ...(memory !== null && { memory }),
    ...(f.cpu !== null && { cpu: f.cpu }),
    ...(f.cpuset !== null && { cpuset: f.cpuset }),
    ...(f.callbackUrl !== null && { callbackUrl: f.callbackUrl }),
  };
}

/** Stable JSON of a config (keys sorted, env's too), to tell a change from a repeat. */
function fingerprint(f: FunctionConfig): string {
  const byKey = <T>(o: Record<string, T>) => Object.keys(o).sort().map((k) => [k, o[k]] as const);
  return JSON.stringify(byKey({ ...f, env: byKey(f.env) } as Record<string, unknown>));
}

/** A tenant's functions: saving them (each change a new version), finding them, and invoking them as jobs. */
export class FunctionService {
  private readonly q;

  constructor(
    private readonly store: Store,
    private readonly tenants: TenantService,
    private readonly admission: Admission,
    private readonly jobs: JobService,
    private readonly defaultImage: string,
  ) {
    const db = store.db;
    const p = (name: string) => sql.placeholder(name);
    this.q = {
      byName: db.select().from(functions).where(and(eq(functions.tenant, p('tenant')), eq(functions.name, p('name')))).prepare(),
      countOf: db.select({ n: count() }).from(functions).where(eq(functions.tenant, p('tenant'))).prepare(),
      /** Slots the tenant's other functions reserve. */
      reservedBy: db
        .select({ n: sql<number>`coalesce(sum(${functions.maxConcurrent}), 0)` })
        .from(functions)
        .where(and(eq(functions.tenant, p('tenant')), ne(functions.name, p('name'))))
        .prepare(),
    };
  }

  /**
   * Creates or replaces function `name`. What it fixes is checked as a job would be (image,
   * every limit within the tenant's maxima, some agent able to hold it), so a function that could
   * never run is refused here. Saving the same thing again is not a change: the version stays.
   */
  async put(tenant: string, name: string, req: FunctionRequest, now = Date.now()): Promise<{ fn: FunctionView; created: boolean }> {
    const quota = this.tenants.quota(tenant);
    const config: FunctionConfig = {
      image: req.image ?? this.defaultImage,
      command: req.command,
      timeout: req.timeout ?? null,
      retries: req.retries ?? 0,
      cpu: req.cpu ?? null,
      cpuset: req.cpuset ?? null,
      memory: req.memory ?? null,
      env: req.env ?? {},
      maxConcurrent: req.maxConcurrent ?? null,
      contentType: req.contentType ?? DEFAULT_CONTENT_TYPE,
      description: req.description ?? null,
      callbackUrl: req.callbackUrl ?? null,
    };
    if (config.maxConcurrent !== null && config.maxConcurrent > quota.maxConcurrent) {
      throw new LimitExceeded(`maxConcurrent ${config.maxConcurrent} exceeds the tenant's maxConcurrent (${quota.maxConcurrent})`, 'maxConcurrent', 'maxConcurrent');
    }
    this.admission.runnable(this.specOf(config, quota), quota);

    let result!: { row: FunctionRow; created: boolean };
    await this.store.commit(() => {
      const prior = this.q.byName.get({ tenant, name });
      if (config.maxConcurrent !== null) {
        // Reserved slots are set aside from the tenant's maxConcurrent: together they must fit, and
        // one slot stays for everything else.
        const others = this.q.reservedBy.get({ tenant, name })!.n;
        if (others + config.maxConcurrent > quota.maxConcurrent - 1) {
          throw new LimitExceeded(
            `maxConcurrent ${config.maxConcurrent} with the ${others} other functions reserve leaves the tenant no unreserved slot of its ${quota.maxConcurrent}`,
            'maxConcurrent',
            'maxConcurrent',
          );
        }
      }
      if (!prior) {
        if (this.q.countOf.get({ tenant })!.n >= MAX_FUNCTIONS_PER_TENANT) {
          throw new LimitExceeded(`the tenant already has ${MAX_FUNCTIONS_PER_TENANT} functions`, 'name', 'functions');
        }
        const row: FunctionRow = { tenant, name, version: 1, ...config, createdAt: now, updatedAt: now };
        this.store.db.insert(functions).values(row).run();
        result = { row, created: true };
        return;
      }
      const { tenant: _t, name: _n, version, createdAt: _c, updatedAt: _u, ...was } = prior;
      if (fingerprint(was) === fingerprint(config)) {
        result = { row: prior, created: false };
        return;
      }
      const row: FunctionRow = { ...prior, ...config, version: version + 1, updatedAt: now };
      // An update, not delete-and-insert: the function's triggers reference it and stay.
      this.store.db
        .update(functions)
        .set({ ...config, version: row.version, updatedAt: now })
        .where(and(eq(functions.tenant, tenant), eq(functions.name, name)))
        .run();
      result = { row, created: false };
    });
    return { fn: toFunctionView(result.row), created: result.created };
  }

  /** Function `name` of `tenant`; another tenant's is NotFound, exactly like a missing one. */
  row(tenant: string, name: string): FunctionRow {
    const row = this.q.byName.get({ tenant, name });
    if (!row) throw new NotFound(`function ${name} not found`, 'name');
    return row;
  }

  get(tenant: string, name: string): FunctionView {
    return toFunctionView(this.row(tenant, name));
  }

  /** By name; `cursor` is the last name of the previous page. */
  list(tenant: string, q: { limit: number; cursor?: string }): { functions: FunctionView[]; nextCursor: string | null } {
    const rows = this.store.db
      .select()
      .from(functions)
      .where(and(eq(functions.tenant, tenant), q.cursor !== undefined ? gt(functions.name, q.cursor) : undefined))
      .orderBy(asc(functions.name))
      .limit(q.limit + 1)
      .all();
    const page = rows.slice(0, q.limit);
    return { functions: page.map(toFunctionView), nextCursor: rows.length > q.limit ? page[page.length - 1]!.name : null };
  }

  /** Deletes the function (and its triggers). Its jobs stay: they carry their own copy of it. */
  async remove(tenant: string, name: string): Promise<void> {
    this.row(tenant, name);
    await this.store.commit(() => {
      if (this.store.db.delete(functions).where(and(eq(functions.tenant, tenant), eq(functions.name, name))).run().changes === 0) {
        throw new NotFound(`function ${name} not found`, 'name');
      }
    });
  }

  /**
   * Queues a job from function `name`: the function's spec copied as it is now (a later edit
   * does not touch it), the input as binary stdin, the invocation's env, and the caller's
   * overrides, which may only lower the function's limits. Same admission, idempotency and
   * durability as `POST /v1/jobs`.
   */
  async invoke(tenant: string, name: string, inv: Invocation, o: SubmitOptions = {}): Promise<{ job: JobView; fn: FunctionRow; created: boolean }> {
    const fn = this.row(tenant, name);
    if (inv.stdin.length > MAX_INVOKE_STDIN_BYTES) throw new Unprocessable(`the input is larger than ${MAX_INVOKE_STDIN_BYTES} bytes`, '(body)');
    const env: Record<string, string> = { ...inv.env, CORRAL_CONTENT_TYPE: inv.contentType, CORRAL_QUERY: inv.query };
    const envBytes = Object.entries(env).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(v) + 2, 0);
    if (envBytes > MAX_INVOCATION_ENV_BYTES) throw new Unprocessable(`the invocation's env (query, content type) exceeds ${MAX_INVOCATION_ENV_BYTES} bytes`, '(query)');
    const stdinHash = sha256(inv.stdin);
    const { job, created } = await this.jobs.submitJob(
      tenant,
      {
        function: { name: fn.name, version: fn.version },
        spec: (quota) => {
          this.withinFunction(fn, quota, inv);
          const spec = this.specOf(fn, quota, { timeout: inv.timeout, memory: inv.memory, env });
          return inv.stdin.length > 0 ? { ...spec, stdinBase64: inv.stdin.toString('base64') } : spec;
        },
        fingerprint: { invoke: name, stdin: stdinHash, contentType: inv.contentType, query: inv.query, timeout: inv.timeout ?? null, memory: inv.memory ?? null, env: inv.env ?? {} },
      },
      o,
    );
    return { job, fn, created };
  }

  /** The job spec a function makes, with the tenant's defaults for what it leaves unset. */
  private specOf(f: FunctionConfig, quota: Quota, o: Parameters<typeof jobRequestOf>[1] = {}): JobSpec {
    return toSpec(jobRequestOf(f, o), { image: this.defaultImage, ...quota });
  }

  /** A per-call override may lower the function's limits, never raise them (422 naming the parameter). */
  private withinFunction(f: FunctionRow, quota: Quota, inv: Invocation): void {
    const timeout = f.timeout ?? Math.min(DEFAULT_TIMEOUT_SECONDS, quota.maxTimeoutSeconds);
    if (inv.timeout !== undefined && inv.timeout > timeout) {
      throw new LimitExceeded(`timeout ${inv.timeout}s exceeds the function's timeout (${timeout}s)`, 'timeout', 'function.timeout');
    }
    const memory = f.memory ?? Math.min(DEFAULT_MEMORY_BYTES, quota.maxMemoryBytes);
    if (inv.memory !== undefined && inv.memory > memory) {
      throw new LimitExceeded(`memory ${inv.memory} bytes exceeds the function's memory (${memory} bytes)`, 'memory', 'function.memory');
    }
  }
}
