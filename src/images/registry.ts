/**
 * Images the gateway will accept jobs for: the configured defaults plus what connected agents
 * report. An image no one has heard of is refused at submit rather than left queued forever.
 */
export class ImageRegistry {
  private readonly byAgent = new Map<string, Set<string>>();

  constructor(private readonly defaults: readonly string[]) {}

  setAgentImages(agent: string, images: readonly string[]): void {
    this.byAgent.set(agent, new Set(images));
  }

  forgetAgent(agent: string): void {
    this.byAgent.delete(agent);
  }

  known(image: string): boolean {
    if (this.defaults.includes(image)) return true;
    for (const set of this.byAgent.values()) if (set.has(image)) return true;
    return false;
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
