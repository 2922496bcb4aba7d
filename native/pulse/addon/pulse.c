/*
 * Parley's PulseAudio stream addon: one capture or playback stream, 48 kHz
 * mono s16le, spoken to directly through libpulse's asynchronous API
 * (pa_threaded_mainloop), without PortAudio and ALSA's pulse plugin between.
 *
 * Why (docs/audio.md, "The device path"): through PortAudio → ALSA pulse
 * plugin → PulseAudio, capture frames reached the media thread in a 10 ms
 * saw-tooth (p99 10–12 ms away from the device clock), playout had 5 ms steps,
 * and a PortAudio thread plus the plugin's own mainloop thread woke every
 * 5 ms per stream. Here one mainloop thread per stream does the device I/O:
 * a capture stream hands whole frames to JavaScript as the server delivers
 * them (fragsize), a playback stream asks JavaScript for bytes only when the
 * server wants them (minreq), with the buffer attributes of PulseAudio's own
 * low-latency clients (pa_buffer_attr, PA_STREAM_ADJUST_LATENCY; see
 * https://www.freedesktop.org/wiki/Software/PulseAudio/Documentation/Developer/Clients/LatencyControl/).
 *
 * Plain C N-API (ABI-stable, context-aware: each stream carries its own state,
 * so it loads in worker threads and in Electron alike). Built by
 * scripts/setup.sh or `npm run build:native`.
 *
 * JavaScript API (native/pulse/index.ts wraps it):
 *   open({ capture, device?, name, frameBytes, latencyBytes, periodBytes }, onEvent) → handle
 *     capture: true for a source, false for a sink; device: PulseAudio name or
 *     undefined for the default; frameBytes: capture delivery size;
 *     latencyBytes: playback tlength / capture fragsize; periodBytes: playback minreq.
 *     Throws Error (message from pa_strerror) when the server or device cannot be reached.
 *   onEvent('frame', ArrayBuffer) — capture: exactly frameBytes of audio
 *   onEvent('need')               — playback: the server wants more than the last write() left over; call writable()
 *   onEvent('error', message)     — the stream or the server failed
 *   handle.start(), handle.writable() → bytes, handle.write(buffer) → bytes still wanted,
 *   handle.stats() → { underflows, overflows, latencyUs, targetUs, grantedUs, raises }, handle.close()
 *     (playback only: targetUs, the buffer length asked for now; grantedUs,
 *     the stream queue's part of it the server granted; raises, how many
 *     underflows raised it — see PLAYBACK_GRACE_USEC)
 *   schedRoundRobin(tid, priority) — Linux: sched_setscheduler(2) SCHED_RR |
 *     SCHED_RESET_ON_FORK for thread `tid` (a stream's thread or the media
 *     thread), as `chrt --rr --reset-on-fork` does but without starting a
 *     process: fork() of a daemon this size took 100–140 ms on the calling
 *     thread, the media thread, at every call's start. Throws Error with `code`
 *     EPERM / ESRCH / EINVAL and the reason in words; elsewhere ENOSYS.
 */
#define NAPI_VERSION 8
#ifdef __linux__
#define _GNU_SOURCE /* syscall(SYS_gettid) */
#endif
#include <node_api.h>
#include <pulse/pulseaudio.h>
#include <pulse/rtclock.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <errno.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define RATE 48000
#define CONNECT_TIMEOUT_USEC (3 * PA_USEC_PER_SEC)
/*
 * Capture keeps at most this much audio waiting, in the server (maxlength)
 * and again between this thread and JavaScript (the event queue): after a
 * stall (a stopped process, a suspended laptop, a long pause of the event
 * loop) old microphone audio is dropped instead of being sent seconds late.
 */
