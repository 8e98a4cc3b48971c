"""Examples that fit the workspace: what the tour and the explorer show first.

A shapes model knows "red" and "circle", a Flickr8k model "dog" and "snow", an aerial one "airport":
each family below lists its examples, and the family whose words the model knows best is used.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Examples:
    family: str
    words: tuple[str, ...]  # "words like ..."
    analogies: tuple[tuple[str, str, str], ...]  # a : b :: c : ?
    query: str  # a description to search for
    swap: tuple[str, str]  # photo arithmetic: minus the first word, plus the second


FAMILIES = (
    Examples(
        "shapes", ("red", "circle", "two"), (("circle", "circles", "square"),), "a red circle", ("red", "blue"),
    ),
    Examples(
        "everyday photos", ("dog", "snow", "man"), (("man", "men", "woman"), ("dog", "dogs", "boy")),
        "a dog runs on the beach", ("grass", "snow"),
    ),
    Examples(
        "aerial photos", ("airport", "trees", "beach"), (("building", "buildings", "tree"),),
        "many planes are parked near a terminal", ("trees", "buildings"),
    ),
)


def examples_for(vocabulary: list[str] | set[str]) -> Examples:
    """The family whose example words the vocabulary holds most of (shapes on a tie), keeping
    only the words and analogies it knows."""
    known = set(vocabulary)

    def words_of(e: Examples) -> set[str]:
        return {*e.words, *(w for a in e.analogies for w in a), *e.query.split(), *e.swap}

    best = max(FAMILIES, key=lambda e: len(words_of(e) & known) / len(words_of(e)))
    return Examples(
        best.family, tuple(w for w in best.words if w in known), tuple(a for a in best.analogies if set(a) <= known),
        best.query, best.swap if set(best.swap) <= known else ("", ""),
    )
