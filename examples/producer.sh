#!/bin/sh
# Send simulated temperatures of three devices with nothing but redis-cli:
# a producer needs no streamcalc code, only XADD to the namespace's input stream.
#
#   sh examples/producer.sh            # 10 entries, one a second
#   COUNT=100 INTERVAL=0 sh examples/producer.sh
#   KEY=plant-berlin sh examples/producer.sh
#
# STREAMCALC_REDIS_URL and STREAMCALC_NS choose the Redis and the namespace,
# as for the command line. Each value is JSON text; @ts (event time, ms since
# the epoch) is optional: without it the entry ID's time is the event time.
set -eu

url=${STREAMCALC_REDIS_URL:-redis://localhost:6379/0}
ns=${STREAMCALC_NS:-default}
count=${COUNT:-10}
interval=${INTERVAL:-1}

# Every key has its partition, and a producer that knows the key writes to the
# partition's own stream; sc:{NS}:in is also fine (the workers move such
# entries), and is the only stream of a namespace with one partition.
stream="sc:{$ns}:in"
if [ -n "${KEY:-}" ]; then
    stream=$(streamcalc partition "$KEY" | cut -d' ' -f2) 2>/dev/null || stream="sc:{$ns}:in"
fi

i=0
while [ "$i" -lt "$count" ]; do
    # three temperatures around 60 °C; awk only for the random numbers
    set -- $(awk -v seed="$$$i" 'BEGIN { srand(seed); for (d = 0; d < 3; d++) printf "%.2f ", 55 + 10 * rand() }')
    if [ -n "${KEY:-}" ]; then
        redis-cli -u "$url" XADD "$stream" '*' @key "$KEY" dev1.temp "$1" dev2.temp "$2" dev3.temp "$3"
    else
        redis-cli -u "$url" XADD "$stream" '*' dev1.temp "$1" dev2.temp "$2" dev3.temp "$3"
    fi
    i=$((i + 1))
    if [ "$i" -lt "$count" ]; then sleep "$interval"; fi
done
