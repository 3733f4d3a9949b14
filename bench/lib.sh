#!/usr/bin/env bash
# Helpers shared by the benchmark scripts (bench/http/run.sh, bench/ws/run.sh),
# which source this file.

# on_exit FN: FN runs when the script ends, however it ends; a signal ends it
# with the shell's usual status (128 + the signal's number).
on_exit() {
	trap "$1" EXIT
	trap 'exit 129' HUP
	trap 'exit 130' INT
	trap 'exit 141' PIPE
	trap 'exit 143' TERM
}

die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "run.sh: $*" >&2; }
# seconds DURATION: wrk's duration syntax (plain, s, m, h) in whole seconds.
seconds() {
	local d=$1
	case $d in
	*[0-9]s) echo "${d%s}" ;;
	*[0-9]m) echo $((${d%m} * 60)) ;;
	*[0-9]h) echo $((${d%h} * 3600)) ;;
	*[0-9]) echo "$d" ;;
	*) return 1 ;;
	esac
}
# free_port VAR: a loopback port nothing uses, below the ephemeral range (so
# that no outgoing connection of the benchmark can hold it), never handed out
# before. eph_low is read below unless the script has read it.
handed_out=' '
[[ -n ${eph_low:-} ]] || read -r eph_low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph_low=32768
free_port() {
	local p i span=$((eph_low - 20000))
	((span > 1000)) || span=10000
	for ((i = 0; i < 500; i++)); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % span))
		[[ $handed_out == *" $p "* ]] && continue
		if command -v ss >/dev/null; then
			[[ -z $(ss -Htan "sport = :$p" 2>/dev/null) ]] || continue
		elif (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			continue
		fi
		handed_out+="$p "
		printf -v "$1" '%s' "$p"
		return 0
	done
	die "found no free loopback port"
}
# wait_ready NAME PID URL LOG: until URL answers 2xx, with a 15 s deadline.
wait_ready() {
	local name=$1 pid=$2 url=$3 logf=$4 deadline=$((SECONDS + 15))
	until curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; do
		kill -0 "$pid" 2>/dev/null || { tail -n 20 "$logf" >&2 || true; die "$name exited during start-up (log above: $logf)"; }
		((SECONDS < deadline)) || { tail -n 20 "$logf" >&2 || true; die "$name did not answer $url within 15 s"; }
		sleep 0.1
	done
}
# proc_ticks PID...: user+system clock ticks used so far by those processes.
proc_ticks() {
	local total=0 p line f
	for p; do
		read -r line 2>/dev/null <"/proc/$p/stat" || continue
		f=(${line##*) }) # fields from the 3rd (state) on
		total=$((total + f[11] + f[12]))
	done
	echo "$total"
}
# machine_ticks: "busy total interrupts" clock ticks of all CPUs, from
# /proc/stat; interrupts (irq + softirq) are charged to no process.
machine_ticks() {
	local _ user nice sys idle iow irq soft steal
	read -r _ user nice sys idle iow irq soft steal _ </proc/stat
	echo "$((user + nice + sys + irq + soft + steal)) $((user + nice + sys + idle + iow + irq + soft + steal)) $((irq + soft))"
}
ncpu=$(getconf _NPROCESSORS_ONLN)
# busy_between A B: CPUs busy between two machine_ticks readings.
busy_between() {
	awk -v a="$1" -v b="$2" -v ncpu="$ncpu" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.2f", (y[2] > x[2]) ? (y[1] - x[1]) / (y[2] - x[2]) * ncpu : 0 }'
}
# busy_now: CPUs busy over half a second.
busy_now() {
	local a
	a=$(machine_ticks)
	sleep 0.5
	busy_between "$a" "$(machine_ticks)"
}
# wait_quiet: up to QUIET_WAIT seconds until the machine (the benchmark's
# own servers idle between runs) is less than 0.2 CPU busy.
wait_quiet() {
	local deadline=$((SECONDS + QUIET_WAIT)) busy waited=0
	while :; do
		busy=$(busy_now)
		awk -v b="$busy" 'BEGIN { exit !(b < 0.2) }' && return 0
		if ((SECONDS >= deadline)); then
			log "the machine is still $busy CPU(s) busy after ${QUIET_WAIT}s; running anyway"
			return 0
		fi
		((waited)) || log "the machine is $busy CPU(s) busy without us; waiting up to ${QUIET_WAIT}s for it to calm down"
		waited=1
		sleep 1
	done
}
# measure_quietly OTHER_COLUMN PHASE ...: the script's measure_once PHASE ...
# on a quiet machine (see wait_quiet; not for the warm-up), run again while
# other processes used more than 0.25 CPU during it (column OTHER_COLUMN of
# the record it leaves in $rec), up to RETRIES times. It sets $other; it
# fails for the warm-up, which is not recorded.
measure_quietly() {
	local col=$1 attempt
	shift
	for ((attempt = 0; ; attempt++)); do
		((QUIET_WAIT == 0)) || [[ $1 == warmup ]] || wait_quiet
		measure_once "$@"
		[[ $1 != warmup ]] || return 1
		other=$(cut -f"$col" <<<"$rec")
		if ((attempt >= RETRIES)) || awk -v o="$other" 'BEGIN { exit !(o <= 0.25) }'; then
			return 0
		fi
		log "other processes used $other CPU(s) during that run; running it again"
	done
}
# warn_other: the warning for a record whose run other processes disturbed.
warn_other() {
	if awk -v o="$other" 'BEGIN { exit !(o > 0.25) }'; then
		log "warning: other processes used $other CPU(s) during that run; see the 'other' column"
	fi
}
# children_secs FILE: the children's user+system seconds from `times` output.
children_secs() {
	sed -n 2p "$1" | awk '{
		t = 0
		for (i = 1; i <= 2; i++) { split($i, a, "m"); sub(/s$/, "", a[2]); t += a[1] * 60 + a[2] }
		printf "%.3f", t
	}'
}
# median: the median of the numbers on stdin ("-" when there are none or they are not numbers).
median() {
	sort -g | awk '$1 != "-" { a[++n] = $1 } END {
		if (n == 0) { print "-"; exit }
		m = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		print m
	}'
}
# nginx_conf DIR WORKER_CONNECTIONS MAIN_LINES HTTP_LINES: writes DIR/nginx.conf,
# nginx in the foreground with every file of its own (pid, logs, temp paths)
# under DIR; MAIN_LINES go before events {}, HTTP_LINES inside http {}.
nginx_conf() {
	local dir=$1
	cat >"$dir/nginx.conf" <<NGX
daemon off;
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
$3
events {
    worker_connections $2;
}
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
$4
}
NGX
}
