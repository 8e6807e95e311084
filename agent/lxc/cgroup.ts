import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export interface Limits {
  memoryBytes?: number;
  /** A share of CPU time in cores (0.5 = half a core). */
  cpu?: number;
  cpuset?: string;
  pids: number;
}

export interface Usage {
  /** CPU time used, in nanoseconds. */
  cpuNs: number;
  oomKills: number;
}

const ROOT = '/sys/fs/cgroup';
const CFS_PERIOD_US = 100_000;

function read(file: string): string {
  return readFileSync(file, 'utf8').trim();
}
function write(file: string, value: string | number): void {
  writeFileSync(file, String(value));
}
function tryWrite(file: string, value: string | number): boolean {
  try {
    write(file, value);
    return true;
  } catch {
    return false;
  }
}

/**
 * The cgroup files an agent reads or writes on every attempt, kept open: a pread at offset 0 of
 * a cgroup file reads it afresh, which costs one syscall instead of open, fstat, read and close.
 */
class OpenFiles {
  private readonly fds = new Map<string, number>();
  /** Files that refused to open for writing (memory.peak before Linux 6.12): not tried again. */
  private readonly unwritable = new Set<string>();
  private readonly buf = Buffer.alloc(64 * 1024);

  private fd(file: string, flags: 'r' | 'w'): number {
    const key = `${flags}${file}`;
    let fd = this.fds.get(key);
    if (fd === undefined) this.fds.set(key, (fd = openSync(file, flags)));
    return fd;
  }

  read(file: string): string {
    const n = readSync(this.fd(file, 'r'), this.buf, 0, this.buf.length, 0);
    return n < this.buf.length ? this.buf.toString('utf8', 0, n).trim() : read(file);
  }

