#!/usr/bin/env bash
# make demo: the legacy app on :3000 behind chatguard on :8080 (admin :9090).
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")"
CHATGUARD_BIN=${CHATGUARD_BIN:-../../bin/chatguard}
# Demo values; chatguard wants a JWT secret of 32 bytes or more, a stats token of 16.
export JWT_SECRET=demo-jwt-secret-0123456789abcdef01234
STATS_TOKEN=demo-stats-token-0123

tmp=$(mktemp -d)
pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
  echo "demo stopped"
}
trap cleanup INT TERM EXIT

# Each child runs in a session of its own: Ctrl-C reaches only this script,
# whose trap stops each child with one SIGTERM (a second signal would make
# chatguard skip its graceful drain).
PORT=3000 setsid node server.js & pids+=($!)
CHATGUARD_LISTEN=:8080 CHATGUARD_ADMIN_LISTEN=:9090 CHATGUARD_UPSTREAM=http://127.0.0.1:3000 \
  CHATGUARD_ENV=development CHATGUARD_JWT_SECRET=$JWT_SECRET CHATGUARD_STATS_TOKEN=$STATS_TOKEN \
  CHATGUARD_RATE_LIMIT_FILE="$tmp/rate-limits.json" CHATGUARD_PROFILE_DIR="$tmp/profiles" CHATGUARD_DRAIN_DELAY=0s \
  setsid "$CHATGUARD_BIN" & pids+=($!)

ready=""
for _ in $(seq 100); do
  curl -fsS -o /dev/null http://127.0.0.1:9090/readyz 2>/dev/null && { ready=1; break; }
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || break 2; done # one of them exited
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "demo: chatguard or legacy-chat did not start (see above: ports 3000, 8080 and 9090 must be free)" >&2
  exit 1
fi

cat <<MSG

chatguard :8080 -> legacy-chat :3000   (admin :9090; Ctrl-C stops both)

  # log in (the 4th login for one email within 15 min gets 429)
  TOKEN=\$(curl -s localhost:8080/api/auth/login -H 'content-type: application/json' \\
    -d '{"email":"agent@test.com","password":"secret"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
  # an express-validator error, as an envelope
  curl -s localhost:8080/api/messages -H "authorization: Bearer \$TOKEN" -H 'content-type: application/json' -d '{}'
  # Express's crash page, as an INTERNAL_ERROR envelope
  curl -s localhost:8080/api/crash
  # a Twilio error, as EXTERNAL_SERVICE_ERROR
  curl -s localhost:8080/webhook/twilio -d 'From=123&Body=hi'
  # stats, metrics, drain
  curl -s localhost:9090/api/internal/stats -H 'authorization: Bearer $STATS_TOKEN'
  curl -s localhost:9090/metrics | grep ^chatguard_ | head
  curl -s -X POST localhost:9090/drain

MSG
wait -n "${pids[@]}"
