/*
 * corral-exec: the resident executor inside every corral container.
 *
 * It runs as the container's init (PID 1 in the container's PID namespace, root only inside the
 * user namespace), listens on a unix socket that the agent reaches through a bind-mounted
 * directory, and runs one command at a time for the agent. Keeping it resident is what makes a
 * warm run cheap: a run costs one fork+exec inside the container instead of an `lxc-attach`
 * (~4.5 ms, measured in bench/invoke.ts).
 *
 * Trust: the job is hostile. The executor
 *  - serves exactly one connection, and only from a process outside the container's PID
 *    namespace (SO_PEERCRED reports pid 0 for such a peer); then it closes and unlinks its socket;
 *  - runs each job as an unprivileged uid (unless the agent asks for root in the user namespace),
 *    with no capabilities, no_new_privs, RLIMIT_CORE=0, RLIMIT_SIGPENDING=256, RLIMIT_MSGQUEUE=0,
 *    oom_score_adj 1000 and a seccomp filter
 *    (installed on the executor itself at start, inherited by every job: it refuses nothing the
 *    executor uses);
 *  - counts halt signals only when they come from outside the container (ssi_pid 0);
 *  - bounds what it forwards: output past the job's budget is read and discarded here, inside the
 *    container, on the job's own CPU time; output frames are coalesced (64 KiB or 50 ms);
 *  - after a job, kills every other process in the container (kill(-1) from PID 1) and reaps them,
 *    and says in EXIT whether the container is clean.
 *
 * Wire format, both directions: [u32 little-endian payload length][u8 type][payload].
 *   agent -> exec  RUN   : u32 uid, u32 gid, u64 output budget (bytes), u32 argc, argc
 *                          NUL-terminated strings, u32 envc, envc "K=V" NUL-terminated strings,
 *                          then the rest of the payload is the job's stdin.
 *                  KILL  : u8 signal number; signals every process in the container but init.
 *   exec -> agent  READY : u32 protocol version, u32 features (bit 0: the job filter installs).
 *                  OUT   : 1..65536 stdout bytes.   ERR : 1..65536 stderr bytes.
 *                  EXIT  : i32 wait status (as waitpid gives it), u32 flags (bit 0: every other
 *                          process is gone; bit 1: output was cut at the budget).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { T_RUN = 1, T_KILL = 2, T_READY = 10, T_OUT = 12, T_ERR = 13, T_EXIT = 14 };
enum { PROTOCOL = 2, F_FILTER = 1, X_CLEAN = 1, X_TRUNCATED = 2 };

#define MAX_FRAME (4u * 1024u * 1024u)
#define OUT_CHUNK 65536
/* Output is held at most this long before it is sent: one frame per 50 ms instead of per write. */
#define COALESCE_MS 50
/* Reads of a job pipe per loop turn (16 × 64 KiB). */
#define PUMP_READS 16
/* After the job exits, how long to wait for its pipes to reach EOF before killing stragglers. */
#define DRAIN_MS 100
/* How long to wait for killed processes to be reaped before calling the container dirty. */
#define REAP_MS 1000

#if defined(__x86_64__)
#define FILTER_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define FILTER_ARCH AUDIT_ARCH_AARCH64
#else
#error "corral-exec: no seccomp filter for this architecture"
#endif

static int conn = -1;
/* The container's pids.current (its cgroup namespace root), or -1 where it cannot be read. */
static int pids_fd = -1;
static pid_t job = 0;
static int job_exited = 0, job_status = 0;
static struct timespec exited_at;

/* One output stream of the running job: its pipe and the bytes waiting to be sent. */
struct stream {
  int fd;
  uint8_t type;
  uint32_t len;
  struct timespec since;
  unsigned char buf[OUT_CHUNK];
};
static struct stream out_s = {.fd = -1, .type = T_OUT}, err_s = {.fd = -1, .type = T_ERR};
/* Bytes of output the job may still send; past it everything is read and dropped. */
static uint64_t budget = 0;
static int truncated = 0;

static void die(const char *what) {
  perror(what);
  exit(111);
}

static long ms_since(const struct timespec *t) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

