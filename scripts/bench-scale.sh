#!/usr/bin/env bash
# bench-scale.sh - MyRaft under sustained load beside etcd 3.4, in one run on this machine.
#
#   bash scripts/bench-scale.sh            (from the project root; ~15 min at N=1000000)
#
# 1. The etcd baseline: ../shared/bench/etcd/run-etcd-memory.sh (N puts of 256 B over N keys
#    from 64 clients to 3 members: sustained puts/s, RSS and data dir per member).
# 2. The same load on a 3-node `myraft local` cluster (release build): `myraft bench
#    --clients 64 --ops N --value-size 256 --sequential-keys --read-ratio 0`, with leader
#    elections counted from the term before and after, peak RSS (VmHWM) and data dir per
#    member, and how long after the load every follower is within 10 entries of the leader.
# 3. A follower holding the N keys killed with -9 and restarted with the same flags: time
#    until it answers and has applied what the leader had committed.
# 4. A follower SIGSTOPped for 20 s in the middle of a 64-client write load: time after
#    SIGCONT until it is within one second's writes of the leader, while the load goes on,
#    and the leader's largest RSS meanwhile.
# 5. A follower removed and started again with an empty data dir: time until it has
#    caught up from a snapshot of the N keys.
# 6. The same, but the follower is killed with -9 a third of the way into its snapshot and
#    restarted: the stream that follows continues its partial store (`resumed_after_revision`
#    in `myraft node`), and the time and bytes until it has caught up.
# 7. The same, but the leader is killed with -9 a third of the way in (and restarted): the
#    next leader's stream continues the follower's partial store.
# Then the table. Status comes from the entrance, which probes every 500 ms: times are
# good to about half a second.
#
# Knobs (env): N=1000000  SKIP_ETCD=0 (1: MyRaft only)  PORT=27700  KEEP=0 (1: keep the
# cluster's dir)  STOP_SECS=20  LOAD_SECS=60.
set -euo pipefail

