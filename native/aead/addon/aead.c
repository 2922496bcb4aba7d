/*
 * AEAD_AES_128_GCM and AEAD_AES_256_GCM (RFC 5116 §5.1–5.2; NIST SP 800-38D)
 * with a 96-bit IV and a 128-bit tag, for per-packet sealing: SRTP (RFC 7714)
 * and SFrame's GCM suites (RFC 9605 §4.5). One OpenSSL EVP context per key and
 * direction, keyed once; each packet only sets its IV (EVP_*Init_ex with no
 * cipher and no key keeps both), so no algorithm fetch or key schedule per
 * packet (main/media/aes-gcm.ts says why that matters).
 *
 * JavaScript API (native/aead/index.ts wraps it):
 *   new Gcm(key)        key: Uint8Array of 16 or 32 bytes; throws RangeError otherwise
 *   gcm.seal(out, offset, iv, aad, plaintext)
 *       writes ciphertext ‖ tag (16 bytes) into out from offset; returns undefined.
 *       Throws RangeError for an IV that is not 12 bytes or an out too short.
 *   gcm.open(out, offset, iv, aad, ciphertext, tag) → boolean
 *       checks the tag over aad and ciphertext; only when it matches writes the
 *       plaintext into out from offset and returns true; false (out untouched)
 *       when it does not. Throws RangeError for a bad IV or tag length or an
 *       out too short.
 * All buffers are Uint8Arrays (views allowed); `out` may not overlap the inputs.
 * Contexts are freed with the JavaScript object (napi_wrap finalizer).
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IV_BYTES 12
#define TAG_BYTES 16

typedef struct {
  EVP_CIPHER_CTX *enc;
  EVP_CIPHER_CTX *dec;
  /* Where open() decrypts before the tag is known good: out is written only then. */
  uint8_t *scratch;
  size_t scratch_len;
} Gcm;

static void gcm_free(Gcm *g) {
  if (!g) return;
  if (g->enc) EVP_CIPHER_CTX_free(g->enc);
  if (g->dec) EVP_CIPHER_CTX_free(g->dec);
  if (g->scratch) OPENSSL_cleanse(g->scratch, g->scratch_len);
  free(g->scratch);
  free(g);
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  gcm_free(data);
}

static napi_value throw_range(napi_env env, const char *message) {
  napi_throw_range_error(env, NULL, message);
  return NULL;
}

static napi_value throw_error(napi_env env, const char *message) {
  napi_throw_error(env, "EAEAD", message);
  return NULL;
}

/* A Uint8Array argument's bytes; 0 when it is not one (an exception is pending then). */
static int bytes_of(napi_env env, napi_value v, uint8_t **data, size_t *len, const char *what) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) {
    char m[96];
    snprintf(m, sizeof(m), "AES-GCM: %s must be a Uint8Array", what);
    napi_throw_type_error(env, NULL, m);
    return 0;
  }
  napi_typedarray_type type;
  void *p;
  if (napi_get_typedarray_info(env, v, &type, len, &p, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    char m[96];
    snprintf(m, sizeof(m), "AES-GCM: %s must be a Uint8Array", what);
    napi_throw_type_error(env, NULL, m);
    return 0;
  }
  *data = p;
  return 1;
}

static Gcm *unwrap(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  napi_value self;
  if (napi_get_cb_info(env, info, &argc, argv, &self, NULL) != napi_ok || argc < want) {
    throw_error(env, "AES-GCM: too few arguments");
    return NULL;
  }
  Gcm *g = NULL;
  if (napi_unwrap(env, self, (void **)&g) != napi_ok || !g) {
    throw_error(env, "AES-GCM: not a Gcm object");
    return NULL;
  }
  return g;
}

static napi_value New(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], self;
  if (napi_get_cb_info(env, info, &argc, argv, &self, NULL) != napi_ok || argc < 1) return throw_error(env, "new Gcm(key): the key is missing");
  uint8_t *key;
  size_t key_len;
  if (!bytes_of(env, argv[0], &key, &key_len, "the key")) return NULL;
  const EVP_CIPHER *cipher = key_len == 16 ? EVP_aes_128_gcm() : key_len == 32 ? EVP_aes_256_gcm() : NULL;
  if (!cipher) {
    char m[80];
    snprintf(m, sizeof(m), "AES-GCM needs a 16- or 32-byte key, not %zu bytes", key_len);
    return throw_range(env, m);
  }
  Gcm *g = calloc(1, sizeof(Gcm));
  if (!g) return throw_error(env, "AES-GCM: out of memory");
  g->enc = EVP_CIPHER_CTX_new();
  g->dec = EVP_CIPHER_CTX_new();
  if (!g->enc || !g->dec || EVP_EncryptInit_ex(g->enc, cipher, NULL, key, NULL) != 1 ||
      EVP_DecryptInit_ex(g->dec, cipher, NULL, key, NULL) != 1) {
    gcm_free(g);
    return throw_error(env, "AES-GCM: OpenSSL refused the key");
  }
  /* 12 bytes is OpenSSL's default GCM IV length; set anyway, it is the one this API takes. */
  EVP_CIPHER_CTX_ctrl(g->enc, EVP_CTRL_GCM_SET_IVLEN, IV_BYTES, NULL);
  EVP_CIPHER_CTX_ctrl(g->dec, EVP_CTRL_GCM_SET_IVLEN, IV_BYTES, NULL);
  if (napi_wrap(env, self, g, finalize, NULL, NULL) != napi_ok) {
    gcm_free(g);
    return throw_error(env, "AES-GCM: could not attach the context");
  }
  return self;
}

