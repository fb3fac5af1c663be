"""Benchmark: building the training view vs the official NPR code's dense mask, and the cost of the tree mask in a step.

Part 1, construction (each cell in a fresh subprocess, so its peak RSS is its own). Synthetic NPR
trees of exactly L tokens (toy char-level tokenizer; blocks of width 2-8 until L is filled):

- ``view``: ``build_view`` (positions, targets, branch paths: the O(L) structure);
- ``view+paths``: the same plus ``masks.stack``, the padded (B, D, L) paths and (B, L) ends the ``mask_mod`` reads;
- ``block_mask``: ``build_view`` + ``view.block_mask("cpu")`` (``create_block_mask``, eager, as shipped);
- ``block_mask[compiled]`` (``--compiled``): ``torch.compile(create_block_mask)``, timed after its compile;
- ``official``: the official NPR-Beta training code's algorithm (docs/design.md §3): a Python loop over tokens,
  per-tag slice shifts of the positions, a dense ``tril`` bool mask blocked pair by pair of step spans
  with ``meshgrid`` index tensors, converted to a dense float mask;
- ``loop``: the dense L x L mask built by Python loops over (query, key) pairs. At lengths above
  ``--loop-full`` only ``--loop-fraction`` of the rows is built (evenly spaced rows, each the same cost)
  and the time is extrapolated linearly to all rows; the table marks such cells ``~``.

Part 2, training step (forward + backward, float32 sdpa, CPU) of a small Qwen3 model on the same
batch of trees with the view's additive 4D mask vs plain causal attention (``attention_mask=None``,
sdpa's ``is_causal`` path) and vs a causal mask given as the same kind of additive 4D tensor.

Construction cells report the best of N runs (the machine is shared; the minimum is the cost of the
work itself), training steps the median of interleaved runs. Prints markdown tables and ratios; no
assertions. Run:

    python bench/view.py                              # 4k/16k/32k + steps at 512/1024 (~15 min on 2 busy cores)
    python bench/view.py --lengths 4096 --skip-train  # quick look
    python bench/view.py --compiled                   # + torch.compile(create_block_mask): ~1 min compile per length
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

import torch

from npr_toolkit.toy import build_tokenizer
from npr_toolkit.view import build_view, collate, tokenize_completion
from npr_toolkit.view import masks as view_masks

PROMPT = "<|im_start|>user\nCompute the sums.<|im_end|>\n<|im_start|>assistant\n"
WORDS = "abc +=123\n"
METHODS = ("view", "view+paths", "block_mask", "block_mask[compiled]", "official", "loop")

# ---------------------------------------------------------------------------------------------
# inputs


def tree_text(length: int, seed: int) -> str:
    """A completion of blocks (width 2-8, ragged branches) that fills about ``length`` characters."""
    rng = random.Random(seed)

    def text(n: int) -> str:
        return "".join(rng.choice(WORDS) for _ in range(max(1, n)))

    parts, used = [], 0
    while used < length:
        width = rng.randint(2, 8)
        budget = min(length - used, rng.randint(length // 8, length // 3))
        branch = max(8, budget // (width + 1))
        block = "Next.\n<guideline>\n"
        block += "".join(f"<plan>{i}: {text(12)}</plan>\n" for i in range(1, width + 1)) + "</guideline>"
        block += "".join(
            f"\n<step>\n{i}: {text(rng.randint(branch // 2, branch * 3 // 2))}\n</step>" for i in range(1, width + 1)
        )
        block += f"\n<takeaway>\n{text(branch // 2)}\n</takeaway>\n"
        parts.append(block)
        used += len(block)
    return "".join(parts)


def tree_ids(tokenizer, length: int, seed: int = 0) -> tuple[list[int], int]:
    """Exactly ``length`` token ids (prompt + completion) of a synthetic tree, and the prompt length."""
    text = tree_text(length, seed)
    ids, prompt_length = tokenize_completion(tokenizer, PROMPT, text)
    while len(ids) > length:  # drop whole blocks from the end until it fits, then pad the answer
        text = text[: text.rindex("Next.\n<guideline>")]
        ids, prompt_length = tokenize_completion(tokenizer, PROMPT, text)
    answer = "\\boxed{" + "1" * max(0, length - len(ids) - 8) + "}"
    ids, prompt_length = tokenize_completion(tokenizer, PROMPT, text + answer[: length - len(ids)])
    return ids, prompt_length


# ---------------------------------------------------------------------------------------------
# references: the official code's algorithm, and plain Python loops


def official_reference(ids: list[int], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense float mask (L, L) and positions, computed the way the official NPR-Beta code does (docs/design.md §3)."""
    tid = tokenizer.convert_tokens_to_ids
    step_open, step_close, guideline_close, takeaway = (
        tid(t) for t in ("<step>", "</step>", "</guideline>", "<takeaway>")
    )
    n = len(ids)
    allowed = torch.tril(torch.ones(n, n, dtype=torch.bool))
    positions = torch.arange(n)
    spans: list[tuple[int, int]] = []
    g = m = 0
    opened = -1
    i = ids.index(tid("<|im_end|>")) + 1
    while i < n:
        token = ids[i]
        if token == guideline_close:
            g, m = int(positions[i]), 0
        elif token == step_open:
            opened = i
            positions[i:] -= positions[i] - (g + 1)
        elif token == step_close:
            spans.append((opened, i + 1))
            m = max(m, int(positions[i]) - g)
        elif token == takeaway:
            rows, cols = [], []
            for a in range(len(spans)):
                for b in range(a + 1, len(spans)):
                    qa, kb = torch.meshgrid(torch.arange(*spans[a]), torch.arange(*spans[b]), indexing="ij")
                    rows.append(qa.flatten())
                    cols.append(kb.flatten())
            if rows:
                r, c = torch.cat(rows), torch.cat(cols)
                allowed[r, c] = False
                allowed[c, r] = False
            spans = []
            positions[i:] -= positions[i] - (g + m + 1)
        i += 1
    mask = torch.full_like(allowed, -torch.inf, dtype=torch.float).masked_fill(allowed, 0.0)
    return mask, positions


