"""Log template mining: group messages that were printed by the same statement.

Design (ADR 0005). Drain (He et al., ICSE 2017) walks a fixed-depth tree keyed by token count
and first tokens, then merges a message into the most similar template of its leaf. On the
LogHub samples most of Drain's mistakes come from variables it never recognised, and its
similarity threshold merges real constants ("startup"/"shutdown", "bytes"/"values"). So this
miner inverts the emphasis:

1. **Masking does the heavy lifting.** Each whitespace word is classified once (cached):
   numbers, hex, IPv4/IPv6 (with ports), MACs, UUIDs, URLs, e-mails, paths, host names and any
   piece holding a digit become `<*>`; `key=value`, `a:b`, brackets and commas are split so a
   key survives while its value is masked (`uid=<*>`). Units after a number (`5.2 KB`,
   `3 seconds`) and date words beside a number (`Mon Jun 20 03:40:59`) join the variable, and
   runs of variables collapse into one `<*>` (variable-length lists stay one template).
2. **Exact grouping.** The masked word sequence is the key; equal keys are one cluster. This is
   the token-count + all-tokens tree of Drain with a hash table in place of the tree walk.
3. **Slot merges, not similarity.** Two keys that differ in exactly one position (a "slot")
   merge when one word subsumes the other (`<*>` or `chdir(<*>)` against `chdir(pwd)`), or when
   the slot has held `min_slot_values` distinct words (user names, hosts) — enumerations with
   two or three values (`LOOKING`/`LEADING`/`FOLLOWING`) stay apart. The first word never
   merges by count (Drain's first-token rule: programs and verbs lead a message). Merged
   clusters are unioned, so templates that become equal after generalisation are one cluster.

One set of settings serves every log source; there are no per-dataset rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

WILDCARD = "<*>"

# Addresses hold digits: only words with a digit and some structure are tested against them.
_ADDRESS = re.compile(
    r"""(?ix)^(?:
      (?:\d{1,3}\.){3}\d{1,3}(?::\d+)?                        # IPv4[:port]
    | \[?[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}\]?(?::\d+)?     # IPv6
    | [0-9a-f]{2}(?:[:-][0-9a-f]{2}){3,}                      # MAC, hex bytes
    | [0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}             # UUID
    | (?:[a-z0-9-]+\.)+[a-z0-9-]+:\d+                         # host:port
    )$"""
)
_URL = re.compile(r"(?i)[a-z][a-z0-9+.-]*://")
_EMAIL = re.compile(r"(?i)[^@\s]+@[^@\s]+\.[a-z]{2,}$")
_HOST = re.compile(r"(?i)(?:[a-z0-9-]+\.)+(?:com|net|org|edu|gov|mil|int|io|info|biz|co|[a-z]{2})$")
# Structure inside a word: `key=value`, `a:b`, lists, brackets, dotted leaders (`depth....0`).
_SPLIT = re.compile(r"([=:,;|()\[\]{}\"'#]+|\.{2,})")
_STRUCTURE = re.compile(r"[=:,;|()\[\]{}\"'#]")
_DIGITS = frozenset("0123456789")
_LEADING = "([{<\"'`"
_TRAILING = ")]}>\"'`,;:."
_DELIMITERS = "=:,;|()[]{}\"'#."
_EMPTY_SLOTS = frozenset({"()", "[]", "{}", '""', "''"})

DATE_WORDS = frozenset(
    "mon tue wed thu fri sat sun monday tuesday wednesday thursday friday saturday sunday "
    "jan feb mar apr may jun jul aug sep sept oct nov dec january february march april june "
    "july august september october november december utc gmt z pdt pst edt est cdt cst mdt "
    "mst cet cest bst ist jst am pm".split()
)
UNIT_WORDS = frozenset(
    "b kb mb gb tb pb kib mib gib tib byte bytes bit bits kbps mbps gbps ms us µs ns s sec "
    "secs second seconds min mins minute minutes h hr hrs hour hours d day days % hz khz mhz "
    "ghz".split()
)

# A cached word class is its masked text (`<*>` for a variable) or (_DATE | _UNIT, word).
_VAR = WILDCARD
_DATE, _UNIT = 2, 3
WordClass = str | tuple[int, str]


@dataclass(frozen=True, slots=True)
class MinerSettings:
    """One set of settings for every log source (tuned once, see docs/benchmarks-ai.md).

    min_slot_values: distinct words a slot must hold before it becomes `<*>`; 4 keeps the
      two- and three-valued enumerations of real logs apart (states, directions, units).
    min_context_words: constant words the rest of the key must keep for a slot merge, so
      one-word messages never collapse into `<*>`.
    max_indexed_words: longer keys are grouped exactly but not slot-merged (the slot index
      costs O(words²) per new key).
    max_indexed_keys: distinct keys indexed for slot merges; later keys group exactly. Bounds
      memory on a stream of ever-new messages.
    word_cache_size: classified words kept; the cache is dropped when it grows past this.
    """

    min_slot_values: int = 4
    min_context_words: int = 2
    max_indexed_words: int = 40
    max_indexed_keys: int = 20_000
    word_cache_size: int = 500_000


@dataclass(frozen=True, slots=True)
class MinedCluster:
    cluster_id: int
    template: str
    size: int
    members: tuple[int, ...] = ()


def _is_name(core: str) -> bool:
    """A path, URL, e-mail address or host name (they need not hold a digit)."""
    if core[0] in "/\\~" or core.startswith(("./", "../")) or core[1:3] == ":\\":
        return True
    if "://" in core:
        return _URL.match(core) is not None
    if "@" in core:
        return _EMAIL.match(core) is not None
    return "." in core and _HOST.match(core) is not None


def _has_structure(core: str) -> bool:
    return ".." in core or _STRUCTURE.search(core) is not None


def _is_variable_piece(piece: str) -> bool:
    return not _DIGITS.isdisjoint(piece) or _is_name(piece)


def _mask_pieces(word: str) -> WordClass:
    """Split a word on its structure, mask the pieces, and keep the constant skeleton."""
    out: list[str] = []
    constant = False
    for i, piece in enumerate(_SPLIT.split(word)):
        if i % 2:
            out.append(piece)
        elif not piece:
            continue
        elif _is_variable_piece(piece):
            _append_wildcard(out)
        else:
            out.append(piece)
            constant = True
    return "".join(out) if constant else _VAR


def _append_wildcard(out: list[str]) -> None:
    # `<*>:<*>:<*>` (times, lists, addresses) is one variable, not three.
    if len(out) >= 2 and out[-2] == WILDCARD and not out[-1].strip(_DELIMITERS):
        out.pop()
    elif not out or out[-1] != WILDCARD:
        out.append(WILDCARD)


def classify_word(word: str) -> WordClass:
    """The masked form of one whitespace-separated word (pure; results are cached)."""
    if word.isalpha():
        return _special(word.lower(), word) or word
    core = word.lstrip(_LEADING).rstrip(_TRAILING)
    if not core:
        return _VAR if word in _EMPTY_SLOTS else word
    if not _DIGITS.isdisjoint(core):
        # Digits mean a variable unless structure (`uid=0`, `lr:00ff`) keeps a constant key.
        if not _has_structure(core) or _ADDRESS.match(core) or _is_name(core):
            return _VAR
        return _mask_pieces(word)
    special = _special(core.lower(), word)
    if special is not None:
        return special
    if _is_name(core):
        return _VAR
    return _mask_pieces(word) if _has_structure(core) else word


def _special(low: str, word: str) -> tuple[int, str] | None:
    if low in DATE_WORDS:
        return (_DATE, word)
    return (_UNIT, word) if low in UNIT_WORDS else None


class Masker:
    """Turns a message into its masked word tuple, the exact-grouping key."""

    def __init__(self, cache_size: int = 500_000) -> None:
        self._cache: dict[str, WordClass] = {}
        self._specials: set[str] = set()  # words cached as date or unit words
        self._cache_size = cache_size

    def key(self, message: str) -> tuple[str, ...]:
        words = message.split()
        kinds = list(map(self._cache.get, words))
        if None in kinds:
            self._classify_missing(words, kinds)
        # Fast path, all in C: nothing to absorb and no two variables in a row. A constant
        # ending in `<*>` may trip the second test; that only costs the slow path.
        if self._specials.isdisjoint(words) and "<*> <*>" not in " ".join(kinds):  # type: ignore[arg-type]
            return tuple(kinds)  # type: ignore[arg-type]
        return _assemble(kinds)  # type: ignore[arg-type]

    def _classify_missing(self, words: list[str], kinds: list[WordClass | None]) -> None:
        cache = self._cache
        if len(cache) > self._cache_size:
            cache.clear()
            self._specials.clear()
        for i, kind in enumerate(kinds):
            if kind is None:
                kind = kinds[i] = cache[words[i]] = classify_word(words[i])
                if kind.__class__ is tuple:
                    self._specials.add(words[i])


def _assemble(kinds: list[WordClass]) -> tuple[str, ...]:
    """Absorb units and date words into neighbouring variables; collapse variable runs."""
    out: list[str] = []
    previous_var = False
    ends_var = False  # `size=<*>` takes a unit too (`size=5 KB`)
    pending_dates = 0  # date words just appended; a following variable absorbs them
    for kind in kinds:
        if kind.__class__ is tuple:
            tag, text = kind
            if previous_var or (ends_var and tag == _UNIT):
                continue  # the unit or date word belongs to the variable before it
            out.append(text)
            pending_dates = pending_dates + 1 if tag == _DATE else 0
            ends_var = False
        elif kind == WILDCARD:
            if pending_dates:
                del out[-pending_dates:]
                pending_dates = 0
                previous_var = bool(out) and out[-1] == WILDCARD
            if not previous_var:
                out.append(WILDCARD)
                previous_var = ends_var = True
        else:
            out.append(kind)  # type: ignore[arg-type]
            previous_var, pending_dates = False, 0
            ends_var = kind.endswith(WILDCARD)  # type: ignore[union-attr]
    return tuple(out)


class _Cluster:
    __slots__ = ("template", "size")

    def __init__(self, template: list[str]) -> None:
        self.template = template
        self.size = 0


_pattern_cache: dict[str, re.Pattern[str]] = {}


def subsumes(pattern: str, word: str) -> bool:
    """True when `pattern` (a word holding `<*>`) can produce `word`."""
    if pattern == WILDCARD:
        return True
    if WILDCARD not in pattern:
        return False
    rx = _pattern_cache.get(pattern)
    if rx is None:
        if len(_pattern_cache) > 10_000:
            _pattern_cache.clear()
        parts = map(re.escape, pattern.split(WILDCARD))
        rx = _pattern_cache[pattern] = re.compile(".+?".join(parts) + r"\Z", re.S)
    return rx.match(word) is not None


class TemplateMiner:
    """Streaming miner: `add(message)` returns the message's cluster id.

    Ids are stable for a message's key, but clusters can later merge (a slot turns out to be
    variable): `resolve(cluster_id)` gives the surviving id, and `clusters()` reports only
    survivors. Not thread-safe; use one miner per task.
    """

    def __init__(self, settings: MinerSettings | None = None) -> None:
        self.settings = settings or MinerSettings()
        self._masker = Masker(self.settings.word_cache_size)
        self._key_ids: dict[tuple[str, ...], int] = {}
        self._parent: list[int] = []
        self._clusters: list[_Cluster] = []
        # slot signature hash -> (word, cluster id), or {word at the slot: cluster id}
        self._slots: dict[int, tuple[str, int] | dict[str, int]] = {}

    def add(self, message: str) -> int:
        key = self._masker.key(message)
        cid = self._key_ids.get(key)
        if cid is None:
            cid = self._new_key(key)
        root = self.resolve(cid)
        self._clusters[root].size += 1
        return root

    def resolve(self, cluster_id: int) -> int:
        parent = self._parent
        while parent[cluster_id] != cluster_id:
            parent[cluster_id] = parent[parent[cluster_id]]
            cluster_id = parent[cluster_id]
        return cluster_id

    def template(self, cluster_id: int) -> str:
        return " ".join(self._clusters[self.resolve(cluster_id)].template)

    def clusters(self) -> list[MinedCluster]:
        """Surviving clusters, largest first."""
        found = [
            MinedCluster(cid, " ".join(c.template), c.size)
            for cid, c in enumerate(self._clusters)
            if self._parent[cid] == cid and c.size
        ]
        return sorted(found, key=lambda c: (-c.size, c.cluster_id))

    # new keys and slot merges -------------------------------------------------------------

    def _new_key(self, key: tuple[str, ...]) -> int:
        cid = len(self._clusters)
        self._parent.append(cid)
        self._clusters.append(_Cluster(list(key)))
        self._key_ids[key] = cid
        if len(key) <= self.settings.max_indexed_words and (
            len(self._key_ids) <= self.settings.max_indexed_keys
        ):
            self._index_slots(key, cid)
        return self.resolve(cid)

    def _index_slots(self, key: tuple[str, ...], cid: int) -> None:
        constants = sum(1 for w in key if w != WILDCARD)
        for pos, word in enumerate(key):
            if constants - (word != WILDCARD) < self.settings.min_context_words:
                continue
            # The slot is the key with one position blanked. Its hash stands for it (64 bits:
            # a collision, which would merge two unrelated keys, is vanishingly unlikely).
            signature = hash((pos, key[:pos], key[pos + 1 :]))
            slot = self._slots.get(signature)
            if slot is None:
                self._slots[signature] = (word, cid)  # most slots only ever see one word
            elif slot.__class__ is tuple:
                if slot[0] != word:
                    grown = self._slots[signature] = {slot[0]: slot[1]}
                    self._join_slot(grown, pos, word, cid)
            else:
                self._join_slot(slot, pos, word, cid)  # type: ignore[arg-type]

    def _join_slot(self, slot: dict[str, int], pos: int, word: str, cid: int) -> None:
        if word in slot:
            return
        partner = next((c for w, c in slot.items() if subsumes(w, word) or subsumes(word, w)), None)
        slot[word] = cid
        if partner is not None:
            self._union(partner, cid)
        elif pos > 0 and len(slot) >= self.settings.min_slot_values:
            for other in slot.values():
                self._union(other, cid)

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.resolve(a), self.resolve(b)
        if ra == rb:
            return
        keep, gone = (ra, rb) if ra < rb else (rb, ra)
        kept, merged = self._clusters[keep], self._clusters[gone]
        kept.template = _generalise(kept.template, merged.template)
        kept.size += merged.size
        merged.size = 0
        self._parent[gone] = keep


def _generalise(a: list[str], b: list[str]) -> list[str]:
    out = []
    for x, y in zip(a, b, strict=True):
        if x == y or subsumes(x, y):
            out.append(x)
        elif subsumes(y, x):
            out.append(y)
        else:
            out.append(WILDCARD)
    return out


def mine(messages: Sequence[str], settings: MinerSettings | None = None) -> list[MinedCluster]:
    """Cluster a batch; each cluster lists the positions of its messages. Largest first."""
    miner = TemplateMiner(settings)
    ids = [miner.add(m) for m in messages]
    return _with_members(miner, ids)


def _with_members(miner: TemplateMiner, ids: Iterable[int]) -> list[MinedCluster]:
    members: dict[int, list[int]] = {}
    for position, cid in enumerate(ids):
        members.setdefault(miner.resolve(cid), []).append(position)
    return [
        MinedCluster(c.cluster_id, c.template, c.size, tuple(members[c.cluster_id]))
        for c in miner.clusters()
    ]
