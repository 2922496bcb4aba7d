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
unset _parley_root _node_prefix
