#!/usr/bin/env bash
# Start, check and stop containers of the systemd test image (tests/systemd/build-image.sh) with
# systemd as PID 1.
#
#   bash tests/systemd/run-container.sh start NAME [PODMAN-RUN-OPTION...]  boot one, wait for systemd
#   bash tests/systemd/run-container.sh wait NAME                          wait for systemd in NAME
#   bash tests/systemd/run-container.sh stop NAME                          remove it
#   bash tests/systemd/run-container.sh selftest                           build, boot, prove, remove
#
# The podman options (mirrored in molecule/systemd/molecule.yml):
#   --systemd=always               podman sets up what systemd expects (/run, /run/lock, /tmp and
#                                  /var/log/journal as tmpfs, the name=systemd cgroup v1 hierarchy
#                                  writable, container=podman, STOPSIGNAL SIGRTMIN+3).
#   --cap-add SYS_ADMIN            without it systemd silently skips every mount-namespace sandbox
#                                  option (ProtectSystem=, PrivateTmp=, ReadWritePaths=, ...): units
#                                  run, but unprotected, so a test would prove nothing about them.
#   --tmpfs /run:rw,rshared        systemd 252 mounts LoadCredential=/SetCredential= files from a
#                                  child mount namespace; on podman's default private /run the
#                                  credentials directory stays empty.
# The network is podman's default bridge (10.88.0.0/16 on cni-podman0): the container reaches PyPI
# and Debian's mirror like the host, and the host is host.containers.internal (10.88.0.1).
set -euo pipefail

# shellcheck source=tests/systemd/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

RUN_OPTIONS=(--systemd=always --cap-add SYS_ADMIN --tmpfs '/run:rw,rshared' --tmpfs '/tmp:rw')
BOOT_TIMEOUT=${BOOT_TIMEOUT:-90}

log() { printf 'run-container: %s\n' "$*" >&2; }

# Wait until systemd in the container answers and has finished booting. Right after `podman run`
# systemctl fails with "Failed to connect to bus" for a moment: retry until it answers, then let
# is-system-running --wait block until start-up is over.
wait_booted() {
  local name=$1 deadline state
  deadline=$(($(date +%s) + BOOT_TIMEOUT))
  while :; do
    state=$(timeout 30 podman exec "$name" systemctl is-system-running --wait 2>/dev/null) || true
    case "$state" in
      running) log "$name: systemd is running"; return 0 ;;
      degraded)
        log "$name: systemd is degraded; failed units:"
        podman exec "$name" systemctl --failed --no-pager --plain >&2 || true
        return 0 ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "$name: systemd did not finish booting within ${BOOT_TIMEOUT}s (state: ${state:-no answer})"
      podman logs --tail 50 "$name" >&2 || true
      podman exec "$name" journalctl -b --no-pager -n 50 >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

start() {
  local name=$1
  shift
  podman rm -f --ignore "$name" >/dev/null
  podman run -d --name "$name" --hostname "$name" "${RUN_OPTIONS[@]}" "$@" "$SEAWALL_SYSTEMD_IMAGE" >/dev/null
  wait_booted "$name"
}

stop() { podman rm -f --ignore "$1" >/dev/null; }

