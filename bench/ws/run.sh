#!/usr/bin/env bash
# WebSocket relay benchmark: what chatguard costs per relayed WebSocket, in
# memory, throughput and latency, always next to direct connections to the
# same backend in the same run.
#
# Usage (from anywhere):  bash bench/ws/run.sh
# Environment (all optional):
#   PHASES           which parts to run (default "memory throughput latency")
#   IDLE_CLIENTS     idle clients of the small memory measurement (default 1000)
#   MAX_CLIENTS      idle clients of the large one (default auto: as many as the
#                    descriptor limit allows chatguard, which holds 2 per
#                    client, rounded down to a thousand; "" or 0 = skip it)
#   IDLE_KINDS       kinds measured idle (default "sio ws")
#   TP_CLIENTS       concurrent clients of the throughput runs (default "16 64")
#   TP_DURATION      length of each throughput run (default 5s)
#   LIMITED_CLIENTS  client count at which Socket.IO throughput is also measured
#                    through a chatguard with a send-message limit (default 64;
#                    empty = skip)
#   LIMIT_RATE, LIMIT_PERIOD  that limit, per client address (default 1000000 per 1m)
#   LAT_CLIENTS, LAT_RATE     paced latency runs: clients, messages/s each (default 50, 100)
#   LAT_DURATION     length of each latency run (default 6s)
#   ROUNDS           interleaved rounds of every throughput and latency run (default 3)
#   MSG_SIZE         bytes per message, WebSocket payload (default 256)
#   WARMUP           one unmeasured throughput run per target first (default 2s)
#   PING_INTERVAL    the upstream's Engine.IO pingInterval (default 25s)
#   SETTLE           seconds to wait after the SIGUSR2s before reading memory (default 1)
#   IDLE_WAIT        seconds the connected clients stay idle before memory is read
#                    (default 4: chatguard puts a socket quiet for 2 s to sleep,
#                    and its janitor looks once a second)
#   SPREAD=0         all clients from 127.0.0.1 instead of one 127.1.x.y address each
#   QUIET_WAIT       before each throughput/latency run, wait up to this many
#                    seconds for the machine to be idle (< 0.2 CPU busy); 0 = don't (default 10)
#   RETRIES          run again a run during which other processes used more
#                    than 0.25 CPU, up to this many times (default 1)
#   REV              build chatguard from this commit (git archive into the
#                    temporary directory) instead of the working tree, e.g.
#                    REV=HEAD while the tree is half-edited (default: the tree)
#   CG_BIN           benchmark this chatguard binary instead of building one
#                    (an experiment's build, say; REV is then ignored)
#   KEEP_TMP=1       keep the temporary directory (binaries, logs, raw samples)
#   NGINX_WS         1: also time nginx proxying the same WebSockets (a
#                    yardstick, as in bench/http) in the throughput and latency
#                    runs; 0: don't (default 1 when nginx is installed)
#
# What it does:
#  1. Builds chatguard (CGO_ENABLED=0 -trimpath -ldflags '-s -w', as `make
#     build`), bench/ws/upstream and bench/ws/client into a temporary directory.
#  2. Memory, for each kind (sio: Socket.IO on /socket.io/?EIO=4&transport=websocket,
#     CONNECT `40`, pings answered; ws: a plain WebSocket on /ws/echo that sent
#     one message and got its echo) and each count (IDLE_CLIENTS, MAX_CLIENTS):
#     a fresh upstream, then the clients straight to it ("direct"); then a fresh
#     upstream and a fresh chatguard, and the clients through chatguard. Each
#     process's memory is read after returning free memory to the OS: SIGUSR2
#     twice, 0.5 s apart (a GC, debug.FreeOSMemory; the second one also frees
#     what sync.Pools kept through the first), then SETTLE seconds. Per client:
#     (VmRSS after the clients connected - VmRSS before) / clients; the same
#     for Pss (smaps_rollup) and for chatguard's go_goroutines,
#     go_memstats_heap_inuse_bytes and go_memstats_stack_inuse_bytes from its
#     admin /metrics.
#  3. Throughput: C clients (each TP_CLIENTS) each send a MSG_SIZE message and
#     wait for the answer, for TP_DURATION: ws (echo) and sio (events with an
#     ack, `42<id>["send-message",{…}]` → `43<id>[…]`, websocket.events: [],
#     so that no limit applies); direct and through chatguard interleaved in
#     ROUNDS rounds (the order flips every round); sio at LIMITED_CLIENTS also
#     through a second chatguard whose send-message has a generous limit, so
#     that the limiter's cost shows. Medians over rounds; ratio to direct.
#  4. Latency: LAT_CLIENTS clients each sending LAT_RATE messages a second (a
#     fixed schedule at a random phase), well below saturation; round trips of
#     all rounds pooled; p50/p99/p99.9 per target and what chatguard adds.
#  5. Prints the summary and writes it to bench/results/ws-<UTC date>.txt.
#
# chatguard runs with LOG_LEVEL=warn, CHATGUARD_WS_MAX_SOCKETS_PER_IP=0,
# CHATGUARD_WS_MAX_SOCKETS_PER_USER=0, its rate-limit file, logs and profiles
# under the temporary directory, and a generated CHATGUARD_CONFIG
# (websocket.events: [], or the one generous limit). Other CHATGUARD_*
# variables in the environment reach it unchanged.
#
# Every process it starts is stopped on exit, failure or Ctrl-C. Bounded in
# time: every wait has a deadline, every client run a `timeout`.
set -euo pipefail

