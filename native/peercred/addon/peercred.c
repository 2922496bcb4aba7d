/*
 * Parley's peer credentials: the uid, gid (and, on Linux, pid) of the process
 * at the other end of a connected Unix domain socket, as the kernel recorded
 * them at connect(2) — the client cannot choose them.
 *
 * Plain C N-API (node_api.h): ABI-stable. JS shape (wrapped and documented by
 * native/peercred/index.ts):
 *
 *   const { peerCredentials, mechanism } = require('parley_peercred.node');
 *   peerCredentials(fd) -> { uid: number, gid: number, pid?: number }
 *   mechanism           -> "SO_PEERCRED" | "getpeereid"
 *
 * Linux: getsockopt(fd, SOL_SOCKET, SO_PEERCRED) (socket(7), unix(7)).
 * macOS / FreeBSD / OpenBSD / NetBSD: getpeereid(3) (no pid).
 * A failing call throws an Error whose `code` is the errno name ("EBADF",
 * "ENOTSOCK", "ENOTCONN", …); a bad argument throws TypeError.
 */
#if defined(__linux__)
#define _GNU_SOURCE /* struct ucred */
#endif
#include <errno.h>
#include <node_api.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#if defined(__linux__)
#define PEERCRED_MECHANISM "SO_PEERCRED"
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__) || defined(__DragonFly__)
#define PEERCRED_MECHANISM "getpeereid"
#else
#error "no peer credential call known for this platform (Linux SO_PEERCRED or BSD getpeereid)"
#endif

static const char *errno_name(int err) {
  switch (err) {
    case EBADF: return "EBADF";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOTCONN: return "ENOTCONN";
    case EINVAL: return "EINVAL";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EFAULT: return "EFAULT";
    default: return "EPEERCRED";
  }
}

static napi_value throw_errno(napi_env env, int err) {
  char message[160];
  snprintf(message, sizeof message, "peer credentials unavailable (%s): %s", PEERCRED_MECHANISM, strerror(err));
  napi_throw_error(env, errno_name(err), message);
  return NULL;
}

static int set_number(napi_env env, napi_value obj, const char *name, double value) {
  napi_value v;
  return napi_create_double(env, value, &v) == napi_ok && napi_set_named_property(env, obj, name, v) == napi_ok;
}

static napi_value PeerCredentials(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_valuetype type;
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_typeof(env, argv[0], &type) != napi_ok || type != napi_number ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "peerCredentials(fd): fd must be a non-negative integer file descriptor");
    return NULL;
  }
  napi_value result;
  if (napi_create_object(env, &result) != napi_ok) return NULL;
#if defined(__linux__)
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return throw_errno(env, errno);
  if (len != sizeof cred) return throw_errno(env, EINVAL);
  if (!set_number(env, result, "uid", (double)cred.uid) || !set_number(env, result, "gid", (double)cred.gid) ||
      !set_number(env, result, "pid", (double)cred.pid)) {
    napi_throw_error(env, "ERR_NAPI", "N-API call failed while building the result");
    return NULL;
  }
#else
  uid_t uid;
  gid_t gid;
  if (getpeereid(fd, &uid, &gid) != 0) return throw_errno(env, errno);
  if (!set_number(env, result, "uid", (double)uid) || !set_number(env, result, "gid", (double)gid)) {
    napi_throw_error(env, "ERR_NAPI", "N-API call failed while building the result");
    return NULL;
  }
#endif
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn, mechanism;
  if (napi_create_function(env, "peerCredentials", NAPI_AUTO_LENGTH, PeerCredentials, NULL, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "peerCredentials", fn) != napi_ok ||
      napi_create_string_utf8(env, PEERCRED_MECHANISM, NAPI_AUTO_LENGTH, &mechanism) != napi_ok ||
      napi_set_named_property(env, exports, "mechanism", mechanism) != napi_ok) {
    napi_throw_error(env, "ERR_NAPI", "parley_peercred: could not build its exports");
    return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
