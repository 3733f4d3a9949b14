#!/usr/bin/env bash
# HTTP proxy benchmark: how much throughput and latency chatguard costs in
# front of a backend, next to nginx doing the same job on the same machine.
#
# Usage (from anywhere):  bash bench/http/run.sh
# Environment:
#   DURATION            length of each measured wrk run (default 10s)
#   ROUNDS              rounds of the interleaved measurement (default 3)
#   CONNECTIONS         wrk connections for the peak measurement (default 64)
#   THREADS             wrk threads (default 2; never more than the connections)
#   WARMUP              one unmeasured wrk run per target before round 1 (default 2s)
#   CALIBRATE_DURATION  length of each calibration run for half-peak (default 3s)
#   CALIBRATE_CONNS     connection counts tried for half-peak (default "1 2 4 8 16")
#   PACE_MS             mean pause between a connection's requests in the
#                       paced half-peak runs (default 10)
#   LOG_LEVEL           chatguard's log level (default info: one access line per
#                       request; warn turns the access log off)
#   PERF=1              after the measurement, one more (unreported) chatguard
#                       run under `perf record -g`; its self and cumulative
#                       profiles go to bench/results/http-<date>.perf.txt
#   QUIET_WAIT          before each measured run, wait up to this many seconds
#                       for the machine to be idle (< 0.2 CPU busy); 0 = don't
#                       (default 60)
#   RETRIES             run again a run during which other processes used more
#                       than 0.25 CPU, up to this many times (default 2)
#   KEEP_TMP=1          keep the temporary directory (binaries, logs, wrk output)
# Other CHATGUARD_* variables in the environment reach chatguard as they are
# (for instance CHATGUARD_CONFIG, to benchmark a configuration).
#
# What it does:
#  1. Builds chatguard (root module) and bench/http/upstream (the bench module)
#     into a temporary directory; installs wrk, nginx-light and curl with
#     apt-get when one is missing (root only; otherwise it says what to install
#     and exits 1).
#  2. Starts, each on a free loopback port: the upstream (GET / -> ~100 bytes of
#     JSON); chatguard in production mode pointed at it, metrics on (always
#     on), access log on at LOG_LEVEL=info with stdout to a file; nginx with a
#     generated config (proxy_pass to an upstream{} block with keepalive 64,
#     HTTP/1.1 and an empty Connection header, access_log to a file). Every
#     process it starts is stopped on exit, failure or Ctrl-C.
#  3. Peak: `wrk --latency -t2 -c64 -d$DURATION` against direct (the upstream
#     itself), chatguard and nginx, interleaved in rounds (direct, chatguard,
#     nginx, direct, ...) so that machine noise hits all three alike. For each
#     target it reports the median over rounds of req/s, p50 and p99, and the
#     throughput ratios chatguard/direct and chatguard/nginx.
#  4. Latency at half of peak. wrk has no fixed-rate mode (that is wrk2's -R),
#     so the offered load is set with the number of connections instead: wrk
#     is closed-loop, each connection sends its next request when the previous
#     answer arrives, so fewer connections means less load. Calibration runs
#     chatguard alone for CALIBRATE_DURATION at each count in CALIBRATE_CONNS
#     and picks the count whose req/s is closest to half of chatguard's
#     median peak req/s from step 3. Then direct, chatguard and nginx run at
#     that same connection count, interleaved for ROUNDS rounds of DURATION,
#     and it reports median p50/p99 per target and the p99 chatguard adds over
#     direct. Caveat of the closed loop: at the same connection count direct
#     and nginx serve more req/s than chatguard (they answer faster), so the
#     comparison is "same concurrency", not "same rate": the faster target
#     also gets more load, which can even make its p99 worse than chatguard's.
#  5. Latency at half of peak, same offered rate ("paced"). To compare at one
#     rate, wrk's Lua hook delay() makes each connection pause a random
#     0..2*PACE_MS ms (mean PACE_MS) before each request; the random pause
#     spreads the connections' requests out instead of sending them in bursts.
#     With N connections the offered rate is about N*1000/(PACE_MS + latency)
#     req/s, so N = round(half of chatguard's median peak req/s * PACE_MS/1000).
#     Latency is timed from the request's send, so the pause is not in it.
#     All three targets run with the same N, interleaved for ROUNDS rounds of
#     DURATION; the req/s column shows the rate each actually got (a slower
#     target gets slightly less: latency adds to the pause).
#  6. Prints the summary and writes it to bench/results/http-<UTC date>.txt.
#
# Everything (wrk, upstream, proxy) shares this machine's cores; the CPU
# columns say who used how much of them (cores busy during the run: user+system
# CPU time of the process divided by the run's wall time).
#
# Other work on the machine skews everything (on a shared development machine,
# someone's test run takes a core from the benchmark): each run is preceded by
# a wait for an idle machine and repeated when other processes used CPU during
# it (QUIET_WAIT, RETRIES); the "other" CPU column shows what remained.
#
# Bounded in time: a fixed number of runs (each repeated at most RETRIES
# times), each wrk run bounded by its -d and a `timeout` of that plus 30 s;
# each quiet wait by QUIET_WAIT; each start-up wait has a 15 s deadline.
set -euo pipefail

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
CALIBRATE_DURATION=${CALIBRATE_DURATION:-3s}
CALIBRATE_CONNS=${CALIBRATE_CONNS:-1 2 4 8 16}
PACE_MS=${PACE_MS:-10}
QUIET_WAIT=${QUIET_WAIT:-60}
RETRIES=${RETRIES:-2}
LOG_LEVEL=${LOG_LEVEL:-info}
PERF=${PERF:-0}
KEEP_TMP=${KEEP_TMP:-0}

