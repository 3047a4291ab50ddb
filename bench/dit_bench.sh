#!/bin/bash
# The toy DiTs' quality benchmark (#28 item 4), one run per mode (resumable: a finished mode is skipped), then merged
# into bench/quality-dit.json (TOY=sd3: the toy SD3, bench/quality-sd3.json). MODES="move drag" bench/dit_bench.sh;
# SCENES=40 by default.
cd "$(dirname "$0")/.."
T=${TOY:-dit}
OUT=bench/$T/runs; mkdir -p "$OUT"
for m in ${MODES:-move drag remove paste}; do
  [ -f "$OUT/$m.json" ] && continue
  v="none"; [ "$m" = move ] && v="no_kv no_energy"
  env OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_quality.py --$T --modes $m --scenes ${SCENES:-40} \
    --variant-modes $m --variants $v --out "$OUT/$m.tmp.json" --strip-dir bench/$T && mv "$OUT/$m.tmp.json" "$OUT/$m.json"
done
ls "$OUT"/*.json | grep -v tmp > /dev/null && .venv/bin/python scripts/bench_quality.py --merge $(ls "$OUT"/*.json | grep -v tmp) --out bench/quality-$T.json > /dev/null
