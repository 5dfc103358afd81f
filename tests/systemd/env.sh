# shellcheck shell=bash
# Sourced by the scripts in tests/systemd (and usable by hand: `. tests/systemd/env.sh`).
# Points podman at this directory's containers.conf and names the test image.
SEAWALL_SYSTEMD_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CONTAINERS_CONF="${SEAWALL_SYSTEMD_DIR}/containers.conf"
export SEAWALL_SYSTEMD_IMAGE="${SEAWALL_SYSTEMD_IMAGE:-localhost/seawall-systemd:bookworm}"