# shellcheck source=../lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

for v in DURATION WARMUP CALIBRATE_DURATION; do
	[[ ${!v} =~ ^[0-9]+[smh]?$ ]] && (($(seconds "${!v}") > 0)) || die "$v=${!v}: want a whole number of seconds, minutes or hours, like 10s"
done
for v in ROUNDS CONNECTIONS THREADS PACE_MS; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: want a positive integer"
done
for v in QUIET_WAIT RETRIES; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v=${!v}: want a whole number"
done
for c in $CALIBRATE_CONNS; do
	[[ $c =~ ^[1-9][0-9]*$ ]] || die "CALIBRATE_CONNS=$CALIBRATE_CONNS: want positive integers"
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
results_dir=$root/bench/results

# --- tools -----------------------------------------------------------------

GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[[ -x $GO ]] || die "no Go toolchain: put go on PATH (or set GO=/path/to/go)"
find_nginx() { command -v nginx || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[[ -n $(find_nginx) ]] || missing+=(nginx-light)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
	if ((EUID != 0)); then
		die "missing ${missing[*]}; install with: sudo apt-get update && sudo apt-get install -y ${missing[*]} (or run this script as root)"
	fi
	log "installing ${missing[*]}"
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
NGINX=$(find_nginx)
[[ -n $NGINX ]] || die "nginx is still missing after the install"

# --- processes and cleanup -------------------------------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/chatguard-bench-http.XXXXXX")
# nginx's workers run as nobody when started as root; let them into the dir.
chmod 0755 "$tmp"
started=()     # pids of the long-running processes, in start order
nginx_pid=''   # nginx master
wrk_pid=''     # the wrk run in progress (its `timeout` wrapper)
perf_pid=''

stop_pid() { # pid: TERM, up to 5 s, then KILL; reap it.
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$? i workers=''
	trap - EXIT HUP INT PIPE TERM
	[[ -n $perf_pid ]] && stop_pid "$perf_pid"
	[[ -n $wrk_pid ]] && stop_pid "$wrk_pid"
	# nginx's workers are its children, not ours: note them before the
	# master goes, and make sure they are gone after it.
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


# --- build -----------------------------------------------------------------

log "building chatguard and the upstream into $tmp"
(cd "$root" && GOWORK=off "$GO" build -o "$tmp/chatguard" ./cmd/chatguard)
(cd "$root/bench" && GOWORK=off "$GO" build -o "$tmp/upstream" ./http/upstream)

# --- start -----------------------------------------------------------------

free_port up_port
free_port cg_port
free_port cg_admin_port
free_port ngx_port
direct_url=http://127.0.0.1:$up_port/
cg_url=http://127.0.0.1:$cg_port/
ngx_url=http://127.0.0.1:$ngx_port/

"$tmp/upstream" -addr "127.0.0.1:$up_port" >"$tmp/upstream.log" 2>&1 &
up_pid=$!
started+=("$up_pid")
wait_ready upstream "$up_pid" "$direct_url" "$tmp/upstream.log"

CHATGUARD_LISTEN=127.0.0.1:$cg_port \
	CHATGUARD_ADMIN_LISTEN=127.0.0.1:$cg_admin_port \
	CHATGUARD_UPSTREAM=http://127.0.0.1:$up_port \
	CHATGUARD_ENV=production \
	CHATGUARD_DRAIN_DELAY=0s \
	CHATGUARD_SHUTDOWN_TIMEOUT=2s \
	LOG_LEVEL=$LOG_LEVEL \
	"$tmp/chatguard" serve >"$tmp/chatguard.log" 2>&1 &
cg_pid=$!
started+=("$cg_pid")
wait_ready chatguard "$cg_pid" "http://127.0.0.1:$cg_admin_port/readyz" "$tmp/chatguard.log"
wait_ready chatguard "$cg_pid" "$cg_url" "$tmp/chatguard.log"

mkdir -p "$tmp/nginx"
nginx_conf "$tmp/nginx" 4096 "" "    keepalive_requests 1000000;
    upstream backend {
        server 127.0.0.1:$up_port;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$ngx_port;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
"$NGINX" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" >"$tmp/nginx/stdout.log" 2>&1 &
nginx_pid=$!
started+=("$nginx_pid")
wait_ready nginx "$nginx_pid" "$ngx_url" "$tmp/nginx/error.log"

# The three must answer the same body, or the comparison is meaningless.
want=$(curl -fsS "$direct_url")
for t in "$cg_url" "$ngx_url"; do
	got=$(curl -fsS "$t") || die "$t failed"
	[[ $got == "$want" ]] || die "$t answered $got, the upstream answers $want"
done
log "upstream :$up_port  chatguard :$cg_port (admin :$cg_admin_port)  nginx :$ngx_port  (tmp $tmp)"

# --- measuring ---------------------------------------------------------------

hz=$(getconf CLK_TCK)

# parse_wrk FILE: "req/s p50_ms p99_ms errors" (errors: socket errors + non-2xx/3xx).
parse_wrk() {
	awk '
	function ms(s,  v, u) {
		v = s + 0; u = s; sub(/^[0-9.]+/, "", u)
		if (u == "us") return v / 1000
		if (u == "ms") return v
		if (u == "s") return v * 1000
		if (u == "m") return v * 60000
		if (u == "h") return v * 3600000
		return -1
	}
	$1 == "Requests/sec:" { rps = $2 }
	$1 == "50%" { p50 = ms($2) }
	$1 == "99%" { p99 = ms($2) }
	/Socket errors:/ { for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) err += $i + 0 }
	/Non-2xx or 3xx responses:/ { err += $NF }
	END {
		if (rps == "" || p50 == "" || p99 == "") exit 1
		printf "%.0f %.3f %.3f %d\n", rps, p50, p99, err
	}' "$1"
}

# pids per target: the proxy's processes (none for direct).
proxy_pids() {
	case $1 in
	direct) ;;
	chatguard) echo "$cg_pid" ;;
	nginx) echo "$nginx_pid" $(ps -o pid= --ppid "$nginx_pid" 2>/dev/null || true) ;;
	esac
}
target_url() {
	case $1 in
	direct) echo "$direct_url" ;;
	chatguard) echo "$cg_url" ;;
	nginx) echo "$ngx_url" ;;
	esac
}

