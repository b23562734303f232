#!/usr/bin/env bash
# Start TorchServe and the reverse proxy in front of it (nginx) with the production config, and
# stay in the foreground; SIGTERM/SIGINT drain the proxy (in-flight requests finish), then stop
# TorchServe. TorchServe listens on 127.0.0.1 only; nginx on LISTEN_ADDRESS (serving/proxy.py).
#
# The container's ENTRYPOINT (docker/Dockerfile), and runnable as it is outside one:
#   LISTEN_ADDRESS=127.0.0.1 MODEL_STORE=model_store WORK_DIR=/tmp/ts PATH=.venv/bin:$PATH docker/entrypoint.sh
#   docker/entrypoint.sh --print-config     # show the config and environment it would use, start nothing
#
# Environment (all optional):
#   MODEL_STORE      folder with lenet5.mar, mnist_net.mar, fashion_mlp.mar (default: <app>/model_store)
#   WORK_DIR         writable folder for TorchServe's temp files, unpacked archives and pid file
#                    (default /tmp/tinyserve; an emptyDir in Kubernetes, the root filesystem is read-only)
#   LISTEN_ADDRESS   where the proxy serves inference and metrics (default 0.0.0.0); TorchServe itself
#                    and its management API are always on 127.0.0.1
#   INFERENCE_PORT, METRICS_PORT   the proxy's public ports (defaults in settings/ports.py: 8080, 8082)
#   MANAGEMENT_PORT, GRPC_INFERENCE_PORT, GRPC_MANAGEMENT_PORT, BACKEND_INFERENCE_PORT, BACKEND_METRICS_PORT
#                    TorchServe's own, on loopback (8081, 7070, 7071, 8085, 8087)
#   MODEL_LOG_LEVEL  handler/worker log level on stdout (default info)
#   ACCESS_LOG_LEVEL one line per request on stdout when "info" (default warn: off; see docker/log4j2.xml)
#   REQUIRE_GPU      0: let the GPU image (TINYSERVE_VARIANT=cuda, set by the Dockerfile) start without a GPU
#   TLS_DIR          a folder with tls.crt and tls.key (a kubernetes.io/tls Secret, mounted): the proxy
#                    speaks HTTPS only on both public ports, and reloads (no connection dropped) when
#                    the files change, checked every TLS_RELOAD_CHECK_S seconds (default 10)
#
# Logs go to stdout only (docker/log4j2.xml): no log files grow in the container.
# Why not `exec torchserve --foreground`: that command is a Python wrapper around the Java
# frontend and dies on SIGTERM without passing it on, leaving Java and the workers behind. Here
# the script stays, traps the signal and runs `torchserve --stop`, which ends Java, whose
# shutdown ends the workers; the script exits when the wrapper has.
# The trap is set first thing: bash as PID 1 ignores a signal it has no trap for, so without it a
# SIGTERM during the checks and config rendering below would be lost and the pod would wait out
# its whole grace period for SIGKILL.
set -euo pipefail

phase=setup      # setup: nothing started yet; launching: torchserve forked; running: $server is its pid
stop_requested=0
on_stop_signal() {
    case "$phase" in
        setup) echo "entrypoint: stop requested before TorchServe started: exiting"; exit 0 ;;
        launching) stop_requested=1 ;;   # acted on as soon as the server's pid is known
        running) stop_server ;;
    esac
}
trap on_stop_signal TERM INT

APP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODEL_STORE=${MODEL_STORE:-$APP_DIR/model_store}
WORK_DIR=${WORK_DIR:-/tmp/tinyserve}
LISTEN_ADDRESS=${LISTEN_ADDRESS:-0.0.0.0}
export MODEL_LOG_LEVEL=${MODEL_LOG_LEVEL:-info} ACCESS_LOG_LEVEL=${ACCESS_LOG_LEVEL:-warn}

fail() { echo "entrypoint: error: $*" >&2; exit 1; }

for tool in python3 torchserve java nginx; do
    command -v "$tool" >/dev/null || fail "$tool is not on the PATH ($PATH). In the image it is; outside, put a venv with requirements.txt installed first on the PATH, and a JRE 11+."
done
[ -d "$MODEL_STORE" ] || fail "model store $MODEL_STORE does not exist: set MODEL_STORE, or run \`make archive\`."
MODEL_STORE=$(cd "$MODEL_STORE" && pwd)
mkdir -p "$WORK_DIR/tmp" || fail "cannot create $WORK_DIR/tmp: set WORK_DIR to a writable folder (an emptyDir in Kubernetes)."
WORK_DIR=$(cd "$WORK_DIR" && pwd)

