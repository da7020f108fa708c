#!/usr/bin/env bash
# The `make run` demo: starts the local cluster of deploy/local/1p1d.json on
# loopback serving MODEL, streams one generation through the gateway with
# moe-cli, then keeps the cluster up until Ctrl-C (DEMO_KEEP=0: stop right
# after the generation).
#   tools/demo.sh BUILD_DIR MODEL_DIR PROMPT MAX_TOKENS
# PROMPT is text (MODEL_DIR carries a tokenizer).
set -euo pipefail

build=$1 model=$2 prompt=$3 tokens=$4
topology=${DEMO_TOPOLOGY:-deploy/local/1p1d.json}
out=$(mktemp -t moe-demo.XXXXXX)
launcher=""

stop() {
  if [ -n "$launcher" ] && kill -0 "$launcher" 2>/dev/null; then
    kill -TERM "$launcher"
    wait "$launcher" || true
  fi
  rm -f "$out"
}
trap stop EXIT
trap 'exit 130' INT TERM

echo "demo: starting the cluster of $topology on loopback (model $model)"
# In a session of its own, so that a terminal's Ctrl-C reaches only this
# script, which then asks the launcher once to stop (a second stop signal
# would make it kill the servers without letting them drain).
# The shipped Prometheus config, next to the target files the launcher
# writes, so that the cluster can be watched with one command (printed below).
prom="$build/demo/prometheus"
mkdir -p "$prom"
cp deploy/prometheus/prometheus.yml deploy/prometheus/alerts.yml "$prom/"
setsid "$build/bin/moe-cluster" up --topology "$topology" --model "$model" \
  --prometheus_targets_dir "$prom/targets" >"$out" &
launcher=$!

# Wait for "ready" (the launcher prints one line per server before it).
for _ in $(seq 1 600); do
  if grep -qx ready "$out"; then break; fi
  if ! kill -0 "$launcher" 2>/dev/null; then
    cat "$out"
    echo "demo: the cluster did not start (see the messages above)" >&2
    exit 1
  fi
  sleep 0.2
done
if ! grep -qx ready "$out"; then
  echo "demo: the cluster did not become ready within 120 s" >&2
  exit 1
fi
cat "$out"
gateway=$(sed -n 's/^gateway: \([^ ]*\).*/\1/p' "$out")
openai=$(sed -n 's/^gateway: .* openai \([^ ]*\).*/\1/p' "$out")

echo
echo "demo: streaming a generation through the gateway at $gateway"
echo "prompt: $prompt"
"$build/bin/moe-cli" generate --gateway "$gateway" --prompt "$prompt" \
  --max-tokens "$tokens" --temperature 0.8 --top-p 0.95 --seed 1

echo
echo "demo: the same cluster through its OpenAI-compatible HTTP API at $openai"
chat_body='{"messages": [{"role": "user", "content": "'"$prompt"'"}], "max_tokens": '"$tokens"', "temperature": 0.8, "top_p": 0.95, "seed": 1}'
echo "curl $openai/chat/completions -H 'Content-Type: application/json' -d '$chat_body'"
curl -sS "$openai/chat/completions" -H 'Content-Type: application/json' \
  -d "$chat_body"
echo

if [ "${DEMO_KEEP:-1}" = 0 ]; then
  exit 0
fi
echo
echo "demo: the cluster keeps serving at $gateway; try"
echo "  $build/bin/moe-cli generate --gateway $gateway --prompt 'Once upon a time' --max-tokens 16"
echo "  $build/bin/moe-cli chat --gateway $gateway --max-tokens 32   # one user turn per line"
echo "  $build/bin/moe-cli generate --gateway $gateway --prompt-ids 1,2,3 --max-tokens 16"
echo "  $build/bin/moe-cli info --gateway $gateway"
echo "  curl -N $openai/chat/completions -H 'Content-Type: application/json' \\"
echo "    -d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}], \"max_tokens\": 32, \"stream\": true}'"
echo "  curl $openai/completions -H 'Content-Type: application/json' -d '{\"prompt\": \"Once upon a time\", \"max_tokens\": 16}'"
echo "  curl $openai/models                # any OpenAI client: base URL $openai"
echo "  curl -s <metrics URL above>        # one server's Prometheus metrics"
echo "  prometheus --config.file=$prom/prometheus.yml --storage.tsdb.path=$prom/data"
echo "                                      # scrape them all (http://localhost:9090)"
echo "demo: press Ctrl-C to stop it"
wait "$launcher"
