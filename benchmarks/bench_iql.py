"""IQL side by side: the project's own (:mod:`relam.rl.iql`) and d3rlpy 2.7.0's, on the same data.

Issue 17 item 3: the same labelled data, the same budget, the same network, measured in gradient
steps/s and final success. Both get the same batch size, gamma, tau, expectile, temperature, weight
clip, learning rates (3e-4 everywhere), twin critics, and the same network: the online policy's
:class:`relam.rl.policies.KeypointImageExtractor` (CNN (32,64,64) k(8,4,3) s(4,2,1) -> 256, point
MLP (128,128)) then an MLP (256,256) per head. The rewards are scaled by the same
:func:`relam.rl.iql.reward_scale` before either sees them. What cannot be made equal:

- d3rlpy gives every critic of the ensemble (and every target critic) its own encoder, and its
  actor's Gaussian has a tanh on the mean over min-max scaled actions; the own IQL's twin critics
  share one encoder, and its actor is an unsquashed Gaussian over standardised actions;
- encoder ``shared`` (one CNN for the three networks) has no d3rlpy counterpart and runs on the
  own side only;
- encoder ``frozen`` (features of every frame precomputed once by the randomly initialised CNN,
  ``encoder_steps=0``): both train a keypoint MLP per network (the own twin critics share theirs);
  the image features fed to d3rlpy are the own frozen CNN's, same seed, same weights.

Phases (each prints one JSON line; the last line of the run is the JSON summary):

1. ``speed``: gradient steps/s of each implementation x encoder x torch threads, timed over the
   second of two epochs of ``--speed-steps`` steps (the first warms up; d3rlpy's time includes its
   own batch sampling and logging, as ``fit`` runs it);
2. ``success`` (``--train-steps`` > 0): train each implementation x encoder for ``--train-steps``
   gradient steps (epochs of ``--epoch-steps``: the loss curve) with ``--success-threads`` threads,
   then evaluate the final policy on ``--eval-episodes`` seeded episodes of the live task through
   :class:`relam.wrappers.ReLAMWrapper` (the same seeds for every policy; success at any step).

Data: the task's offline set (first ``-n`` trajectories, half expert, half noisy) labelled by
ReLAM with ground-truth subgoals (:func:`relam.offline.label_offline_dataset`, cached), or
``--data synthetic`` (random data of the same shapes; speed only).

Examples::

    python benchmarks/bench_iql.py --smoke                     # about a minute
    python benchmarks/bench_iql.py -n 40 --threads 1,2 --speed-steps 100
    python benchmarks/bench_iql.py -n 40 --encoders frozen --train-steps 20000 --eval-episodes 10

The d3rlpy side needs ``pip install d3rlpy==2.7.0 -c constraints.txt`` (not a relam dependency since
this comparison; without it that side is skipped with a note). d3rlpy imports the old ``gym``
package, so it is imported here before relam (whose import would hide gym, :mod:`relam.oldgym`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
try:  # before relam, which hides the old gym package d3rlpy imports (unless gym is imported already)
    import d3rlpy  # noqa: F401
    from d3rlpy.models.encoders import EncoderFactory, register_encoder_factory
    from d3rlpy.models.torch import Encoder, EncoderWithAction

    D3RLPY = d3rlpy.__version__
except ImportError:  # the comparison's other side is optional
    D3RLPY = None

import numpy as np
import torch as th
from torch import nn

IMPLS = ("own", "d3rlpy")


# --------------------------------------------------------------------------- d3rlpy side

if D3RLPY is not None:

    class _D3Trunk(nn.Module):
        """Extractor (or precomputed image features + point MLP) then the MLP trunk; d3rlpy adds
        the output layer of each head, so trunk + that layer = the own IQL's extractor + ``_mlp``."""

        def __init__(self, observation_shape: Any, cfg: "RelamEncoderFactory", action_size: int = 0):
            super().__init__()
            from relam.rl.iql import extractor_space
            from relam.rl.policies import KeypointImageExtractor

            img_shape, (n_pts,) = observation_shape
            self.precomputed = cfg.precomputed
            space = extractor_space({"keypoints": n_pts}, None if cfg.precomputed else tuple(img_shape))
            self.extractor = KeypointImageExtractor(space, image_dim=cfg.image_dim, point_hidden=cfg.point_hidden)
            n = self.extractor.features_dim + (img_shape[0] if cfg.precomputed else 0) + action_size
            layers: list[nn.Module] = []
            for h in cfg.hidden:
                layers += [nn.Linear(n, int(h)), nn.ReLU()]
                n = int(h)
            self.trunk = nn.Sequential(*layers)

        def features(self, x: Any) -> th.Tensor:
            img, pts = x
            inp = {"keypoints": pts.float(), "target": pts.new_zeros(pts.shape[0], 0).float()}
            if self.precomputed:
                return th.cat([img.float(), self.extractor(inp)], 1)
            inp["image"] = img.float() / 255.0
            return self.extractor(inp)

    class _D3Encoder(Encoder):
        def __init__(self, observation_shape: Any, cfg: "RelamEncoderFactory"):
            super().__init__()
            self.net = _D3Trunk(observation_shape, cfg)

        def forward(self, x: Any) -> th.Tensor:
            return self.net.trunk(self.net.features(x))

    class _D3EncoderWithAction(EncoderWithAction):
        def __init__(self, observation_shape: Any, action_size: int, cfg: "RelamEncoderFactory"):
            super().__init__()
            self.net = _D3Trunk(observation_shape, cfg, action_size)

        def forward(self, x: Any, action: th.Tensor) -> th.Tensor:
            return self.net.trunk(th.cat([self.net.features(x), action], 1))

    @dataclasses.dataclass()
    class RelamEncoderFactory(EncoderFactory):
        """d3rlpy encoder factory of the own IQL's network on (image or image features, points) tuples."""

        image_dim: int = 256
        point_hidden: list = dataclasses.field(default_factory=lambda: [128, 128])
        hidden: list = dataclasses.field(default_factory=lambda: [256, 256])
        precomputed: bool = False

        def create(self, observation_shape: Any) -> Encoder:
            return _D3Encoder(observation_shape, self)

        def create_with_action(self, observation_shape: Any, action_size: int, discrete_action: bool = False):
            return _D3EncoderWithAction(observation_shape, action_size, self)

        @staticmethod
        def get_type() -> str:
            return "relam_keypoint_image"

    register_encoder_factory(RelamEncoderFactory)


