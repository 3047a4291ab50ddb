"""Trains the toy flow DiT (toy/dragon_toy/dit.py: ComfyUI's Flux class, tiny, pixel space) by flow matching on the
toy scenes, within a budget of CPU minutes; resumable.

    .venv/bin/python scripts/train_toy_dit.py --cpu-minutes 50 --bf16        # about 50 minutes of one core

Flow matching as FLUX is trained: x_sigma = (1 - sigma) x0 + sigma noise, the model predicts v = noise - x0 (ComfyUI's
CONST: denoised = x - sigma v), sigma drawn as the sampler visits it (ModelSamplingFlux's shift of a uniform time).
The guidance embedding gets random values in [1, 6] (the toy is not guidance-distilled: every value is the same
model). Writes the EMA weights (fp16) to toy/dragon_toy/weights/dragon_toy_dit.safetensors every 5 minutes and at the
end, appends to toy/dragon_toy/weights/dit_train_log.txt, and keeps its full state (weights, EMA, optimiser,
iterations, CPU time used) in .cache/train_toy_dit/state.pt: run the same command again to continue where it stopped
(the budget counts the CPU time of all runs). The log ends with the reconstruction check (Euler inversion along the
sampler's sigmas and back).
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # dragon_core (plain PyTorch)
sys.path.append(os.path.join(ROOT, ".comfyui"))  # ComfyUI's `comfy` package (after, never before)
sys.path.append(os.path.join(ROOT, "toy"))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from comfy.cli_args import args as comfy_args  # noqa: E402

comfy_args.cpu = True

from dragon_core.outofplace import out_of_place, plain  # noqa: E402
from dragon_toy import dit, scenes, sd3  # noqa: E402
from dragon_toy.training import optimizer_step  # noqa: E402


TOY = dit  # the toy module of --arch: dit (Flux) or sd3 (MMDiT)


def velocity(net, x: torch.Tensor, sigma: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    """The model's velocity, differentiable (ComfyUI's Flux updates its streams in place; see dragon_core.outofplace)."""
    ctx = torch.zeros(x.shape[0], 1, TOY.CONTEXT_DIM, dtype=x.dtype)
    return plain(TOY.call(net, out_of_place(x), out_of_place(sigma), out_of_place(ctx), out_of_place(guidance)))


@torch.no_grad()
def reconstruction_psnr(net, n: int = 16, steps: int = 30, seed: int = 123, rule: str = "current") -> dict:
    """Euler inversion of n test-like scenes along the sampler's sigmas (0 -> 1), then Euler sampling back (1 -> 0):
    PSNR of the round trip, and the inverted noise's std (1 for a Gaussian). rule: where each inversion step
    evaluates the velocity: "current" (the lower level, ComfyUI's FlipSigmas + Euler) or "target" (the same input at
    the upper level, as the UNet path's DDIM inversion)."""
    g = torch.Generator().manual_seed(seed)
    x0 = scenes.training_batch(n, g) * 2 - 1
    u = torch.linspace(1, 0, steps + 1)
    sig = torch.tensor([float(TOY.sigmas_for(v)) if v > 0 else 0.0 for v in u])
    guid = torch.full((n,), 3.5)
    x = x0.clone()
    for i in range(steps, 0, -1):  # up: sigma[i] -> sigma[i-1], velocity at the current (lower) level
        s0, s1 = sig[i], sig[i - 1]
        x = x + (s1 - s0) * velocity(net, x, (s0 if rule == "current" else s1).repeat(n), guid)
    noise = x
    for i in range(steps):  # down
        s0, s1 = sig[i], sig[i + 1]
        x = x + (s1 - s0) * velocity(net, x, s0.repeat(n), guid)
    mse = float(((x - x0) / 2).square().mean())
    return {"steps": steps, "rule": rule, "reconstruction_psnr": round(10 * math.log10(1 / max(mse, 1e-12)), 2),
            "noise_std": round(float(noise.std()), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-minutes", type=float, default=50.0, help="budget in CPU minutes, all runs of this state")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False,
                    help="bf16 autocast: about 1.7x faster on these CPUs")
    ap.add_argument("--arch", choices=("flux", "sd3"), default="flux",
                    help="flux: the toy Flux (dit.py); sd3: the toy MMDiT (sd3.py)")
    ap.add_argument("--out", help="weights file (default: the arch's shipped weights)")
    ap.add_argument("--state", help="training state (default: .cache/train_toy_dit/state.pt, sd3: state-sd3.pt)")
    ap.add_argument("--fresh", action="store_true", help="ignore a saved state and start again")
    ap.add_argument("--check", metavar="WEIGHTS", help="only print the reconstruction check of these weights (both "
                    "inversion rules, 10/30/50 steps)")
    args = ap.parse_args()
    global TOY
    TOY = sd3 if args.arch == "sd3" else dit
    args.out = args.out or TOY.WEIGHTS
    args.state = args.state or os.path.join(ROOT, ".cache", "train_toy_dit",
                                            "state-sd3.pt" if args.arch == "sd3" else "state.pt")
    if args.check:
        torch.set_num_threads(args.threads)
        net = TOY.load_net(args.check)
        for steps in (10, 30, 50):
            for rule in ("current", "target"):
                print(reconstruction_psnr(net, steps=steps, rule=rule), flush=True)
        return

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    net = TOY.build()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    it, used = 0, 0.0
    gen = torch.Generator().manual_seed(args.seed + 1)
    if os.path.isfile(args.state) and not args.fresh:
        st = torch.load(args.state, weights_only=False)
        net.load_state_dict(st["net"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        it, used = st["it"], st["cpu_seconds"]
        gen.set_state(st["gen"])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    os.makedirs(os.path.dirname(args.state), exist_ok=True)
    log = open(os.path.join(os.path.dirname(args.out),
                            "sd3_train_log.txt" if args.arch == "sd3" else "dit_train_log.txt"), "a")

    def say(msg: str) -> None:
        print(msg, flush=True)
        log.write(msg + "\n")
        log.flush()

    params = sum(p.numel() for p in net.parameters())
    say(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} train_toy_dit.py {' '.join(sys.argv[1:])}")
    say(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {args.threads}, "
        f"params {params / 1e6:.2f} M, bf16 {args.bf16}, arch {args.arch}, config {TOY.CONFIG}, "
        f"{'resumed at it ' + str(it) + f', {used / 60:.1f} cpu-min' if it else 'fresh'}")
    budget = args.cpu_minutes * 60
    warmup, c0, t0, running = 200, time.process_time(), time.time(), None

    def spent() -> float:
        return used + time.process_time() - c0

    def save() -> None:
        sd = {k: v.detach().float().contiguous().half() for k, v in ema.state_dict().items()}
        save_file(sd, args.out, metadata={"iterations": str(it), "images": str(it * args.batch),
                                          "config": repr(TOY.CONFIG), "prediction": "flow"})
        torch.save({"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "it": it,
                    "cpu_seconds": spent(), "gen": gen.get_state()}, args.state + ".tmp")
        os.replace(args.state + ".tmp", args.state)

    last_save = time.time()
    while spent() < budget:
        frac = spent() / budget
        lr = args.lr * min(1.0, (it + 1) / warmup) * (1.0 - 0.7 * frac)
        for group in opt.param_groups:
            group["lr"] = lr
        x0 = scenes.training_batch(args.batch, gen) * 2 - 1
        flip = torch.rand(args.batch, generator=gen) < 0.5
        x0[flip] = x0[flip].flip(-1)
        u = torch.rand(args.batch, generator=gen).clamp(1e-3, 1.0)
        sigma = TOY.sigmas_for(u)
        noise = torch.randn(x0.shape, generator=gen)
        xt = (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * noise
        guid = 1 + 5 * torch.rand(args.batch, generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            v = velocity(net, xt, sigma, guid)
        loss = torch.nn.functional.mse_loss(v.float(), noise - x0)
        optimizer_step(opt, loss, net, ema, it)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        it += 1
        if it % 100 == 0:
            say(f"it {it:6d}  images {it * args.batch:8d}  loss {running:.4f}  lr {lr:.2e}  cpu {spent() / 60:5.1f} min  "
                f"wall {(time.time() - t0) / 60:5.1f} min (this run)")
        if time.time() - last_save > 300:
            save()
            last_save = time.time()
    save()
    say(f"# done: {it} iterations, {it * args.batch} images, cpu {spent() / 60:.1f} min; final loss (EMA of batch "
        f"loss) {running}; weights {os.path.relpath(args.out, ROOT)}")
    say(f"# check: {reconstruction_psnr(ema)} {reconstruction_psnr(ema, rule='target')}")


if __name__ == "__main__":
    main()