PHASES=${PHASES:-memory throughput latency}
IDLE_CLIENTS=${IDLE_CLIENTS:-1000}
MAX_CLIENTS=${MAX_CLIENTS-auto}
IDLE_KINDS=${IDLE_KINDS:-sio ws}
TP_CLIENTS=${TP_CLIENTS:-16 64}
TP_DURATION=${TP_DURATION:-5s}
LIMITED_CLIENTS=${LIMITED_CLIENTS-64}
LIMIT_RATE=${LIMIT_RATE:-1000000}
LIMIT_PERIOD=${LIMIT_PERIOD:-1m}
LAT_CLIENTS=${LAT_CLIENTS:-50}
LAT_RATE=${LAT_RATE:-100}
LAT_DURATION=${LAT_DURATION:-6s}
ROUNDS=${ROUNDS:-3}
MSG_SIZE=${MSG_SIZE:-256}
WARMUP=${WARMUP:-2s}
PING_INTERVAL=${PING_INTERVAL:-25s}
SETTLE=${SETTLE:-1}
IDLE_WAIT=${IDLE_WAIT:-4}
SPREAD=${SPREAD:-1}
QUIET_WAIT=${QUIET_WAIT:-10}
RETRIES=${RETRIES:-1}
KEEP_TMP=${KEEP_TMP:-0}
REV=${REV:-}
CG_BIN=${CG_BIN:-}
NGINX=$(command -v nginx || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true)
NGINX_WS=${NGINX_WS:-$([[ -n $NGINX ]] && echo 1 || echo 0)}

# shellcheck source=../lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

for v in TP_DURATION LAT_DURATION WARMUP PING_INTERVAL; do
	[[ ${!v} =~ ^[0-9]+[smh]?$ ]] && (($(seconds "${!v}") > 0)) || die "$v=${!v}: want a whole number of seconds, minutes or hours, like 5s"
	[[ ${!v} =~ [smh]$ ]] || printf -v "$v" '%ss' "${!v}" # the client and upstream take Go durations
done
for v in IDLE_CLIENTS ROUNDS MSG_SIZE LAT_CLIENTS LAT_RATE LIMIT_RATE; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: want a positive integer"
done
for v in QUIET_WAIT RETRIES SETTLE; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v=${!v}: want a whole number"
done
for c in $TP_CLIENTS $LIMITED_CLIENTS; do
	[[ $c =~ ^[1-9][0-9]*$ ]] || die "TP_CLIENTS/LIMITED_CLIENTS: want positive integers, got $c"
