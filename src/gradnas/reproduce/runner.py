"""Run an experiment spec at a budget and write its report: the run's numbers beside the paper's.

Layout of the output folder (``--out``)::

    reproduce.json          the spec, budget and runs of this folder (a second start must match it)
    search/<run>-s<seed>/   one search run folder per run and seed (`gradnas sweep`'s runner), compare.md
    train/<run>-s<seed>/    with a ``train`` section: the search's best cell trained from scratch
    report.md, results.json the table (mean ± sd over seeds beside the paper), the paper's orderings checked

Everything resumes: run the same command again and finished runs are kept, interrupted ones continue from
their checkpoints, the report is written again from what is there.
"""
from __future__ import annotations

import copy
import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from gradnas.config import SearchConfig, load_yaml
from gradnas.errors import GradnasError
from gradnas.overrides import _assign
from gradnas.report.sweep import PlannedRun, check_existing, run_sweep
from gradnas.reproduce.measures import MEASURES
from gradnas.reproduce.spec import Spec, load_spec
from gradnas.run import CHECKPOINT_FILE, SUMMARY_FILE, write_json, write_text

logger = logging.getLogger(__name__)

PLAN_FILE, REPORT_FILE, RESULTS_FILE = "reproduce.json", "report.md", "results.json"
SEARCH_DIR, TRAIN_DIR = "search", "train"


@dataclass
class TrainPlan:
    name: str
    search: Path          # the search run whose best cell is trained
    config: dict          # resolved TrainConfig.to_dict()
    path: Path


@dataclass
class Plan:
    spec: Spec
    budget: str
    out: Path
    searches: list = field(default_factory=list)      # PlannedRun
    trains: list = field(default_factory=list)        # TrainPlan
    seeds: dict = field(default_factory=dict)         # run name -> [folder names]
    flags: str = ""                                   # the command-line form of the data and --set options


def _yaml_value(v) -> str:
    import yaml
    return yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def _apply(d: dict, settings: dict) -> None:
    for key, value in settings.items():
        _assign(d, key, copy.deepcopy(value))


def plan(spec: Spec | str, budget: str, out, *, dataset: str | None = None, data_dir: str | None = None,
         sets: dict | None = None, train_sets: dict | None = None) -> Plan:
    """Every search (and training) config of the spec at ``budget``, resolved and checked before anything
    runs. ``dataset`` / ``data_dir`` apply to the searches and the trainings, ``sets`` (dotted key -> value) to
    every search after the spec's own settings, ``train_sets`` to every training."""
    from gradnas.search.loop import check_search_config
    from gradnas.train.config import TrainConfig, load_setting

    spec = load_spec(spec) if isinstance(spec, str) else spec
    b = spec.budget(budget)
    for flag, given in (("--set", sets), ("--train-set", train_sets)):
        if given and "seed" in given:
            raise GradnasError(f"{flag} seed=...: the seeds are the budget's ({spec.name} at {budget}: "
                               f"{', '.join(map(str, b.seeds))}); write your own spec to change them")
    out = Path(out)
    data = {k: v for k, v in (("data.dataset", dataset), ("data.data_dir", data_dir)) if v is not None}
    result = Plan(spec, budget, out)
    result.flags = "".join(
        [f" --dataset {dataset}" if dataset else "", f" --data-dir {data_dir}" if data_dir else ""]
        + [f" --set {k}={_yaml_value(v)}" for k, v in (sets or {}).items()]
        + [f" --train-set {k}={_yaml_value(v)}" for k, v in (train_sets or {}).items()])
    for run, settings in spec.runs.items():
        for seed in b.seeds:
            d = load_yaml(spec.base_for(run))
            own = {k: v for k, v in settings.items() if k != "config"}
            for layer in (b.set, own, b.runs.get(run, {}), data, sets or {}, {"seed": seed}):
                _apply(d, layer)
            where = f"spec {spec.name}, run {run} (budget {budget})"
            try:
                cfg = SearchConfig.from_dict(d)
                given = [*b.set, *own, *b.runs.get(run, {}), *(sets or {})]
                check_search_config(cfg, given=[("lambda" if k == "lam" else k) for k in given])
            except GradnasError as exc:
                raise GradnasError(f"{where}: {exc}") from None
            name = f"{run}-s{seed}"
            search = PlannedRun(name=name, config=cfg.to_dict(), path=out / SEARCH_DIR / name)
            result.searches.append(search)
            result.seeds.setdefault(run, []).append(name)
            if spec.train is not None:
                t = load_setting(spec.train["setting"])
                for layer in (spec.train["set"], b.train, data, train_sets or {}, {"seed": seed}):
                    _apply(t, layer)
                try:
                    tcfg = TrainConfig.from_dict(t)
                except GradnasError as exc:
                    raise GradnasError(f"{where}, training setting: {exc}") from None
                result.trains.append(TrainPlan(name, search.path, tcfg.to_dict(), out / TRAIN_DIR / name))
    return result


