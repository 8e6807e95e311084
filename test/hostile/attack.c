/*
 * corral-attack: what a hostile job would run, as one static binary the hostile tests put into a
 * test image. Each subcommand tries one thing a job must not be able to do and prints one line per
 * try: "<try>: ok" when it worked, "<try>: <errno name>" when the kernel refused it. The tests
 * read those lines and check the platform's outcome around them (agent still connected, another
 * tenant's job still runs, honest final state, limits held).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mqueue.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

static void report(const char *what, long rc) {
  if (rc >= 0) printf("%s: ok\n", what);
  else printf("%s: %s\n", what, strerrorname_np(errno) ? strerrorname_np(errno) : "E?");
  fflush(stdout);
}

static int has(const char *mode, const char *name) { return strcmp(mode, name) == 0; }

/* Signals, ptrace and descriptor theft against init (the executor, PID 1). */
static void init_attacks(void) {
  report("kill-init-KILL", kill(1, SIGKILL));
  report("kill-init-TERM", kill(1, SIGTERM));
  report("kill-init-STOP", kill(1, SIGSTOP));
  report("ptrace-attach-init", ptrace(PTRACE_ATTACH, 1, 0, 0));
  report("ptrace-seize-init", ptrace(PTRACE_SEIZE, 1, 0, 0));
  int pidfd = (int)syscall(SYS_pidfd_open, 1, 0);
  report("pidfd-open-init", pidfd);
  if (pidfd >= 0) {
    for (int fd = 0; fd < 8; fd++) {
      long got = syscall(SYS_pidfd_getfd, pidfd, fd, 0);
      if (fd == 3 || got >= 0) report("pidfd-getfd-init", got);
    }
    report("pidfd-signal-init", syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0));
  }
  report("open-proc1-mem", open("/proc/1/mem", O_RDWR));
  report("open-proc1-environ", open("/proc/1/environ", O_RDONLY));
  report("opendir-proc1-fd", open("/proc/1/fd", O_RDONLY | O_DIRECTORY));
  struct iovec local = {malloc(16), 16}, remote = {(void *)0x400000, 16};
  report("process-vm-readv-init", syscall(SYS_process_vm_readv, 1, &local, 1, &remote, 1, 0));
}

/* The executor's socket: its directory, the path, and a connect. */
static void socket_attacks(void) {
  struct stat st;
  report("stat-run-dir", stat("/.corral/run", &st));
  report("opendir-run-dir", open("/.corral/run", O_RDONLY | O_DIRECTORY));
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  strcpy(a.sun_path, "/.corral/run/exec.sock");
  report("connect-exec-sock", connect(s, (struct sockaddr *)&a, sizeof a));
  report("write-executor-binary", open("/.corral/bin/corral-exec", O_WRONLY));
}