done
[[ $NGINX_WS == 0 || ( $NGINX_WS == 1 && -n $NGINX ) ]] || die "NGINX_WS=$NGINX_WS: want 0, or 1 with nginx installed (apt-get install nginx-light)"
for k in $IDLE_KINDS; do [[ $k == sio || $k == ws ]] || die "IDLE_KINDS: want sio and/or ws, got $k"; done
for p in $PHASES; do [[ $p =~ ^(memory|throughput|latency)$ ]] || die "PHASES: want memory, throughput and/or latency, got $p"; done
((MSG_SIZE >= 64)) || die "MSG_SIZE=$MSG_SIZE: want at least 64"
want_phase() { [[ " $PHASES " == *" $1 "* ]]; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
results_dir=$root/bench/results
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[[ -x $GO ]] || die "no Go toolchain: put go on PATH (or set GO=/path/to/go)"
command -v curl >/dev/null || die "curl is missing (apt-get install curl)"

# Every process gets as many descriptors as the hard limit allows (Go raises
# its own soft limit to it anyway; this is for clarity and for the shell).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
[[ $nofile == unlimited ]] && nofile=1048576
if [[ $MAX_CLIENTS == auto ]]; then
	# chatguard: 2 descriptors per client plus its own few; keep a margin.
	MAX_CLIENTS=$((((nofile - 1000) / 2) / 1000 * 1000))
	((MAX_CLIENTS > IDLE_CLIENTS)) || MAX_CLIENTS=0
fi
[[ -z $MAX_CLIENTS ]] && MAX_CLIENTS=0
[[ $MAX_CLIENTS =~ ^[0-9]+$ ]] || die "MAX_CLIENTS=$MAX_CLIENTS: want a number or auto"
((2 * MAX_CLIENTS + 100 <= nofile)) || die "MAX_CLIENTS=$MAX_CLIENTS needs $((2 * MAX_CLIENTS + 100)) descriptors in chatguard; ulimit -n is $nofile"
((SPREAD == 0)) || ((MAX_CLIENTS <= 65024 && IDLE_CLIENTS <= 65024)) || die "SPREAD has 65024 addresses: fewer clients, or SPREAD=0"
read -r eph_low eph_high </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || { eph_low=32768; eph_high=60999; }
if ((SPREAD == 0 && MAX_CLIENTS > eph_high - eph_low - 1000)); then
	die "MAX_CLIENTS=$MAX_CLIENTS from one address needs more ephemeral ports than $eph_low-$eph_high; use SPREAD=1"
fi
idle_counts=$IDLE_CLIENTS
((MAX_CLIENTS > 0)) && idle_counts+=" $MAX_CLIENTS"

# --- processes and cleanup -------------------------------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/chatguard-bench-ws.XXXXXX")
chmod 0755 "$tmp" # nginx's workers run as nobody when started as root
nginx_pid='' # nginx's master; its workers are its children
started=() # pids of the processes running now; stopped ones leave the list

forget() { # pid: take it off the list (it is stopped and reaped)
	local i keep=()
	for i in "${started[@]}"; do [[ $i == "$1" ]] || keep+=("$i"); done
	started=(${keep[@]+"${keep[@]}"})
}
stop_pid() { # pid: TERM, up to 5 s, then KILL; reap it; forget it.
	local pid=$1 i
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	forget "$pid"
}
cleanup() {
	local rc=$? i
	trap - EXIT HUP INT PIPE TERM
	local workers=''
	[[ -n $nginx_pid ]] && workers=$(ps -o pid= --ppid "$nginx_pid" 2>/dev/null || true)
	for ((i = ${#started[@]} - 1; i >= 0; i--)); do
		stop_pid "${started[i]}"
	done
	for i in $workers; do kill -KILL "$i" 2>/dev/null || true; done
	if [[ $KEEP_TMP == 1 ]]; then
		log "kept $tmp"
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}
on_exit cleanup


# wait_line FILE REGEX PID SECS: until a line of FILE matches, the process
# still runs, within SECS.
wait_line() {
	local f=$1 re=$2 pid=$3 deadline=$((SECONDS + $4))
	until grep -qE "$re" "$f" 2>/dev/null; do
		kill -0 "$pid" 2>/dev/null || { cat "$f" "$f.err" >&2 2>/dev/null || true; die "process $pid exited before printing /$re/"; }
		((SECONDS < deadline)) || { cat "$f" "$f.err" >&2 2>/dev/null || true; die "no /$re/ from process $pid within $4 s"; }
		sleep 0.1
	done
}

# --- build -----------------------------------------------------------------

[[ -z $CG_BIN ]] || REV=''
if [[ -n $CG_BIN ]]; then
	log "using chatguard $CG_BIN; building the upstream and the client into $tmp"
else
	log "building chatguard${REV:+ at $REV}, the upstream and the client into $tmp"
fi
src=$root
if [[ -n $CG_BIN ]]; then
	[[ -x $CG_BIN ]] || die "CG_BIN=$CG_BIN: not an executable"
	cp "$CG_BIN" "$tmp/chatguard"
elif [[ -n $REV ]]; then
	rev_full=$(git -C "$root" rev-parse --verify "$REV^{commit}") || die "REV=$REV: no such commit"
	src=$tmp/src
	mkdir -p "$src"
	git -C "$root" archive "$rev_full" | tar -x -C "$src"
fi
[[ -n $CG_BIN ]] || (cd "$src" && CGO_ENABLED=0 GOWORK=off "$GO" build -trimpath -ldflags '-s -w' -o "$tmp/chatguard" ./cmd/chatguard)
(cd "$root/bench" && CGO_ENABLED=0 GOWORK=off "$GO" build -trimpath -o "$tmp/" ./ws/upstream ./ws/client)

# Configurations: no event limit (so that none interferes), and one generous one.
cat >"$tmp/nolimit.yaml" <<EOF
websocket:
  events: []
EOF
cat >"$tmp/limited.yaml" <<EOF
websocket:
  events:
    - name: send-message
      limit: {rate: $LIMIT_RATE, period: $LIMIT_PERIOD}
EOF

# start_upstream: a fresh upstream on a fresh port; sets up_pid, up_port.
n_started=0
start_upstream() {
	n_started=$((n_started + 1))
	free_port up_port
	local logf=$tmp/upstream-$n_started.log
	"$tmp/upstream" -addr "127.0.0.1:$up_port" -ping-interval "$PING_INTERVAL" >"$logf" 2>&1 &
	up_pid=$!
	started+=("$up_pid")
	wait_ready upstream "$up_pid" "http://127.0.0.1:$up_port/healthz" "$logf"
}

# start_chatguard CONFIG: a fresh chatguard in front of the upstream on
# up_port; sets cg_pid, cg_port, cg_admin.
start_chatguard() {
	n_started=$((n_started + 1))
	free_port cg_port
	free_port cg_admin
	local dir=$tmp/chatguard-$n_started
	mkdir -p "$dir"
	(
		cd "$dir"
		CHATGUARD_LISTEN=127.0.0.1:$cg_port \
			CHATGUARD_ADMIN_LISTEN=127.0.0.1:$cg_admin \
			CHATGUARD_UPSTREAM=http://127.0.0.1:$up_port \
			CHATGUARD_CONFIG=$1 \
			CHATGUARD_ENV=production \
			LOG_LEVEL=warn \
			CHATGUARD_WS_MAX_SOCKETS_PER_IP=0 \
			CHATGUARD_WS_MAX_SOCKETS_PER_USER=0 \
			CHATGUARD_RATE_LIMIT_FILE=$dir/rate-limits.json \
			CHATGUARD_PROFILE_DIR=$dir/profiles \
			LOG_DIR=$dir/logs \
			CHATGUARD_ALERT_PATH=$dir/logs/alerts.jsonl \
			CHATGUARD_DRAIN_DELAY=0s \
			CHATGUARD_SHUTDOWN_TIMEOUT=2s \
			exec "$tmp/chatguard" serve >"$dir/stdout.log" 2>&1
	) &
	cg_pid=$!
	started+=("$cg_pid")
	wait_ready chatguard "$cg_pid" "http://127.0.0.1:$cg_admin/readyz" "$dir/stdout.log"
}

# start_nginx: nginx proxying every path to the upstream on up_port, with
# the Upgrade handshake passed on (nginx's documented WebSocket setup); sets
# nginx_pid, ngx_port.
start_nginx() {
	free_port ngx_port
	mkdir -p "$tmp/nginx"
	nginx_conf "$tmp/nginx" 8192 "worker_rlimit_nofile 20000;" "    server {
        listen 127.0.0.1:$ngx_port;
        location / {
            proxy_pass http://127.0.0.1:$up_port;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \"upgrade\";
            proxy_read_timeout 1h;
        }
    }"
	"$NGINX" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" >"$tmp/nginx/stdout.log" 2>&1 &
	nginx_pid=$!
	started+=("$nginx_pid")
	wait_ready nginx "$nginx_pid" "http://127.0.0.1:$ngx_port/healthz" "$tmp/nginx/error.log"
}

# metric ADMIN_PORT NAME: one sample's value from chatguard's /metrics (NAME
# may carry labels, exactly as exposed).
metrics_file=$tmp/metrics.txt
scrape() { curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" >"$metrics_file"; }
metric() { awk -v n="$1" '$1 == n { printf "%.0f\n", $2; found = 1 } END { if (!found) print 0 }' "$metrics_file"; }

# --- memory ------------------------------------------------------------------

rss_kib() { awk '/^VmRSS:/ { print $2; f = 1 } END { if (!f) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }
pss_kib() {
	if [[ -r /proc/$1/smaps_rollup ]]; then
		awk '/^Pss:/ { print $2; f = 1 } END { if (!f) print "-" }' "/proc/$1/smaps_rollup" 2>/dev/null || echo -
	else
		echo -
	fi
}
# free_memory PID...: SIGUSR2 twice, 0.5 s apart, then SETTLE seconds.
free_memory() {
	kill -USR2 "$@"
	sleep 0.5
	kill -USR2 "$@"
	sleep "$SETTLE"
}

# memrec: kind clients target proc rss0 rss1 pss0 pss1 (KiB), connected, connect seconds
memrec=$tmp/memory.tsv
# cgrec: kind clients goroutines0 goroutines1 heap0 heap1 stack0 stack1 (bytes)
cgrec=$tmp/memory-chatguard.tsv
: >"$memrec"
: >"$cgrec"

# idle_phase KIND N TARGET: N idle clients of KIND to a fresh upstream,
# straight (direct) or through a fresh chatguard; records every process's memory.
idle_phase() {
	local kind=$1 n=$2 target=$3 url pids names out gauge i connected failed took
	start_upstream
	pids=("$up_pid")
	names=(upstream)
	url=ws://127.0.0.1:$up_port
	if [[ $target == chatguard ]]; then
		start_chatguard "$tmp/nolimit.yaml"
		pids+=("$cg_pid")
		names+=(chatguard)
		url=ws://127.0.0.1:$cg_port
	fi
	out=$tmp/idle-$kind-$n-$target.out
	"$tmp/client" -mode idle -kind "$kind" -clients "$n" -url "$url" -size "$MSG_SIZE" -spread="$([[ $SPREAD == 1 ]] && echo true || echo false)" \
		>"$out" 2>"$out.err" &
	local cl_pid=$!
	started+=("$cl_pid")
	wait_line "$out" '^waiting' "$cl_pid" 15
	pids+=("$cl_pid")
	names+=(client)

	free_memory "${pids[@]}"
	local rss0=() pss0=()
	for i in "${!pids[@]}"; do
		rss0[i]=$(rss_kib "${pids[i]}")
		pss0[i]=$(pss_kib "${pids[i]}")
	done
	local g0=0 h0=0 s0=0
	if [[ $target == chatguard ]]; then
		scrape "$cg_admin"
		g0=$(metric go_goroutines) h0=$(metric go_memstats_heap_inuse_bytes) s0=$(metric go_memstats_stack_inuse_bytes)
	fi

	kill -USR1 "$cl_pid"
	wait_line "$out" '^connected' "$cl_pid" $((30 + n / 100))
	connected=$(sed -n 's/^connected n=\([0-9]*\).*/\1/p' "$out")
	failed=$(sed -n 's/^connected .*failed=\([0-9]*\).*/\1/p' "$out")
	took=$(sed -n 's/^connected .*seconds=\([0-9.]*\).*/\1/p' "$out")
	((failed == 0)) || log "warning: $failed of $n $kind clients failed to connect ($target): $(sed -n 's/.*first_error=//p' "$out")"
	((connected > 0)) || die "no $kind client connected ($target)"
	if [[ $target == chatguard ]]; then
		# chatguard counts a pair once both handshakes are done.
		local label=websocket deadline=$((SECONDS + 10))
		[[ $kind == sio ]] && label=socketio
		while :; do
			scrape "$cg_admin"
			gauge=$(metric "chatguard_websocket_connections{kind=\"$label\"}")
			((gauge >= connected || SECONDS >= deadline)) && break
			sleep 0.2
		done
		((gauge == connected)) || log "warning: chatguard relays $gauge $kind sockets, the client holds $connected"
	fi
	sleep "$IDLE_WAIT"
	if [[ $target == chatguard ]]; then
		scrape "$cg_admin"
		log "chatguard: $(metric chatguard_websocket_sleeping) of $connected sockets asleep"
	fi
	free_memory "${pids[@]}"
	for i in "${!pids[@]}"; do
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$n" "$target" "${names[i]}" \
			"${rss0[i]}" "$(rss_kib "${pids[i]}")" "${pss0[i]}" "$(pss_kib "${pids[i]}")" "$connected" "$took" >>"$memrec"
	done
	if [[ $target == chatguard ]]; then
		scrape "$cg_admin"
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$n" "$g0" "$(metric go_goroutines)" \
			"$h0" "$(metric go_memstats_heap_inuse_bytes)" "$s0" "$(metric go_memstats_stack_inuse_bytes)" >>"$cgrec"
	fi
	log "$(awk -F'\t' -v k="$kind" -v n="$n" -v t="$target" '$1 == k && $2 == n && $3 == t {
		printf "%s %.1f KiB/client  ", $4, ($6 - $5) / $9 }' "$memrec")($kind, $connected clients $target, connected in ${took}s)"

	# The clients first (chatguard then sees them go), then the servers.
	stop_pid "$cl_pid"
	[[ $target == chatguard ]] && stop_pid "$cg_pid"
	stop_pid "$up_pid"
}

# --- throughput and latency ---------------------------------------------------

hz=$(getconf CLK_TCK)


# target_url TARGET: where the clients of that target connect.
target_url() {
	case $1 in
	direct) echo "ws://127.0.0.1:$tp_up_port" ;;
	chatguard) echo "ws://127.0.0.1:$tp_cg_port" ;;
	limited) echo "ws://127.0.0.1:$tp_cgl_port" ;;
	nginx) echo "ws://127.0.0.1:$ngx_port" ;;
	esac
}
target_pid() {
	case $1 in
	chatguard) echo "$tp_cg_pid" ;;
	limited) echo "$tp_cgl_pid" ;;
	nginx) echo "$nginx_pid" $(ps -o pid= --ppid "$nginx_pid" 2>/dev/null || true) ;;
	esac
}

