import type { WebSocket } from 'ws';
import type { AgentMessage } from '../protocol/messages.js';

type Hello = Extract<AgentMessage, { type: 'hello' }>;

/** What the gateway knows of one connected agent. */
export interface AgentConn {
  id: string;
  ws: WebSocket;
  capacity: Hello['capacity'];
  images: string[];
  pool: Hello['pool'];
  /** Attempts it runs: jobId → fence. Change it only through `assign` and `release`. */
  running: Map<string, number>;
  /** Memory limits of the attempts in `running`: jobId → bytes. */
  memory: Map<string, number>;
  /** Sum of `memory`: what placement has promised on this agent. */
  memoryCommitted: number;
  /** Idle warm containers by "tenant\0image", as last reported and spent locally since. */
  warm: Map<string, number>;
  connectedAt: number;
  /** Last heartbeat frame. */
  lastSeen: number;
  /** Last time anything came in on the link (a frame or a pong): the liveness check reads it. */
  heardAt: number;
}

export const freeSlots = (a: AgentConn) => a.capacity.slots - a.running.size;
export const warmKey = (tenant: string, image: string) => `${tenant}\0${image}`;

/** Memory the agent may promise to jobs at all: what it reported, less the gateway's reserve for the node itself. */
export const allocatableMemory = (a: AgentConn, reserveBytes: number) => Math.max(0, a.capacity.memoryBytes - reserveBytes);

/** Memory still free for another job's limit on `a`. */
export const freeMemory = (a: AgentConn, reserveBytes: number) => allocatableMemory(a, reserveBytes) - a.memoryCommitted;

/** Records that `a` runs attempt (jobId, fence) with a memory limit of `memory` bytes. */
export function assign(a: AgentConn, jobId: string, fence: number, memory: number): void {
  release(a, jobId);
  a.running.set(jobId, fence);
  a.memory.set(jobId, memory);
  a.memoryCommitted += memory;
}

/** Frees the slot and the memory of `jobId` on `a` (no-op when it holds none). */
export function release(a: AgentConn, jobId: string): void {
  a.running.delete(jobId);
  const m = a.memory.get(jobId);
  if (m === undefined) return;
  a.memory.delete(jobId);
  a.memoryCommitted -= m;
}