def loop_reference(ids: list[int], tokenizer, rows: list[int]) -> bytearray:
    """The dense mask of ``rows`` (all rows = the L x L mask), one Python iteration per (query, key) pair.

    A first pass over the tokens gives each token its (block, step span) or None; then query t may
    attend key s <= t unless both sit in different step spans of the same block (official semantics).
    """
    tid = tokenizer.convert_tokens_to_ids
    step_open, step_close, takeaway = (tid(t) for t in ("<step>", "</step>", "<takeaway>"))
    n = len(ids)
    span_of: list[tuple[int, int] | None] = [None] * n
    block, step, inside = 0, 0, False
    for i in range(ids.index(tid("<|im_end|>")) + 1, n):
        if ids[i] == step_open:
            inside, step = True, step + 1
        if inside:
            span_of[i] = (block, step)
        if ids[i] == step_close:
            inside = False
        elif ids[i] == takeaway:
            block, step = block + 1, 0
    out = bytearray(len(rows) * n)
    for r, t in enumerate(rows):
        q = span_of[t]
        base = r * n
        for s in range(t + 1):
            k = span_of[s]
            if q is None or k is None or q[0] != k[0] or q[1] == k[1]:
                out[base + s] = 1
    return out


def references_agree(length: int) -> bool:
    """Both references compute the npr-compat view's mask (and the official one its positions)."""
    tokenizer = build_tokenizer()
    ids, prompt_length = tree_ids(tokenizer, length)
    view = build_view(ids, tokenizer, mode="npr-compat", prompt_length=prompt_length)
    mask, positions = official_reference(ids, tokenizer)
    loop = torch.frombuffer(loop_reference(ids, tokenizer, list(range(length))), dtype=torch.bool).view(length, length)
    dense = view.dense_mask()
    return torch.equal(mask == 0, dense) and torch.equal(positions, view.position_ids) and torch.equal(loop, dense)


# ---------------------------------------------------------------------------------------------
# one measurement per subprocess