# records: phase kind target round clients msgs/s p50us p99us p999us errors
# msgs, CPU cores: client upstream chatguard machine interrupts other
records=$tmp/records.tsv
: >"$records"
run_n=0

# measure PHASE KIND TARGET ROUND CLIENTS: one client run (the warm-up is
# not recorded); one disturbed by other processes is run again, up to RETRIES times.
measure() {
	measure_quietly 17 "$@" || return 0
	echo "$rec" >>"$records"
	[[ $1 == latency ]] && cat "$samples_tmp" >>"$tmp/samples-$2-$3.txt"
	log "$(printf '%-10s %-3s %-9s round %s  c=%-3s %9s msg/s  p50 %7s us  p99 %7s us  errors %s' $(cut -f1-8,10 <<<"$rec"))"
	warn_other
}

samples_tmp=$tmp/samples.tmp
measure_once() {
	local phase=$1 kind=$2 target=$3 round=$4 clients=$5 dur mode args=() out pid
	local t0 t1 up0 up1 px0 px1 m0 m1 w0 w1 status line
	run_n=$((run_n + 1))
	out=$tmp/run-$run_n-$phase-$kind-$target-c$clients.txt
	pid=$(target_pid "$target")
	if [[ $phase == latency ]]; then
		mode=paced dur=$LAT_DURATION
		args=(-rate "$LAT_RATE" -samples "$samples_tmp")
	else
		mode=pingpong dur=$TP_DURATION
		[[ $phase == warmup ]] && dur=$WARMUP
	fi
	up0=$(proc_ticks "$tp_up_pid")
	px0=$(proc_ticks $pid)
	m0=$(machine_ticks)
	times >"$tmp/times0"
	t0=$(date +%s.%N)
	timeout --kill-after=5s "$(($(seconds "$dur") + 60))s" "$tmp/client" -mode "$mode" -kind "$kind" -clients "$clients" \
		-url "$(target_url "$target")" -size "$MSG_SIZE" -duration "$dur" -spread="$([[ $SPREAD == 1 ]] && echo true || echo false)" \
		${args[@]+"${args[@]}"} >"$out" 2>&1 &
	client_pid=$!
	started+=("$client_pid")
	status=0
	wait "$client_pid" || status=$?
	forget "$client_pid"
	t1=$(date +%s.%N)
	times >"$tmp/times1"
	m1=$(machine_ticks)
	px1=$(proc_ticks $pid)
	up1=$(proc_ticks "$tp_up_pid")
	w0=$(children_secs "$tmp/times0")
	w1=$(children_secs "$tmp/times1")
	((status == 0)) || { cat "$out" >&2; die "the client failed ($phase $kind $target, $clients clients), status $status"; }
	line=$(grep '^result ' "$out") || { cat "$out" >&2; die "no result from the client ($phase $kind $target)"; }
	for pidv in "$tp_up_pid" "$tp_cg_pid" ${tp_cgl_pid:+"$tp_cgl_pid"} ${nginx_pid:+"$nginx_pid"}; do
		kill -0 "$pidv" 2>/dev/null || die "a server (pid $pidv) died during the $phase run against $target; logs in $tmp (KEEP_TMP=1 keeps them)"
	done
	rec=$(awk -v ph="$phase" -v k="$kind" -v tg="$target" -v r="$round" -v c="$clients" -v line="$line" \
		-v wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" -v hz="$hz" -v ncpu="$ncpu" \
		-v w="$(awk -v a="$w0" -v b="$w1" 'BEGIN{print b-a}')" -v up="$((up1 - up0))" -v px="$((px1 - px0))" -v hasproxy="${pid:+1}" \
		-v m0="$m0" -v m1="$m1" 'BEGIN {
			n = split(line, f, " ")
			for (i = 2; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
			split(m0, a, " "); split(m1, b, " ")
			span = b[2] - a[2]
			mach = span > 0 ? (b[1] - a[1]) / span * ncpu : 0
			intr = span > 0 ? (b[3] - a[3]) / span * ncpu : 0
			other = mach - intr - w / wall - up / hz / wall - px / hz / wall
			if (other < 0) other = 0
			pxc = hasproxy ? sprintf("%.2f", px / hz / wall) : "-"
			# CPU time per message of the proxy (the client run includes connecting; a
			# small overestimate): microseconds.
			pxm = hasproxy && v["msgs"] > 0 ? sprintf("%.1f", px / hz / v["msgs"] * 1e6) : "-"
			printf "%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%s\t%.2f\t%.2f\t%.2f\t%s\n", ph, k, tg, r, c, v["rate"], v["p50_us"], v["p99_us"], v["p999_us"], v["errors"], v["msgs"], w / wall, up / hz / wall, pxc, mach, intr, other, pxm
		}')
}

# col PHASE KIND TARGET CLIENTS FIELD: median of that field over the rounds.
col() { awk -F'\t' -v ph="$1" -v k="$2" -v tg="$3" -v c="$4" -v f="$5" '$1 == ph && $2 == k && $3 == tg && $5 == c { print $f }' "$records" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "-") printf "%.2f", a / b; else print "-" }'; }

