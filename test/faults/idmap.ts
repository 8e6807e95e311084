import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Host id ranges that agents sharing this host gave to different tenants. Each agent records
 * its tenants' ranges in `idmap-NAME.json` in its state directory and allocates from root's
 * /etc/subuid ranges without knowing of the others: on one host, one tenant's containers on
 * one agent and another tenant's on another may map onto the same host ids.
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
