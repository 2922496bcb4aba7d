/*
 * Parley's Opus decoder: a small N-API addon over the system libopus, for what
 * @discordjs/opus cannot do — conceal exactly one lost frame (PLC) and decode
 * the in-band FEC (LBRR, RFC 6716 §2.1.7) of the packet after a loss.
 *
 * Plain C N-API (node_api.h): ABI-stable, so one build loads in Node and in
 * Electron. JS shape (wrapped and documented by native/opus/index.ts):
 *
 *   const { Decoder, version, libopusHasLbrr } = require('parley_opus.node');
 *   const d = new Decoder(48000, 1);
 *   d.decode(packet)             -> Int16Array  (opus_decode, decode_fec = 0)
 *   d.conceal(samples)           -> Int16Array  (opus_decode(NULL, 0), PLC)
 *   d.decodeFec(next, samples)   -> Int16Array  (opus_decode, decode_fec = 1)
 *   d.packetSamples(packet)      -> number      (opus_packet_get_nb_samples)
 *   d.packetHasFec(packet)       -> boolean     (LBRR flag of the first frame)
 *   d.reset()                                   (OPUS_RESET_STATE)
 *
 * Samples are counted per channel; PCM is interleaved signed 16-bit.
 * libopus failures throw an Error whose message ends with opus_strerror()'s
 * text and whose `code` is the OPUS_* name (e.g. "OPUS_INVALID_PACKET").
 * Bad arguments throw TypeError / RangeError. The finalizer destroys the
 * libopus decoder when the JS object is collected.
 */
#include <node_api.h>
#include <opus/opus.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest duration libopus decodes in one call (RFC 6716 §3.2.5: 120 ms). */
#define MAX_FRAME_MS 120

typedef struct {
  OpusDecoder *dec;
  opus_int32 rate;     /* Hz */
  int channels;        /* 1 or 2 */
  int max_samples;     /* per channel: 120 ms at `rate` */
  opus_int16 *pcm;     /* scratch, max_samples * channels */
} Decoder;

/* Tags our wrapped objects, so a method called on a foreign `this` throws. */
static const napi_type_tag DECODER_TAG = {0x7061726c65796f70ULL, 0x75736465636f6465ULL};

#define CHECK(call)                                                  \
  do {                                                               \
    if ((call) != napi_ok) {                                         \
      napi_throw_error(env, "ERR_NAPI", "N-API call failed: " #call); \
      return NULL;                                                   \
    }                                                                \
  } while (0)

static const char *opus_error_code(int err) {
  switch (err) {
    case OPUS_BAD_ARG: return "OPUS_BAD_ARG";
    case OPUS_BUFFER_TOO_SMALL: return "OPUS_BUFFER_TOO_SMALL";
    case OPUS_INTERNAL_ERROR: return "OPUS_INTERNAL_ERROR";
    case OPUS_INVALID_PACKET: return "OPUS_INVALID_PACKET";
    case OPUS_UNIMPLEMENTED: return "OPUS_UNIMPLEMENTED";
    case OPUS_INVALID_STATE: return "OPUS_INVALID_STATE";
    case OPUS_ALLOC_FAIL: return "OPUS_ALLOC_FAIL";
    default: return "OPUS_ERROR";
  }
}

/* Throws Error("<context>: <opus_strerror(err)>") with code OPUS_* and opusError = err. */
static napi_value throw_opus(napi_env env, const char *context, int err) {
  char message[256];
  napi_value msg, code, error, num;
  snprintf(message, sizeof message, "%s: %s", context, opus_strerror(err));
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok ||
      napi_create_string_utf8(env, opus_error_code(err), NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_error(env, code, msg, &error) != napi_ok ||
      napi_create_int32(env, err, &num) != napi_ok ||
      napi_set_named_property(env, error, "opusError", num) != napi_ok) {
    napi_throw_error(env, opus_error_code(err), message);
    return NULL;
  }
  napi_throw(env, error);
  return NULL;
}

/* The decoder wrapped by `this`, or NULL with a TypeError pending. */
static Decoder *this_decoder(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value self;
  bool tagged = false;
  void *data = NULL;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok ||
      napi_check_object_type_tag(env, self, &DECODER_TAG, &tagged) != napi_ok || !tagged ||
      napi_unwrap(env, self, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_THIS", "not an Opus decoder");
    return NULL;
  }
  return (Decoder *)data;
}

/* Bytes of a Uint8Array (Buffer included). Returns false with a TypeError pending. */
static bool packet_bytes(napi_env env, napi_value value, const unsigned char **data, opus_int32 *len) {
  bool is_typed = false;
  napi_typedarray_type type;
  size_t length = 0, offset = 0;
  void *bytes = NULL;
  napi_value buffer;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, value, &type, &length, &bytes, &buffer, &offset) != napi_ok ||
      type != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "Opus packet must be a Buffer or Uint8Array");
    return false;
  }
  if (length > 0x7fffffff) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "Opus packet is too long");
    return false;
  }
  *data = (const unsigned char *)bytes;
  *len = (opus_int32)length;
  return true;
}

