#!/usr/bin/env bash
# The GPU runs behind README's "Compiled speed" tables, in parts that each fit one device call:
#   bash benchmarks/run_compiled_suite.sh A|B|C OUT_DIR
# A: cold compile (fresh processes) + cached-step profile + FLUX 1024 cache rows
# B: FLUX 1024 no-cache baselines + FLUX 512 everything      C: PixArt-Sigma 512 everything
# D: cold compile of dit_fx with blocks traced once, traced flat, and regional compile (fresh
#    processes), a backend profile, and the GPU check of CUDA graphs with caching
set -u
part=$1; out=$2
export PYTHONUNBUFFERED=1
b=benchmarks
case $part in
A)
  for s in dit_fx regional; do python $b/cold_compile.py --system $s --out $out/cold_$s.json | grep -v Runtimes; done
  python $b/profile_compiled_step.py --size 1024 --fn 1 --out $out/profile_compiled_F1B0_1024.txt
  python $b/bench_compiled.py --model flux --size 1024 --groups ideal dit_fx cache_dit --out $out/compiled_flux_1024_cache.json ;;
B)
  python $b/cold_compile.py --system dit_fx --profile-backend $out/backend_profile.txt | grep first_call
  python $b/bench_compiled.py --model flux --size 1024 --groups baselines --skip "torch.compile reduce-overhead" --out $out/compiled_flux_1024_baselines.json
  python $b/bench_compiled.py --model flux --size 512 --variants cuda_graphs --out $out/compiled_flux_512.json ;;
C)
  python $b/bench_compiled.py --model pixart --size 512 --out $out/compiled_pixart_512.json ;;
D)
  timeout 200 python $b/check_cuda_graphs.py --out $out/check_cuda_graphs.json | tail -12
  for r in 1 2; do for s in "dit_fx" "regional"; do
    python $b/cold_compile.py --system $s --out $out/cold_${s}_$r.json | grep -E "first_call|inlined|backend_s" -A1
  done; done
  python $b/cold_compile.py --system dit_fx --profile-backend $out/backend_profile.txt | grep first_call ;;
esac
