import { createHash } from 'node:crypto';
import { and, asc, desc, eq, getTableColumns, gt, gte, lt, sql } from 'drizzle-orm';
import type { Store } from '../db/open.js';
import { attempts, idempotencyKeys, jobs } from '../db/schema/index.js';
import { Conflict, NotFound, Unprocessable } from '../errors/domain.js';
import { newJobId } from '../ids.js';
import type { JobMachine } from '../queue/machine.js';
import { commitTransitions } from '../queue/commit.js';
import { FINAL_STATES, type JobState } from '../queue/states.js';
import type { Quota } from '../tenants/quota.js';
import type { TenantService } from '../tenants/service.js';
import type { Admission } from './admission.js';
import { JOB_ID, toSpec, type JobRequest, type JobSpec } from './spec.js';
import { toJobView, type JobRow, type JobView } from './view.js';

/**
 * Every column a view needs: all but the stdin bytes, which only a dispatch (or a re-run) reads;
 * a view shows their size. SQLite answers length() of a blob from the record header.
 */
const { stdin: _stdin, ...TABLE_COLUMNS } = getTableColumns(jobs);
const VIEW_COLUMNS = { ...TABLE_COLUMNS, stdinBytes: sql<number>`coalesce(length(${jobs.stdin}), 0)` };

export interface SubmitOptions {
  idempotencyKey?: string;
  /** Runs while the request is still in flight (the `?wait` hold); its result is the answer. */
  hold?: (job: JobView) => Promise<JobView>;
  /** Writes that belong with the job (a trigger's delivery record): run inside its transaction. */
  alsoWrite?: (jobId: string, now: number) => void;
}

/** A job to queue, however it was asked for: `POST /v1/jobs`, a function's invoke, a trigger. */
export interface NewJobRequest {
  name?: string;
  /** The function it is invoked from and that function's version. */
  function?: { name: string; version: number };
  /** The job's spec from the request and the tenant's quota, before admission fills unset limits. */
  spec: (quota: Quota) => JobSpec;
  /** What an Idempotency-Key replay must match: the same key with another fingerprint is a 422. */
  fingerprint: unknown;
}

export interface ListQuery {
  state?: JobState;
  name?: string;
  /** Only jobs whose name starts with this (exactly: no wildcards, case and Unicode as given); pages then go in name order. */
  namePrefix?: string;
  /** Only jobs invoked from this function (by its name). */
  function?: string;
  limit: number;
  cursor?: string;
}

/**
 * The least string above every string that starts with `prefix`, in SQLite's BINARY order
 * (UTF-8 bytes, which is code point order), or undefined when there is none. `name >= prefix
 * AND name < bound` is then exactly "starts with", a range on the (tenant, name) index: no LIKE,
 * so `%` and `_` in a name are plain characters. The last code point goes up by one, skipping
 * the surrogates (they have no UTF-8 form); U+10FFFF carries into the one before.
 */
export function prefixBound(prefix: string): string | undefined {
  const cps = [...prefix].map((ch) => ch.codePointAt(0)!);
  while (cps.length > 0) {
    const last = cps.pop()!;
    if (last < 0x10ffff) return String.fromCodePoint(...cps, last + 1 === 0xd800 ? 0xe000 : last + 1);
  }
  return undefined;
}

/** Idempotency records outlive any sensible client retry. */
const IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000;

/** Stable JSON: keys sorted, so that the same body in another key order is the same body. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** Submitting, finding, cancelling and deleting a tenant's jobs. */
export class JobService {
  private readonly inFlight = new Set<string>();
  /** Prepared once: building a Drizzle query per call cost more than running it (bench/invoke.ts). */
  private readonly q;