static bool nonempty_packet(napi_env env, napi_value value, const unsigned char **data, opus_int32 *len) {
  if (!packet_bytes(env, value, data, len)) return false;
  if (*len == 0) {
    napi_throw_range_error(env, "ERR_OPUS_EMPTY_PACKET",
                           "Opus packet is empty (conceal a lost packet with conceal(samples))");
    return false;
  }
  return true;
}

/*
 * A frame size for PLC / FEC: an integer number of samples per channel, a
 * multiple of 2.5 ms (libopus requires it, opus_decoder.c) and at most 120 ms.
 * Returns -1 with a RangeError pending otherwise.
 */
static int frame_size_arg(napi_env env, const Decoder *d, napi_value value) {
  double samples;
  int step = d->rate / 400;
  char message[200];
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_number ||
      napi_get_value_double(env, value, &samples) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "Opus frame size must be a number of samples");
    return -1;
  }
  if (!(samples >= step && samples <= d->max_samples) || samples != (double)(int)samples ||
      ((int)samples) % step != 0) {
    snprintf(message, sizeof message,
             "Opus frame size must be a multiple of %d samples (2.5 ms at %d Hz) from %d to %d, got %.17g",
             step, (int)d->rate, step, d->max_samples, samples);
    napi_throw_range_error(env, "ERR_OPUS_FRAME_SIZE", message);
    return -1;
  }
  return (int)samples;
}

/* A fresh Int16Array holding `samples` samples per channel of d->pcm. */
static napi_value pcm_result(napi_env env, const Decoder *d, int samples) {
  size_t count = (size_t)samples * (size_t)d->channels;
  void *data = NULL;
  napi_value buffer, array;
  CHECK(napi_create_arraybuffer(env, count * sizeof(opus_int16), &data, &buffer));
  if (count > 0) memcpy(data, d->pcm, count * sizeof(opus_int16));
  CHECK(napi_create_typedarray(env, napi_int16_array, count, buffer, 0, &array));
  return array;
}

/* decode(packet): the packet's PCM, exactly its duration (opus_decode, decode_fec = 0). */
static napi_value Decode(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1] = {NULL};
  const unsigned char *data;
  opus_int32 len;
  int n;
  Decoder *d = this_decoder(env, info, &argc, argv);
  if (d == NULL || !nonempty_packet(env, argv[0], &data, &len)) return NULL;
  n = opus_decode(d->dec, data, len, d->pcm, d->max_samples, 0);
  if (n < 0) return throw_opus(env, "Opus packet could not be decoded", n);
  return pcm_result(env, d, n);
}

/* conceal(samples): packet loss concealment for exactly `samples` per channel. */
static napi_value Conceal(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1] = {NULL};
  int samples, n;
  Decoder *d = this_decoder(env, info, &argc, argv);
  if (d == NULL) return NULL;
  samples = frame_size_arg(env, d, argv[0]);
  if (samples < 0) return NULL;
  n = opus_decode(d->dec, NULL, 0, d->pcm, samples, 0);
  if (n < 0) return throw_opus(env, "Opus concealment failed", n);
  return pcm_result(env, d, n);
}

