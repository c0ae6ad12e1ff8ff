#!/usr/bin/env bash
# Drives the real console in tmux against a throw-away local cluster and checks what the
# screen says at each step:
#
#   1. `myraft-tui --local 3` starts (160x45) and shows a leader;
#   2. put a key with `p`, read it back with `g`;
#   3. a 4th node (n4) started by hand waits for approval: it shows in the pending pane
#      (Tab), `a` approves it, it shows in the peer table and becomes a voter;
#      the healthy 4-node screen is saved as assets/console.txt;
#   4. stopping n4 asks first (Enter alone answers No), then `s` `y` stops it: it shows down
#      and a leader is still shown;
#   5. `?` opens the help overlay (saved as assets/console-help.txt); at 100x30 nothing
#      essential is cut;
#   6. `q` quits with status 0 and no process of the cluster is left.
#
#   scripts/tui-smoke.sh              # builds release binaries first
#   PROFILE=debug scripts/tui-smoke.sh
#   STEP_TIMEOUT=60 scripts/tui-smoke.sh
#   SAVE_ASSETS=0 scripts/tui-smoke.sh   # leave assets/ alone
#
# The local cluster uses the console's fixed ports: entrance 127.0.0.1:7000, n1..n3 on
# 7001..7003; n4 gets 7004. Needs tmux. Prints PASS/FAIL per check; exits non-zero with the
# last screen on the first failed check.
set -euo pipefail

cd "$(dirname "$0")/.."

PROFILE="${PROFILE:-release}"
STEP_TIMEOUT="${STEP_TIMEOUT:-30}"
SAVE_ASSETS="${SAVE_ASSETS:-1}"
BASE=7000
SESSION="myraft-tui-smoke-$$"
WORK="$(mktemp -d -t myraft-tui-smoke.XXXXXX)"
SCREEN="$WORK/screen.txt"
N4_PID=""
QUIT_SENT=0

command -v tmux >/dev/null || { echo "tui-smoke: tmux is not installed" >&2; exit 2; }

# Processes of this run: the local cluster's (their command lines name its data dir) and n4.
cluster_pids() {
    local dir
    dir="$(local_dir)"
    {
        [ -n "$dir" ] && pgrep -f -- "$dir/" || true
        [ -n "$N4_PID" ] && kill -0 "$N4_PID" 2>/dev/null && echo "$N4_PID" || true
    } | sort -u
}

# The local cluster's directory, from the console's log.
local_dir() {
    grep -oE 'local cluster started dir=[^ ]+' "$WORK/myraft/myraft-tui.log" 2>/dev/null \
        | head -n1 | sed 's/.*dir=//'
}

cleanup() {
    if tmux has-session -t "$SESSION" 2>/dev/null; then
        # Quit the console first, so that it stops the cluster it started.
        if [ "$QUIT_SENT" = 0 ]; then
            tmux send-keys -t "$SESSION" C-c 2>/dev/null || true
            for _ in $(seq 1 75); do
                tmux capture-pane -p -t "$SESSION" 2>/dev/null | grep -q 'myraft-tui exited' && break
                sleep 0.2
            done
        fi
        tmux kill-session -t "$SESSION" 2>/dev/null || true
    fi
    local left
    left="$(cluster_pids | tr '\n' ' ')"
    if [ -n "${left// }" ]; then
        echo "tui-smoke: ending processes this run started: $left" >&2
        # shellcheck disable=SC2086
        kill $left 2>/dev/null || true
    fi
    echo "tui-smoke: console log, n4's log and the last screen are in $WORK"
}
trap cleanup EXIT

pass() { echo "PASS  $*"; }

fail() {
    echo "FAIL  $*" >&2
    echo "---- last screen ----" >&2
    cat "$SCREEN" >&2
    echo "---- console log (tail) ----" >&2
    tail -n 30 "$WORK/myraft/myraft-tui.log" >&2 2>/dev/null || true
    exit 1
}

capture() {
    tmux capture-pane -p -t "$SESSION" >"$SCREEN" 2>/dev/null || true
}

# Polls the screen until it matches the extended regex, or fails after STEP_TIMEOUT s.
wait_for() {
    local pattern="$1" what="$2" deadline=$((SECONDS + STEP_TIMEOUT))
    while :; do
        capture
        if grep -qE -- "$pattern" "$SCREEN"; then
            pass "$what"
            return 0
        fi
        if ! tmux has-session -t "$SESSION" 2>/dev/null; then
            fail "$what (the tmux session ended)"
        fi
        [ "$SECONDS" -lt "$deadline" ] || fail "$what: not shown within ${STEP_TIMEOUT}s (looked for /$pattern/)"
        sleep 0.2
    done
}

