#!/usr/bin/env bash
# Install bedside-gateway as a hardened systemd service (Debian 12 / Raspberry Pi OS).
#
#   sudo systemd/install.sh                 install or repair; safe to run again
#   sudo systemd/install.sh --upgrade       also reinstall the package into the venv
#   sudo systemd/install.sh --uninstall     remove the program; keep data, key and config
#   sudo systemd/install.sh --uninstall --purge   remove everything, data included
#   sudo systemd/install.sh --root DIR      install into a staging tree (nothing on this
#                                           machine is touched, nothing is enabled or started)
#
# What goes where (every path below is prefixed by --root when given):
#   /opt/bedside-gateway/venv                 Python virtual environment with the package
#   /opt/bedside-gateway/docs/TECHNICIAN.md   the technician guide
#   /opt/bedside-gateway/install-manifest     every installed path with its mode and owner
#   /usr/local/bin/bedside-gateway            -> the venv's command
#   /etc/systemd/system/bedside-gateway.service
#   /etc/sysusers.d/bedside-gateway.conf      the service user (groups dialout, bluetooth)
#   /etc/tmpfiles.d/bedside-gateway.conf      state and config directories
#   /etc/udev/rules.d/99-bedside-serial.rules stable /dev/bedside/* names (never overwritten)
#   /etc/bedside-gateway/config.toml          the config (never overwritten)
#   /etc/credstore.encrypted/bedside-gateway-kek   the key, encrypted by systemd-creds, or
#   /var/lib/bedside-gateway/keys/kek              the key file fallback (0600)
#   /var/lib/bedside-gateway                  the encrypted store (data; kept on uninstall)
#
# Idempotent: a second run with the same inputs changes nothing. Exit status 0 on success,
# 1 on a failure, 2 on a wrong command line.
set -euo pipefail
umask 022

NAME=bedside-gateway
SERVICE_USER=bedside-gateway
CREDENTIAL=bedside-gateway-kek
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

ROOT=""
ACTION=install
PURGE=0
UPGRADE=0
PYTHON=${PYTHON:-python3}
SOURCE=$REPO
PIP_ARGS=""
KEY_MODE=auto

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'

options:
  --root DIR        install into DIR instead of / (staging; enables and starts nothing)
  --upgrade         reinstall the package into the existing virtual environment
  --uninstall       remove the program (data, key and config are kept)
  --purge           with --uninstall: also remove data, key, config, udev rules and user
  --python PY       interpreter for the virtual environment (default: python3, >= 3.11)
  --source SPEC     what pip installs (default: this checkout; a wheel file also works)
  --pip-args ARGS   extra arguments for pip install (e.g. "--no-index --find-links DIR")
  --key-mode MODE   auto (systemd-creds when available, else key file), creds, or file
EOF
}

die() { echo "install.sh: $*" >&2; exit 1; }
usage_error() { echo "install.sh: $*" >&2; echo "run 'install.sh --help' for the options" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || usage_error "--root needs a directory"; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#--root=}; shift ;;
        --uninstall) ACTION=uninstall; shift ;;
        --purge) PURGE=1; shift ;;
        --upgrade) UPGRADE=1; shift ;;
        --python) [ $# -ge 2 ] || usage_error "--python needs a path"; PYTHON=$2; shift 2 ;;
        --source) [ $# -ge 2 ] || usage_error "--source needs a path"; SOURCE=$2; shift 2 ;;
        --pip-args) [ $# -ge 2 ] || usage_error "--pip-args needs a value"; PIP_ARGS=$2; shift 2 ;;
        --key-mode) [ $# -ge 2 ] || usage_error "--key-mode needs auto, creds or file"
            KEY_MODE=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage_error "unknown option $1" ;;
    esac
done
case "$KEY_MODE" in auto|creds|file) ;; *) usage_error "--key-mode must be auto, creds or file" ;; esac
if [ "$PURGE" = 1 ] && [ "$ACTION" != uninstall ]; then
    usage_error "--purge only goes with --uninstall"
fi
if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT" || die "cannot create the staging root $ROOT"
    ROOT=$(cd "$ROOT" && pwd)
    [ "$ROOT" != / ] || ROOT=""