# phase target round conns rps p50 p99 errors, then CPU cores used by: wrk,
# the upstream, the proxy ("-" for direct), the whole machine, interrupts
# (mostly loopback networking), other processes (machine - the rest).
records=$tmp/records.tsv
: >"$records"
run_n=0


# measure PHASE TARGET ROUND CONNS DURATION [WRK ARGS...]: one wrk run,
# recorded unless PHASE is "warmup". A run during which other processes used
# more than 0.25 CPU is run again, up to RETRIES times; the last one counts.
measure() {
	measure_quietly 14 "$@" || return 0
	echo "$rec" >>"$records"
	log "$(printf '%-9s %-9s round %s  c=%-3s %8s req/s  p50 %7s ms  p99 %7s ms  errors %s' $(cut -f1-8 <<<"$rec"))"
	warn_other
}

# measure_once: measure's arguments; sets rec to the record line.
measure_once() {
	local phase=$1 target=$2 round=$3 conns=$4 dur=$5 url threads=$THREADS
	shift 5
	local out t0 t1 up0 up1 px0 px1 m0 m1 w0 w1 secs parsed pids rps p50 p99 errs
	url=$(target_url "$target")
	((threads <= conns)) || threads=$conns
	run_n=$((run_n + 1))
	out=$tmp/wrk-$run_n-$phase-$target-c$conns.txt
	pids=$(proxy_pids "$target")
	secs=$(seconds "$dur")

	local status failures=0
	while :; do
		up0=$(proc_ticks "$up_pid")
		px0=$(proc_ticks $pids)
		m0=$(machine_ticks)
		times >"$tmp/times0"
		t0=$(date +%s.%N)
		timeout --kill-after=5s "$((secs + 30))s" wrk --latency -t"$threads" -c"$conns" -d"$dur" "$@" "$url" >"$out" 2>&1 &
		wrk_pid=$!
		status=0
		wait "$wrk_pid" || status=$?
		wrk_pid=''
		((status != 0)) || break
		# wrk (its LuaJIT) has been seen to die at start once in a while,
		# with no output at all: try again, twice at most.
		cat "$out" >&2
		failures=$((failures + 1))
		((failures <= 2)) || die "wrk failed against $target ($url) with status $status, three times"
		log "wrk failed against $target ($url) with status $status; trying again"
		sleep 1
	done
	t1=$(date +%s.%N)
	times >"$tmp/times1"
	m1=$(machine_ticks)
	px1=$(proc_ticks $pids)
	up1=$(proc_ticks "$up_pid")
	w0=$(children_secs "$tmp/times0")
	w1=$(children_secs "$tmp/times1")

	parsed=$(parse_wrk "$out") || { cat "$out" >&2; die "cannot read wrk's output for $target"; }
	read -r rps p50 p99 errs <<<"$parsed"
	rec=$(awk -v ph="$phase" -v tg="$target" -v r="$round" -v c="$conns" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v e="$errs" \
		-v wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" -v hz="$hz" -v ncpu="$ncpu" \
		-v w="$(awk -v a="$w0" -v b="$w1" 'BEGIN{print b-a}')" -v up="$((up1 - up0))" -v px="$((px1 - px0))" -v hasproxy="${pids:+1}" \
		-v m0="$m0" -v m1="$m1" 'BEGIN {
			split(m0, a, " "); split(m1, b, " ")
			span = b[2] - a[2]
			mach = span > 0 ? (b[1] - a[1]) / span * ncpu : 0
			intr = span > 0 ? (b[3] - a[3]) / span * ncpu : 0
			other = mach - intr - w / wall - up / hz / wall - px / hz / wall
			if (other < 0) other = 0
			pxc = hasproxy ? sprintf("%.2f", px / hz / wall) : "-"
			printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%s\t%.2f\t%.2f\t%.2f\n", ph, tg, r, c, rps, p50, p99, e, w / wall, up / hz / wall, pxc, mach, intr, other
		}')
}