#define CAPTURE_BACKLOG_BYTES (RATE * 2 / 10) /* 100 ms */
/* Playback: the most audio one write() may leave waiting for the server's later requests (200 ms). */
#define RING_BYTES (RATE * 2 / 5)
/*
 * A playback buffer that follows the server, as PulseAudio's own alsa-sink
 * does with its wake-up watermark: an underflow that recurs within
 * PLAYBACK_RECUR_USEC of the last one raises the buffer's target length
 * (tlength) by one period, at most PLAYBACK_MAX_RAISE_BYTES above the length
 * asked for (20 + 10 ms by default; Chromium asks PulseAudio for 30 ms), and
 * PLAYBACK_CALM_USEC without a raise lowers it by a period again.
 * A lone underflow does not raise it: a stream that starts or stops elsewhere
 * on the server makes one in every stream at once (measured: both ends of a
 * call at the same second, at each of the bench's recorder starts), and a
 * raise would then keep the added delay for 30 s. Nor do underflows in the
 * first PLAYBACK_GRACE_USEC, the call's start-up work, which more buffer
 * would not hide. Each underflow is a hole of silence mid-word (1–14 ms in
 * `npm run bench` recordings; docs/audio.md, "Speaker underflows").
 */
#define PLAYBACK_GRACE_USEC (1 * PA_USEC_PER_SEC)
#define PLAYBACK_RECUR_USEC (5 * PA_USEC_PER_SEC)
/* Underflows this close to the last are the same stall (measured: a second one 300 ms after an 80 ms stall, as the stream refilled). */
#define PLAYBACK_MERGE_USEC (1 * PA_USEC_PER_SEC)
#define PLAYBACK_MAX_RAISE_BYTES (RATE * 2 / 100) /* 10 ms */
#define PLAYBACK_CALM_USEC (30 * PA_USEC_PER_SEC)

enum { EV_FRAME, EV_NEED, EV_ERROR };

typedef struct {
  int kind;
  uint8_t *data;
  size_t len;
  char message[200];
} Event;

typedef struct {
  pa_threaded_mainloop *ml;
  pa_context *ctx;
  pa_stream *st;
  int capture;
  size_t frame_bytes;
  uint8_t *acc;
  size_t acc_len;
  /*
   * Playback: what JavaScript handed over beyond what the server wanted at
   * that moment (the rest of a frame), served to the server's next requests
   * from this thread without waking JavaScript. Mainloop lock held for any
   * access. Capacity: RING_BYTES.
   */
  uint8_t *ring;
  size_t ring_off, ring_len;
  napi_threadsafe_function tsfn;
  atomic_int closed;
  atomic_int need_pending;
  atomic_uint underflows;
  atomic_uint overflows;
  /* Playback buffer length (mainloop lock held): as asked, now, and the times that move it. */
  uint32_t base_tlength, period_bytes;
  atomic_uint tlength;
  atomic_uint raises;
  pa_usec_t playing_since, last_change, last_underflow;
  int failed_reported; /* mainloop thread only */
  int timed_out;
  int refs; /* JS thread only: the wrap and the tsfn each hold one */
  atomic_int tid; /* the mainloop thread's kernel id (Linux), set from its first callback; 0 until then */
} Stream;

/* Queues an event for JavaScript; 0 when it was dropped (closed, or the capture queue is full). */
static int post(Stream *s, Event *e) {
  if (!s->tsfn || atomic_load(&s->closed) || napi_call_threadsafe_function(s->tsfn, e, napi_tsfn_nonblocking) != napi_ok) {
    if (e->kind == EV_NEED) atomic_store(&s->need_pending, 0);
    free(e->data);
    free(e);
    return 0;
  }
  return 1;
}

static void post_error(Stream *s, const char *message) {
  if (s->failed_reported) return;
  s->failed_reported = 1;
  Event *e = calloc(1, sizeof(Event));
  if (!e) return;
  e->kind = EV_ERROR;
  snprintf(e->message, sizeof(e->message), "%s", message);
  post(s, e);
}

/* ---- mainloop thread callbacks ---- */

/* Notes the kernel id of the stream's mainloop thread, when called on it (a connect calls the state callbacks on the caller's thread first). */
static void note_thread(Stream *s) {
#ifdef __linux__
  if (!atomic_load(&s->tid) && s->ml && pa_threaded_mainloop_in_thread(s->ml)) atomic_store(&s->tid, (int)syscall(SYS_gettid));
#else
  (void)s;
#endif
}

