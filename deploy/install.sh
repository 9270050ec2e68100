#!/usr/bin/env bash
# Install, upgrade or remove the appliance on Debian 12 / Raspberry Pi OS (bookworm).
#
#   sudo deploy/install.sh                          # the device daemon, config/intercom.yaml as its config
#   sudo deploy/install.sh --config config/bedside.yaml
#   sudo deploy/install.sh --server                 # the call server (appliance serve) instead
#   sudo deploy/install.sh --uninstall [--server]   # stop and remove the program; config and state stay
#   sudo deploy/install.sh --uninstall --purge      # ... and /etc/appliance*, /var/lib/appliance* too
#
# Every step checks before it acts, so running it again (an upgrade from a newer checkout) only
# replaces the program and the unit: /etc/appliance/ and the state dir are never overwritten.
# README.md ("Installing on Debian or Raspberry Pi OS") lists the same steps by hand.
set -euo pipefail

PREFIX=/opt/appliance
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

ROLE=device
CONFIG=config/intercom.yaml
ACTION=install
PURGE=0
START=1
PI=auto

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    echo "options: --server --config FILE --pi|--no-pi --no-start --uninstall --purge --print-packages"
}

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --server) ROLE=server; CONFIG=config/server.yaml ;;
        --config) [ $# -ge 2 ] || die "--config needs a file"; CONFIG=$2; shift ;;
        --pi) PI=1 ;;
        --no-pi) PI=0 ;;
        --no-start) START=0 ;;
        --uninstall) ACTION=uninstall ;;
        --purge) PURGE=1 ;;
        --print-packages) ACTION=print-packages ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

if [ "$ROLE" = server ]; then
    UNIT=appliance-server.service
    ETC=/etc/appliance-server
    ETC_NAME=server.yaml
    STATE=/var/lib/appliance-server
else
    UNIT=appliance.service
    ETC=/etc/appliance
    ETC_NAME=device.yaml
    STATE=/var/lib/appliance
fi

# Raspberry Pi OS: its images carry /etc/rpi-issue (the 64-bit one says ID=debian in os-release).
if [ "$PI" = auto ]; then
    if [ -e /etc/rpi-issue ]; then PI=1; else PI=0; fi
fi

# pyalsaaudio is built from source (gcc, python3-dev, libasound2-dev); every other dependency comes
# as a wheel. On a Pi, libcamera/picamera2 and lgpio come from apt: PyPI has no usable build of them.
packages() {
    local list="python3-venv python3-dev gcc libasound2-dev"
    if [ "$ROLE" = device ]; then
        list="$list libasound2-plugins alsa-utils"
        if [ "$PI" = 1 ]; then list="$list python3-picamera2 python3-lgpio"; fi
    fi
    echo "$list"
}

if [ "$ACTION" = print-packages ]; then
    packages
    exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (sudo $0 $*)"

uninstall() {
    say "stopping and removing $UNIT"
    systemctl disable --now "$UNIT" 2>/dev/null || true
    rm -f "/etc/systemd/system/$UNIT"
    systemctl daemon-reload
    systemctl reset-failed "$UNIT" 2>/dev/null || true
    # The program is shared by both roles: remove it only when no unit of either is left.
    if [ ! -e /etc/systemd/system/appliance.service ] && [ ! -e /etc/systemd/system/appliance-server.service ]; then
        say "removing $PREFIX"
        rm -rf "$PREFIX"
    fi
    if [ "$PURGE" = 1 ]; then
        say "purging $ETC and $STATE"
        rm -rf "$ETC" "$STATE" "/var/lib/private/$(basename "$STATE")"
        rm -f /etc/udev/rules.d/60-appliance-gpio.rules
    else
        echo "kept $ETC and $STATE (--purge removes them)"
    fi
}

if [ "$ACTION" = uninstall ]; then
    uninstall
    exit 0
fi

