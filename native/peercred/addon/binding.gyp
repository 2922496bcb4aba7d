# Parley's peer credential addon: who is on the other end of a connected Unix
# socket (Linux SO_PEERCRED; macOS and the BSDs getpeereid). Plain C N-API
# (ABI-stable: the same .node loads in Node 22 and in Electron), no library
# beyond libc. Built by scripts/setup.sh or `npm run build:native`.
{
  "targets": [
    {
      "target_name": "parley_peercred",
      "sources": ["peercred.c"],
      "cflags": ["-std=c11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-O2"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
