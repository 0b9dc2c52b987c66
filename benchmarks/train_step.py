r"""One training step of the DynamiCrafter UNet (forward + backward + AdamW), JAX beside the original PyTorch
model, in one run.

  python benchmarks/train_step.py --torch-src DC                  # width 128 (the 256 architecture), B1 T16
  python benchmarks/train_step.py --side jax --model-channels 64  # JAX alone
  python benchmarks/train_step.py --torch-src DC --profile        # + both profiles by op kind (profile_unet)

The full 256 UNet (1.44 B parameters) does not train on the 2-core, 23 GiB machine (parameters + gradients +
AdamW moments = 23 GB), so the step runs the same architecture at a narrower width (``--model-channels``; every
width scales with it, the context stays 1024-wide). Both sides: fp32, dropout 0 (the same work, no RNG), the
loss = mean squared error of the output against a fixed random target, AdamW (lr 1e-4, weight decay 0.01), the
same input arrays. JAX: ``jax.value_and_grad`` + ``optax.adamw`` in one jitted step with donated state. PyTorch:
``zero_grad``, ``backward``, ``step`` (run first, in a child process, alone). Fastest of ``--repeats`` steps after
``--warmup`` of each; the ratio JAX / PyTorch (< 1: JAX faster). ``--profile``: then ``--repeats`` more steps of
each under its profiler, printed by op kind as benchmarks/profile_unet.py does for the forward (in the step,
"normalisation" also holds the reductions of the backward, e.g. bias gradients). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import profile_unet  # noqa: E402  (benchmarks/profile_unet.py: the shared kwargs, inputs and torch builder)

LR, WEIGHT_DECAY = 1e-4, 0.01


def rusage() -> tuple:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime, r.ru_stime, r.ru_minflt


def rusage_delta(r0: tuple) -> dict:
  """This process's user and system CPU seconds and minor page faults since ``r0`` (a step's kernel time: the
  pages its fresh buffers fault in)."""
  u, s, f = rusage()
  return {"user_s": round(u - r0[0], 2), "sys_s": round(s - r0[1], 2), "minor_faults": int(f - r0[2])}


def usage_line(usage: list) -> str:
  return ("per step: user " + ", ".join(f"{u['user_s']:.1f}" for u in usage) + " CPU-s, system "
          + ", ".join(f"{u['sys_s']:.1f}" for u in usage) + " CPU-s, "
          + ", ".join(f"{u['minor_faults'] / 1e6:.2f}" for u in usage) + " M page faults")


def kwargs(args) -> dict:
  kw = profile_unet.unet_kwargs(args.model_channels, args.frames)
  kw["dropout"] = 0.0
  return kw


def target_np(args):
  import numpy as np
  rng = np.random.default_rng(1)
  return rng.standard_normal((args.batch, 4, args.frames, args.latent, args.latent), dtype=np.float32)


def torch_child(args) -> None:
  import torch
  torch.set_num_threads(args.threads)
  kw = kwargs(args)
  net = profile_unet.build_torch_unet(args.torch_src, kw).train()
  inp = {k: torch.from_numpy(v) for k, v in profile_unet.inputs_np(kw, args.batch, args.frames, args.latent).items()}
  target = torch.from_numpy(target_np(args))
  opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

  def step():
    opt.zero_grad(set_to_none=True)
    out = net(inp["x"], inp["t"], context=inp["context"], fs=inp["fs"])
    loss = torch.mean((out - target) ** 2)
    loss.backward()
    opt.step()
    return float(loss)

  times, losses, usage = [], [], []
  for i in range(args.warmup + args.repeats):
    t0, r0 = time.perf_counter(), rusage()
    losses.append(step())
    if i >= args.warmup:
      times.append(time.perf_counter() - t0)
      usage.append(rusage_delta(r0))
  n = sum(p.numel() for p in net.parameters())
  out = {"torch": torch.__version__, "threads": args.threads, "step_s": times, "losses": losses, "params": int(n),
         "usage": usage}
  if args.profile:
    out.update(wall_s=times, ops=profile_unet.torch_trace(step, args.repeats))
  with open(args.torch_child_out, "w") as f:
    json.dump(out, f)


def torch_side(args) -> dict:
  r = profile_unet.run_torch_child(args, __file__, ["--warmup", str(args.warmup)] + (["--profile"] if args.profile
                                                                                      else []))
  if "unavailable" in r:
    return r
  print(f"PyTorch ({r['torch']}, {r['threads']} threads, {r['params']:,} parameters): steps "
        + ", ".join(f"{v:.2f}" for v in r["step_s"]) + " s; losses " + ", ".join(f"{v:.4f}" for v in r["losses"]))
  print("PyTorch " + usage_line(r["usage"]))
  return r


def jax_side(args) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import nnx

  # eval mode (build_jax_unet): dropout is 0 on both sides, and eval() keeps the RNG streams out of the traced step
  graphdef, params, rest = nnx.split(profile_unet.build_jax_unet(kwargs(args), args.attention_impl), nnx.Param, ...)
  n = int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
  x, t, ctx, fs = profile_unet.jax_inputs(profile_unet.inputs_np(kwargs(args), args.batch, args.frames, args.latent))
  target = jnp.asarray(np.moveaxis(target_np(args), 1, -1))
  tx = optax.adamw(LR, weight_decay=WEIGHT_DECAY)
  opt_state = tx.init(params)

  def loss_fn(p):
    out = nnx.merge(graphdef, p, rest)(x, t, ctx, fs)
    return jnp.mean((out - target) ** 2)

  def step(p, o):
    loss, g = jax.value_and_grad(loss_fn)(p)
    upd, o = tx.update(g, o, p)
    return optax.apply_updates(p, upd), o, loss

  step = jax.jit(step, donate_argnums=(0, 1))
  t0 = time.perf_counter()
  compiled = step.lower(params, opt_state).compile()
  print(f"JAX: compile {time.perf_counter() - t0:.1f} s; {n:,} parameters", flush=True)
  times, losses, usage = [], [], []
  for i in range(args.warmup + args.repeats):
    t0, r0 = time.perf_counter(), rusage()
    params, opt_state, loss = compiled(params, opt_state)
    losses.append(float(loss))   # blocks
    if i >= args.warmup:
      times.append(time.perf_counter() - t0)
      usage.append(rusage_delta(r0))
  print(f"JAX ({jax.__version__}): steps " + ", ".join(f"{v:.2f}" for v in times) + " s; losses "
        + ", ".join(f"{v:.4f}" for v in losses))
  print("JAX " + usage_line(usage))
  out = {"jax": jax.__version__, "step_s": times, "losses": losses, "params": n, "usage": usage}
  if args.profile:
    state = [params, opt_state]

    def run():   # the donated state moves on with every profiled step
      state[0], state[1], loss = compiled(*state)
      jax.block_until_ready(loss)

    out.update(wall_s=times, **profile_unet.jax_trace(compiled.as_text(), run, args.repeats))
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  profile_unet.add_shared_args(ap, model_channels=128, repeats=3, unit="step")
  ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
  ap.add_argument("--profile", action="store_true", help="also profile both steps by op kind")
  ap.add_argument("--top", type=int, default=8, help="with --profile: top ops of each side to print")
  args = ap.parse_args()
  if args.torch_child_out:
    torch_child(args)
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  print(f"train step: UNet 256 architecture at model_channels {args.model_channels}, B{args.batch} T{args.frames} "
        f"{args.latent}x{args.latent}, fp32, AdamW; load average {os.getloadavg()[0]:.2f}")
  res = profile_unet.result_header(args)
  sides = {}
  if args.side in ("both", "torch"):
    sides["torch"] = torch_side(args)
  if args.side in ("both", "jax"):
    sides["jax"] = jax_side(args)
  if args.profile:
    profile_unet.print_tables(sides, res, args.top, "train step")
  for name, r in sides.items():
    if "step_s" in r:
      res[f"{name}_step_s"] = [round(v, 3) for v in r["step_s"]]
      res[f"{name}_params"] = r["params"]
      res[f"{name}_first_loss"] = round(r["losses"][0], 5)
      res[f"{name}_usage"] = r["usage"]
    else:
      res[f"{name}_unavailable"] = r.get("unavailable")
  if all("step_s" in sides.get(k, {}) for k in ("jax", "torch")):
    j, p = min(sides["jax"]["step_s"]), min(sides["torch"]["step_s"])
    jm, pm = statistics.median(sides["jax"]["step_s"]), statistics.median(sides["torch"]["step_s"])
    print(f"train step, fastest: PyTorch {p:.2f} s, JAX {j:.2f} s -> JAX / PyTorch = {j / p:.2f} "
          f"(medians {pm:.2f} / {jm:.2f} s -> {jm / pm:.2f}); {'JAX faster' if j < p else 'JAX slower'}")
    res.update(jax_over_torch=round(j / p, 3), jax_over_torch_median=round(jm / pm, 3))
  res["load_avg_end"] = round(os.getloadavg()[0], 2)
  print(json.dumps(res))


if __name__ == "__main__":
  from vid2world_jax import host_memory  # noqa: E402
  host_memory.reexec_with_huge_pages()   # as the project's command lines do (docs/profile.md)
  main()