[ -f "$SRC/pyproject.toml" ] || die "$SRC is not a checkout of appliance"
case "$CONFIG" in /*) ;; *) CONFIG="$SRC/$CONFIG" ;; esac
[ -f "$CONFIG" ] || die "no such config: $CONFIG"

# 1. Debian packages (only those missing, so an offline upgrade works).
missing=""
for p in $(packages); do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing Debian packages:$missing"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi

# 2. Groups the device unit names (SupplementaryGroups=gpio audio video): Raspberry Pi OS has all
#    three; Debian has no gpio group, and a missing group fails the unit with 216/GROUP.
if [ "$ROLE" = device ]; then
    for g in gpio audio video; do
        if ! getent group "$g" >/dev/null; then
            say "adding system group $g"
            groupadd --system "$g"
        fi
    done
    if [ "$PI" = 0 ] && [ ! -e /etc/udev/rules.d/60-appliance-gpio.rules ]; then
        # Pi OS ships this rule; elsewhere GPIO chips are root-only without it.
        install -d /etc/udev/rules.d
        echo 'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"' \
            >/etc/udev/rules.d/60-appliance-gpio.rules
    fi
fi

# 3. The program: a venv in /opt/appliance (seeing apt's picamera2/libcamera/lgpio on a Pi).
VENV_OPTS=""
if [ "$PI" = 1 ]; then VENV_OPTS="--system-site-packages"; fi
if [ ! -x "$PREFIX/.venv/bin/python" ]; then
    say "creating $PREFIX/.venv"
    install -d -m 0755 "$PREFIX"
    python3 -m venv $VENV_OPTS "$PREFIX/.venv"
fi
say "installing appliance from $SRC into $PREFIX/.venv"
"$PREFIX/.venv/bin/pip" install -q --upgrade pip
if [ "$SRC" = "$PREFIX" ]; then
    "$PREFIX/.venv/bin/pip" install -q -e "$SRC"
else
    "$PREFIX/.venv/bin/pip" install -q --upgrade --force-reinstall --no-deps "$SRC"
    "$PREFIX/.venv/bin/pip" install -q "$SRC"
    install -m 0644 "$SRC/README.md" "$PREFIX/README.md"
fi

# 4. The config: the example and every file it names next to it (call-types.yaml, a token file).
#    Never overwritten: an upgrade keeps the configuration you edited. Readable by all (0644):
#    the unit's DynamicUser= has no fixed uid or group to own them.
install -d -m 0755 "$ETC"
if [ ! -e "$ETC/$ETC_NAME" ]; then
    say "installing $CONFIG as $ETC/$ETC_NAME"
    install -m 0644 "$CONFIG" "$ETC/$ETC_NAME"
    CONFIG_DIR=$(dirname "$CONFIG")
    for name in $("$PREFIX/.venv/bin/appliance" check --files --config "$CONFIG"); do
        if [ ! -e "$ETC/$name" ]; then
            install -D -m 0644 "$CONFIG_DIR/$name" "$ETC/$name"
        fi
    done
else
    echo "kept $ETC/$ETC_NAME"
fi
STATE_DIRECTORY=$STATE "$PREFIX/.venv/bin/appliance" check --config "$ETC/$ETC_NAME"

# 5. The unit, enabled and (re)started.
install -m 0644 "$SRC/systemd/$UNIT" "/etc/systemd/system/$UNIT"
systemctl daemon-reload
systemctl enable "$UNIT"
if [ "$START" = 1 ]; then
    systemctl reset-failed "$UNIT" 2>/dev/null || true
    # --no-block: a device waits (not ready) until its server answers, which may be later.
    say "starting $UNIT"
    systemctl restart --no-block "$UNIT"
    for _ in $(seq 60); do
        [ "$(systemctl show -P ActiveState "$UNIT")" = activating ] || break
        sleep 1
    done
    systemctl --no-pager --lines=5 status "$UNIT" || true
fi
say "done: journalctl -u ${UNIT%.service} -f; $PREFIX/.venv/bin/appliance doctor"