static int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd w = {fd, POLLOUT, 0};
        poll(&w, 1, 1000);
        continue;
      }
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* The agent is gone: nothing may run unobserved, and this container is of no further use. */
static void lost(void) {
  kill(-1, SIGKILL);
  _exit(0);
}

/* One writev per frame: the agent wakes once per frame, not once for the head and again for the body. */
static void send_frame(uint8_t type, const void *payload, uint32_t len) {
  if (conn < 0) return;
  unsigned char head[5] = {len & 0xff, (len >> 8) & 0xff, (len >> 16) & 0xff, (len >> 24) & 0xff, type};
  struct iovec iov[2] = {{head, 5}, {(void *)payload, len}};
  ssize_t n;
  do n = writev(conn, iov, len ? 2 : 1);
  while (n < 0 && errno == EINTR);
  if (n == (ssize_t)(5 + len)) return;
  /* A partial write (a full socket buffer): finish it the slow way. */
  size_t done = n > 0 ? (size_t)n : 0;
  if (n < 0 && errno != EAGAIN) lost();
  if (done < 5 && write_all(conn, head + done, 5 - done) < 0) lost();
  if (len && write_all(conn, (const char *)payload + (done > 5 ? done - 5 : 0), len - (done > 5 ? done - 5 : 0)) < 0) lost();
}

static void send_pair(uint8_t type, uint32_t a, uint32_t b) {
  unsigned char p[8];
  memcpy(p, &a, 4);
  memcpy(p + 4, &b, 4);
  send_frame(type, p, 8);
}

static uint32_t get_u32(const unsigned char *p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }

/* Parses `count` NUL-terminated strings from p[0..end); returns a NULL-terminated vector. */
static char **strings(unsigned char **p, unsigned char *end, uint32_t count) {
  if (count > 65536) return NULL;
  char **v = calloc(count + 1, sizeof(char *));
  if (!v) return NULL;
  for (uint32_t i = 0; i < count; i++) {
    unsigned char *nul = *p < end ? memchr(*p, 0, (size_t)(end - *p)) : NULL;
    if (!nul) {
      free(v);
      return NULL;
    }
    v[i] = (char *)*p;
    *p = nul + 1;
  }
  return v;
}

static const char *env_get(char **envp, const char *name) {
  size_t n = strlen(name);
  for (char **e = envp; *e; e++)
    if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
  return NULL;
}

/* ---- the job's seccomp filter ------------------------------------------------------------ */

#define DENY_NR(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)
#define NS_FLAGS (CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | 0x00000080 /* CLONE_NEWTIME */)

/*
 * A denylist on top of LXC's container-wide one: no debugging other processes (ptrace,
 * process_vm_*, pidfd_getfd, kcmp), no new namespaces (unshare, setns, clone with CLONE_NEW*;
 * clone3 answers ENOSYS so libc falls back to clone, whose flags a filter can read), no mounts,
 * and none of the kernel interfaces that have carried most container escapes (bpf, io_uring,
 * userfaultfd, keyrings, perf events). Another architecture's syscalls kill the process.
 */
static struct sock_filter filter[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FILTER_ARCH, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
    /* x32 syscalls: a second numbering of the same calls that a denylist would miss. */
    BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
#endif
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 4),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
    BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, NS_FLAGS, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    DENY_NR(SYS_ptrace),
    DENY_NR(SYS_process_vm_readv),
    DENY_NR(SYS_process_vm_writev),
    DENY_NR(SYS_pidfd_getfd),
    DENY_NR(SYS_kcmp),
    DENY_NR(SYS_unshare),
    DENY_NR(SYS_setns),
    DENY_NR(SYS_mount),
    DENY_NR(SYS_umount2),
    DENY_NR(SYS_pivot_root),
    DENY_NR(SYS_fsopen),
    DENY_NR(SYS_fsconfig),
    DENY_NR(SYS_fsmount),
    DENY_NR(SYS_fspick),
    DENY_NR(SYS_move_mount),
    DENY_NR(SYS_open_tree),
    DENY_NR(SYS_mount_setattr),
    DENY_NR(SYS_open_by_handle_at),
    DENY_NR(SYS_name_to_handle_at),
    DENY_NR(SYS_bpf),
    DENY_NR(SYS_perf_event_open),
    DENY_NR(SYS_userfaultfd),
    DENY_NR(SYS_io_uring_setup),
    DENY_NR(SYS_io_uring_enter),
    DENY_NR(SYS_io_uring_register),
    DENY_NR(SYS_keyctl),
    DENY_NR(SYS_add_key),
    DENY_NR(SYS_request_key),
    DENY_NR(SYS_kexec_load),
    DENY_NR(SYS_kexec_file_load),
    DENY_NR(SYS_init_module),
    DENY_NR(SYS_finit_module),
    DENY_NR(SYS_delete_module),
    DENY_NR(SYS_reboot),
    DENY_NR(SYS_swapon),
    DENY_NR(SYS_swapoff),
    DENY_NR(SYS_acct),
    DENY_NR(SYS_quotactl),
    DENY_NR(SYS_syslog),
    DENY_NR(SYS_vhangup),
    DENY_NR(SYS_settimeofday),
    DENY_NR(SYS_clock_settime),
    DENY_NR(SYS_clock_adjtime),
    DENY_NR(SYS_adjtimex),
