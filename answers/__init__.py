"""The model-backed answers (caption, similar, search, opposite, imagine) over the warehouse."""

from answers.queries import Queries, SearchResult, choose_by_recall

__all__ = ["Queries", "SearchResult", "choose_by_recall"]