# col PHASE TARGET FIELD: median of that field (1-based, see records) over the phase's rounds.
col() { awk -F'\t' -v ph="$1" -v tg="$2" -v f="$3" '$1 == ph && $2 == tg { print $f }' "$records" | median; }

targets=(direct chatguard nginx)

# Anything else busy on the machine skews every number: measure it first.
m0=$(machine_ticks)
sleep 1
m1=$(machine_ticks)
idle_busy=$(busy_between "$m0" "$m1")
loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
awk -v b="$idle_busy" 'BEGIN { exit !(b > 0.2) }' && log "warning: the machine is already $idle_busy CPU(s) busy before the benchmark; the numbers will be noisy"

log "warm-up: $WARMUP per target"
for t in "${targets[@]}"; do measure warmup "$t" 0 "$CONNECTIONS" "$WARMUP"; done

log "peak: $ROUNDS round(s) of ${targets[*]}, wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
for ((r = 1; r <= ROUNDS; r++)); do
	for t in "${targets[@]}"; do measure peak "$t" "$r" "$CONNECTIONS" "$DURATION"; done
done

cg_peak=$(col peak chatguard 5)
log "half-peak calibration: chatguard peak is $cg_peak req/s; trying $CALIBRATE_CONNS connections for $CALIBRATE_DURATION each"
for c in $CALIBRATE_CONNS; do measure calibrate chatguard 1 "$c" "$CALIBRATE_DURATION"; done
half_conns=$(awk -F'\t' -v half="$cg_peak" '$1 == "calibrate" {
	d = $5 - half / 2; if (d < 0) d = -d
	if (best == "" || d < bestd) { best = $4; bestd = d }
} END { print best }' "$records")
log "half-peak: $half_conns connection(s); $ROUNDS round(s) of ${targets[*]}"
for ((r = 1; r <= ROUNDS; r++)); do
	for t in "${targets[@]}"; do measure half "$t" "$r" "$half_conns" "$DURATION"; done