  tryWrite(file: string, value: string | number): boolean {
    if (this.unwritable.has(file)) return false;
    let fd: number;
    try {
      fd = this.fd(file, 'w');
    } catch {
      this.unwritable.add(file);
      return false;
    }
    try {
      writeSync(fd, String(value));
      return true;
    } catch {
      return false;
    }
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}

/** Host pids in `dir` and every cgroup below it. */
function subtreeProcs(dir: string): number[] {
  const out: number[] = [];
  const walk = (d: string) => {
    try {
      for (const line of read(join(d, 'cgroup.procs')).split('\n')) if (line) out.push(Number(line));
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
    } catch {
      /* a child cgroup removed while we walk */
    }
  };
  walk(dir);
  return out;
}

function killEach(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

/** Freezes `set(true)`, kills every pid `list()` gives, thaws: nothing forks between the list and the kill. */
function freezeAndKill(setFrozen: (frozen: boolean) => boolean, list: () => number[]): void {
  const frozen = setFrozen(true);
  killEach(list());
  // Pending SIGKILLs take effect as the tasks thaw; a second pass catches a fork that raced the freeze.
  if (frozen) setFrozen(false);
  killEach(list());
}

function keyed(text: string, key: string): number {
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/**
 * A container's cgroup, found from its init's pid, on a cgroup v2 host or a v1 (or hybrid) one.
 * The agent sets each attempt's limits here from the host side and reads CPU time, peak memory
 * and OOM kills back.
 */
export interface ContainerCgroup {
  readonly version: 1 | 2;
  apply(l: Limits): void;
  /** Starts a new measurement: resets peak memory where the kernel allows it. */
  resetPeak(): void;
  usage(): Usage;
  peakMemoryBytes(): number;
  /**
   * Memory charged to the container's subtree now (v1 `memory.usage_in_bytes`, v2
   * `memory.current`: anon, tmpfs and SysV shm, kernel objects, page cache), less its inactive
   * file cache, which the kernel drops first under pressure without writing anything (the same
   * "working set" `docker stats` and the kubelet report). What stays is what a job can leave
   * behind that nothing reclaims: files on the container's tmpfs, shm segments, kernel memory.
   */
  heldMemoryBytes(): number;
  /** Host pids of the processes in the container's own cgroup (not its children). */
  procs(): number[];
  /** Tasks in the container's whole subtree, child cgroups included (pids.current). */
  tasks(): number;
  /**
   * OOM kills counted in cgroups below the container's own (v1 counts a kill where its victim
   * lived): a root job that moved itself into a child cgroup is still seen to die of OOM.
   */
  oomKillsBelow(): number;
  /**
   * Kills every process in the subtree from the host, without the executor's help: frozen,
   * stopped, traced or spinning, all get SIGKILL (freeze, kill, thaw on v1; cgroup.kill on v2).
   */
  killAll(): void;
  /** Closes the files kept open (the container is gone). */
  close(): void;
}

export function isCgroupV2Host(): boolean {
  return existsSync(join(ROOT, 'cgroup.controllers'));
}

/** The cgroup paths of `pid`: controller → directory. */
function pathsOf(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of read(`/proc/${pid}/cgroup`).split('\n')) {
    const [, controllers, path] = line.split(':');
    if (controllers === undefined || path === undefined) continue;
    if (controllers === '') out.set('', path);
    for (const c of controllers.split(',')) if (c) out.set(c, path);
  }
  return out;
}

/**
 * The cgroup of the container whose monitor process is `monitorPid` (what `lxc-start -p`
 * records): LXC puts the monitor in lxc.monitor.NAME and the container in lxc.payload.NAME,
 * side by side.
 */
export function cgroupOfMonitor(monitorPid: number): ContainerCgroup {
  const paths = pathsOf(monitorPid);
  for (const [k, v] of paths) paths.set(k, v.replace(/\/lxc\.monitor\.([^/]+)$/, '/lxc.payload.$1'));
  return isCgroupV2Host() ? new V2(join(ROOT, paths.get('') ?? '/')) : new V1(paths);
}

class V1 implements ContainerCgroup {
  readonly version = 1 as const;
  private readonly dir: (controller: string) => string;
  private readonly f = new OpenFiles();
  private readonly rootCpus: string;

  constructor(paths: Map<string, string>) {
    this.dir = (c) => join(ROOT, c, paths.get(c) ?? '/');
    this.rootCpus = read(join(ROOT, 'cpuset', 'cpuset.cpus'));
  }

  apply(l: Limits): void {
    const mem = this.dir('memory');
    const limit = l.memoryBytes ?? -1;
    const memsw = join(mem, 'memory.memsw.limit_in_bytes');
    const hasSwapAccounting = existsSync(memsw);
    // memsw must stay ≥ the memory limit: raise it first, set the limit, then pin it (no swap past the limit).
    if (hasSwapAccounting) tryWrite(memsw, -1);
    write(join(mem, 'memory.limit_in_bytes'), limit);
    if (hasSwapAccounting) write(memsw, limit);
    tryWrite(join(mem, 'memory.swappiness'), 0);
    const cpu = this.dir('cpu');
    write(join(cpu, 'cpu.cfs_period_us'), CFS_PERIOD_US);
    write(join(cpu, 'cpu.cfs_quota_us'), l.cpu === undefined ? -1 : Math.max(1000, Math.round(l.cpu * CFS_PERIOD_US)));
    write(join(this.dir('cpuset'), 'cpuset.cpus'), l.cpuset ?? this.rootCpus);
    write(join(this.dir('pids'), 'pids.max'), l.pids);
  }

  resetPeak(): void {
    this.f.tryWrite(join(this.dir('memory'), 'memory.max_usage_in_bytes'), 0);
  }

  usage(): Usage {
    return {
      cpuNs: Number(this.f.read(join(this.dir('cpuacct'), 'cpuacct.usage'))),
      oomKills: keyed(this.f.read(join(this.dir('memory'), 'memory.oom_control')), 'oom_kill'),
    };
  }

  peakMemoryBytes(): number {
    return Number(this.f.read(join(this.dir('memory'), 'memory.max_usage_in_bytes')));
  }

  heldMemoryBytes(): number {
    const mem = this.dir('memory');
    // total_ counts child cgroups too, as usage_in_bytes does (use_hierarchy is always on since Linux 5.16).
    const inactive = keyed(this.f.read(join(mem, 'memory.stat')), 'total_inactive_file');
    return Math.max(0, Number(this.f.read(join(mem, 'memory.usage_in_bytes'))) - inactive);
  }

  procs(): number[] {
    return this.f.read(join(this.dir('pids'), 'cgroup.procs')).split('\n').filter(Boolean).map(Number);
  }

  tasks(): number {
    return Number(this.f.read(join(this.dir('pids'), 'pids.current')));
  }

  oomKillsBelow(): number {
    let n = 0;
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        if (!e.isDirectory()) continue;
        try {
          n += keyed(read(join(d, e.name, 'memory.oom_control')), 'oom_kill');
        } catch {
          /* removed while we walk */
        }
        walk(join(d, e.name));
      }
    };
    walk(this.dir('memory'));
    return n;
  }