#ifdef SYS_quotactl_fd
    DENY_NR(SYS_quotactl_fd),
#endif
#ifdef SYS_listmount
    DENY_NR(SYS_listmount),
#endif
#ifdef SYS_statmount
    DENY_NR(SYS_statmount),
#endif
#ifdef SYS_open_tree_attr
    DENY_NR(SYS_open_tree_attr),
#endif
#if defined(__x86_64__)
    DENY_NR(SYS_iopl),
    DENY_NR(SYS_ioperm),
    DENY_NR(SYS_uselib),
#endif
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};

static int install_filter(void) {
  struct sock_fprog prog = {(unsigned short)(sizeof filter / sizeof filter[0]), filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return -1;
  return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}


/* Capabilities a job that runs as root in the user namespace keeps (what image builds need). */
static const int root_caps[] = {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_MKNOD, CAP_AUDIT_WRITE, CAP_SETFCAP};

/* The executor's bounding set, read once at start: a job drops these, not every capability there is. */
static int bounding[CAP_LAST_CAP + 1], nbounding = 0;

static void read_bounding(void) {
  for (int cap = 0; cap <= CAP_LAST_CAP; cap++)
    if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) bounding[nbounding++] = cap;
}

static int keeps(int cap, uint32_t uid) {
  if (uid != 0) return 0;
  for (size_t i = 0; i < sizeof root_caps / sizeof root_caps[0]; i++)
    if (root_caps[i] == cap) return 1;
  return 0;
}

/* In the forked child: become the job. Any failure ends the child before it execs anything. */
static void become_job(uint32_t uid, uint32_t gid) {
  struct rlimit core = {0, 0};
  if (setrlimit(RLIMIT_CORE, &core) < 0) die("setrlimit");
  /*
   * Every container's user namespace is owned by host root, and since Linux 5.14 the kernel
   * charges a namespace's per-user rlimit counters to its owner in the parent namespace too: what
   * any job queues is also counted against host root's one RLIMIT_SIGPENDING (96,364 on a 23 GiB
   * host) and RLIMIT_MSGQUEUE (819,200 bytes), shared by every tenant and by the host. The only
   * bound per container is the job's own rlimit (the first level of the count, per uid in the
   * container), and a job cannot raise its hard limit (no CAP_SYS_RESOURCE).
   *  - Queued signals: 256 per job (POSIX asks for at least 32; this also bounds its POSIX timers,
   *    which preallocate one each). An agent with the defaults keeps at most slots (4 per CPU) +
   *    64 idle + a few blank containers: on 10 CPUs ~110 × 256 = 28,160, under a third of root's.
   *  - POSIX message queues: none. A queue outlives its job in the warm container's IPC namespace,
   *    and a default-sized one costs ~80 KiB: ten tenants would exhaust root's 800 KiB. Any
   *    non-zero bound small enough for 64 containers would be ~6 KiB, hardly a queue.
   * SysV shm, semaphores and message queues are bounded per IPC namespace (kernel.shmmni,
   * msgmni, msgmnb, sem — each container has its own) and charged to the container's memory
   * cgroup, not to a per-user counter: they are not shared with other tenants.
   */
  struct rlimit sigpending = {256, 256}, msgqueue = {0, 0};
  if (setrlimit(RLIMIT_SIGPENDING, &sigpending) < 0) die("setrlimit");
  if (setrlimit(RLIMIT_MSGQUEUE, &msgqueue) < 0) die("setrlimit");
  /* The executor is exempt from the OOM killer; the job must be its first choice. */
  int oom = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (oom < 0 || write(oom, "1000", 4) != 4) die("oom_score_adj");
  close(oom);
  for (int i = 0; i < nbounding; i++)
    if (!keeps(bounding[i], uid) && prctl(PR_CAPBSET_DROP, bounding[i], 0, 0, 0) < 0) die("capbset");
  if (setgroups(0, NULL) < 0) die("setgroups");
  if (setresgid(gid, gid, gid) < 0) die("setresgid");
  if (setresuid(uid, uid, uid) < 0) die("setresuid");
  /* Leaving uid 0 cleared every set; a root job keeps only root_caps, and nothing is inheritable. */
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2];
  memset(d, 0, sizeof d);
  for (int cap = 0; cap <= CAP_LAST_CAP; cap++)
    if (keeps(cap, uid)) d[cap / 32].effective |= 1u << (cap % 32), d[cap / 32].permitted |= 1u << (cap % 32);
  if (syscall(SYS_capset, &h, d) < 0) die("capset");
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) die("ambient");
  /* The filter and no_new_privs came with the fork: the executor installed them on itself at start. */
}