done

# Paced: every connection pauses a random 0..2*PACE_MS ms before each request.
cat >"$tmp/paced.lua" <<EOF
-- Each thread gets its own seed, so that the threads' pauses differ.
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("seed", os.time() * 100 + threads)
end
function init(args)
    math.randomseed(seed)
end
function delay()
    return math.random(0, 2 * $PACE_MS)
end
EOF
paced_conns=$(awk -v p="$cg_peak" -v ms="$PACE_MS" 'BEGIN { n = int(p / 2 * ms / 1000 + 0.5); print (n < 1 ? 1 : n) }')
log "paced half-peak: $paced_conns connection(s) pausing 0..$((2 * PACE_MS)) ms; $ROUNDS round(s) of ${targets[*]}"
for ((r = 1; r <= ROUNDS; r++)); do
	for t in "${targets[@]}"; do measure paced "$t" "$r" "$paced_conns" "$DURATION" -s "$tmp/paced.lua"; done
done

# --- summary -------------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
diff_ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.3f", a - b }'; }

# table PHASE: the phase's medians per target.
table() {
	local t
	printf '%-10s %9s %8s %8s %6s   %s\n' target 'req/s' 'p50 ms' 'p99 ms' errors 'CPU cores: wrk upstream proxy interrupts other = machine'
	for t in "${targets[@]}"; do
		printf '%-10s %9s %8s %8s %6s   %14s %8s %5s %10s %5s   %7s\n' "$t" "$(col "$1" "$t" 5)" "$(col "$1" "$t" 6)" "$(col "$1" "$t" 7)" \
			"$(awk -F'\t' -v ph="$1" -v tg="$t" '$1 == ph && $2 == tg { s += $8 } END { print s + 0 }' "$records")" \
			"$(col "$1" "$t" 9)" "$(col "$1" "$t" 10)" "$(col "$1" "$t" 11)" "$(col "$1" "$t" 13)" "$(col "$1" "$t" 14)" "$(col "$1" "$t" 12)"
	done
}
# added PHASE: the latency the proxies add over direct in that phase.
added() {
	local t
	for t in chatguard nginx; do
		printf 'p99 added by %-9s over direct: %s ms (p50: %s ms)\n' "$t" \
			"$(diff_ms "$(col "$1" "$t" 7)" "$(col "$1" direct 7)")" "$(diff_ms "$(col "$1" "$t" 6)" "$(col "$1" direct 6)")"
	done
}

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
summary=$tmp/summary.txt
rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git -C "$root" status --porcelain -- . ':!bench' 2>/dev/null) ]] || rev+=" (+ uncommitted changes)"
if [[ $LOG_LEVEL == info || $LOG_LEVEL == debug ]]; then access="on"; else access="off"; fi
cg_lines=$(wc -l <"$tmp/chatguard.log")
ngx_lines=$(wc -l <"$tmp/nginx/access.log")
{
	echo "chatguard HTTP proxy benchmark, $stamp"
	echo "chatguard $rev; $("$GO" version | cut -d' ' -f3); $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'); $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
	echo "machine: $ncpu CPU(s), $(uname -sr); before the runs: load average $loadavg, $idle_busy CPU(s) busy with the servers idle"
	echo "chatguard: production, LOG_LEVEL=$LOG_LEVEL (access log $access: $cg_lines lines), metrics on"
	echo "nginx: worker_processes auto, upstream keepalive 64, access_log on ($ngx_lines lines)"
	echo "everything shares the $ncpu CPU(s): wrk, the upstream, the proxy. CPU cores = user+system CPU time / wall"
	echo "time of the run (medians over rounds); interrupts = irq+softirq, mostly loopback networking, charged"
	echo "to no process; other = every other process on the machine (should be about 0); machine = all of it"
	echo
	echo "Peak: wrk --latency -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS interleaved round(s), medians over rounds"
	table peak
	echo "throughput ratio chatguard/direct: $(ratio "$(col peak chatguard 5)" "$(col peak direct 5)")"
	echo "throughput ratio chatguard/nginx:  $(ratio "$(col peak chatguard 5)" "$(col peak nginx 5)")"
	echo "(nginx/direct: $(ratio "$(col peak nginx 5)" "$(col peak direct 5)"))"
	echo
	echo "Half of chatguard's peak, same concurrency: $half_conns connection(s), -d$DURATION, $ROUNDS interleaved round(s), medians"
	echo "(closed loop: direct and nginx get more req/s than chatguard at this concurrency)"
	table half
	added half
	echo "calibration (chatguard alone, -d$CALIBRATE_DURATION; target $(awk -v p="$cg_peak" 'BEGIN { printf "%.0f", p / 2 }') req/s):" \
		"$(awk -F'\t' '$1 == "calibrate" { printf "%sc=%s: %s req/s", sep, $4, $5; sep = ", " }' "$records")"
	echo
	echo "Half of chatguard's peak, same offered rate: $paced_conns connection(s) each pausing 0..$((2 * PACE_MS)) ms between requests"
	echo "(offered about $(awk -v n="$paced_conns" -v ms="$PACE_MS" 'BEGIN { printf "%.0f", n * 1000 / ms }') req/s), -d$DURATION, $ROUNDS interleaved round(s), medians"
	table paced
	added paced
	echo
	echo "Every run (phase target round conns req/s p50ms p99ms errors, CPU cores: wrk upstream proxy interrupts other = machine):"
	awk -F'\t' '{ printf "  %-9s %-9s %s %4s %9s %8s %8s %4s   %s %s %s %s %s = %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13, $14, $12 }' "$records"
} >"$summary"

