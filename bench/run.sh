#!/usr/bin/env bash
# Runs the benchmarks and writes the table into docs/BENCHMARKS.md.
#
#   bench/run.sh                      # everything, medians of 3 runs (~25-30 min on 2 cores)
#   bench/run.sh --only fanout        # one scenario (idle, fanout, rooms, chat-ack, notify)
#   bench/run.sh --plan quick --no-doc  # a few minutes, to try the driver
#
# Builds the gateway (`cargo build --release` at the repo root) and the bench workspace
# (`cargo build --release` in bench/), installs the Node peer (`npm ci`) when needed, pins every
# server to CPU 0 and the load generator to CPU 1. Needs: cargo, node/npm, python3, taskset.
set -euo pipefail
cd "$(dirname "$0")"
# Up to 19,000 connections per process: take every file descriptor the hard limit allows.
ulimit -n "$(ulimit -Hn)"
exec python3 ./driver.py "$@"
