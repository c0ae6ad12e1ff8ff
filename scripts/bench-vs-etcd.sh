#!/usr/bin/env bash
# bench-vs-etcd.sh - MyRaft beside etcd 3.4, same shapes, in one run on this machine.
#
#   bash scripts/bench-vs-etcd.sh          (from the project root; ~15 min, ~25 with SUSTAINED=1)
#
# 1. etcd: ../shared/bench/etcd/run-etcd-bench.sh with 1 and 64 clients to the leader (one
#    request in flight per client): puts of 256 B to new keys, linearizable reads of a
#    256 B value, SECS seconds each; then ROUNDS kills of the leader, timed to the next
#    acknowledged write.
# 2. MyRaft, a 3-node `myraft local` cluster (release build, fsync on): `myraft bench` with
#    the same shapes (puts: --sequential-keys; reads: linearizable gets of 1000 keys filled
#    with 256 B values first), then scripts/failover-time.sh with ROUNDS kills.
# 3. With SUSTAINED=1: N puts of 256 B over N keys from 64 clients, etcd
#    (../shared/bench/etcd/run-etcd-memory.sh) and MyRaft, with MyRaft's elections counted.
# Then the table, with ratios (MyRaft / etcd; for latencies lower is better) and goals.
# Only ratios within one run count: absolute numbers drift 2x between runs here.
#
# Knobs (env): SECS=8  ROUNDS=7  SUSTAINED=0  N=1000000  PORT=27900  SKIP_ETCD=0
set -euo pipefail