/* ---- output ------------------------------------------------------------------------------ */

static void flush(struct stream *s) {
  if (s->len == 0) return;
  send_frame(s->type, s->buf, s->len);
  s->len = 0;
}

/* Reads what a job pipe holds into its buffer (or, past the budget, into nothing); 0 at EOF. */
static int pump(struct stream *s) {
  static unsigned char scratch[OUT_CHUNK];
  /* At most PUMP_READS reads per call: a flood must not keep the loop from KILL frames and SIGCHLD. */
  for (int reads = 0; reads < PUMP_READS; reads++) {
    int keep = budget > 0;
    unsigned char *dst = keep ? s->buf + s->len : scratch;
    size_t room = keep ? OUT_CHUNK - s->len : sizeof scratch;
    if (keep && room > budget) room = (size_t)budget;
    ssize_t n = read(s->fd, dst, room);
    if (n > 0) {
      if (!keep) {
        truncated = 1;
        continue;
      }
      if (s->len == 0) clock_gettime(CLOCK_MONOTONIC, &s->since);
      s->len += (uint32_t)n;
      budget -= (uint64_t)n;
      if (s->len == OUT_CHUNK) flush(s);
      continue;
    }
    if (n == 0) {
      close(s->fd);
      s->fd = -1;
      return 0;
    }
    if (errno == EINTR) continue;
    return 1; /* EAGAIN: more later */
  }
  return 1;
}

/* ms until a buffered stream must be sent (-1: nothing waits). */
static int flush_due(struct stream *s) {
  if (s->len == 0) return -1;
  long left = COALESCE_MS - ms_since(&s->since);
  return left < 0 ? 0 : (int)left;
}

/* ---- jobs -------------------------------------------------------------------------------- */

static void reap(void) {
  int st;
  pid_t pid;
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    if (pid == job && !job_exited) {
      job_exited = 1;
      job_status = st;
      clock_gettime(CLOCK_MONOTONIC, &exited_at);
    }
  }
}

/* Kills everything the job left (setsid or not: kill(-1) from PID 1 reaches every other process
 * in the namespace) and reaps it; 1 if nothing but the executor is left. */
static int clean_up(int sfd) {
  /* Nothing but the executor left (the common case): no need to walk every process for kill(-1). */
  if (pids_fd >= 0) {
    char n[24];
    ssize_t r = pread(pids_fd, n, sizeof n - 1, 0);
    if (r > 0 && (n[r] = 0, atoi(n) == 1)) return 1;
  }
  kill(-1, SIGKILL);
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    pid_t r;
    while ((r = waitpid(-1, NULL, WNOHANG)) > 0) {
    }
    if (r < 0 && errno == ECHILD) return 1;
    long left = REAP_MS - ms_since(&t0);
    if (left <= 0) return 0;
    struct pollfd p = {sfd, POLLIN, 0};
    poll(&p, 1, (int)left);
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof si) == sizeof si) {
    }
  }
}