fi
STAGING=0
[ -z "$ROOT" ] || STAGING=1
[ "$(id -u)" = 0 ] || die "run as root (sudo): files are installed with their owners"

OPT=/opt/$NAME
UNIT=/etc/systemd/system/$NAME.service
SYSUSERS=/etc/sysusers.d/$NAME.conf
TMPFILES=/etc/tmpfiles.d/$NAME.conf
UDEV_RULES=/etc/udev/rules.d/99-bedside-serial.rules
CONFIG_DIR=/etc/$NAME
CONFIG=$CONFIG_DIR/config.toml
STATE=/var/lib/$NAME
KEY_FILE=$STATE/keys/kek
CREDSTORE=/etc/credstore.encrypted
CRED_FILE=$CREDSTORE/$CREDENTIAL
LINK=/usr/local/bin/$NAME
MANIFEST=$OPT/install-manifest

CHANGED_UNIT=0
CHANGED_UDEV=0
MANIFEST_LINES=()

say() { echo "  $*"; }

# Record an installed path for the manifest: kind mode owner group path (no root prefix).
record() { MANIFEST_LINES+=("$1 $2 $3 $4 $5"); }

# Numeric uid/gid of a name in the target system's account database.
# root is 0 everywhere, also in a fresh staging tree that has no account files yet.
uid_of() {
    if [ "$1" = root ]; then echo 0; return; fi
    awk -F: -v n="$1" '$1 == n { print $3 }' "$ROOT/etc/passwd" 2>/dev/null || true
}
gid_of() {
    if [ "$1" = root ]; then echo 0; return; fi
    awk -F: -v n="$1" '$1 == n { print $3 }' "$ROOT/etc/group" 2>/dev/null || true
}

