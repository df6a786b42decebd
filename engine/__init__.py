"""fld-engine: specialist annotators on Ray, filters, a Parquet corpus, SQL over it."""

__version__ = "0.1.0"