SECS=${SECS:-8}
ROUNDS=${ROUNDS:-7}
SUSTAINED=${SUSTAINED:-0}
N=${N:-1000000}
PORT=${PORT:-27900}
SKIP_ETCD=${SKIP_ETCD:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
E=127.0.0.1:$PORT

command -v jq >/dev/null || { echo "bench-vs-etcd: needs jq (apt-get install jq)" >&2; exit 2; }
(cd "$ROOT" && cargo build --release --quiet)

W=$(mktemp -d -t myraft-vs-etcd.XXXXXX)
LOCAL_PID=
cleanup() {
    [ -n "$LOCAL_PID" ] && kill "$LOCAL_PID" 2>/dev/null || true
    pkill -f -- "--data-dir $W/" 2>/dev/null || true
    sleep 1
    pkill -9 -f -- "--data-dir $W/" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

m() { "$BIN/myraft" --entrance "$E" --json "$@"; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'; }
maxof() { sort -n | tail -1; }

# ---- etcd ---------------------------------------------------------------------------------
declare -A ETCD
if [ "$SKIP_ETCD" != 1 ]; then
    echo "== etcd 3.4: 1 and 64 clients, $SECS s each, $ROUNDS leader kills" >&2
    (cd "$ROOT" && OUT="$W/etcd" REPS=1 CONCS="1 64" TARGETS=leader FAILOVERS="$ROUNDS" SECS="$SECS" \
        bash ../shared/bench/etcd/run-etcd-bench.sh >"$W/etcd.log" 2>&1) ||
        { tail -20 "$W/etcd.log" >&2; echo "bench-vs-etcd: the etcd baseline failed" >&2; exit 1; }
    while IFS=$'\t' read -r op target conc _rep _total ops p50 p99 _; do
        [ "$target" = leader ] || continue
        ETCD[$op.$conc.ops]=$ops; ETCD[$op.$conc.p50]=$p50; ETCD[$op.$conc.p99]=$p99
    done < <(tail -n +2 "$W/etcd/runs.tsv")
    ETCD[fo.median]=$(tail -n +2 "$W/etcd/failover.tsv" | cut -f3 | median)
    ETCD[fo.max]=$(tail -n +2 "$W/etcd/failover.tsv" | cut -f3 | maxof)
    if [ "$SUSTAINED" = 1 ]; then
        echo "== etcd 3.4: $N puts, 64 clients" >&2
        line=$(cd "$ROOT" && N=$N bash ../shared/bench/etcd/run-etcd-memory.sh 2>/dev/null | tail -1)
        ETCD[sustained]=$(sed -E 's/.*\(([0-9]+) puts\/s.*/\1/' <<<"$line")
    fi
fi

# ---- MyRaft -------------------------------------------------------------------------------
start_cluster() { # start_cluster DIR
    "$BIN/myraft" local --nodes 3 --dir "$1" --base-port "$PORT" >"$1.out" 2>&1 &
    LOCAL_PID=$!
    for _ in $(seq 1 300); do
        [ -n "$(m status 2>/dev/null | jq -r '.leader // empty')" ] && return 0
        sleep 0.1
    done
    echo "bench-vs-etcd: the MyRaft cluster found no leader" >&2; exit 1
}
stop_cluster() {
    kill "$LOCAL_PID" 2>/dev/null || true
    wait "$LOCAL_PID" 2>/dev/null || true
    LOCAL_PID=
}

declare -A MR
echo "== MyRaft: 1 and 64 clients, $SECS s each" >&2
start_cluster "$W/short"
for conc in 1 64; do
    m bench --clients "$conc" --duration "$SECS" --value-size 256 --sequential-keys --read-ratio 0 \
        >"$W/put.$conc.json" 2>/dev/null
    MR[put.$conc.ops]=$(jq '.ops_per_s | floor' "$W/put.$conc.json")
    MR[put.$conc.p50]=$(jq '.write_p50_ms' "$W/put.$conc.json")
    MR[put.$conc.p99]=$(jq '.write_p99_ms' "$W/put.$conc.json")
    m bench --clients "$conc" --duration "$SECS" --value-size 256 --keys 1000 --read-ratio 1 \
        >"$W/range.$conc.json" 2>/dev/null
    MR[range.$conc.ops]=$(jq '.ops_per_s | floor' "$W/range.$conc.json")
    MR[range.$conc.p50]=$(jq '.read_p50_ms' "$W/range.$conc.json")
    MR[range.$conc.p99]=$(jq '.read_p99_ms' "$W/range.$conc.json")
done
stop_cluster

echo "== MyRaft: $ROUNDS leader kills (scripts/failover-time.sh)" >&2
BASE_PORT=$((PORT + 50)) ROUNDS=$ROUNDS bash "$ROOT/scripts/failover-time.sh" >"$W/failover.log" 2>&1 ||
    { tail -20 "$W/failover.log" >&2; echo "bench-vs-etcd: failover-time.sh failed" >&2; exit 1; }
times=$(sed -n 's/^kill-to-acknowledged-write (ms): //p' "$W/failover.log")
MR[fo.median]=$(tr ' ' '\n' <<<"$times" | median)
MR[fo.max]=$(tr ' ' '\n' <<<"$times" | maxof)

if [ "$SUSTAINED" = 1 ]; then
    echo "== MyRaft: $N puts, 64 clients" >&2
    start_cluster "$W/sustained"
    term0=$(m status | jq '.term')
    m bench --clients 64 --ops "$N" --value-size 256 --sequential-keys --read-ratio 0 >"$W/sustained.json" 2>/dev/null
    MR[sustained]=$(jq '.ops_per_s | floor' "$W/sustained.json")
    MR[elections]=$(($(m status | jq '.term') - term0))
    stop_cluster
fi

# ---- the table ----------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }'; }
row() { # row LABEL ETCD MYRAFT GOAL
    printf "| %s | %s | %s | %s | %s |\n" "$1" "${2:--}" "${3:--}" "$(ratio "$3" "$2")" "$4"
}
echo
echo "bench-vs-etcd $(date -u +%F), $(nproc) cores, SECS=$SECS, ROUNDS=$ROUNDS"
echo
echo "| | etcd 3.4 | MyRaft | ratio | goal |"
echo "|---|---|---|---|---|"
row "puts/s, 64 clients" "${ETCD[put.64.ops]:-}" "${MR[put.64.ops]}" "≥ 3×"
if [ "$SUSTAINED" = 1 ]; then
    row "puts/s, 64 clients, sustained $N puts" "${ETCD[sustained]:-}" "${MR[sustained]}" "≥ 3× (${MR[elections]} elections)"
fi
row "linearizable reads/s, 64 clients" "${ETCD[range.64.ops]:-}" "${MR[range.64.ops]}" "≥ 5×"
row "puts/s, 1 client" "${ETCD[put.1.ops]:-}" "${MR[put.1.ops]}" ""
row "put p50 ms, 1 client" "${ETCD[put.1.p50]:-}" "${MR[put.1.p50]}" "≤ 0.35×"
row "put p99 ms, 64 clients" "${ETCD[put.64.p99]:-}" "${MR[put.64.p99]}" "≤ 0.5×"
row "read p50 ms, 1 client" "${ETCD[range.1.p50]:-}" "${MR[range.1.p50]}" ""
row "kill -9 leader → next write, median ms" "${ETCD[fo.median]:-}" "${MR[fo.median]}" "< 500 ms"
row "kill -9 leader → next write, max ms" "${ETCD[fo.max]:-}" "${MR[fo.max]}" "< 1000 ms"