# Fails if the screen matches right now.
refute() {
    local pattern="$1" what="$2"
    capture
    if grep -qE -- "$pattern" "$SCREEN"; then fail "$what (found /$pattern/)"; fi
    pass "$what"
}

keys() { tmux send-keys -t "$SESSION" "$@"; }
type_text() { tmux send-keys -t "$SESSION" -l "$1"; }
step() { echo "== $*"; }

# Saves the current screen, without trailing blanks, for the README.
save_asset() {
    [ "$SAVE_ASSETS" = 1 ] || return 0
    sed -e 's/[[:space:]]*$//' "$SCREEN" >"assets/$1"
    pass "saved assets/$1"
}

step "build ($PROFILE)"
if [ "$PROFILE" = release ]; then
    cargo build --release --bins
else
    cargo build --bins
fi
BIN="$PWD/target/$PROFILE"
for b in myraft-tui myraft-node myraft-entrance myraft; do
    [ -x "$BIN/$b" ] || { echo "FAIL  $BIN/$b was not built" >&2; exit 2; }
done
pass "binaries in $BIN"

if command -v ss >/dev/null; then
    busy="$(ss -Hlun | awk '{print $4}' | grep -E ":($BASE|$((BASE + 1))|$((BASE + 2))|$((BASE + 3))|$((BASE + 4)))\$" || true)"
    [ -z "$busy" ] || { echo "FAIL  UDP ports $BASE..$((BASE + 4)) are in use: $busy" >&2; exit 2; }
    pass "UDP ports $BASE..$((BASE + 4)) are free"
fi

step "start: myraft-tui --local 3 in tmux (160x45)"
# The console logs to $XDG_STATE_HOME/myraft/myraft-tui.log; keep it with this run. The
# line after it shows how the console ended, on the restored terminal.
tmux -u new-session -d -s "$SESSION" -x 160 -y 45 \
    "XDG_STATE_HOME='$WORK' '$BIN/myraft-tui' --local 3; echo \"myraft-tui exited with \$?\"; sleep 600"

step "a leader shows"
wait_for '● connected' "connected to the local entrance"
wait_for ' leader n[0-9]+ ' "a leader in the header"
wait_for '│(▶| )n[0-9]+ .* leader ' "a leader row in the peer table"
wait_for '│(▶| )n3 ' "all three nodes in the peer table"

step "put a key (p)"
keys p
wait_for '┌ put ' "the put popup"
type_text "smoke-key"
keys Enter
type_text "smoke-value"
keys Enter
wait_for '✔ put smoke-key = smoke-value  \(revision [0-9 ]+\)' "the put result in the status line"

step "get it back (g)"
keys g
wait_for '┌ get ' "the get popup"
type_text "smoke-key"
keys Enter
wait_for '✔ get smoke-key = smoke-value  \(revision [0-9 ]+, version 1\)' "the get result in the status line"
wait_for 'value  smoke-value' "the value popup"
keys Escape
wait_for ' p put  g get ' "the main screen again"

step "a 4th node waits for approval"
mkdir -p "$WORK/n4"
"$BIN/myraft-node" --name n4 --listen "127.0.0.1:$((BASE + 4))" --entrance "127.0.0.1:$BASE" \
    --data-dir "$WORK/n4" >"$WORK/n4.log" 2>&1 &
N4_PID=$!
pass "started myraft-node n4 (pid $N4_PID, log $WORK/n4.log)"
keys Tab
wait_for "│▶n4 +127\\.0\\.0\\.1:$((BASE + 4)) +waiting " "n4 selected in the pending pane"
refute "│(▶| )n4 +127\\.0\\.0\\.1:$((BASE + 4)) +(leader|follower|learner|candidate) " "n4 not in the peer table before approval"
grep -q 'waiting for approval' "$WORK/n4.log" && pass "n4 says it waits for approval" \
    || fail "n4 does not say it waits for approval: $(tail -n 3 "$WORK/n4.log")"

