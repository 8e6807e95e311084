/**
 * Images the gateway will accept jobs for: what connected agents offer, the configured defaults,
 * and images an agent offered within the placement wait (it may be reconnecting). An image no
 * one has heard of is refused at submit rather than left queued forever; for the rest the
 * registry tells the scheduler since when no connected agent has offered an image, so jobs for
 * it end `unplaceable` after the wait instead of waiting forever.
 */
export class ImageRegistry {
  private readonly byAgent = new Map<string, Set<string>>();
  /** When each image was last offered by a connected agent that then stopped offering it. */
  private readonly lastOffered = new Map<string, number>();
  private readonly since: number;

  constructor(
    private readonly defaults: readonly string[],
    private readonly o: { clock?: () => number; placementWaitMs?: number } = {},
  ) {
    this.since = this.now();
  }

  private now(): number {
    return (this.o.clock ?? Date.now)();
  }

  setAgentImages(agent: string, images: readonly string[]): void {
    this.dropped(agent, new Set(images));
    this.byAgent.set(agent, new Set(images));
  }

  forgetAgent(agent: string): void {
    this.dropped(agent, new Set());
    this.byAgent.delete(agent);
  }

  /** Notes the images `agent` offered and no longer does. */
  private dropped(agent: string, keeps: Set<string>): void {
    const now = this.now();
    for (const i of this.byAgent.get(agent) ?? []) if (!keeps.has(i)) this.lastOffered.set(i, now);
  }

  /** Whether a connected agent offers `image` now. */
  offered(image: string): boolean {
    for (const set of this.byAgent.values()) if (set.has(image)) return true;
    return false;
  }

  /**
   * Since when no connected agent has offered `image` (undefined while one does): the last time
   * one stopped offering it, or the gateway's start, which gives agents time to dial in.
   */
  missingSince(image: string): number | undefined {
    if (this.offered(image)) return undefined;
    return Math.max(this.since, this.lastOffered.get(image) ?? this.since);
  }

  /** Whether a job for `image` may be queued: offered now, a default, or offered within the placement wait. */
  known(image: string, now = this.now()): boolean {
    if (this.defaults.includes(image) || this.offered(image)) return true;
    const last = this.lastOffered.get(image);
    return last !== undefined && now - last < (this.o.placementWaitMs ?? 0);
  }

  list(): Array<{ name: string; agents: string[] }> {
    const names = new Set<string>(this.defaults);
    for (const set of this.byAgent.values()) for (const i of set) names.add(i);
    return [...names].sort().map((name) => ({
      name,
      agents: [...this.byAgent].filter(([, s]) => s.has(name)).map(([a]) => a),
    }));
  }
}
