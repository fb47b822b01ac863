"""Evaluation: ``suites`` (which evaluation a model and its data get, and retention), ``generate``
(greedy generation and exact match on the visual-QA suite), ``text`` (perplexity, continuation and
cloze for text models), ``verify`` (a saved checkpoint reloads and generates the same with and
without its cache), ``lmms_eval`` (the bridge to lmms-eval)."""
