"""The command line, mirroring the library: `python -m loop COMMAND --help` for each command.

    python -m loop create birds --folder ~/photos/birds          # one sub-folder per class
    python -m loop create shelf --folder ~/shelf --classes a,b,c # a flat folder, unlabeled
    python -m loop queue birds -n 10
    python -m loop token create ana --role annotator        # prints ana's token once
    python -m loop label birds --token TOKEN 17=robin 18=wren
    python -m loop retrain birds
    python -m loop embed birds --engine ray                    # or --folder DIR; resumable
    python -m loop auto-accept birds --precision 0.95          # preview; --now, --on, --off, --undo
    python -m loop review birds --token TOKEN                  # labels that are probably wrong
    python -m loop review birds 17 --class wren --token TOKEN  # or --keep, --flag, --send-to ana
    python -m loop settings birds --set overlap_share=0.1
    python -m loop export birds --format csv --out birds.csv
    python -m loop replay --dataset demo --strategy margin --labeler perfect --budget 200 --out runs/a
    python -m loop study --dataset demo --fractions 0.05,0.1,0.25,0.5 --repeats 5 --target 0.9
    python -m loop backtest-forecast --source lcdb --json     # or --source DIR of replays
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _progress(description: str):
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=description, unit="img")
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def _settings(args):
    from loop.settings import Settings

    values = {k: v for k, v in {
        "backbone": args.backbone, "seeds_per_class": args.seeds_per_class,
        "strategy": args.strategy, "holdout_size": args.holdout_size, "seed": args.seed,
    }.items() if v is not None}
    return Settings(**values)


def cmd_create(args) -> int:
    from loop.project import Paths, create_project
    from loop.store import Store

    paths = Paths(Path(args.data))
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    project = create_project(Store(paths.database), args.name, args.folder, paths,
                             class_names=classes, settings=_settings(args),
                             on_progress=_progress("embedding"))
    _print_status(project.status())
    return 0


def cmd_demo(args) -> int:
    from loop.project import Paths, open_or_create_dataset_project

    project = open_or_create_dataset_project(args.dataset, Paths(Path(args.data)), name=args.name,
                                             on_progress=_progress("embedding"))
    _print_status(project.status())
    return 0


def _open(args):
    from loop.project import Project

    return Project.open(args.name, args.data)


def _print_status(status: dict) -> None:
    skipped = status.pop("skipped")
    duplicates = status.pop("duplicates")
    conflicts = status.pop("conflicts", [])
    for key, value in status.items():
        print(f"{key:>16}: {', '.join(value) if isinstance(value, list) else value}")
    if skipped:
        print(f"{'skipped':>16}: {len(skipped)} file(s)")
        for path, reason in skipped:
            print(f"{'':>18}{path}: {reason}")
    if duplicates:
        print(f"{'duplicates':>16}: {sum(len(g) for g in duplicates)} files are copies of another "
              f"({len(duplicates)} group(s); kept, each group in one split)")
        for group in duplicates:
            print(f"{'':>18}{' = '.join(group)}")
    if conflicts:
        print(f"{'conflicts':>16}: {len(conflicts)} image(s) have copies in different class folders "
              "(kept out of the hold-out: their truth is ambiguous)")
        for line in conflicts:
            print(f"{'':>18}{line}")


def cmd_status(args) -> int:
    _print_status(_open(args).status())
    return 0


def cmd_queue(args) -> int:
    from loop.queue import next_queries

    for q in next_queries(_open(args), args.n):
        suggestion = f"{q.suggestion} ({q.confidence:.2f}, model v{q.model_version})" if q.suggestion else "-"
        print(f"{q.image_id:>7}  {q.split:<8} {q.path:<40} {suggestion}")
    return 0


def _person(args, action: str):
    """The person the command acts as, from --token or $JUICER_TOKEN, allowed `action`."""
    from loop.people import authenticate, require
    from loop.project import Paths
    from loop.store import Store

    token = args.token or os.environ.get("JUICER_TOKEN")
    if not token:
        raise PermissionError("give your token with --token or $JUICER_TOKEN (a lead makes one: "
                              "python -m loop token create NAME --role annotator)")
    person = authenticate(Store(Paths(Path(args.data)).database), token)
    if person is None:
        raise PermissionError("that token is not valid (wrong, or revoked)")
    return require(person, action)


def cmd_label(args) -> int:
    from loop.session import LabelingSession

    person = _person(args, "label")
    project = _open(args)
    labels = []
    for pair in args.labels:
        image_id, sep, cls = pair.partition("=")
        if not sep or not image_id.strip().isdigit():
            raise ValueError(f"'{pair}' is not IMAGE_ID=CLASS")
        labels.append((int(image_id), cls or None))
    result = LabelingSession(project, person.name).label_batch(labels)
    print(f"stored {len(result['labeled'])} label(s) by {person.name}"
          + (f", retracted {len(result['retracted'])}" if result["retracted"] else ""))
    for image_id in result["conflicts"]:
        print(f"  image {image_id}: kept as a conflict for the lead (someone else's label is in force)")
    for image_id, reason in result["refused"].items():
        print(f"  image {image_id}: refused: {reason}")
    return 0 if not result["refused"] else 1


def cmd_token(args) -> int:
    from loop import people
    from loop.project import Paths
    from loop.store import Store

    store = Store(Paths(Path(args.data)).database)
    if args.action == "create":
        if not args.name or not args.role:
            raise ValueError("token create NAME --role lead|annotator")
        token = people.create_token(store, args.name, args.role)
        print(f"token for {args.name} ({args.role}), shown this once; keep it secret:\n{token}")
    elif args.action == "revoke":
        if not args.name:
            raise ValueError("token revoke NAME")
        people.revoke(store, args.name)
        print(f"revoked {args.name}'s token")
    else:
        for p in store.people():
            state = "revoked" if p["revoked_at"] else "active"
            print(f"{p['name']:<24} {p['role']:<10} {state}")
    return 0


def cmd_conflicts(args) -> int:
    person = _person(args, "resolve")
    project = _open(args)
    store = project.store
    names = {c["id"]: c["name"] for c in project.class_rows}
    if args.image is None:
        rows = store.conflicts(project.id)
        if not rows:
            print("no open conflicts")
        events = store.latest_events(project.id)
        for c in rows:
            force = events.get(c["image_id"])
            label = (f"{names.get(force['class_id'], '-')} by {force['annotator']}" if force else "none")
            print(f"image {c['image_id']:>6}: {c['annotator']} said {names.get(c['class_id'], '-')}; "
                  f"in force: {label}; {c['reason']}")
        return 0
    if args.send_to:
        from loop.people import check_person_name

        store.assign(project.id, args.image, check_person_name(args.send_to), by=person.name)
        print(f"image {args.image} sent to {args.send_to} for a third opinion")
    elif args.keep:
        store.resolve_conflict(project.id, args.image, person.name, None, keep=True)
        print(f"image {args.image}: kept the label in force")
    elif args.set_class:
        store.resolve_conflict(project.id, args.image, person.name,
                               store.class_id(project.id, args.set_class))
        print(f"image {args.image}: labeled {args.set_class} by {person.name} (review)")
    else:
        raise ValueError("say how to resolve it: --keep, --class CLASS or --send-to PERSON")
    return 0


def cmd_review(args) -> int:
    from loop import suspects

    person = _person(args, "review")
    project = _open(args)
    store = project.store
    if args.image is None:
        if args.judge or suspects.behind(project):
            suspects.judge(project)      # the trainer does this after each retrain; now, if behind
        lead = person.can("resolve")
        rows = suspects.review_queue(project, reviewer=None if lead else person.name, limit=args.n)
        judged = store.suspects_version(project.id)
        print(f"suspected label errors, judged after model version {judged}: {len(rows)} open"
              + ("" if lead else f" sent to {person.name}"))
        for r in rows:
            print(f"image {r['image_id']:>6}@{r['event_id']:<6} {r['split']:<8} {r['path']:<36} "
                  f"{r['given']} ({r['p_given']:.0%}) by {r['annotator']}; model: {r['predicted']} "
                  f"({r['p_predicted']:.0%})" + (f"; sent to {r['assigned_to']}" if r["assigned_to"] else ""))
        if lead:
            for r in suspects.suspicion_by_annotator(project):
                rate = "-" if r["suspected_rate"] is None else f"{r['suspected_rate']:.1%}"
                print(f"{r['annotator']:>20}: {r['suspected']} of {r['judged']} labels suspected ({rate}); "
                      f"{r['corrected']} of {r['reviewed']} reviewed were corrected")
        return 0
    image, _, seen = args.image.partition("@")
    if not image.isdigit() or (seen and not seen.isdigit()):
        raise ValueError(f"'{args.image}' is not IMAGE or IMAGE@EVENT (as the listing prints them)")
    event_id = int(seen) if seen else None
    if args.send_to:
        from loop.people import check_person_name

        _person(args, "resolve")    # sending work to people is the lead's
        store.assign_review(project.id, int(image), check_person_name(args.send_to), by=person.name)
        print(f"image {image} sent to {args.send_to} to review")
        return 0
    chosen = [k for k in ("keep", "set_class", "flag") if getattr(args, k)]
    if len(chosen) != 1:
        raise ValueError("say one decision: --keep, --class CLASS, --flag (or --send-to PERSON)")
    decision = {"keep": "kept", "set_class": "changed", "flag": "flagged"}[chosen[0]]
    row = suspects.review(project, int(image), person.name, decision, args.set_class, event_id)
    said = {"kept": "kept its label", "changed": f"labeled {args.set_class} (a review event)",
            "flagged": "label withdrawn and the image flagged for the lead"}[row["decision"]]
    print(f"image {image}: {said}" + (f"; {len(row['rescored'])} stored evaluation(s) of the "
                                      "hold-out re-scored" if row["rescored"] else ""))
    return 0


def cmd_backup(args) -> int:
    from loop.project import Paths
    from loop.store import Store

    store = Store(Paths(Path(args.data)).database)
    if args.command == "backup":
        print(f"backed up {store.path} to {store.backup(args.file)}")
    else:
        store.restore(args.file)
        print(f"restored {store.path} from {args.file}; restart the app to see it everywhere")
    return 0


def cmd_embed(args) -> int:
    import importlib.util

    from loop.ray_embed import embed_folder, embed_project

    if bool(args.name) == bool(args.folder):
        raise ValueError("give a project NAME or --folder DIR (not both)")
    if args.engine == "ray" and importlib.util.find_spec("ray") is None:   # before any work
        raise ValueError("--engine ray needs Ray Data: pip install 'ray[data]==2.60.0', "
                         "or use --engine local")
    options = {"engine": args.engine, "actors": args.actors, "address": args.address,
               "on_progress": _progress("embedding")}
    if args.name:
        summary = embed_project(_open(args), args.backbone, **options)
    else:
        from loop.embeddings import EmbeddingCache
        from loop.project import Paths
        from loop.settings import Settings
        from models.backbones import DEFAULT_BACKBONE

        backbone, limits = args.backbone or DEFAULT_BACKBONE, Settings()
        summary = embed_folder(args.folder, EmbeddingCache(Paths(Path(args.data)).cache, backbone),
                               backbone, max_pixels=int(limits.max_megapixels * 1e6),
                               max_bytes=int(limits.max_file_mb * 2**20), **options)
    rate = summary["embedded"] / summary["seconds"] if summary["embedded"] else 0
    print(f"{summary['images']:,} images: {summary['cached']:,} cached already, "
          f"{summary['embedded']:,} embedded in {summary['seconds']:.1f} s ({rate:.1f} images/s, "
          f"engine {summary['engine']}), {len(summary['skipped']):,} skipped")
    for path, reason in summary["skipped"]:
        print(f"  {path}: {reason}")
    return 0


def cmd_retrain(args) -> int:
    project = _open(args)
    version = project.retrain(force=args.force)
    if version is None:
        latest = project.store.latest_model_version(project.id)
        if latest is not None and latest["last_event_id"] >= project.store.last_event_id(project.id):
            print(f"not trained: model v{latest['version']} already has every label (--force to "
                  "train again anyway)")
        elif not project.store.acquire_training(project.id, "cli-probe", seconds=0.001):
            print("not trained: another process is training this project now")
        else:
            print("not trained: fewer than 2 classes have training labels yet")
        return 1
    evaluation = version["evaluation"]
    print(f"model v{version['version']}: {version['n_labels']} labels, "
          f"trained in {version['train_seconds']:.3f} s")
    if evaluation:
        print(f"hold-out ({evaluation['n_holdout']} images): accuracy {evaluation['accuracy']:.3f}, "
              f"balanced {evaluation['balanced_accuracy']:.3f}, ECE {evaluation['ece']:.3f}")
        _print_rules(evaluation["rules"])
    return 0


def _print_tuning(row: dict) -> None:
    before, after = row["holdout_before"], row["holdout_after"]
    scores = ("" if before is None or after is None else
              f"; hold-out {after:.3f} on it against {before:.3f} ({row['n_holdout']} images)")
    seconds = (row["tune_seconds"] or 0) + (row["embed_seconds"] or 0)
    print(f"{row['key']}: {row['status']}, top from block {row['start_block']} trained on "
          f"{row['n_labels'] or 0:,} labels, {row['embedded'] or 0:,} of {row['total'] or 0:,} images "
          f"embedded, {seconds:.0f} s{scores}" + (f"; {row['message']}" if row["message"] else ""))


def cmd_fine_tune(args) -> int:
    from loop import tuning

    project = _open(args)
    if args.list:
        for row in project.store.backbone_versions(project.id):
            _print_tuning(row)
        print(f"heads train on: {project.features_key}")
        return 0
    if args.revert:
        row = tuning.revert(project)
        if row is None:
            print(f"nothing to revert: heads train on {project.features_key}")
            return 1
        print(f"{row['key']} retired; heads train on {project.features_key} from the next retrain")
        return 0
    job = tuning.running_job(project)
    if job is None or not tuning.abandoned(job):     # an abandoned job is resumed, offered or not
        ok, why = tuning.offered(project)
        if not ok and not args.anyway:
            print(f"fine-tuning is not offered: {why} (--anyway runs it)")
            return 1
    shown = {}

    def progress(stage: str, done: int, total: int) -> None:
        step = max(1, total // 10)
        if done == total or done // step != shown.get(stage, -1):
            shown[stage] = done // step
            print(f"{stage}: {done:,} of {total:,}", file=sys.stderr, flush=True)

    row = tuning.run(project, args.from_block, args.adopt, head_epochs=args.head_epochs,
                     epochs=args.epochs, on_progress=progress)
    _print_tuning(row)
    print(f"heads train on: {project.features_key}")
    return 0


def _print_rules(rules: list[dict]) -> None:
    print(f"{'rule':>8} {'coverage':>9} {'accuracy':>9} {'errors/100':>11}")
    for r in rules:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        err = "-" if r["errors_per_100"] is None else f"{r['errors_per_100']:.1f}"
        print(f"{r['rule']:>8} {r['coverage']:>9.3f} {acc:>9} {err:>11}")


def cmd_curve(args) -> int:
    from loop.curve import curve_rows, forecast_curve, read_curve, target_answer
    from loop.replay import write_curve

    if not 0 < args.target <= 1:
        raise ValueError(f"--target is an accuracy share in (0, 1], e.g. 0.9; got {args.target}")
    project = _open(args)
    rows = curve_rows(project)
    csv_path, png_path = write_curve(rows, Path(args.out), project.name)
    print(f"wrote {csv_path} and {png_path}")
    forecast = forecast_curve(project)
    if forecast is None:
        print("forecast: needs hold-out scores at 3 or more labeled counts")
    else:
        mean, low, high = forecast.predict(2 * rows[-1]["labels"])
        print(f"hold-out accuracy {rows[-1]['accuracy']:.1%} with {rows[-1]['labels']} labels; "
              f"forecast at {2 * rows[-1]['labels']} labels: {mean:.1%} (80% interval {low:.1%} "
              f"to {high:.1%})")
    data = read_curve(project)
    if data.evaluations:
        answer = target_answer(forecast, data.evaluations[-1], args.target, data.pool_size,
                               evaluations=data.evaluations)
        print(f"forecast: {answer.sentence}" + (f" ({answer.pool_note})" if answer.pool_note else ""))
    return 0


def cmd_replay(args) -> int:
    from loop.replay import replay

    rows = replay(args.dataset, args.out, strategy=args.strategy, labeler=args.labeler,
                  seed_per_class=args.seed_per_class, batch=args.batch, budget=args.budget,
                  seed=args.seed, data_dir=args.data, backbone=args.backbone,
                  holdout_size=args.holdout_size, on_progress=_progress("embedding"),
                  auto_accept=args.auto_accept, seed_picker=args.seeds,
                  review_every=args.review_every, review_size=args.review_size)
    if rows:
        first, last = rows[0], rows[-1]
        print(f"hold-out accuracy {first['accuracy']:.3f} at {first['labels']} labels -> "
              f"{last['accuracy']:.3f} at {last['labels']} labels")
    print(f"wrote {Path(args.out) / 'curve.csv'} and {Path(args.out) / 'curve.png'}")
    return 0


def cmd_benchmark_strategies(args) -> int:
    import shlex

    from loop.benchmark import (
        benchmark_strategies,
        dataset_label,
        plot,
        print_table,
        write_json,
    )

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if "random" not in strategies:
        strategies.insert(0, "random")   # every ratio is against random, measured in the same run
    out = Path(args.out)
    results = benchmark_strategies(args.dataset, strategies, args.repeats, args.budget, args.batch,
                                   out, data_dir=args.data, labelers=tuple(args.labelers.split(",")),
                                   auto_accept=args.auto_accept, metric=args.metric,
                                   seed_picker=args.seeds)
    print_table(results, args.dataset, args.budget)
    suffix = "" if args.metric == "accuracy" else f"-{args.metric}"
    png = plot(results, args.dataset, out / f"strategies-{dataset_label(args.dataset)}{suffix}.png")
    print(f"curves with their spread: {png}")
    if args.json:
        path = Path("bench/results/strategies.json")
        write_json(results, args.dataset, path, command="python3 -m loop " + " ".join(
            shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None)
        print(f"wrote {path}")
    return 0


def cmd_benchmark_noise(args) -> int:
    import json
    import shlex

    from loop.benchmark import dataset_label
    from loop.noise import benchmark_noise, print_table, write_json

    result = benchmark_noise(args.dataset, args.noise, args.repeats, args.budget, args.batch,
                             Path(args.out) / dataset_label(args.dataset), data_dir=args.data,
                             review_every=args.review_every, review_size=args.review_size)
    print_table(result, args.dataset)
    path = Path("bench/results/noise.json")
    write_json(result, args.dataset, path, "python3 -m loop " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]))
    print(f"wrote {path}")
    if args.json:
        keys = ("precision_at_5pct", "recall_at_5pct", "labels_to_95", "runs_reaching_95",
                "full_accuracy", "budget", "runs")
        print(json.dumps({dataset_label(args.dataset): {k: result[k] for k in keys}}))
    return 0


def cmd_study(args) -> int:
    import json

    from loop.project import Paths, ProjectError, open_or_create_dataset_project
    from loop.study import (
        open_study_project,
        parse_fractions,
        report,
        run_study,
        write_outputs,
    )

    fractions = parse_fractions(args.fractions)   # a bad list fails before any work
    try:
        project = open_study_project(args.dataset, args.data, on_progress=_progress("embedding"))
    except ProjectError as exc:
        if not Path(args.dataset).expanduser().is_dir():   # a labeled folder, as `replay` takes
            raise ProjectError(f"{exc}, nor a folder with one sub-folder per class") from None
        project = open_or_create_dataset_project(args.dataset, Paths(Path(args.data)),
                                                 on_progress=_progress("embedding"))
    if args.compare_backbones:
        from loop.study import compare_backbones, comparison_report

        names = None
        if args.compare_backbones != "embedded":
            names = [n.strip() for n in args.compare_backbones.split(",") if n.strip()]
            for name in names:
                project.embed(_progress(f"embedding with {name}"), backbone=name)
        results = compare_backbones(project, args.target, names, fractions, args.repeats, args.seed,
                                    pool=args.pool, repeats_full=args.repeats_full)
        print(comparison_report(results))
        if args.json:
            print(json.dumps({r.backbone: r.figures() for r in results}))
        return 0
    result = run_study(project, fractions, args.repeats, args.target, args.seed,
                       repeats_full=args.repeats_full, pool=args.pool)
    print(report(result))
    if args.out:
        csv_path, png_path = write_outputs(result, args.out)
        print(f"wrote {csv_path} and {png_path}")
    if args.json:
        print(json.dumps(result.figures()))
    return 0


def cmd_backtest_forecast(args) -> int:
    from loop import backtest

    if args.calibrate_on and args.source == "lcdb":
        raise ValueError("--calibrate-on learns the intervals of the product's curve kinds: use it "
                         "with --source DIR (a folder of replays)")
    if args.learn:
        if args.n0:
            raise ValueError("--learn learns at N0 = 64, 128 and 256: leave out --n0")
        if args.calibrate_on:
            raise ValueError("--learn learns on --source itself: leave out --calibrate-on")
        if args.source == "lcdb":
            backtest.learn_shipped_priors(max_curves=args.max_curves, n_boot=args.n_boot)
        else:
            backtest.learn_kind_priors(args.source, n_boot=args.n_boot)
        return 0
    backtest.run(args.source, as_json=args.json, max_curves=args.max_curves, n_boot=args.n_boot,
                 holdout_size=args.holdout_size, n_classes=args.classes,
                 n0s=args.n0 or backtest.N0S, calibrate_on=args.calibrate_on)
    return 0


# -- what a lead does on the Rules and Project pages, from a shell (server administration: no
#    token, like retrain and backup) ---------------------------------------------------------------

def cmd_auto_accept(args) -> int:
    from loop import autoaccept

    project = _open(args)
    actions = [a for a in ("now", "on", "off", "undo") if getattr(args, a)]
    if len(actions) > 1:
        raise ValueError(f"choose one of --now, --on, --off, --undo (got {', '.join(actions)})")
    action = actions[0] if actions else "preview"
    if action in ("preview", "now", "on"):
        if args.precision is None:
            raise ValueError(f"--precision P is needed to {'preview' if action == 'preview' else 'auto-accept'}"
                             " (a share, for example 0.95)")
        if not 0.5 <= args.precision < 1:
            raise ValueError(f"--precision is a share in [0.5, 1), for example 0.95; got {args.precision}")
    if action == "off":
        project.update_settings(auto_accept_precision=None)
        print("auto-accept is off: it no longer runs after each retrain")
    elif action == "undo":
        print(f"retracted {autoaccept.undo(project):,} auto-accepted label(s) (new events; people's "
              "labels untouched)")
    else:
        preview = autoaccept.preview(project, args.precision, project.settings.audit_share)
        print(autoaccept.describe_preview(preview))
        if action != "preview":
            if preview["threshold"] is None and not preview["would_audit"] and action == "now":
                return 1                              # nothing to label and nothing to audit
            if autoaccept.needs_confirmation(preview["would_accept"]) and not args.yes:
                print(f"not done: this would label {preview['would_accept']:,} image(s) with no person "
                      f"looking at them (more than {autoaccept.CONFIRM_ABOVE}); run again with --yes")
                return 1
            if action == "on":
                project.update_settings(auto_accept_precision=args.precision)
            result = autoaccept.run(project, args.precision, project.settings.audit_share)
            print(f"accepted {result['accepted']:,} image(s), sent {result['audited']:,} to people as "
                  "an audit" + (f"; it runs again after every retrain at {args.precision:.1%}"
                                if action == "on" else ""))
    print(autoaccept.describe_state(project))
    return 0


def cmd_settings(args) -> int:
    from loop.settings import parse_change

    project = _open(args)
    if args.set:
        changes = dict(parse_change(text) for text in args.set)   # all checked before any is stored
        before = project.settings.flat()
        after = project.update_settings(changes).flat()
        for name in changes:
            print(f"{name}: {before[name]} -> {after[name]}")
        return 0
    from loop.settings import FIXED_AT_CREATION

    for name, value in project.settings.flat().items():
        print(f"{name:>22} = {value}" + ("   (fixed at creation)" if name in FIXED_AT_CREATION else ""))
    return 0


# -- import roots and export: this shell is trusted with any path, a browser is not -----------

def cmd_roots(args) -> int:
    from loop.paths import default_import_roots
    from loop.project import Paths
    from loop.store import Store

    store = Store(Paths(Path(args.data)).database)
    defaults = default_import_roots(Path(args.data))
    if args.action == "list":
        for root in defaults:
            print(f"{root}  (default)")
        for root in store.import_roots():
            print(root)
        return 0
    path = Path(args.path).expanduser()
    if args.action == "add":
        if not path.exists():
            raise ValueError(f"folder '{path}' does not exist; give an existing folder")
        if not path.is_dir():
            raise ValueError(f"'{path}' is a file; give the folder to import from")
        store.add_import_root(str(path.resolve()))
        print(f"added {path.resolve()}: the browser may now import folders under it")
        return 0
    if path.resolve() in defaults:
        raise ValueError(f"'{path.resolve()}' is a default import root; it cannot be removed")
    if not (store.remove_import_root(str(path.resolve())) or store.remove_import_root(str(path))):
        known = ", ".join(store.import_roots()) or "none added"
        raise ValueError(f"'{path}' is not an added import root (added: {known})")
    print(f"removed {path.resolve()}")
    return 0


def cmd_export(args) -> int:
    from loop.export import to_csv, to_image_folder, to_json

    project = _open(args)
    out = Path(args.out).expanduser() if args.out else None
    if args.format == "imagefolder":
        if out is None:
            raise ValueError("--format imagefolder needs --out FOLDER (a new or empty folder)")
        count = to_image_folder(project, out, on_skip=lambda path, reason: print(
            f"skipped {reason}", file=sys.stderr))
        print(f"copied {count} images to {out}")
        return 0
    text = to_csv(project) if args.format == "csv" else to_json(project)
    if out is None:
        sys.stdout.write(text)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(out, "x", encoding="utf-8", newline="") as f:   # "x": never overwrite
            f.write(text)
    except FileExistsError:
        raise ValueError(f"'{out}' exists already; choose a new file") from None
    print(f"wrote {out}")
    return 0


def add_path_commands(sub) -> None:
    p = sub.add_parser("roots", help="the folders a browser may import from: add, list, remove")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="the import roots (defaults: <data>/imports, <data>/datasets)")
    for action, text in (("add", "let the browser import folders under PATH"),
                         ("remove", "stop the browser importing under PATH")):
        a = actions.add_parser(action, help=text)
        a.add_argument("path", metavar="PATH")
    p.set_defaults(run=cmd_roots)

    p = sub.add_parser("export", help="a project's labels as CSV or JSON, or its images as an "
                       "ImageFolder tree (one sub-folder per class)")
    p.add_argument("name")
    p.add_argument("--format", choices=("csv", "json", "imagefolder"), required=True)
    p.add_argument("--out", help="file for csv/json (default: stdout); new or empty folder for "
                   "imagefolder. Never overwritten")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("auto-accept", help="preview auto-accept at a promised precision (kept by "
                       "audits of the pool: a 95%% lower bound on their precision must meet it), run it "
                       "now, turn it on (after every retrain) or off, or undo it; as on the Rules page")
    p.add_argument("name")
    p.add_argument("--precision", type=float, help="the precision to promise, a share (e.g. 0.95)")
    for flag, text in (("--now", "auto-accept once, now (or first send people an audit)"),
                       ("--on", "turn it on: now, and after every retrain"),
                       ("--off", "turn it off"),
                       ("--undo", "retract every auto-accepted label in force")):
        p.add_argument(flag, action="store_true", help=text)
    p.add_argument("--yes", action="store_true", help="label more than 50 images without asking")
    p.set_defaults(run=cmd_auto_accept)

    p = sub.add_parser("settings", help="print a project's settings, or change some (checked "
                       "like the Project page's)")
    p.add_argument("name")
    p.add_argument("--set", nargs="+", metavar="NAME=VALUE",
                   help="e.g. overlap_share=0.1 head.dropout=0.2 auto_accept_precision=off")
    p.set_defaults(run=cmd_settings)


def cmd_benchmark_heads(args) -> int:
    from loop.headbench import benchmark_heads, json_line, print_report

    results = benchmark_heads([d for d in args.datasets.split(",") if d], args.repeats,
                              heads=args.heads and args.heads.split(","),
                              features=[f for f in args.features.split(",") if f],
                              data_dir=args.data, timing_dataset=args.timing_dataset,
                              timing_repeats=args.timing_repeats,
                              log=lambda line: print(line, file=sys.stderr))
    print_report(results)
    if args.json:
        print(json_line(results))
    return 0


def cmd_benchmark_adapt(args) -> int:
    from loop.adapt import benchmark_adapt, json_line, print_report

    results = benchmark_adapt([d for d in args.datasets.split(",") if d], args.repeats,
                              views=args.views, start_block=args.start_block, data_dir=args.data,
                              log=lambda line: print(line, file=sys.stderr))
    print_report(results)
    if args.json:
        print(json_line(results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("JUICER_DATA", "data"),
                        help="data root: database, caches, head weights (default: data)")
    sub = parser.add_subparsers(dest="command", required=True)

    def project_options(p):
        p.add_argument("--backbone")
        p.add_argument("--seeds-per-class", type=int)
        p.add_argument("--strategy")
        p.add_argument("--holdout-size", type=int)
        p.add_argument("--seed", type=int)

    p = sub.add_parser("create", help="create a project from an image folder")
    p.add_argument("name")
    p.add_argument("--folder", required=True, help="one sub-folder per class, or flat with --classes")
    p.add_argument("--classes", help="comma-separated class names, for a flat unlabeled folder")
    project_options(p)
    p.set_defaults(run=cmd_create)

    p = sub.add_parser("demo", help="create or open the project of a bundled dataset")
    p.add_argument("--dataset", default="demo")
    p.add_argument("--name", default="demo")
    p.set_defaults(run=cmd_demo)

    p = sub.add_parser("status", help="counts, skipped files, latest accuracy")
    p.add_argument("name")
    p.set_defaults(run=cmd_status)

    p = sub.add_parser("embed", help="embed a project's images (or a folder's) into the cache, on "
                       "this process or on a Ray cluster; resumes where a stopped run left off")
    p.add_argument("name", nargs="?", help="the project (or give --folder)")
    p.add_argument("--folder", help="a folder of images to embed, sub-folders too, without a project")
    p.add_argument("--backbone", help="a registered backbone or feature option (default: the "
                   "project's, or efficientnet-lite0)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: Ray Data, backbone actors on GPUs "
                   "where the cluster has them (pip install 'ray[data]')")
    p.add_argument("--actors", type=int, help="backbone actors (default: one per GPU, or one per "
                   "8 CPUs)")
    p.add_argument("--address", help="a Ray cluster to join ('auto': this machine's); default: "
                   "start a local Ray instance on every core")
    p.set_defaults(run=cmd_embed)

    p = sub.add_parser("retrain", help="train a new head now and score it")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="train even if no label is new")
    p.set_defaults(run=cmd_retrain)

    p = sub.add_parser("fine-tune", help="fine-tune the backbone's top on the project's labels, "
                       "re-embed every image, and adopt it if a head on it scores better on the hold-out")
    p.add_argument("name")
    p.add_argument("--from-block", type=int, default=15, help="the first block to train (Lite0: 1-15; "
                   "default 15, its last)")
    p.add_argument("--adopt", choices=("if-better", "always", "never"), default="if-better")
    p.add_argument("--head-epochs", type=int, default=100, help="epochs of the classifier alone first")
    p.add_argument("--epochs", type=int, default=20, help="epochs of the top and classifier together")
    p.add_argument("--anyway", action="store_true", help="run where it is not offered (a large "
                   "project on a CPU)")
    p.add_argument("--list", action="store_true", help="the fine-tuning jobs and what heads train on")
    p.add_argument("--revert", action="store_true", help="go back to the backbone before the adopted one")
    p.set_defaults(run=cmd_fine_tune)

    p = sub.add_parser("queue", help="the next images to label, with suggestions")
    p.add_argument("name")
    p.add_argument("-n", type=int, default=10)
    p.set_defaults(run=cmd_queue)

    p = sub.add_parser("label", help="store a batch of labels (one transaction), as the person "
                       "whose token is given, under the same rules as the page")
    p.add_argument("name")
    p.add_argument("--token", help="your token (default: $JUICER_TOKEN)")
    p.add_argument("labels", nargs="+", metavar="IMAGE_ID=CLASS",
                   help="IMAGE_ID= with no class retracts your own label of that image")
    p.set_defaults(run=cmd_label)

    p = sub.add_parser("token", help="people and their tokens: create NAME --role, list, revoke NAME")
    p.add_argument("action", choices=("create", "list", "revoke"))
    p.add_argument("name", nargs="?")
    p.add_argument("--role", choices=("lead", "annotator"))
    p.set_defaults(run=cmd_token)

    p = sub.add_parser("conflicts", help="list open conflicts, or resolve one (lead token)")
    p.add_argument("name")
    p.add_argument("image", nargs="?", type=int, help="the image to resolve")
    p.add_argument("--token", help="a lead's token (default: $JUICER_TOKEN)")
    p.add_argument("--keep", action="store_true", help="keep the label in force")
    p.add_argument("--class", dest="set_class", help="label it CLASS (a review event)")
    p.add_argument("--send-to", help="ask PERSON for a third opinion")
    p.set_defaults(run=cmd_conflicts)

    p = sub.add_parser("review", help="labels that are probably wrong: list them (a lead sees all, "
                       "an annotator what was sent to them), or review one")
    p.add_argument("name")
    p.add_argument("image", nargs="?", help="IMAGE or IMAGE@EVENT (the label you saw) to review")
    p.add_argument("--token", help="your token (default: $JUICER_TOKEN)")
    p.add_argument("--keep", action="store_true", help="the label is right")
    p.add_argument("--class", dest="set_class", help="label it CLASS (a new event, source review)")
    p.add_argument("--flag", action="store_true", help="unclear or none of the classes: withdraw "
                   "the label and flag the image for the lead")
    p.add_argument("--send-to", help="(lead) send it to PERSON to review")
    p.add_argument("--judge", action="store_true", help="judge the labels now before listing")
    p.add_argument("-n", type=int, default=50, help="how many to list")
    p.set_defaults(run=cmd_review)

    for name, text in (("backup", "a consistent copy of the database, taken while people work"),
                       ("restore", "bring a backup back into the database")):
        p = sub.add_parser(name, help=text)
        p.add_argument("file")
        p.set_defaults(run=cmd_backup)

    p = sub.add_parser("curve", help="write the project's learning curve (CSV and PNG) and forecast it")
    p.add_argument("name")
    p.add_argument("--out", required=True)
    p.add_argument("--target", type=float, default=0.9,
                   help="accuracy to forecast the labels needed for, a share (default 0.9)")
    p.set_defaults(run=cmd_curve)

    p = sub.add_parser("replay", help="run the loop with a simulated labeler over a labeled dataset")
    p.add_argument("--dataset", required=True, help="demo, fashion-mnist, mnist5k (NAME:K for K "
                   "per class) or a folder with one sub-folder per class")
    p.add_argument("--strategy", default="auto")
    p.add_argument("--labeler", default="perfect", help="perfect, noisy:P or slow:SECONDS")
    p.add_argument("--seed-per-class", type=int, default=1)
    p.add_argument("--seeds", choices=["random", "cold-start"], default="random",
                   help="who picks the seed images: drawn at random per class from the folders, or "
                   "the cold-start strategy, blind to the folders (as for an unlabeled folder)")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--budget", type=int, default=100, help="simulated labels beyond the seeds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone")
    p.add_argument("--holdout-size", type=int, default=500)
    p.add_argument("--auto-accept", type=float, metavar="PRECISION",
                   help="after each retrain, auto-accept pool images at this hold-out precision")
    p.add_argument("--review-every", type=int, default=0, metavar="BATCHES",
                   help="every this many batches, judge the labels and review the top suspects "
                   "from ground truth (each review counted against the budget)")
    p.add_argument("--review-size", type=int, default=0, metavar="N", help="suspects per review")
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_replay)

    p = sub.add_parser("benchmark-noise", help="wrong labels found (precision and recall of the top "
                       "5%% suspects) and labels to 95%% with a noisy labeler: random, default, "
                       "default with review")
    p.add_argument("--dataset", required=True)
    p.add_argument("--noise", type=float, default=0.1, help="the labeler's error rate (noisy:P)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=int, default=600, help="answers per run: labels and reviews")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--review-every", type=int, default=3, metavar="BATCHES")
    p.add_argument("--review-size", type=int, default=5, metavar="N")
    p.add_argument("--out", default="bench/out/noise")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    p.set_defaults(run=cmd_benchmark_noise)

    p = sub.add_parser("benchmark-strategies", help="replays per strategy and labeler; labels saved vs random")
    p.add_argument("--dataset", required=True)
    p.add_argument("--strategies", default="random,margin,entropy,kcenter,hybrid,typiclust,switch,auto")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=int, default=300)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--labelers", default="perfect,noisy:0.1")
    p.add_argument("--out", default="bench/out/strategies")
    p.add_argument("--auto-accept", type=float, metavar="PRECISION",
                   help="also run the default strategy with auto-accept at this precision")
    p.add_argument("--seeds", choices=["random", "cold-start"], default="random",
                   help="seed images drawn at random per class, or picked by the cold-start strategy")
    p.add_argument("--metric", choices=["accuracy", "balanced"], default="accuracy",
                   help="score curves by hold-out accuracy or balanced accuracy (mean per-class recall)")
    p.add_argument("--json", action="store_true", help="also merge the figures into bench/results/strategies.json")
    p.set_defaults(run=cmd_benchmark_strategies)

    p = sub.add_parser("benchmark-heads", help="accuracy at 1, 3, 10 labels per class and with all "
                       "labels per head option, against today's head; retrain p50/p95")
    p.add_argument("--datasets", default="demo,fashion-mnist,mnist5k")
    p.add_argument("--repeats", type=int, default=5, help="random label draws per size")
    p.add_argument("--heads", help="head options to compare (default: all of loop.headbench.HEADS)")
    p.add_argument("--features", default="",
                   help="other feature options (backbone names) to try the default head on")
    p.add_argument("--timing-dataset", default="fashion-mnist:800",
                   help="real embeddings for the retrain times (a pool of 5,000 or more)")
    p.add_argument("--timing-repeats", type=int, default=20)
    p.add_argument("--data", default=argparse.SUPPRESS, help="data root (same as the global --data)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    p.set_defaults(run=cmd_benchmark_heads)

    p = sub.add_parser("benchmark-adapt", help="frozen backbone against augmented views and against "
                       "fine-tuning its top blocks: accuracy at 1, 3, 10 labels per class, AUC, retrain time")
    p.add_argument("--datasets", default="demo,fashion-mnist")
    p.add_argument("--repeats", type=int, default=3, help="random label draws per size")
    p.add_argument("--views", type=int, default=4, help="augmented views per labeled image")
    p.add_argument("--start-block", type=int, default=15, help="fine-tune from this block on")
    p.add_argument("--data", default=argparse.SUPPRESS, help="data root (same as the global --data)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    p.set_defaults(run=cmd_benchmark_adapt)

    p = sub.add_parser("study", help="train on random subsets of the labels, forecast the full pool, "
                       "then check the forecast there")
    p.add_argument("--dataset", required=True, metavar="NAME_OR_PROJECT",
                   help="a project in the data folder, demo, fashion-mnist, mnist5k (NAME:K), or a "
                   "folder with one sub-folder per class (made a project of the data folder)")
    p.add_argument("--fractions", default="0.05,0.1,0.25,0.5",
                   help="shares of the labeled pool to subsample, or 'auto' for sizes from one "
                   "label per class to half the pool")
    p.add_argument("--repeats", type=int, default=5, help="random subsets per size")
    p.add_argument("--repeats-full", type=int, default=3, help="heads trained on the full pool")
    p.add_argument("--target", type=float, default=0.9, help="accuracy to forecast labels for")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", choices=("auto", "labels", "known"), default="auto",
                   help="train on the labels people gave, or on folder classes (auto: folder "
                   "classes when every pool image has one)")
    p.add_argument("--data", default=argparse.SUPPRESS, help="data root (same as the global --data)")
    p.add_argument("--out", help="write study.csv and study.png here")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    p.add_argument("--compare-backbones", nargs="?", const="embedded", metavar="NAMES",
                   help="run the study per backbone or feature option (comma-separated names, "
                   "embedded first where needed; default: those already embedded) and say which "
                   "needs the fewest labels for the target")
    p.set_defaults(run=cmd_study)

    p = sub.add_parser("backtest-forecast",
                       help="score the learning-curve forecaster on real curves beside two baselines")
    p.add_argument("--source", required=True,
                   help="'lcdb' (the Learning Curve Database, PyPI lcdb) or a folder of replays' curve.csv")
    p.add_argument("--max-curves", type=int, default=None,
                   help="score at most this many LCDB curves, drawn with a fixed seed (default: all)")
    p.add_argument("--n-boot", type=int, default=100, help="bootstrap replicates per fit (default 100)")
    p.add_argument("--n0", type=int, nargs="+", metavar="N0",
                   help="starting points: labeled counts each curve is fitted up to, then scored at "
                   "2x, 4x and 8x (default 64 128 256)")
    p.add_argument("--holdout-size", type=int,
                   help="hold-out images of curve.csv files that have no replay database beside them")
    p.add_argument("--classes", type=int, help="class count of such curve.csv files")
    p.add_argument("--learn", action="store_true",
                   help="learn the shipped priors (loop/forecast_priors.json): with --source lcdb, "
                   "on every LCDB curve; with --source DIR, the interval of each curve kind (random "
                   "picks, a strategy's) on the replays under DIR")
    p.add_argument("--calibrate-on", metavar="DIR",
                   help="with --source DIR: learn each curve kind's interval on the replays under "
                   "this other folder (leaving out the scored curve's own source of images) instead "
                   "of using the shipped ones")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    p.set_defaults(run=cmd_backtest_forecast)
    add_path_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, KeyError, OSError) as exc:  # our errors say what is wrong and what to do
        # (PermissionError, a refused role, is an OSError)
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