  constructor(
    private readonly store: Store,
    private readonly machine: JobMachine,
    private readonly tenants: TenantService,
    private readonly admission: Admission,
    private readonly defaultImage: string,
  ) {
    const db = store.db;
    const p = (name: string) => sql.placeholder(name);
    this.q = {
      byId: db.select(VIEW_COLUMNS).from(jobs).where(and(eq(jobs.id, p('id')), eq(jobs.tenant, p('tenant')))).prepare(),
      byName: db.select(VIEW_COLUMNS).from(jobs).where(and(eq(jobs.tenant, p('tenant')), eq(jobs.name, p('name')))).prepare(),
      attempts: db.select().from(attempts).where(eq(attempts.jobId, p('id'))).orderBy(asc(attempts.n)).prepare(),
      stdin: store.sqlite.prepare(`SELECT stdin FROM jobs WHERE id = ? AND tenant = ?`).pluck(),
      // Read at every job's end: a raw statement, no row mapping or spec parsing.
      callbackUrl: store.sqlite.prepare(`SELECT CASE WHEN memory IS NULL THEN json_extract(spec, '$.callbackUrl') ELSE callback_url END AS url FROM jobs WHERE id = ? AND tenant = ?`),
      // The scheduler takes a tenant's queued jobs in (run_after, id) order: those before this one, on the jobs_claimable index.
      ahead: store.sqlite
        .prepare(`SELECT count(*) FROM jobs WHERE tenant = @tenant AND state = 'queued' AND (run_after < @runAfter OR (run_after = @runAfter AND id < @id))`)
        .pluck(),
    };
  }

  /**
   * Admits and durably queues a job. Resolves once it is committed (fsynced) — a 202 after this
   * survives a crash. With an idempotency key the same body gives the same job back.
   */
  submit(tenant: string, req: JobRequest, o: SubmitOptions = {}): Promise<{ job: JobView; created: boolean }> {
    return this.submitJob(
      tenant,
      { ...(req.name !== undefined && { name: req.name }), spec: (quota) => toSpec(req, { image: this.defaultImage, ...quota }), fingerprint: req },
      o,
    );
  }

  /** `submit` for a job built by the caller (a function's invoke, a trigger); the same guarantees. */
  async submitJob(tenant: string, req: NewJobRequest, o: SubmitOptions = {}): Promise<{ job: JobView; created: boolean }> {
    const quota = this.tenants.quota(tenant);
    const key = o.idempotencyKey;
    const flightKey = key === undefined ? undefined : `${tenant}\0${key}`;
    if (flightKey !== undefined) {
      if (this.inFlight.has(flightKey)) throw new Conflict('a request with this Idempotency-Key is still in flight', 'Idempotency-Key');
      this.inFlight.add(flightKey);
    }
    try {
      const bodyHash = key === undefined ? '' : createHash('sha256').update(canonical(req.fingerprint)).digest('hex');
      if (key !== undefined) {
        const prior = this.findIdempotent(tenant, key);
        if (prior) {
          const job = this.replay(tenant, prior, bodyHash);
          return { job: o.hold ? await o.hold(job) : job, created: false };
        }
      }
      const now = Date.now();
      const admitted = this.admission.admit(tenant, req.spec(quota), quota, now);
      // stdin lives in its own column: the spec other code parses stays small whatever was sent.
      const { stdin: text, stdinBase64, ...spec } = admitted;
      const bytes = stdinBase64 !== undefined ? Buffer.from(stdinBase64, 'base64') : text !== undefined ? Buffer.from(text) : null;
      const stdin = bytes !== null && bytes.length > 0 ? bytes : null;
      const fn = req.function;
      const id = newJobId(now);
      await this.store.commit(
        () => {
          if (req.name !== undefined && this.q.byName.get({ tenant, name: req.name })) {
            throw new Conflict(`a job named "${req.name}" already exists`, 'name');
          }
          this.machine.enqueue({
            id,
            tenant,
            name: req.name ?? null,
            function: fn?.name ?? null,
            functionVersion: fn?.version ?? null,
            image: spec.image,
            spec: JSON.stringify(spec),
            stdin,
            memory: spec.memory ?? null,
            cpu: spec.cpu ?? null,
            cpuset: spec.cpuset ?? null,
            maxOutputBytes: spec.maxOutputBytes,
            callbackUrl: spec.callbackUrl ?? null,
            retries: spec.retries,
            createdAt: now,
          });
          if (key !== undefined) this.store.db.insert(idempotencyKeys).values({ tenant, key, bodyHash, jobId: id, createdAt: now }).run();
          o.alsoWrite?.(id, now);
        },
        // Dispatch overlaps the fsync: the 202 still waits for it, and a job whose record a power
        // cut takes back was never acknowledged (its end, when reported, is fsynced first).
        { committed: () => this.machine.announce(id, tenant) },
      );
      // The view of what was just written, without reading it back.
      const job = toJobView(
        { id, name: req.name ?? null, tenant, function: fn?.name ?? null, functionVersion: fn?.version ?? null, state: 'queued', spec, stdinBytes: stdin?.length ?? 0, exitCode: null, signal: null, reason: null, detail: null, createdAt: now, startedAt: null, endedAt: null, outputBytes: 0, outputTruncated: false },
        [],
      );
      return { job: o.hold ? await o.hold(job) : job, created: true };
    } finally {
      if (flightKey !== undefined) this.inFlight.delete(flightKey);
    }
  }

