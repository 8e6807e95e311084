import { EventEmitter } from 'node:events';
import type Database from 'better-sqlite3';

export type Stream = 'stdout' | 'stderr';

export interface OutputEvents {
  chunk: [{ jobId: string; attempt: number; stream: Stream; data: Buffer }];
}

/**
 * Output of running attempts, stored in arrival order under the job's byte cap. Chunks from an
 * attempt that is no longer current are dropped; bytes past the cap are dropped and the job is
 * marked truncated, never silently.
 */
export class OutputStore extends EventEmitter<OutputEvents> {
  private readonly current;
  private readonly insert;
  private readonly account;
  private readonly byAttempt;
  private readonly markTruncated;
  private readonly attemptBytes;

  constructor(private readonly db: Database.Database) {
    super();
    // Every open output follow listens here: bounded by the holds each tenant may have, not by 10.
    this.setMaxListeners(0);
    this.current = db.prepare(
      `SELECT attempt_count AS n, output_bytes AS bytes, output_truncated AS truncated, CASE WHEN memory IS NULL THEN json_extract(spec, '$.maxOutputBytes') ELSE max_output_bytes END AS cap
       FROM jobs WHERE id = ? AND fence = ? AND state = 'running'`,
    );
    this.insert = db.prepare(`INSERT INTO output (job_id, attempt, stream, data) VALUES (?, ?, ?, ?)`);
    this.account = db.prepare(`UPDATE jobs SET output_bytes = output_bytes + ? WHERE id = ?`);
    this.attemptBytes = db.prepare(`SELECT coalesce(sum(length(data)), 0) FROM output WHERE job_id = ? AND attempt = ?`).pluck();
    this.markTruncated = db.prepare(`UPDATE jobs SET output_truncated = 1 WHERE id = ?`);
    this.byAttempt = db.prepare(
      `SELECT stream, data FROM output WHERE job_id = ? AND attempt = ? AND (? IS NULL OR stream = ?) ORDER BY id`,
    );
  }

  /**
   * Appends a chunk of attempt (jobId, fence); returns the bytes kept (0 for a stale attempt). A
   * chunk sent again after a reconnect carries its `offset` in the attempt's output: the part of
   * it already stored is skipped.
   */
  append(jobId: string, fence: number, stream: Stream, data: Buffer, offset?: number): number {
    const row = this.current.get(jobId, fence) as { n: number; bytes: number; truncated: number; cap: number | null } | undefined;
    if (!row) return 0;
    if (offset !== undefined) {
      // Resends are rare (after a reconnect), and an attempt's chunks are few: one indexed sum.
      const stored = this.attemptBytes.get(jobId, row.n) as number;
      if (offset + data.length <= stored) return 0;
      if (offset < stored) data = data.subarray(stored - offset);
    }
    const room = Math.max(0, (row.cap ?? Infinity) - row.bytes);
    const kept = data.length <= room ? data : data.subarray(0, room);
    if (kept.length > 0) {
      this.insert.run(jobId, row.n, stream, kept);
      this.account.run(kept.length, jobId);
      this.emit('chunk', { jobId, attempt: row.n, stream, data: kept });
    }
    if (kept.length < data.length && !row.truncated) this.markTruncated.run(jobId);
    return kept.length;
  }

  /**
   * At the end of attempt (jobId, fence), whose agent sent `sentBytes` of output: fewer stored
   * (chunks past what the agent keeps for a resend, lost with a link or a gateway) marks the
   * job's output truncated. Bytes the cap dropped have marked it already.
   */
  settle(jobId: string, fence: number, sentBytes: number): void {
    const row = this.current.get(jobId, fence) as { n: number; truncated: number } | undefined;
    if (!row || row.truncated) return;
    if ((this.attemptBytes.get(jobId, row.n) as number) < sentBytes) this.markTruncated.run(jobId);
  }

  /** The chunks of one attempt, optionally of one stream. */
  read(jobId: string, attempt: number, stream?: Stream): Array<{ stream: Stream; data: Buffer }> {
    return this.byAttempt.all(jobId, attempt, stream ?? null, stream ?? null) as Array<{ stream: Stream; data: Buffer }>;
  }
}