  killAll(): void {
    const freezer = this.dir('freezer');
    freezeAndKill(
      (frozen) => {
        if (frozen) return tryWrite(join(freezer, 'freezer.state'), 'FROZEN');
        // A root job may have frozen a child cgroup of its own: thaw every level, or its killed
        // tasks would never die.
        const thaw = (d: string): void => {
          tryWrite(join(d, 'freezer.state'), 'THAWED');
          try {
            for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) thaw(join(d, e.name));
          } catch {
            /* removed while we walk */
          }
        };
        thaw(freezer);
        return true;
      },
      () => subtreeProcs(this.dir('pids')),
    );
  }

  close(): void {
    this.f.close();
  }
}

class V2 implements ContainerCgroup {
  readonly version = 2 as const;
  private readonly f = new OpenFiles();
  private readonly peakFile: string;
  constructor(private readonly dir: string) {
    this.peakFile = existsSync(join(dir, 'memory.peak')) ? 'memory.peak' : 'memory.current';
  }

  apply(l: Limits): void {
    write(join(this.dir, 'memory.max'), l.memoryBytes ?? 'max');
    tryWrite(join(this.dir, 'memory.swap.max'), 0);
    write(join(this.dir, 'cpu.max'), l.cpu === undefined ? `max ${CFS_PERIOD_US}` : `${Math.max(1000, Math.round(l.cpu * CFS_PERIOD_US))} ${CFS_PERIOD_US}`);
    if (existsSync(join(this.dir, 'cpuset.cpus'))) write(join(this.dir, 'cpuset.cpus'), l.cpuset ?? '');
    write(join(this.dir, 'pids.max'), l.pids);
  }

  resetPeak(): void {
    // Writable since Linux 6.12; older kernels report the peak since the container started.
    this.f.tryWrite(join(this.dir, 'memory.peak'), 'reset');
  }

  usage(): Usage {
    return {
      cpuNs: keyed(this.f.read(join(this.dir, 'cpu.stat')), 'usage_usec') * 1000,
      oomKills: keyed(this.f.read(join(this.dir, 'memory.events')), 'oom_kill'),
    };
  }

  peakMemoryBytes(): number {
    return Number(this.f.read(join(this.dir, this.peakFile)));
  }

  heldMemoryBytes(): number {
    const inactive = keyed(this.f.read(join(this.dir, 'memory.stat')), 'inactive_file');
    return Math.max(0, Number(this.f.read(join(this.dir, 'memory.current'))) - inactive);
  }

  procs(): number[] {
    return this.f.read(join(this.dir, 'cgroup.procs')).split('\n').filter(Boolean).map(Number);
  }

  tasks(): number {
    return Number(this.f.read(join(this.dir, 'pids.current')));
  }

  oomKillsBelow(): number {
    return 0; // v2's memory.events counts the whole subtree
  }

  killAll(): void {
    // cgroup.kill (Linux 5.14+) kills the subtree atomically, frozen tasks included.
    if (tryWrite(join(this.dir, 'cgroup.kill'), 1)) return;
    freezeAndKill(
      (frozen) => tryWrite(join(this.dir, 'cgroup.freeze'), frozen ? 1 : 0),
      () => subtreeProcs(this.dir),
    );
  }

  close(): void {
    this.f.close();
  }
}