static void context_state_cb(pa_context *c, void *userdata) {
  Stream *s = userdata;
  note_thread(s);
  pa_context_state_t state = pa_context_get_state(c);
  if (state == PA_CONTEXT_READY || state == PA_CONTEXT_FAILED || state == PA_CONTEXT_TERMINATED) {
    if (state != PA_CONTEXT_READY && s->st && !atomic_load(&s->closed)) post_error(s, "the sound server went away");
    pa_threaded_mainloop_signal(s->ml, 0);
  }
}

static void stream_state_cb(pa_stream *st, void *userdata) {
  Stream *s = userdata;
  note_thread(s);
  pa_stream_state_t state = pa_stream_get_state(st);
  if (state == PA_STREAM_READY || state == PA_STREAM_FAILED || state == PA_STREAM_TERMINATED) {
    if (state != PA_STREAM_READY && !atomic_load(&s->closed)) {
      post_error(s, s->capture ? "the microphone disappeared" : "the speaker disappeared");
    }
    pa_threaded_mainloop_signal(s->ml, 0);
  }
}

static void read_cb(pa_stream *st, size_t nbytes, void *userdata) {
  (void)nbytes;
  Stream *s = userdata;
  const void *data;
  size_t n;
  while (pa_stream_readable_size(st) > 0) {
    if (pa_stream_peek(st, &data, &n) < 0 || n == 0) break;
    /* A hole (data == NULL) is audio the server did not have: silence. */
    size_t off = 0;
    while (off < n) {
      size_t room = s->frame_bytes - s->acc_len;
      size_t k = n - off < room ? n - off : room;
      if (data) memcpy(s->acc + s->acc_len, (const uint8_t *)data + off, k);
      else memset(s->acc + s->acc_len, 0, k);
      s->acc_len += k;
      off += k;
      if (s->acc_len == s->frame_bytes) {
        Event *e = calloc(1, sizeof(Event));
        uint8_t *frame = malloc(s->frame_bytes);
        if (e && frame) {
          memcpy(frame, s->acc, s->frame_bytes);
          e->kind = EV_FRAME;
          e->data = frame;
          e->len = s->frame_bytes;
          if (!post(s, e)) atomic_fetch_add(&s->overflows, 1);
        } else {
          free(e);
          free(frame);
        }
        s->acc_len = 0;
      }
    }
    pa_stream_drop(st);
  }
}

/* Playback, mainloop lock held: hands the server what it wants from the ring; the bytes it still wants. */
static size_t serve_from_ring(Stream *s) {
  size_t want = pa_stream_writable_size(s->st);
  if (want == (size_t)-1) return 0;
  if (s->ring_len > 0 && want > 0) {
    size_t k = want < s->ring_len ? want : s->ring_len;
    if (pa_stream_write(s->st, s->ring + s->ring_off, k, NULL, 0, PA_SEEK_RELATIVE) < 0) return 0;
    s->ring_off += k;
    s->ring_len -= k;
    want -= k;
  }
  if (s->ring_len == 0) s->ring_off = 0;
  return want;
}

/* Playback, mainloop thread: asks the server for a buffer of `tlength` bytes (ADJUST_LATENCY splits it between the sink and the stream's queue). */
static void set_tlength(Stream *s, uint32_t tlength, pa_usec_t now) {
  pa_buffer_attr attr = {.maxlength = (uint32_t)-1, .tlength = tlength, .prebuf = (uint32_t)-1, .minreq = s->period_bytes, .fragsize = (uint32_t)-1};
  pa_operation *op = pa_stream_set_buffer_attr(s->st, &attr, NULL, NULL);
  if (!op) return;
  pa_operation_unref(op);
  atomic_store(&s->tlength, tlength);
  s->last_change = now;
}

static void write_cb(pa_stream *st, size_t nbytes, void *userdata) {
  (void)st;
  (void)nbytes;
  Stream *s = userdata;
  pa_usec_t now = pa_rtclock_now();
  uint32_t tlength = atomic_load(&s->tlength);
  if (s->playing_since && tlength > s->base_tlength && now - s->last_change >= PLAYBACK_CALM_USEC) set_tlength(s, tlength - s->period_bytes, now);
  /* The rest of the last frame first; JavaScript is asked only when the server wants more than that. */
  if (serve_from_ring(s) == 0) return;
  /* One pending request at a time: JavaScript asks for the writable size when it runs. */
  if (atomic_exchange(&s->need_pending, 1)) return;
  Event *e = calloc(1, sizeof(Event));
  if (!e) return;
  e->kind = EV_NEED;
  post(s, e);
}