/* Namespaces, mounts and the other kernel interfaces the job filter closes. */
static void syscall_attacks(void) {
  report("unshare-user", unshare(CLONE_NEWUSER));
  report("unshare-mount", unshare(CLONE_NEWNS));
  long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
  if (pid == 0) _exit(0);
  report("clone-newuser", pid);
  if (pid > 0) waitpid((pid_t)pid, NULL, 0);
  report("clone3", syscall(SYS_clone3, NULL, 0));
  report("setns", setns(0, 0));
  report("mount-tmpfs", mount("none", "/tmp", "tmpfs", 0, NULL));
  report("umount-proc", umount2("/proc", MNT_DETACH));
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  report("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
  report("io-uring-setup", syscall(SYS_io_uring_setup, 1, malloc(120)));
  report("userfaultfd", syscall(SYS_userfaultfd, 0));
  report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
  struct perf_event_attr pe;
  memset(&pe, 0, sizeof pe);
  pe.size = sizeof pe;
  report("perf-event-open", syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0));
  report("ptrace-traceme", ptrace(PTRACE_TRACEME, 0, 0, 0));
  report("setuid-0", setuid(0));
  report("raw-socket", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
  report("sysrq-trigger", open("/proc/sysrq-trigger", O_WRONLY));
  report("chroot", chroot("/tmp"));
}

/* Writing into the container's cgroup: its limits, its member list, a child that escapes them. */
static void cgroup_attacks(void) {
  static const char *tries[][3] = {
      /* v1 */
      {"/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory"},
      {"/sys/fs/cgroup/pids", "pids.max", "pids"},
      {"/sys/fs/cgroup/cpu", "cpu.cfs_quota_us", "cpu"},
      {"/sys/fs/cgroup/freezer", "freezer.state", "freezer"},
      /* v2 */
      {"/sys/fs/cgroup", "memory.max", "unified"},
  };
  char what[128], file[512];
  for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
    snprintf(file, sizeof file, "%s/cgroup.procs", tries[i][0]);
    if (access(file, F_OK) != 0) continue;
    snprintf(what, sizeof what, "mkdir-%s-cgroup", tries[i][2]);
    snprintf(file, sizeof file, "%s/escape", tries[i][0]);
    report(what, mkdir(file, 0755));
    snprintf(what, sizeof what, "write-%s-limit", tries[i][2]);
    snprintf(file, sizeof file, "%s/%s", tries[i][0], tries[i][1]);
    report(what, open(file, O_WRONLY));
    snprintf(what, sizeof what, "write-%s-procs", tries[i][2]);
    snprintf(file, sizeof file, "%s/cgroup.procs", tries[i][0]);
    report(what, open(file, O_WRONLY));
  }
}

/* What the job holds: ids, capabilities, no_new_privs, seccomp, core limit, OOM score. */
static void whoami(void) {
  printf("uid: %d %d\n", getuid(), geteuid());
  char line[256];
  FILE *f = fopen("/proc/self/status", "r");
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10) || !strncmp(line, "Seccomp:", 8)) fputs(line, stdout);
  if (f) fclose(f);
  struct rlimit core;
  getrlimit(RLIMIT_CORE, &core);
  printf("core: %llu %llu\n", (unsigned long long)core.rlim_cur, (unsigned long long)core.rlim_max);
  struct rlimit lim;
  getrlimit(RLIMIT_SIGPENDING, &lim);
  printf("sigpending: %llu %llu\n", (unsigned long long)lim.rlim_cur, (unsigned long long)lim.rlim_max);
  getrlimit(RLIMIT_MSGQUEUE, &lim);
  printf("msgqueue: %llu %llu\n", (unsigned long long)lim.rlim_cur, (unsigned long long)lim.rlim_max);
  f = fopen("/proc/self/oom_score_adj", "r");
  if (f && fgets(line, sizeof line, f)) printf("oom_score_adj: %s", line);
  if (f) fclose(f);
  report("lower-oom-score-adj", (f = fopen("/proc/self/oom_score_adj", "w")) && fputs("-1000", f) >= 0 && fflush(f) == 0 ? 0 : -1);
  fflush(stdout);
}

/* A process that leaves its session and process group, to outlive the job. */
static void escape(const char *marker) {
  if (fork() == 0) {
    setsid();
    if (fork() == 0) {
      setsid();
      for (;;) {
        int fd = open(marker, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) write(fd, "alive\n", 6), close(fd);
        sleep(1);
      }
    }
    _exit(0);
  }
  wait(NULL);
  printf("escaped\n");
  fflush(stdout);
}

/*
 * Per-user kernel counters that every container's user namespace charges, hierarchically, to the
 * owner of that namespace (host root) as well. A "-fill" takes as many as it can, prints how many
 * and why it stopped, then "holding" and keeps them for `hold` seconds (the test probes meanwhile
 * and then cancels the job); a "-probe" tries to take one and says whether it could.
 */
static void holding(int hold) {
  printf("holding: yes\n");
  fflush(stdout);
  sleep((unsigned)hold);
}

