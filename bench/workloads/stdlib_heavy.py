"""Little user code, much library work: regular expressions, counting, sorting, statistics, JSON."""

from __future__ import annotations

import collections
import json
import operator
import random
import re
import statistics

ROOT = "analyse"
WORD = re.compile(r"[a-z]+")
_VOCABULARY = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota",
               "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau"]


def make_texts(count: int, seed: int = 11) -> list[str]:
    """``count`` documents of about 3,000 words."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_VOCABULARY) + rng.choice(("", "s", "ing"))
                     for _ in range(3000)) for _ in range(count)]


def analyse(text: str) -> str:
    """Word statistics of one document, as JSON (three user calls, the rest is library)."""
    words = WORD.findall(text)
    counts = collections.Counter(words)
    top = sorted(counts.items(), key=operator.itemgetter(1), reverse=True)[:10]
    lengths = sorted(map(len, words))
    summary = {"words": len(words), "distinct": len(counts), "top": top,
               "lengths": describe(lengths)}
    return encode(summary)


def describe(values: list[int]) -> dict[str, float]:
    """Mean, median and spread, from the statistics module."""
    return {"mean": statistics.fmean(values), "median": statistics.median(values),
            "stdev": statistics.pstdev(values)}


def encode(summary: dict) -> str:
    """JSON round trip with sorted keys."""
    return json.dumps(json.loads(json.dumps(summary)), sort_keys=True)
