#!/usr/bin/python3
"""Baseline for bench_step: the same GPT and training step in PyTorch, written with the same ops as
src/model/gpt.cpp, timed the same way. Prints one JSON line. Run it with Debian's python3-torch
(/usr/bin/python3), which shares libtorch 1.13 with the C++ build; on a GPU machine with its torch
(--device cuda, --dtype bfloat16: scripts/device-check.sh)."""
import argparse
import json
import math
import resource
import statistics
import time

import torch
import torch.nn.functional as F


def init_params(L, C, T, V, gen):
    """GPT-2 initialisation, [out, in] weights, as GPT::init_params (values differ: other RNG use)."""
    std, proj_std = 0.02, 0.02 / math.sqrt(2 * L)
    normal = lambda *shape, s=std: torch.normal(0.0, s, shape, generator=gen).requires_grad_()
    ones = lambda n: torch.ones(n).requires_grad_()
    zeros = lambda n: torch.zeros(n).requires_grad_()
    p = {"wte.weight": normal(V, C), "wpe.weight": normal(T, C)}
    for i in range(L):
        h = f"h.{i}."
        p.update({
            h + "ln_1.weight": ones(C), h + "ln_1.bias": zeros(C),
            h + "attn.c_attn.weight": normal(3 * C, C), h + "attn.c_attn.bias": zeros(3 * C),
            h + "attn.c_proj.weight": normal(C, C, s=proj_std), h + "attn.c_proj.bias": zeros(C),
            h + "ln_2.weight": ones(C), h + "ln_2.bias": zeros(C),
            h + "mlp.c_fc.weight": normal(4 * C, C), h + "mlp.c_fc.bias": zeros(4 * C),
            h + "mlp.c_proj.weight": normal(C, 4 * C, s=proj_std), h + "mlp.c_proj.bias": zeros(C),
        })
    p["ln_f.weight"], p["ln_f.bias"] = ones(C), zeros(C)
    return p


def block(p, i, x, H, mask):
    h = f"h.{i}."
    B, T, C = x.shape
    D = C // H
    a = F.layer_norm(x, (C,), p[h + "ln_1.weight"], p[h + "ln_1.bias"], 1e-5)
    qkv = F.linear(a, p[h + "attn.c_attn.weight"], p[h + "attn.c_attn.bias"])
    q, k, v = qkv.split(C, 2)                                        # 3 x [B, T, C]
    q = q.view(B, T, H, D).transpose(1, 2)                           # [B, H, T, D]
    k = k.view(B, T, H, D).transpose(1, 2)
    v = v.view(B, T, H, D).transpose(1, 2)
    if q.is_cuda:  # the fused kernel, as ouroboros runs it on a GPU without attention dropout
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
        att = att.masked_fill(mask[:T, :T], float("-inf"))
        att = torch.softmax(att, -1)                                 # [B, H, T, T]
        y = torch.matmul(att, v)
    y = y.transpose(1, 2).reshape(B, T, C)
    y = F.linear(y, p[h + "attn.c_proj.weight"], p[h + "attn.c_proj.bias"])
    r = x + y
    m = F.layer_norm(r, (C,), p[h + "ln_2.weight"], p[h + "ln_2.bias"], 1e-5)
    m = F.gelu(F.linear(m, p[h + "mlp.c_fc.weight"], p[h + "mlp.c_fc.bias"]), approximate="tanh")
    m = F.linear(m, p[h + "mlp.c_proj.weight"], p[h + "mlp.c_proj.bias"])
    return r + m


def loss_fn(p, idx, targets, L, H, V, mask):
    T = idx.shape[1]
    h = F.embedding(idx, p["wte.weight"]) + p["wpe.weight"][:T]     # [B, T, C]
    for i in range(L):
        h = block(p, i, h, H, mask)
    n = F.layer_norm(h, (h.shape[-1],), p["ln_f.weight"], p["ln_f.bias"], 1e-5)
    logits = F.linear(n, p["wte.weight"])                             # [B, T, V]
    return F.cross_entropy(logits.view(-1, V), targets.reshape(-1))


def flops_per_step(B, T, C, V, L):
    """Matmul FLOPs: forward 2*B*T*(12*L*C*C + C*V) + 4*L*B*T*T*C; backward twice that."""
    return 3 * (2 * B * T * (12 * L * C * C + C * V) + 4 * L * B * T * T * C)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--modules", type=int, default=1, help="accepted for symmetry; must be 1")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (as ouroboros --device)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="bfloat16: autocast for the forward, as ouroboros --dtype")
    a = ap.parse_args()
    if a.modules != 1:
        ap.error("the PyTorch baseline is plain backprop: --modules must be 1")
    torch.set_num_threads(a.threads)

    L, H, C, T, B, V = a.n_layer, a.n_head, a.n_embd, a.block_size, a.batch_size, a.vocab
    dev = torch.device(a.device)
    p = {k: v.detach().to(dev).requires_grad_()
         for k, v in init_params(L, C, T, V, torch.Generator().manual_seed(1337)).items()}
    params = list(p.values())
    opt = torch.optim.Adam(params, lr=1e-3)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1).to(dev)
    gen = torch.Generator().manual_seed(42)
    batches = []
    for _ in range(a.warmup + a.steps):
        w = torch.randint(V, (B, T + 1), generator=gen)
        batches.append((w[:, :T].contiguous(), w[:, 1:].contiguous()))
    bf16 = a.dtype == "bfloat16"

    ms, loss_value = [], 0.0
    for t, (x, y) in enumerate(batches):
        start = time.perf_counter()
        # The batch is copied to the device inside the timed step, as ouroboros does.
        x, y = x.to(dev), y.to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(p, x, y, L, H, V, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_value = loss.item()
        dt = (time.perf_counter() - start) * 1e3
        if t >= a.warmup:
            ms.append(dt)

    step_ms = statistics.median(ms)
    print(json.dumps({
        "impl": "pytorch", "threads": a.threads, "modules": 1, "device": a.device,
        "dtype": a.dtype, "ms_per_step": step_ms,
        "tokens_per_s": B * T / (step_ms / 1e3),
        "gflops": flops_per_step(B, T, C, V, L) / (step_ms / 1e3) / 1e9,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "final_loss": loss_value}))


if __name__ == "__main__":
    main()