static void finish_job(int sfd) {
  if (out_s.fd >= 0) pump(&out_s);
  if (err_s.fd >= 0) pump(&err_s);
  int clean = clean_up(sfd);
  /* What the killed stragglers had written before they died. */
  struct stream *both[2] = {&out_s, &err_s};
  for (int i = 0; i < 2; i++) {
    if (both[i]->fd >= 0 && pump(both[i]) != 0) {
      close(both[i]->fd);
      both[i]->fd = -1;
    }
    flush(both[i]);
  }
  send_pair(T_EXIT, (uint32_t)job_status, (clean ? X_CLEAN : 0) | (truncated ? X_TRUNCATED : 0));
  job = 0;
  job_exited = 0;
}

static void refuse(const char *msg) {
  send_frame(T_ERR, msg, (uint32_t)strlen(msg));
  send_pair(T_EXIT, 126 << 8, X_CLEAN);
}

static void start_job(unsigned char *payload, uint32_t len) {
  unsigned char *p = payload, *end = payload + len;
  if (job) {
    refuse("corral-exec: a job is already running\n");
    return;
  }
  char **argv = NULL, **envp = NULL;
  int in = -1, out[2] = {-1, -1}, err[2] = {-1, -1};
  if (end - p < 20) goto bad;
  uint32_t uid = get_u32(p), gid = get_u32(p + 4);
  uint64_t max_out = get_u32(p + 8) | ((uint64_t)get_u32(p + 12) << 32);
  uint32_t argc = get_u32(p + 16);
  p += 20;
  if (argc == 0 || !(argv = strings(&p, end, argc))) goto bad;
  if (end - p < 4) goto bad;
  uint32_t envc = get_u32(p);
  p += 4;
  if (!(envp = strings(&p, end, envc))) goto bad;

  /* stdin is a memfd holding the bytes the agent sent, so a job that never reads cannot block us. */
  in = memfd_create("stdin", MFD_CLOEXEC);
  if (in < 0 || write_all(in, p, (size_t)(end - p)) < 0) goto bad;
  lseek(in, 0, SEEK_SET);
  if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) goto bad;

  pid_t pid = fork();
  if (pid < 0) goto bad;
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* The executor ignores SIGPIPE; a job's pipelines must die of it as anywhere else. */
    signal(SIGPIPE, SIG_DFL);
    setsid();
    dup2(in, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    become_job(uid, gid);
    const char *home = env_get(envp, "HOME");
    if (!home || chdir(home) < 0) chdir("/");
    const char *path = env_get(envp, "PATH");
    if (path) setenv("PATH", path, 1);
    execvpe(argv[0], argv, envp);
    dprintf(2, "corral-exec: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  close(in);
  close(out[1]);
  close(err[1]);
  job = pid;
  budget = max_out;
  truncated = 0;
  out_s.fd = out[0];
  err_s.fd = err[0];
  out_s.len = err_s.len = 0;
  fcntl(out_s.fd, F_SETFL, O_NONBLOCK);
  fcntl(err_s.fd, F_SETFL, O_NONBLOCK);
  free(argv);
  free(envp);
  return;
bad:
  free(argv);
  free(envp);
  int fds[5] = {in, out[0], out[1], err[0], err[1]};
  for (int i = 0; i < 5; i++)
    if (fds[i] >= 0) close(fds[i]);
  refuse("corral-exec: malformed run request\n");
}

/* Accepts the agent: a peer outside this PID namespace (its pid here reads 0), once. */
static int accept_agent(int lfd) {
  int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0) return -1;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.pid != 0) {
    close(c);
    return -1;
  }
  return c;
}

