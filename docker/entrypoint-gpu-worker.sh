#!/bin/sh
# Entrypoint of the GPU worker image: join the Ray cluster at RAY_HEAD_ADDRESS and stay in
# the foreground (--block) so the container lives exactly as long as the Ray node.
#
# Environment:
#   RAY_HEAD_ADDRESS         GCS address of the head, e.g. ray-head:6380 (required)
#   RAY_NUM_GPUS             GPUs this node offers (unset or "all": what Ray detects)
#   RAY_NUM_CPUS             CPUs this node offers (default: what Ray detects)
#   RAY_RESOURCES            custom resources as JSON, e.g. {"gpu_worker": 100}
#   RAY_OBJECT_STORE_MEMORY  object store size in bytes (default: Ray's, 30% of memory)
# Extra arguments are passed on to `ray start`.
set -eu

: "${RAY_HEAD_ADDRESS:?set RAY_HEAD_ADDRESS to the Ray head GCS address, e.g. ray-head:6380}"

set -- --address="$RAY_HEAD_ADDRESS" --block --disable-usage-stats "$@"
case "${RAY_NUM_GPUS:-all}" in
    all | ALL) ;;
    *) set -- "$@" --num-gpus="$RAY_NUM_GPUS" ;;
esac
if [ -n "${RAY_NUM_CPUS:-}" ]; then set -- "$@" --num-cpus="$RAY_NUM_CPUS"; fi
if [ -n "${RAY_RESOURCES:-}" ]; then set -- "$@" --resources="$RAY_RESOURCES"; fi
if [ -n "${RAY_OBJECT_STORE_MEMORY:-}" ]; then set -- "$@" --object-store-memory="$RAY_OBJECT_STORE_MEMORY"; fi

echo "searchsvc gpu-worker: ray start $*" >&2
exec ray start "$@"