# The worker environment, as serving/server.py (Server.env) sets it for `make serve`:
# TorchServe's temp dir (pid file, sockets, unpacked archives) inside WORK_DIR; one intra-op thread
# per worker (settings/model_serving.py torch_threads). (JSON bodies reach the handler as bytes through
# config.properties' decode_input_request=false: the frontend sets the workers' TS_DECODE_INPUT_REQUEST.)
# No PYTHONPATH for the workers: they import the handler and its packages from the archive only
# ($APP_DIR holds settings/, which would shadow the archive's copy).
export TEMP=$WORK_DIR/tmp TMPDIR=$WORK_DIR/tmp
export LOG_LOCATION=$WORK_DIR/logs METRICS_LOCATION=$WORK_DIR/logs
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

CONFIG=$WORK_DIR/config.properties
PYTHONPATH=$APP_DIR python3 -m serving.config --profile production --model-store "$MODEL_STORE" > "$CONFIG" \
    || fail "could not render the TorchServe config (see the message above; ports must be 1-65535 and all differ, the batcher's jar built)."
PROXY_DIR=$WORK_DIR/proxy
TLS_ARGS=()
[ -z "${TLS_DIR:-}" ] || TLS_ARGS=(--tls-dir "$TLS_DIR")
PROXY_CONFIG=$(PYTHONPATH=$APP_DIR python3 -m serving.proxy --profile production --prefix "$PROXY_DIR" \
    --listen-address "$LISTEN_ADDRESS" "${TLS_ARGS[@]}" --write) \
    || fail "could not render the proxy config (see the message above; LISTEN_ADDRESS must be an IP address, TLS_DIR hold tls.crt and tls.key)."
nginx -t -q -p "$PROXY_DIR" -e stderr -c "$PROXY_CONFIG" || fail "nginx rejected $PROXY_CONFIG (above)."

for name in $(sed -n 's/^load_models=//p' "$CONFIG" | tr ',' ' '); do
    [ -f "$MODEL_STORE/$name" ] || fail "$MODEL_STORE has no $name: run \`make archive\` (the image copies model_store/ at build time)."
done

if [ "${1:-}" = "--print-config" ]; then
    cat "$CONFIG"
    grep -oE '^ *listen [^ ;]+' "$PROXY_CONFIG" | sed 's/^ *listen /proxy listens on /'
    env | grep -E '^(TEMP|TMPDIR|LOG_LOCATION|METRICS_LOCATION|OMP_NUM_THREADS|MKL_NUM_THREADS|MODEL_LOG_LEVEL|ACCESS_LOG_LEVEL)=' | sort
    exit 0
