"""The near_dup engine on local Spark (jobs/filters/near_dup.py).

Tiny inline tables for the rules (a chain a~b~c is one component, exact and formatting-only
copies, a seed copy with one word changed, an empty stimulus, incremental re-signing), the graph
and bucket algorithms on hand-made inputs checked against a Python union-find, and one run on real
GSM8K questions whose every output row is compared with a brute-force exact-Jaccard computation.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from pyspark.sql import functions as F

from jobs.filters.near_dup import (
    candidate_pairs,
    connected_components,
    minhash_params,
    near_duplicates,
    update_signatures,
)
from schemas.tables import MINHASH_SIGNATURES
from udfs.minhash import item_similarity, jaccard, shingle_batch, stimulus_text
from udfs.textnorm import normalize_text

pytestmark = pytest.mark.spark

ITEM_SCHEMA = "{id} string, question string, context string, choices array<string>"


def items(spark, rows: list[tuple], id_column: str):
    return spark.createDataFrame(rows, ITEM_SCHEMA.format(id=id_column))


def gsm8k(mirror, split: str = "train") -> list[str]:
    with open(mirror / "openai" / "gsm8k" / "main" / f"{split}.jsonl", encoding="utf-8") as handle:
        return [json.loads(line)["question"] for line in handle]


def exact(a: tuple, b: tuple) -> float:
    """Exact Jaccard of two (id, question, context, choices) items, as the engine defines it."""
    texts = [normalize_text(stimulus_text(x[1], x[2], x[3])) for x in (a, b)]
    offsets, hashes = shingle_batch(texts)
    return jaccard(hashes[offsets[0]:offsets[1]], hashes[offsets[1]:offsets[2]])


def replace_words(text: str, positions: list[int], new: str = "zorbly") -> str:
    words = text.split()
    for p in positions:
        words[p] = new
    return " ".join(words)


class UnionFind:
    def __init__(self):
        self.parent: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def components(self) -> dict:
        return {x: min(y for y in self.parent if self.find(y) == self.find(x)) for x in self.parent}


# ---- the rules on a tiny table, and incremental signing ------------------------------------------


def test_components_copies_seed_matches_and_incremental_signing(spark, lakehouse, mirror):
    config = lakehouse.config.curate.near_dup
    train = gsm8k(mirror)
    base, seed_text, other = normalize_text(train[15]), train[1], train[2]
    n_words = len(base.split())
    # a chain: a ~ b and b ~ c above the threshold, a ~ c below it (two words changed per step)
    a = ("g-chain-a", base, None, None)
    b = ("g-chain-b", replace_words(base, [1, 3]), None, None)
    c = ("g-chain-c", replace_words(base, [1, 3, n_words - 2, n_words - 4]), None, None)
    assert exact(a, b) > 0.84 and exact(b, c) > 0.84 and exact(a, c) < 0.76
    mcq = ("Which gas do plants take in from the air?", None, ["oxygen", "carbon dioxide", "helium"])
    generated = [
        a, c, b,
        ("g-copy-2", *mcq), ("g-copy-1", *mcq),
        ("g-copy-3", "WHICH gas do plants take in, from the air", None, ["Oxygen", "carbon-dioxide", "helium"]),
        ("g-seedcopy", "Then " + " ".join(seed_text.split()[1:]), None, None),  # first word changed
        ("g-alone", other, None, None),
        ("g-empty", "", None, []),
        ("g-other-options", mcq[0], None, ["nitrogen", "argon", "neon"]),
    ]
    seeds = [("s-1", seed_text, None, None), ("s-2", train[3], None, None)]
    gen_df, seed_df = items(spark, generated, "gen_id"), items(spark, seeds, "seed_id")

    rows = {r["gen_id"]: r.asDict() for r in near_duplicates(lakehouse, config, gen_df, seed_df).collect()}

    assert sorted(rows) == sorted(g[0] for g in generated)
    for gen_id in ("g-chain-a", "g-chain-b", "g-chain-c"):
        assert rows[gen_id]["component_id"] == "g-chain-a"
        assert rows[gen_id]["component_size"] == 3
    assert rows["g-chain-a"]["best_match_id"] == "g-chain-b"
    assert rows["g-chain-c"]["best_match_id"] == "g-chain-b"
    assert rows["g-chain-a"]["best_match_jaccard"] == pytest.approx(exact(a, b))
    for gen_id in ("g-copy-1", "g-copy-2", "g-copy-3"):
        assert (rows[gen_id]["component_id"], rows[gen_id]["component_size"]) == ("g-copy-1", 3)
        assert rows[gen_id]["best_match_jaccard"] == 1.0  # formatting-only differences are exact copies
    assert rows["g-copy-3"]["best_match_id"] == "g-copy-1"  # ties go to the smallest id
    seed_copy = rows["g-seedcopy"]
    assert seed_copy["seed_match_id"] == "s-1" and seed_copy["seed_match_jaccard"] >= 0.8
    assert (seed_copy["component_id"], seed_copy["component_size"], seed_copy["best_match_id"]) == ("g-seedcopy", 1, None)
    for gen_id in ("g-alone", "g-empty", "g-other-options"):
        assert rows[gen_id] == {"gen_id": gen_id, "component_id": gen_id, "component_size": 1, "best_match_id": None,
                                "best_match_jaccard": None, "seed_match_id": None, "seed_match_jaccard": None}
    assert all(r["seed_match_id"] is None for g, r in rows.items() if g != "g-seedcopy")

    # incremental: a rerun has nothing to sign and commits no Delta version
    version = lakehouse.version(MINHASH_SIGNATURES.name)
    assert update_signatures(lakehouse, config, "generated", gen_df.withColumnRenamed("gen_id", "doc_id")) == 0
    assert update_signatures(lakehouse, config, "seed", seed_df.withColumnRenamed("seed_id", "doc_id")) == 0
    assert lakehouse.version(MINHASH_SIGNATURES.name) == version
    table = lakehouse.read(MINHASH_SIGNATURES.name)
    assert table.count() == len(generated) + len(seeds)
    assert table.where("doc_id = 'g-empty'").first()["signature"] is None

    # a changed text re-signs that row only; changed parameters re-sign every row of the kind
    changed = [g if g[0] != "g-alone" else (g[0], g[1] + " Explain.", None, None) for g in generated]
    changed_df = items(spark, changed, "doc_id")
    assert update_signatures(lakehouse, config, "generated", changed_df) == 1
    assert update_signatures(lakehouse, config, "generated", changed_df) == 0
    reseeded = config.model_copy(update={"seed": 2})
    assert update_signatures(lakehouse, reseeded, "generated", changed_df) == len(generated)
    assert table.count() == len(generated) + len(seeds)
    assert table.where(F.col("params") == minhash_params(reseeded).tag).count() == len(generated)
    with pytest.raises(ValueError, match="doc_kind"):
        update_signatures(lakehouse, config, "curated", changed_df)


def test_signing_in_several_commits(spark, lakehouse, mirror):
    config = lakehouse.config.curate.near_dup.model_copy(update={"sign_rows_per_commit": 3})
    rows = [(f"s{i:04d}", q, None, None) for i, q in enumerate(gsm8k(mirror)[:7])]
    assert update_signatures(lakehouse, config, "seed", items(spark, rows, "doc_id")) == 7
    assert lakehouse.version(MINHASH_SIGNATURES.name) == 3  # create + 3 appends of ≤ 3 rows
    assert lakehouse.read(MINHASH_SIGNATURES.name).count() == 7


# ---- graph and buckets -------------------------------------------------------------------------


def test_connected_components_match_union_find(spark):
    rng = random.Random(3)
    edges = []
    path = [f"p{i:03d}" for i in range(40)]
    rng.shuffle(path)  # a long path with labels in random order: worst case for label propagation
    edges += list(zip(path, path[1:]))
    edges += [("s000", f"s{i:03d}") for i in range(1, 15)]  # a star
    edges += [(f"d{i:03d}a", f"d{i:03d}b") for i in range(10)]  # disjoint pairs
    nodes = [f"r{i:03d}" for i in range(80)]
    edges += [(rng.choice(nodes), rng.choice(nodes)) for _ in range(70)]  # random, self-loops included
    union = UnionFind()
    for x, y in edges:
        union.union(x, y)
    expected = {n: c for n, c in union.components().items() if any(n in e and e[0] != e[1] for e in edges)}

    result = connected_components(spark.createDataFrame(edges, "src string, dst string"))
    got = {r["node"]: r["component"] for r in result.collect()}
    assert result.count() == len(got)  # one row per node
    assert got == expected
    assert connected_components(spark.createDataFrame([], "src string, dst string")).count() == 0
    with pytest.raises(RuntimeError, match="converge"):
        connected_components(spark.createDataFrame(list(zip(path, path[1:])), "src string, dst string"), max_rounds=0)


def test_big_buckets_link_to_their_smallest_members(spark):
    # 6 generated items and 2 seeds share band 0; g1/g2 also share band 1 with s9
    rows = [("generated", f"g{i}", [7, 100 + i]) for i in range(6)] + [("seed", "s1", [7, 200]), ("seed", "s0", [7, 201])]
    rows[1] = ("generated", "g1", [7, 55])
    rows[2] = ("generated", "g2", [7, 55])
    rows.append(("seed", "s9", [8, 55]))
    sigs = spark.createDataFrame(rows, "doc_kind string, doc_id string, band_hashes array<bigint>")

    def pairs(cap: int) -> set:
        return {tuple(r) for r in candidate_pairs(sigs, cap).collect()}

    all_pairs = pairs(50)
    gens = [f"g{i}" for i in range(6)]
    assert all_pairs == ({(x, "generated", y) for x in gens for y in gens if x < y}
                         | {(x, "seed", s) for x in gens for s in ("s0", "s1")}
                         | {("g1", "seed", "s9"), ("g2", "seed", "s9")})
    star = pairs(4)  # band 0's bucket (8 members) is over the cap; band 1's (3 members) is not
    assert star == ({("g0", "generated", g) for g in gens[1:]}
                    | {(g, "seed", "s0") for g in gens}
                    | {("g1", "generated", "g2"), ("g1", "seed", "s9"), ("g2", "seed", "s9")})
    assert not any(p[1] == "seed" and p[0].startswith("s") for p in all_pairs)


# ---- real questions against brute force ---------------------------------------------------------


def test_real_gsm8k_near_duplicates_equal_brute_force(spark, lakehouse, mirror):
    """400 GSM8K train questions as seeds; generated: 60 of them with the first word changed, 60 with
    two middle words changed, 60 with a third of the words changed, a copy of one of those, and 150
    GSM8K *test* questions. Every output column must equal an exact all-pairs computation."""
    rng = random.Random(11)
    train, test = gsm8k(mirror), gsm8k(mirror, "test")
    seeds = [(f"s{i:04d}", q, None, None) for i, q in enumerate(train[:400])]
    generated = []
    for n, i in enumerate(rng.sample(range(400), 180)):
        words = train[i].split()
        if n < 60:
            positions = [0]
        elif n < 120:
            positions = [len(words) // 2, len(words) // 2 + 3]
        else:
            positions = rng.sample(range(len(words)), len(words) // 3)
        generated.append((f"g{n:04d}", replace_words(train[i], positions, "blorp"), None, None))
    generated.append(("g9999", generated[130][1], None, None))
    generated += [(f"t{i:04d}", q, None, None) for i, q in enumerate(test[:150])]
    config = lakehouse.config.curate.near_dup

    got = {r["gen_id"]: r.asDict() for r in near_duplicates(
        lakehouse, config, items(spark, generated, "gen_id"), items(spark, seeds, "seed_id")).collect()}

    # brute force: exact Jaccard of every generated item against every seed and generated item
    texts = [normalize_text(x[1]) for x in generated + seeds]
    offsets, hashes = shingle_batch(texts)
    sets = [hashes[offsets[k]:offsets[k + 1]] for k in range(len(texts))]
    n_gen = len(generated)
    union = UnionFind()
    for k, (gen_id, *_) in enumerate(generated):
        union.find(gen_id)
        sims = [(jaccard(sets[k], sets[j]), j) for j in range(len(texts)) if j != k]
        seed_hits = [(s, seeds[j - n_gen][0]) for s, j in sims if j >= n_gen and s >= config.threshold]
        gen_hits = [(s, generated[j][0]) for s, j in sims if j < n_gen and s >= config.threshold]
        for _, other in gen_hits:
            union.union(gen_id, other)
        best_seed = min(seed_hits, key=lambda h: (-h[0], h[1]), default=(None, None))
        best_gen = min(gen_hits, key=lambda h: (-h[0], h[1]), default=(None, None))
        row = got[gen_id]
        assert (row["seed_match_id"], row["seed_match_jaccard"]) == (best_seed[1], pytest.approx(best_seed[0])), gen_id
        assert (row["best_match_id"], row["best_match_jaccard"]) == (best_gen[1], pytest.approx(best_gen[0])), gen_id
    components = union.components()
    sizes = {c: sum(1 for v in components.values() if v == c) for c in set(components.values())}
    assert {g: (r["component_id"], r["component_size"]) for g, r in got.items()} == {
        g: (c, sizes[c]) for g, c in components.items()}
    # the fixture is not trivial: first-word copies are all caught, test questions are not seeds
    assert all(got[f"g{n:04d}"]["seed_match_id"] is not None for n in range(60))
    assert sum(got[f"t{i:04d}"]["seed_match_id"] is None for i in range(150)) == 150
    assert got["g9999"]["component_size"] == 2 and got["g9999"]["best_match_jaccard"] == 1.0
    assert 0 < sum(r["seed_match_id"] is not None for r in got.values()) < n_gen


# ---- question and passage each on their own (issue 29) -------------------------------------------
DANUBE = ("The Danube is Europe's second-longest river. It rises in the Black Forest of Germany and flows "
          "south-east for about 2,850 kilometres through ten countries, among them Austria, Hungary, Serbia "
          "and Romania, before it empties into the Black Sea through a wide delta.")
FRAME = "What will Others want to do next?"
OPTIONS = ["thank them", "go to sleep", "sell the house"]


def test_question_and_passage_each_on_their_own(spark, lakehouse, mirror):
    """Inline items: a frame question over different passages and different questions over one
    passage are not near-duplicates; the same question over a lightly edited passage is, and so is a
    seed's question over its passage cut short (a candidate only through the question's bands).
    Real BoolQ train items that share a passage with another question are not called copies of it."""
    config = lakehouse.config.curate.near_dup
    generated = [
        ("g-frame-1", FRAME, "Jordan fixed the neighbour's fence after the storm.", OPTIONS),
        ("g-frame-2", FRAME, "Kai baked bread for everyone at the shelter.", OPTIONS),
        ("g-passage-1", "Does the Danube flow into the Black Sea?", DANUBE, None),
        ("g-passage-2", "Does the Danube rise in Germany?", DANUBE, None),
        ("g-edit", "Does the Danube rise in Germany?",
         DANUBE.replace("second-longest", "second longest").replace("about", "roughly"), None),
        ("g-cut", "is there a j in the italian alphabet", "The Italian alphabet has 21 letters.", ["no", "yes"]),
    ]
    seeds = [("s-frame", FRAME, "Robin lent Sasha a jacket on the cold walk home.", OPTIONS),
             ("s-cut", "Is there a J in the Italian alphabet?",
              "The Italian alphabet has 21 letters. J, K, W, X and Y appear only in loanwords and names.",
              ["no", "yes"])]
    rows = {r["gen_id"]: r.asDict() for r in near_duplicates(
        lakehouse, config, items(spark, generated, "gen_id"), items(spark, seeds, "seed_id")).collect()}
    for alone in ("g-frame-1", "g-frame-2", "g-passage-1"):
        assert (rows[alone]["component_size"], rows[alone]["seed_match_id"]) == (1, None), rows[alone]
    assert rows["g-passage-2"]["component_id"] == rows["g-edit"]["component_id"] == "g-edit"
    assert rows["g-passage-2"]["component_size"] == 2
    assert rows["g-cut"]["seed_match_id"] == "s-cut" and rows["g-cut"]["seed_match_jaccard"] == 1.0

    # real: BoolQ train passages that carry two different questions; the whole stimulus called
    # nearly all of them near-duplicates (udfs.minhash test: 3,311 of 3,470 pairs)
    with open(mirror / "aps" / "super_glue" / "boolq" / "train.jsonl", encoding="utf-8") as handle:
        boolq = [json.loads(line) for line in handle]
    first: dict = {}
    pairs = []
    for i, r in enumerate(boolq):
        key = normalize_text(r["passage"])
        if key in first and len(pairs) < 60:
            pairs.append((first[key], i))
        first.setdefault(key, i)
    gen = [(f"bq-{j}", boolq[j]["question"], boolq[j]["passage"], None) for _, j in pairs]
    sds = [(f"bq-seed-{i}", boolq[i]["question"], boolq[i]["passage"], None) for i, _ in pairs]
    whole = sum(exact(g, s) >= 0.8 for g, s in zip(gen, sds))
    real = near_duplicates(lakehouse, config, items(spark, gen, "gen_id"), items(spark, sds, "seed_id")).collect()
    copies = [r["gen_id"] for r in real if r["seed_match_id"] is not None]
    expected = [g[0] for g, s in zip(gen, sds)
                if item_similarity(g[1:], s[1:], minhash_params(config), config.threshold)[0]]
    assert len(gen) == 60 and whole >= 50
    assert sorted(copies) == sorted(expected) and len(copies) <= 2
