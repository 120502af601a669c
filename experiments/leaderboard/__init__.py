"""One leaderboard: every method's SynthVTR pipeline from its shipped config, on one checksummed data copy per
configuration, three seeds, with its costs measured by the same harness (docs/leaderboard.md).

The grid (``plan.py``): CLIP4Clip meanP and seqTransf, NarVid (simulated narration), ExCae (CSI-prompt captions and
the initial prompt's), conical embedding optimisation (bare queries; its paired view only in a flagged column) and
CaRe-DPO (the pipeline's DG-DPO retriever and its zero-shot-caption retriever) x seeds 0, 1, 2 x the default and the
hard SynthVTR (``configs/data/synthvtr.yaml``, ``synthvtr_hard.yaml`` composed after each method config).

``python -m experiments.leaderboard run`` works in ``--work`` (default ``runs/leaderboard``):

1. **data** (``data.py``): each configuration's copy generated once into ``<work>/data``, checked against its sha256
   manifest, its frozen video features cached; the manifest's digest recorded in ``<work>/<configuration>/data.json``
   and every file re-hashed against it before each step and cell;
2. **caption steps** (``plan.STEPS``): the captions (and ExCae's prompt search) each method reads, once per
   configuration and shared by its seeds, each from its shipped captioner config;
3. **cells** (``tasks.py``): each its shipped command (``main.py fit``, or the CaRe-DPO pipeline) with the seed, the
   configuration, and the ``RunCosts`` callback (``callbacks/run_costs.py``); then the run's ``metrics.json`` must
   name the recorded copy, the run is registered into ``<work>/registry/<configuration>/<cell>``
   (``experiments.registry.register``, compact format, refusing uncommitted code) and ``costs.json`` written beside it
   (``costs.py``), last: a cell is finished exactly when that file exists.

``--resume`` skips finished steps and cells and reruns the others from scratch (processes of an attempt a killed
run left behind are killed first); ``--jobs N`` runs N steps or cells at once (the sweep runner's scheduler,
``experiments/sweep.py``, one GPU each when there are GPUs); ``--only`` selects cells; ``--dry-run`` lists every copy,
step and cell with its command. ``collect`` copies the finished cells into ``results/leaderboard/<configuration>/`` with
``leaderboard.json`` (every cell's state and, when missing, why), from which ``python -m experiments.tables``
generates the README's leaderboard table (``experiments/tables/leaderboard_block.py``). The registry lives in the
work folder while cells run because a registered cell in the checkout would make every later cell's code "dirty".
"""
