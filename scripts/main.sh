#!/usr/bin/env bash
# The README's main job: installs what is missing (idempotent), then runs a spec, makes the GIF of
# its trained ReLAM policy and writes its report page.
#
#   bash scripts/main.sh                       the headline: ReLAM learning Drawer Open next to
#                                              Random, quick scale (about 75 min on 2 cores)
#   bash scripts/main.sh table4                another spec (default scale: smoke, minutes)
#   RELAM_SCALE=paper bash scripts/main.sh     another scale (smoke | quick | paper)
#   bash scripts/main.sh headline --backend ray --address auto    extra arguments go to `relam run`
#
# RELAM_WORKERS (default 2) runs in parallel. Outputs: <cache>/reports/<spec>/<scale>/ (report.html,
# table.md/.csv/.tex, curves.png, policy/*.gif), cache = $RELAM_CACHE or .cache/relam.
# Exit status: that of `relam run` (1 when a run failed), else that of the report.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit $?

spec=headline
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  spec=$1
  shift
fi
# the headline's quick scale is sized for this machine; other specs' quick scale takes hours
if [ "$spec" = headline ]; then default_scale=quick; else default_scale=smoke; fi
export RELAM_SCALE=${RELAM_SCALE:-$default_scale}
export MUJOCO_GL=${MUJOCO_GL:-egl}
relam=.venv/bin/relam

echo "== relam run $spec --scale $RELAM_SCALE --workers ${RELAM_WORKERS:-2} $*"
status=0
$relam run "$spec" --workers "${RELAM_WORKERS:-2}" "$@" || status=$?
case $status in 2|130|143) exit "$status" ;; esac  # a usage error, Ctrl-C or SIGTERM: stop here
# the GIF of the spec's first ReLAM run on Meta-World (a spec without one says so and goes on)
echo "== relam gif $spec --scale $RELAM_SCALE"
$relam gif "$spec" || echo "(no GIF of $spec [$RELAM_SCALE]: see the error above)"
echo "== relam report $spec --scale $RELAM_SCALE"
$relam report "$spec" || { rc=$?; [ "$status" -ne 0 ] || status=$rc; }
exit "$status"
