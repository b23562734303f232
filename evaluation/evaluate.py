"""Send every evaluation set to a running TorchServe over HTTP and write EVALUATION.md.

    python -m evaluation.evaluate [--url http://127.0.0.1:8080] [--sets mnist_png,typed,...]
                                  [--limit N] [--workers 4] [--time-limit 1800]
                                  [--out docs/EVALUATION.md] [--figures docs/evaluation]
    python -m evaluation.evaluate --smoke      # 20 pictures a set, into results/evaluate-smoke/

Each picture is one POST of its bytes to /predictions/<model> of a server on this machine
(evaluation/client.py); an error answer counts as wrong. Writes, per model and set, the accuracy
and a confusion matrix, per model a picture of its most confident mistakes beside the canonical
image the model saw and a reliability diagram with each set's expected calibration error
(evaluation/figures.py), and the report, with the typed digits broken down per
font family (evaluation/report.py). Targets are printed and recorded as met / not met; the exit
status is 0 when the run completed (--strict: 1 when a target is not met).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path

from evaluation import sets as eval_sets
from evaluation.client import Outcome, ServerDown, check_server, check_url, default_url, run_model
from evaluation.figures import plot_confusion, plot_mistakes, plot_reliability
from evaluation.report import pct, write_report

SMOKE_LIMIT = 20


def evaluate(url: str, set_names, models=None, limit=None, seed=eval_sets.SEED, workers=4, timeout=30.0,
             time_limit=1800.0, out=Path("docs/EVALUATION.md"), figures=Path("docs/evaluation"), command="",
             progress=True) -> list[Outcome]:
    url = check_url(url)
    check_server(url)
    started = dt.datetime.now()
    t0 = time.monotonic()
    deadline = t0 + time_limit
    figures.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    sets_by_name: dict = {}
    figure_files: dict = {}
    for name in set_names:
        spec = eval_sets.SPECS[name]
        wanted = [m for m in spec.models if models is None or m in models]
        if not wanted:
            continue
        print(f"building {name} ({spec.kind}) ...", flush=True)
        evalset = eval_sets.build(name, limit=limit, seed=seed, progress=progress)
        sets_by_name[name] = evalset
        for model in wanted:
            outcome = run_model(url, model, evalset, workers, timeout, deadline, progress)
            if outcome.errors and outcome.correct == 0 and sum(outcome.errors.values()) == outcome.sent:
                print(f"warning: every answer from {model} was an error: {dict(outcome.errors)}", file=sys.stderr)
            outcomes.append(outcome)
            met = "met" if outcome.accuracy >= spec.targets[model] else "NOT met"
            errors = f"  errors {dict(outcome.errors)}" if outcome.errors else ""
            print(f"  {model:12s} {name:12s} {outcome.correct:5d}/{outcome.sent:<5d} {pct(outcome.accuracy):>7s}"
                  f"  target {spec.targets[model]:.1%}: {met}{errors}", flush=True)
            path = figures / f"confusion-{name}-{model}.png"
            plot_confusion(outcome, path)
            figure_files[(name, model)] = path
    for model in dict.fromkeys(o.model for o in outcomes):
        path = figures / f"mistakes-{model}.png"
        plot_mistakes(model, [o for o in outcomes if o.model == model], sets_by_name, path)
        figure_files[("mistakes", model)] = path
        path = figures / f"reliability-{model}.png"
        plot_reliability(model, [o for o in outcomes if o.model == model], path)
        figure_files[("reliability", model)] = path
    seconds = time.monotonic() - t0
    write_report(out, figures, outcomes, sets_by_name, url, command, started, seconds, seed, limit, figure_files)
    summary = [{"model": o.model, "set": o.set_name, "images": o.sent, "correct": o.correct,
                "accuracy": o.accuracy, "target": eval_sets.SPECS[o.set_name].targets[o.model],
                "met": bool(o.accuracy >= eval_sets.SPECS[o.set_name].targets[o.model]), "errors": dict(o.errors),
                "not_sent": o.not_sent} for o in outcomes]
    (figures / "results.json").write_text(json.dumps({"date": started.isoformat(timespec="seconds"), "url": url,
                                                      "seed": seed, "limit": limit, "results": summary},
                                                     indent=2) + "\n")
    print(f"wrote {out} and {len(figure_files)} figures in {figures} ({seconds:.0f} s)")
    return outcomes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="the server's inference URL (default: make serve's, "
                        "http://127.0.0.1:INFERENCE_PORT)")
    parser.add_argument("--sets", default=",".join(eval_sets.SET_NAMES),
                        help=f"comma-separated, of: {', '.join(eval_sets.SET_NAMES)}")
    parser.add_argument("--models", default=None, help="comma-separated; default every model a set applies to")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most this many pictures a set, an even share of every label")
    parser.add_argument("--seed", type=int, default=eval_sets.SEED)
    parser.add_argument("--workers", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--time-limit", type=float, default=1800.0, help="seconds for the whole run")
    parser.add_argument("--out", type=Path, default=None, help="the report (default docs/EVALUATION.md)")
    parser.add_argument("--figures", type=Path, default=None, help="its figures (default docs/evaluation)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"{SMOKE_LIMIT} pictures a set into results/evaluate-smoke/ (seconds long)")
    parser.add_argument("--command", default=None, help="the command to record in the report")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.limit = args.limit or SMOKE_LIMIT
        args.out = args.out or Path("results/evaluate-smoke/EVALUATION.md")
        args.figures = args.figures or args.out.parent / "figures"
    args.out = args.out or Path("docs/EVALUATION.md")
    args.figures = args.figures or Path("docs/evaluation")
    set_names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in set_names if s not in eval_sets.SPECS]
    if unknown:
        parser.error(f"unknown set(s) {unknown}; known: {', '.join(eval_sets.SET_NAMES)}")
    command = args.command or "python -m evaluation.evaluate " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:]))
    try:
        outcomes = evaluate(args.url or default_url(), set_names,
                            models=args.models.split(",") if args.models else None, limit=args.limit,
                            seed=args.seed, workers=args.workers, timeout=args.timeout, time_limit=args.time_limit,
                            out=args.out, figures=args.figures, command=command, progress=not args.no_progress)
    except (ServerDown, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    missed = [o for o in outcomes if not o.accuracy >= eval_sets.SPECS[o.set_name].targets[o.model]]
    if missed:
        print("targets not met: " + ", ".join(f"{o.model} on {o.set_name} ({pct(o.accuracy)} < "
                                               f"{eval_sets.SPECS[o.set_name].targets[o.model]:.1%})" for o in missed))
    else:
        print("every target met")
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