fi
[ $# -eq 0 ] || fail "unknown arguments: $* (the only option is --print-config)"

# The GPU image (TINYSERVE_VARIANT=cuda, docker/Dockerfile) has no CUDA of its own beyond torch's
# wheels: the driver comes from the host. Without a usable GPU TorchServe would serve on the CPU,
# silently and slowly; the GPU image refuses to start instead, saying why (REQUIRE_GPU=0 allows it).
if [ "${TINYSERVE_VARIANT:-}" = cuda ] && [ "${REQUIRE_GPU:-1}" != 0 ]; then
    python3 -c '
import sys, torch
if torch.cuda.is_available():
    print("entrypoint: %d GPU(s), %s; torch %s, CUDA %s" % (torch.cuda.device_count(),
          torch.cuda.get_device_name(0), torch.__version__, torch.version.cuda))
    sys.exit(0)
sys.exit("no usable GPU: torch %s (CUDA %s) finds none. Give the container a GPU and an NVIDIA driver for CUDA %s"
         " or newer (docker run --gpus all, podman run --device nvidia.com/gpu=all, a nvidia.com/gpu resource"
         " in Kubernetes), or set REQUIRE_GPU=0 to serve on the CPU." % (torch.__version__, torch.version.cuda,
         torch.version.cuda or "?"))
' || fail "the GPU image needs a GPU (above)."
fi

cd "$WORK_DIR"
echo "entrypoint: starting TorchServe $(torchserve --version 2>/dev/null | sed 's/.* //'), config $CONFIG:"
grep -E '^(inference|management|metrics)_address=' "$CONFIG" | sed 's/^/entrypoint:   /'
echo "entrypoint: and nginx in front of it, config $PROXY_CONFIG:"
grep -E '^ *listen ' "$PROXY_CONFIG" | sed 's/^ */entrypoint:   /'

# A new certificate (the Secret's volume swaps its files): nginx re-reads it on SIGHUP, its old workers
# finish what they hold, new connections get the new one. A pair that does not load is logged and
# the proxy keeps serving the old one.
tls_fingerprint() { cat "$TLS_DIR/tls.crt" "$TLS_DIR/tls.key" 2>/dev/null | cksum; }
watch_tls() {
    local seen now sleeper=
    trap '[ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null; exit 0' TERM   # its sleep goes with it
    seen=$(tls_fingerprint)
    while true; do
        sleep "${TLS_RELOAD_CHECK_S:-10}" &
        sleeper=$!
        wait "$sleeper" || true
        now=$(tls_fingerprint)
        [ "$now" != "$seen" ] || continue
        seen=$now
        if nginx -t -q -p "$PROXY_DIR" -e stderr -c "$PROXY_CONFIG"; then
            echo "entrypoint: the TLS certificate in $TLS_DIR changed: reloading the proxy"
            kill -HUP "$proxy" 2>/dev/null || true
        else
            echo "entrypoint: the TLS certificate in $TLS_DIR changed but does not load (above): keeping the old one" >&2
        fi
    done
}

stopping=0
proxy=
watcher=
stop_server() {
    [ "$stopping" = 0 ] || return 0   # a second signal while stopping changes nothing
    stopping=1
    [ -z "$watcher" ] || kill "$watcher" 2>/dev/null || true
    if [ -n "$proxy" ] && kill -0 "$proxy" 2>/dev/null; then
        # SIGQUIT: nginx stops accepting, finishes the requests in flight (worker_shutdown_timeout bounds it)
        # Sent again each second: a QUIT that lands while nginx is still starting, before its own
        # handler is set, is ignored (bash starts background jobs with SIGQUIT ignored). After 30 s
        # (worker_shutdown_timeout 25 s + margin) it is killed.
        echo "entrypoint: draining the proxy (in-flight requests finish)"
        for i in $(seq 300); do
            kill -0 "$proxy" 2>/dev/null || break
            [ $((i % 10)) != 1 ] || kill -QUIT "$proxy" 2>/dev/null || true
            sleep 0.1
        done
        kill -KILL "$proxy" 2>/dev/null || true
    fi
    echo "entrypoint: stopping TorchServe"
    # a signal during the first moments: give the wrapper up to 10 s to start Java and write its pid
    for _ in $(seq 50); do
        [ -s "$TEMP/.model_server.pid" ] || ! kill -0 "$server" 2>/dev/null && break
        sleep 0.2
    done
    torchserve --stop --foreground >/dev/null 2>&1 || true
}

phase=launching
torchserve --start --foreground --ncs --ts-config "$CONFIG" --model-store "$MODEL_STORE" \
    --log-config "$APP_DIR/docker/log4j2.xml" &
server=$!
# The proxy at once: until TorchServe is READY it answers 502 backend_unavailable (JSON), and the
# readiness probe keeps the pod out of the Service meanwhile.
nginx -p "$PROXY_DIR" -e stderr -c "$PROXY_CONFIG" -g 'daemon off;' &
proxy=$!
if [ -n "${TLS_DIR:-}" ]; then
    watch_tls &
    watcher=$!
fi
phase=running
[ "$stop_requested" = 0 ] || stop_server

# Until either exits: `wait -n` returns early when a trapped signal arrives, so loop; after a
# stop, wait for both (stop_server has drained the proxy and stopped TorchServe).
status=0
while kill -0 "$server" 2>/dev/null && kill -0 "$proxy" 2>/dev/null; do
    wait -n "$server" "$proxy" || status=$?
done
if [ "$stopping" = 0 ]; then
    if kill -0 "$server" 2>/dev/null; then
        echo "entrypoint: the proxy (nginx) exited on its own; stopping TorchServe" >&2
    else
        echo "entrypoint: TorchServe exited on its own (status $status); see its log above; stopping the proxy" >&2
    fi
    stop_server
    for pid in "$server" "$proxy"; do while kill -0 "$pid" 2>/dev/null; do wait "$pid" 2>/dev/null || true; done; done
    exit $(( status == 0 ? 1 : status ))
fi
for pid in "$server" "$proxy"; do while kill -0 "$pid" 2>/dev/null; do wait "$pid" 2>/dev/null || true; done; done
echo "entrypoint: TorchServe stopped"
exit 0