# Set mode and owner only where they differ, so a second run touches nothing.
ensure_attrs() {
    local path=$1 mode=$2 owner=$3 group=$4 uid gid
    uid=$(uid_of "$owner"); gid=$(gid_of "$group")
    [ -n "$uid" ] && [ -n "$gid" ] || die "no user $owner or group $group in $ROOT/etc"
    if [ "$(stat -c %a "$path")" != "$(printf '%o' "$((8#$mode))")" ]; then chmod "$mode" "$path"; fi
    if [ "$(stat -c %u:%g "$path")" != "$uid:$gid" ]; then chown "$uid:$gid" "$path"; fi
}

# install_file SRC DEST MODE OWNER GROUP KIND: copy when the content differs; returns 0 if
# the file changed, 1 if it was already there as it should be.
install_file() {
    local src=$1 dest=$2 mode=$3 owner=$4 group=$5 kind=$6 target=$ROOT$2 changed=1
    mkdir -p "$(dirname "$target")"
    if [ ! -f "$target" ] || ! cmp -s "$src" "$target"; then
        cp "$src" "$target.tmp.$$"
        mv -f "$target.tmp.$$" "$target"
        say "installed $dest"
        changed=0
    fi
    ensure_attrs "$target" "$mode" "$owner" "$group"
    record "$kind" "$mode" "$owner" "$group" "$dest"
    return $changed
}

# A file the technician owns once it exists: installed only when absent.
install_once() {
    local src=$1 dest=$2 mode=$3 owner=$4 group=$5 kind=$6 target=$ROOT$2
    if [ -e "$target" ]; then
        say "kept existing $dest"
    else
        mkdir -p "$(dirname "$target")"
        cp "$src" "$target.tmp.$$"
        ensure_attrs "$target.tmp.$$" "$mode" "$owner" "$group"
        mv -n "$target.tmp.$$" "$target"
        rm -f "$target.tmp.$$"
        say "installed $dest"
        [ "$kind" != udev ] || CHANGED_UDEV=1
    fi
    record "$kind" "$mode" "$owner" "$group" "$dest"
}

make_dir() {  # make_dir PATH MODE OWNER GROUP KIND
    mkdir -p "$ROOT$1"
    ensure_attrs "$ROOT$1" "$2" "$3" "$4"
    record "$5" "$2" "$3" "$4" "$1"
}

# Whether the service account exists with every group the snippet gives it.
account_complete() {
    [ -n "$(uid_of "$SERVICE_USER")" ] || return 1
    local group
    for group in $(awk '$1 == "m" { print $3 }' "$HERE/$NAME.sysusers"); do
        awk -F: -v g="$group" -v u="$SERVICE_USER" \
            '$1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) found = 1 }
             END { exit !found }' "$ROOT/etc/group" || return 1
    done
}

apply_sysusers() {
    # systemd-sysusers touches the account files' directory even with nothing to do.
    if account_complete; then return; fi
    if [ "$STAGING" = 1 ]; then
        systemd-sysusers --root="$ROOT" "$NAME.conf" >/dev/null
    else
        systemd-sysusers "$NAME.conf"
    fi
}

apply_tmpfiles() {
    if [ "$STAGING" = 1 ]; then
        # systemd-tmpfiles --root resolves user names on this machine, not in the staging
        # tree: give it the same lines with the staged tree's numeric ids.
        local rendered uid gid
        rendered=$(mktemp)
        uid=$(uid_of "$SERVICE_USER"); gid=$(gid_of "$SERVICE_USER")
        sed -e "s/ $SERVICE_USER $SERVICE_USER / $uid $gid /" \
            -e "s/ root  *$SERVICE_USER / 0 $gid /" "$ROOT$TMPFILES" >"$rendered"
        systemd-tmpfiles --root="$ROOT" --create "$rendered"
        rm -f "$rendered"
    else
        systemd-tmpfiles --create "$NAME.conf"
    fi
}

installed_version() {
    "$ROOT$OPT/venv/bin/python" -c \
        'import importlib.metadata as m; print(m.version("bedside-gateway"))' 2>/dev/null || echo '?'
}

install_venv() {
    local venv=$ROOT$OPT/venv
    if [ ! -x "$venv/bin/python" ]; then
        "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null \
            || die "$PYTHON is not Python 3.11 or newer; install python3 (>= 3.11) or use --python"
        "$PYTHON" -m venv "$venv" \
            || die "cannot create a virtual environment; on Debian: apt install python3-venv"
        say "created virtual environment $OPT/venv"
    fi
    if [ "$UPGRADE" = 1 ] || [ ! -x "$venv/bin/$NAME" ]; then
        # shellcheck disable=SC2086  # PIP_ARGS is a list of options on purpose
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade \
            $PIP_ARGS "$SOURCE" || die "pip could not install $SOURCE into $OPT/venv"
        say "installed $NAME $(installed_version) into $OPT/venv"
    else
        say "kept the installed $NAME $(installed_version); use --upgrade to reinstall"
    fi
    record venv 0755 root root "$OPT/venv"
}

install_link() {
    local target=$OPT/venv/bin/$NAME
    mkdir -p "$ROOT$(dirname "$LINK")"
    if [ "$(readlink "$ROOT$LINK" 2>/dev/null)" != "$target" ]; then
        ln -sfn "$target" "$ROOT$LINK"
        say "linked $LINK -> $target"
    fi
    record link 0777 root root "$LINK"
}

render_config() {  # the shipped simulated ward, with its state in the service's directory
    sed -e 's|^data_dir = "var" *#.*$|data_dir = "/var/lib/bedside-gateway"  # the unit passes --data-dir too|' \
        "$REPO/config.toml"
}

# 32 random bytes as one line of base64: the key file format gateway/twin/crypto.py reads.
new_key() { head -c 32 /dev/urandom | base64 -w0; echo; }

install_key() {
    if [ -e "$ROOT$CRED_FILE" ]; then
        say "kept existing key (systemd credential $CRED_FILE)"
        record keydir 0700 root root "$CREDSTORE"
        record key 0600 root root "$CRED_FILE"
        return
    fi
    if [ -e "$ROOT$KEY_FILE" ]; then
        say "kept existing key file $KEY_FILE"
        record key 0600 "$SERVICE_USER" "$SERVICE_USER" "$KEY_FILE"
        return
    fi
    local mode=$KEY_MODE
    if [ "$mode" = auto ]; then
        if command -v systemd-creds >/dev/null 2>&1; then mode=creds; else mode=file; fi
    fi
    if [ "$mode" = creds ]; then
        command -v systemd-creds >/dev/null 2>&1 || die "--key-mode creds: systemd-creds not found"
        make_dir "$CREDSTORE" 0700 root root keydir
        local tmp
        tmp=$(mktemp "$ROOT$CREDSTORE/.$CREDENTIAL.XXXXXX")
        # The plain key only ever passes through this pipe, never a file.
        if [ "$STAGING" = 1 ]; then
            # Seal with the staged tree's own host key, as the box would with its own.
            new_key | SYSTEMD_CREDENTIAL_SECRET="$ROOT/var/lib/systemd/credentials.secret" \
                systemd-creds encrypt --with-key=host --name="$CREDENTIAL" - "$tmp" 2>/dev/null \
                || { rm -f "$tmp"; die "systemd-creds could not encrypt the key"; }
        else
            # auto: TPM2-sealed (and host key) where a TPM exists, host key otherwise.
            new_key | systemd-creds encrypt --name="$CREDENTIAL" - "$tmp" \
                || { rm -f "$tmp"; die "systemd-creds could not encrypt the key"; }
        fi
        chmod 0600 "$tmp"
        ln "$tmp" "$ROOT$CRED_FILE" && rm -f "$tmp" || { rm -f "$tmp"; die "key appeared meanwhile"; }
        say "created the key-encryption key, encrypted with systemd-creds: $CRED_FILE"
        record key 0600 root root "$CRED_FILE"
        KEY_CREATED=creds
    else
        local dir=$ROOT$STATE/keys tmp uid gid
        uid=$(uid_of "$SERVICE_USER"); gid=$(gid_of "$SERVICE_USER")
        tmp=$(mktemp "$dir/.kek.XXXXXX")  # mktemp creates it 0600
        new_key >"$tmp"
        chown "$uid:$gid" "$tmp"
        sync "$tmp"
        ln "$tmp" "$ROOT$KEY_FILE" && rm -f "$tmp" || { rm -f "$tmp"; die "key appeared meanwhile"; }
        say "created the key-encryption key file $KEY_FILE (mode 0600, no systemd-creds)"
        record key 0600 "$SERVICE_USER" "$SERVICE_USER" "$KEY_FILE"
        KEY_CREATED=file
    fi
}

write_manifest() {
    local tmp
    tmp=$(mktemp)  # outside the tree: a second run must not even touch its directory
    {
        echo "# bedside-gateway install manifest: kind mode owner group path"
        echo "# kinds: file/link/venv/dir are removed by --uninstall; config, udev, data and"
        echo "# key are kept unless --purge."
        printf '%s\n' "${MANIFEST_LINES[@]}"
    } >"$tmp"
    if cmp -s "$tmp" "$ROOT$MANIFEST"; then
        rm -f "$tmp"
    else
        cp "$tmp" "$ROOT$MANIFEST"
        rm -f "$tmp"
        chmod 0644 "$ROOT$MANIFEST"
    fi
}

do_install() {
    KEY_CREATED=""
    echo "installing $NAME${ROOT:+ into staging root $ROOT}"
    for tool in systemd-sysusers systemd-tmpfiles; do
        command -v "$tool" >/dev/null || die "$tool not found; install the systemd package"
    done
    # The account first: everything after it is owned by it.
    install_file "$HERE/$NAME.sysusers" "$SYSUSERS" 0644 root root file || true
    apply_sysusers
    install_file "$HERE/$NAME.tmpfiles" "$TMPFILES" 0644 root root file || true
    apply_tmpfiles
    record data 0700 "$SERVICE_USER" "$SERVICE_USER" "$STATE"
    record data 0700 "$SERVICE_USER" "$SERVICE_USER" "$STATE/keys"
    record config 0750 root "$SERVICE_USER" "$CONFIG_DIR"
    if install_file "$HERE/$NAME.service" "$UNIT" 0644 root root file; then CHANGED_UNIT=1; fi
    install_once "$HERE/99-bedside-serial.rules" "$UDEV_RULES" 0644 root root udev
    make_dir "$OPT" 0755 root root dir
    install_venv
    install_link
    make_dir "$OPT/docs" 0755 root root dir
    install_file "$REPO/docs/TECHNICIAN.md" "$OPT/docs/TECHNICIAN.md" 0644 root root file || true
    local rendered
    rendered=$(mktemp)
    render_config >"$rendered"
    install_once "$rendered" "$CONFIG" 0640 root "$SERVICE_USER" config
    rm -f "$rendered"
    install_key
    record file 0644 root root "$MANIFEST"
    write_manifest

    if [ "$STAGING" = 1 ]; then
        echo "staged in $ROOT; nothing was enabled or started"
        return
    fi
    if [ "$CHANGED_UDEV" = 1 ]; then
        udevadm control --reload || true
        udevadm trigger --subsystem-match=tty || true
    fi
    systemctl daemon-reload
    systemctl enable --quiet "$NAME.service"
    if [ "$CHANGED_UNIT" = 1 ] || [ "$UPGRADE" = 1 ]; then
        systemctl restart "$NAME.service"
    else
        systemctl start "$NAME.service"
    fi
    cat <<EOF

$NAME is installed, enabled and started.
Next:
  1. Describe the ward: sudo nano $CONFIG   (then: sudo $NAME check-config --config $CONFIG)
  2. Name each USB adapter: $NAME scan --udev-rule bed1-oximeter --port /dev/ttyUSB0
  3. Apply:  sudo systemctl restart $NAME   and check:  $NAME status --config $CONFIG
  4. Logs:   journalctl -u $NAME -f
EOF
    if [ -n "$KEY_CREATED" ]; then
        cat <<EOF
  5. BACK UP THE KEY NOW (without it the stored data cannot be read):
       docs/TECHNICIAN.md, "Backup and key recovery"
EOF
    fi
    echo "Guide: $OPT/docs/TECHNICIAN.md"
}

remove_path() {
    local path=$ROOT$1
    if [ -L "$path" ] || [ -e "$path" ]; then
        rm -rf -- "$path"
        say "removed $1"
    fi
}

do_uninstall() {
    echo "removing $NAME${ROOT:+ from staging root $ROOT}"
    if [ "$STAGING" = 0 ] && command -v systemctl >/dev/null; then
        systemctl disable --now "$NAME.service" >/dev/null 2>&1 || true
    fi
    local kind mode owner group path
    local -a keep=()
    if [ -f "$ROOT$MANIFEST" ]; then
        while read -r kind mode owner group path; do
            case "$kind" in
                ''|'#'*) continue ;;
                file|link|venv|dir) ;;
                *) keep+=("$path"); continue ;;
            esac
            [ "$path" = "$MANIFEST" ] || remove_path "$path"
        done <"$ROOT$MANIFEST"
    fi
    # Whatever the manifest said (or if it is gone), the program's own files go.
    for path in "$UNIT" "$SYSUSERS" "$TMPFILES" "$LINK" "$OPT"; do remove_path "$path"; done
    if [ "$PURGE" = 1 ]; then
        for path in "$CONFIG_DIR" "$STATE" "$CRED_FILE" "$UDEV_RULES"; do remove_path "$path"; done
        # The credential store may hold other services' credentials: only an empty one goes.
        rmdir "$ROOT$CREDSTORE" 2>/dev/null || true
        if grep -q "^$SERVICE_USER:" "$ROOT/etc/passwd" 2>/dev/null; then
            if [ "$STAGING" = 1 ]; then userdel --root "$ROOT" "$SERVICE_USER"
            else userdel "$SERVICE_USER"; fi
            say "removed user $SERVICE_USER"
        fi
        if grep -q "^$SERVICE_USER:" "$ROOT/etc/group" 2>/dev/null; then
            if [ "$STAGING" = 1 ]; then groupdel --root "$ROOT" "$SERVICE_USER"
            else groupdel "$SERVICE_USER"; fi
        fi
    else
        echo "kept data, key and config: ${keep[*]:-$STATE $CONFIG_DIR}"
        echo "(remove them too with --uninstall --purge; the data is unreadable without the key)"
    fi
    if [ "$STAGING" = 0 ] && command -v systemctl >/dev/null; then
        systemctl daemon-reload || true
    fi
}

if [ "$ACTION" = install ]; then do_install; else do_uninstall; fi