step "approve it (a)"
keys a
wait_for '✔ approved n4: it joins as a learner' "the approve result"
wait_for "│(▶| )n4 +127\\.0\\.0\\.1:$((BASE + 4)) +(learner|follower) " "n4 in the peer table"
wait_for 'no node is waiting to join' "the pending pane empty again"
wait_for "│(▶| )n4 +127\\.0\\.0\\.1:$((BASE + 4)) +follower +yes +● up " "n4 promoted to voter and up"
# The focus went back to the peers by itself once no join was left to decide.
# Every member up and caught up: the healthy screen for the README.
deadline=$((SECONDS + STEP_TIMEOUT))
while :; do
    capture
    rows="$(grep -cE '│(▶| )n[1-4] +127\.0\.0\.1:[0-9]+ +(leader|follower) +yes +● up ' "$SCREEN" || true)"
    lagging="$(grep -E '│(▶| )n[1-4] +127\.0\.0\.1:[0-9]+ +follower ' "$SCREEN" | grep -cvE ' 0 +[0-9.]+ m?s *│$' || true)"
    if [ "$rows" = 4 ] && [ "$lagging" = 0 ] && grep -q '┌ Node n[1-4] ' "$SCREEN" \
        && grep -qE '│ +127\.0\.0\.1:[0-9]+ (leader|follower) · voter' "$SCREEN"; then
        break
    fi
    [ "$SECONDS" -lt "$deadline" ] || fail "four healthy voters, none trailing, within ${STEP_TIMEOUT}s"
    sleep 0.3
done
pass "four voters up, none trailing the leader"
save_asset console.txt

step "stop n4, asking first (s)"
# Select n4: move down until its row is marked.
for _ in 1 2 3 4; do
    capture
    grep -qE '│▶n4 ' "$SCREEN" && break
    keys j
    sleep 0.3
done
capture
grep -qE '│▶n4 ' "$SCREEN" || fail "n4 cannot be selected in the peer table"
pass "n4 selected in the peer table"
keys s
wait_for 'Stop node n4\?' "the stop confirmation"
keys Enter
wait_for ' p put  g get ' "the confirmation closed by Enter alone"
sleep 0.5
refute "(stop n4…|✔ stop n4)" "no stop request after Enter alone (default No)"
wait_for "│▶n4 .* ● up " "n4 still up"

keys s
wait_for 'Stop node n4\?' "the stop confirmation again"
keys y
wait_for "✔ stop n4: done" "the stop result"
wait_for "│(▶| )n4 .* ● (suspect|down) " "n4 shown as suspect or down"
wait_for "│(▶| )n4 .* ● down " "n4 shown as down"
wait_for "no answer for [0-9.]+ s: these are its last reported figures" "n4's details marked as its last report"
wait_for ' leader n[1-3] ' "a leader still in the header"
wait_for '│(▶| )n[1-3] .* leader +yes +● up ' "a leader row still up in the peer table"
for _ in $(seq 1 50); do kill -0 "$N4_PID" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$N4_PID" 2>/dev/null; then fail "n4's process still runs after the stop"; fi
pass "n4's process ended"

step "help overlay (?)"
keys '?'
wait_for 'keys \(j/k scroll, Esc close\)' "the help overlay"
for entry in 'Ctrl-C +quit, even from a popup' 'a +approve the join' 's +stop its process' \
    'Enter +answer the chosen one; No at first'; do
    wait_for "$entry" "help lists /$entry/"
done
save_asset console-help.txt
keys Escape
wait_for ' p put  g get ' "the main screen again"

step "a 100x30 terminal"
tmux resize-window -t "$SESSION" -x 100 -y 30
wait_for ' leader n[1-3]  term [0-9]+ .*● connected' "the header with leader, term and connection"
wait_for "│(▶| )n4 +127\\.0\\.0\\.1:$((BASE + 4)) " "whole addresses in the peer table"
wait_for ' p put  g get .* q quit' "the whole hint line"

step "quit (q)"
keys q
QUIT_SENT=1
wait_for 'myraft-tui exited with 0' "a clean exit"
refute 'panicked' "no panic message"
dir="$(local_dir)"
[ -n "$dir" ] || fail "the console's log does not name the local cluster's directory"
deadline=$((SECONDS + STEP_TIMEOUT))
while [ -n "$(cluster_pids)" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "processes left after quitting: $(cluster_pids | tr '\n' ' ')"
    sleep 0.2
done
pass "no process of the cluster is left ($dir)"

echo "tui-smoke: all checks passed"
