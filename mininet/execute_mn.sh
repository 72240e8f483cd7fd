#!/usr/bin/env bash
# The natchat NAT lab (topology and NAT modes: mininet/topo.py).
#
#   sudo bash mininet/execute_mn.sh [--mode LAB]                   open a lab in the Mininet CLI
#       LAB: home (the default), bare, symmetric, hairpin, tiers:A-B (A, B: none, open,
#       moderate, strict; e.g. tiers:moderate-strict), cgnat, cgnat-hairpin
#   sudo bash mininet/execute_mn.sh --test [-v] [SCENARIO...]      run the scenarios unattended
#   sudo bash mininet/execute_mn.sh --test --trace SCENARIO        ... recording what each router
#                                                                  did, and print a ladder of it
#   sudo bash mininet/execute_mn.sh --test nat-matrix              every NAT tier against every other
#   sudo bash mininet/execute_mn.sh --test ladder                  the whole ladder of bad links
#
# Installs the Debian packages it needs when they are missing, builds natchat (cargo build
# --release; NATCHAT=/path/to/natchat skips that), and leaves no lab behind: the Python side
# stops the lab in a finally block, and the EXIT trap below removes what a killed lab left.
# It touches nothing it did not make: another lab running at the same time is left alone.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
usage="usage: $0 [--mode LAB] | --test [-v] [--trace] [SCENARIO...]"
labs='home, bare, symmetric, hairpin, tiers:A-B, cgnat, cgnat-hairpin (A and B each none, open, moderate or strict)'
mode_given=0

args=("$@")
test_mode=0
mode=home
passthrough=()
while [ $# -gt 0 ]; do
    case "$1" in
        --test) test_mode=1 ;;
        --mode) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; mode=$2; mode_given=1; shift ;;
        --mode=*) mode=${1#--mode=}; mode_given=1 ;;
        -h|--help) echo "$usage"; exit 0 ;;
        *) passthrough+=("$1") ;;
    esac
    shift
done
# The labs of mininet/topo.py (LABS), checked here before anything is installed or built.
shopt -s extglob
case "$mode" in
    home|bare|symmetric|hairpin|tiers|cgnat|cgnat-hairpin) ;;
    tiers:@(none|open|moderate|strict)-@(none|open|moderate|strict)) ;;
    *) echo "execute_mn.sh: unknown lab '$mode': one of $labs" >&2; exit 2 ;;
esac
if [ "$test_mode" = 1 ] && [ "$mode_given" = 1 ]; then
    echo "execute_mn.sh: --mode is for the CLI; --test sets each scenario's NAT mode itself" >&2
    exit 2
fi
if [ "$test_mode" = 0 ] && [ ${#passthrough[@]} -gt 0 ]; then
    echo "$usage" >&2
    exit 2
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "execute_mn.sh: Mininet needs root: sudo bash $0${args[*]:+ ${args[*]}}" >&2
    exit 1
fi

# Mininet and the router commands live in sbin, which a user's PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# --- Debian packages ------------------------------------------------------------------
# mininet (with /usr/bin/python3), iptables for the routers, iproute2 for the links,
# bridge-utils for the Linux-bridge switches, ping for the lab's own reachability checks,
# conntrack to empty a router's table when the NAT-tier matrix changes its tier, tcpdump for
# bare-heal's captures, libnetfilter-queue1 for impair.py (links impaired without netem).
packages_missing() {
    for tool in mn mnexec iptables ip brctl ping conntrack tcpdump; do
        command -v "$tool" >/dev/null || return 0
    done
    /usr/bin/python3 -c 'import mininet.net' 2>/dev/null || return 0
    /sbin/ldconfig -p | grep -q 'libnetfilter_queue\.so\.1' || return 0
    return 1
}
if packages_missing; then
    echo "*** Installing Debian packages: mininet iptables iproute2 bridge-utils iputils-ping conntrack tcpdump libnetfilter-queue1"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q mininet iptables iproute2 bridge-utils iputils-ping conntrack tcpdump \
        libnetfilter-queue1
fi

# --- natchat --------------------------------------------------------------------------
# cargo decides whether anything is out of date (a build with nothing to do takes a moment).
# Under sudo it builds as the calling user, so that target/ does not become root's.
find_cargo() {
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        local home
        home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        if [ -x "$home/.cargo/bin/cargo" ]; then echo "$home/.cargo/bin/cargo"; return; fi
    fi
    if command -v cargo; then return; fi
    if [ -x /root/.cargo/bin/cargo ]; then echo /root/.cargo/bin/cargo; fi
}
natchat=${NATCHAT:-$repo/target/release/natchat}
if [ -z "${NATCHAT:-}" ]; then
    cargo=$(find_cargo)
    if [ -n "$cargo" ]; then
        as_user=()
        if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
            as_user=(runuser -u "$SUDO_USER" --)
        fi
        echo "*** Building natchat: cargo build --release"
        (cd "$repo" && "${as_user[@]}" env PATH="$(dirname "$cargo"):$PATH" \
            "$cargo" build --release --quiet)
    elif [ -x "$natchat" ]; then
        echo "*** No cargo found: using natchat as built at $natchat"
    fi
fi
if [ ! -x "$natchat" ]; then
    echo "execute_mn.sh: no natchat at $natchat, and no cargo to build it" >&2
    exit 1
fi

# --- Cleanup --------------------------------------------------------------------------
# The lab removes only what it made itself. Each run names and marks its devices after its
# own process (mininet/topo.py: Owner): a lab stopped by Mininet leaves nothing, and what a
# killed one leaves (its bridges) is removed by the next run, or by this trap once the Python
# has ended, because its mark names a process that is gone. Never `mn -c`: that would tear
# down every other lab on the machine, someone's own `sudo mn` included.
remove_dead_labs() {
    /usr/bin/python3 "$here/topo.py" --remove-dead || true
}
trap remove_dead_labs EXIT

export PATH="$(dirname "$natchat"):$PATH"   # so that the lab's hosts find `natchat`
export PYTHONDONTWRITEBYTECODE=1             # no root-owned __pycache__ in the work tree
if [ "$test_mode" = 1 ]; then
    # First the unit tests of recorder.py (the ladder --trace prints; no lab, a fraction of a
    # second): a ladder that misreads a capture would mislead whoever reads it.
    if ! unit=$(cd "$here" && /usr/bin/python3 -m unittest test_recorder 2>&1); then
        printf '%s\n' "$unit"
        echo "FAIL mininet/test_recorder.py: the recorder's unit tests"
        exit 1
    fi
    echo "recorder.py unit tests: $(printf '%s\n' "$unit" | grep -o 'Ran [0-9]* tests*'), OK"
    # In the background, so that a signal sent to this script alone (a CI timeout, a kill)
    # is passed on: the Python stops the lab and exits, and only then does the EXIT trap
    # look for leftovers. (Ctrl+C at a terminal reaches this script too: it is passed on
    # the same way.)
    /usr/bin/python3 "$here/scenarios.py" --natchat "$natchat" "${passthrough[@]}" &
    child=$!
    trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM HUP
    while true; do
        status=0
        wait "$child" || status=$?
        kill -0 "$child" 2>/dev/null || break   # wait was cut short by a signal: wait again
    done
    exit "$status"
else
    # In the foreground: the CLI needs the terminal, and Ctrl+C belongs to it. A SIGTERM to
    # this script waits until the CLI has ended, so that the trap never tears down a lab
    # that is still running.
    trap 'true' TERM HUP
    /usr/bin/python3 "$here/topo.py" --mode "$mode"
fi