N=${N:-1000000}
SKIP_ETCD=${SKIP_ETCD:-0}
PORT=${PORT:-27700}
KEEP=${KEEP:-0}
STOP_SECS=${STOP_SECS:-20}
LOAD_SECS=${LOAD_SECS:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
E=127.0.0.1:$PORT

command -v jq >/dev/null || { echo "bench-scale: needs jq (apt-get install jq)" >&2; exit 2; }
(cd "$ROOT" && cargo build --release --quiet)

etcd_line="(skipped)"
if [ "$SKIP_ETCD" != 1 ]; then
    echo "== etcd 3.4 baseline (N=$N)" >&2
    etcd_line=$(cd "$ROOT" && N=$N bash ../shared/bench/etcd/run-etcd-memory.sh | tail -1)
    echo "$etcd_line" >&2
fi

W=$(mktemp -d -t myraft-scale.XXXXXX)
LOCAL_PID=
EXTRA_PIDS=()
cleanup() {
    [ -n "$LOCAL_PID" ] && kill "$LOCAL_PID" 2>/dev/null || true
    for p in "${EXTRA_PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
    pkill -f -- "--data-dir $W/" 2>/dev/null || true
    sleep 1
    pkill -9 -f -- "--data-dir $W/" 2>/dev/null || true
    [ "$KEEP" = 1 ] && echo "kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT

m() { "$BIN/myraft" --entrance "$E" --json "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
pid_of() { pgrep -f -- "--name $1 .*--data-dir $W/$1\$" | head -1; }
kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
status() { m status 2>/dev/null || echo '{}'; }
leader() { status | jq -r '.leader // empty'; }
follower() { status | jq -r '[.members[] | select(.role == "follower")][0].name // empty'; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds
    local limit=$1 what=$2; shift 2
    local t0; t0=$(now)
    until "$@"; do
        if awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
            echo "bench-scale: $what did not happen within $limit s" >&2
            return 1
        fi
        sleep 0.1
    done
}

# Every member has applied within SLACK entries of the leader's commit index.
all_within() {
    status | jq -e --argjson s "$1" \
        '.leader != null and ([.members[] | select(.health == "up")] | length) == (.members | length)
         and (.commit_index as $c | all(.members[]; .applied_index + $s >= $c))' >/dev/null
}

# Member $1 answers as a process started at most (now - $3) s ago (not the one before it) and has
# applied at least index $2.
restarted_and_applied() {
    local up
    up=$(awk -v a="$3" -v b="$(now)" 'BEGIN { printf "%d", (b - a + 1) * 1000 }')
    m node "$1" 2>/dev/null | jq -e --argjson i "$2" --argjson up "$up" \
        '.health == "up" and .uptime_ms <= $up and .applied_index >= $i' >/dev/null
}

echo "== MyRaft: 3 nodes in $W" >&2
"$BIN/myraft" local --nodes 3 --dir "$W" --base-port "$PORT" >"$W/local.out" 2>&1 &
LOCAL_PID=$!
wait_for 30 "a leader" bash -c "[ -n \"\$($BIN/myraft --entrance $E --json status 2>/dev/null | jq -r '.leader // empty')\" ]"
term0=$(status | jq '.term')

echo "== MyRaft: $N puts of 256 B over $N keys from 64 clients" >&2
m bench --clients 64 --ops "$N" --value-size 256 --sequential-keys --read-ratio 0 >"$W/bench.json"
t_end=$(now)
wait_for 60 "followers within 10 entries" all_within 10
catchup=$(since "$t_end")
term1=$(status | jq '.term')
elections=$((term1 - term0))
puts=$(jq '.ops_per_s | floor' "$W/bench.json")
p99=$(jq '.write_p99_ms' "$W/bench.json")
p999=$(jq '.write_p999_ms' "$W/bench.json")
errors=$(jq '.errors' "$W/bench.json")
hwm=""; rss=""; du=""
for n in n1 n2 n3; do
    p=$(pid_of $n)
    hwm+="$(kib "$p" VmHWM) "
    rss+="$(kib "$p" VmRSS) "
    du+="$(du -sm "$W/$n" | cut -f1) "
done
echo "myraft: $puts puts/s, $errors errors, p99 $p99 ms, p99.9 $p999 ms, $elections elections; peak RSS KiB $hwm; RSS KiB $rss; data dir MiB $du; followers within 10 entries ${catchup} s after" >&2

echo "== MyRaft: kill -9 a follower and restart it" >&2
victim=$(follower)
vp=$(pid_of "$victim")
cmd=$(tr '\0' '\n' <"/proc/$vp/cmdline")
target=$(status | jq '.commit_index')
kill -9 "$vp"
# The kernel releases the data dir's lock once the process is gone; then restart it.
wait_for 10 "$victim to die" flock -n "$W/$victim/LOCK" true
t0=$(now)
mapfile -t argv <<<"$cmd"
"${argv[@]}" >>"$W/$victim.restart.log" 2>&1 &
EXTRA_PIDS+=($!)
wait_for 60 "$victim up and caught up" restarted_and_applied "$victim" "$target" "$t0"
restart=$(since "$t0")
echo "restart of $victim: up and caught up to index $target in $restart s" >&2

echo "== MyRaft: SIGSTOP a follower for $STOP_SECS s during a ${LOAD_SECS} s write load" >&2
m bench --clients 64 --duration "$LOAD_SECS" --value-size 256 --sequential-keys --read-ratio 0 \
    >"$W/load.json" 2>"$W/load.err" &
LOAD=$!
sleep 10
lname=$(leader); lp=$(pid_of "$lname")
stopped=$(follower); sp=$(pid_of "$stopped")
kill -STOP "$sp"
max_rss=0
sample_rss() { local r; r=$(kib "$lp" VmRSS); [ "$r" -gt "$max_rss" ] && max_rss=$r; true; }
for _ in $(seq 1 $((STOP_SECS * 5))); do sample_rss; sleep 0.2; done
kill -CONT "$sp"
t_cont=$(now)
# Caught up: applied at least what the leader had committed one second earlier.
declare -a hist_t=() hist_c=()
stop_catchup=""
while kill -0 "$LOAD" 2>/dev/null; do
    sample_rss
    s=$(status)
    t=$(now)
    hist_t+=("$t"); hist_c+=("$(jq '.commit_index // 0' <<<"$s")")
    applied=$(jq --arg n "$stopped" '[.members[] | select(.name == $n) | .applied_index][0] // 0' <<<"$s")
    for i in "${!hist_t[@]}"; do
        if awk -v a="${hist_t[$i]}" -v b="$t" 'BEGIN { exit !(b - a >= 1.0 && b - a < 1.5) }' \
            && [ "$applied" -ge "${hist_c[$i]}" ]; then
            stop_catchup=$(since "$t_cont")
        fi
    done
    [ -n "$stop_catchup" ] && break
    sleep 0.2
done
wait "$LOAD" || true
[ -n "$stop_catchup" ] || stop_catchup="not within the load"
load_puts=$(jq '.ops_per_s | floor' "$W/load.json" 2>/dev/null || echo "?")
echo "SIGSTOP of $stopped: caught up ${stop_catchup} s after SIGCONT while the load ran ($load_puts puts/s); leader RSS max $max_rss KiB" >&2

echo "== MyRaft: remove a follower and rejoin it with an empty data dir" >&2
wait_for 60 "followers within 10 entries" all_within 10
gone=$(follower); gp=$(pid_of "$gone")
cmd=$(tr '\0' '\n' <"/proc/$gp/cmdline")
m remove "$gone" >/dev/null
wait_for 30 "$gone to exit" bash -c "! kill -0 $gp 2>/dev/null"
rm -rf "${W:?}/$gone"
target=$(status | jq '.commit_index')
t0=$(now)
mapfile -t argv <<<"$cmd"
"${argv[@]}" >>"$W/$gone.rejoin.log" 2>&1 &
EXTRA_PIDS+=($!)
# `myraft local` approves its own nodes' joins; approve here too in case it has stopped.
for _ in $(seq 1 50); do m approve "$gone" >/dev/null 2>&1 && break; sleep 0.2; done || true
wait_for 300 "$gone rejoined and caught up" restarted_and_applied "$gone" "$target" "$t0"
rejoin=$(since "$t0")
keys=$(m node "$gone" | jq '.keys')
echo "rejoin of $gone with an empty data dir: caught up to index $target ($keys keys) in $rejoin s" >&2

# Receiving transfer of member $1 as "bytes_done bytes_total resumed_after_revision peer", if any.
receiving() {
    m node "$1" 2>/dev/null | jq -r '[.transfers[]? | select(.direction == "receiving")][0]
        | select(. != null) | "\(.bytes_done) \(.bytes_total) \(.resumed_after_revision) \(.peer)"'
}

# Removes a follower, empties its data dir and starts it again; sets rj_name, rj_argv, rj_t0.
rejoin_empty() {
    wait_for 60 "followers within 10 entries" all_within 10
    rj_name=$(follower)
    local p; p=$(pid_of "$rj_name")
    local c; c=$(tr '\0' '\n' <"/proc/$p/cmdline")
    m remove "$rj_name" >/dev/null
    wait_for 30 "$rj_name to exit" bash -c "! kill -0 $p 2>/dev/null"
    rm -rf "${W:?}/$rj_name"
    mapfile -t rj_argv <<<"$c"
    rj_t0=$(now)
    "${rj_argv[@]}" >>"$W/$rj_name.rejoin.log" 2>&1 &
    EXTRA_PIDS+=($!)
    for _ in $(seq 1 50); do m approve "$rj_name" >/dev/null 2>&1 && break; sleep 0.2; done || true
}

# Waits until member $1 has received a third of its snapshot; prints the bytes it has.
third_in() {
    local r=""
    for _ in $(seq 1 3000); do
        r=$(receiving "$1")
        if [ -n "$r" ] && awk -v d="${r%% *}" -v t="$(cut -d' ' -f2 <<<"$r")" 'BEGIN { exit !(t > 0 && d * 3 >= t) }'; then
            echo "${r%% *}"
            return 0
        fi
        sleep 0.05
    done
    echo "bench-scale: $1 never got a third of a snapshot" >&2
    return 1
}

# Polls member $1 until it has applied index $2, remembering the first transfer it showed that
# continued a partial store and the most bytes of it received; sets rs_after, rs_peer, rs_bytes.
follow_resume() {
    rs_after=0; rs_peer=""; rs_bytes=0
    local t0; t0=$(now)
    until m node "$1" 2>/dev/null | jq -e --argjson i "$2" '.applied_index >= $i' >/dev/null; do
        local r; r=$(receiving "$1")
        if [ -n "$r" ]; then
            read -r done total after peer <<<"$r"
            if [ "$after" -gt 0 ]; then
                [ "$rs_after" = 0 ] && { rs_after=$after; rs_peer=$peer; }
                [ "$done" -gt "$rs_bytes" ] && rs_bytes=$done
            fi
        fi
        if awk -v a="$t0" -v b="$(now)" 'BEGIN { exit !(b - a > 300) }'; then
            echo "bench-scale: $1 did not catch up within 300 s" >&2
            return 1
        fi
        sleep 0.1
    done
}

restart_cmd() { # restart_cmd NAME ARGV...: waits for NAME's lock to be free, starts ARGV
    local name=$1; shift
    wait_for 10 "$name to die" flock -n "$W/$name/LOCK" true
    "$@" >>"$W/$name.restart.log" 2>&1 &
    EXTRA_PIDS+=($!)
}

# kill_mid_snapshot follower|leader: rejoins a follower empty, kills the follower or the leader
# with -9 a third of the way into its snapshot, restarts it; sets km_line to what followed.
kill_mid_snapshot() {
    rejoin_empty
    local target had victim
    target=$(status | jq '.commit_index')
    had=$(third_in "$rj_name")
    if [ "$1" = follower ]; then
        victim=$rj_name
    else
        victim=$(leader)
    fi
    local vp; vp=$(pid_of "$victim")
    local -a vargv
    mapfile -t vargv < <(tr '\0' '\n' <"/proc/$vp/cmdline")
    kill -9 "$vp"
    local t_kill; t_kill=$(now)
    restart_cmd "$victim" "${vargv[@]}"
    follow_resume "$rj_name" "$target"
    km_line="$rj_name had $had bytes when $victim was killed; continued after revision $rs_after from $rs_peer ($rs_bytes bytes more); caught up $(since "$t_kill") s after the kill"
}

echo "== MyRaft: a follower killed with -9 a third of the way into its snapshot" >&2
kill_mid_snapshot follower
fr_line=$km_line
echo "follower killed mid-snapshot: $fr_line" >&2

echo "== MyRaft: the leader killed with -9 a third of the way into a follower's snapshot" >&2
kill_mid_snapshot leader
lr_line=$km_line
echo "leader killed mid-snapshot: $lr_line" >&2

echo
echo "bench-scale $(date -u +%Y-%m-%d), $(nproc) cores, N=$N"
echo "etcd:   $etcd_line"
echo "myraft: $puts puts/s @64, $elections elections, put p99 $p99 ms / p99.9 $p999 ms, peak RSS KiB per member: $hwm; data dir MiB: $du; followers within 10 entries ${catchup} s after the load"
echo "myraft: kill -9 and restart of a follower with the $N keys: up and caught up in $restart s"
echo "myraft: follower SIGSTOPped $STOP_SECS s under load: caught up $stop_catchup s after SIGCONT; leader RSS max $max_rss KiB"
echo "myraft: follower removed and rejoined empty: caught up from a snapshot in $rejoin s"
echo "myraft: follower killed mid-snapshot: $fr_line"
echo "myraft: leader killed mid-snapshot: $lr_line"
if [ "$SKIP_ETCD" != 1 ]; then
    erps=$(sed -E 's/.*\(([0-9]+) puts\/s.*/\1/' <<<"$etcd_line")
    erss=$(sed -E 's/.*RSS KiB per member: ([0-9 ]+);.*/\1/' <<<"$etcd_line" | tr ' ' '\n' | sort -n | tail -1)
    edu=$(sed -E 's/.*data dir MiB: ([0-9 ]+).*/\1/' <<<"$etcd_line" | tr ' ' '\n' | sort -n | tail -1)
    mrss=$(tr ' ' '\n' <<<"$hwm" | sort -n | tail -1)
    mdu=$(tr ' ' '\n' <<<"$du" | sort -n | tail -1)
    echo
    echo "| | etcd 3.4 | MyRaft | ratio |"
    echo "|---|---|---|---|"
    awk -v e="$erps" -v m="$puts" 'BEGIN { printf "| sustained puts/s | %d | %d | %.2fx |\n", e, m, m / e }'
    echo "| leader elections during the load | 0 (not counted) | $elections | |"
    echo "| put p99 / p99.9 | - | $p99 ms / $p999 ms | |"
    awk -v e="$erss" -v m="$mrss" 'BEGIN { printf "| RSS per member, largest (MiB) | %.0f (at end) | %.0f (peak) | %.2fx |\n", e / 1024, m / 1024, m / e }'
    awk -v e="$edu" -v m="$mdu" 'BEGIN { printf "| data dir, largest (MiB) | %d | %d | %.2fx |\n", e, m, m / e }'
fi
