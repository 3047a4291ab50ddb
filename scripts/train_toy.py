"""Trains the toy pixel-space diffusion model on synthetic scenes (30 minutes of one CPU core).

    .venv/bin/python scripts/train_toy.py --cpu-minutes 30 --threads 1

The budget is the process's CPU time, not wall time, so a busy machine takes longer but trains the
same amount (on an idle core the two are equal).

Writes toy/dragon_toy/weights/dragon_toy_unet.safetensors (EMA weights, fp16) and appends to
toy/dragon_toy/weights/train_log.txt, ending with the acceptance figures of toy/dragon_toy/check.py
(reconstruction, Gaussian inverted noise, the start-noise copy test, what the features carry).
Retraining is not bit-reproducible across CPUs (thread scheduling, bf16 kernels), which is why the
weights are shipped.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.join(ROOT, ".comfyui"))  # ComfyUI's `comfy` package (after, never before)
sys.path.append(os.path.join(ROOT, "toy"))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from comfy.cli_args import args as comfy_args  # noqa: E402

comfy_args.cpu = True  # training needs only ComfyUI's UNet class; keep model_management off any GPU

from dragon_toy import check  # noqa: E402
from dragon_toy import model as toy_model  # noqa: E402
from dragon_toy import scenes  # noqa: E402
from dragon_toy.training import optimizer_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-minutes", type=float, default=30.0, help="training budget in CPU minutes of this process")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False,
                    help="bf16 autocast + channels_last: about 2x faster on CPUs with AMX, 10x slower without")
    ap.add_argument("--prediction", choices=toy_model.PREDICTIONS, default="v",
                    help="train the UNet to predict v (SD2.x-768; the shipped model) or the noise (SD1.x, the first "
                         "model: its features follow the noise, not the scene); stored in the weights' metadata")
    ap.add_argument("--out", default=toy_model.WEIGHTS)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    unet = toy_model.build_unet()
    if args.bf16:
        unet = unet.to(memory_format=torch.channels_last)
    unet.prediction = args.prediction  # read by check.py's noise estimate
    ema = copy.deepcopy(unet).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    params = sum(p.numel() for p in unet.parameters())
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    abar = toy_model.alphas_cumprod()
    ctx = torch.zeros(args.batch, 1, toy_model.CONTEXT_DIM)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    log_path = os.path.join(os.path.dirname(args.out), "train_log.txt")
    log = open(log_path, "a")

    def say(msg: str) -> None:
        print(msg, flush=True)
        log.write(msg + "\n")
        log.flush()

    say(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} train_toy.py {' '.join(sys.argv[1:])}")
    say(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {args.threads}, "
        f"params {params / 1e6:.2f} M, bf16 {args.bf16}")
    budget = args.cpu_minutes * 60
    warmup, t0, c0, it, running = 200, time.time(), time.process_time(), 0, None

    def save() -> None:
        sd = {k: v.detach().float().contiguous().half() for k, v in ema.state_dict().items()}
        save_file(sd, args.out, metadata={"iterations": str(it), "images": str(it * args.batch),
                                          "config": repr(toy_model.UNET_CONFIG), "prediction": args.prediction})

    last_save = t0
    while time.process_time() - c0 < budget:
        frac = (time.process_time() - c0) / budget
        lr = args.lr * min(1.0, (it + 1) / warmup) * (1.0 - 0.7 * frac)
        for group in opt.param_groups:
            group["lr"] = lr
        x0 = scenes.training_batch(args.batch, gen) * 2 - 1
        flip = torch.rand(args.batch, generator=gen) < 0.5
        x0[flip] = x0[flip].flip(-1)
        t = torch.randint(0, toy_model.TIMESTEPS, (args.batch,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        if args.bf16:
            xt = xt.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            pred = unet(xt, t.float(), context=ctx)
        target = eps if args.prediction == "eps" else a.sqrt() * eps - (1 - a).sqrt() * x0
        loss = torch.nn.functional.mse_loss(pred.float(), target)
        optimizer_step(opt, loss, unet, ema, it)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        it += 1
        if it % 100 == 0:
            cpu = time.process_time() - c0
            say(f"it {it:6d}  images {it * args.batch:8d}  loss {running:.4f}  lr {lr:.2e}  cpu {cpu / 60:5.1f} min  "
                f"wall {(time.time() - t0) / 60:5.1f} min  {cpu / it:.3f} cpu-s/it")
        if time.time() - last_save > 300:
            save()
            last_save = time.time()
    save()
    say(f"# done: {it} iterations, {it * args.batch} images, cpu {(time.process_time() - c0) / 60:.1f} min, "
        f"wall {(time.time() - t0) / 60:.1f} min, "
        f"final loss (EMA of batch loss) {running:.4f}; weights {os.path.relpath(args.out, ROOT)}")
    assert math.isfinite(running)
    # acceptance figures of the EMA weights (the same as scripts/check_toy.py prints), outside the budget
    say("# check: " + json.dumps(check.report(ema)))


if __name__ == "__main__":
    main()
