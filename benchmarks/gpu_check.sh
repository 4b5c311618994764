#!/usr/bin/env bash
# CUDA checks: the CUDA tests (bf16 autocast ProtoNet and vectorised-MAML steps, no host-device sync
# inside the MAML inner loop), the speed benchmark and the peers benchmark (kgmeta beside easyfsl
# and plain PyTorch loops, benchmarks/peers.py) on the GPU. Prints one JSON summary as the last
# line. Exits 0 with a note when there is no GPU; a peer that is not installed (peers.py exit 2)
# is reported in the summary without failing the check.
#   bash benchmarks/gpu_check.sh [--quick]
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
QUICK="${1:-}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi >/dev/null 2>&1 \
   || ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo '{"gpu": false, "note": "no CUDA GPU (nvidia-smi or torch.cuda unavailable); CUDA checks skipped"}'
  exit 0
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
out="$(mktemp -d)"
# tests whose name mentions cuda (they skip themselves without CUDA)
"$PY" -m pytest -q -k cuda tests/test_vmap_maml.py >"$out/pytest.txt" 2>&1
tests_rc=$?
tail -n 5 "$out/pytest.txt"
"$PY" benchmarks/speed.py --device cuda $QUICK --skip ddp >"$out/speed.txt" 2>&1
speed_rc=$?
tail -n 20 "$out/speed.txt"
"$PY" benchmarks/peers.py --device cuda $QUICK >"$out/peers.txt" 2>&1
peers_rc=$?
tail -n 12 "$out/peers.txt"
"$PY" - "$out" "$tests_rc" "$speed_rc" "$peers_rc" <<'EOF'
import json, sys, torch
out, tests_rc, speed_rc, peers_rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])


def last_json(name):
    lines = open(f"{out}/{name}").read().strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else None
    except ValueError:
        return None


peers_txt = open(f"{out}/peers.txt").read().strip().splitlines()
print(json.dumps({"gpu": True, "name": torch.cuda.get_device_name(0), "cuda_tests_rc": tests_rc,
                  "cuda_tests": open(f"{out}/pytest.txt").read().strip().splitlines()[-1:],
                  "speed_rc": speed_rc, "speed": last_json("speed.txt"),
                  "peers_rc": peers_rc, "peers": last_json("peers.txt"),
                  "peers_note": peers_txt[-1:] if peers_rc else None}))
sys.exit(0 if tests_rc == 0 and speed_rc == 0 and peers_rc in (0, 2) else 1)
EOF
