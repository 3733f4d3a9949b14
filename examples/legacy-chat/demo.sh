#!/usr/bin/env bash
# make demo: the legacy app on :3000 behind chatguard on :8080 (admin :9090).
# Ctrl-C stops both. DEMO_APP_PORT, DEMO_PORT and DEMO_ADMIN_PORT move them.
set -euo pipefail
cd "$(dirname "$0")"
CHATGUARD_BIN=${CHATGUARD_BIN:-../../bin/chatguard}
# Demo values; chatguard wants a JWT secret of 32 bytes or more, a stats token of 16.
export JWT_SECRET=demo-jwt-secret-0123456789abcdef01234
STATS_TOKEN=demo-stats-token-0123
app=${DEMO_APP_PORT:-3000} pub=${DEMO_PORT:-8080} adm=${DEMO_ADMIN_PORT:-9090}

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
PORT=$app setsid node server.js & pids+=($!)
CHATGUARD_LISTEN=:$pub CHATGUARD_ADMIN_LISTEN=:$adm CHATGUARD_UPSTREAM=http://127.0.0.1:$app \
  CHATGUARD_ENV=development CHATGUARD_JWT_SECRET=$JWT_SECRET CHATGUARD_STATS_TOKEN=$STATS_TOKEN \
  CHATGUARD_RATE_LIMIT_FILE="$tmp/rate-limits.json" CHATGUARD_PROFILE_DIR="$tmp/profiles" CHATGUARD_DRAIN_DELAY=0s \
  setsid "$CHATGUARD_BIN" & pids+=($!)

ready=""
for _ in $(seq 100); do
  # chatguard ready, and the app answering (any status) behind it
  curl -fsS -o /dev/null http://127.0.0.1:$adm/readyz 2>/dev/null &&
    curl -sS -o /dev/null http://127.0.0.1:$app/ 2>/dev/null && { ready=1; break; }
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || break 2; done # one of them exited
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "demo: chatguard or legacy-chat did not start (see above: ports $app, $pub and $adm must be free;" \
    "DEMO_APP_PORT, DEMO_PORT and DEMO_ADMIN_PORT choose others)" >&2
  exit 1
fi

cat <<MSG

chatguard :$pub -> legacy-chat :$app   (admin :$adm; Ctrl-C stops both)

  # log in (the 4th login for one email within 15 min gets 429)
  TOKEN=\$(curl -s localhost:$pub/api/auth/login -H 'content-type: application/json' \\
    -d '{"email":"agent@test.com","password":"secret"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
  # an express-validator error, as an envelope
  curl -s localhost:$pub/api/messages -H "authorization: Bearer \$TOKEN" -H 'content-type: application/json' -d '{}'
  # Express's crash page, as an INTERNAL_ERROR envelope
  curl -s localhost:$pub/api/crash
  # a Twilio error, as EXTERNAL_SERVICE_ERROR
  curl -s localhost:$pub/webhook/twilio -d 'From=123&Body=hi'
  # stats, metrics, drain
  curl -s localhost:$adm/api/internal/stats -H 'authorization: Bearer $STATS_TOKEN'
  curl -s localhost:$adm/metrics | grep ^chatguard_ | head
  curl -s -X POST localhost:$adm/drain

MSG
wait -n "${pids[@]}"
