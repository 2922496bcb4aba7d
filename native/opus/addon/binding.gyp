# Parley's libopus decoder addon (plain C N-API, ABI-stable: the same .node
# loads in Node 22 and in Electron). Built by scripts/setup.sh or
# `npm run build:native`; links the system libopus (Debian: libopus-dev at
# build time, libopus0 at run time).
{
  "variables": {
    # libopus >= 1.5 exports opus_packet_has_lbrr(); older ones (Debian's 1.3.1)
    # do not, and the addon parses the LBRR flag itself (same algorithm).
    "has_packet_has_lbrr%": "<!(pkg-config --atleast-version=1.5 opus 2>/dev/null && echo 1 || echo 0)"
  },
  "targets": [
    {
      "target_name": "parley_opus",
      "sources": ["opus_decoder.c"],
      "cflags": ["-std=c11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-O2"],
      "include_dirs": ["<!@(pkg-config --variable=includedir opus 2>/dev/null || echo /usr/include)"],
      "defines": ["NAPI_VERSION=8"],
      "libraries": ["-lopus"],
      "conditions": [
        ["has_packet_has_lbrr==1", { "defines": ["HAVE_OPUS_PACKET_HAS_LBRR=1"] }]
      ]
    }
  ]
}
