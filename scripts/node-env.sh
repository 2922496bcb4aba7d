# Sourced (not executed): puts the project's Node 22 first on PATH when setup
# installed one, and points node-gyp at the headers of the Node in use.
_parley_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
if [ -x "$_parley_root/.tools/node/bin/node" ]; then
  export PATH="$_parley_root/.tools/node/bin:$PATH"
fi
_node_prefix="$(dirname "$(dirname "$(command -v node)")")"
if [ -d "$_node_prefix/include/node" ]; then
  export npm_config_nodedir="$_node_prefix"
fi
# mediasoup's worker binary (built and cached by scripts/build-mediasoup-worker.sh,
# outside the checkout): the SFU spawns it, and mediasoup's postinstall skips its
# download when this is set. An explicit MEDIASOUP_WORKER_BIN wins.
if [ -z "${MEDIASOUP_WORKER_BIN:-}" ] && [ -f "$_parley_root/package-lock.json" ]; then
  _ms_bin="$("$_parley_root/scripts/build-mediasoup-worker.sh" --path 2>/dev/null)" && export MEDIASOUP_WORKER_BIN="$_ms_bin"
  unset _ms_bin
fi
unset _parley_root _node_prefix