def _check_folder(p: Plan) -> None:
    """One folder holds one spec at one budget."""
    path = p.out / PLAN_FILE
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
        key = (saved["spec"], saved["budget"])
    except (OSError, ValueError, KeyError, TypeError):
        raise GradnasError(f"{path} is damaged; it says which spec this folder reproduces. Remove it to start "
                           "the folder's reproduction again (finished runs are kept)") from None
    if key != (p.spec.name, p.budget):
        raise GradnasError(f"{p.out} holds spec {key[0]} at budget {key[1]}, not {p.spec.name} at {p.budget}; "
                           "choose another --out")


def _write_plan(p: Plan) -> None:
    write_json(p.out / PLAN_FILE, {
        "spec": p.spec.name, "spec_file": str(p.spec.path) if p.spec.path else None, "budget": p.budget,
        "searches": [{"name": r.name, "path": str(r.path)} for r in p.searches],
        "trains": [{"name": t.name, "path": str(t.path)} for t in p.trains]})


def _finished(path: Path) -> bool:
    try:
        return bool(json.loads((path / SUMMARY_FILE).read_text()).get("finished"))
    except (OSError, ValueError, AttributeError):
        return False


def run_searches(p: Plan, *, jobs: int | None = None, in_process: bool = False, progress: bool = True,
                 **backend) -> list:
    """Run (or resume) every search of the plan; returns the names that failed. ``in_process``: one after
    another in this process, without a subprocess each (small budgets); else `gradnas sweep`'s runner."""
    from gradnas.report.compare import compare
    from gradnas.search.loop import Search

    if not in_process:
        result = run_sweep(p.searches, p.out / SEARCH_DIR, jobs=jobs, progress=progress, **backend)
        return result["failed"]
    check_existing(p.searches)
    failed = []
    for r in p.searches:
        if r.state == "done":
            continue
        logger.info(f"[{r.state}] {r.name}")
        try:
            Search(SearchConfig.from_dict(r.config), r.path, resume=r.state == "resume", progress=progress).run()
        except GradnasError as exc:
            logger.warning(f"[failed] {r.name}: {exc}")
            failed.append(r.name)
    shown = [r.path for r in p.searches if (r.path / SUMMARY_FILE).is_file()]
    if shown:
        compare(shown, p.out / SEARCH_DIR)
    return failed


def run_trainings(p: Plan, *, progress: bool = True) -> list:
    """Train the best cell of every finished search (in this process, one after another); returns failures."""
    from gradnas.train.config import TrainConfig
    from gradnas.train.genotypes import genotype_from_source
    from gradnas.train.loop import Training

    failed = []
    for t in p.trains:
        if _finished(t.path) or not _finished(t.search):
            if not _finished(t.search):
                failed.append(t.name)
            continue
        resume = (t.path / CHECKPOINT_FILE).is_file()
        genotype, source = genotype_from_source(str(t.search))
        logger.info(f"[{'resume' if resume else 'start'}] train {t.name}: {source}")
        try:
            Training(TrainConfig.from_dict(t.config), genotype, t.path, resume=resume, progress=progress).run()
        except GradnasError as exc:
            logger.warning(f"[failed] train {t.name}: {exc}")
            failed.append(t.name)
    return failed


