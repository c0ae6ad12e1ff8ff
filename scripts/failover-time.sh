#!/usr/bin/env bash
# Measures how long a client waits for a write when the leader dies: starts a local
# three-node cluster (release binaries), then ROUNDS times SIGKILLs the leader and runs one
# `myraft put` at once, timing from the kill to its acknowledgement. The
# killed node is restarted as `myraft local` started it, so every round begins with three
# nodes. Prints each time, then min/median/max.
#
#   scripts/failover-time.sh                    # after `cargo build --release`
#   BASE_PORT=7100 ROUNDS=5 scripts/failover-time.sh
#
# A measurement, not a test: the figures depend on the election timeout (250-500 ms by
# default), the client's search for the new leader, and on how busy the machine is.
set -euo pipefail

cd "$(dirname "$0")/.."

BASE_PORT="${BASE_PORT:-7100}"
ROUNDS="${ROUNDS:-5}"
STEP_TIMEOUT_S="${STEP_TIMEOUT_S:-30}"
BIN="$PWD/target/release"
ENTRANCE="127.0.0.1:$BASE_PORT"

for program in myraft myraft-node myraft-entrance; do
    [ -x "$BIN/$program" ] || {
        echo "failover-time: $BIN/$program is missing; run \`cargo build --release\` first" >&2
        exit 2
    }
done

DIR="$(mktemp -d -t myraft-failover.XXXXXX)"
LOCAL_PID=""
RESTARTED=()

cleanup() {
    # Nodes restarted here are not children of `myraft local`, so they are ended here.
    for pid in "${RESTARTED[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    if [ -n "$LOCAL_PID" ]; then
        kill -TERM "$LOCAL_PID" 2>/dev/null || true
        wait "$LOCAL_PID" 2>/dev/null || true
    fi
    for pid in "${RESTARTED[@]}"; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    echo "failover-time: cluster stopped; data and logs in $DIR"
}
trap cleanup EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

status_json() { "$BIN/myraft" --entrance "$ENTRANCE" --json --timeout-ms 1000 status 2>/dev/null; }

# Waits until the entrance reports a leader and three members that are up.
wait_healthy() {
    local deadline=$(( $(date +%s) + STEP_TIMEOUT_S ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if status_json | jq -e '.leader != null and (.members | length) == 3
                and all(.members[]; .health == "up" and .voter)' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "failover-time: the cluster did not become healthy within ${STEP_TIMEOUT_S} s" >&2
    status_json >&2 || true
    exit 1
}

echo "== myraft local --nodes 3 --base-port $BASE_PORT --dir $DIR"
"$BIN/myraft" local --nodes 3 --base-port "$BASE_PORT" --dir "$DIR" >"$DIR/local.out" 2>&1 &
LOCAL_PID=$!
wait_healthy

TIMES=()
for round in $(seq 1 "$ROUNDS"); do
    leader="$(status_json | jq -r '.leader')"
    index="${leader#n}"
    port=$(( BASE_PORT + index ))
    pid="$(pgrep -f -- "myraft-node --name $leader --listen 127.0.0.1:$port" | head -n 1 || true)"
    [ -n "$pid" ] || { echo "failover-time: no process found for leader $leader" >&2; exit 1; }

    kill -KILL "$pid"
    killed_at="$(now_ms)"
    deadline=$(( killed_at + STEP_TIMEOUT_S * 1000 ))
    # One `myraft put`, as a user would type it (default timeout, 5 s): the client looks
    # for the new leader itself. Repeated only if it gives up.
    until "$BIN/myraft" --entrance "$ENTRANCE" --json put k "v$round" >/dev/null 2>&1; do
        if [ "$(now_ms)" -ge "$deadline" ]; then
            echo "failover-time: no write acknowledged within ${STEP_TIMEOUT_S} s" >&2
            exit 1
        fi
    done
    elapsed=$(( $(now_ms) - killed_at ))
    TIMES+=("$elapsed")
    echo "round $round: killed leader $leader (pid $pid); write acknowledged after $elapsed ms"

    # The same flags `myraft local` gives its nodes; the data dir brings it back as itself.
    "$BIN/myraft-node" --name "$leader" --listen "127.0.0.1:$port" --entrance "$ENTRANCE" \
        --data-dir "$DIR/$leader" >>"$DIR/$leader.log" 2>&1 &
    RESTARTED+=("$!")
    # Not a job of this shell: the next round SIGKILLs it, and bash would report that.
    disown "$!"
    wait_healthy
done

sorted=($(printf '%s\n' "${TIMES[@]}" | sort -n))
count=${#sorted[@]}
if (( count % 2 )); then
    median=${sorted[$(( count / 2 ))]}
else
    median=$(( (sorted[count / 2 - 1] + sorted[count / 2]) / 2 ))
fi
echo "kill-to-acknowledged-write (ms): ${TIMES[*]}"
echo "min ${sorted[0]} ms, median $median ms, max ${sorted[$(( count - 1 ))]} ms ($count rounds, $(nproc) cores)"
