#!/usr/bin/env bash
# Runs a command with the project's Node 22 first on PATH (see scripts/setup.sh).
. "$(dirname "$0")/node-env.sh"
exec "$@"