def reproduce(spec: Spec | str, out, *, budget: str = "proxy", jobs: int | None = None, in_process: bool = False,
              progress: bool = True, dataset=None, data_dir=None, sets=None, train_sets=None, **backend) -> dict:
    """Plan, run and report a spec (see the module doc). Returns {"report": path, "results": dict, "failed": [...]}.
    ``backend``: how the searches run, as `gradnas sweep` takes it (``backend="local"|"ray"``, ``address``,
    ``cpus_per_run``, ``gpus_per_run``); the trainings run in this process."""
    from gradnas.report.sweep import check_backend
    check_backend(backend.get("backend", "local"), jobs=jobs, **{k: v for k, v in backend.items() if k != "backend"})
    if in_process and (backend.get("backend", "local") != "local" or (jobs or 1) > 1):
        raise GradnasError("--in-process runs the searches one after another in this process; drop --jobs and "
                           "--backend, or drop --in-process")
    p = plan(spec, budget, out, dataset=dataset, data_dir=data_dir, sets=sets, train_sets=train_sets)
    _check_folder(p)
    p.out.mkdir(parents=True, exist_ok=True)
    _write_plan(p)
    failed = run_searches(p, jobs=jobs, in_process=in_process, progress=progress, **backend)
    failed += run_trainings(p, progress=progress)
    if p.spec.run_reports:
        from gradnas.report.report import write_report
        for r in p.searches:
            if (r.path / SUMMARY_FILE).is_file():
                write_report(r.path)
    results = collect(p)
    path = write_report_md(p, results)
    return {"report": path, "results": results, "failed": failed}


# ------------------------------------------------------------------------------------------------ report

def _mean_sd(values: list) -> dict:
    kept = [v for v in values if v is not None]
    if not kept:
        return {"mean": None, "sd": None, "n": 0, "values": values}
    return {"mean": statistics.fmean(kept), "sd": statistics.stdev(kept) if len(kept) > 1 else None,
            "n": len(kept), "values": values}


def broken_pairs(order, values, *, higher_first: bool = True) -> list:
    """The neighbours (a, b) of ``order`` whose values break it: a not strictly above b (``higher_first``) or
    not strictly below it. A tie breaks an order: the paper claims a difference."""
    pairs = list(zip(order, values))
    return [(a, b) for (a, va), (b, vb) in zip(pairs, pairs[1:]) if (va <= vb if higher_first else va >= vb)]


def collect(p: Plan) -> dict:
    """results.json: per run, per measure, the mean, sample sd and values over seeds; the expectations checked."""
    from gradnas.report.run import load_run

    trains = {t.name: t for t in p.trains}
    runs = {}
    for run, names in p.seeds.items():
        searched = []
        for name in names:
            path = p.out / SEARCH_DIR / name
            if not (path / SUMMARY_FILE).is_file():
                continue
            summary = None
            if name in trains and _finished(trains[name].path):
                summary = json.loads((trains[name].path / SUMMARY_FILE).read_text())
            searched.append((load_run(path), summary))
        runs[run] = {
            "folders": names, "finished": len(searched),
            "setting": searched[0][0].describe() if searched else None,
            "genotypes": [r.genotype_string for r, _ in searched],
            "measures": {m: _mean_sd([MEASURES[m].read(r, s) for r, s in searched]) for m in p.spec.measures}}
    checks = []
    for e in p.spec.expect:
        means = [runs[r]["measures"][e.measure]["mean"] for r in e.order]
        if any(v is None for v in means):
            checks.append({"measure": e.measure, "order": list(e.order), "holds": None, "means": means})
            continue
        broken = broken_pairs(e.order, means, higher_first=e.higher_first)
        checks.append({"measure": e.measure, "order": list(e.order), "higher_first": e.higher_first,
                       "holds": not broken, "broken": [list(x) for x in broken], "means": means})
    results = {"spec": p.spec.name, "budget": p.budget, "runs": runs, "expect": checks}
    write_json(p.out / RESULTS_FILE, results)
    return results


