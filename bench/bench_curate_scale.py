"""Curate at volume (issue 28): the whole `taskseed curate` on N planted items with M samples each,
its wall time, rows/s, peak memory of the driver (JVM + Python), the growth exponent between sizes,
and the two reruns that matter: one with nothing new, one with 1% new items.

Data: items built from real training questions of the mirror (`../shared/data/hf`: GSM8K, ARC-Easy,
BoolQ with its passage), each a surface variant (about a fifth of its words replaced by words of the
corpus, numbers changed), so they differ from each other as generations of one seed do. Planted
among them, per 1,000 items: 10 exact copies of another item (case and spacing changed), 10 near
copies (one word changed), 5 copies of a held-out question (GSM8K test, ARC-Easy test, BoolQ
validation) and 5 copies of a seed's question. 1 item in 10 gets disagreeing votes. Seeds: the
first 1,000 training rows per task; heldout: the real held-out splits (6,965 rows); the license
policy and the generation ledger rows that validation checks. Everything goes through
`Lakehouse.merge` into a fresh home, the tables the pipeline writes, so `taskseed curate` runs
unchanged, as a subprocess (its own JVM), from the repository's venv.

Per size: plant (own process), `taskseed curate` (first run), `taskseed curate` again (nothing
new), plant `--plus` × N new items, `taskseed curate` (the +1% rerun). Printed per run: wall
seconds, candidates per second, peak RSS of the curate process tree (the Python driver, its JVM,
the Python workers) and of the JVM alone, and the curate's own seconds by step (`[curate] seconds
by step:` line). The first size's "Spark start" is measured by the same CLI running `taskseed sql
"SELECT 1"` on the same home (JVM start, Delta jars, table registration): the fixed cost of a run
is its wall time minus that. Growth exponent between sizes a < b: log(t_b / t_a) / log(b / a) of
the first-run wall times, with and without the fixed cost of the smallest size.

    .venv/bin/python bench/bench_curate_scale.py                       # sizes 9, 5000, 20000
    .venv/bin/python bench/bench_curate_scale.py --sizes 100000,400000 # the issue's sizes (hours here)
    .venv/bin/python bench/bench_curate_scale.py --handful 4           # the fixed cost, by step

`--handful N` measures the fixed cost of a run in one process (`run_curate`, not the CLI): it plants
N items, builds the held-out index, curates once (which signs the seeds), then curates again with
`--force` (everything evaluated, on a home whose index and signatures exist), and, with `--plus K`
(K ≥ 1, an item count here), plants K new items and curates once more. Per run it prints the Spark
jobs and wall seconds of each step (`CurateResult.spark_jobs`, `.seconds`) and the load average.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("TASKSEED_SHARED_DATA", REPO.parent / "shared" / "data")).resolve() / "hf"
TASKSEED = Path(sys.executable).with_name("taskseed")
VERBOSE = False  # --verbose: echo each line of the CLI runs with its time
SEEDS_PER_TASK = 1000
# (task, dataset_path, dataset_name, train file, held-out files, answer format, license, license class)
SOURCES = (
    ("gsm8k", "openai/gsm8k", "main", "openai/gsm8k/main/train.jsonl", ("openai/gsm8k/main/test.jsonl",),
     "numeric", "mit", "permissive"),
    ("arc_easy", "allenai/ai2_arc", "ARC-Easy", "allenai/ai2_arc/ARC-Easy/train.jsonl",
     ("allenai/ai2_arc/ARC-Easy/test.jsonl",), "mcq", "cc-by-sa-4.0", "share-alike"),
    ("boolq", "aps/super_glue", "boolq", "aps/super_glue/boolq/train.jsonl",
     ("aps/super_glue/boolq/validation.jsonl",), "boolean", "cc-by-sa-3.0", "share-alike"),
)
FAMILY = {"gsm8k": "gsm8k", "arc_easy": "arc", "boolq": "boolq"}
# per 1,000 items
EXACT, NEAR, HELDOUT_COPY, SEED_COPY, DISAGREE = 10, 10, 5, 5, 100


def _record(task: str, raw: dict) -> dict:
    """A mirror row as the normalized fields curate reads."""
    if task == "gsm8k":
        return {"question": raw["question"], "context": None, "choices": None, "answer_index": None,
                "answer_text": raw["answer"].split("####")[-1].strip().replace(",", "")}
    if task == "arc_easy":
        labels, texts = raw["choices"]["label"], raw["choices"]["text"]
        index = labels.index(raw["answerKey"]) if raw["answerKey"] in labels else 0
        return {"question": raw["question"], "context": None, "choices": list(texts), "answer_index": index,
                "answer_text": texts[index]}
    yes = raw["label"] in (True, 1, "true", "True")  # as lm-eval's boolq: choices no / yes
    return {"question": raw["question"], "context": raw["passage"], "choices": ["no", "yes"],
            "answer_index": int(yes), "answer_text": "yes" if yes else "no"}


def load_sources() -> dict[str, dict[str, list[dict]]]:
    out = {}
    for task, *_rest in SOURCES:
        train_file, heldout_files = _rest[2], _rest[3]
        read = lambda rel: [_record(task, json.loads(line)) for line in (MIRROR / rel).open(encoding="utf-8")]  # noqa: E731
        out[task] = {"train": read(train_file), "heldout": [r for f in heldout_files for r in read(f)]}
    return out


def _vary(text: str, rng: random.Random, words: list[str], share: float) -> str:
    tokens = text.split(" ")
    for i, token in enumerate(tokens):
        if token.isdigit():
            tokens[i] = str(rng.randint(2, 999))
        elif rng.random() < share:
            tokens[i] = rng.choice(words)
    return " ".join(tokens)


def plan_items(sources: dict, start: int, count: int, seed_rows: dict) -> list[dict]:
    """Items `start` … `start + count - 1` (deterministic in the index): the generated rows."""
    vocab = [w for t in sources.values() for r in t["train"][:2000] for w in r["question"].split(" ") if w.isalpha()]
    tasks = [s[0] for s in SOURCES]
    items = []
    for i in range(start, start + count):
        rng = random.Random(i)
        task = tasks[i % len(tasks)]
        pool = sources[task]["train"][SEEDS_PER_TASK:]
        base = dict(pool[(i // len(tasks)) % len(pool)])
        slot = i % 1000
        kind = "variant"
        if slot < EXACT:
            if i >= 500:  # item i - 500 is a variant (slot 500-509): copy it, case and spacing changed
                kind, task = "exact", tasks[(i - 500) % len(tasks)]
                other = items_at(sources, i - 500, vocab)
                base = dict(other, question=other["question"].upper().replace(" ", "  "))
        elif slot < EXACT + NEAR:
            if i >= 400:  # item i - 400 is a variant (slot 610-619): one word changed
                kind, task = "near", tasks[(i - 400) % len(tasks)]
                words = items_at(sources, i - 400, vocab)["question"].split(" ")
                words[len(words) // 2] = "quite"
                base = dict(items_at(sources, i - 400, vocab), question=" ".join(words))
        elif slot < EXACT + NEAR + HELDOUT_COPY:
            kind = "heldout_copy"
            held = sources[task]["heldout"]
            base = dict(held[rng.randrange(len(held))])
        elif slot < EXACT + NEAR + HELDOUT_COPY + SEED_COPY:
            kind = "seed_copy"
            base = dict(seed_rows[task][rng.randrange(len(seed_rows[task]))])
        if kind == "variant":
            base["question"] = _vary(base["question"], rng, vocab, 0.2)
        seed = seed_rows[task][i % len(seed_rows[task])]
        items.append(dict(base, gen_id=f"g{i:08d}", seed_id=seed["seed_id"], sample_index=0, task=task,
                          task_family=FAMILY[task], answer_format=_format(task), _kind=kind,
                          _disagree=rng.randrange(1000) < DISAGREE))
    return items


def items_at(sources: dict, i: int, vocab: list[str]) -> dict:
    """Item i as plan_items builds it when it is a variant (slots 500-519 and 600-619 of each
    thousand always are): the original an exact or near copy repeats."""
    rng = random.Random(i)
    tasks = [s[0] for s in SOURCES]
    task = tasks[i % len(tasks)]
    pool = sources[task]["train"][SEEDS_PER_TASK:]
    base = dict(pool[(i // len(tasks)) % len(pool)])
    base["question"] = _vary(base["question"], rng, vocab, 0.2)
    return base


def _format(task: str) -> str:
    return next(s[5] for s in SOURCES if s[0] == task)


def plant(home: str, start: int, count: int, samples: int, master: str) -> dict:
    """Write seeds, heldout and the license policy (start == 0), then `count` items with `samples`
    enrichment samples each and their generation ledger rows, into the lakehouse at `home`."""
    from jobs.config import load_config
    from jobs.lakehouse import Lakehouse
    from jobs.runtime import get_spark
    from schemas.tables import ENRICHED, GENERATED, HELDOUT, LICENSE_POLICY, LLM_CALLS, SEEDS

    sources = load_sources()
    seed_rows = {}
    for task, path, name, *_r in SOURCES:
        seed_rows[task] = [dict(r, seed_id=f"s-{task}-{k}", task=task, task_family=FAMILY[task], dataset_path=path,
                                dataset_name=name, split="train", doc_index=k, answer_format=_format(task),
                                license=_r[3], license_class=_r[4])
                           for k, r in enumerate(sources[task]["train"][:SEEDS_PER_TASK])]
    config = load_config(overrides=[f"spark.master={master}"], home=home)
    spark = get_spark(config)
    lakehouse = Lakehouse(spark, config)

    def write(spec, rows):
        df = spark.createDataFrame([tuple(r.get(c) for c in spec.columns) for r in rows], spec.schema)
        lakehouse.merge(df, spec)

    if start == 0:
        write(SEEDS, [r for rows in seed_rows.values() for r in rows])
        write(HELDOUT, [dict(r, heldout_id=f"h-{task}-{k}", task=task, task_family=FAMILY[task], split="test",
                             doc_index=k, answer_format=_format(task))
                        for task in seed_rows for k, r in enumerate(sources[task]["heldout"])])
        write(LICENSE_POLICY, [dict(dataset_path=s[1], license=s[6], license_class=s[7],
                                    commercial_ok="yes" if s[7] == "permissive" else "no") for s in SOURCES])
    items = plan_items(sources, start, count, seed_rows)
    licenses = {s[0]: (s[6], s[7]) for s in SOURCES}
    for item in items:
        item.update(license=licenses[item["task"]][0], license_class=licenses[item["task"]][1], model="bench-model",
                    prompt_version=f"generate-{item['answer_format']}-v1", request_id=f"req-{item['gen_id']}")
    write(GENERATED, items)
    write(LLM_CALLS, [dict(request_id=i["request_id"], stage="generate", status="ok") for i in items])

    def vote(item, k):
        if item["_disagree"] and k > 0:  # the majority names something else
            if item["answer_format"] == "mcq":
                return None, (item["answer_index"] + 1) % len(item["choices"])
            if item["answer_format"] == "boolean":
                return ("no", 0) if item["answer_text"] == "yes" else ("yes", 1)
            return str(int(float(item["answer_text"] or 0)) + 1), None
        return item["answer_text"], item["answer_index"]

    enriched = []
    for item in items:
        for k in range(samples):
            answer, index = vote(item, k)
            if index is not None and answer is None:
                answer = item["choices"][index]
            enriched.append(dict(gen_id=item["gen_id"], sample=k, item_kind="generated", task=item["task"],
                                 task_family=item["task_family"], answer_format=item["answer_format"],
                                 knowledge="k", reasoning=f"so the answer is {answer}", final_answer_raw=answer,
                                 final_answer=answer, final_answer_index=index, model="bench-model",
                                 request_id=f"{item['gen_id']}-e{k}"))
    write(ENRICHED, enriched)
    kinds: dict[str, int] = {}
    for item in items:
        kinds[item["_kind"]] = kinds.get(item["_kind"], 0) + 1
    spark.stop()
    return kinds


# ---- measuring a CLI run -----------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _tree_rss(root: int, cpu: dict[int, float] | None = None) -> tuple[int, int]:
    """(RSS of `root` and all its descendants, RSS of the java processes among them), bytes;
    `cpu` gets each process's user + system CPU seconds so far (the last sample before it exits)."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    ticks: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        ppid = int(fields[1])
        ticks[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
        children.setdefault(ppid, []).append(int(entry))
        names[int(entry)] = name
    total = java = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as handle:
                rss = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        total += rss
        if cpu is not None:
            cpu[pid] = ticks.get(pid, 0.0)
        if names.get(pid) == "java":
            java += rss
    return total, java


def run_cli(home: str, master: str, samples: int, *command: str) -> dict:
    """Run `taskseed --home … <command>`; wall seconds, peak tree/JVM RSS, its output lines."""
    argv = [str(TASKSEED), "--home", home, "--set", f"spark.master={master}",
            "--set", f"enrich.samples_per_item={samples}", *command]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    peak = [0, 0]
    cpu: dict[int, float] = {}
    done = threading.Event()

    def poll():
        while not done.is_set():
            total, java = _tree_rss(proc.pid, cpu)
            peak[0], peak[1] = max(peak[0], total), max(peak[1], java)
            done.wait(0.25)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if VERBOSE:
            print(f"    [{time.perf_counter() - start:6.1f}s] {lines[-1]}", flush=True)
    proc.wait()
    out = "\n".join(lines)
    wall = time.perf_counter() - start
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{out[-4000:]}")
    return {"wall": wall, "cpu": sum(cpu.values()), "rss": peak[0], "jvm": peak[1], "lines": lines}


def _steps(lines: list[str]) -> str:
    line = next((x for x in lines if x.startswith("[curate] seconds by step: ")), "")
    return line.removeprefix("[curate] seconds by step: ")


def _candidates(lines: list[str]) -> int:
    for line in lines:
        m = re.match(r"\[curate\] (\d+) candidate items", line)
        if m:
            return int(m.group(1))
    return 0


def _plant_child(home: str, start: int, count: int, samples: int, master: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--plant", home, "--start", str(start), "--count", str(count),
                          "--samples", str(samples), "--master", master], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"planting failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _steps_table(label: str, result) -> None:
    jobs, seconds = result.spark_jobs, result.seconds
    print(f"  {label}: {sum(jobs.values())} Spark jobs, {sum(seconds.values()):.1f} s "
          f"(load {os.getloadavg()[0]:.1f}); evaluated because: {'; '.join(result.evaluated_because) or '-'}",
          flush=True)
    for step in seconds:
        print(f"    {step:<28} {jobs.get(step, 0):>4} jobs {seconds[step]:7.2f} s", flush=True)


def handful(n: int, plus: int, samples: int, master: str, sets: list[str], keep: bool) -> None:
    """The fixed cost of a curate run on `n` items, by step, in this process (module docstring)."""
    from jobs.config import load_config
    from jobs.curate import run_curate
    from jobs.filters.contamination import ensure_heldout_index
    from jobs.lakehouse import Lakehouse
    from jobs.runtime import get_spark

    home = tempfile.mkdtemp(prefix=f"bench-curate-handful-{n}-")
    try:
        kinds = _plant_child(home, 0, n, samples, master)
        print(f"N = {n}: planted {kinds}; load {os.getloadavg()[0]:.1f}", flush=True)
        config = load_config(overrides=[f"spark.master={master}", f"enrich.samples_per_item={samples}", *sets],
                             home=home)
        spark = get_spark(config)
        lakehouse = Lakehouse(spark, config)
        t0 = time.perf_counter()
        print(f"  {ensure_heldout_index(lakehouse, config).summary()} ({time.perf_counter() - t0:.0f} s)", flush=True)
        _steps_table("first run (signs the seeds)", run_curate(lakehouse, config))
        _steps_table("--force (index and signatures exist)", run_curate(lakehouse, config, force=True))
        if plus > 0:
            _plant_child(home, n, plus, samples, master)
            _steps_table(f"+{plus} new items", run_curate(lakehouse, config))
        spark.stop()
    finally:
        if keep:
            print(f"  home kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="9,5000,20000", help="comma-separated item counts")
    parser.add_argument("--samples", type=int, default=3, help="M enrichment samples per item")
    parser.add_argument("--plus", type=float, default=0.01, help="share of new items for the incremental rerun (0: no such rerun)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--keep", action="store_true", help="keep the homes (printed)")
    parser.add_argument("--reruns-from", type=int, default=0,
                        help="measure the two reruns only for sizes from this one on (default: every size)")
    parser.add_argument("--verbose", action="store_true", help="echo the CLI runs' lines with their times")
    parser.add_argument("--handful", type=int, default=0,
                        help="measure the fixed cost by step on this many items, in-process (module docstring)")
    parser.add_argument("--set", action="append", default=[], dest="sets",
                        help="--handful: a config override key=value (repeatable), e.g. spark.adaptive=false")
    parser.add_argument("--plant", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plant:
        print(json.dumps(plant(args.plant, args.start, args.count, args.samples, args.master)))
        return

    if args.handful:
        handful(args.handful, int(args.plus) if args.plus >= 1 else 0, args.samples, args.master, args.sets,
                args.keep)
        return
    global VERBOSE
    VERBOSE = args.verbose
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"cpus {os.cpu_count()}; master {args.master}; M = {args.samples}", flush=True)
    firsts: dict[int, float] = {}
    cpus: dict[int, float] = {}
    spark_start = None
    for n in sizes:
        home = tempfile.mkdtemp(prefix=f"bench-curate-{n}-")
        try:
            t0 = time.perf_counter()
            kinds = _plant_child(home, 0, n, args.samples, args.master)
            print(f"\nN = {n}: planted {kinds} in {time.perf_counter() - t0:.0f} s", flush=True)
            if spark_start is None:
                spark_start = run_cli(home, args.master, args.samples, "sql", "SELECT 1")
                print(f"  Spark start (taskseed sql 'SELECT 1' on this home): {spark_start['wall']:.1f} s wall, "
                      f"{spark_start['cpu']:.1f} s CPU", flush=True)
            runs = [("first run", run_cli(home, args.master, args.samples, "curate"))]
            if n >= args.reruns_from:
                runs.append(("nothing new", run_cli(home, args.master, args.samples, "curate")))
                if args.plus > 0:
                    extra = max(1, math.ceil(n * args.plus))
                    _plant_child(home, n, extra, args.samples, args.master)
                    runs.append((f"+{extra} new items", run_cli(home, args.master, args.samples, "curate")))
            first, cpu_first = runs[0][1]["wall"], runs[0][1]["cpu"]
            firsts[n] = first
            cpus[n] = cpu_first
            for label, r in runs:
                cand = _candidates(r["lines"])
                print(f"  {label:>16}: {r['wall']:7.1f} s wall ({r['wall'] / first:.2f} of the first run), "
                      f"{cand} candidates, {cand / r['wall']:7.1f} candidates/s, beyond Spark start "
                      f"{r['wall'] - spark_start['wall']:6.1f} s; CPU {r['cpu']:6.1f} s "
                      f"({r['cpu'] / cpu_first:.2f} of the first run; beyond Spark start "
                      f"{r['cpu'] - spark_start['cpu']:6.1f} s); peak RSS {r['rss'] / 2**30:.2f} GiB "
                      f"(JVM {r['jvm'] / 2**30:.2f} GiB); load {os.getloadavg()[0]:.1f}", flush=True)
                nothing = next((x for x in r["lines"] if "nothing new since run" in x), None)
                print(f"  {'':>16}  {nothing or 'steps (s): ' + _steps(r['lines'])}", flush=True)
        finally:
            if args.keep:
                print(f"  home kept: {home}")
            else:
                shutil.rmtree(home, ignore_errors=True)
    fixed = firsts[min(firsts)] if min(firsts) < 100 else 0.0
    ordered = sorted(firsts)
    for a, b in zip(ordered, ordered[1:]):
        raw = math.log(firsts[b] / firsts[a]) / math.log(b / a)
        line = f"growth exponent {a} → {b}: {raw:.2f} (wall)"
        if fixed and a > min(firsts) and firsts[a] > fixed and firsts[b] > fixed:
            net = math.log((firsts[b] - fixed) / (firsts[a] - fixed)) / math.log(b / a)
            line += f", {net:.2f} beyond the fixed cost of a {min(firsts)}-item run ({fixed:.0f} s)"
        print(line)
        print(f"  CPU of the first runs {a} → {b}: {cpus[a]:.0f} s → {cpus[b]:.0f} s, exponent "
              f"{math.log(cpus[b] / cpus[a]) / math.log(b / a):.2f}; marginal "
              f"{1000 * (cpus[b] - cpus[a]) / (b - a):.2f} ms of CPU per item")
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
