# Parley's PulseAudio stream addon (capture and playback straight through
# libpulse's threaded mainloop; see pulse.c). Plain C N-API (ABI-stable: the
# same .node loads in Node 22, its worker threads and Electron). Needs
# libpulse-dev to build. Built by scripts/setup.sh or `npm run build:native`.
{
  "targets": [
    {
      "target_name": "parley_pulse",
      "sources": ["pulse.c"],
      "cflags": ["-std=c11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-O2", "<!@(pkg-config --cflags libpulse)"],
      "libraries": ["<!@(pkg-config --libs libpulse)"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