# trim_perf: perf report's lines without blank lines and the empty IPC columns.
trim_perf() { sed -E -e '/^[[:space:]]*$/d' -e 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//'; }

if [[ $PERF == 1 ]]; then
	if command -v perf >/dev/null; then
		log "perf: profiling chatguard during one more $DURATION run (not in the summary above)"
		perf record -F 999 -g -p "$cg_pid" -o "$tmp/perf.data" -- sleep "$(seconds "$DURATION")" >"$tmp/perf.log" 2>&1 &
		perf_pid=$!
		sleep 0.5
		measure profile chatguard 1 "$CONNECTIONS" "$DURATION"
		wait "$perf_pid" || log "perf record failed; see $tmp/perf.log"
		perf_pid=''
		mkdir -p "$results_dir"
		{
			echo "perf record -F 999 -g of chatguard during wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $stamp"
			echo "[k] = kernel, [.] = chatguard (Go and runtime)"
			echo "== self time by function, >= 0.5% =="
			perf report -i "$tmp/perf.data" --stdio -q --no-children --sort symbol -g none --percent-limit 0.5 2>/dev/null | trim_perf
			echo "== time including callees (children, self), >= 3% =="
			perf report -i "$tmp/perf.data" --stdio -q --children --sort symbol -g none --percent-limit 3 2>/dev/null | trim_perf
		} >"$results_dir/http-$stamp.perf.txt"
		echo "perf profile: bench/results/http-$stamp.perf.txt" >>"$summary"
	else
		log "PERF=1 but perf is not installed (apt-get install linux-perf); skipped"
	fi
fi

mkdir -p "$results_dir"
cp "$summary" "$results_dir/http-$stamp.txt"
echo
cat "$summary"
echo
echo "written to bench/results/http-$stamp.txt"
