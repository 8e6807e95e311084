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
  /** Attempts it runs: jobId → fence. */
  running: Map<string, number>;
  /** Idle warm containers by "tenant\0image", as last reported and spent locally since. */
  warm: Map<string, number>;
  connectedAt: number;
  lastSeen: number;
}

export const freeSlots = (a: AgentConn) => a.capacity.slots - a.running.size;
export const warmKey = (tenant: string, image: string) => `${tenant}\0${image}`;
