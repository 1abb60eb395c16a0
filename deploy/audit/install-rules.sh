#!/bin/sh
# Install docktrail's audit rules on this host (as root).
#
#   install-rules.sh [--dest FILE] [--no-load]
#
# Copies docktrail.rules to /etc/audit/rules.d/docktrail.rules, leaving out (as
# comments) the watches whose directory this host does not have: auditctl
# refuses a watch there, and one refused line stops augenrules from loading the
# rules after it. Then loads the rules with augenrules (or auditctl -R) and
# lists what is active. --no-load only writes the file.
set -eu
set -f  # rule lines are split into words below: no globbing

here=$(cd "$(dirname "$0")" && pwd)
dest=/etc/audit/rules.d/docktrail.rules
load=yes
while [ $# -gt 0 ]; do
    case $1 in
        --dest) dest=$2; shift 2 ;;
        --no-load) load=no; shift ;;
        *) echo "usage: $0 [--dest FILE] [--no-load]" >&2; exit 2 ;;
    esac
done

# The path a rule line watches: -w PATH, or -F path=PATH / -F dir=PATH.
rule_path() {
    set -- $1
    while [ $# -gt 0 ]; do
        case $1 in
            -w) echo "$2"; return ;;
            path=*|dir=*) echo "${1#*=}"; return ;;
        esac
        shift
    done
}

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
skipped=0
while IFS= read -r line; do
    case $line in
        '#'*|'') echo "$line" >> "$tmp"; continue ;;
    esac
    path=$(rule_path "$line")
    if [ -n "$path" ] && [ ! -e "$path" ] && [ ! -d "$(dirname "$path")" ]; then
        echo "## skipped, no $(dirname "$path") on this host: $line" >> "$tmp"
        skipped=$((skipped + 1))
    else
        echo "$line" >> "$tmp"
    fi
done < "$here/docktrail.rules"

install -D -m 0640 "$tmp" "$dest"
echo "wrote $dest ($skipped rules skipped for paths this host lacks)"
[ "$load" = yes ] || exit 0
if command -v augenrules >/dev/null 2>&1; then
    augenrules --load
else
    auditctl -R "$dest"
fi
auditctl -l | grep -E 'key=docker(-cli)?$' || true
