#!/bin/sh
# The report --suggest model against churn: one workload under the shim
# with a range of RANGE_SIZE ports (40000..), then what report --suggest
# makes of its log.  Run as root in a private network namespace:
#   unshare -n sh -c 'ip link set lo up; bench/suggest_churn/run.sh w4 50 20 50 1 56'
# NAME RATE SECONDS THREADS HOLD RANGE_SIZE: THREADS clients, each
# connect, read the greeting, hold HOLD s, close (first), paced to RATE
# connects/s in all.  Prints the connects done and failed, the peak of
# connections open at once, the rate reached, the log's error records,
# and the suggestion's peak_per_minute and recommended_range_size.
here=$(cd "$(dirname "$0")" && pwd)
T=${PORTFENCE:-$here/../../build/portfence}
D=${TMPDIR:-/tmp}/suggest-churn-$1-$6; rm -rf "$D"; mkdir -p "$D"
lo=40000; hi=$((lo + $6 - 1))
cat > "$D/p.conf" <<P
version = 1;
log = { file = "$D/log.jsonl"; };
state_dir = "$D/state";
apps = ( { name = "churn"; range = [ $lo, $hi ]; algorithm = "double-hash"; } );
P
port=$((30000 + $$ % 1000))
python3 "$here/server.py" $port "$D/ready" & S=$!
while [ ! -f "$D/ready" ]; do sleep 0.05; done
out=$("$T" run -c "$D/p.conf" -a churn -- python3 "$here/client.py" $port $2 $3 $4 $5)
kill $S; wait $S 2>/dev/null
sug=$("$T" report --suggest --json -c "$D/p.conf" "$D/log.jsonl" |
      python3 -c 'import json,sys; a=json.load(sys.stdin)["apps"]; print(a[0]["peak_per_minute"], a[0]["recommended_range_size"]) if a else print("-")')
fails=$(grep -c '"event":"error"' "$D/log.jsonl")
echo "$1 rate=$2 s=$3 threads=$4 hold=$5 range=$6 | done failed peak_open rate: $out | error records $fails | P, suggested: $sug"