def _points(obs: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    """The vector entries in the own IQL's point order (keypoints, others sorted, target last)."""
    return np.concatenate([np.asarray(obs[k], np.float32).reshape(len(obs[keys[0]]), -1) for k in keys], 1)


def _point_keys(ds: Any) -> list[str]:
    from relam.rl.iql import _point_order

    keys = _point_order(ds.vector_keys())
    return keys + (["target"] if "target" in ds.observations else [])


class D3rlpyIQL:
    """d3rlpy's IQL on an :class:`relam.offline.OfflineDataset`, with the own IQL's settings and network."""

    def __init__(self, ds: Any, s: Any, frozen_cnn: nn.Module | None = None):
        import d3rlpy
        from d3rlpy.logging import NoopAdapterFactory

        from relam.rl.iql import reward_scale, resolve_device

        self.ds, self.s, self.cnn = ds, s, frozen_cnn
        self.keys = _point_keys(ds)
        self.noop = NoopAdapterFactory
        dev = resolve_device(s.device)
        self.device = dev
        img = ds.observations["image"]
        if frozen_cnn is not None:
            first = self._image_obs(img)
        else:
            first = np.ascontiguousarray(np.transpose(img, (0, 3, 1, 2)))
        pts = _points(ds.observations, self.keys)
        # d3rlpy's episodes: T+1 observation rows, the last with a dummy action/reward and timeout=1
        steps = np.asarray(ds.actions, np.float32)
        scale = reward_scale(np.asarray(ds.rewards), np.asarray(ds.lengths), s.reward_scale)
        acts, rews, touts = [], [], []
        for i in range(ds.n_trajectories):
            sl = ds.step_slice(i)
            acts.append(np.concatenate([steps[sl], steps[sl][-1:]]))
            rews.append(np.concatenate([np.asarray(ds.rewards[sl], np.float32) * scale, [0.0]]))
            touts.append(np.arange(ds.lengths[i] + 1) == ds.lengths[i])
        self.dataset = d3rlpy.dataset.MDPDataset(
            observations=[first, pts], actions=np.concatenate(acts), rewards=np.concatenate(rews)[:, None],
            terminals=np.zeros(len(first), np.float32), timeouts=np.concatenate(touts).astype(np.float32),
            action_space=d3rlpy.ActionSpace.CONTINUOUS)
        # min-max to [-1, 1] (d3rlpy's Gaussian has a tanh on its mean); a constant dimension (the
        # gripper target on PushCube) gets a range of 2e-3, as the own IQL clamps its std at 1e-3
        lo, hi = steps.min(0), steps.max(0)
        lo, hi = np.where(hi - lo < 2e-3, lo - 1e-3, lo), np.where(hi - lo < 2e-3, hi + 1e-3, hi)
        enc = RelamEncoderFactory(image_dim=s.image_dim, point_hidden=list(s.point_hidden), hidden=list(s.hidden),
                                  precomputed=frozen_cnn is not None)
        cfg = d3rlpy.algos.IQLConfig(
            batch_size=s.batch_size, gamma=s.gamma, tau=s.tau, expectile=s.expectile, weight_temp=s.temperature,
            max_weight=s.max_weight, actor_learning_rate=s.lr, critic_learning_rate=s.lr, n_critics=2,
            actor_encoder_factory=enc, critic_encoder_factory=enc, value_encoder_factory=enc,
            action_scaler=d3rlpy.preprocessing.MinMaxActionScaler(minimum=lo, maximum=hi))
        d3rlpy.seed(s.seed)
        # built by its first fit (build_with_dataset passes only the first shape of a tuple observation)
        self.algo = cfg.create(device=str(dev) if dev.type == "cuda" else False)

    @th.no_grad()
    def _image_obs(self, images: np.ndarray) -> np.ndarray:
        if self.cnn is None:
            return np.transpose(images, (0, 3, 1, 2))
        out = []
        for i in range(0, len(images), 512):
            x = th.as_tensor(np.transpose(images[i:i + 512], (0, 3, 1, 2))).float() / 255.0
            out.append(self.cnn(x).numpy())
        return np.concatenate(out).astype(np.float32)

    def fit(self, steps_per_epoch: int, epochs: int):
        """Yields (epoch, metrics, seconds of that epoch)."""
        gen = self.algo.fitter(self.dataset, n_steps=steps_per_epoch * epochs, n_steps_per_epoch=steps_per_epoch,
                               show_progress=False, logger_adapter=self.noop(), save_interval=10**9,
                               experiment_name="bench", with_timestamp=False)
        t = time.perf_counter()
        for epoch, metrics in gen:
            now = time.perf_counter()
            yield epoch, metrics, now - t
            t = time.perf_counter()

    def policy(self, obs: dict[str, Any]) -> np.ndarray:
        img = np.asarray(obs["image"])
        if img.shape[0] == 3:
            img = np.transpose(img, (1, 2, 0))
        x = [self._image_obs(img[None]), _points({k: np.asarray(obs[k])[None] for k in self.keys}, self.keys)]
        return self.algo.predict(x)[0].astype(np.float32)


# --------------------------------------------------------------------------- data


def synthetic_dataset(n_traj: int = 20, length: int = 80, image_size: int = 64, n_points: int = 4,
                      action_dim: int = 8) -> Any:
    """Random data of the real shapes (64 px image, 4 keypoints + target, 8-d actions)."""
    from relam.offline import OfflineDataset

    rng = np.random.default_rng(0)
    lengths = np.full(n_traj, length)
    T, F = int(lengths.sum()), int(lengths.sum() + n_traj)
    return OfflineDataset(
        observations={"image": rng.integers(0, 256, (F, image_size, image_size, 3), dtype=np.uint8),
                      "keypoints": rng.normal(size=(F, 2 * n_points)).astype(np.float32),
                      "target": rng.normal(size=(F, 2 * n_points)).astype(np.float32)},
        actions=rng.normal(size=(T, action_dim)).astype(np.float32), rewards=rng.normal(size=T).astype(np.float32),
        terminals=np.zeros(T, bool), timeouts=np.zeros(T, bool), lengths=lengths, success=np.zeros(n_traj, bool),
        noisy=np.zeros(n_traj, bool), seeds=np.arange(n_traj), env_reward=np.zeros(T, np.float32),
        meta={"task": "synthetic"})


def task_dataset(task: str, n: int) -> tuple[Any, Any]:
    from relam.offline import label_offline_dataset
    from relam.relam_method import relam_labeller

    lab = relam_labeller("ground_truth", None, 4, "sim")
    return label_offline_dataset(task, lab, n=n, image_size=64, progress=False), lab


# --------------------------------------------------------------------------- the two phases


#: ``--encoder-steps``: the own IQL's 'frozen' warm-up (0: the random CNN, which d3rlpy gets too)
ENCODER_STEPS = 0


def _settings(encoder: str, threads: int, seed: int, device: str, **kw: Any) -> Any:
    from relam.rl.iql import IQLSettings

    warm = ENCODER_STEPS if encoder == "frozen" else 0
    return IQLSettings(encoder=encoder, torch_threads=threads, seed=seed, device=device, encoder_steps=warm, **kw)


def _frozen_cnn(ds: Any, s: Any) -> nn.Module:
    """The own IQL's randomly initialised CNN for ``s`` (what its 'frozen' mode freezes at step 0)."""
    from relam.rl.iql import IQL

    obs = ds.observations
    th.manual_seed(s.seed)
    agent = IQL({k: int(obs[k].shape[1]) for k in ds.vector_keys()}, (3,) + obs["image"].shape[1:3],
                ds.actions.shape[1], s, device="cpu")
    return agent.encoder.cnn.eval()


def _d3(ds: Any, s: Any) -> D3rlpyIQL:
    return D3rlpyIQL(ds, s, _frozen_cnn(ds, s) if s.encoder == "frozen" else None)


def speed(steps: int, image_size: int = 64, encoder: str = "separate", device: str = "auto") -> dict:
    """The own IQL's gradient steps/s on synthetic data of the real shapes, 1 thread (what
    ``benchmarks/bench_throughput.py`` imports; ``--speed N`` prints it)."""
    row = speed_row(synthetic_dataset(image_size=image_size), "own", encoder, 1, steps, 0, device)
    return {"steps": steps, "seconds": round(steps / row["steps_per_s"], 1), "steps_per_s": row["steps_per_s"],
            "batch": 64, "image_size": image_size, "encoder": encoder}


def speed_row(ds: Any, impl: str, encoder: str, threads: int, steps: int, seed: int, device: str) -> dict:
    """Gradient steps/s over the second of two epochs of ``steps`` steps: per wall-clock second, and
    per CPU second of this process (``steps_per_cpu_s``; on a shared machine that is what a free
    core would give with 1 thread, as far as contention leaves caches and clocks alone)."""
    from relam.rl.iql import train_iql

    th.set_num_threads(threads)
    s = _settings(encoder, threads, seed, device, epochs=2, steps_per_epoch=steps)
    marks: list[tuple[float, float]] = []

    def mark(*_: Any) -> float:
        if device != "cpu" and th.cuda.is_available():
            th.cuda.synchronize()
        marks.append((time.perf_counter(), time.process_time()))
        return 0.0

    t0 = time.perf_counter()
    if impl == "own":
        train_iql(ds, s, None, eval_fn=mark, progress=False)  # "evaluated" after each epoch: the clock
    else:
        for _ in _d3(ds, s).fit(steps, 2):
            mark()
    (w0, c0), (w1, c1) = marks[-2], marks[-1]
    return {"phase": "speed", "impl": impl, "encoder": encoder, "threads": threads, "steps": steps,
            "steps_per_s": round(steps / (w1 - w0), 2), "steps_per_cpu_s": round(steps / max(c1 - c0, 1e-9), 2),
            "wall_s": round(time.perf_counter() - t0, 1)}


_LOSSES = {"own": {"v_loss": "v_loss", "q_loss": "q_loss", "pi_loss": "pi_loss"},
           "d3rlpy": {"v_loss": "v_loss", "q_loss": "q_loss", "pi_loss": "actor_loss"}}


def success(ds: Any, impl: str, encoder: str, threads: int, train_steps: int, epoch_steps: int, seed: int,
            device: str, eval_fn: Any, out: Path) -> dict:
    """Train for ``train_steps`` gradient steps, then evaluate the final policy once."""
    from relam.rl.iql import train_iql

    th.set_num_threads(threads)
    epochs = max(1, train_steps // epoch_steps)
    s = _settings(encoder, threads, seed, device, epochs=epochs, steps_per_epoch=epoch_steps)
    t0 = time.perf_counter()
    if impl == "own":
        res = train_iql(ds, s, out / f"own-{encoder}", progress=False)
        losses = [{k: round(float(r[v]), 4) for k, v in _LOSSES["own"].items()} for r in res.log]
        policy, train_s = res.policy, res.log[-1]["seconds"]
    else:
        algo = _d3(ds, s)
        losses, train_s = [], 0.0
        for _, m, sec in algo.fit(epoch_steps, epochs):
            losses.append({k: round(float(m[v]), 4) for k, v in _LOSSES["d3rlpy"].items()})
            train_s += sec
        policy = algo.policy
    t1 = time.perf_counter()
    ev = eval_fn(policy)
    return {"phase": "success", "impl": impl, "encoder": encoder, "threads": threads, "train_steps": epochs * epoch_steps,
            "steps_per_s": round(epochs * epoch_steps / train_s, 2), "train_s": round(train_s, 1),
            "eval_s": round(time.perf_counter() - t1, 1), "episodes": len(ev.seeds),
            "success": float(ev.success_rate), "loss_per_epoch": losses,
            "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="PushCube-v1")
    ap.add_argument("-n", type=int, default=40, help="offline trajectories to label (half expert, half noisy)")
    ap.add_argument("--data", choices=("task", "synthetic"), default="task")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--encoders", default="separate,frozen", help="own IQL encoder modes (relam.rl.iql.ENCODERS)")
    ap.add_argument("--threads", default="1,2", help="torch thread counts of the speed phase")
    ap.add_argument("--speed-steps", type=int, default=50, help="speed phase: steps per timed epoch (0: no speed phase)")
    ap.add_argument("--train-steps", type=int, default=0, help="success phase budget (0: speed only)")
    ap.add_argument("--epoch-steps", type=int, default=1000, help="success phase: steps per loss-curve point")
    ap.add_argument("--success-threads", type=int, default=1)
    ap.add_argument("--encoder-steps", type=int, default=0,
                    help="own IQL, encoder 'frozen': steps the shared CNN trains first (d3rlpy's side is then skipped)")
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=None, help="evaluation episode cap (default: the task's horizon)")
    ap.add_argument("--device", default="auto", help="'auto': CUDA when torch sees a GPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--speed", type=int, default=0, metavar="N",
                    help="only the own IQL's steps/s over N steps on synthetic data (bench_throughput's figure)")
    ap.add_argument("--smoke", action="store_true", help="a minute: 6 trajectories, 5-step timings, 20 steps, 1 short episode")
    a = ap.parse_args(argv)
    if a.speed:
        print(json.dumps(speed(a.speed, device=a.device)))
        return 0
    if a.smoke:
        a.n, a.threads, a.speed_steps, a.train_steps, a.epoch_steps = 6, "1", 5, 20, 10
        a.eval_episodes, a.max_steps = 1, 10

    from relam.cache import atomic_write_json, cache_dir

    impls = [i for i in a.impls.split(",") if i]
    if "d3rlpy" in impls and D3RLPY is None:
        print(json.dumps({"note": "d3rlpy is not installed: its side is skipped "
                                  "(pip install d3rlpy==2.7.0 -c constraints.txt to run it)"}), flush=True)
        impls.remove("d3rlpy")
    encoders = [e for e in a.encoders.split(",") if e]
    global ENCODER_STEPS
    ENCODER_STEPS = a.encoder_steps
    threads = [int(t) for t in a.threads.split(",") if t]
    out = a.out or cache_dir() / "bench_iql" / f"{a.task if a.data == 'task' else 'synthetic'}-n{a.n}-s{a.seed}"
    t0 = time.perf_counter()
    if a.data == "synthetic":
        ds, lab = synthetic_dataset(), None
        if a.train_steps:
            raise SystemExit("bench_iql: --data synthetic measures speed only (set --train-steps 0)")
    else:
        ds, lab = task_dataset(a.task, a.n)
    from relam.rl.iql import resolve_device

    summary: dict[str, Any] = {"task": a.task if lab else "synthetic", "trajectories": ds.n_trajectories,
                               "transitions": ds.n_transitions, "d3rlpy": D3RLPY, "torch": th.__version__,
                               "device": str(resolve_device(a.device)), "batch_size": 64,
                               "encoder_steps": a.encoder_steps,
                               "data_seconds": round(time.perf_counter() - t0, 1), "speed": [], "success": []}
    print(json.dumps({k: v for k, v in summary.items() if k not in ("speed", "success")}), flush=True)
    def pairs():
        for enc in encoders:
            for impl in impls:
                # d3rlpy cannot share an encoder between its networks, nor has the own warm-up CNN
                if not (impl == "d3rlpy" and (enc == "shared" or (enc == "frozen" and ENCODER_STEPS))):
                    yield enc, impl

    for enc, impl in pairs() if a.speed_steps > 0 else ():
        for n_thr in threads:
            row = speed_row(ds, impl, enc, n_thr, a.speed_steps, a.seed, a.device)
            summary["speed"].append(row)
            print(json.dumps(row), flush=True)
    if a.train_steps:
        from relam.relam_method import make_relam_eval_fn

        eval_fn = make_relam_eval_fn(a.task, lab.planner, n_episodes=a.eval_episodes, settings=lab.settings,
                                     n_points=ds.observations["keypoints"].shape[1] // 2, policy_image_size=64,
                                     max_steps=a.max_steps)
        try:
            for enc, impl in pairs():
                row = success(ds, impl, enc, a.success_threads, a.train_steps, a.epoch_steps, a.seed, a.device,
                              eval_fn, out)
                summary["success"].append(row)
                print(json.dumps(row), flush=True)
        finally:
            eval_fn.close()
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / "summary.json", summary)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