# Proves, in a throwaway container, what the molecule scenario relies on.
selftest() {
  local name=seawall-systemd-selftest started
  bash "$SEAWALL_SYSTEMD_DIR/build-image.sh"
  started=$(date +%s)
  trap 'stop '"$name" EXIT
  start "$name"
  log "booted in $(($(date +%s) - started)) s"
  podman exec -i "$name" bash -s <<'EOF'
set -euo pipefail
fail() { printf 'selftest: FAILED: %s\n' "$1" >&2; exit 1; }
check() { printf 'selftest: %-58s ok\n' "$1"; }

[ "$(cat /proc/1/comm)" = systemd ] || fail "PID 1 is $(cat /proc/1/comm)"
check "PID 1 is systemd"

# A hardened oneshot service and its timer.
cat > /etc/systemd/system/selftest.service <<'UNIT'
[Unit]
Description=seawall selftest oneshot
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo ran >> /var/lib/selftest/log; ! touch /etc/selftest-escape; test -z "$(ls -A /tmp)"; cat "$CREDENTIALS_DIRECTORY/secret" > /var/lib/selftest/secret'
StateDirectory=selftest
ProtectSystem=strict
PrivateTmp=true
NoNewPrivileges=true
LoadCredential=secret:/etc/selftest-secret
UNIT
cat > /etc/systemd/system/selftest.timer <<'UNIT'
[Unit]
Description=seawall selftest timer
[Timer]
OnCalendar=*:*:0/2
AccuracySec=1s
Persistent=true
[Install]
WantedBy=timers.target
UNIT
umask 077; echo s3cret > /etc/selftest-secret; touch /tmp/host-tmp-file; umask 022
systemd-analyze verify /etc/systemd/system/selftest.service /etc/systemd/system/selftest.timer || fail "systemd-analyze verify"
check "systemd-analyze verify"
systemctl daemon-reload
systemctl start selftest.service || fail "selftest.service: $(systemctl show -P Result selftest.service)"
[ "$(systemctl show -P Result selftest.service)" = success ] || fail "selftest.service result"
check "oneshot service: Result=success"
[ ! -e /etc/selftest-escape ] || fail "ProtectSystem=strict did not hold"
check "oneshot: ProtectSystem=strict and PrivateTmp= hold"
[ "$(cat /var/lib/selftest/secret)" = s3cret ] || fail "LoadCredential="
check "oneshot: LoadCredential= delivers the secret"
systemctl enable --now selftest.timer 2>/dev/null
for _ in $(seq 20); do [ "$(wc -l < /var/lib/selftest/log)" -ge 3 ] && break; sleep 0.5; done
[ "$(wc -l < /var/lib/selftest/log)" -ge 3 ] || fail "the timer did not fire"
check "timer fired the service"
timers=$(systemctl list-timers --all --no-pager)
grep -Eq 'selftest\.timer +selftest\.service' <<<"$timers" || fail "list-timers: $timers"
check "systemctl list-timers shows the timer"

systemctl is-active --quiet postgresql@15-main.service || fail "postgresql@15-main.service"
check "postgresql@15-main.service active"
[ "$(runuser -u postgres -- psql -Atc 'show server_version_num')" -ge 150000 ] || fail "PostgreSQL 15"
check "PostgreSQL 15 answers"
systemctl is-active --quiet postgresql-18.service || fail "postgresql-18.service"
check "postgresql-18.service active"
[ "$(runuser -u postgres -- psql -p 5433 -Atc 'show server_version_num')" -ge 180000 ] || fail "PostgreSQL 18"
check "PostgreSQL 18 answers on port 5433"
runuser -u postgres -- /opt/postgresql-18/bin/pg_dump -h /run/postgresql -p 5432 -Fc -f /tmp/pg15.dump postgres || fail "pg_dump 18 of 15"
runuser -u postgres -- /opt/postgresql-18/bin/pg_dump -h /run/postgresql -p 5433 -Fc -f /tmp/pg18.dump postgres || fail "pg_dump 18 of 18"
check "pg_dump 18 dumps both servers"
python3 -c 'import apt, psycopg2' || fail "python3-apt, python3-psycopg2"
check "python3-apt and python3-psycopg2 import"
echo "$timers"
EOF
  log "selftest passed in $(($(date +%s) - started)) s"
}

case "${1:-}" in
  start) shift; [ $# -ge 1 ] || { log "usage: start NAME [PODMAN-RUN-OPTION...]"; exit 2; }; start "$@" ;;
  wait) [ $# -eq 2 ] || { log "usage: wait NAME"; exit 2; }; wait_booted "$2" ;;
  stop) [ $# -eq 2 ] || { log "usage: stop NAME"; exit 2; }; stop "$2" ;;
  selftest) selftest ;;
  *) sed -n '2,9p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
