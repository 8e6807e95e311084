/** The API's shapes, as far as the console reads them. */

export const FINAL = new Set(['succeeded', 'failed', 'timed_out', 'cancelled']);
export const STATES = ['queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled'] as const;

export interface Attempt {
  n: number;
  agent: string | null;
  container: string | null;
  startedAt: string | null;
  endedAt: string | null;
  exitCode: number | null;
  signal?: string | null;
  reason: string | null;
  cpuSeconds: number | null;
  peakMemoryBytes: number | null;
}

export interface Job {
  id: string;
  name: string | null;
  tenant: string;
  function?: string | null;
  functionVersion?: number | null;
  state: string;
  exitCode: number | null;
  signal: string | null;
  reason: string | null;
  command: string | string[];
  image: string;
  timeout: number;
  retries: number;
  cpu: number | null;
  cpuset: string | null;
  memory: number | string | null;
  env: Record<string, string>;
  /** Rows from before stdin had its own column still echo it. */
  stdin?: string | null;
  /** The size of the stdin the job was given; a re-run sends it again. */
  stdinBytes: number;
  fresh?: boolean;
  callbackUrl?: string | null;
  attempts: Attempt[];
  createdAt: string;
  startedAt: string | null;
  endedAt: string | null;
  outputBytes: number;
  outputTruncated: boolean;
  queuePosition?: number;
}

export interface Fn {
  name: string;
  version: number;
  image: string;
  command: string | string[];
  timeout: number | null;
  retries: number;
  cpu: number | null;
  cpuset: string | null;
  memory: number | string | null;
  env: Record<string, string>;
  maxConcurrent: number | null;
  contentType: string;
  description: string | null;
  callbackUrl?: string | null;
  updatedAt?: string;
}

export interface Trigger {
  id: string;
  url: string;
  kind: 'standard' | 'github';
  createdAt: string;
  rotatedAt: string | null;
  previousSecretExpiresAt: string | null;
  secret?: string;
}

export interface Image {
  name: string;
  available?: boolean;
  agents?: string[];
}

export interface Day {
  day: string;
  jobs: number;
  attempts: number;
  cpuSeconds: number;
  wallSeconds: number;
  gbSeconds: number;
  peakMemoryBytes: number;
  failures: Record<string, number>;
}

export interface Hour {
  /** 'YYYY-MM-DDTHH', UTC. */
  hour: string;
  jobs: number;
  failures: number;
}

export interface Usage {
  tenant: string;
  quota: Record<string, number | null>;
  now: { queued: number; running: number; oldestQueuedAgeSeconds: number };
  days: Day[];
  /** The last 48 UTC hours, newest first. */
  hours: Hour[];
  budget: { cpuSecondsPerDay: number | null; usedToday: number; leftToday: number | null };
}
