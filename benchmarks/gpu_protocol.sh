#!/usr/bin/env bash
# One call on a lent GPU machine (the `device` tool): the protocol recipe against lightly's CIFAR-10 benchmark loop
# at an equal budget (benchmarks/protocol_reference.py), one seed after another while the time allows.
#
#   carry: .whl (lightly, faiss-cpu, kornia, kornia_rs, pydantic + its needs: wheels for the GPU image's Python)
#          .gpu (cifar10_train_jpeg.tar.gz and a cifar10_subset.npz holding only x_test / y_test)
#   run:   bash benchmarks/gpu_protocol.sh        (EPOCHS=12 SEEDS="0 1" START_BY=300 DECODE_CHECK=1 by default)
#
# Making the carried folders here (both are in .gitignore; the GPU image runs Python 3.12):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     lightly==1.6.0 faiss-cpu==1.15.1 kornia==0.9.0 kornia_rs==0.2.0 pydantic==2.14.4 pydantic_core==2.50.5 \
#     annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
#   mkdir .gpu && cp ../shared/datasets/cifar10_train_jpeg.tar.gz .gpu/ && python -c "import numpy as np; \
#     z = np.load('../shared/datasets/cifar10_subset.npz'); \
#     np.savez_compressed('.gpu/cifar10_subset.npz', x_test=z['x_test'], y_test=z['y_test'])"
# Together about 47 MB of the 64 MiB a call may carry. A local dry run on the CPU:
#   PY=.venv/bin/python SKIP_WHEELS=1 EPOCHS=1 SEEDS=0 EXTRA="--limit-train 512" bash benchmarks/gpu_protocol.sh
#
# Everything it measures lands in $OUT: versions, nvidia-smi readings, each seed's log and protocol.json.
set -u
T0=$(date +%s)
PY=${PY:-python3}
EPOCHS=${EPOCHS:-12}
SEEDS=${SEEDS-"0 1"}   # SEEDS="" runs no seed
START_BY=${START_BY:-300}   # seconds since start after which no further seed begins
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
if [ -z "${SKIP_WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
if [ ! -f ../shared/datasets/cifar10_train_jpeg.tar.gz ]; then
  mkdir -p ../shared/datasets && cp .gpu/* ../shared/datasets/ || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv > "$OUT/smi.txt" 2>&1
$PY -c "import torch, timm, lightly, pytorch_lightning, faiss, kornia, os
print('torch', torch.__version__, 'timm', timm.__version__, 'lightly', lightly.__version__,
      'lightning', pytorch_lightning.__version__, 'faiss', faiss.__version__, 'kornia', kornia.__version__,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', os.cpu_count(), 'cpus')" \
  | tee "$OUT/versions.txt" || exit 1
(nvidia-smi dmon -s u -d 5 > "$OUT/dmon.txt" 2>&1 &)
if [ "${DECODE_CHECK:-1}" != 0 ]; then
  # data.decode=device on a real GPU (nvJPEG in batches), never exercised by CI: one short epoch from the JPEG folder,
  # then the same with the CPU decoder for its rate (img/s and data wait are in each log's epoch line).
  $PY -c "import sys; sys.path.insert(0, '.'); from benchmarks.cifar_data import cifar10_folders; cifar10_folders('/tmp/cifar')"
  for dec in device draft; do
    $PY -m ssl_transfer run protocols/cifar10_simclr_resnet18 data.source=imagefolder data.root=/tmp/cifar/train \
      data.test_root=/tmp/cifar/test data.in_memory=false data.decode=$dec data.limit_train=${DECODE_LIMIT:-20000} \
      trainer.max_epochs=1 logging.wandb=disabled output_dir=/tmp/decode_runs name=decode-$dec \
      export.formats=[safetensors] > "$OUT/decode_$dec.log" 2>&1
    echo "decode=$dec exit $? at $(( $(date +%s) - T0 )) s: $(grep -E '^epoch 1/1' "$OUT/decode_$dec.log" | tail -1)"
  done
fi
for seed in $SEEDS; do
  el=$(( $(date +%s) - T0 ))
  if [ "$el" -gt "$START_BY" ]; then echo "seed $seed not started: $el s elapsed"; break; fi
  echo "seed $seed at $el s"
  $PY benchmarks/protocol_reference.py --data-dir /tmp/cifar --epochs "$EPOCHS" --seed "$seed" ${EXTRA:-} \
    > "$OUT/seed$seed.log" 2>&1
  echo "seed $seed exit $? at $(( $(date +%s) - T0 )) s"
  grep -E "^(ours|reference):" "$OUT/seed$seed.log"
  cp benchmarks/results/protocol.json "$OUT/" 2>/dev/null
done
tail -5 "$OUT/dmon.txt" 2>/dev/null