# pooled FILE Q: the Q quantile (nearest rank) of the microsecond samples in FILE.
pooled() {
	[[ -s $1 ]] || { echo -; return; }
	sort -g "$1" | awk -v q="$2" '{ a[NR] = $1 } END { i = int(q * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; printf "%.0f", a[i] }'
}

# order ROUND TARGET...: the targets, reversed on even rounds, so that
# neither side always runs first.
order() {
	local r=$1 t
	shift
	if ((r % 2)); then echo "$@"; else for t; do echo "$t"; done | tac | tr '\n' ' '; fi
}

# --- run -----------------------------------------------------------------------

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
busy_start=$(busy_now)
t_start=$SECONDS
awk -v b="$busy_start" 'BEGIN { exit !(b > 0.2) }' && log "warning: the machine is already $busy_start CPU(s) busy before the benchmark; the numbers will be noisy"

if want_phase memory; then
	for kind in $IDLE_KINDS; do
		for n in $idle_counts; do
			for target in direct chatguard; do
				log "memory: $n idle $kind clients, $target"
				idle_phase "$kind" "$n" "$target"
			done
		done
	done
fi

tp_cgl_pid=''
if want_phase throughput || want_phase latency; then
	start_upstream
	tp_up_pid=$up_pid tp_up_port=$up_port
	start_chatguard "$tmp/nolimit.yaml"
	tp_cg_pid=$cg_pid tp_cg_port=$cg_port tp_cg_admin=$cg_admin
	if want_phase throughput && [[ -n $LIMITED_CLIENTS ]]; then
		start_chatguard "$tmp/limited.yaml"
		tp_cgl_pid=$cg_pid tp_cgl_port=$cg_port tp_cgl_admin=$cg_admin
	fi
	yardstick=''
	if [[ $NGINX_WS == 1 ]]; then
		start_nginx
		yardstick=nginx
	fi
	log "throughput/latency servers: upstream :$tp_up_port, chatguard :$tp_cg_port (admin :$tp_cg_admin)${tp_cgl_pid:+, limited chatguard :$tp_cgl_port (admin :$tp_cgl_admin)}${nginx_pid:+, nginx :$ngx_port}"