static void inotify_fill(int hold) {
  long n = 0, rc;
  while (n < 100000 && (rc = inotify_init1(IN_CLOEXEC)) >= 0) n++;
  printf("inotify-count: %ld\n", n);
  report("inotify-fill", n < 100000 ? -1 : 0);
  holding(hold);
}

static void inotify_probe(void) {
  char line[64] = "?\n";
  FILE *f = fopen("/proc/sys/user/max_inotify_instances", "r");
  if (f && fgets(line, sizeof line, f)) printf("inotify-max-instances: %s", line);
  if (f) fclose(f);
  f = fopen("/proc/sys/user/max_inotify_watches", "r");
  if (f && fgets(line, sizeof line, f)) printf("inotify-max-watches: %s", line);
  if (f) fclose(f);
  report("inotify-probe", inotify_init1(IN_CLOEXEC));
}

static void sigq_fill(int hold) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGRTMIN);
  sigprocmask(SIG_BLOCK, &set, NULL);
  long n = 0;
  union sigval v = {0};
  while (n < 10000000 && sigqueue(getpid(), SIGRTMIN, v) == 0) n++;
  printf("sigq-count: %ld\n", n);
  report("sigq-fill", -1);
  holding(hold);
}

static void sigq_probe(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGRTMIN);
  sigprocmask(SIG_BLOCK, &set, NULL);
  union sigval v = {0};
  report("sigq-probe", sigqueue(getpid(), SIGRTMIN, v));
  timer_t t;
  report("timer-create-probe", timer_create(CLOCK_MONOTONIC, NULL, &t));
}

/* POSIX message queues live on in the IPC namespace (the warm container's) after the job exits. */
static void mq_fill(void) {
  struct mq_attr attr = {.mq_maxmsg = 10, .mq_msgsize = 8192};
  char name[64];
  long n = 0;
  for (;; n++) {
    snprintf(name, sizeof name, "/corral-fill-%d-%ld", getpid(), n);
    mqd_t q = mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
    if (q == (mqd_t)-1) break;
  }
  printf("mq-count: %ld\n", n);
  report("mq-fill", -1);
}

/* A queue of the default size (fs.mqueue.msg_default × msgsize_default), as most programs ask. */
static void mq_probe(void) {
  char name[64];
  snprintf(name, sizeof name, "/corral-probe-%d", getpid());
  mqd_t q = mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, NULL);
  report("mq-probe", q == (mqd_t)-1 ? -1 : 0);
  if (q != (mqd_t)-1) mq_unlink(name);
}

/* Output as fast as the pipe takes it, forever. */
static void flood(void) {
  static char buf[65536];
  memset(buf, 'x', sizeof buf);
  for (;;) write(1, buf, sizeof buf);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (has(mode, "init")) init_attacks();
  else if (has(mode, "socket")) socket_attacks();
  else if (has(mode, "syscalls")) syscall_attacks();
  else if (has(mode, "cgroup")) cgroup_attacks();
  else if (has(mode, "whoami")) whoami();
  else if (has(mode, "escape")) escape(argc > 2 ? argv[2] : "/tmp/escaped");
  else if (has(mode, "flood")) flood();
  else if (has(mode, "inotify-fill")) inotify_fill(argc > 2 ? atoi(argv[2]) : 60);
  else if (has(mode, "inotify-probe")) inotify_probe();
  else if (has(mode, "sigq-fill")) sigq_fill(argc > 2 ? atoi(argv[2]) : 60);
  else if (has(mode, "sigq-probe")) sigq_probe();
  else if (has(mode, "mq-fill")) mq_fill();
  else if (has(mode, "mq-probe")) mq_probe();
  else if (has(mode, "kill-all")) report("kill-minus-1", kill(-1, SIGKILL));
  else {
    fprintf(stderr, "usage: corral-attack init|socket|syscalls|cgroup|whoami|escape|flood|kill-all\n"
                    "  inotify-fill [hold-s]|inotify-probe|sigq-fill [hold-s]|sigq-probe|mq-fill|mq-probe\n");
    return 2;
  }
  return 0;
}
