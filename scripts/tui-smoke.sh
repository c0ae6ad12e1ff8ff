#!/usr/bin/env bash
# Drives the real console in tmux against a throw-away local cluster and checks what the
# screen says at each step: a leader shows, put and get work, stopping a node asks first
# (Enter = No), then stops it, and q quits cleanly.
#
#   scripts/tui-smoke.sh              # builds release binaries first
#   PROFILE=debug scripts/tui-smoke.sh
#   STEP_TIMEOUT=60 scripts/tui-smoke.sh
#
# Not covered: approving a pending join. `--local` auto-approves, so no join ever waits;
# the approve/reject keys are covered by the console's unit tests instead.
#
# Needs tmux. Exits non-zero with the last screen on the first failed check.
set -euo pipefail

cd "$(dirname "$0")/.."

PROFILE="${PROFILE:-release}"
STEP_TIMEOUT="${STEP_TIMEOUT:-30}"
SESSION="myraft-tui-smoke-$$"
WORK="$(mktemp -d -t myraft-tui-smoke.XXXXXX)"
SCREEN="$WORK/screen.txt"

command -v tmux >/dev/null || { echo "tui-smoke: tmux is not installed" >&2; exit 2; }

cleanup() {
    tmux kill-session -t "$SESSION" 2>/dev/null || true
    echo "tui-smoke: console log and last screen in $WORK"
}
trap cleanup EXIT

echo "== build ($PROFILE)"
if [ "$PROFILE" = release ]; then
    cargo build --release --bins
else
    cargo build --bins
fi
BIN="$PWD/target/$PROFILE"
[ -x "$BIN/myraft-tui" ] || { echo "tui-smoke: $BIN/myraft-tui was not built" >&2; exit 2; }

capture() {
    tmux capture-pane -p -t "$SESSION" >"$SCREEN" 2>/dev/null || true
}

fail() {
    echo "tui-smoke: FAILED: $*" >&2
    echo "---- screen ----" >&2
    cat "$SCREEN" >&2
    echo "---- console log (tail) ----" >&2
    tail -n 30 "$WORK/myraft/myraft-tui.log" >&2 2>/dev/null || true
    exit 1
}

# Polls the screen until it matches the extended regex, or fails after STEP_TIMEOUT s.
wait_for() {
    local pattern="$1" what="$2" deadline=$((SECONDS + STEP_TIMEOUT))
    while :; do
        capture
        if grep -qE -- "$pattern" "$SCREEN"; then
            echo "   ok: $what"
            return 0
        fi
        if ! tmux has-session -t "$SESSION" 2>/dev/null; then
            fail "the tmux session ended while waiting for $what"
        fi
        [ "$SECONDS" -lt "$deadline" ] || fail "no $what within ${STEP_TIMEOUT}s (looked for /$pattern/)"
        sleep 0.2
    done
}

# Fails if the screen matches right now.
refute() {
    local pattern="$1" what="$2"
    capture
    if grep -qE -- "$pattern" "$SCREEN"; then fail "$what"; fi
    echo "   ok: not $what"
}

keys() { tmux send-keys -t "$SESSION" "$@"; }
type_text() { tmux send-keys -t "$SESSION" -l "$1"; }

echo "== start: myraft-tui --local 3 in tmux (160x45)"
# The console logs to $XDG_STATE_HOME/myraft/myraft-tui.log; keep it with this run. The
# line after it shows how the console ended, on the restored terminal.
tmux -u new-session -d -s "$SESSION" -x 160 -y 45 \
    "XDG_STATE_HOME='$WORK' '$BIN/myraft-tui' --local 3; echo \"myraft-tui exited with \$?\"; sleep 600"

echo "== a leader shows"
wait_for '● connected' "connection to the local entrance"
wait_for ' leader n[0-9]+ ' "a leader in the header"
wait_for '│(▶| )n[0-9]+ .* leader ' "a leader row in the peer table"

echo "== put"
keys p
wait_for '┌ put ' "the put popup"
type_text "smoke-key"
keys Enter
type_text "smoke-value"
keys Enter
wait_for '✔ put smoke-key = smoke-value  \(revision [0-9 ]+\)' "the put result"

echo "== get"
keys g
wait_for '┌ get ' "the get popup"
type_text "smoke-key"
keys Enter
wait_for '✔ get smoke-key = smoke-value  \(revision [0-9 ]+, version 1\)' "the get result"
wait_for 'value  smoke-value' "the value popup"
keys Escape
wait_for ' p put  g get ' "the main screen again"

echo "== stop a follower, asking first"
# Select the first follower: move down until the marked row is not the leader.
for _ in 1 2 3; do
    capture
    grep -qE '│▶n[0-9]+ +[^ ]+ +leader ' "$SCREEN" || break
    keys j
    sleep 0.2
done
capture
victim="$(grep -oE '│▶n[0-9]+' "$SCREEN" | head -n1 | tr -d '│▶')"
[ -n "$victim" ] || fail "no selected row in the peer table"
echo "   selected $victim"

keys s
wait_for "Stop node $victim\\?" "the stop confirmation"
keys Enter
wait_for ' p put  g get ' "the confirmation closed by Enter (default No)"
refute "stop $victim" "a stop request after answering No"

keys s
wait_for "Stop node $victim\\?" "the stop confirmation again"
keys y
wait_for "✔ stop $victim: done" "the stop result"
wait_for "│(▶| )$victim .* ● (suspect|down) " "$victim shown as suspect or down"
wait_for "│(▶| )$victim .* ● down " "$victim shown as down"

echo "== help"
keys '?'
wait_for 'keys \(j/k scroll, Esc close\)' "the help overlay"
keys Escape
wait_for ' p put  g get ' "the main screen again"

echo "== quit"
keys q
wait_for 'myraft-tui exited with 0' "a clean exit"
refute 'panicked' "a panic message"

echo "tui-smoke: all checks passed"