static void underflow_cb(pa_stream *st, void *userdata) {
  (void)st;
  Stream *s = userdata;
  atomic_fetch_add(&s->underflows, 1);
  pa_usec_t now = pa_rtclock_now();
  if (!s->playing_since || now - s->playing_since < PLAYBACK_GRACE_USEC) return;
  if (s->last_underflow && now - s->last_underflow < PLAYBACK_MERGE_USEC) return;
  int recurs = s->last_underflow && now - s->last_underflow < PLAYBACK_RECUR_USEC;
  s->last_underflow = now;
  if (!recurs) return;
  uint32_t tlength = atomic_load(&s->tlength);
  if (tlength + s->period_bytes > s->base_tlength + PLAYBACK_MAX_RAISE_BYTES) {
    s->last_change = now; /* still too short: no lowering for a while */
    return;
  }
  set_tlength(s, tlength + s->period_bytes, now);
  atomic_fetch_add(&s->raises, 1);
}

static void overflow_cb(pa_stream *st, void *userdata) {
  (void)st;
  atomic_fetch_add(&((Stream *)userdata)->overflows, 1);
}

static void timeout_cb(pa_mainloop_api *api, pa_time_event *ev, const struct timeval *tv, void *userdata) {
  (void)tv;
  Stream *s = userdata;
  s->timed_out = 1;
  api->time_free(ev);
  pa_threaded_mainloop_signal(s->ml, 0);
}

/* ---- JS thread ---- */

static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  Stream *s = context;
  Event *e = data;
  if (env && cb && !atomic_load(&s->closed)) {
    napi_value argv[2], undefined;
    napi_get_undefined(env, &undefined);
    argv[1] = undefined;
    if (e->kind == EV_FRAME) {
      void *buf;
      napi_create_string_utf8(env, "frame", NAPI_AUTO_LENGTH, &argv[0]);
      if (napi_create_arraybuffer(env, e->len, &buf, &argv[1]) == napi_ok) memcpy(buf, e->data, e->len);
    } else if (e->kind == EV_NEED) {
      atomic_store(&s->need_pending, 0);
      napi_create_string_utf8(env, "need", NAPI_AUTO_LENGTH, &argv[0]);
    } else {
      napi_create_string_utf8(env, "error", NAPI_AUTO_LENGTH, &argv[0]);
      napi_create_string_utf8(env, e->message, NAPI_AUTO_LENGTH, &argv[1]);
    }
    napi_call_function(env, undefined, cb, 2, argv, NULL);
  }
  free(e->data);
  free(e);
}

static void stream_free(Stream *s) {
  if (--s->refs > 0) return;
  free(s->acc);
  free(s->ring);
  free(s);
}

/* Tears the connection down; idempotent; JS thread only (never from the mainloop thread). */
static void stream_shutdown(Stream *s) {
  if (!s->ml) return;
  atomic_store(&s->closed, 1);
  pa_threaded_mainloop_lock(s->ml);
  if (s->st) {
    pa_stream_set_state_callback(s->st, NULL, NULL);
    pa_stream_set_read_callback(s->st, NULL, NULL);
    pa_stream_set_write_callback(s->st, NULL, NULL);
    pa_stream_disconnect(s->st);
    pa_stream_unref(s->st);
    s->st = NULL;
  }
  if (s->ctx) {
    pa_context_set_state_callback(s->ctx, NULL, NULL);
    pa_context_disconnect(s->ctx);
    pa_context_unref(s->ctx);
    s->ctx = NULL;
  }
  pa_threaded_mainloop_unlock(s->ml);
  pa_threaded_mainloop_stop(s->ml);
  pa_threaded_mainloop_free(s->ml);
  s->ml = NULL;
}

static void tsfn_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  stream_free(data);
}

static void wrap_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Stream *s = data;
  if (s->ml) {
    stream_shutdown(s);
    napi_release_threadsafe_function(s->tsfn, napi_tsfn_abort);
  }
  stream_free(s);
}

