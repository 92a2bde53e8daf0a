#!/usr/bin/env bash
# Several verifier replicas on loopback behind nginx (Debian's package; the configuration is
# deploy/local/nginx.conf.template). Clients connect to nginx: ws://127.0.0.1:PORT/ws.
#   scripts/cluster.sh [--replicas N] [--port PORT] [--model NAME] [-- verifier-server flags...]
# Defaults: 3 replicas of qwen2.5-coder-1.5b-instruct-q4_k_m, nginx on 8080, replicas on
# PORT+1..PORT+N. Ctrl-C stops nginx and every replica. Each replica is an ordinary
# verifier-server (same flags: --token, --max-sessions, --drain ...); stop one with SIGTERM to
# drain it (its sessions move to the others and replay their tokens), or add one by starting it
# and adding its `server` line to $DIR/nginx.conf, then `kill -HUP` nginx's master process.
set -euo pipefail
cd "$(dirname "$0")/.."
REPLICAS=3
PORT=8080
MODEL=qwen2.5-coder-1.5b-instruct-q4_k_m
DIR=${HLM_CLUSTER_DIR:-${TMPDIR:-/tmp}/hlm-cluster}
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) REPLICAS="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
  esac
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "nginx is missing: apt-get install nginx-light" >&2; exit 1; }
BIN=./target/release/verifier-server
[ -x "$BIN" ] || cargo build --release -p verifier-server
mkdir -p "$DIR"
chmod 755 "$DIR" # nginx's workers (user nobody when started as root) write their temp files here

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

servers=""
for i in $(seq 1 "$REPLICAS"); do
  p=$((PORT + i))
  "$BIN" --model "$MODEL" --listen "127.0.0.1:$p" "$@" >"$DIR/replica-$i.log" 2>&1 &
  pids+=($!)
  servers+="        server 127.0.0.1:$p max_fails=1 fail_timeout=10s;"$'\n'
  echo "replica $i: 127.0.0.1:$p (log $DIR/replica-$i.log)"
done
for i in $(seq 1 "$REPLICAS"); do
  p=$((PORT + i))
  until curl -sf "http://127.0.0.1:$p/health" >/dev/null; do
    kill -0 "${pids[$((i - 1))]}" 2>/dev/null || { echo "replica $i exited: see $DIR/replica-$i.log" >&2; exit 1; }
    sleep 1
  done
done

# The template's three fields; `servers` spans lines, so it is substituted by awk, not sed.
awk -v prefix="$DIR" -v listen="127.0.0.1:$PORT" -v servers="${servers%$'\n'}" '
  { gsub(/\{\{prefix\}\}/, prefix); gsub(/\{\{listen\}\}/, listen) }
  /^\{\{servers\}\}$/ { print servers; next }
  { print }' deploy/local/nginx.conf.template >"$DIR/nginx.conf"
"$NGINX" -t -q -p "$DIR" -c "$DIR/nginx.conf" -e "$DIR/error.log"
echo "nginx: ws://127.0.0.1:$PORT/ws -> $REPLICAS replicas (config $DIR/nginx.conf)"
"$NGINX" -p "$DIR" -c "$DIR/nginx.conf" -e "$DIR/error.log" &
pids+=($!)
wait -n