  /**
   * Queues job `idOrName` again: its spec and stdin as stored (job views do not carry stdin, so a
   * client could not resend it), under `name` if given (names are unique, so never the old one).
   * Admitted exactly like a new submit — quotas as they are now, rate, idempotency — with the
   * output cap of today's quota. A function's job stays that function's (its concurrency cap).
   */
  rerun(tenant: string, idOrName: string, req: { name?: string }, o: SubmitOptions = {}): Promise<{ job: JobView; created: boolean }> {
    const row = this.rowByIdOrName(tenant, idOrName);
    const stdin = this.q.stdin.get(row.id, tenant) as Buffer | null;
    const { maxOutputBytes: _cap, ...spec } = row.spec;
    return this.submitJob(
      tenant,
      {
        ...(req.name !== undefined && { name: req.name }),
        ...(row.function !== null && { function: { name: row.function, version: row.functionVersion! } }),
        spec: (quota) => ({ ...spec, maxOutputBytes: quota.maxOutputBytes, ...(stdin !== null && { stdinBase64: stdin.toString('base64') }) }),
        fingerprint: { rerun: row.id, name: req.name ?? null },
      },
      o,
    );
  }

  private findIdempotent(tenant: string, key: string) {
    const row = this.store.db.select().from(idempotencyKeys).where(and(eq(idempotencyKeys.tenant, tenant), eq(idempotencyKeys.key, key))).get();
    if (row && row.createdAt < Date.now() - IDEMPOTENCY_TTL_MS) {
      this.store.db.delete(idempotencyKeys).where(and(eq(idempotencyKeys.tenant, tenant), eq(idempotencyKeys.key, key))).run();
      return undefined;
    }
    return row;
  }

  private replay(tenant: string, prior: { bodyHash: string; jobId: string | null }, bodyHash: string): JobView {
    if (prior.bodyHash !== bodyHash) {
      throw new Unprocessable('this Idempotency-Key was used with a different body', 'Idempotency-Key');
    }
    if (prior.jobId === null) throw new Conflict('a request with this Idempotency-Key is still in flight', 'Idempotency-Key');
    try {
      return this.get(tenant, prior.jobId);
    } catch (err) {
      if (err instanceof NotFound) throw new Unprocessable('the job this Idempotency-Key created was deleted', 'Idempotency-Key');
      throw err;
    }
  }

  /** The job `id` of `tenant`; another tenant's job is NotFound, exactly like a missing one. */
  get(tenant: string, id: string): JobView {
    return this.view(this.row(tenant, id));
  }

  /** The job's callbackUrl: null when it has none, undefined when there is no such job. */
  callbackUrlOf(tenant: string, id: string): string | null | undefined {
    return (this.q.callbackUrl.get(id, tenant) as { url: string | null } | undefined)?.url;
  }

  getByIdOrName(tenant: string, idOrName: string): JobView {
    return this.view(this.rowByIdOrName(tenant, idOrName));
  }

  row(tenant: string, id: string): JobRow {
    const row = this.q.byId.get({ id, tenant });
    if (!row) throw new NotFound(`job ${id} not found`, 'id');
    return row;
  }