static napi_value throw_error(napi_env env, const char *message) {
  napi_throw_error(env, NULL, message);
  return NULL;
}

static Stream *unwrap_this(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value self;
  Stream *s = NULL;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok) return NULL;
  if (napi_unwrap(env, self, (void **)&s) != napi_ok) return NULL;
  return s;
}

static int get_uint32(napi_env env, napi_value obj, const char *key, uint32_t *out) {
  napi_value v;
  return napi_get_named_property(env, obj, key, &v) == napi_ok && napi_get_value_uint32(env, v, out) == napi_ok;
}

/* Waits (mainloop locked) until `ready()` says the connect finished; 1 = ready, 0 = failed or timed out. */
static int wait_connected(Stream *s, int is_stream) {
  pa_mainloop_api *api = pa_threaded_mainloop_get_api(s->ml);
  struct timeval tv;
  pa_time_event *timer = api->time_new(api, pa_timeval_add(pa_gettimeofday(&tv), CONNECT_TIMEOUT_USEC), timeout_cb, s);
  int ok = 0;
  for (;;) {
    if (s->timed_out) break;
    if (is_stream) {
      pa_stream_state_t st = pa_stream_get_state(s->st);
      if (st == PA_STREAM_READY) { ok = 1; break; }
      if (st == PA_STREAM_FAILED || st == PA_STREAM_TERMINATED) break;
    } else {
      pa_context_state_t st = pa_context_get_state(s->ctx);
      if (st == PA_CONTEXT_READY) { ok = 1; break; }
      if (st == PA_CONTEXT_FAILED || st == PA_CONTEXT_TERMINATED) break;
    }
    pa_threaded_mainloop_wait(s->ml);
  }
  if (!s->timed_out) api->time_free(timer);
  return ok;
}

static napi_value Start(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  Stream *s = unwrap_this(env, info, &argc, NULL);
  if (!s || !s->ml) return throw_error(env, "the stream is closed");
  pa_threaded_mainloop_lock(s->ml);
  pa_operation *op = s->st ? pa_stream_cork(s->st, 0, NULL, NULL) : NULL;
  if (op) pa_operation_unref(op);
  s->playing_since = s->last_change = pa_rtclock_now();
  /* A playback stream asks for its first buffer now. */
  if (!s->capture && s->st && pa_stream_writable_size(s->st) > 0) {
    atomic_store(&s->need_pending, 0);
    write_cb(s->st, 0, s);
  }
  pa_threaded_mainloop_unlock(s->ml);
  return NULL;
}

static napi_value Writable(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  Stream *s = unwrap_this(env, info, &argc, NULL);
  napi_value out;
  size_t n = 0;
  if (s && s->ml && s->st) {
    pa_threaded_mainloop_lock(s->ml);
    n = s->capture ? 0 : serve_from_ring(s);
    pa_threaded_mainloop_unlock(s->ml);
  }
  napi_create_uint32(env, (uint32_t)n, &out);
  return out;
}