int main(int argc, char **argv) {
  const char *sock_path = argc > 1 ? argv[1] : "/.corral/run/exec.sock";
  /* Not dumpable: /proc/1 is closed to the job even where a uid would otherwise match. */
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  read_bounding();
  pids_fd = open("/sys/fs/cgroup/pids/pids.current", O_RDONLY | O_CLOEXEC);
  if (pids_fd < 0) pids_fd = open("/sys/fs/cgroup/pids.current", O_RDONLY | O_CLOEXEC);
  /* The job filter goes on the executor itself, once: every job inherits it with the fork, and
   * the executor needs none of what it refuses. A kernel that refuses it gets no jobs at all. */
  uint32_t features = install_filter() == 0 ? F_FILTER : 0;
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGPWR);
  sigaddset(&mask, SIGUSR1);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  signal(SIGPIPE, SIG_IGN);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die("signalfd");

  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(sock_path) >= sizeof addr.sun_path) die("socket path");
  strcpy(addr.sun_path, sock_path);
  unlink(sock_path);
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  chmod(sock_path, 0600);
  if (listen(lfd, 4) < 0) die("listen");

  unsigned char *in = NULL;
  size_t in_len = 0, in_cap = 0;

  for (;;) {
    struct pollfd fds[5];
    int n = 0;
    fds[n++] = (struct pollfd){sfd, POLLIN, 0};
    int li = -1, ci = -1, oi = -1, ei = -1;
    if (lfd >= 0) li = n, fds[n++] = (struct pollfd){lfd, POLLIN, 0};
    if (conn >= 0) ci = n, fds[n++] = (struct pollfd){conn, POLLIN, 0};
    if (out_s.fd >= 0) oi = n, fds[n++] = (struct pollfd){out_s.fd, POLLIN, 0};
    if (err_s.fd >= 0) ei = n, fds[n++] = (struct pollfd){err_s.fd, POLLIN, 0};
    int timeout = job_exited ? 10 : -1;
    int due_out = flush_due(&out_s), due_err = flush_due(&err_s);
    if (due_out >= 0 && (timeout < 0 || due_out < timeout)) timeout = due_out;
    if (due_err >= 0 && (timeout < 0 || due_err < timeout)) timeout = due_err;
    if (poll(fds, (nfds_t)n, timeout) < 0 && errno != EINTR) die("poll");

    if (fds[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGCHLD) reap();
        /* A halt from outside the container (lxc-stop): kill(2) from a process this namespace
         * cannot see. Inside, every sender has a pid here, and SI_USER cannot be forged with
         * rt_sigqueueinfo (the kernel refuses si_code >= 0 from another process). */
        else if (si.ssi_code == SI_USER && si.ssi_pid == 0) lost();
      }
    }
    if (li >= 0 && (fds[li].revents & POLLIN)) {
      int c = accept_agent(lfd);
      if (c >= 0) {
        /* Exactly one connection, ever: nothing else can reach this executor again. */
        conn = c;
        close(lfd);
        lfd = -1;
        unlink(sock_path);
        send_pair(T_READY, PROTOCOL, features);
        continue;
      }
    }
    if (oi >= 0 && (fds[oi].revents & (POLLIN | POLLHUP))) pump(&out_s);
    if (ei >= 0 && (fds[ei].revents & (POLLIN | POLLHUP))) pump(&err_s);
    if (flush_due(&out_s) == 0) flush(&out_s);
    if (flush_due(&err_s) == 0) flush(&err_s);
    if (job && job_exited && ((out_s.fd < 0 && err_s.fd < 0) || ms_since(&exited_at) >= DRAIN_MS)) finish_job(sfd);
    if (ci >= 0 && (fds[ci].revents & (POLLIN | POLLHUP | POLLERR))) {
      if (in_cap - in_len < OUT_CHUNK) {
        size_t cap = in_cap ? in_cap * 2 : 65536;
        if (cap > MAX_FRAME + 5 + OUT_CHUNK) cap = MAX_FRAME + 5 + OUT_CHUNK;
        if (cap > in_cap) {
          unsigned char *grown = realloc(in, cap);
          if (!grown) lost();
          in = grown;
          in_cap = cap;
        }
      }
      ssize_t r = read(conn, in + in_len, in_cap - in_len);
      if (r <= 0) {
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        lost();
      }
      in_len += (size_t)r;
      while (in_len >= 5) {
        uint32_t len = get_u32(in);
        if (len > MAX_FRAME) lost();
        if (in_len < 5 + (size_t)len) break;
        uint8_t type = in[4];
        if (type == T_RUN) start_job(in + 5, len);
        else if (type == T_KILL && len == 1 && job) kill(-1, in[5]);
        memmove(in, in + 5 + len, in_len - 5 - len);
        in_len -= 5 + len;
      }
    }
  }
}