fi

max_c=0
for c in $TP_CLIENTS; do ((c > max_c)) && max_c=$c; done
if want_phase throughput; then
	log "warm-up: $WARMUP per kind and target, $max_c clients"
	for kind in ws sio; do
		for t in direct chatguard $yardstick; do measure warmup "$kind" "$t" 0 "$max_c"; done
	done
	[[ -n $LIMITED_CLIENTS ]] && measure warmup sio limited 0 "$LIMITED_CLIENTS"
	log "throughput: $ROUNDS round(s); clients $TP_CLIENTS; $TP_DURATION each"
	for ((r = 1; r <= ROUNDS; r++)); do
		for kind in ws sio; do
			for c in $TP_CLIENTS; do
				targets="direct chatguard $yardstick"
				[[ $kind == sio && $c == "$LIMITED_CLIENTS" ]] && targets+=" limited"
				for t in $(order "$r" $targets); do measure throughput "$kind" "$t" "$r" "$c"; done
			done
		done
	done
	if [[ -n $tp_cgl_pid ]]; then
		scrape "$tp_cgl_admin"
		limited_events=$(metric 'chatguard_socketio_events_total{event="send-message"}')
		limited_rejected=$(awk '$1 ~ /^chatguard_socketio_event_rejections_total\{/ { s += $2 } END { printf "%.0f", s }' "$metrics_file")
	fi
	scrape "$tp_cg_admin"
	unlimited_named=$(metric 'chatguard_socketio_events_total{event="send-message"}')
fi

if want_phase latency; then
	log "latency: $ROUNDS round(s); $LAT_CLIENTS clients x $LAT_RATE msg/s; $LAT_DURATION each"
	for ((r = 1; r <= ROUNDS; r++)); do
		for kind in ws sio; do
			for t in $(order "$r" direct chatguard $yardstick); do measure latency "$kind" "$t" "$r" "$LAT_CLIENTS"; done
		done
	done
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$((SECONDS - t_start))

# --- summary -------------------------------------------------------------------

summary=$tmp/summary.txt
if [[ -n $CG_BIN ]]; then
	rev="binary $CG_BIN"
elif [[ -n $REV ]]; then
	rev=$(git -C "$root" rev-parse --short "$rev_full")
else
	rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
	[[ -z $(git -C "$root" status --porcelain -- . ':!bench' 2>/dev/null) ]] || rev+=" (+ uncommitted changes)"
