#!/bin/sh
# Entrypoint of the control-plane image (used by the `api` service; `ray-head` runs
# `ray start --head` from the same image and passes straight through).
#
# Why `searchsvc serve` is not simply exec'd: with SEARCHSVC_RAY_ADDRESS set, the serve
# process (and each study runner it starts) calls ray.init(address=GCS), and Ray attaches
# such a driver to a raylet running on the SAME machine/container. A container that is not
# a Ray node fails with "cannot find a local Raylet". So before serving, this container
# joins the cluster as a node with zero CPUs and zero GPUs: it hosts the drivers only, and
# no trial can ever be scheduled on it.
#
# Environment:
#   SEARCHSVC_RAY_ADDRESS      GCS address (host:port) of the Ray head; unset = local Ray
#   SEARCHSVC_JOIN_RAY=0       do not join (e.g. a raylet is already running in this pod)
#   RAY_JOIN_TIMEOUT_S         how long to keep trying to reach the head (default 180)
#   RAY_OBJECT_STORE_MEMORY    object store size in bytes for this node (default 256 MiB)
set -eu

join_ray() {
    address=$1
    deadline=$(( $(date +%s) + ${RAY_JOIN_TIMEOUT_S:-180} ))
    while :; do
        if ray start \
            --address="$address" \
            --num-cpus=0 \
            --num-gpus=0 \
            --resources='{}' \
            --object-store-memory="${RAY_OBJECT_STORE_MEMORY:-268435456}" \
            --disable-usage-stats; then
            return 0
        fi
        ray stop --force >/dev/null 2>&1 || true
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "searchsvc: could not join the Ray cluster at $address" >&2
            return 1
        fi
        echo "searchsvc: Ray head at $address not reachable yet; retrying in 5 s" >&2
        sleep 5
    done
}

if [ "${1:-}" = "searchsvc" ] && [ "${2:-}" = "serve" ] \
    && [ -n "${SEARCHSVC_RAY_ADDRESS:-}" ] && [ "${SEARCHSVC_JOIN_RAY:-1}" != "0" ]; then
    case "$SEARCHSVC_RAY_ADDRESS" in
        ray://*)
            echo "searchsvc: SEARCHSVC_RAY_ADDRESS must be a GCS address (host:port), not a Ray Client URL" >&2
            exit 2
            ;;
    esac
    join_ray "$SEARCHSVC_RAY_ADDRESS"
fi

exec "$@"