/*
 * decodeFec(nextPacket, samples): the lost frame before `nextPacket`, from its
 * LBRR data (decode_fec = 1). libopus conceals instead (PLC) when the packet
 * has no LBRR, is CELT-only, or `samples` is shorter than its frame; when
 * `samples` is longer, the extra leading part is concealed.
 */
static napi_value DecodeFec(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2] = {NULL, NULL};
  const unsigned char *data;
  opus_int32 len;
  int samples, n;
  Decoder *d = this_decoder(env, info, &argc, argv);
  if (d == NULL || !nonempty_packet(env, argv[0], &data, &len)) return NULL;
  samples = frame_size_arg(env, d, argv[1]);
  if (samples < 0) return NULL;
  n = opus_decode(d->dec, data, len, d->pcm, samples, 1);
  if (n < 0) return throw_opus(env, "Opus FEC could not be decoded", n);
  return pcm_result(env, d, n);
}

/* packetSamples(packet): samples per channel at the decoder's rate. */
static napi_value PacketSamples(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1] = {NULL}, result;
  const unsigned char *data;
  opus_int32 len;
  int n;
  Decoder *d = this_decoder(env, info, &argc, argv);
  if (d == NULL || !nonempty_packet(env, argv[0], &data, &len)) return NULL;
  n = opus_packet_get_nb_samples(data, len, d->rate);
  if (n < 0) return throw_opus(env, "Opus packet could not be parsed", n);
  CHECK(napi_create_int32(env, n, &result));
  return result;
}

/*
 * Whether the first Opus frame of `packet` carries LBRR (FEC) data: 1, 0, or
 * a negative OPUS_* error. The same algorithm as libopus 1.5's
 * opus_packet_has_lbrr(), for libopus versions without it: CELT-only frames
 * (TOC config ≥ 16, RFC 6716 §3.1) have none; in SILK and hybrid frames the
 * range-coded data opens with, per channel, one VAD flag per 20 ms SILK frame
 * then the LBRR flag (§4.2.3, §4.2.4), each coded with probability 1/2 — so,
 * at the very start of the range coder, they are the first byte's top bits.
 */
static int packet_has_lbrr(const unsigned char *packet, opus_int32 len) {
#ifdef HAVE_OPUS_PACKET_HAS_LBRR
  return opus_packet_has_lbrr(packet, len);
#else
  const unsigned char *frames[48];
  opus_int16 size[48];
  int frame_samples, silk_frames = 1, count, lbrr;
  if ((packet[0] >> 3) >= 16) return 0; /* CELT-only */
  frame_samples = opus_packet_get_samples_per_frame(packet, 48000);
  if (frame_samples > 960) silk_frames = frame_samples / 960; /* 40 ms: 2, 60 ms: 3 */
  count = opus_packet_parse(packet, len, NULL, frames, size, NULL);
  if (count <= 0) return count;
  if (size[0] == 0) return 0; /* an empty frame (DTX / lost) carries nothing */
  lbrr = (frames[0][0] >> (7 - silk_frames)) & 1;
  if (opus_packet_get_nb_channels(packet) == 2) lbrr |= (frames[0][0] >> (6 - 2 * silk_frames)) & 1;
  return lbrr;
#endif
}

static napi_value PacketHasFec(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1] = {NULL}, result;
  const unsigned char *data;
  opus_int32 len;
  int has;
  Decoder *d = this_decoder(env, info, &argc, argv);
  if (d == NULL || !nonempty_packet(env, argv[0], &data, &len)) return NULL;
  has = packet_has_lbrr(data, len);
  if (has < 0) return throw_opus(env, "Opus packet could not be parsed", has);
  CHECK(napi_get_boolean(env, has > 0, &result));
  return result;
}

/* reset(): back to the state of a fresh decoder (OPUS_RESET_STATE), e.g. on a new SSRC. */
static napi_value Reset(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  int err;
  Decoder *d = this_decoder(env, info, &argc, NULL);
  if (d == NULL) return NULL;
  err = opus_decoder_ctl(d->dec, OPUS_RESET_STATE);
  if (err != OPUS_OK) return throw_opus(env, "Opus decoder could not be reset", err);
  return NULL;
}

