#!/usr/bin/env python3
"""The layering rule of the tree, checked: every include points down the layers.

The library's layers, bottom to top, are the folders of include/ouroboros/ and src/:

  core    errors, config, presets, system facts
  data    tokenizers, corpora, batch and stream samplers
  plan    partition, cost model, schedule and its checks, the planner ("auto" search)
  model   the language-model interface, GPT, Transformer-XL, sampling
  train   the method interface and its state, optimizers, checkpoints, evaluation, reference
  engine  transport, thread team, pipeline clock, worker, threaded engine, GPipe, data
          parallelism, serial simulator
  dist    environment discovery, process context, c10d transport, per-process engine, launcher
  run     the training loop of every method and rank, the method factory

A file may include its own layer and the layers below it. tools/ (the CLI and its flags, the bench
harness, the charts; include paths "<folder of tools/>/...") sits above the library; bench/ and
tests/ may include anything. Also
checked: the library never includes the tools, private headers (src/<layer>/*_detail.h) are used
only within their folder, test folders mirror the layers, and no test file passes 500 lines.

Usage: check_layers.py SOURCE_DIR. Prints one line per violation and exits 1 if there is any.
"""
import pathlib
import re
import sys

LAYERS = ["core", "data", "plan", "model", "train", "engine", "dist", "run"]
RANK = {name: i for i, name in enumerate(LAYERS)}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)
MAX_TEST_LINES = 500


def layer_of(path, root):
    """The layer a library file belongs to, or None outside the library."""
    rel = path.relative_to(root).parts
    if rel[:2] == ("include", "ouroboros") and len(rel) > 3:
        return rel[2]
    if rel[0] == "src" and len(rel) > 2:
        return rel[1]
    return None


def check(root):
    errors = []
    tool_folders = {d.name for d in (root / "tools").iterdir() if d.is_dir()}
    files = [p for d in ("include", "src", "tools", "bench", "tests") for p in (root / d).rglob("*")
             if p.suffix in (".h", ".cpp", ".hpp")]
    for path in sorted(files):
        rel = path.relative_to(root)
        mine = layer_of(path, root)
        if (rel.parts[0] in ("include", "src")) and mine not in RANK:
            errors.append(f"{rel}: not in a layer folder ({', '.join(LAYERS)})")
            continue
        for target in INCLUDE.findall(path.read_text(encoding="utf-8")):
            parts = target.split("/")
            if parts[0] == "ouroboros":
                theirs = parts[1] if len(parts) > 2 else None
                if theirs not in RANK:
                    errors.append(f"{rel}: includes {target}, which is in no layer")
                elif mine is not None and RANK[theirs] > RANK[mine]:
                    errors.append(f"{rel}: layer {mine} includes {target} from layer {theirs}, "
                                  f"which is above it (move the shared piece down)")
            elif parts[0] in tool_folders:
                if mine is not None:
                    errors.append(f"{rel}: the library includes the tools' {target}")
            elif target.endswith("_detail.h"):
                if rel.parts[0] != "src" or not (path.parent / target).exists():
                    errors.append(f"{rel}: includes {target}, private to another folder")
    for test in sorted((root / "tests").rglob("*_test.cpp")):
        rel = test.relative_to(root)
        if len(rel.parts) != 3 or (rel.parts[1] not in RANK and rel.parts[1] != "tools"):
            errors.append(f"{rel}: tests live in tests/<layer>/ or tests/tools/")
        lines = test.read_text(encoding="utf-8").count("\n")
        if lines > MAX_TEST_LINES:
            errors.append(f"{rel}: {lines} lines, more than {MAX_TEST_LINES} (split it by concern)")
    return errors


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    errors = check(root)
    for e in errors:
        print(e)
    print(f"layering: {len(errors)} violation(s)" if errors else "layering: every include points down")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
