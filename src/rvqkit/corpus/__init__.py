"""Corpus tokenization: turn thousands of hours of audio into RVQ codes in sharded Parquet, resumably,
on this machine or on Ray; add codes to a Hugging Face ``datasets.Dataset``; decode rows for listening.

Needs ``pip install 'rvqkit[corpus]'`` (pyarrow, datasets); the Ray engine ``rvqkit[ray]``.
See ``docs/corpus.md``.
"""

from .decode import decode_corpus
from .hf import encode_dataset
from .items import CorpusError, Item
from .job import CorpusJob, JobSettings
from .pipeline import CorpusSummary, encode_corpus
from .progress import EncodeProgress
from .sources import Source, open_source
from .stats import CorpusStats, corpus_stats

__all__ = [
    "CorpusError",
    "CorpusJob",
    "CorpusStats",
    "CorpusSummary",
    "EncodeProgress",
    "Item",
    "JobSettings",
    "Source",
    "corpus_stats",
    "decode_corpus",
    "encode_corpus",
    "encode_dataset",
    "open_source",
]
