#!/bin/bash
# usage: cpu.sh SCRIPT SECONDS [ROWS_PER_STATEMENT, default 64]
# pgbench with 4 clients; prints Postgres CPU ms per row.
pg_cpu() { local t=0; pm=$(pgrep -o -x postgres); for p in $(pgrep -x postgres); do s=$(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null); t=$((t+${s:-0})); done; c=$(awk '{print $16+$17}' /proc/$pm/stat); echo $((t+c)); }
a=$(pg_cpu)
out=$(pgbench -U postgres -h 127.0.0.1 -n -c 4 -j 2 -T $2 -f $1 pgx 2>&1 | grep -E "^tps|transactions actually")
b=$(pg_cpu)
n=$(echo "$out" | grep "actually" | awk '{print $NF}')
tps=$(echo "$out" | grep tps | awk '{print $3}')
echo "$1 tps=$tps batches=$n pg_cpu_s=$(( (b-a) ))cs ms_per_row=$(python3 -c "print(round(($b-$a)*10/($n*${3:-64}),4))")"