fi
kib() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { if (a == "-" || b == "-" || n <= 0) print "-"; else printf "%.1f", (b - a) / n }'; }
# memcol KIND N TARGET PROC FIELD: per-client KiB of that process (FIELD 5 = RSS, 7 = Pss).
memcol() {
	awk -F'\t' -v k="$1" -v n="$2" -v t="$3" -v p="$4" -v f="$5" '$1 == k && $2 == n && $3 == t && $4 == p {
		if ($f == "-" || $(f + 1) == "-") print "-"; else printf "%.1f", ($(f + 1) - $f) / $9 }' "$memrec"
}
memconn() { awk -F'\t' -v k="$1" -v n="$2" -v t="$3" '$1 == k && $2 == n && $3 == t { print $9; exit }' "$memrec"; }
kind_name() { case $1 in sio) echo socket.io ;; ws) echo websocket ;; esac; }
{
	echo "chatguard WebSocket relay benchmark, $stamp"
	echo "chatguard $rev; $("$GO" version | cut -d' ' -f3); github.com/coder/websocket on every side"
	echo "machine: $ncpu CPU(s), $(uname -sr); descriptors per process $nofile; ephemeral ports $eph_low-$eph_high"
	echo "load average at start $load_start (busy $busy_start CPUs), at end $load_end; took ${elapsed}s"
	echo "chatguard: production, LOG_LEVEL=warn, metrics on, WS_MAX_SOCKETS_PER_IP/USER=0, websocket.events: [] (unless 'limited')"
	[[ -n $yardstick ]] && echo "nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), worker_processes auto, proxy_pass with Upgrade and Connection passed on, access log on"
	echo "clients: a separate Go process (bench/ws/client), $([[ $SPREAD == 1 ]] && echo "each from its own 127.1.x.y address" || echo "all from 127.0.0.1"); upstream: bench/ws/upstream (Go, coder/websocket; Engine.IO pingInterval $PING_INTERVAL)"
	if want_phase memory; then
		echo
		echo "Memory per idle client, KiB: (VmRSS with the clients - VmRSS before) / clients, each read after SIGUSR2 (GC +"
		echo "FreeOSMemory, sent twice) and ${SETTLE}s; a fresh upstream (and chatguard) per line. chatguard holds 2 sockets per client."
		echo "sio: Engine.IO open + CONNECT done, pings answered; ws: one ${MSG_SIZE}-byte message echoed, then idle. Target: chatguard <= 16 KiB."
		printf '%-9s %7s | %9s %7s %6s | %18s | %14s | %17s\n' "" "" "chatguard" "" "" "upstream (backend)" "client process" "chatguard per client"
		printf '%-9s %7s | %9s %7s %6s | %8s %9s | %6s %7s | %6s %5s %5s\n' kind clients RSS Pss target "via cg" direct "via cg" direct "gorout" heap stack
		while IFS=$'\t' read -r k n _; do
			[[ -n $k ]] || continue
			cgl=$(awk -F'\t' -v k="$k" -v n="$n" '$1 == k && $2 == n' "$cgrec")
			IFS=$'\t' read -r _ _ g0 g1 h0 h1 s0 s1 <<<"$cgl"
			c=$(memconn "$k" "$n" chatguard)
			rss=$(memcol "$k" "$n" chatguard chatguard 5)
			met=$(awk -v r="$rss" 'BEGIN { if (r == "-") print "-"; else print (r <= 16) ? "met" : "NOT met" }')
			printf '%-9s %7s | %9s %7s %6s | %8s %9s | %6s %7s | %6s %5s %5s\n' "$(kind_name "$k")" "$c" \
				"$rss" "$(memcol "$k" "$n" chatguard chatguard 7)" "$met" \
				"$(memcol "$k" "$n" chatguard upstream 5)" "$(memcol "$k" "$n" direct upstream 5)" \
				"$(memcol "$k" "$n" chatguard client 5)" "$(memcol "$k" "$n" direct client 5)" \
				"$(awk -v a="$g0" -v b="$g1" -v n="$c" 'BEGIN { printf "%.2f", (b - a) / n }')" \
				"$(awk -v a="$h0" -v b="$h1" -v n="$c" 'BEGIN { printf "%.1f", (b - a) / n / 1024 }')" \
				"$(awk -v a="$s0" -v b="$s1" -v n="$c" 'BEGIN { printf "%.1f", (b - a) / n / 1024 }')"
		done < <(cut -f1,2 "$memrec" | sort -u | sort -t$'\t' -k1,1 -k2,2n)
		echo "ratio chatguard / upstream (RSS per client, via chatguard):" \
			"$(cut -f1,2 "$memrec" | sort -u | sort -t$'\t' -k1,1 -k2,2n | while IFS=$'\t' read -r k n; do
				printf '%s %s: %s  ' "$(kind_name "$k")" "$(memconn "$k" "$n" chatguard)" "$(ratio "$(memcol "$k" "$n" chatguard chatguard 5)" "$(memcol "$k" "$n" chatguard upstream 5)")"
			done)"
		echo "(gorout, heap, stack: chatguard's go_goroutines, go_memstats_heap_inuse_bytes and go_memstats_stack_inuse_bytes"
		echo "from its /metrics, after - before, per client, KiB; connect times: $(awk -F'\t' '$4 == "client" { printf "%s%s %s %s %ss", sep, $1, $9, $3, $10; sep = ", " }' "$memrec"))"
	fi
	if want_phase throughput; then
		echo
		echo "Throughput: each client sends ${MSG_SIZE}-byte messages and waits for each answer, $TP_DURATION per run, $ROUNDS interleaved"
		echo "round(s), medians. ws: echo; sio: 42<id>[\"send-message\",{…}] answered by the ack 43<id>[…]. Target: >= 0.8x direct."
		echo "limited = chatguard with send-message limited to $LIMIT_RATE per $LIMIT_PERIOD per client address (never reached)."
		printf '%-9s %7s %-9s %9s %6s %8s %8s %6s   %s\n' kind clients target 'msg/s' ratio 'p50 us' 'p99 us' errors 'CPU cores: client upstream chatguard interrupts other = machine; chatguard CPU us/msg'
		for kind in ws sio; do
			for c in $TP_CLIENTS; do
				for t in direct chatguard limited nginx; do
					[[ -n $(awk -F'\t' -v k="$kind" -v t="$t" -v c="$c" '$1 == "throughput" && $2 == k && $3 == t && $5 == c' "$records") ]] || continue
					printf '%-9s %7s %-9s %9s %6s %8s %8s %6s   %6s %8s %9s %10s %5s = %5s; %s\n' "$(kind_name "$kind")" "$c" "$t" \
						"$(col throughput "$kind" "$t" "$c" 6)" "$(ratio "$(col throughput "$kind" "$t" "$c" 6)" "$(col throughput "$kind" direct "$c" 6)")" \
						"$(col throughput "$kind" "$t" "$c" 7)" "$(col throughput "$kind" "$t" "$c" 8)" \
						"$(awk -F'\t' -v k="$kind" -v t="$t" -v c="$c" '$1 == "throughput" && $2 == k && $3 == t && $5 == c { s += $10 } END { print s + 0 }' "$records")" \
						"$(col throughput "$kind" "$t" "$c" 12)" "$(col throughput "$kind" "$t" "$c" 13)" "$(col throughput "$kind" "$t" "$c" 14)" \
						"$(col throughput "$kind" "$t" "$c" 16)" "$(col throughput "$kind" "$t" "$c" 17)" "$(col throughput "$kind" "$t" "$c" 15)" \
						"$(col throughput "$kind" "$t" "$c" 18)"
				done
			done
		done
		if [[ -n $yardstick ]]; then
			for kind in ws sio; do
				for c in $TP_CLIENTS; do
					echo "$(kind_name "$kind") $c clients: chatguard/nginx $(ratio "$(col throughput "$kind" chatguard "$c" 6)" "$(col throughput "$kind" nginx "$c" 6)"), nginx/direct $(ratio "$(col throughput "$kind" nginx "$c" 6)" "$(col throughput "$kind" direct "$c" 6)")"
				done
			done
		fi
		if [[ -n $tp_cgl_pid ]]; then
			echo "limited chatguard: $limited_events send-message events counted, $limited_rejected rejected; the unlimited one counted $unlimited_named under that name (0: no policy, label \"other\")"
		fi
	fi
	if want_phase latency; then
		echo
		echo "Latency at a fixed moderate rate: $LAT_CLIENTS clients x $LAT_RATE msg/s ($((LAT_CLIENTS * LAT_RATE)) msg/s offered), $LAT_DURATION x $ROUNDS"
		echo "interleaved round(s); round trips of all rounds pooled (us). Target: chatguard adds <= 1 ms at p99."
		printf '%-9s %-9s %9s %8s %8s %8s %8s   %s\n' kind target 'msg/s' 'p50 us' 'p99 us' 'p99.9 us' 'max us' 'CPU cores: client upstream chatguard other = machine'
		for kind in ws sio; do
			for t in direct chatguard $yardstick; do
				f=$tmp/samples-$kind-$t.txt
				printf '%-9s %-9s %9s %8s %8s %8s %8s   %6s %8s %9s %5s = %5s\n' "$(kind_name "$kind")" "$t" "$(col latency "$kind" "$t" "$LAT_CLIENTS" 6)" \
					"$(pooled "$f" 0.5)" "$(pooled "$f" 0.99)" "$(pooled "$f" 0.999)" "$(pooled "$f" 1)" \
					"$(col latency "$kind" "$t" "$LAT_CLIENTS" 12)" "$(col latency "$kind" "$t" "$LAT_CLIENTS" 13)" "$(col latency "$kind" "$t" "$LAT_CLIENTS" 14)" \
					"$(col latency "$kind" "$t" "$LAT_CLIENTS" 17)" "$(col latency "$kind" "$t" "$LAT_CLIENTS" 15)"
			done
			d=$tmp/samples-$kind-direct.txt g=$tmp/samples-$kind-chatguard.txt
			printf '%-9s added by chatguard: p50 %+d us, p99 %+d us, p99.9 %+d us (target p99 <= +1000 us: %s)\n' "$(kind_name "$kind")" \
				$(($(pooled "$g" 0.5) - $(pooled "$d" 0.5))) $(($(pooled "$g" 0.99) - $(pooled "$d" 0.99))) $(($(pooled "$g" 0.999) - $(pooled "$d" 0.999))) \
				"$( (($(pooled "$g" 0.99) - $(pooled "$d" 0.99) <= 1000)) && echo met || echo NOT met)"
			if [[ -n $yardstick ]]; then
				n=$tmp/samples-$kind-nginx.txt
				printf '%-9s added by nginx:     p50 %+d us, p99 %+d us, p99.9 %+d us\n' "$(kind_name "$kind")" \
					$(($(pooled "$n" 0.5) - $(pooled "$d" 0.5))) $(($(pooled "$n" 0.99) - $(pooled "$d" 0.99))) $(($(pooled "$n" 0.999) - $(pooled "$d" 0.999)))
			fi
		done
	fi
	if [[ -s $records ]]; then
		echo
		echo "Every run (phase kind target round clients msg/s p50us p99us p99.9us errors, CPU cores: client upstream chatguard interrupts other = machine):"
		awk -F'\t' '{ printf "  %-10s %-3s %-9s %s %4s %9s %8s %8s %8s %3s   %s %s %s %s %s = %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12, $13, $14, $16, $17, $15 }' "$records"
	fi
	if [[ -s $memrec ]]; then
		echo
		echo "Every memory reading (kind clients target process: VmRSS before -> after KiB, Pss before -> after KiB):"
		awk -F'\t' '{ printf "  %-3s %5s %-9s %-9s %8s -> %8s   %8s -> %8s\n", $1, $9, $3, $4, $5, $6, $7, $8 }' "$memrec"
	fi
} >"$summary"

mkdir -p "$results_dir"
cp "$summary" "$results_dir/ws-$stamp.txt"
echo
cat "$summary"
echo
echo "written to bench/results/ws-$stamp.txt"