static void finalize_decoder(napi_env env, void *data, void *hint) {
  Decoder *d = (Decoder *)data;
  (void)env;
  (void)hint;
  if (d == NULL) return;
  if (d->dec) opus_decoder_destroy(d->dec);
  free(d->pcm);
  free(d);
}

/* new Decoder(sampleRate = 48000, channels = 1) */
static napi_value Construct(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2] = {NULL, NULL}, self, target;
  int32_t rate = 48000, channels = 1;
  int err = OPUS_OK;
  napi_valuetype type;
  Decoder *d;
  CHECK(napi_get_new_target(env, info, &target));
  if (target == NULL) {
    napi_throw_type_error(env, "ERR_CONSTRUCT_CALL_REQUIRED", "Decoder must be called with new");
    return NULL;
  }
  CHECK(napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  if (argc > 0 && napi_typeof(env, argv[0], &type) == napi_ok && type != napi_undefined &&
      (type != napi_number || napi_get_value_int32(env, argv[0], &rate) != napi_ok)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "Opus sample rate must be a number (Hz)");
    return NULL;
  }
  if (argc > 1 && napi_typeof(env, argv[1], &type) == napi_ok && type != napi_undefined &&
      (type != napi_number || napi_get_value_int32(env, argv[1], &channels) != napi_ok)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "Opus channels must be a number");
    return NULL;
  }
  if (rate != 8000 && rate != 12000 && rate != 16000 && rate != 24000 && rate != 48000) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                           "Opus sample rate must be 8000, 12000, 16000, 24000 or 48000 Hz");
    return NULL;
  }
  if (channels != 1 && channels != 2) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "Opus channels must be 1 or 2");
    return NULL;
  }
  d = (Decoder *)calloc(1, sizeof *d);
  if (d == NULL) return throw_opus(env, "Opus decoder could not be created", OPUS_ALLOC_FAIL);
  d->rate = rate;
  d->channels = channels;
  d->max_samples = rate / 1000 * MAX_FRAME_MS;
  d->pcm = (opus_int16 *)calloc((size_t)d->max_samples * (size_t)channels, sizeof(opus_int16));
  d->dec = opus_decoder_create(rate, channels, &err);
  if (d->pcm == NULL || d->dec == NULL || err != OPUS_OK) {
    finalize_decoder(env, d, NULL);
    return throw_opus(env, "Opus decoder could not be created", err != OPUS_OK ? err : OPUS_ALLOC_FAIL);
  }
  if (napi_wrap(env, self, d, finalize_decoder, NULL, NULL) != napi_ok) {
    finalize_decoder(env, d, NULL);
    napi_throw_error(env, "ERR_NAPI", "Opus decoder could not be wrapped");
    return NULL;
  }
  CHECK(napi_type_tag_object(env, self, &DECODER_TAG));
  return self;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value cls, version, has_lbrr;
  napi_property_descriptor methods[] = {
      {"decode", NULL, Decode, NULL, NULL, NULL, napi_default_method, NULL},
      {"conceal", NULL, Conceal, NULL, NULL, NULL, napi_default_method, NULL},
      {"decodeFec", NULL, DecodeFec, NULL, NULL, NULL, napi_default_method, NULL},
      {"packetSamples", NULL, PacketSamples, NULL, NULL, NULL, napi_default_method, NULL},
      {"packetHasFec", NULL, PacketHasFec, NULL, NULL, NULL, napi_default_method, NULL},
      {"reset", NULL, Reset, NULL, NULL, NULL, napi_default_method, NULL},
  };
  CHECK(napi_define_class(env, "Decoder", NAPI_AUTO_LENGTH, Construct, NULL,
                          sizeof methods / sizeof methods[0], methods, &cls));
  CHECK(napi_set_named_property(env, exports, "Decoder", cls));
  CHECK(napi_create_string_utf8(env, opus_get_version_string(), NAPI_AUTO_LENGTH, &version));
  CHECK(napi_set_named_property(env, exports, "version", version));
#ifdef HAVE_OPUS_PACKET_HAS_LBRR
  CHECK(napi_get_boolean(env, true, &has_lbrr));
#else
  CHECK(napi_get_boolean(env, false, &has_lbrr));
#endif
  CHECK(napi_set_named_property(env, exports, "libopusHasLbrr", has_lbrr));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
