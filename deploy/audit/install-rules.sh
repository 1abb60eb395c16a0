#!/bin/sh
# Install docktrail's audit rules on this host (as root).
#
#   install-rules.sh [--dest FILE] [--exec] [--no-load]
#
# --exec also installs the optional exec-session rules (docktrail-exec.rules, see
# its header for their cost) as /etc/audit/rules.d/docktrail-exec.rules, which
# augenrules loads before docktrail.rules.
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
exec_rules=no
while [ $# -gt 0 ]; do
    case $1 in
        --dest) dest=$2; shift 2 ;;
        --no-load) load=no; shift ;;
        --exec) exec_rules=yes; shift ;;
        *) echo "usage: $0 [--dest FILE] [--exec] [--no-load]" >&2; exit 2 ;;
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
# install_rules SOURCE DEST: SOURCE's lines, those for paths this host lacks as comments.
install_rules() {
    : > "$tmp"
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
    done < "$1"
    install -D -m 0640 "$tmp" "$2"
    echo "wrote $2 ($skipped rules skipped for paths this host lacks)"
}
install_rules "$here/docktrail.rules" "$dest"
if [ "$exec_rules" = yes ]; then
    install_rules "$here/docktrail-exec.rules" "$(dirname "$dest")/docktrail-exec.rules"
fi
[ "$load" = yes ] || exit 0
if command -v augenrules >/dev/null 2>&1; then
    augenrules --load
else
    auditctl -R "$dest"
fi
auditctl -l | grep -E 'key=docker(-cli|-exec)?$' || true