static napi_value Write(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  Stream *s = unwrap_this(env, info, &argc, argv);
  if (!s || !s->ml || !s->st) return throw_error(env, "the stream is closed");
  void *data;
  size_t len;
  napi_typedarray_type type;
  bool is_typedarray = false;
  if (argc < 1 || napi_is_typedarray(env, argv[0], &is_typedarray) != napi_ok || !is_typedarray ||
      napi_get_typedarray_info(env, argv[0], &type, &len, &data, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    return throw_error(env, "write: expected a Uint8Array (or Buffer) of s16le samples");
  }
  pa_threaded_mainloop_lock(s->ml);
  if (pa_stream_get_state(s->st) != PA_STREAM_READY) {
    pa_threaded_mainloop_unlock(s->ml);
    return throw_error(env, "the speaker stream has stopped (the device or the sound server went away)");
  }
  /* What the server wants now goes to it at once (after anything older); the rest waits in the ring for its next requests. */
  size_t want = serve_from_ring(s);
  int r = 0;
  size_t now = s->ring_len == 0 ? (len < want ? len : want) : 0;
  if (now > 0) r = pa_stream_write(s->st, data, now, NULL, 0, PA_SEEK_RELATIVE);
  if (r == 0 && len > now) {
    if (s->ring_off + s->ring_len + (len - now) > RING_BYTES) {
      memmove(s->ring, s->ring + s->ring_off, s->ring_len);
      s->ring_off = 0;
    }
    if (s->ring_len + (len - now) > RING_BYTES) {
      pa_threaded_mainloop_unlock(s->ml);
      return throw_error(env, "write: more than 200 ms of audio waiting for the speaker");
    }
    memcpy(s->ring + s->ring_off + s->ring_len, (const uint8_t *)data + now, len - now);
    s->ring_len += len - now;
  }
  size_t still = r == 0 && want > now ? want - now : 0;
  pa_threaded_mainloop_unlock(s->ml);
  if (r < 0) return throw_error(env, pa_strerror(pa_context_errno(s->ctx)));
  napi_value out;
  napi_create_uint32(env, (uint32_t)still, &out);
  return out;
}

static napi_value Stats(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  Stream *s = unwrap_this(env, info, &argc, NULL);
  napi_value out, v;
  napi_create_object(env, &out);
  if (!s) return out;
  napi_create_uint32(env, atomic_load(&s->underflows), &v);
  napi_set_named_property(env, out, "underflows", v);
  napi_create_uint32(env, atomic_load(&s->overflows), &v);
  napi_set_named_property(env, out, "overflows", v);
  if (!s->capture) {
    napi_create_double(env, (double)atomic_load(&s->tlength) * 1e6 / (RATE * 2), &v);
    napi_set_named_property(env, out, "targetUs", v);
    napi_create_uint32(env, atomic_load(&s->raises), &v);
    napi_set_named_property(env, out, "raises", v);
  }
  if (s->ml && s->st) {
    pa_usec_t usec = 0;
    int negative = 0;
    pa_threaded_mainloop_lock(s->ml);
    int r = pa_stream_get_latency(s->st, &usec, &negative);
    const pa_buffer_attr *granted = s->capture ? NULL : pa_stream_get_buffer_attr(s->st);
    double granted_us = granted ? (double)granted->tlength * 1e6 / (RATE * 2) : -1;
    pa_threaded_mainloop_unlock(s->ml);
    if (granted_us >= 0) {
      napi_create_double(env, granted_us, &v);
      napi_set_named_property(env, out, "grantedUs", v);
    }
    if (r == 0) {
      napi_create_double(env, negative ? -(double)usec : (double)usec, &v);
      napi_set_named_property(env, out, "latencyUs", v);
    }
  }
  return out;
}

/* The kernel id of the stream's mainloop thread (Linux; 0 elsewhere or when unknown). */
static napi_value ThreadId(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  Stream *s = unwrap_this(env, info, &argc, NULL);
  napi_value v;
  napi_create_int32(env, s ? atomic_load(&s->tid) : 0, &v);
  return v;
}

static napi_value Close(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  Stream *s = unwrap_this(env, info, &argc, NULL);
  if (s && s->ml) {
    stream_shutdown(s);
    napi_release_threadsafe_function(s->tsfn, napi_tsfn_abort);
  }
  return NULL;
}

static napi_value Open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    return throw_error(env, "open(options, onEvent): two arguments expected");
  }
  napi_value v;
  bool capture = false;
  if (napi_get_named_property(env, argv[0], "capture", &v) != napi_ok || napi_get_value_bool(env, v, &capture) != napi_ok) {
    return throw_error(env, "open: options.capture must be a boolean");
  }
  uint32_t frame_bytes = 0, latency_bytes = 0, period_bytes = 0;
  if (!get_uint32(env, argv[0], "frameBytes", &frame_bytes) || !get_uint32(env, argv[0], "latencyBytes", &latency_bytes) ||
      !get_uint32(env, argv[0], "periodBytes", &period_bytes) || frame_bytes == 0 || frame_bytes % 2 || latency_bytes == 0 ||
      period_bytes == 0) {
    return throw_error(env, "open: frameBytes, latencyBytes and periodBytes must be positive whole numbers of samples");
  }
  char device[256] = {0}, name[128] = "Parley";
  napi_valuetype t;
  if (napi_get_named_property(env, argv[0], "device", &v) == napi_ok && napi_typeof(env, v, &t) == napi_ok && t == napi_string) {
    napi_get_value_string_utf8(env, v, device, sizeof(device), NULL);
  }
  if (napi_get_named_property(env, argv[0], "name", &v) == napi_ok && napi_typeof(env, v, &t) == napi_ok && t == napi_string) {
    napi_get_value_string_utf8(env, v, name, sizeof(name), NULL);
  }

  Stream *s = calloc(1, sizeof(Stream));
  if (!s) return throw_error(env, "out of memory");
  s->capture = capture;
  s->frame_bytes = frame_bytes;
  s->acc = malloc(frame_bytes);
  s->ring = capture ? NULL : malloc(RING_BYTES);
  s->refs = 1;
  if (!s->acc || (!capture && !s->ring)) {
    free(s->acc);
    free(s->ring);
    free(s);
    return throw_error(env, "out of memory");
  }
  char message[300];
  s->ml = pa_threaded_mainloop_new();
  if (!s->ml) {
    stream_free(s);
    return throw_error(env, "could not create the PulseAudio mainloop");
  }
  pa_threaded_mainloop_set_name(s->ml, capture ? "parley-pa-in" : "parley-pa-out");
  s->ctx = pa_context_new(pa_threaded_mainloop_get_api(s->ml), "Parley");
  pa_context_set_state_callback(s->ctx, context_state_cb, s);
  pa_threaded_mainloop_lock(s->ml);
  if (pa_threaded_mainloop_start(s->ml) < 0) {
    pa_threaded_mainloop_unlock(s->ml);
    stream_shutdown(s);
    stream_free(s);
    return throw_error(env, "could not start the PulseAudio mainloop thread");
  }
  if (pa_context_connect(s->ctx, NULL, PA_CONTEXT_NOAUTOSPAWN, NULL) < 0 || !wait_connected(s, 0)) {
    snprintf(message, sizeof(message), "cannot reach the sound server (PulseAudio or PipeWire): %s",
             s->timed_out ? "no answer within 3 s" : pa_strerror(pa_context_errno(s->ctx)));
    pa_threaded_mainloop_unlock(s->ml);
    stream_shutdown(s);
    stream_free(s);
    return throw_error(env, message);
  }
  pa_sample_spec spec = {.format = PA_SAMPLE_S16LE, .rate = RATE, .channels = 1};
  s->st = pa_stream_new(s->ctx, name, &spec, NULL);
  if (!s->st) {
    snprintf(message, sizeof(message), "%s", pa_strerror(pa_context_errno(s->ctx)));
    pa_threaded_mainloop_unlock(s->ml);
    stream_shutdown(s);
    stream_free(s);
    return throw_error(env, message);
  }
  pa_stream_set_state_callback(s->st, stream_state_cb, s);
  pa_buffer_attr attr;
  attr.maxlength = (uint32_t)-1;
  attr.prebuf = (uint32_t)-1;
  int r;
  pa_stream_flags_t flags = PA_STREAM_ADJUST_LATENCY | PA_STREAM_START_CORKED | PA_STREAM_AUTO_TIMING_UPDATE | PA_STREAM_INTERPOLATE_TIMING;
  if (capture) {
    attr.fragsize = latency_bytes;
    attr.maxlength = CAPTURE_BACKLOG_BYTES > latency_bytes ? CAPTURE_BACKLOG_BYTES : latency_bytes;
    attr.tlength = attr.minreq = (uint32_t)-1;
    pa_stream_set_read_callback(s->st, read_cb, s);
    pa_stream_set_overflow_callback(s->st, overflow_cb, s);
    r = pa_stream_connect_record(s->st, device[0] ? device : NULL, &attr, flags);
  } else {
    attr.fragsize = (uint32_t)-1;
    attr.tlength = latency_bytes;
    attr.minreq = period_bytes;
    s->base_tlength = latency_bytes;
    s->period_bytes = period_bytes;
    atomic_store(&s->tlength, latency_bytes);
    pa_stream_set_write_callback(s->st, write_cb, s);
    pa_stream_set_underflow_callback(s->st, underflow_cb, s);
    r = pa_stream_connect_playback(s->st, device[0] ? device : NULL, &attr, flags, NULL, NULL);
  }
  if (r < 0 || !wait_connected(s, 1)) {
    int err = pa_context_errno(s->ctx);
    snprintf(message, sizeof(message), "%s", s->timed_out ? "no answer from the sound server within 3 s" : pa_strerror(err));
    pa_threaded_mainloop_unlock(s->ml);
    stream_shutdown(s);
    stream_free(s);
    napi_value error, msg, code;
    napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &error);
    napi_create_string_utf8(env, err == PA_ERR_NOENTITY ? "ENOENT" : "EPULSE", NAPI_AUTO_LENGTH, &code);
    napi_set_named_property(env, error, "code", code);
    napi_throw(env, error);
    return NULL;
  }
  pa_threaded_mainloop_unlock(s->ml);

  napi_value resource_name, handle;
  napi_create_string_utf8(env, "parley-pulse-stream", NAPI_AUTO_LENGTH, &resource_name);
  s->refs = 2;
  /* Capture: a bounded queue (frames beyond it are dropped and counted as overflows); playback posts one request at a time. */
  size_t max_queue = capture ? (CAPTURE_BACKLOG_BYTES / frame_bytes > 2 ? CAPTURE_BACKLOG_BYTES / frame_bytes : 2) + 1 : 0;
  if (napi_create_threadsafe_function(env, argv[1], NULL, resource_name, max_queue, 1, s, tsfn_finalize, s, call_js, &s->tsfn) != napi_ok) {
    s->refs = 1;
    stream_shutdown(s);
    stream_free(s);
    return throw_error(env, "could not create the event channel");
  }
  /* An open stream keeps the event loop alive, as a device stream should; close() releases it. */
  napi_create_object(env, &handle);
  napi_property_descriptor methods[] = {
      {"start", NULL, Start, NULL, NULL, NULL, napi_default, NULL},
      {"writable", NULL, Writable, NULL, NULL, NULL, napi_default, NULL},
      {"write", NULL, Write, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, Stats, NULL, NULL, NULL, napi_default, NULL},
      {"threadId", NULL, ThreadId, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, Close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, handle, sizeof(methods) / sizeof(methods[0]), methods);
  napi_wrap(env, handle, s, wrap_finalize, NULL, NULL);
  return handle;
}