  rowByIdOrName(tenant: string, idOrName: string): JobRow {
    if (JOB_ID.test(idOrName)) return this.row(tenant, idOrName);
    const row = this.q.byName.get({ tenant, name: idOrName });
    if (!row) throw new NotFound(`job ${idOrName} not found`, 'idOrName');
    return row;
  }

  private view(row: JobRow & { runAfter?: number }): JobView {
    const list = this.q.attempts.all({ id: row.id });
    const view = toJobView(row, list);
    if (row.state === 'queued' && row.runAfter !== undefined) {
      view.queuePosition = (this.q.ahead.get({ tenant: row.tenant, runAfter: row.runAfter, id: row.id }) as number) + 1;
    }
    return view;
  }

  /**
   * Newest first; `cursor` is the last id of the previous page. With `namePrefix`, in name order
   * instead: the walk is then the jobs_tenant_name index from the prefix (or the cursor's name)
   * onward and stops after a page, so a page costs the same whether ten names share the prefix or
   * a million. (Newest first would sort every match on each page: ~0.5 s of blocked event loop
   * for a prefix 200,000 names share, measured.)
   */
  list(tenant: string, q: ListQuery): { jobs: JobView[]; nextCursor: string | null } {
    const prefix = q.namePrefix;
    const after = prefix !== undefined && q.cursor !== undefined ? this.cursorName(tenant, q.cursor, prefix) : undefined;
    const where = and(
      eq(jobs.tenant, tenant),
      q.state ? eq(jobs.state, q.state) : undefined,
      q.name !== undefined ? eq(jobs.name, q.name) : undefined,
      ...this.prefixRange(prefix, after),
      q.function !== undefined ? eq(jobs.function, q.function) : undefined,
      q.cursor !== undefined && prefix === undefined ? lt(jobs.id, q.cursor) : undefined,
    );
    const rows = this.store.db
      .select(VIEW_COLUMNS)
      .from(jobs)
      .where(where)
      .orderBy(prefix !== undefined ? asc(jobs.name) : desc(jobs.id))
      .limit(q.limit + 1)
      .all();
    const page = rows.slice(0, q.limit);
    return { jobs: page.map((r) => this.view(r)), nextCursor: rows.length > q.limit ? page[page.length - 1]!.id : null };
  }

  /**
   * "name starts with `prefix`" as a bounded range on the jobs_tenant_name index, from `after`
   * (exclusive) when a page continues: one lower bound, so SQLite seeks to it rather than walk
   * the range from the prefix (35 ms a page deep into a 200,000-name range, measured).
   */
  private prefixRange(prefix: string | undefined, after: string | undefined) {
    if (prefix === undefined) return [];
    const bound = prefixBound(prefix);
    return [after === undefined ? gte(jobs.name, prefix) : gt(jobs.name, after), bound === undefined ? undefined : lt(jobs.name, bound)];
  }

  /** The name a name-ordered page continues after: that of the cursor's job, which the prefix must match. */
  private cursorName(tenant: string, cursor: string, prefix: string): string {
    const name = this.q.byId.get({ id: cursor, tenant })?.name;
    if (name === undefined || name === null) throw new Unprocessable('the cursor names a job that no longer exists; start from the first page', 'cursor');
    if (!name.startsWith(prefix)) throw new Unprocessable('the cursor is not from a listing of this namePrefix', 'cursor');
    return name;
  }

  /** Cancels a job; resolves once the cancel is on disk. */
  async cancel(tenant: string, idOrName: string): Promise<JobView> {
    const row = this.rowByIdOrName(tenant, idOrName);
    if (!FINAL_STATES.has(row.state as JobState)) await commitTransitions(this.store.commit, this.machine, () => this.machine.cancel(row.id));
    return this.get(tenant, row.id);
  }

  /** Deletes a job and its output; resolves once the delete is on disk. */
  async remove(tenant: string, idOrName: string): Promise<void> {
    const row = this.rowByIdOrName(tenant, idOrName);
    await commitTransitions(this.store.commit, this.machine, () => this.machine.remove(row.id));
  }
}