def _kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> int:
    """Reset the peak RSS (Linux clear_refs 5) and return the current RSS in KiB."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return _kib("VmRSS")


def cell(method: str, length: int, repeats: int, loop_full: int, loop_fraction: float) -> dict:
    tokenizer = build_tokenizer()
    ids, prompt_length = tree_ids(tokenizer, length)
    view = build_view(ids, tokenizer, prompt_length=prompt_length)  # warm-up (tag vocab, allocator)
    note = f"widths {view.widths}"
    compiled = None
    if method == "block_mask[compiled]":
        from torch.nn.attention.flex_attention import create_block_mask

        compiled = torch.compile(create_block_mask)
        start = time.perf_counter()
        paths = view_masks.stack([view], len(view))
        compiled(view_masks.mask_mod(*paths), 1, None, len(view), len(view), device="cpu")
        note += f"; compile {time.perf_counter() - start:.0f} s"

    scale = 1.0
    rows = list(range(length))
    if method == "loop" and length > loop_full:
        step = round(1 / loop_fraction)
        rows = list(range(step // 2, length, step))
        scale = length / len(rows)
        note += f"; {len(rows)} of {length} rows, time x{scale:.0f}"

    def run() -> None:
        if method == "view":
            build_view(ids, tokenizer, prompt_length=prompt_length)
        elif method == "view+paths":
            v = build_view(ids, tokenizer, prompt_length=prompt_length)
            view_masks.stack([v], len(v))
        elif method == "block_mask":
            build_view(ids, tokenizer, prompt_length=prompt_length).block_mask("cpu")
        elif method == "block_mask[compiled]":
            v = build_view(ids, tokenizer, prompt_length=prompt_length)
            paths = view_masks.stack([v], len(v))
            compiled(view_masks.mask_mod(*paths), 1, None, len(v), len(v), device="cpu")
        elif method == "official":
            official_reference(ids, tokenizer)
        elif method == "loop":
            loop_reference(ids, tokenizer, rows)

    times, peak = [], 0.0
    for _ in range(repeats):
        base = _reset_peak()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        peak = max(peak, (_kib("VmHWM") - base) / 1024)
    return {"seconds": min(times) * scale, "peak_mib": peak, "extrapolated": scale > 1, "note": note}


def run_cell(method: str, length: int, args: argparse.Namespace) -> dict:
    repeats = 3 * args.repeats if method.startswith("view") else args.repeats if length <= 4096 else 1
    command = [sys.executable, __file__, "--cell", method, str(length), "--repeats", str(repeats)]
    command += ["--loop-full", str(args.loop_full), "--loop-fraction", str(args.loop_fraction)]
    command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        return {"seconds": float("nan"), "peak_mib": float("nan"), "extrapolated": False, "note": done.stderr[-300:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# training step


def train_steps(lengths: list[int], batch: int, repeats: int) -> list[dict]:
    """Median forward+backward time: view mask vs causal (no mask) vs causal as an additive 4D mask."""
    from npr_toolkit.toy import build_model

    tokenizer = build_tokenizer()
    model = build_model(
        tokenizer, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=1024
    ).train()
    rows = []
    for length in lengths:
        views = []
        for seed in range(batch):
            ids, prompt_length = tree_ids(tokenizer, length, seed)
            views.append(build_view(ids, tokenizer, prompt_length=prompt_length))
        collate_times = []
        for _ in range(repeats):
            start = time.perf_counter()
            tree = collate(views, tokenizer.pad_token_id)
            collate_times.append(time.perf_counter() - start)
        collate_s = min(collate_times)
        ids = tree["input_ids"]
        causal_mask = view_masks.additive(torch.ones(length, length, dtype=torch.bool).tril())[None, None]
        variants = {
            "tree": {"attention_mask": tree["attention_mask"], "position_ids": tree["position_ids"]},
            "causal": {"attention_mask": None},
            "causal-4d": {"attention_mask": causal_mask.expand(batch, 1, length, length)},
        }

        def step(kwargs: dict, ids: torch.Tensor = ids, labels: torch.Tensor = tree["labels"]) -> float:
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            model(input_ids=ids, labels=labels, **kwargs).loss.backward()
            return time.perf_counter() - start

        for kwargs in variants.values():  # warm-up
            step(kwargs)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeats):  # interleaved, so load drift hits every variant alike
            for name, kwargs in variants.items():
                times[name].append(step(kwargs))
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        rows.append({"length": length, "batch": batch, "collate_s": collate_s, **medians})
    return rows


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 32768])
    parser.add_argument("--repeats", type=int, default=5, help="x3 for the view cells; 1 for slow cells above 4k")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--loop-full", type=int, default=16384, help="longest length the loop reference runs fully")
    parser.add_argument("--loop-fraction", type=float, default=1 / 16, help="share of rows the loop builds above that")
    parser.add_argument("--block-mask-max", type=int, default=16384, help="longest length for the eager BlockMask")
    parser.add_argument("--compiled", action="store_true", help="also time torch.compile(create_block_mask)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="construction methods (default: all)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--train-lengths", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--cell", nargs=2, metavar=("METHOD", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.cell:
        method, length = args.cell[0], int(args.cell[1])
        print(json.dumps(cell(method, length, args.repeats, args.loop_full, args.loop_fraction)))
        return

    with open("/proc/cpuinfo") as info:
        cpu = next(
            (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.machine()
        )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(
        f"# {cpu}, {os.cpu_count()} cpus, {memory:.0f} GiB, {args.threads} torch threads, torch {torch.__version__}, "
        f"load {os.getloadavg()[0]:.1f}\n# python bench/view.py {' '.join(sys.argv[1:])}\n"
    )
    print(f"references agree with build_view(mode='npr-compat') at 2k: {references_agree(2048)}\n")
    methods = args.methods or [m for m in METHODS if args.compiled or m != "block_mask[compiled]"]
    results: dict[tuple[str, int], dict] = {}
    print("## construction: best-of-N seconds (peak RSS growth, MiB)\n")
    print("| method | " + " | ".join(f"{n // 1024}k" for n in args.lengths) + " | notes |")
    print("|---|" + "---|" * len(args.lengths) + "---|")
    for method in methods:
        cells, notes = [], []
        for length in args.lengths:
            if method == "block_mask" and length > args.block_mask_max:
                cells.append("not run")
                notes.append(f"{length // 1024}k: O(L^2) memory, see the smaller lengths")
                continue
            r = results[method, length] = run_cell(method, length, args)
            mark = "~" if r["extrapolated"] else ""
            cells.append(f"{mark}{r['seconds']:.4g} s ({r['peak_mib']:.0f})")
            if "rows" in r["note"] or "compile" in r["note"] or "Error" in r["note"]:
                notes.append(f"{length // 1024}k: {r['note'].split('; ', 1)[-1]}")
        print(f"| {method} | " + " | ".join(cells) + " | " + "; ".join(notes) + " |", flush=True)
    print(f"\nlongest tree: {results.get(('view', args.lengths[-1]), {}).get('note', '')}\n")
    pairs = [(ref, fast) for ref in ("official", "loop") for fast in ("view", "view+paths", "block_mask[compiled]")]
    pairs = [(ref, fast) for ref, fast in pairs if ref in methods and fast in methods]
    if pairs:
        print("## speed-up of the view over the references (time ratio; ~ = extrapolated reference)\n")
        print("| length | " + " | ".join(f"{ref} / {fast}" for ref, fast in pairs) + " |")
        print("|---|" + "---|" * len(pairs))
        for length in args.lengths:
            ratios = []
            for ref, fast in pairs:
                mark = "~" if results[ref, length]["extrapolated"] else ""
                ratios.append(f"{mark}{results[ref, length]['seconds'] / results[fast, length]['seconds']:.0f}x")
            print(f"| {length // 1024}k | " + " | ".join(ratios) + " |")

    if not args.skip_train:
        print(
            f"\n## training step, forward+backward, float32 sdpa (hidden 256, 4 layers), batch {args.train_batch}: "
            "median seconds\n"
        )
        print("| seq | tree mask | causal (no mask) | causal as 4D mask | tree / causal | tree / causal-4d | collate |")
        print("|---|---|---|---|---|---|---|")
        for r in train_steps(args.train_lengths, args.train_batch, args.repeats + 2):
            print(
                f"| {r['length']} | {r['tree']:.3f} s | {r['causal']:.3f} s | {r['causal-4d']:.3f} s | "
                f"{r['tree'] / r['causal']:.2f} | {r['tree'] / r['causal-4d']:.2f} | {r['collate_s'] * 1e3:.1f} ms |"
            )


if __name__ == "__main__":
    main()
