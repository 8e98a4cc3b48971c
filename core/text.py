"""Caption text as the COCO caption evaluation tokenises it (PTB tokenizer): lower case, clitics
split off ("dog's" -> "dog 's", "don't" -> "do n't"), punctuation dropped, hyphenated words kept.
Training, search queries and the metrics all read text through `clean`, so what the model learns
to write is what the metrics compare."""

from __future__ import annotations

import re

_CLITIC = re.compile(r"(?<=[^\W_])(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|(?:[a-z]\.){2,}|[^\W_]+(?:[-.,/&:][^\W_]+)*|[^\w\s]+")
# What coco-caption's PTBTokenizer removes after tokenising, plus brackets (it keeps them as
# "-lrb-"/"-rrb-" because it lower-cases before matching; a model should not learn to write those).
_PUNCTUATION = set("'\"`.?!,:;-()[]{}") | {"--", "...", "``", "''"}


def tokenize(raw: str) -> list[str]:
    """PTB-style tokens: 'A dog's T-shirt, (red).' -> ['a', 'dog', "'s", 't-shirt', 'red']."""
    text = raw.lower().replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    tokens = _TOKEN.findall(_CLITIC.sub(r" \1", text))
    return [t for t in tokens if t not in _PUNCTUATION and not set(t) <= _PUNCTUATION]


def clean(raw: str) -> str:
    """Tokens joined by single spaces: 'A Red circle.' -> 'a red circle'."""
    return " ".join(tokenize(raw))
