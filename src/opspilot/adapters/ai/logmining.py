"""Log template mining: a fixed-depth parse tree in the manner of Drain (He et al., 2017).

Messages are masked generically (IPs, UUIDs, hex, paths, numbers — no per-source rules),
split into tokens, routed by token count and first token to a leaf, and joined to the most
similar cluster there when at least `similarity` of their tokens agree; differing positions
become `<*>`. A final pass merges clusters whose templates became equal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

WILDCARD = "<*>"
_MASKS = [
    re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
    re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?(?![\w.])"),
    re.compile(r"\b(?:[0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}\b"),
    re.compile(r"\b0[xX][0-9a-fA-F]+\b"),
    re.compile(r"(?<![\w/])(?:/[\w.\-]+){2,}/?"),
    re.compile(r"\b[a-zA-Z]+://\S+"),
    re.compile(r"(?<![A-Za-z])[-+]?\d+(?:[.,:]\d+)*(?![A-Za-z])"),
]
_SPLIT = re.compile(r"[\s=,;\[\]()\"']+")


def tokens_of(message: str) -> list[str]:
    for mask in _MASKS:
        message = mask.sub(WILDCARD, message)
    return [t for t in _SPLIT.split(message) if t]


def _has_digit(token: str) -> bool:
    return any(c.isdigit() for c in token)


@attrs.define
class MinedCluster:
    template: list[str]
    members: list[int] = attrs.Factory(list)

    @property
    def pattern(self) -> str:
        return " ".join(self.template)


class TemplateMiner:
    def __init__(self, similarity: float = 0.5, depth_tokens: int = 1) -> None:
        self.similarity = similarity
        self.depth_tokens = depth_tokens
        self.clusters: list[MinedCluster] = []
        self._leaves: dict[tuple[object, ...], list[int]] = {}
        self._count = 0

    def _leaf_key(self, tokens: list[str]) -> tuple[object, ...]:
        head = tuple(
            WILDCARD if _has_digit(t) or t == WILDCARD else t
            for t in tokens[: self.depth_tokens]
        )
        return (len(tokens), *head)

    def add(self, message: str) -> int:
        tokens = tokens_of(message)
        position = self._count
        self._count += 1
        leaf = self._leaves.setdefault(self._leaf_key(tokens), [])
        best, best_score = None, -1.0
        for index in leaf:
            score = _similarity(self.clusters[index].template, tokens)
            if score > best_score:
                best, best_score = index, score
        if best is not None and best_score >= self.similarity:
            cluster = self.clusters[best]
            cluster.template = _merge(cluster.template, tokens)
        else:
            self.clusters.append(MinedCluster(list(tokens)))
            best = len(self.clusters) - 1
            leaf.append(best)
        self.clusters[best].members.append(position)
        return best

    def result(self) -> list[MinedCluster]:
        merged: dict[tuple[str, ...], MinedCluster] = {}
        for cluster in self.clusters:
            key = tuple(cluster.template)
            if key in merged:
                merged[key].members.extend(cluster.members)
            else:
                merged[key] = MinedCluster(list(cluster.template), list(cluster.members))
        return sorted(merged.values(), key=lambda c: (-len(c.members), c.pattern))


def _similarity(template: list[str], tokens: list[str]) -> float:
    if not tokens:
        return 1.0 if not template else 0.0
    same = sum(1 for a, b in zip(template, tokens, strict=False) if a == b and a != WILDCARD)
    wild = sum(1 for a in template if a == WILDCARD)
    return same / max(1, len(tokens) - wild) if len(tokens) > wild else 1.0


def _merge(template: list[str], tokens: list[str]) -> list[str]:
    return [a if a == b else WILDCARD for a, b in zip(template, tokens, strict=False)]


def mine(messages: Sequence[str], similarity: float = 0.5) -> list[MinedCluster]:
    miner = TemplateMiner(similarity)
    for message in messages:
        miner.add(message)
    return miner.result()