static int get_offset(napi_env env, napi_value v, size_t *offset) {
  int64_t o;
  if (napi_get_value_int64(env, v, &o) != napi_ok || o < 0) {
    napi_throw_range_error(env, NULL, "AES-GCM: the offset must be a whole number ≥ 0");
    return 0;
  }
  *offset = (size_t)o;
  return 1;
}

static napi_value Seal(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  Gcm *g = unwrap(env, info, 5, argv);
  if (!g) return NULL;
  uint8_t *out, *iv, *aad, *pt;
  size_t out_len, iv_len, aad_len, pt_len, offset;
  if (!bytes_of(env, argv[0], &out, &out_len, "out") || !get_offset(env, argv[1], &offset) || !bytes_of(env, argv[2], &iv, &iv_len, "the IV") ||
      !bytes_of(env, argv[3], &aad, &aad_len, "the AAD") || !bytes_of(env, argv[4], &pt, &pt_len, "the plaintext"))
    return NULL;
  if (iv_len != IV_BYTES) {
    char m[64];
    snprintf(m, sizeof(m), "AES-GCM: the IV must be 12 bytes, not %zu", iv_len);
    return throw_range(env, m);
  }
  if (pt_len > INT32_MAX || aad_len > INT32_MAX || offset > out_len || out_len - offset < pt_len + TAG_BYTES)
    return throw_range(env, "AES-GCM: the output buffer is too short");
  int n = 0, fin = 0;
  if (EVP_EncryptInit_ex(g->enc, NULL, NULL, NULL, iv) != 1 || (aad_len && EVP_EncryptUpdate(g->enc, NULL, &n, aad, (int)aad_len) != 1) ||
      (pt_len && EVP_EncryptUpdate(g->enc, out + offset, &n, pt, (int)pt_len) != 1) || EVP_EncryptFinal_ex(g->enc, out + offset + n, &fin) != 1 ||
      EVP_CIPHER_CTX_ctrl(g->enc, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, out + offset + pt_len) != 1)
    return throw_error(env, "AES-GCM: OpenSSL failed to seal");
  return NULL;
}

static napi_value Open(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  Gcm *g = unwrap(env, info, 6, argv);
  if (!g) return NULL;
  uint8_t *out, *iv, *aad, *ct, *tag;
  size_t out_len, iv_len, aad_len, ct_len, tag_len, offset;
  if (!bytes_of(env, argv[0], &out, &out_len, "out") || !get_offset(env, argv[1], &offset) || !bytes_of(env, argv[2], &iv, &iv_len, "the IV") ||
      !bytes_of(env, argv[3], &aad, &aad_len, "the AAD") || !bytes_of(env, argv[4], &ct, &ct_len, "the ciphertext") ||
      !bytes_of(env, argv[5], &tag, &tag_len, "the tag"))
    return NULL;
  if (tag_len != TAG_BYTES) {
    char m[64];
    snprintf(m, sizeof(m), "AES-GCM: the tag must be 16 bytes, not %zu", tag_len);
    return throw_range(env, m);
  }
  if (iv_len != IV_BYTES) {
    char m[64];
    snprintf(m, sizeof(m), "AES-GCM: the IV must be 12 bytes, not %zu", iv_len);
    return throw_range(env, m);
  }
  if (ct_len > INT32_MAX || aad_len > INT32_MAX || offset > out_len || out_len - offset < ct_len)
    return throw_range(env, "AES-GCM: the output buffer is too short");
  if (g->scratch_len < ct_len + 16) {
    size_t want = (ct_len + 16) * 2;
    uint8_t *s = malloc(want);
    if (!s) return throw_error(env, "AES-GCM: out of memory");
    if (g->scratch) OPENSSL_cleanse(g->scratch, g->scratch_len);
    free(g->scratch);
    g->scratch = s;
    g->scratch_len = want;
  }
  int n = 0, fin = 0;
  /* The tag is compared by OpenSSL in constant time (CRYPTO_memcmp) in Final. */
  if (EVP_DecryptInit_ex(g->dec, NULL, NULL, NULL, iv) != 1 || (aad_len && EVP_DecryptUpdate(g->dec, NULL, &n, aad, (int)aad_len) != 1) ||
      (ct_len && EVP_DecryptUpdate(g->dec, g->scratch, &n, ct, (int)ct_len) != 1) ||
      EVP_CIPHER_CTX_ctrl(g->dec, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, tag) != 1)
    return throw_error(env, "AES-GCM: OpenSSL failed to open");
  napi_value result;
  int ok = EVP_DecryptFinal_ex(g->dec, g->scratch + n, &fin) == 1;
  if (ok && ct_len) memcpy(out + offset, g->scratch, ct_len);
  if (ct_len) OPENSSL_cleanse(g->scratch, ct_len);
  napi_get_boolean(env, ok, &result);
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"seal", NULL, Seal, NULL, NULL, NULL, napi_default, NULL},
      {"open", NULL, Open, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  if (napi_define_class(env, "Gcm", NAPI_AUTO_LENGTH, New, NULL, 2, methods, &cls) != napi_ok) return NULL;
  napi_set_named_property(env, exports, "Gcm", cls);
  napi_value version;
  napi_create_string_utf8(env, OpenSSL_version(OPENSSL_VERSION), NAPI_AUTO_LENGTH, &version);
  napi_set_named_property(env, exports, "openssl", version);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
