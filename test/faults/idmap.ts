import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Host id ranges that agents sharing this host gave to different tenants, from the record each
 * agent keeps in `idmap-NAME.json` in its state directory. Agents claim a range host-wide before
 * they use it (RangeClaims) and an agent rewrites its record when it loses a range to another,
 * so after a run every entry here is a breach of tenant isolation: one tenant's containers on one
 * agent and another tenant's on another could map onto the same host ids.
 */
export function idmapCollisions(agents: Array<{ name: string; stateDir: string }>): string[] {
  const owners = new Map<number, Set<string>>();
  for (const a of agents) {
    const file = join(a.stateDir, `idmap-${a.name}.json`);
    if (!existsSync(file)) continue;
    const rec = JSON.parse(readFileSync(file, 'utf8')) as { tenants?: Record<string, number> };
    for (const [tenant, base] of Object.entries(rec.tenants ?? {})) {
      const set = owners.get(base) ?? new Set<string>();
      set.add(`${tenant}@${a.name}`);
      owners.set(base, set);
    }
  }
  const out: string[] = [];
  for (const [base, set] of owners) {
    const tenants = new Set([...set].map((s) => s.split('@')[0]));
    if (tenants.size > 1) out.push(`host ids ${base}..${base + 65535}: ${[...set].sort().join(', ')}`);
  }
  return out;
}
