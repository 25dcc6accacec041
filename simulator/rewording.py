"""A deterministic rewording of a question: every word found in `SYNONYMS` is replaced by its
synonym (case kept), everything else (numbers, names, function words, punctuation) is kept.

Used twice, on purpose with the same map:
- the simulator plants reworded held-out items as "generated" items (`heldout_paraphrase_rate`) and
  its judge recognises exactly these rewordings (simulator/contract.py `_judge`), so the paraphrase
  filter runs end to end without a real model (docs/prompt-contract.md);
- bench/bench_paraphrase.py builds its planted paraphrases of held-out items with it.

The map is ours (written for this project, plain English synonyms of words common in ARC, GSM8K,
BoolQ, OpenBookQA, CommonsenseQA and MMLU questions); the rewording keeps the question answerable
and its answer unchanged, which is what a paraphrase that contaminates an evaluation looks like.
"""

from __future__ import annotations

import re

SYNONYMS: dict[str, str] = {
    # verbs
    "buys": "purchases", "bought": "purchased", "buy": "purchase", "sells": "vends", "sold": "vended",
    "sell": "vend", "gives": "hands", "gave": "handed", "give": "hand", "makes": "produces", "made": "produced",
    "make": "produce", "uses": "utilizes", "used": "utilized", "use": "utilize", "wants": "wishes",
    "want": "wish", "needs": "requires", "needed": "required", "need": "require", "has": "owns", "had": "owned",
    "have": "own", "gets": "obtains", "got": "obtained", "get": "obtain", "takes": "grabs", "took": "grabbed",
    "eats": "consumes", "ate": "consumed", "eat": "consume", "runs": "jogs", "ran": "jogged", "walks": "strolls",
    "walked": "strolled", "reads": "peruses", "read": "perused", "writes": "pens", "wrote": "penned",
    "works": "labors", "worked": "labored", "earns": "makes", "earned": "made", "spends": "pays out",
    "spent": "paid out", "pays": "remits", "paid": "remitted", "saves": "puts aside", "saved": "put aside",
    "finds": "discovers", "found": "discovered", "find": "determine", "shows": "demonstrates",
    "showed": "demonstrated", "show": "demonstrate", "helps": "assists", "helped": "assisted", "help": "assist",
    "causes": "produces", "caused": "produced", "cause": "bring about", "increases": "rises", "increase": "rise",
    "decreases": "falls", "decrease": "drop", "changes": "alters", "changed": "altered", "change": "alter",
    "moves": "travels", "moved": "traveled", "move": "travel", "produce": "generate", "produces": "generates",
    "contains": "holds", "contain": "hold", "describes": "depicts", "describe": "depict", "explains": "accounts for",
    "explain": "account for", "best": "most accurately", "likely": "probably", "happens": "occurs",
    "happen": "occur", "happened": "occurred", "begins": "starts", "began": "started", "ends": "finishes",
    "ended": "finished", "protect": "shield", "protects": "shields", "observe": "watch", "observed": "watched",
    "measure": "gauge", "measured": "gauged", "determine": "establish", "heated": "warmed", "heat": "warmth",
    "grow": "develop", "grows": "develops", "grew": "developed", "live": "dwell", "lives": "dwells",
    "lived": "dwelled", "build": "construct", "built": "constructed", "plant": "sow", "planted": "sowed",
    "travel": "journey", "traveled": "journeyed", "drives": "motors", "drove": "motored", "costs": "is priced at",
    "cost": "price", "collects": "gathers", "collected": "gathered", "shares": "splits", "shared": "split",
    # nouns
    "student": "pupil", "students": "pupils", "teacher": "instructor", "teachers": "instructors",
    "scientist": "researcher", "scientists": "researchers", "experiment": "trial", "experiments": "trials",
    "investigation": "study", "result": "outcome", "results": "outcomes", "example": "instance",
    "examples": "instances", "process": "procedure", "energy": "power", "water": "H2O", "temperature": "warmth level",
    "plants": "vegetation", "animals": "creatures", "animal": "creature", "organisms": "living things",
    "organism": "living thing", "earth": "the globe", "sun": "star we orbit", "light": "illumination",
    "rock": "stone", "rocks": "stones", "soil": "dirt", "weather": "climate conditions", "food": "nourishment",
    "money": "cash", "dollars": "bucks", "cents": "pennies", "store": "shop", "stores": "shops", "car": "automobile",
    "cars": "automobiles", "house": "home", "houses": "homes", "children": "kids", "child": "kid", "kids": "children",
    "friends": "pals", "friend": "pal", "book": "volume", "books": "volumes", "day": "daytime period", "days": "daily periods",
    "week": "seven days", "weeks": "seven-day periods", "hour": "sixty minutes", "hours": "sixty-minute spans",
    "minutes": "mins", "year": "twelve months", "years": "twelve-month spans", "people": "persons",
    "person": "individual", "man": "gentleman", "woman": "lady", "boy": "lad", "girl": "lass", "city": "town",
    "country": "nation", "school": "academy", "class": "course", "job": "occupation", "box": "crate",
    "boxes": "crates", "bag": "sack", "bags": "sacks", "apples": "pippins", "cookies": "biscuits",
    "question": "query", "answer": "response", "statement": "claim", "part": "portion", "parts": "portions",
    "amount": "quantity", "number": "count", "total": "sum", "price": "cost", "speed": "velocity",
    "distance": "length traveled", "size": "dimension", "shape": "form", "method": "approach", "way": "manner",
    "reason": "cause", "evidence": "proof", "information": "data", "type": "kind", "types": "kinds",
    "group": "set", "area": "region", "body": "physique", "blood": "plasma", "cells": "cellular units",
    "cell": "cellular unit", "air": "atmosphere", "ocean": "sea", "river": "stream", "forest": "woodland",
    "tree": "arbor", "trees": "arbors", "seeds": "kernels", "seed": "kernel", "leaves": "foliage",
    "flowers": "blossoms", "flower": "blossom", "mountain": "peak", "mountains": "peaks", "moon": "lunar body",
    "planet": "world", "planets": "worlds", "metal": "alloy", "ice": "frozen water", "gas": "vapor",
    "liquid": "fluid", "solid": "rigid matter", "force": "push", "object": "item", "objects": "items",
    "film": "movie", "movie": "film", "show": "program", "series": "program", "team": "squad", "game": "match",
    "war": "conflict", "law": "statute", "state": "region", "government": "administration", "company": "firm",
    # adjectives and adverbs
    "large": "big", "big": "large", "small": "little", "little": "small", "many": "numerous", "most": "the majority of",
    "each": "every", "every": "each", "different": "distinct", "same": "identical", "important": "significant",
    "main": "primary", "common": "frequent", "hot": "warm", "cold": "chilly", "fast": "quick", "slow": "sluggish",
    "new": "fresh", "old": "aged", "high": "elevated", "low": "reduced", "long": "lengthy", "short": "brief",
    "true": "correct", "false": "incorrect", "correct": "right", "first": "initial", "last": "final",
    "only": "solely", "also": "additionally", "usually": "typically", "often": "frequently", "always": "invariably",
    "never": "not ever", "about": "approximately", "together": "combined", "remaining": "left over", "left": "remaining",
    "half": "fifty percent", "twice": "two times", "more": "additional", "less": "fewer", "entire": "whole",
}
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def reword(text: str | None) -> str:
    """`text` with every word of SYNONYMS replaced (first letter's case kept); '' for None."""
    if not text:
        return ""

    def swap(match: re.Match) -> str:
        word = match.group(0)
        new = SYNONYMS.get(word.lower())
        if new is None:
            return word
        return new[:1].upper() + new[1:] if word[:1].isupper() else new

    return _WORD.sub(swap, text)


def reworded_share(text: str | None) -> float:
    """The share of words of `text` that `reword` replaces (0.0 for no words)."""
    words = _WORD.findall(text or "")
    return sum(w.lower() in SYNONYMS for w in words) / len(words) if words else 0.0
