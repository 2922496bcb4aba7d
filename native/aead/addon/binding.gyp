# Parley's AES-GCM addon: a small plain C N-API (ABI-stable: the same .node
# loads in Node 22 and in Electron) wrapper over OpenSSL's EVP AES-GCM, one
# cipher context per key, for SRTP (RFC 7714) and SFrame (RFC 9605). Links the
# system libcrypto (Debian: libssl-dev at build time, libssl3 at run time);
# in Node, whose own OpenSSL exports the same symbols, those are the ones
# used. Built by scripts/setup.sh or `npm run build:native`.
{
  "targets": [
    {
      "target_name": "parley_aead",
      "sources": ["aead.c"],
      "cflags": ["-std=c11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-O2"],
      "defines": ["NAPI_VERSION=8", "OPENSSL_API_COMPAT=30000"],
      "libraries": ["-lcrypto"]
    }
  ]
}
