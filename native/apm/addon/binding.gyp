# Parley's voice processing addon: a small N-API (C API, ABI-stable: the same
# .node loads in Node 22 and in Electron) wrapper over WebRTC's audio
# processing module as Debian ships it (libwebrtc-audio-processing 0.3:
# libwebrtc-audio-processing-dev at build time, libwebrtc-audio-processing1 at
# run time). Built by scripts/setup.sh or `npm run build:native`.
{
  "targets": [
    {
      "target_name": "parley_apm",
      "sources": ["apm.cc"],
      "cflags_cc": ["-std=c++14", "-Wall", "-Wextra", "-O2", "-fexceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags": ["<!@(pkg-config --cflags webrtc-audio-processing)"],
      "defines": ["NAPI_VERSION=8"],
      "libraries": ["<!@(pkg-config --libs webrtc-audio-processing)"]
    }
  ]
}
