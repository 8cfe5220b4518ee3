#!/usr/bin/env bash
# lumen eval over a dataset as a Slurm job array of 4 tasks, then the merge as a job that waits for the
# whole array (docs/scale.md). Submit it with plain `sbatch deploy/slurm-eval.sh` from the folder that
# holds models/, data/ and reports/: it submits the merge itself, with afterok on the array.
# A task that is pre-empted or fails can be re-submitted alone (sbatch --array=2 ...): it resumes from
# its shard's records.jsonl.
#SBATCH --job-name=lumen-eval
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=24:00:00
#SBATCH --output=reports/slurm-%A_%a.log
set -euo pipefail
export OMP_WAIT_POLICY=PASSIVE
LUMEN=${LUMEN:-lumen}

# The merge, submitted once by the array's first task, runs after every task ended well.
if [ "${SLURM_ARRAY_TASK_ID}" = "${SLURM_ARRAY_TASK_MIN:-0}" ] && [ -z "${LUMEN_NO_MERGE_JOB:-}" ]; then
  sbatch --dependency="afterok:${SLURM_ARRAY_JOB_ID}" --job-name=lumen-merge --cpus-per-task=2 --mem=8G \
         --output=reports/slurm-merge-%j.log \
         --wrap="$LUMEN merge reports/part-0 reports/part-1 reports/part-2 reports/part-3 --out reports/all"
fi

"$LUMEN" eval --model models/mobilenet_v2_imagenet.pt --card models/mobilenet_v2_imagenet.json \
  --data data/imagenet-loc-dev --methods gradcam,gradcam++ --metrics loc,pointing,deletion \
  --shard auto --out "reports/part-${SLURM_ARRAY_TASK_ID}" ${LUMEN_EXTRA_FLAGS:-}