static napi_value SchedRoundRobin(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t tid = 0, priority = 0;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &tid) != napi_ok || napi_get_value_int32(env, argv[1], &priority) != napi_ok || tid <= 0) {
    napi_throw_type_error(env, NULL, "schedRoundRobin(tid, priority): a thread id and a priority, whole numbers");
    return NULL;
  }
#ifdef __linux__
  struct sched_param param;
  memset(&param, 0, sizeof param);
  param.sched_priority = priority;
  if (sched_setscheduler((pid_t)tid, SCHED_RR | SCHED_RESET_ON_FORK, &param) != 0) {
    int err = errno;
    char message[160];
    snprintf(message, sizeof message, "sched_setscheduler(SCHED_RR %d) for thread %d: %s", priority, tid, strerror(err));
    napi_throw_error(env, err == EPERM ? "EPERM" : err == ESRCH ? "ESRCH" : err == EINVAL ? "EINVAL" : "ESCHED", message);
    return NULL;
  }
  return NULL;
#else
  napi_throw_error(env, "ENOSYS", "real-time scheduling by thread id is only done on Linux");
  return NULL;
#endif
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "schedRoundRobin", NAPI_AUTO_LENGTH, SchedRoundRobin, NULL, &fn);
  napi_set_named_property(env, exports, "schedRoundRobin", fn);
  napi_create_function(env, "open", NAPI_AUTO_LENGTH, Open, NULL, &fn);
  napi_set_named_property(env, exports, "open", fn);
  napi_value version;
  napi_create_string_utf8(env, pa_get_library_version(), NAPI_AUTO_LENGTH, &version);
  napi_set_named_property(env, exports, "libraryVersion", version);
  return exports;
}