def _fmt(stat: dict, digits: int) -> str:
    if stat["mean"] is None:
        return "n/a"
    text = f"{stat['mean']:.{digits}f}"
    if stat["sd"] is not None:
        text += f" ± {stat['sd']:.{digits}f}"
    return text


def _row_cell(text) -> str:
    return str(text).replace("|", "\\|")


def write_report_md(p: Plan, results: dict) -> Path:
    spec, b = p.spec, p.spec.budget(p.budget)
    source = spec.name if spec.path is None or spec.path.parent.name == "reproduce" else str(spec.path)
    md = [f"# {spec.title}\n",
          f"Paper: {spec.paper}." + (f" What it reports: {spec.claim}" if spec.claim else "") + "\n",
          f"Budget **{p.budget}**, seeds {', '.join(map(str, b.seeds))}" + (f": {b.note}" if b.note else "") + "\n",
          f"Command: `gradnas reproduce {source} --budget {p.budget} --out {p.out}{p.flags}` (run it again to "
          "resume).\n"]
    if p.budget != "paper":
        md.append("A smaller budget than the paper's: the numbers test the paper's claims at this scale; they are "
                  "not the paper's figures, which are shown beside them.\n")
    cited = {m for values in spec.paper_values.values() for m in values}  # a "paper" column where it has one
    header = ["run", "setting", "finished"]
    for m in spec.measures:
        header += [MEASURES[m].label] + (["paper"] if m in cited else [])
    rows = []
    for run, r in results["runs"].items():
        row = [run, r["setting"] or "n/a", f"{r['finished']}/{len(r['folders'])}"]
        for m in spec.measures:
            row += [_fmt(r["measures"][m], MEASURES[m].digits)]
            row += [spec.paper_values.get(run, {}).get(m, "")] if m in cited else []
        rows.append(row)
    table = ["| " + " | ".join(_row_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(_row_cell(c) for c in row) + " |" for row in rows]
    md.append("## Results\n\nMean ± sample standard deviation over seeds (one seed: its value).\n\n"
              + "\n".join(table) + "\n")
    if results["expect"]:
        lines = []
        for c in results["expect"]:
            words = (" > " if c.get("higher_first", True) else " < ").join(c["order"])
            if c["holds"] is None:
                verdict = "not measured (a run has no value yet)"
            elif c["holds"]:
                verdict = "**holds** here"
            else:
                verdict = "**does not hold** here: " + "; ".join(
                    f"{a} is not {'above' if c.get('higher_first', True) else 'below'} {b}" for a, b in c["broken"])
            values = ", ".join(f"{run} {v:.{MEASURES[c['measure']].digits}f}" for run, v in zip(c["order"], c["means"])
                               if v is not None)
            lines.append(f"- {MEASURES[c['measure']].label}: the paper has {words}; {verdict}"
                         + (f" ({values})" if values else "") + ".")
        md.append("## The paper's orderings, checked\n\nOn the means over seeds.\n\n" + "\n".join(lines) + "\n")
    compare_md = p.out / SEARCH_DIR / "compare.md"
    if compare_md.is_file():
        images = sorted((p.out / SEARCH_DIR).glob("compare-*.png"))
        md.append("## Plots\n\n" + "".join(f"![{i.stem}]({SEARCH_DIR}/{i.name})\n\n" for i in images)
                  + f"Every run's numbers: [{SEARCH_DIR}/compare.md]({SEARCH_DIR}/compare.md)."
                  + (" Each run's own report (probe plots): `search/<run>/report.md`." if spec.run_reports else "")
                  + "\n")
    md.append("## Cells found\n\n" + "\n".join(
        f"- {run}: " + ", ".join(f"`{g}`" for g in r["genotypes"] if g) for run, r in results["runs"].items()
        if r["genotypes"]) + "\n")
    if spec.notes:
        md.append("## Notes\n\n" + spec.notes + "\n")
    return write_text(p.out / REPORT_FILE, "\n".join(part.rstrip("\n") + "\n" for part in md))
