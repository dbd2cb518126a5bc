"""The `dl` command line: `dl train`, `dl datasets`, `dl models`.

Thin by design: it parses flags into a `TrainConfig` and calls library functions.
"""

from __future__ import annotations

import argparse
import ast
import sys
import traceback
from pathlib import Path


def _parse_kv(items: list[str] | None, flag: str) -> dict:
    """Parse ["widths=(128,64)", "dropout=0.1"] into a dict of Python literals."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects KEY=VALUE (e.g. {flag} widths=(128,)); got {item!r}.")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # a bare string such as activation=tanh
    return out


def _cmd_datasets(args) -> int:
    from dl.data import DATASETS

    width = max(map(len, DATASETS))
    for name, (_, desc) in DATASETS.items():
        print(f"{name:<{width}}  {desc}")
    return 0


def _cmd_models(args) -> int:
    from dl.models import MODELS

    width = max(map(len, MODELS))
    for name, (_, desc) in MODELS.items():
        print(f"{name:<{width}}  {desc}")
    return 0


def _cmd_train(args) -> int:
    from dl.recipes import default_config, default_out_dir, load_config, train_and_evaluate
    from dl.train import TrainingInterrupted

    options = dict(
        progress=not args.no_progress,
        strategy=args.strategy,
        devices=args.devices,
        checkpoint=not args.no_checkpoint,
        tensorboard=args.tensorboard,
        profile=args.profile,
        announce=lambda line: print(f"dl train: {line}", flush=True),
    )
    if args.resume is not None:
        config = load_config(args.resume)
        print(f"dl train: resuming {args.resume}", flush=True)
        try:
            res = train_and_evaluate(config, args.resume, resume=True, **options)
        except TrainingInterrupted as e:
            print(f"dl train: {e}", file=sys.stderr)
            return e.exit_code
        _report(res)
        return 0
    config = default_config(
        args.model,
        args.dataset,
        quick=args.quick,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        clip_norm=args.clip_norm,
        label_smoothing=args.label_smoothing,
        augment=args.augment,
        val_fraction=args.val_fraction,
        patience=args.patience,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        skip_nonfinite=args.skip_nonfinite or None,
        compute_dtype=args.compute_dtype,
        kernels=args.kernels,
        grad_accum=args.grad_accum,
        ema_decay=args.ema,
        model_kwargs=_parse_kv(args.model_arg, "--model-arg"),
        dataset_kwargs=_parse_kv(args.dataset_arg, "--dataset-arg"),
    )
    print(
        f"dl train: {config.model} on {config.dataset}, {config.epochs} epochs, batch "
        f"{config.batch_size}, {config.optimizer} lr={config.learning_rate} ({config.schedule}), "
        f"augment={config.augment}, seed={config.seed}",
        flush=True,
    )
    out = args.out if args.out is not None else default_out_dir(config)
    try:
        res = train_and_evaluate(config, out, overwrite=args.overwrite, **options)
    except TrainingInterrupted as e:
        print(f"dl train: {e}", file=sys.stderr)
        print(f"dl train: resume with: dl train --resume {out}", file=sys.stderr)
        return e.exit_code
    _report(res)
    return 0


def _report(res) -> None:
    par = res["parallel"]
    print(f"ran on {par['devices']} device(s), strategy {par['strategy']}")
    parts = [f"test loss: {res['test_loss']:.4f}"] if res.get("test_loss") is not None else []
    if res.get("test_accuracy") is not None:
        parts.insert(0, f"test accuracy: {res['test_accuracy']:.4f}")
    if "mse_ratio" in res:
        parts.append(f"MSE / predict-the-mean MSE: {res['mse_ratio']:.4f}")
    if "bits_per_char" in res:
        parts.append(f"bits per char: {res['bits_per_char']:.3f}")
        parts.append(f"known words in the sample: {res['sample_known_words']:.0%}")
    if "test_elbo" in res:
        parts.append(f"test ELBO: {res['test_elbo']:.1f} nats (KL {res['test_kl']:.1f})")
    elif res.get("task") == "reconstruction":
        parts.append(f"test MSE: {res['test_mse']:.4f}")
    if "denoising" in res:
        d = res["denoising"]
        parts.append(f"denoised/noisy MSE: {d['denoised_mse']:.4f}/{d['noisy_mse']:.4f}")
    if res.get("task") == "generation":
        s = res["samples"]
        parts.append(
            f"{s['n']} samples: judge's mean confidence {s['mean_confidence']:.3f} "
            f"(real test images {res['judge']['mean_confidence_real_test']:.3f}), "
            f"{s['classes_present']} classes"
        )
    parts += [f"epochs: {res['epochs']}", f"train time: {res['train_time_s']:.1f}s"]
    print("  ".join(parts))
    if res.get("task") == "language_model":
        for text in res.get("samples", [])[1:]:
            print(f"sample:\n{text}")
    figures = sorted(p.name for p in Path(res["out_dir"]).glob("*.png"))
    print(f"wrote {res['out_dir']}/: results.json, metrics.jsonl, {', '.join(figures)}")
    if res.get("tensorboard_dir"):
        print(f"TensorBoard: tensorboard --logdir {res['tensorboard_dir']}")
    if res.get("profile_dir"):
        print(
            f"profile: {res['profile_dir']} (open with: tensorboard --logdir "
            f"{res['profile_dir']}, Profile tab, after pip install tensorboard-plugin-profile; "
            "or xprof)"
        )


def _cmd_reproduce(args) -> int:
    import time
    import traceback

    from dl.experiments import EXPERIMENTS, configure, get_experiment
    from dl.experiments.common import tracked
    from dl.experiments.index import write_index

    if args.list:
        for name, (_, desc) in EXPERIMENTS.items():
            print(f"{name:<20} {desc}")
        return 0
    names = args.only or list(EXPERIMENTS)
    modules = [get_experiment(n) for n in names]  # unknown names fail before any work
    root = Path(args.out or "runs/reproduce")
    # Bad settings (e.g. a negative seed) fail here too, with exit 2.
    configs = [configure(n, out=root / n, quick=args.quick, seed=args.seed) for n in names]
    index, failed = [], []
    for name, module, config in zip(names, modules, configs, strict=True):
        t0 = time.perf_counter()
        print(f"dl reproduce: {name}{' (quick)' if args.quick else ''} ...", flush=True)
        try:
            with tracked(name, quick=args.quick, enabled=not args.no_progress) as tracker:
                res = module.run(config)
        except Exception as e:  # report it, run the others, exit non-zero at the end
            traceback.print_exc()
            failed.append(name)
            index.append(
                {
                    "experiment": name,
                    "time_s": time.perf_counter() - t0,
                    "error": f"{type(e).__name__}: {e}",
                }
            )
            continue
        took = time.perf_counter() - t0
        print(module.summarize_verdicts(res))
        print(f"  {took:.0f} s; wrote {root / name}/report.md", flush=True)
        index.append(
            {
                "experiment": name,
                "time_s": took,
                "verdicts": res["verdicts"],
                "figures": res.get("figures", []),
                "runs": tracker.runs,
            }
        )
    paths = write_index(root, index, quick=args.quick, seed=args.seed)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    if failed:
        print(
            f"dl reproduce: {len(failed)} experiment(s) failed: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dl", description="dl: a JAX functional research toolkit for deep learning."
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("datasets", help="list the embedded datasets").set_defaults(fn=_cmd_datasets)
    sub.add_parser("models", help="list the models").set_defaults(fn=_cmd_models)

    r = sub.add_parser(
        "reproduce",
        help="run the experiments that test the source texts' claims",
        description="Run experiments; each writes results.json (with verdicts), report.md "
        "and figures under --out/<name>/.",
    )
    r.add_argument("--quick", action="store_true", help="the short variant of each experiment")
    r.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", help="output folder (default runs/reproduce)")
    r.add_argument("--list", action="store_true", help="list the experiments and exit")
    r.add_argument(
        "--no-progress", action="store_true", help="no progress line inside each experiment"
    )
    r.set_defaults(fn=_cmd_reproduce)

    t = sub.add_parser(
        "train",
        help="train a model on a dataset and write results.json, metrics.jsonl, curves.png",
        description="Train a model on an embedded dataset. Flags left out take the recipe's "
        "default for that (model, dataset) pair.",
    )
    t.add_argument("--model", default="cnn", help="model name (see `dl models`); default cnn")
    t.add_argument("--dataset", default="mnist5k", help="dataset name (see `dl datasets`)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="peak learning rate")
    t.add_argument("--optimizer", help="sgd, momentum, nesterov, adam, adamw or rmsprop")
    t.add_argument("--schedule", help="constant, step, cosine or warmup_cosine")
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--clip-norm", type=float, help="global-norm gradient clipping")
    t.add_argument("--label-smoothing", type=float)
    t.add_argument("--augment", help="none, shift or shift_flip")
    t.add_argument("--val-fraction", type=float, help="hold out this share for validation")
    t.add_argument("--patience", type=int, help="early stopping on val/accuracy")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--quick",
        action="store_true",
        help="the recipe's quick variant (fewer epochs; for tests and small machines)",
    )
    t.add_argument(
        "--model-arg",
        action="append",
        metavar="KEY=VALUE",
        help="model field, repeatable: --model-arg widths=(128,) --model-arg dropout=0.1",
    )
    t.add_argument(
        "--dataset-arg",
        action="append",
        metavar="KEY=VALUE",
        help="dataset option, repeatable: --dataset-arg num_samples=10000",
    )
    t.add_argument("--out", help="output folder (default runs/train/<model>-<dataset>-...)")
    t.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="STEPS",
        help="steps between checkpoints (default: every epoch)",
    )
    t.add_argument(
        "--skip-nonfinite",
        action="store_true",
        help="skip steps with a NaN/Inf loss or gradient instead of stopping",
    )
    t.add_argument(
        "--compute-dtype",
        help="float32 (default), or bfloat16: mixed precision (bf16 model, float32 "
        "parameters and optimizer), meant for GPUs and TPUs",
    )
    t.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR (its --out folder) from its newest checkpoint",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="let a new run replace the run files already in --out (refused without it)",
    )
    t.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="use the first N devices (default: all; the batch size must divide over them)",
    )
    t.add_argument(
        "--strategy",
        default="auto",
        choices=("auto", "single", "sharded", "pmap"),
        help="auto (sharded when there are several devices), single, sharded (jit with "
        "shardings) or pmap",
    )
    t.add_argument(
        "--kernels",
        choices=("auto", "xla", "cpu"),
        help="auto (default: dl's CPU kernels on the CPU backend), xla (plain JAX) or cpu",
    )
    t.add_argument(
        "--grad-accum",
        type=int,
        metavar="K",
        help="split each batch into K microbatches and average their gradients (memory "
        "of one microbatch, one optimizer update per batch)",
    )
    t.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="keep a moving average of the parameters (e.g. 0.999) and evaluate it",
    )
    t.add_argument("--no-checkpoint", action="store_true", help="write no checkpoints")
    t.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard events to DIR/tensorboard",
    )
    t.add_argument(
        "--profile", action="store_true", help="write a jax.profiler trace to DIR/profile"
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(fn=_cmd_train)
    return p


def _expected_errors() -> tuple[type[BaseException], ...]:
    """What a user can cause and fix: bad values, names, files and folders (ValueError,
    OSError: missing, unreadable or unwritable paths, a refused download), damaged
    checkpoints, non-finite training, too little memory for what was asked. Anything
    else is a bug and keeps its traceback."""
    from dl.checkpoint import CheckpointError

    return (ValueError, OSError, FloatingPointError, OverflowError, MemoryError, CheckpointError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    EXPECTED_ERRORS = _expected_errors()
    try:
        if args.command in ("train", "reproduce"):
            from dl.kernels import tune_host_allocator

            # A process-wide setting, so the CLI makes it, never `import dl`.
            tune_host_allocator()
        if args.command == "train":
            from dl.parallel import initialize

            initialize()  # joins a multi-process run when DL_NUM_PROCESSES etc. are set
        return args.fn(args)
    except EXPECTED_ERRORS as e:
        print(f"dl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        print(
            f"dl {args.command}: an unexpected error, which is a bug in dl: please report it "
            "with the command you ran and the traceback above.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
