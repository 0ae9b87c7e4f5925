/*
 * sudo-caller.so: preloaded by wrenn-gvisor-helper's sudod into the real /usr/bin/sudo only. This gVisor
 * build makes a process's effective uid its real uid at every exec (it never honours set-user-ID), so
 * sudod must start sudo with real uid 0; this library shows sudo the real uid and gid that a set-user-ID
 * exec would have left, the caller's (WRENN_SUDO_CALLER=uid:gid, set by sudod from the socket's peer
 * credentials), so sudo applies /etc/sudoers to the caller. The variable is removed at load, so nothing
 * sudo starts sees it (and sudo drops LD_PRELOAD from its command's environment). Once sudo sets its
 * real uid (or gid) itself, the kernel's value is the true one again.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

static int uid_shown = 0, gid_shown = 0;
static uid_t caller_uid;
static gid_t caller_gid;

__attribute__((constructor)) static void load_caller(void) {
  const char *v = getenv("WRENN_SUDO_CALLER");
  if (v == NULL) return;
  char *end;
  unsigned long uid = strtoul(v, &end, 10);
  if (end != v && *end == ':') {
    const char *g = end + 1;
    unsigned long gid = strtoul(g, &end, 10);
    if (end != g && *end == '\0') {
      caller_uid = (uid_t)uid;
      caller_gid = (gid_t)gid;
      uid_shown = gid_shown = 1;
    }
  }
  unsetenv("WRENN_SUDO_CALLER");
}

uid_t getuid(void) { return uid_shown ? caller_uid : (uid_t)syscall(SYS_getuid); }

gid_t getgid(void) { return gid_shown ? caller_gid : (gid_t)syscall(SYS_getgid); }

int getresuid(uid_t *r, uid_t *e, uid_t *s) {
  int rc = (int)syscall(SYS_getresuid, r, e, s);
  if (rc == 0 && uid_shown && r != NULL) *r = caller_uid;
  return rc;
}

int getresgid(gid_t *r, gid_t *e, gid_t *s) {
  int rc = (int)syscall(SYS_getresgid, r, e, s);
  if (rc == 0 && gid_shown && r != NULL) *r = caller_gid;
  return rc;
}

int setuid(uid_t uid) {
  int rc = (int)syscall(SYS_setuid, uid);
  if (rc == 0) uid_shown = 0;
  return rc;
}

int setreuid(uid_t r, uid_t e) {
  int rc = (int)syscall(SYS_setreuid, r, e);
  if (rc == 0 && r != (uid_t)-1) uid_shown = 0;
  return rc;
}

int setresuid(uid_t r, uid_t e, uid_t s) {
  int rc = (int)syscall(SYS_setresuid, r, e, s);
  if (rc == 0 && r != (uid_t)-1) uid_shown = 0;
  return rc;
}

int setgid(gid_t gid) {
  int rc = (int)syscall(SYS_setgid, gid);
  if (rc == 0) gid_shown = 0;
  return rc;
}

int setregid(gid_t r, gid_t e) {
  int rc = (int)syscall(SYS_setregid, r, e);
  if (rc == 0 && r != (gid_t)-1) gid_shown = 0;
  return rc;
}

int setresgid(gid_t r, gid_t e, gid_t s) {
  int rc = (int)syscall(SYS_setresgid, r, e, s);
  if (rc == 0 && r != (gid_t)-1) gid_shown = 0;
  return rc;
}
