# shellcheck shell=bash
# Shared by scripts/bench-load and scripts/bench-cpu (sourced, not run): the benchmark config,
# the request bodies and starting a server. The caller sets W (its work folder, holding the
# store in $W/store) and DATASET (the SciFact folder).

# bench_config FILE CACHE_SIZE: query-embedding cache of CACHE_SIZE entries, and a `bench` tier
# and anonymous access whose limits exceed any load.
bench_config() {
  cat > "$1" <<CFG
[search]
query_cache_size = $2
[auth]
anonymous = { requests_per_hour = 1000000000, concurrent = 100000 }
[auth.tiers]
bench = { requests_per_hour = 1000000000, concurrent = 100000 }
CFG
}

# bench_bodies MODE...: $W/MODE.lines for each MODE, one /search JSON body per line, one per
# SciFact test query (the split that has judgements).
bench_bodies() {
  python3 - "$DATASET" "$W" "$@" <<'PY'
import json, sys
ds, w, modes = sys.argv[1], sys.argv[2], sys.argv[3:]
judged = {l.split("\t")[0] for l in open(f"{ds}/qrels/test.tsv").read().splitlines()[1:] if l.strip()}
qs = [q["text"] for q in map(json.loads, open(f"{ds}/queries.jsonl")) if q["_id"] in judged]
for mode in modes:
    with open(f"{w}/{mode}.lines", "w") as f:
        for q in qs:
            f.write(json.dumps({"query": q, "mode": mode}) + "\n")
print(f"bench: {len(qs)} test queries", file=sys.stderr)
PY
}

# bench_serve BIN CONFIG AUTH_MODE: starts `BIN serve` on a free loopback port over $W/store
# and waits until it listens; sets PID and URL (for the caller).
# shellcheck disable=SC2034
bench_serve() {
  "$1" --config "$2" --data-dir "$W/store" serve --addr 127.0.0.1:0 --auth "$3" \
    > "$W/serve.out" 2> /dev/null &
  PID=$!
  for _ in $(seq 1 600); do grep -q "listening on" "$W/serve.out" 2>/dev/null && break; sleep 0.1; done
  URL=$(sed -n 's/^cairn listening on //p' "$W/serve.out")
  [ -n "$URL" ] || { echo "bench: $1 serve did not start" >&2; return 1; }
}
