/*
 * Leaves a 600 MiB System V shared memory segment behind: created, attached, touched, never
 * marked IPC_RMID, so it outlives the process in the container's IPC namespace, charged to the
 * container's memory cgroup. No libc (raw x86-64 syscalls), so the binary is ~9 KB and reaches
 * a busybox container as a job's stdin. Built by test/idle-memory.test.ts.
 */
static long sys(long n, long a, long b, long c) {
  long r;
  __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return r;
}

void _start(void) {
  const unsigned long size = 600ul << 20;
  long id = sys(29 /* shmget */, 0 /* IPC_PRIVATE */, (long)size, 01000 /* IPC_CREAT */ | 0600);
  if (id < 0) sys(60 /* exit */, 1, 0, 0);
  long p = sys(30 /* shmat */, id, 0, 0);
  if (p < 0 && p > -4096) sys(60, 2, 0, 0);
  for (unsigned long i = 0; i < size; i += 4096) ((volatile char *)p)[i] = 1;
  sys(60, 0, 0, 0);
}
